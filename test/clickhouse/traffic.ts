// What the end-to-end and process-level ClickHouse tests share: tracker-shaped requests, reading the
// engine's /metrics text, a real engine process (`bun core/cli.ts serve`), and exactly-once checks.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Subprocess } from 'bun'
import { stringify } from 'yaml'
import { STANDARD_PLUGINS } from '../../core/defaults.ts'
import { builtinPlugins } from '../../plugins/registry.ts'
import type { ClickHouseServer } from './harness.ts'

export const root = resolve(import.meta.dir, '../..')
const cli = join(root, 'core/cli.ts')

/** A desktop Chrome on Windows: not a bot, and parsed by the user-agent plugin. */
export const CHROME_UA =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'
export const FIREFOX_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'
export const SAFARI_IPHONE_UA =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1'

export const SPAM_LIST = join(root, 'test/fixtures/spammers.txt')

/** core/defaults.ts STANDARD_PLUGINS that the registry has, spam-referrers on the local list. */
export function standardPlugins(overrides: Record<string, unknown> = {}): unknown[] {
  return STANDARD_PLUGINS.filter((name) => name in builtinPlugins).map((name) => {
    if (name in overrides) return { [name]: overrides[name] }
    if (name === 'spam-referrers') return { 'spam-referrers': { lists: [SPAM_LIST] } }
    return name
  })
}

/**
 * A made-up client address per visitor (IPv6 documentation prefix: nothing is ever sent there); two
 * groups, so that visitors past 65,534 still get valid, distinct addresses.
 */
export const visitorIp = (visitor: number) =>
  `2001:db8::${((visitor + 1) >>> 16).toString(16)}:${((visitor + 1) & 0xffff).toString(16)}`

/** The tracker's request: text/plain JSON, a browser user agent, the client address from the proxy. */
export function plausibleRequest(
  base: string,
  body: Record<string, unknown>,
  { ip = '2001:db8::1', ua = CHROME_UA }: { ip?: string; ua?: string } = {},
): Request {
  return new Request(`${base}/api/event`, {
    method: 'POST',
    headers: { 'content-type': 'text/plain', 'user-agent': ua, 'x-forwarded-for': ip },
    body: JSON.stringify(body),
  })
}

/** Lynkow's collector request, as the page script sends it with fetch. */
export function lynkowRequest(
  base: string,
  siteId: number,
  body: Record<string, unknown>,
  { ip = '2001:db8::1', ua = CHROME_UA, origin = 'https://example.com' } = {},
): Request {
  return new Request(`${base}/public/${siteId}/analytics/collect`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'user-agent': ua, 'x-forwarded-for': ip, origin },
    body: JSON.stringify(body),
  })
}

/**
 * Request `seq` of a steady stream: visitor `seq >> 1` sends a pageview, then a custom event; both
 * carry `seq` as a prop, so every stored row names the request that made it.
 */
export function streamRequest(base: string, seq: number): Request {
  const visitor = seq >> 1
  const body =
    seq % 2 === 0
      ? {
          n: 'pageview',
          u: `https://example.com/articles/${visitor}?utm_source=newsletter&utm_medium=email`,
          d: 'example.com',
          r: 'https://news.ycombinator.com/item?id=1',
          p: { seq: String(seq) },
        }
      : {
          n: 'Signup',
          u: `https://example.com/articles/${visitor}`,
          d: 'example.com',
          p: { seq: String(seq), plan: 'pro' },
        }
  return plausibleRequest(base, body, { ip: visitorIp(visitor) })
}

/** Sends one stream request; true when it was accepted (202, nothing dropped). */
export async function sendStream(base: string, seq: number): Promise<boolean> {
  const response = await fetch(streamRequest(base, seq))
  await response.arrayBuffer()
  return response.status === 202 && response.headers.get('x-plausible-dropped') === null
}

