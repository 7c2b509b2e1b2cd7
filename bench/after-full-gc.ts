// What a full collection leaves for the code that runs after it (`bun bench/after-full-gc.ts`): with
// N small live objects held, a full collection (`Bun.gc(true)`) is forced, then the same allocating
// loop (JSON.parse of an 8 KB body, as a large request's dialect does) is timed in windows of 1,000
// iterations until a window is back within 1.5 times the cost measured before the objects existed.
// Printed: the windows it took and the extra milliseconds, for several N. The engine's heap holds
// sessions, caches and lists (150-250 MB under the bench load), and JavaScriptCore runs a full
// collection every few seconds there.
//
//   bun bench/after-full-gc.ts [--objects 0,500000,1000000,2000000]

import { flag } from './load.ts'

const sizes = flag('objects', '0,500000,1000000,2000000')
  .split(',')
  .map((s) => Number(s))
const body = JSON.stringify({ a: 'x'.repeat(8000) })
const WINDOW = 1000

/** Milliseconds for one window of the allocating loop. */
function window(): number {
  const start = performance.now()
  for (let i = 0; i < WINDOW; i++) JSON.parse(`${body.slice(0, -2)}${i}"}`)
  return performance.now() - start
}

// The cost with nothing held: the best of several windows once compiled.
for (let i = 0; i < 20; i++) window()
let base = Number.POSITIVE_INFINITY
for (let i = 0; i < 20; i++) base = Math.min(base, window())
console.log(`one window of ${WINDOW} parses with nothing held: ${base.toFixed(2)} ms`)

const holder = globalThis as { ballast?: unknown[] }
for (const objects of sizes) {
  holder.ballast = undefined
  Bun.gc(true)
  const ballast: unknown[] = []
  for (let i = 0; i < objects; i++) ballast.push({ a: i })
  holder.ballast = ballast
  Bun.gc(true)
  let windows = 0
  let extra = 0
  for (;;) {
    const ms = window()
    windows++
    if (ms <= base * 1.5 || windows >= 2000) break
    extra += ms - base
  }
  console.log(
    `${String(objects).padStart(9)} objects held: ${windows} windows to recover, ${extra.toFixed(0)} ms extra` +
      (objects > 0 ? ` (${((extra * 1e6) / objects).toFixed(0)} ns per object held)` : ''),
  )
}
