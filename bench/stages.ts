// Per-stage micro-benchmark (`npm run bench:stages`): the bench corpus through the engine's own
// compiled pipeline in-process, timing every plugin's `run` and the sink's `write` separately, so a
// regression can be traced to its plugin. Reports nanoseconds per event (median of 5 passes).
//
//   bun bench/stages.ts [--config bench/cases/engine-stdout.yaml] [--events 50000]

import { resolve } from 'node:path'
import type { AnalyticsEvent } from '../core/event.ts'
import type { Ingest } from '../core/plugin.ts'
import { corpusThroughRoute, inProcessEngine } from './in-process.ts'
import { flag } from './load.ts'

const root = resolve(import.meta.dir, '..')
const configPath = resolve(root, flag('config', 'bench/cases/engine-stdout.yaml'))
const count = Number(flag('events', '50000'))

const { engine, route, close } = await inProcessEngine(configPath)

/** Turns the corpus into events with the dialect's own parser, without running the pipeline. */
async function parseCorpus(): Promise<AnalyticsEvent[]> {
  const captured: AnalyticsEvent[] = []
  const capture: Ingest = {
    ...engine.ingest,
    process: (events) => {
      captured.push(...events)
      return events.map(() => undefined)
    },
    recordDrop: () => {},
  }
  await corpusThroughRoute(route, capture, count, 7)
  return captured
}

const steps = engine.pipeline.steps
const sinks = engine.sinks
const passes: number[][] = []
for (let pass = 0; pass < 5; pass++) {
  const events = await parseCorpus()
  const spent = new Array<number>(steps.length + 1).fill(0)
  for (const event of events) {
    let dropped = false
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i]!
      const t0 = performance.now()
      const result = step.run(event, step.ctx)
      spent[i]! += performance.now() - t0
      if (result) {
        dropped = true
        break
      }
    }
    if (dropped) continue
    const t0 = performance.now()
    for (const s of sinks) s.instance.write(event)
    spent[steps.length]! += performance.now() - t0
  }
  passes.push(spent.map((ms) => (ms * 1e6) / events.length))
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const names = [...steps.map((s) => `${s.stage}:${s.name}`), `sink:${sinks.map((s) => s.name).join('+')} write`]
let total = 0
console.log('| step | ns/event (median of 5) |')
console.log('|---|---|')
names.forEach((name, i) => {
  const ns = median(passes.map((p) => p[i]!))
  total += ns
  console.log(`| ${name} | ${ns.toFixed(0)} |`)
})
console.log(`| total | ${total.toFixed(0)} |`)
await close()
