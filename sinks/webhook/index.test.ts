// The `webhook` sink over real HTTP (issue #12 §5): events POSTed to the engine on a free port reach
// real receivers (Bun.serve on free ports). A destination that is down then back gets every event
// exactly once; a slow destination does not delay a fast one; filters and templates; rows spooled at
// shutdown are delivered by the next engine with the same stateDir; refused batches are dead-lettered.

import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Server } from 'bun'
import { makeEvent, startTestEngine, TEST_UA, type TestEngine, testServices } from '../../core/testing.ts'
import { setupSink } from '../../test/clickhouse/fixtures.ts'
import webhook from './index.ts'
import { compileTemplate } from './template.ts'

const root = resolve(import.meta.dir, '../..')
const scratch = mkdtempSync(join(tmpdir(), 'webhook-sink-test-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const PLUGINS = ['plausible', 'client-ip', 'user-agent', 'user-id', 'bots', 'props', 'sessions']
const SITES = [
  { id: 1, domain: 'example.com' },
  { id: 2, domain: 'shop.example', domains: ['shop.example', 'store.example'] },
  { id: 3, domain: 'other.example' },
]

interface Received {
  at: number
  headers: Headers
  body: string
}

/** A webhook destination on a free port: `answer` decides each reply; every request is recorded. */
class Receiver {
  readonly requests: Received[] = []
  inFlight = 0
  maxInFlight = 0
  answer: (req: Request, body: string) => Promise<Response> | Response = () => new Response('ok')
  private server: Server<undefined>
  readonly port: number

  constructor(port = 0) {
    this.server = this.listen(port)
    this.port = this.server.port!
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`
  }

  /** Payloads of the 2xx-answered requests, flattened (array or NDJSON bodies). */
  accepted(): Record<string, unknown>[] {
    return this.requests.flatMap((r) => {
      const text = r.body.trim()
      if (text.startsWith('[')) return JSON.parse(text) as Record<string, unknown>[]
      return text.split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)
    })
  }

  stop(): void {
    this.server.stop(true)
  }

  /** Listens again on the same port (a destination back after an outage). */
  restart(): void {
    this.server = this.listen(this.port)
  }

  private listen(port: number): Server<undefined> {
    return Bun.serve({
      port,
      hostname: '127.0.0.1',
      fetch: async (req) => {
        this.inFlight++
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight)
        try {
          const body = await req.text()
          const response = await this.answer(req, body)
          if (response.ok) this.requests.push({ at: Date.now(), headers: req.headers, body })
          return response
        } finally {
          this.inFlight--
        }
      },
    })
  }
}

async function engineWith(sinks: unknown[], stateDir = mkdtempSync(join(scratch, 'state-'))) {
  const t = await startTestEngine(
    { server: { port: 0, host: '127.0.0.1' }, sites: SITES, plugins: PLUGINS, sinks, stateDir },
    root,
  )
  const { port } = await t.engine.listen()
  return { t, base: `http://127.0.0.1:${port}`, stateDir }
}

/** One Plausible event over HTTP, tagged with a unique `seq` prop; a fresh visitor each time. */
async function send(base: string, seq: number, fields: Record<string, unknown> = {}): Promise<void> {
  const res = await fetch(`${base}/api/event`, {
    method: 'POST',
    headers: {
      'content-type': 'text/plain',
      'user-agent': TEST_UA,
      'x-forwarded-for': `2001:db8::${seq.toString(16)}`,
    },
    body: JSON.stringify({
      n: 'pageview',
      u: `https://example.com/p/${seq}`,
      d: 'example.com',
      p: { seq: String(seq) },
      ...fields,
    }),
  })
  expect(res.status).toBe(202)
}

async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await Bun.sleep(10)
  }
}

const seqs = (payloads: Record<string, unknown>[]) =>
  payloads
    .map((p) => Number((p['meta.value'] as string[])[(p['meta.key'] as string[]).indexOf('seq')]))
    .sort((a, b) => a - b)
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)
const sinkHealth = (t: TestEngine, i = 0) => t.engine.sinks.filter((s) => s.name === 'webhook')[i]!.instance.health()

