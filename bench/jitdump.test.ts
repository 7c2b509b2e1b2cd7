import { describe, expect, test } from 'bun:test'
import { jitDumpRanges } from './jitdump.ts'

// Laid out as perf's jitdump specification says: a 40-byte file header, then records that each
// start with an id, their total size and a timestamp.
function dump(records: Uint8Array[]): Uint8Array {
  const header = new Uint8Array(40)
  const h = new DataView(header.buffer)
  h.setUint32(0, 0x4a695444, true) // magic "JiTD"
  h.setUint32(4, 1, true) // version
  h.setUint32(8, 40, true) // header size
  h.setUint32(12, 62, true) // EM_X86_64
  const out = new Uint8Array(40 + records.reduce((n, r) => n + r.length, 0))
  out.set(header)
  let at = 40
  for (const r of records) {
    out.set(r, at)
    at += r.length
  }
  return out
}

function codeLoad(address: number, size: number, name: string): Uint8Array {
  const text = new TextEncoder().encode(`${name}\0`)
  const record = new Uint8Array(16 + 40 + text.length + size)
  const v = new DataView(record.buffer)
  v.setUint32(0, 0, true) // JIT_CODE_LOAD
  v.setUint32(4, record.length, true)
  v.setUint32(16, 4242, true) // pid
  v.setUint32(20, 4242, true) // tid
  v.setBigUint64(24, BigInt(address), true) // vma
  v.setBigUint64(32, BigInt(address), true) // code address
  v.setBigUint64(40, BigInt(size), true)
  v.setBigUint64(48, 7n, true) // code index
  record.set(text, 56)
  return record
}

function codeMove(): Uint8Array {
  const record = new Uint8Array(16 + 48)
  const v = new DataView(record.buffer)
  v.setUint32(0, 1, true) // JIT_CODE_MOVE
  v.setUint32(4, record.length, true)
  return record
}

describe('jitDumpRanges', () => {
  test('names each range of code by the last load that covered it', () => {
    const bytes = dump([
      codeLoad(0x1000, 0x100, 'JSC-YarrJIT: /old/i'),
      codeLoad(0x2000, 0x40, 'JSC-FTL: kept#AbC'),
      codeMove(),
      // Reuses part of the first range: the regular expression's code is gone.
      codeLoad(0x1080, 0x40, 'JSC-DFG: run#Xy'),
      // Starts where the first range ended: no overlap.
      codeLoad(0x1100, 0x20, 'JSC-Baseline: next'),
    ])
    const ranges = jitDumpRanges(bytes).sort((a, b) => a.start - b.start)
    expect(ranges).toEqual([
      { start: 0x1080, end: 0x10c0, name: 'JSC-DFG: run#Xy' },
      { start: 0x1100, end: 0x1120, name: 'JSC-Baseline: next' },
      { start: 0x2000, end: 0x2040, name: 'JSC-FTL: kept#AbC' },
    ])
  })

  test('stops at a record cut short (a dump still being written)', () => {
    const whole = dump([codeLoad(0x1000, 0x10, 'JSC-FTL: a'), codeLoad(0x2000, 0x10, 'JSC-FTL: b')])
    const cut = whole.subarray(0, whole.length - 5)
    expect(jitDumpRanges(cut)).toEqual([{ start: 0x1000, end: 0x1010, name: 'JSC-FTL: a' }])
  })
})
