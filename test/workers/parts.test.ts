// The parts of `serve --workers N` that need no process: the owner of a client IP, the summed
// /metrics, the frames between workers, per-worker folders, and the option's parsing.

import { expect, test } from 'bun:test'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from '../../core/cli.ts'
import { ConfigErrors, resolveConfig } from '../../core/config.ts'
import { AnalyticsEvent, eventFromRequest } from '../../core/event.ts'
import { workerPath } from '../../core/plugin.ts'
import { createSiteTable } from '../../core/sites.ts'
import { decodeEvents, type EventsFrame, encodeEvents, LineReader } from '../../core/workers/frames.ts'
import { sumMetrics } from '../../core/workers/metrics-sum.ts'
import { ownerOf } from '../../core/workers/owner.ts'
import { invokedScript, migrateReqOff, workerCount, workerFromEnv } from '../../core/workers/supervisor.ts'

test('every client IP has one owner, the same in every worker, and owners share the IPs about evenly', () => {
  for (const count of [2, 3, 8]) {
    const per = new Array<number>(count).fill(0)
    for (let i = 0; i < 30_000; i++) {
      const ip = i % 2 ? `10.${(i >> 8) & 255}.${i & 255}.7` : `2001:db8::${i.toString(16)}`
      const owner = ownerOf(ip, count)
      expect(ownerOf(ip, count)).toBe(owner)
      per[owner]!++
    }
    for (const n of per) expect(Math.abs(n - 30_000 / count)).toBeLessThan((30_000 / count) * 0.05)
  }
  expect(ownerOf('203.0.113.9', 1)).toBe(0)
})

test('rendezvous hashing: going from 2 to 3 workers moves only the IPs the new worker takes', () => {
  let moved = 0
  for (let i = 0; i < 10_000; i++) {
    const ip = `198.51.${(i >> 8) & 255}.${i & 255}`
    const before = ownerOf(ip, 2)
    const after = ownerOf(ip, 3)
    if (after !== before) {
      expect(after).toBe(2)
      moved++
    }
  }
  expect(moved / 10_000).toBeGreaterThan(0.28)
  expect(moved / 10_000).toBeLessThan(0.39)
})

test('the summed /metrics adds counters, histogram series and gauges with the same name and labels', () => {
  const a = [
    '# HELP analytics_http_requests_total HTTP requests by route and status.',
    '# TYPE analytics_http_requests_total counter',
    'analytics_http_requests_total{route="/api/event",status="202"} 3',
    '# HELP analytics_sink_batch_duration_seconds Time to write one batch.',
    '# TYPE analytics_sink_batch_duration_seconds histogram',
    'analytics_sink_batch_duration_seconds_bucket{sink="x",le="0.005"} 1',
    'analytics_sink_batch_duration_seconds_sum{sink="x"} 0.5',
    '# HELP analytics_sink_queued_rows Rows waiting in memory.',
    '# TYPE analytics_sink_queued_rows gauge',
    'analytics_sink_queued_rows{sink="x"} 7',
    '',
  ].join('\n')
  const b = [
    '# HELP analytics_http_requests_total HTTP requests by route and status.',
    '# TYPE analytics_http_requests_total counter',
    'analytics_http_requests_total{route="/api/event",status="202"} 4',
    'analytics_http_requests_total{route="/api/event",status="400"} 1',
    '# HELP analytics_sink_batch_duration_seconds Time to write one batch.',
    '# TYPE analytics_sink_batch_duration_seconds histogram',
    'analytics_sink_batch_duration_seconds_bucket{sink="x",le="0.005"} 2',
    'analytics_sink_batch_duration_seconds_sum{sink="x"} 0.25',
    '# HELP analytics_sink_queued_rows Rows waiting in memory.',
    '# TYPE analytics_sink_queued_rows gauge',
    'analytics_sink_queued_rows{sink="x"} 1',
    '',
  ].join('\n')
  const text = sumMetrics([a, b], 3)
  const lines = text.split('\n')
  expect(lines).toContain('analytics_http_requests_total{route="/api/event",status="202"} 7')
  expect(lines).toContain('analytics_http_requests_total{route="/api/event",status="400"} 1')
  expect(lines).toContain('analytics_sink_batch_duration_seconds_bucket{sink="x",le="0.005"} 3')
  expect(lines).toContain('analytics_sink_batch_duration_seconds_sum{sink="x"} 0.75')
  expect(lines).toContain('analytics_sink_queued_rows{sink="x"} 8')
  expect(lines).toContain('analytics_workers 3')
  expect(lines).toContain('analytics_workers_reporting 2')
  // One HELP and TYPE per family, before its series.
  expect(lines.filter((l) => l === '# TYPE analytics_http_requests_total counter')).toHaveLength(1)
  expect(lines.indexOf('# TYPE analytics_sink_queued_rows gauge')).toBeLessThan(
    lines.indexOf('analytics_sink_queued_rows{sink="x"} 8'),
  )
})