describe('webhook sink', () => {
  test('the rows the memory sink holds arrive as the default payload, with an Idempotency-Key per batch', async () => {
    const receiver = new Receiver()
    const { t, base } = await engineWith([{ webhook: { url: receiver.url, batchSize: 5, flushIntervalMs: 20 } }])
    for (let i = 0; i < 12; i++) await send(base, i)
    await until(() => receiver.accepted().length === 12, 5000, 'delivery')
    await t.close()
    receiver.stop()
    const byKey = (rows: Record<string, unknown>[]) =>
      [...rows].sort((a, b) => String(a.pathname).localeCompare(String(b.pathname)))
    expect(byKey(receiver.accepted())).toEqual(byKey(t.events()))
    const keys = receiver.requests.map((r) => r.headers.get('idempotency-key'))
    expect(new Set(keys).size).toBe(receiver.requests.length)
    for (const key of keys) expect(key).toMatch(/^[0-9a-f-]{36}$/)
    expect(receiver.requests.every((r) => r.headers.get('content-type') === 'application/json')).toBe(true)
  }, 20_000)

  test('a destination down (503, then a closed port) and back gets every event exactly once', async () => {
    const receiver = new Receiver()
    let down = true
    receiver.answer = () => (down ? new Response('maintenance', { status: 503 }) : new Response('ok'))
    const { t, base } = await engineWith([
      { webhook: { url: receiver.url, batchSize: 4, flushIntervalMs: 20, retryMaxMs: 100, concurrency: 3 } },
    ])
    for (let i = 0; i < 20; i++) await send(base, i)
    await until(() => (sinkHealth(t).spoolBytes ?? 0) > 0, 5000, 'spooling')
    expect(sinkHealth(t).state).toBe('degraded')
    receiver.stop()
    for (let i = 20; i < 40; i++) await send(base, i)
    await Bun.sleep(300)
    expect(receiver.requests.length).toBe(0)
    down = false
    receiver.restart()
    for (let i = 40; i < 60; i++) await send(base, i)
    await until(() => receiver.accepted().length >= 60 && sinkHealth(t).state === 'ok', 10_000, 'replay')
    await Bun.sleep(200)
    expect(seqs(receiver.accepted())).toEqual(range(0, 60))
    const keys = receiver.requests.map((r) => r.headers.get('idempotency-key'))
    expect(new Set(keys).size).toBe(keys.length)
    const stats = t.engine.sinks.find((s) => s.name === 'webhook')!.stats
    expect(stats.rowsWritten).toBe(60)
    expect(stats.retries).toBeGreaterThan(0)
    expect(stats.rowsFailed).toBe(0)
    await t.close()
    receiver.stop()
  }, 30_000)

  test('a timed-out attempt is retried with the same Idempotency-Key, so the receiver can dedupe', async () => {
    const receiver = new Receiver()
    const seen = new Map<string, number>()
    let first = true
    receiver.answer = async (req) => {
      const key = req.headers.get('idempotency-key')!
      seen.set(key, (seen.get(key) ?? 0) + 1)
      if (first) {
        first = false
        await Bun.sleep(400)
      }
      return new Response('ok')
    }
    const { t, base } = await engineWith([
      { webhook: { url: receiver.url, batchSize: 3, flushIntervalMs: 20, timeoutMs: 150, retryMaxMs: 50 } },
    ])
    for (let i = 0; i < 3; i++) await send(base, i)
    await until(() => [...seen.values()].some((n) => n >= 2), 5000, 'a retry')
    await t.close()
    receiver.stop()
    expect(seen.size).toBe(1)
    const unique = new Map(receiver.requests.map((r) => [r.headers.get('idempotency-key'), r]))
    expect(unique.size).toBe(1)
    expect(seqs(receiver.accepted().slice(0, 3))).toEqual([0, 1, 2])
  }, 20_000)

  test('a slow destination does not delay a fast one, and never has more than `concurrency` requests in flight', async () => {
    const slow = new Receiver()
    slow.answer = async () => {
      await Bun.sleep(600)
      return new Response('ok')
    }
    const fast = new Receiver()
    const { t, base } = await engineWith([
      { webhook: { url: slow.url, batchSize: 1, flushIntervalMs: 10, concurrency: 2 } },
      { webhook: { url: fast.url, batchSize: 1, flushIntervalMs: 10, concurrency: 2 } },
    ])
    const started = Date.now()
    for (let i = 0; i < 10; i++) await send(base, i)
    await until(() => fast.accepted().length === 10, 5000, 'the fast destination')
    const fastDone = Date.now() - started
    // Ten requests at 600 ms, two at a time, take ≥ 3 s at the slow one; the fast one is done long before.
    expect(fastDone).toBeLessThan(2000)
    expect(slow.accepted().length).toBeLessThan(10)
    // Each destination has its own entry in /health and /metrics.
    const health = (await (await fetch(`${base}/health`)).json()) as { sinks: Record<string, { queuedRows: number }> }
    expect(Object.keys(health.sinks).sort()).toEqual(['memory', 'webhook', 'webhook#2'])
    expect(health.sinks.webhook!.queuedRows).toBeGreaterThan(0)
    expect(health.sinks['webhook#2']!.queuedRows).toBe(0)
    const metrics = await (await fetch(`${base}/metrics`)).text()
    expect(metrics).toContain('analytics_sink_rows_written_total{sink="webhook#2"} 10')
    await until(() => slow.accepted().length === 10, 10_000, 'the slow destination')
    expect(slow.maxInFlight).toBe(2)
    expect(seqs(slow.accepted())).toEqual(range(0, 10))
    await t.close()
    slow.stop()
    fast.stop()
  }, 30_000)

  test('filters by event name (with *) and by site id or domain; templates fill typed fields', async () => {
    const receiver = new Receiver()
    const { t, base } = await engineWith([
      {
        webhook: {
          url: receiver.url,
          events: ['Sign*', 'Purchase'],
          sites: ['store.example', '1'],
          body: 'ndjson',
          flushIntervalMs: 20,
          headers: { authorization: 'Bearer s3cret' },
          template: {
            text: 'New {{name}} on {{domain}}{{pathname}} (plan {{props.plan}})',
            site: '{{site_id}}',
            plan: '{{props.plan}}',
            missing: '{{props.nope}}',
            keys: '{{meta.key}}',
            at: '{{unix_time}}',
            when: '{{time}}',
            fixed: [1, true, null],
          },
        },
      },
    ])
    await send(base, 1, { n: 'Signup', p: { seq: '1', plan: 'pro' } })
    await send(base, 2, { n: 'pageview' })
    await send(base, 3, { n: 'Purchase', d: 'store.example', u: 'https://store.example/checkout' })
    await send(base, 4, { n: 'Signup', d: 'shop.example', u: 'https://shop.example/x' })
    await send(base, 5, { n: 'Signed-in', p: { seq: '5' } })
    await send(base, 6, { n: 'Signup', d: 'other.example', u: 'https://other.example/' })
    await until(() => receiver.accepted().length === 4, 5000, 'delivery')
    await Bun.sleep(100)
    await t.close()
    receiver.stop()
    expect(receiver.requests.every((r) => r.headers.get('content-type') === 'application/x-ndjson')).toBe(true)
    expect(receiver.requests.every((r) => r.headers.get('authorization') === 'Bearer s3cret')).toBe(true)
    const got = receiver.accepted().sort((a, b) => String(a.text).localeCompare(String(b.text)))
    expect(got.map((p) => p.text)).toEqual([
      'New Purchase on shop.example/checkout (plan )',
      'New Signed-in on example.com/p/5 (plan )',
      'New Signup on example.com/p/1 (plan pro)',
      'New Signup on shop.example/x (plan )',
    ])
    const signup = got[2]!
    expect(signup).toMatchObject({
      site: '1',
      plan: 'pro',
      missing: null,
      keys: ['plan', 'seq'],
      fixed: [1, true, null],
    })
    expect(typeof signup.at).toBe('number')
    expect(signup.when).toBe(`${new Date((signup.at as number) * 1000).toISOString().slice(0, 19)}Z`)
  }, 20_000)

  test('an unknown template field is a config error that names its path', async () => {
    expect(() => compileTemplate({ a: { b: 'x {{user_agent}}' } }, 'template')).toThrow(
      /unknown field \{\{user_agent\}\}/,
    )
    const error = await startTestEngine(
      {
        sites: SITES,
        plugins: PLUGINS,
        sinks: [{ webhook: { url: 'http://127.0.0.1:9/', template: { a: ['{{ip}}'] } } }],
        stateDir: mkdtempSync(join(scratch, 'err-')),
      },
      root,
    ).then(
      () => undefined,
      (e: Error) => e,
    )
    expect(String(error)).toContain('sinks[0].webhook.template.a.0')
  })

  test('rows spooled at shutdown while the destination is down reach it from the next engine', async () => {
    const receiver = new Receiver()
    receiver.stop()
    const sink = { webhook: { url: receiver.url, batchSize: 10, flushIntervalMs: 20, retryMaxMs: 100 } }
    const first = await engineWith([sink])
    for (let i = 0; i < 25; i++) await send(first.base, i)
    await first.t.close()
    expect(receiver.requests.length).toBe(0)

    receiver.restart()
    const second = await engineWith([sink], first.stateDir)
    await until(() => receiver.accepted().length >= 25, 10_000, 'replay')
    await Bun.sleep(200)
    expect(seqs(receiver.accepted())).toEqual(range(0, 25))
    await second.t.close()
    receiver.stop()
  }, 30_000)

  test('a batch refused with 400 goes to the dead-letter file, counted; 429 is retried', async () => {
    const receiver = new Receiver()
    let calls = 0
    receiver.answer = (_req, body) => {
      calls++
      if (body.includes('"reject"')) return new Response('bad payload', { status: 400 })
      if (calls === 1) return new Response('slow down', { status: 429, headers: { 'retry-after': '0' } })
      return new Response('ok')
    }
    const { t, base, stateDir } = await engineWith([
      { webhook: { url: receiver.url, body: 'object', flushIntervalMs: 20, retryMaxMs: 50, concurrency: 1 } },
    ])
    await send(base, 1)
    await until(() => receiver.accepted().length === 1, 5000, 'the retried 429')
    await send(base, 2, { p: { seq: '2', kind: 'reject' } })
    await send(base, 3)
    await until(() => receiver.accepted().length === 2, 5000, 'the batch after the refused one')
    await t.close()
    receiver.stop()
    const stats = t.engine.sinks.find((s) => s.name === 'webhook')!.stats
    expect(stats.deadLetters).toBe(1)
    expect(stats.rowsFailed).toBe(1)
    expect(seqs(receiver.accepted())).toEqual([1, 3])
    const { readdirSync } = await import('node:fs')
    const spool = readdirSync(join(stateDir, 'spool')).find((d) => d.startsWith('webhook-'))!
    const letters = readFileSync(join(stateDir, 'spool', spool, 'dead-letters.ndjson'), 'utf8')
      .trim()
      .split('\n')
    expect(letters.length).toBe(1)
    const letter = JSON.parse(letters[0]!) as { error: string; payload: string; rows: number }
    expect(letter.error).toStartWith('HTTP 400')
    expect(letter.rows).toBe(1)
    expect(letter.payload).toContain('reject')
  }, 20_000)

  test('health: degraded while retrying, failing when the spool is full; all delivered once the destination is back', async () => {
    const receiver = new Receiver()
    receiver.stop()
    const { sink, stats } = await setupSink(
      webhook,
      { url: receiver.url, batchSize: 100, flushIntervalMs: 10, retryMaxMs: 100, spoolLimitMb: 1 },
      testServices({ stateDir: mkdtempSync(join(scratch, 'full-')) }),
    )
    const long = 'x'.repeat(2000)
    for (let i = 0; i < 100; i++)
      sink.write(makeEvent({ name: 'pageview', pathname: `/${long}`, props: { seq: String(i) } }))
    await until(() => sink.health().state === 'degraded' && (sink.health().spoolBytes ?? 0) > 0, 5000, 'degraded')
    expect(sink.health().detail).toContain('retrying')
    expect(sink.health().detail).not.toContain('/hook')
    for (let i = 100; i < 1000; i++)
      sink.write(makeEvent({ name: 'pageview', pathname: `/${long}`, props: { seq: String(i) } }))
    await until(() => sink.health().state === 'failing', 5000, 'failing')
    expect(sink.health().detail).toContain('spool is full')
    receiver.restart()
    await until(() => stats.rowsWritten === 1000, 20_000, 'delivery after the outage')
    await sink.flush()
    expect(sink.health().state).toBe('ok')
    expect(seqs(receiver.accepted())).toEqual(range(0, 1000))
    await sink.close()
    receiver.stop()
  }, 30_000)
})
