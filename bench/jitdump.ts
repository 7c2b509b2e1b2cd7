// The code ranges in a JITDump file (the format perf(1) reads; JavaScriptCore writes one with
// BUN_JSC_useJITDump=1), for bench/perf-native.ts to name the engine's compiled JavaScript.

export interface CodeRange {
  start: number
  end: number
  name: string
}

/**
 * The code ranges of a JITDump file (the records of type JIT_CODE_LOAD). JavaScriptCore reuses the
 * memory of code it threw away, so a later load replaces every earlier one it overlaps; without
 * that, samples went to regular expressions compiled once at start-up.
 */
export function jitDumpRanges(bytes: Uint8Array): CodeRange[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const decoder = new TextDecoder()
  const loads: CodeRange[] = []
  let at = view.getUint32(8, true) // the header's own size
  while (at + 16 <= bytes.length) {
    const kind = view.getUint32(at, true)
    const size = view.getUint32(at + 4, true)
    if (size === 0 || at + size > bytes.length) break
    if (kind === 0) {
      // id, size, timestamp; then pid, tid, vma, code address, code size, code index, name, code
      const start = Number(view.getBigUint64(at + 32, true))
      const length = Number(view.getBigUint64(at + 40, true))
      const nameAt = at + 56
      const nameEnd = bytes.indexOf(0, nameAt)
      loads.push({ start, end: start + length, name: decoder.decode(bytes.subarray(nameAt, nameEnd)) })
    }
    at += size
  }
  const live: CodeRange[] = []
  for (let i = loads.length - 1; i >= 0; i--) {
    const load = loads[i]!
    if (!live.some((l) => l.start < load.end && load.start < l.end)) live.push(load)
  }
  return live
}
