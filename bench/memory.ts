// Memory after sustained traffic (`bun bench/memory.ts`), the target: after 1,000,000 events
// from 200,000 visitors, RSS ≤ 300 MB. Runs the bench corpus's requests through the engine's own
// dialect route and pipeline in-process (no sockets), each visitor with its own address, and reports
// the heap after a full GC, the RSS then and the peak RSS. The sink is the memory sink holding 1,000
// rows, so what stays is what the plugins keep (sessions, caches), not what a sink buffers. Then it
// sends one event two session timeouts later (in event time), so every session of the run expires,
// and reports the memory again: it should come back near the start.
//
//   bun bench/memory.ts [--events 1000000] [--visitors 200000] [--config bench/cases/engine-stdout.yaml]
//                       [--without <plugin>]

import { heapStats } from 'bun:jsc'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parse } from 'yaml'
import { resolveConfig } from '../core/config.ts'
import { createEngine } from '../core/engine.ts'
import { silentLogger } from '../core/logger.ts'
import type { IngestRequest } from '../core/plugin.ts'
import { generateCorpus } from './corpus.ts'

const root = resolve(import.meta.dir, '..')
const flag = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback
}
const events = Number(flag('events', '1000000'))
const visitors = Number(flag('visitors', '200000'))
const configPath = resolve(root, flag('config', 'bench/cases/engine-stdout.yaml'))

const raw = parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>
raw.sinks = [{ memory: { maxRows: 1000 } }]
const without = process.argv.flatMap((a, i) => (a === '--without' && process.argv[i + 1] ? [process.argv[i + 1]!] : []))
raw.plugins = (raw.plugins as unknown[]).filter(
  (p) => !without.includes(typeof p === 'string' ? p : Object.keys(p as object)[0]!),
)
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

// Visitor v keeps its address, user agent and site (those make its user id) and, round after round,
// sends other requests of the corpus for that site (pages, events, engagement). 10.0.0.0/8 has room
// for 2^24 visitors and is behind the trusted loopback proxy.
// The bench's own requests take memory too (about 70 MB for 200,000): the engine alone is measured first.
console.log(`engine started: ${await settled()}`)
const corpus = generateCorpus(visitors, 42)
const sites = corpus.map((r) => String((JSON.parse(r.body) as { d?: unknown }).d))
const bodiesBySite = new Map<string, string[]>()
corpus.forEach((r, i) => {
  const list = bodiesBySite.get(sites[i]!)
  if (list) list.push(r.body)
  else bodiesBySite.set(sites[i]!, [r.body])
})
console.log(`requests generated: ${await settled()}`)
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
  const visitor = corpus[v]!
  const bodies = bodiesBySite.get(sites[v]!)!
  const r = { ua: visitor.ua, body: bodies[(v + Math.floor(i / visitors) * 7919) % bodies.length]! }
  const ip = `10.${(v >> 16) & 255}.${(v >> 8) & 255}.${v & 255}`
  await send(r.body, r.ua, ip, Date.now())
}
const seconds = (performance.now() - started) / 1000
console.log(
  `${events} events from ${visitors} visitors in ${seconds.toFixed(1)} s, peak RSS ${peakRss().toFixed(0)} MB`,
)
console.log(`after the run: ${await settled()}`)
const EXPIRE_BODY = '{"n":"pageview","u":"https://app.example/","d":"app.example"}'
const EXPIRE_UA =
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'
// Event time moves on by one timeout, then another: the sessions store drops a generation each time.
const timeoutMs = 30 * 60_000
for (const later of [timeoutMs + 1000, 2 * timeoutMs + 2000]) {
  await send(EXPIRE_BODY, EXPIRE_UA, '10.255.255.255', Date.now() + later)
}
console.log(`sessions expired: ${await settled()}`)
await engine.shutdown()
rmSync(stateDir, { recursive: true, force: true })
