// A `--preload` for bench/perf-native.ts: records every turn of the event loop that kept a 1 ms timer
// waiting longer than LONG_TURN_MS (default 5), as "start end" in CLOCK_MONOTONIC milliseconds, the
// clock `perf record --clockid monotonic` stamps its samples with. Recording starts at SIGUSR1, so
// the warm-up is left out. performance.now() is not that clock, hence the call into libc.

import { dlopen, FFIType, ptr } from 'bun:ffi'
import { appendFileSync, writeFileSync } from 'node:fs'

const file = process.env.LONG_TURNS_FILE
if (file) {
  const libc = dlopen('libc.so.6', { clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } })
  const CLOCK_MONOTONIC = 1
  const spec = new BigInt64Array(2)
  const at = ptr(spec)
  const monotonicMs = (): number => {
    libc.symbols.clock_gettime(CLOCK_MONOTONIC, at)
    return Number(spec[0]) * 1000 + Number(spec[1]) / 1e6
  }
  const threshold = Number(process.env.LONG_TURN_MS ?? 5)
  let recording = false
  let last = monotonicMs()
  setInterval(() => {
    const now = monotonicMs()
    // The timer is due 1 ms after the last one; what is beyond that is the turn that held it up.
    if (recording && now - last - 1 > threshold) appendFileSync(file, `${last + 1} ${now}\n`)
    last = now
  }, 1).unref()
  process.on('SIGUSR1', () => {
    writeFileSync(file, '')
    recording = true
  })
}
