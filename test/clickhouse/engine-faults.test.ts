// Delivery faults with a real engine process (`bun core/cli.ts serve`), real HTTP requests and a real
// ClickHouse 18.16 (research/scale-out.md §5, docs/delivery.md): every request answered 202 must end
// up in events_v2 exactly once, with its session rows, whatever ClickHouse does meanwhile.
//
// ClickHouse is stopped with SIGTERM, which lets running inserts answer: 18.16's plain MergeTree
// cannot deduplicate, so only a lost answer after a commit could duplicate (docs/delivery.md), and
// these counts must be exact. The outage lasts 20 s under a paced 500 requests/s (the issue asks
// 5 min at 2,000/s: FAULT_CH_OUTAGE_S=300 FAULT_RATE=2000); the 202s' p99 is measured and held to
// 50 ms on a quiet machine (traffic.ts p99Bound).
//
// A lost answer (a proxy cuts the connection after the server answered one insert in five) is the
// one case that doubles rows on plain MergeTree: the test shows it is bounded to the lost batches.
//
// The server runs with keep_alive_timeout 0 (one request per connection). With keep-alive, a
// SIGTERM'd 18.16 goes on serving the connection the engine keeps busy: measured here, the stop took
// ~25 s, inserts succeeding all along, so the outage began only then. Without it the stop takes
// ~0.3 s under the same load and the engine sees the outage at once.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { dropProxy, seqsOf } from './drop-proxy.ts'
import { type ClickHouseServer, clickhouseBinary, startClickHouse, warnIfNoClickHouse } from './harness.ts'
import {
  type EngineProcess,
  envSeconds,
  killEngines,
  latencyOf,
  metric,
  p99Bound,
  pacedLoad,
  scratchDir,
  sendStream,
  standardPlugins,
  startEngineProcess,
  steadyStream,
  storedState,
} from './traffic.ts'

warnIfNoClickHouse()

const SINK = 'clickhouse'
/** The outage under load: 20 s by default, the 5 min with FAULT_CH_OUTAGE_S=300. */
const OUTAGE_S = envSeconds('FAULT_CH_OUTAGE_S', envSeconds('FAULT_OUTAGE_S', 20))
/**
 * Requests per second of the paced load (one event each). The 2,000 with FAULT_RATE=2000:
 * on the shared 2-core test machine (load average 10-17 from other work) the p99 at 2,000/s was
 * 84-92 ms with no server at all and 384 ms with a healthy one, so the default is 500.
 */
const RATE = envSeconds('FAULT_RATE', 500)