test('events travel between workers with every field, their headers and their site', () => {
  const sites = createSiteTable([{ id: 7, domain: 'example.com', domains: ['example.com', 'www.example.com'] }])
  const request = new Request('http://localhost/api/event', {
    method: 'POST',
    headers: { 'user-agent': 'Mozilla/5.0 "quoted" é', 'x-ip-type': 'dc_ip', 'x-forwarded-for': '203.0.113.5' },
    body: '{}',
  })
  const first = eventFromRequest({ request, peerIp: '::1', receivedAt: 1_790_000_000_123 }, 'plausible')
  Object.assign(first, {
    site: sites.byDomain('www.example.com'),
    site_id: 7,
    name: 'Signup ✓',
    user_id: 18_446_744_073_709_551_615n,
    previousUserId: 12n,
    clientIp: '203.0.113.5',
    props: { plan: 'pro', 'line\nbreak': 'é' },
    dialectData: { screenSize: 'Desktop' },
    hashMode: true,
    interactive: false,
    scroll_depth: 255,
  })
  const second = eventFromRequest({ request, peerIp: '::1', receivedAt: 1_790_000_000_123 }, 'plausible')
  let frames: EventsFrame[] = []
  const reader = new LineReader()
  const line = encodeEvents(42, [first, second], [3, 0])
  // Split inside a multi-byte character: the reader must join the halves.
  const bytes = new TextEncoder().encode(line)
  const cut = bytes.indexOf(0xc3) + 1
  reader.push(bytes.subarray(0, cut), (f) => frames.push(f as EventsFrame))
  expect(frames).toHaveLength(0)
  reader.push(bytes.subarray(cut), (f) => frames.push(f as EventsFrame))
  expect(frames).toHaveLength(1)
  expect(frames[0]!.i).toBe(42)
  expect(frames[0]!.s).toEqual([3, 0])
  const [a, b] = decodeEvents(frames[0]!, sites)
  const plain = (e: AnalyticsEvent) => ({ ...e, headers: undefined })
  expect(plain(a!)).toEqual(plain(first))
  expect(plain(b!)).toEqual(plain(second))
  expect(a!.site).toBe(sites.byDomain('example.com'))
  expect(a!.headers.get('x-ip-type')).toBe('dc_ip')
  expect(a!.headers).toBe(b!.headers)
  expect(a).toBeInstanceOf(AnalyticsEvent)
  frames = []
})

test('each worker keeps its own copy of a folder; worker 0 keeps the one a single process used', () => {
  expect(workerPath('/var/spool/x', { index: 0, count: 1 })).toBe('/var/spool/x')
  expect(workerPath('/var/spool/x', { index: 0, count: 4 })).toBe('/var/spool/x')
  expect(workerPath('/var/spool/x/', { index: 3, count: 4 })).toBe('/var/spool/x/worker-3')
})

test('workers: a number, auto, or an error with its path; --workers overrides', async () => {
  const resolve = (server: unknown, workers?: number | 'auto') =>
    resolveConfig({ server, sinks: ['memory'] }, { source: '(test)', baseDir: '/tmp', ...(workers ? { workers } : {}) })
  expect((await resolve({})).server.workers).toBe(1)
  expect((await resolve({ workers: 'auto' })).server.workers).toBe('auto')
  expect((await resolve({ workers: 2, affinity: false })).server.affinity).toBe(false)
  expect((await resolve({ workers: 2 }, 4)).server.workers).toBe(4)
  const error = await resolve({ workers: 0 }).catch((e) => e)
  expect(error).toBeInstanceOf(ConfigErrors)
  expect((error as ConfigErrors).issues[0]!.path).toBe('server.workers')
  expect(workerCount('auto')).toBeGreaterThanOrEqual(1)
  expect(workerCount(3)).toBe(3)
  expect(parseArgs(['serve', '--workers', '2'])).toMatchObject({ load: { workers: 2 } })
  expect(parseArgs(['--workers=auto'])).toMatchObject({ load: { workers: 'auto' } })
  expect(parseArgs(['--workers', '0'])).toEqual({ error: '--workers: expected 1 to 256 or auto: 0' })
})

test('a process is a worker only with both variables the supervisor sets, and a valid index', () => {
  expect(workerFromEnv({})).toBeUndefined()
  expect(workerFromEnv({ ANALYTICS_WORKER: '1/2' })).toBeUndefined()
  expect(workerFromEnv({ ANALYTICS_WORKER: '2/2', ANALYTICS_RUN_DIR: '/run/x' })).toBeUndefined()
  expect(workerFromEnv({ ANALYTICS_WORKER: '1/2', ANALYTICS_RUN_DIR: '/run/x', ANALYTICS_AFFINITY: '0' })).toEqual({
    identity: { index: 1, count: 2 },
    runDir: '/run/x',
    affinity: false,
  })
})

test('the supervisor warns only when net.ipv4.tcp_migrate_req reads 0, not when it is 1 or absent', () => {
  const dir = mkdtempSync(join(tmpdir(), 'migrate-req-'))
  try {
    const file = join(dir, 'tcp_migrate_req')
    writeFileSync(file, '0\n')
    expect(migrateReqOff(file)).toBe(true)
    writeFileSync(file, '1\n')
    expect(migrateReqOff(file)).toBe(false)
    expect(migrateReqOff(join(dir, 'absent'))).toBe(false)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('workers are started on the script as invoked (a deploy symlink, runtime flags), not its resolved path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'invoked-'))
  try {
    const release = join(dir, 'release-2')
    mkdirSync(release)
    writeFileSync(join(release, 'cli.ts'), '')
    symlinkSync(release, join(dir, 'current'))
    const resolved = join(release, 'cli.ts')
    const invoked = join(dir, 'current', 'cli.ts')
    // What Bun shows in process.argv[1] is the resolved path; /proc/self/cmdline keeps the symlink.
    expect(invokedScript(resolved, ['bun', '--preload', './clock.ts', invoked, 'serve', '--workers', '2'])).toEqual([
      '--preload',
      './clock.ts',
      invoked,
    ])
    expect(invokedScript(resolved, ['bun', resolved, 'serve'])).toEqual([resolved])
    // No /proc, or a command line that does not name the script: the resolved path.
    expect(invokedScript(resolved, undefined)).toEqual([resolved])
    expect(invokedScript(resolved, ['bun', 'other.ts'])).toEqual([resolved])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
