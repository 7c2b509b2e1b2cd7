// CPU per request of the engine's own request path, in-process (`bun bench/path.ts > /dev/null`):
// the corpus as real Requests through `engine.handle` (routing, body read, dialect, pipeline, sinks,
// the answer), no sockets. On a machine shared with other work this is far steadier than a
// measurement over HTTP: the process's own CPU time (all its threads, so GC and JIT included) is
// read around each pass, after warm-up passes, and the median is printed on stderr. The HTTP server's
// own cost is left out, and Elysia's router stands in for Bun's, so compare two runs of this script
// rather than its numbers with bench/cpu.ts.
//
// `--root DIR` measures another checkout's engine (e.g. `git archive` of the commit before a change)
// with this script. `--against DIR` loads a second engine from DIR into the same process and
// alternates the two pass by pass: other work on the machine then falls on both alike, which
// separate runs cannot promise (on a busy hour two runs of one checkout differed by a third).
//
//   bun bench/path.ts [--config bench/cases/engine-stdout.yaml] [--requests 10000] [--passes 15]
//                     [--root DIR] [--against DIR] > /dev/null

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { generateCorpus } from './corpus.ts'
import { flag, warnUnlessStartEnv } from './load.ts'

warnUnlessStartEnv()

const root = resolve(flag('root', resolve(import.meta.dir, '..')))
const against = flag('against', '')
const configPath = resolve(import.meta.dir, '..', flag('config', 'bench/cases/engine-stdout.yaml'))
const count = Number(flag('requests', '10000'))
const passes = Number(flag('passes', '15'))
const warmups = 3
const { parse } = await import('yaml')
const corpus = generateCorpus(count, 11)

type Engine = Awaited<ReturnType<typeof import('../core/engine.ts').createEngine>>

/** The engine of the checkout at `dir`, with a fresh state folder (no sessions of an earlier run). */
async function engineOf(dir: string): Promise<{ dir: string; engine: Engine; stateDir: string }> {
  const { resolveConfig } = (await import(`${dir}/core/config.ts`)) as typeof import('../core/config.ts')
  const { createEngine } = (await import(`${dir}/core/engine.ts`)) as typeof import('../core/engine.ts')
  const { silentLogger } = (await import(`${dir}/core/logger.ts`)) as typeof import('../core/logger.ts')
  const raw = parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>
  const stateDir = mkdtempSync(join(tmpdir(), 'bench-path-'))
  raw.stateDir = stateDir
  const config = await resolveConfig(raw, { source: configPath, baseDir: resolve(configPath, '..'), vars: {} })
  return { dir, engine: await createEngine(config, { logger: silentLogger }), stateDir }
}

/** One pass over the corpus, 64 requests in flight like the HTTP benchmark's connections. */
async function pass(engine: Engine): Promise<number> {
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

const engines = [await engineOf(root), ...(against ? [await engineOf(resolve(against))] : [])]
const results = engines.map(() => [] as number[])
for (let i = 0; i < warmups; i++) for (const e of engines) await pass(e.engine)
for (let i = 0; i < passes; i++) {
  // Alternate which goes first, so neither always follows the other's garbage.
  const order = i % 2 === 0 ? engines.keys() : [...engines.keys()].reverse()
  for (const k of order) results[k]!.push(await pass(engines[k]!.engine))
}
for (const [k, e] of engines.entries()) {
  await e.engine.shutdown()
  rmSync(e.stateDir, { recursive: true, force: true })
  const sorted = results[k]!.sort((a, b) => a - b)
  // Other work on the machine only ever adds to a pass's CPU time: the lowest passes are the truest.
  process.stderr.write(
    `${e.dir}: min ${sorted[0]!.toFixed(1)}, lower quartile ${sorted[Math.floor(passes / 4)]!.toFixed(1)}, median ${sorted[Math.floor(passes / 2)]!.toFixed(1)} µs CPU/request\n`,
  )
}