describe.skipIf(!clickhouseBinary)('engine process against ClickHouse 18.16: faults', () => {
  let ch: ClickHouseServer
  const scratch = scratchDir('engine-faults-')

  beforeAll(async () => {
    ch = (await startClickHouse({ extraConfig: '<keep_alive_timeout>0</keep_alive_timeout>' }))!
  }, 30_000)
  afterAll(async () => {
    killEngines()
    await ch?.destroy()
    scratch.remove()
  })

  function config(database: string, stateDir: string, extra: Record<string, unknown> = {}) {
    return {
      server: { host: '127.0.0.1', shutdownTimeoutMs: 5000 },
      sites: [{ id: 1, domain: 'example.com' }],
      stateDir,
      log: { level: 'info' },
      plugins: standardPlugins(),
      sinks: [
        {
          clickhouse: {
            url: ch.url,
            database,
            batchRows: 1000,
            // 18.16 takes 0.1-0.3 s per insert into these 34-column tables here, whatever its size.
            flushIntervalMs: 200,
            retryMaxMs: 250,
            requestTimeoutMs: 5000,
            compression: 'none',
            ...extra,
          },
        },
      ],
    }
  }

  /** Sends requests `from` to `to - 1`, `parallel` at a time; the seqs that were accepted. */
  async function burst(engine: EngineProcess, from: number, to: number, parallel = 8): Promise<Set<number>> {
    const accepted = new Set<number>()
    let next = from
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (next < to) {
          const seq = next++
          if (await sendStream(engine.url, seq)) accepted.add(seq)
        }
      }),
    )
    return accepted
  }

  /**
   * Polls until the server holds `rows` events and the sink has nothing left in memory or on disk
   * (both tables: sessions_v2 may still be replaying when events_v2 is complete). Returns /metrics.
   */
  async function drained(engine: EngineProcess, database: string, rows: number, ms = 20_000): Promise<string> {
    const deadline = Date.now() + ms
    for (;;) {
      const [row] = await ch
        .rows<{ n: string }>(`SELECT toString(count()) AS n FROM ${database}.events_v2`)
        .catch(() => [{ n: '-1' }])
      const text = await engine.metrics()
      const pending =
        metric(text, 'analytics_sink_spool_bytes', SINK) + metric(text, 'analytics_sink_queued_rows', SINK)
      if (Number(row?.n) >= rows && pending === 0) return text
      if (Date.now() > deadline) {
        throw new Error(`${database}: ${row?.n} of ${rows} rows, ${pending} bytes and rows pending after ${ms} ms`)
      }
      await Bun.sleep(50)
    }
  }

  /** The exactly-once verdict: stored seqs = accepted seqs, once each; each session consistent. */
  async function expectExactlyOnce(database: string, accepted: Set<number>): Promise<void> {
    const state = await storedState(ch, database)
    expect(state.rows).toBe(accepted.size)
    expect(state.seqs.size).toBe(accepted.size)
    expect([...state.seqs].filter((s) => !accepted.has(s))).toEqual([])
    expect(state.sessions).toBe(state.sessionsWithEvents)
    expect(state.badSessions).toBe(0)
  }

  test('SIGTERM while ClickHouse is down loses nothing: the next start replays the spool, once', async () => {
    const stateDir = join(scratch.path, 'state-sigterm')
    const first = await startEngineProcess(config('sigterm', stateDir), scratch.path)
    await ch.stop()
    const accepted = await burst(first, 0, 400)
    expect(accepted.size).toBe(400)
    // The outage shows: spooled bytes, failed attempts retried, a degraded (still 200) health.
    const deadline = Date.now() + 10_000
    let text = await first.metrics()
    const outageShows = () =>
      metric(text, 'analytics_sink_spool_bytes', SINK) > 0 && metric(text, 'analytics_sink_retries_total', SINK) > 0
    while (!outageShows() && Date.now() < deadline) {
      await Bun.sleep(50)
      text = await first.metrics()
    }
    expect(metric(text, 'analytics_sink_spool_bytes', SINK)).toBeGreaterThan(0)
    expect(metric(text, 'analytics_sink_retries_total', SINK)).toBeGreaterThan(0)
    expect(metric(text, 'analytics_sink_rows_written_total', SINK)).toBe(0)
    const health = await first.health()
    expect(health.status).toBe(200)
    expect(health.body.sinks[SINK]?.state).toBe('degraded')

    expect(await first.stop()).toBe(0)
    expect(first.log()).not.toContain('they are lost')
    const spool = readdirSync(stateDir, { recursive: true }).map(String)
    expect(spool.some((f) => f.endsWith('.seg'))).toBe(true)

    await ch.start()
    const second = await startEngineProcess(config('sigterm', stateDir), scratch.path)
    const after = await drained(second, 'sigterm', accepted.size)
    expect(second.log()).toContain('Replaying rows spooled by a previous run.')
    expect(metric(after, 'analytics_sink_batch_duration_seconds_count', SINK)).toBeGreaterThan(0)
    expect(metric(after, 'analytics_sink_batch_duration_seconds_sum', SINK)).toBeGreaterThan(0)
    expect(metric(after, 'analytics_sink_dead_letters_total', SINK)).toBe(0)
    expect(await second.stop()).toBe(0)
    await expectExactlyOnce('sigterm', accepted)
    expect(
      readdirSync(stateDir, { recursive: true })
        .map(String)
        .filter((f) => f.endsWith('.seg')),
    ).toEqual([])
  }, 60_000)

  test('ClickHouse down at engine start: the sink creates its tables when the server comes, and delivers', async () => {
    await ch.stop()
    const stateDir = join(scratch.path, 'state-cold')
    const engine = await startEngineProcess(config('coldstart', stateDir), scratch.path)
    // serve's start-up migration could not run.
    expect(engine.log()).toContain('A sink could not migrate its storage')
    const accepted = await burst(engine, 0, 300)
    expect(accepted.size).toBe(300)
    await ch.start()
    // The database did not exist: the log line below is the sink creating it (checking its absence
    // here would race the sink's next retry).
    const text = await drained(engine, 'coldstart', accepted.size)
    expect(engine.log()).toContain('the sink migrated and retries')
    expect(metric(text, 'analytics_sink_retries_total', SINK)).toBeGreaterThan(0)
    expect((await engine.health()).body.sinks[SINK]?.state).toBe('ok')
    expect(await engine.stop()).toBe(0)
    await expectExactlyOnce('coldstart', accepted)
  }, 60_000)

  test(
    `ClickHouse stopped for ${OUTAGE_S} s under ${RATE} requests/s: 202s go on, the spool drains, every event stored once`,
    async () => {
      const stateDir = join(scratch.path, 'state-midstream')
      // The default batching (a batch a second): the outage's backlog replays in few inserts.
      const engine = await startEngineProcess(
        config('midstream', stateDir, { flushIntervalMs: 1000, batchRows: 10_000 }),
        scratch.path,
      )
      const load = pacedLoad(engine.url, { rate: RATE, max: RATE * (OUTAGE_S + 90) })
      const spool = async () => metric(await engine.metrics(), 'analytics_sink_spool_bytes', SINK)
      const written = async () => metric(await engine.metrics(), 'analytics_sink_rows_written_total', SINK)
      // Conditions, not fixed sleeps: a loaded machine may serve fewer requests in a given time.
      const deadline = Date.now() + 20_000
      while (!((await written()) > 0 && load.accepted.size > 4 * RATE) && Date.now() < deadline) await Bun.sleep(50)
      expect(await written()).toBeGreaterThan(0)
      await ch.stop()
      const stoppedAt = Date.now()
      const atStop = load.accepted.size
      let mostSpooled = 0
      while (Date.now() < stoppedAt + OUTAGE_S * 1000) {
        mostSpooled = Math.max(mostSpooled, await spool())
        await Bun.sleep(250)
      }
      expect((await engine.health()).body.sinks[SINK]?.state).toBe('degraded')
      await ch.start()
      const startedAt = Date.now()
      const outage = latencyOf(load.timings, stoppedAt, startedAt)
      const before = latencyOf(load.timings, stoppedAt - 3000, stoppedAt)
      // The load goes on while the backlog replays: new batches queue behind it, in order.
      while ((await spool()) > 0 && Date.now() < startedAt + 120_000) await Bun.sleep(100)
      const drainMs = Date.now() - startedAt
      const after = latencyOf(load.timings, startedAt, Date.now())
      await load.stop()
      console.info(
        `ClickHouse stopped ${OUTAGE_S} s: ${outage.requests} requests answered 202 meanwhile (${outage.perSecond}/s, offered ${RATE}/s), p50 ${outage.p50.toFixed(1)} ms, p99 ${outage.p99.toFixed(1)} ms, max ${outage.max.toFixed(1)} ms (healthy before: p99 ${before.p99.toFixed(1)} ms); ` +
          `spool peaked at ${mostSpooled} bytes and was empty ${drainMs} ms after the restart (p99 ${after.p99.toFixed(1)} ms meanwhile); ${load.accepted.size} events, ${load.resent()} resent after a reset`,
      )
      // Requests kept coming, and kept being accepted, while the server was down.
      expect(load.accepted.size).toBeGreaterThan(atStop + RATE)
      expect(Object.fromEntries(load.failures)).toEqual({})
      expect(mostSpooled).toBeGreaterThan(0)
      expect(outage.p99).toBeLessThan(p99Bound(before.p99))
      expect(drainMs).toBeLessThan(120_000)
      const text = await drained(engine, 'midstream', load.accepted.size)
      expect(metric(text, 'analytics_sink_retries_total', SINK)).toBeGreaterThan(0)
      expect(metric(text, 'analytics_sink_rows_failed_total', SINK)).toBe(0)
      expect(await engine.stop()).toBe(0)
      await expectExactlyOnce('midstream', load.accepted)
      expect(
        readdirSync(stateDir, { recursive: true })
          .map(String)
          .filter((f) => f.endsWith('.seg')),
      ).toEqual([])
    },
    150_000 + OUTAGE_S * 1000,
  )

  test('a lost insert answer (one in five) on plain MergeTree: nothing lost, at most one extra copy per lost answer (at-least-once)', async () => {
    const proxy = await dropProxy(ch.httpPort, { every: 5 })
    try {
      const engine = await startEngineProcess(
        config('lost', join(scratch.path, 'state-lost'), { url: `http://127.0.0.1:${proxy.port}` }),
        scratch.path,
      )
      const load = steadyStream(engine.url)
      const eventDrops = () => proxy.drops.filter((d) => d.table === 'lost.events_v2').length
      const deadline = Date.now() + 30_000
      while (eventDrops() < 3 && Date.now() < deadline) await Bun.sleep(50)
      await load.stop()
      expect(eventDrops()).toBeGreaterThanOrEqual(3)
      expect(load.refused()).toBe(0)
      const text = await drained(engine, 'lost', load.accepted.size)
      expect(metric(text, 'analytics_sink_rows_failed_total', SINK)).toBe(0)
      expect(await engine.stop()).toBe(0)
      const stored = await ch.rows<{ seq: string; n: string }>(
        "SELECT meta.value[indexOf(meta.key, 'seq')] AS seq, toString(count()) AS n FROM lost.events_v2 GROUP BY seq",
      )
      const copies = new Map(stored.map((r) => [Number(r.seq), Number(r.n)]))
      // How many lost answers each event's batch had: a retry's answer may be lost too.
      const lostAnswers = new Map<number, number>()
      for (const drop of proxy.drops) {
        if (drop.table !== 'lost.events_v2') continue
        for (const seq of seqsOf(drop.body)) lostAnswers.set(seq, (lostAnswers.get(seq) ?? 0) + 1)
      }
      const extra = [...copies].filter(([, n]) => n > 1)
      const lostRows = [...lostAnswers.values()].reduce((a, b) => a + b, 0)
      console.info(
        `lost answers, plain MergeTree: ${proxy.inserts()} inserts, ${proxy.drops.length} answers lost (${eventDrops()} of events, ${lostRows} event rows); ${extra.length} events stored more than once, ${extra.reduce((n, [, c]) => n + c - 1, 0)} extra copies; ${load.accepted.size} events`,
      )
      // Nothing lost, nothing foreign.
      expect([...load.accepted].filter((seq) => !copies.has(seq))).toEqual([])
      expect([...copies.keys()].filter((seq) => !load.accepted.has(seq))).toEqual([])
      // At-least-once: an event has at most one extra copy per lost answer of its batch.
      expect(extra.filter(([seq, n]) => n - 1 > (lostAnswers.get(seq) ?? 0))).toEqual([])
    } finally {
      await proxy.close()
    }
  }, 60_000)
})
