// CPU per request of the engine's own request path, in-process (`bun bench/path.ts > /dev/null`):
// the corpus as real Requests through `engine.handle` (routing, body read, dialect, pipeline, sinks,
// the answer), no sockets. On a machine shared with other work this is far steadier than a
// measurement over HTTP: the process's own CPU time (all its threads, so GC and JIT included) is
// read around each pass, after warm-up passes, and the median is printed on stderr. The HTTP server's
// own cost is left out, and Elysia's router stands in for Bun's, so compare two runs of this script
// rather than its numbers with bench/cpu.ts.
//
// `--root DIR` measures another checkout's engine (e.g. `git archive` of the commit before a change)
// with this script, for a before/after on equal terms.
//
//   bun bench/path.ts [--config bench/cases/engine-stdout.yaml] [--requests 10000] [--passes 15] [--root DIR] > /dev/null

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { generateCorpus } from './corpus.ts'
import { flag } from './load.ts'

const root = resolve(flag('root', resolve(import.meta.dir, '..')))
const configPath = resolve(import.meta.dir, '..', flag('config', 'bench/cases/engine-stdout.yaml'))
const count = Number(flag('requests', '10000'))
const passes = Number(flag('passes', '15'))
const warmups = 3

const { resolveConfig } = (await import(`${root}/core/config.ts`)) as typeof import('../core/config.ts')
const { createEngine } = (await import(`${root}/core/engine.ts`)) as typeof import('../core/engine.ts')
const { silentLogger } = (await import(`${root}/core/logger.ts`)) as typeof import('../core/logger.ts')
const { parse } = await import('yaml')

const raw = parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>
// A fresh state folder: no sessions restored from an earlier run's snapshot.
raw.stateDir = mkdtempSync(join(tmpdir(), 'bench-path-'))
const config = await resolveConfig(raw, { source: configPath, baseDir: resolve(configPath, '..'), vars: {} })
const engine = await createEngine(config, { logger: silentLogger })
const corpus = generateCorpus(count, 11)

/** One pass over the corpus, 64 requests in flight like the HTTP benchmark's connections. */
async function pass(): Promise<number> {
  const started = process.cpuUsage()
  let accepted = 0
  for (let i = 0; i < corpus.length; i += 64) {
    const answers = corpus.slice(i, i + 64).map((r) =>
      engine.handle(
        new Request('http://127.0.0.1/api/event', {
          method: 'POST',
          headers: { 'content-type': 'text/plain', 'user-agent': r.ua, 'x-forwarded-for': r.ip },
          body: r.body,
        }),
        '127.0.0.1',
      ),
    )
    for (const answer of await Promise.all(answers)) if (answer.status === 202) accepted++
  }
  if (accepted < corpus.length * 0.9) throw new Error(`only ${accepted} of ${corpus.length} requests were accepted`)
  const spent = process.cpuUsage(started)
  return (spent.user + spent.system) / corpus.length
}

for (let i = 0; i < warmups; i++) await pass()
const results: number[] = []
for (let i = 0; i < passes; i++) results.push(await pass())
await engine.shutdown()
rmSync(raw.stateDir as string, { recursive: true, force: true })
results.sort((a, b) => a - b)
// Other work on the machine only ever adds to a pass's CPU time: the lowest passes are the truest.
process.stderr.write(
  `${root}: min ${results[0]!.toFixed(1)}, lower quartile ${results[Math.floor(passes / 4)]!.toFixed(1)}, median ${results[Math.floor(passes / 2)]!.toFixed(1)} µs CPU/request\n`,
)
