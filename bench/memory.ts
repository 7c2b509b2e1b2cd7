// Memory after sustained traffic (`bun bench/memory.ts`), the target: after 1,000,000 events
// from 200,000 visitors, RSS ≤ 300 MB, and back near the start once the sessions expire. Runs the
// bench corpus's requests through the engine's own dialect route and pipeline in-process (no
// sockets), each visitor with its own address, and reports the heap after a full GC, the RSS then
// and later, and the peak RSS. The sink is the memory sink holding 1,000 rows, so what stays is what
// the plugins keep (sessions, caches), not what a sink buffers. The requests are generated from the
// seed as they are sent (bench/corpus.ts `corpusStream`), so the RSS is the engine's: the bench
// keeps only each visitor's user agent (a reference) and site (a byte).
//
// Then it sends nothing and waits for the sessions to expire on the wall clock (their timeout is
// --timeout-minutes, 1 by default: a visitor's events are seconds apart, so the sessions are the
// same as with 30), and reports the memory as the engine leaves it, then after a full GC and 5, 30
// and 60 s later (the allocator gives pages back on its own schedule).
//
//   bun bench/memory.ts [--events 1000000] [--visitors 200000] [--config bench/cases/engine-stdout.yaml]
//                       [--without <plugin>] [--timeout-minutes 1]

import { heapStats } from 'bun:jsc'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parse } from 'yaml'
import { resolveConfig } from '../core/config.ts'
import { createEngine } from '../core/engine.ts'
import { silentLogger } from '../core/logger.ts'
import type { IngestRequest } from '../core/plugin.ts'
import { corpusStream, SITES } from './corpus.ts'
import { flag, warnUnlessStartEnv } from './load.ts'

warnUnlessStartEnv()

const root = resolve(import.meta.dir, '..')
const events = Number(flag('events', '1000000'))
const visitors = Number(flag('visitors', '200000'))
const configPath = resolve(root, flag('config', 'bench/cases/engine-stdout.yaml'))
const timeoutMinutes = Number(flag('timeout-minutes', '1'))

const raw = parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>
raw.sinks = [{ memory: { maxRows: 1000 } }]
const without = process.argv.flatMap((a, i) => (a === '--without' && process.argv[i + 1] ? [process.argv[i + 1]!] : []))
raw.plugins = (raw.plugins as unknown[])
  .filter((p) => !without.includes(typeof p === 'string' ? p : Object.keys(p as object)[0]!))
  .map((p) => (p === 'sessions' ? { sessions: { timeoutMinutes } } : p))
// A fresh state folder: the sessions' snapshot of a previous run (written at shutdown into the
// config's `.state`) would otherwise be restored and counted as this run's memory.
const stateDir = mkdtempSync(join(tmpdir(), 'bench-memory-'))
raw.stateDir = stateDir
const config = await resolveConfig(raw, { source: configPath, baseDir: resolve(configPath, '..'), vars: {} })
const engine = await createEngine(config, { logger: silentLogger })
const route = engine.routes.find((r) => r.route.path === '/api/event')!.route

const peakRss = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024
const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0)
/**
 * The memory after a full GC: RSS right then, RSS 5 s later (the allocators give freed pages back to
 * the system on a timer, not in the GC: measured, RSS fell by a further 100-250 MB within those
 * seconds), JS heap (live / capacity) and what lives outside it.
 */
const settled = async () => {
  Bun.gc(true)
  const now = mb(process.memoryUsage().rss)
  await Bun.sleep(5000)
  Bun.gc(true)
  const m = process.memoryUsage()
  const h = heapStats()
  return `RSS ${now} MB, ${mb(m.rss)} MB 5 s later (JS heap ${mb(h.heapSize)} of ${mb(h.heapCapacity)} MB, external ${mb(m.external)} MB)`
}

const status = (key: string) =>
  Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024
const heapNow = () => {
  const h = heapStats()
  const m = process.memoryUsage()
  return `RSS ${mb(m.rss)} MB (anon ${status('RssAnon').toFixed(0)}, file ${status('RssFile').toFixed(0)}; JS heap ${mb(h.heapSize)} of ${mb(h.heapCapacity)} MB, external ${mb(m.external)} MB)`
}
/** A full GC, timed: what a collection of this heap would pause the engine for. */
const timedGc = () => {
  const t = performance.now()
  Bun.gc(true)
  return `${(performance.now() - t).toFixed(0)} ms`
}

// Visitor v keeps its address, user agent and site (those make its user id). Round 0 sends the
// corpus's request v; each later round another request of the visitor's site (pages, events,
// engagement), from a stream of that site's requests. 10.0.0.0/8 has room for 2^24 visitors and is
// behind the trusted loopback proxy.
console.log(`engine started: ${await settled()}`)
const first = corpusStream(42)
const bySite = SITES.map((site, s) => corpusStream(1000 + s, site))
const visitorUa: string[] = new Array(visitors)
const visitorSite = new Uint8Array(visitors)
const started = performance.now()
const send = async (body: string, ua: string, ip: string, receivedAt: number) => {
  // The route gets the body as text; the Request carries only the headers the plugins read.
  const request = new Request('http://localhost/api/event', {
    method: 'POST',
    headers: { 'content-type': 'text/plain', 'user-agent': ua, 'x-forwarded-for': ip },
  })
  const req: IngestRequest = { request, body, params: {}, peerIp: '127.0.0.1', receivedAt }
  await route.handle(req, engine.ingest)
}
for (let i = 0; i < events; i++) {
  const v = i % visitors
  let body: string
  if (i < visitors) {
    const r = first.next().value
    body = r.body
    visitorUa[v] = r.ua
    visitorSite[v] = SITES.indexOf(String((JSON.parse(body) as { d?: unknown }).d))
  } else {
    body = bySite[visitorSite[v]!]!.next().value.body
  }
  const ip = `10.${(v >> 16) & 255}.${(v >> 8) & 255}.${v & 255}`
  await send(body, visitorUa[v]!, ip, Date.now())
}
const ended = performance.now()
const seconds = (ended - started) / 1000
console.log(
  `${events} events from ${visitors} visitors in ${seconds.toFixed(1)} s, peak RSS ${peakRss().toFixed(0)} MB`,
)
console.log(`a full GC with the sessions open takes ${timedGc()}`)
console.log(`after the run: ${await settled()}`)
// The sessions store forgets a session one to two timeouts after its last event, checked every
// quarter timeout (at most a minute): two timeouts and two checks after the last event, all are gone.
const timeoutMs = timeoutMinutes * 60_000
const wait = ended + 2 * timeoutMs + 2 * Math.min(60_000, timeoutMs / 4) + 1000 - performance.now()
await Bun.sleep(Math.max(0, wait))
console.log(`sessions expired, as the engine leaves it (no GC forced): ${heapNow()}`)
const pause = timedGc()
const gcAt = performance.now()
console.log(`sessions expired, right after a full GC (${pause}): ${heapNow()}`)
for (const after of [5, 30, 60]) {
  await Bun.sleep(Math.max(0, gcAt + after * 1000 - performance.now()))
  console.log(`  ${after} s later: ${heapNow()}`)
}
// Bun.shrink() asks JSC to shrink its footprint (a GC, caches dropped, free memory given back).
Bun.shrink()
await Bun.sleep(5000)
console.log(`  Bun.shrink(), 5 s later: ${heapNow()}`)
await engine.shutdown()
rmSync(stateDir, { recursive: true, force: true })
