// Memory after sustained traffic (`bun bench/memory.ts`), the target: after 1,000,000 events
// from 200,000 visitors, RSS ≤ 300 MB. Runs the bench corpus's requests through the engine's own
// dialect route and pipeline in-process (no sockets), each visitor with its own address, and reports
// the heap after a full GC, the RSS then and the peak RSS. The sink is the memory sink holding 1,000
// rows, so what stays is what the plugins keep (sessions, caches), not what a sink buffers.
//
//   bun bench/memory.ts [--events 1000000] [--visitors 200000] [--config bench/cases/engine-stdout.yaml]

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
// A fresh state folder: the sessions' snapshot of a previous run (written at shutdown into the
// config's `.state`) would otherwise be restored and counted as this run's memory.
const stateDir = mkdtempSync(join(tmpdir(), 'bench-memory-'))
raw.stateDir = stateDir
const config = await resolveConfig(raw, { source: configPath, baseDir: resolve(configPath, '..'), vars: {} })
const engine = await createEngine(config, { logger: silentLogger })
const route = engine.routes.find((r) => r.route.path === '/api/event')!.route

const peakRss = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024
const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0)

// Visitor v keeps its address, user agent and site (those make its user id) and, round after round,
// sends other requests of the corpus for that site (pages, events, engagement). 10.0.0.0/8 has room
// for 2^24 visitors and is behind the trusted loopback proxy.
const corpus = generateCorpus(visitors, 42)
const sites = corpus.map((r) => String((JSON.parse(r.body) as { d?: unknown }).d))
const bodiesBySite = new Map<string, string[]>()
corpus.forEach((r, i) => {
  const list = bodiesBySite.get(sites[i]!)
  if (list) list.push(r.body)
  else bodiesBySite.set(sites[i]!, [r.body])
})
const started = performance.now()
for (let i = 0; i < events; i++) {
  const v = i % visitors
  const visitor = corpus[v]!
  const bodies = bodiesBySite.get(sites[v]!)!
  const r = { ua: visitor.ua, body: bodies[(v + Math.floor(i / visitors) * 7919) % bodies.length]! }
  const ip = `10.${(v >> 16) & 255}.${(v >> 8) & 255}.${v & 255}`
  // The route gets the body as text; the Request carries only the headers the plugins read.
  const request = new Request('http://localhost/api/event', {
    method: 'POST',
    headers: { 'content-type': 'text/plain', 'user-agent': r.ua, 'x-forwarded-for': ip },
  })
  const req: IngestRequest = { request, body: r.body, params: {}, peerIp: '127.0.0.1', receivedAt: Date.now() }
  await route.handle(req, engine.ingest)
}
const seconds = (performance.now() - started) / 1000
Bun.gc(true)
const heap = heapStats().heapSize
const rss = process.memoryUsage().rss
console.log(
  `${events} events from ${visitors} visitors in ${seconds.toFixed(1)} s: heap ${mb(heap)} MB after GC, RSS ${mb(rss)} MB, peak RSS ${peakRss().toFixed(0)} MB`,
)
await engine.shutdown()
rmSync(stateDir, { recursive: true, force: true })