/** A value of the engine's /metrics text for one sink (`_count`, `_sum` and plain series). */
export function metric(text: string, name: string, sink: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{sink="${sink}"} `))
  if (line === undefined) throw new Error(`no ${name}{sink="${sink}"} in /metrics`)
  return Number(line.slice(line.lastIndexOf(' ') + 1))
}

/**
 * Exactly-once, read from the server: the `seq` props stored in events_v2 and, per session, sum(sign)
 * and sum(sign * events) from sessions_v2 next to the session's stored events. Background merges may
 * collapse -1/+1 pairs at any time; these sums do not change when they do, but a lost or duplicated
 * batch changes them.
 */
export async function storedState(ch: ClickHouseServer, database: string) {
  const seqs = await ch.rows<{ seq: string }>(
    `SELECT meta.value[indexOf(meta.key, 'seq')] AS seq FROM ${database}.events_v2`,
  )
  const perSession = await ch.rows<{ session_id: string; events: string }>(
    `SELECT toString(session_id) AS session_id, toString(count()) AS events FROM ${database}.events_v2 WHERE name != 'engagement' GROUP BY session_id`,
  )
  const sessions = await ch.rows<{ session_id: string; signs: string; counted: string }>(
    `SELECT toString(session_id) AS session_id, toString(sum(sign)) AS signs, toString(sum(sign * events)) AS counted FROM ${database}.sessions_v2 GROUP BY session_id`,
  )
  const stored = new Map(perSession.map((r) => [r.session_id, Number(r.events)]))
  const badSessions = sessions.filter((s) => Number(s.signs) !== 1 || Number(s.counted) !== stored.get(s.session_id))
  return {
    rows: seqs.length,
    seqs: new Set(seqs.map((r) => Number(r.seq))),
    sessions: sessions.length,
    sessionsWithEvents: stored.size,
    badSessions: badSessions.length,
  }
}

export interface EngineProcess {
  readonly url: string
  readonly proc: Subprocess
  /** Everything the engine logged so far (JSON lines). */
  log(): string
  metrics(): Promise<string>
  health(): Promise<{
    status: number
    body: { status: string; sinks: Record<string, { state: string; detail?: string }> }
  }>
  /** SIGTERM, then the exit code (SIGKILL after 30 s, which fails the test that waits on it). */
  stop(): Promise<number>
}

const running = new Set<Subprocess>()

/** Kills the engines a failed test left running (by their handles). */
export function killEngines(): void {
  for (const proc of running) proc.kill('SIGKILL')
  running.clear()
}

/** Writes `config` as a YAML file in `dir` and runs `bun core/cli.ts serve --config <it> --port 0`. */
export async function startEngineProcess(config: Record<string, unknown>, dir: string): Promise<EngineProcess> {
  const file = join(mkdtempSync(join(dir, 'engine-')), 'analytics.yaml')
  writeFileSync(file, stringify(config))
  const proc = Bun.spawn([process.execPath, cli, 'serve', '--config', file, '--port', '0'], {
    cwd: root,
    stdout: 'ignore',
    stderr: 'pipe',
  })
  running.add(proc)
  void proc.exited.then(() => running.delete(proc))
  let log = ''
  let listening: (url: string) => void = () => {}
  const url = new Promise<string>((r) => {
    listening = r
  })
  // Read stderr to the end, always: a full pipe would stall the engine's logger.
  const drained = (async () => {
    const reader = proc.stderr.getReader()
    const decoder = new TextDecoder()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return
      log += decoder.decode(value, { stream: true })
      const found = /"msg":"Listening\.","url":"(http:\/\/[^"]+)"/.exec(log)
      if (found) listening(found[1]!)
    }
  })()
  const base = await Promise.race([
    url,
    proc.exited.then((code) => {
      throw new Error(`engine exited with ${code} before listening:\n${log}`)
    }),
    Bun.sleep(20_000).then(() => {
      throw new Error(`engine did not listen within 20 s:\n${log}`)
    }),
  ])
  return {
    url: base,
    proc,
    log: () => log,
    async metrics() {
      return (await fetch(`${base}/metrics`)).text()
    },
    async health() {
      const response = await fetch(`${base}/health`)
      return { status: response.status, body: (await response.json()) as never }
    },
    async stop() {
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000)
      const code = await proc.exited
      clearTimeout(timer)
      await drained
      return code
    },
  }
}

/** A temporary folder for configs and state; `remove()` in afterAll. */
export function scratchDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix))
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) }
}

/** A load of stream requests: which seqs were accepted, and how many were not. */
export interface Load {
  readonly accepted: Set<number>
  /** Requests sent so far (the next seq). */
  next(): number
  refused(): number
  /** Stops sending and waits for the requests in flight. */
  stop(): Promise<void>
}

/**
 * A steady stream from `clients` clients, each sending one request after another (2 ms apart) until
 * stop(), at most `max` requests in all.
 */
export function steadyStream(base: string, clients = 4, max = 20_000): Load & { done(): Promise<void> } {
  const accepted = new Set<number>()
  let refused = 0
  let next = 0
  let streaming = true
  const running = Array.from({ length: clients }, async () => {
    while (streaming && next < max) {
      const seq = next++
      if (await sendStream(base, seq)) accepted.add(seq)
      else refused++
      await Bun.sleep(2)
    }
  })
  return {
    accepted,
    next: () => next,
    refused: () => refused,
    /** Waits until the clients have sent their `max` requests. */
    async done() {
      await Promise.all(running)
    },
    async stop() {
      streaming = false
      await Promise.all(running)
    },
  }
}

/** One answered request of a paced load: when it was sent (epoch ms) and how long it took. */
export interface Timing {
  sentAt: number
  ms: number
}

/**
 * An open-loop load at `rate` requests per second (as far as `maxInFlight` allows: a stalled engine
 * shows as fewer requests, not as a pile of them), until stop() or `max` requests. Records the
 * latency of every accepted request, for percentiles over any time window.
 */
export function pacedLoad(
  base: string,
  { rate, max, maxInFlight = 256 }: { rate: number; max: number; maxInFlight?: number },
): Load & { timings: Timing[]; inFlight(): number; failures: Map<string, number>; resent(): number } {
  const accepted = new Set<number>()
  const timings: Timing[] = []
  /** Why requests were not accepted: `status 503`, `dropped: bot`, or the fetch error. */
  const failures = new Map<string, number>()
  const failed = (why: string) => {
    refused++
    failures.set(why, (failures.get(why) ?? 0) + 1)
  }
  const pending = new Set<Promise<void>>()
  let refused = 0
  let resent = 0
  let next = 0
  let streaming = true
  const started = performance.now()
  const send = (seq: number) => {
    const sentAt = Date.now()
    const t0 = performance.now()
    // A kept-alive connection the engine closed as idle just as it was reused fails before the
    // request reaches the engine (ECONNRESET): resent once, on a fresh connection, and counted. Had
    // the engine taken the first one, its seq would be stored twice and the exactly-once check fail.
    const request = fetch(streamRequest(base, seq))
      .catch(() => {
        resent++
        return fetch(streamRequest(base, seq), { keepalive: false })
      })
      .then(
        async (response) => {
          await response.arrayBuffer()
          const dropped = response.headers.get('x-plausible-dropped')
          if (response.status === 202 && dropped === null) {
            accepted.add(seq)
            timings.push({ sentAt, ms: performance.now() - t0 })
          } else failed(dropped === null ? `status ${response.status}` : `dropped: ${dropped}`)
        },
        (error: unknown) => failed(String(error).slice(0, 120)),
      )
    const tracked = request.finally(() => pending.delete(tracked))
    pending.add(tracked)
  }
  const loop = (async () => {
    while (streaming && next < max) {
      const due = Math.min(max, Math.floor(((performance.now() - started) * rate) / 1000))
      while (next < due && pending.size < maxInFlight) send(next++)
      await Bun.sleep(5)
    }
  })()
  return {
    accepted,
    timings,
    failures,
    resent: () => resent,
    next: () => next,
    refused: () => refused,
    inFlight: () => pending.size,
    async stop() {
      streaming = false
      await loop
      await Promise.all(pending)
    },
  }
}

/** The `p` quantile (0-1) of `values` (nearest rank); NaN for none. */
export function quantile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!
}

/** Latency summary of the requests sent between `from` and `to` (epoch ms). */
export function latencyOf(timings: readonly Timing[], from = 0, to = Number.POSITIVE_INFINITY) {
  const ms = timings.filter((t) => t.sentAt >= from && t.sentAt < to).map((t) => t.ms)
  const seconds = to === Number.POSITIVE_INFINITY || from === 0 ? undefined : (to - from) / 1000
  return {
    requests: ms.length,
    perSecond: seconds ? Math.round(ms.length / seconds) : undefined,
    p50: quantile(ms, 0.5),
    p99: quantile(ms, 0.99),
    max: quantile(ms, 1),
  }
}

/** The bound on the p99 of the 202s while ClickHouse is away (issue #11, Faults). */
export const P99_LIMIT_MS = 50

/**
 * The bound a fault test holds the p99 of the 202s to: the 50 ms on a machine quiet enough
 * to measure it (load average below the core count, and a healthy p99 under 25 ms in the seconds
 * before the fault, same run). On a busy shared machine, where stalls of 100-300 ms hit healthy and
 * faulty seconds alike, only that no request waits for ClickHouse (1 s, far below the insert
 * timeout), with a loud warning.
 */
export function p99Bound(healthyP99: number): number {
  const load = loadavg()[0] ?? 0
  if (load < cpus().length && healthyP99 < P99_LIMIT_MS / 2) return P99_LIMIT_MS
  console.warn(
    `*** machine too busy to check the p99 < ${P99_LIMIT_MS} ms of the issue (load average ${load.toFixed(1)} on ${cpus().length} cores, healthy p99 ${healthyP99.toFixed(1)} ms): checking < 1000 ms only ***`,
  )
  return 1000
}

/** Seconds from an environment variable (fault durations: the long runs on request). */
export function envSeconds(name: string, fallback: number): number {
  const value = Number(process.env[name])
  return Number.isFinite(value) && value > 0 ? value : fallback
}
