// The stdout sink's row writer alone (`bun bench/rows.ts`): the bench corpus through the engine's
// own pipeline once, then its events and session rows written as JSON lines (core/row-lines.ts)
// over and over, timed per event. The writer was a third of the engine's sampled JavaScript under
// load (bench/profile.ts), and alone it is pure CPU, so a change to it is measured here on a busy
// machine better than over HTTP: other work only ever adds time, so the minimum is the truest.
//
// `--repeat N` sends the corpus through the pipeline N times and keeps the last time's events: from
// the second time on, nearly every event updates a session (a -1 and a +1 row), as under the HTTP
// benchmark, whose wrk replays the corpus over and over.
//
//   bun bench/rows.ts [--config bench/cases/engine-stdout.yaml] [--events 20000] [--passes 30] [--repeat 2] [--root DIR]
//
// `--root DIR` takes core/row-lines.ts from another checkout (the commit before a change, say),
// alternated pass by pass with this one's.

import { resolve } from 'node:path'
import type { AnalyticsEvent } from '../core/event.ts'
import type { Ingest } from '../core/plugin.ts'
import { corpusThroughRoute, inProcessEngine } from './in-process.ts'
import { flag } from './load.ts'

const root = resolve(import.meta.dir, '..')
const configPath = resolve(root, flag('config', 'bench/cases/engine-stdout.yaml'))
const count = Number(flag('events', '20000'))
const passes = Number(flag('passes', '30'))
const other = flag('root', '')
const repeat = Number(flag('repeat', '2'))

type Writer = typeof import('../core/row-lines.ts')
const writers: [string, Writer][] = [['this', await import('../core/row-lines.ts')]]
if (other !== '') writers.push([other, (await import(resolve(other, 'core/row-lines.ts'))) as Writer])

const { engine, route, close } = await inProcessEngine(configPath)

/** The corpus's events as the sinks get them: parsed by the dialect, then through every plugin. */
const events: AnalyticsEvent[] = []
const capture: Ingest = {
  ...engine.ingest,
  process: (batch) =>
    batch.map((event) => {
      for (const step of engine.pipeline.steps) if (step.run(event, step.ctx)) return undefined
      events.push(event)
      return undefined
    }),
  recordDrop: () => {},
}
for (let time = 0; time < repeat; time++) {
  events.length = 0
  await corpusThroughRoute(route, capture, count, 7)
}
await close()

const OPEN = new TextEncoder().encode('{"_table":"x",')
const rows = events.reduce((n, e) => n + 1 + e.sessionRows.length, 0)
const results = new Map<string, number[]>(writers.map(([name]) => [name, []]))
let bytes = 0
for (let pass = 0; pass < passes; pass++) {
  for (const [name, module] of writers) {
    const lines = new module.JsonLines()
    const started = performance.now()
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!
      lines.event(e, OPEN)
      for (const s of e.sessionRows) lines.session(s, OPEN)
      if (lines.lines >= 1000) lines.recycle(lines.take().bytes)
    }
    results.get(name)!.push(((performance.now() - started) * 1e3) / events.length)
    bytes = lines.take().bytes.length
  }
}
console.log(`${events.length} events, ${(rows / events.length).toFixed(2)} rows per event (last batch ${bytes} bytes)`)
for (const [name, times] of results) {
  times.sort((a, b) => a - b)
  console.log(
    `${name}: min ${times[0]!.toFixed(3)}, lower quartile ${times[Math.floor(times.length / 4)]!.toFixed(3)}, median ${times[Math.floor(times.length / 2)]!.toFixed(3)} µs per event`,
  )
}
