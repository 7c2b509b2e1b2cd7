// ClickHouse-side faults of issue #11 ("Proof", Faults; research/scale-out.md §4 items 5-9, §5) against
// a real cluster: ZooKeeper and two ClickHouse 18.16 replicas of one shard (cluster-harness.ts), a real
// engine process fed over HTTP with requests that each carry a unique `seq` prop, and the verdict
// read from both replicas' own `_local` tables after replication caught up (cluster-checks.ts):
//
//   - one replica killed under load: the sink moves to the other within 5 s; the dead one catches up;
//   - ZooKeeper killed under load: inserts fail at once with Code 242, 202s go on (p99 measured), the
//     rows spool, inserts resume about 8 s after ZooKeeper returns, counts exact;
//   - every ClickHouse server killed under a paced load (500 requests/s by default, FAULT_RATE): 202s
//     go on (p99 < 50 ms on a quiet machine, see traffic.ts p99Bound), the spool grows, then drains
//     to 0, counts exact;
//   - a proxy loses the answer of one insert in five: the sink resends the identical batch and the
//     replicas drop it as a duplicate, counts exact;
//   - the deduplication window: the same lost answers with 4 concurrent shippers double batches on
//     tables with replicated_deduplication_window = 3, and double none with the engine's window.
//
// Outages last 20 s by default; the durations on request: FAULT_ZK_OUTAGE_S=120,
// FAULT_CH_OUTAGE_S=300 (or FAULT_OUTAGE_S for both). FAULT_RATE sets the paced load (requests/s).
// Every load is bounded in count and time and goes to loopback only.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import type { AnalyticsEvent } from '../../core/event.ts'
import { eventLine, sessionLine } from '../../sinks/clickhouse/encode.ts'
import clickhouse from '../../sinks/clickhouse/index.ts'
import { capsFor, createTableSQL, DEDUP_WINDOW, type TableTarget } from '../../sinks/clickhouse/schema.ts'
import { drained, duplicatedBlocks, expectExactlyOnce, replicated, SEQ, SINK } from './cluster-checks.ts'
import { type Cluster, clusterAvailable, startCluster, waitForZooKeeper, warnIfNoCluster } from './cluster-harness.ts'
import { type DroppedInsert, dropProxy, rowsOf } from './drop-proxy.ts'
import {
  finalSessions,
  realisticEvents,
  removeScratch,
  scratchServices,
  setupSink,
  sinkOptions,
  until,
} from './fixtures.ts'
import type { ClickHouseServer } from './harness.ts'
import {
  type EngineProcess,
  envSeconds,
  killEngines,
  latencyOf,
  metric,
  p99Bound,
  pacedLoad,
  root,
  scratchDir,
  standardPlugins,
  startEngineProcess,
  steadyStream,
} from './traffic.ts'

warnIfNoCluster()

const ZK_OUTAGE_S = envSeconds('FAULT_ZK_OUTAGE_S', envSeconds('FAULT_OUTAGE_S', 20))
const CH_OUTAGE_S = envSeconds('FAULT_CH_OUTAGE_S', envSeconds('FAULT_OUTAGE_S', 20))
/**
 * Requests per second of the paced loads (one event each). The 2,000 with FAULT_RATE=2000:
 * on the shared 2-core test machine (load average 10-17 from other work) the p99 at 2,000/s was
 * 84-92 ms with no server at all and 384 ms with a healthy one, so the default is 500.
 */
const RATE = envSeconds('FAULT_RATE', 500)

describe.skipIf(!clusterAvailable)('ClickHouse cluster faults: ZooKeeper + two ClickHouse 18.16 replicas', () => {
  let cluster: Cluster
  let r1: ClickHouseServer
  let r2: ClickHouseServer
  const scratch = scratchDir('cluster-faults-')

  beforeAll(async () => {
    cluster = (await startCluster())!
    ;[r1, r2] = cluster.replicas
  }, 60_000)
  afterAll(async () => {
    killEngines()
    // Removing the servers' folders took 4 s, 20 s and once more than 60 s here when other work
    // saturated the disk.
    await cluster?.destroy()
    scratch.remove()
    removeScratch()
  }, 120_000)

  function sinkConfig(database: string, urls: string[], extra: Record<string, unknown> = {}) {
    return {
      url: urls[0],
      urls: urls.slice(1),
      database,
      cluster: cluster.name,
      batchRows: 1000,
      // 18.16 takes 0.1-0.3 s per insert into a replicated 34-column table here, whatever its size.
      flushIntervalMs: 500,
      retryMaxMs: 250,
      requestTimeoutMs: 5000,
      compression: 'none',
      ...extra,
    }
  }

  function engineConfig(database: string, urls: string[], extra: Record<string, unknown> = {}) {
    return {
      server: { host: '127.0.0.1', shutdownTimeoutMs: 5000 },
      sites: [{ id: 1, domain: 'example.com' }],
      stateDir: join(scratch.path, `state-${database}`),
      log: { level: 'info' },
      plugins: standardPlugins(),
      sinks: [{ clickhouse: sinkConfig(database, urls, extra) }],
    }
  }

  /**
   * The paced load's sink settings: the defaults (a batch a second, up to 10,000 rows), so that an
   * outage's backlog replays in few inserts, each of up to a second of traffic.
   */
  const PACED = { flushIntervalMs: 1000, batchRows: 10_000 }

  const written = async (engine: EngineProcess) =>
    metric(await engine.metrics(), 'analytics_sink_rows_written_total', SINK)

  /** `bun core/cli.ts migrate` with this config: its exit code and what it printed. */
  async function migrateProcess(
    config: Record<string, unknown>,
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const file = join(mkdtempSync(join(scratch.path, 'migrate-')), 'analytics.yaml')
    writeFileSync(file, stringify(config))
    const proc = Bun.spawn([process.execPath, join(root, 'core/cli.ts'), 'migrate', '--config', file], {
      cwd: root,
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()])
    return { code: await proc.exited, stdout, stderr }
  }

  /** Every member running and in session with ZooKeeper: a failed test must not fail the next ones. */
  async function everyMemberUp(): Promise<void> {
    await cluster.zookeeper.start()
    await Promise.all([r1.start(), r2.start()])
    await Promise.all([r1, r2].map((r) => waitForZooKeeper(r)))
  }

  /** A server's URL as the engine logs it. */
  const logged = (ch: ClickHouseServer) => new URL(ch.url).toString()

  /** The engine's log lines with this message: when (epoch ms), and their `error` and `to` fields. */
  function logLines(engine: EngineProcess, msg: string): { at: number; error: string; to: string }[] {
    return engine
      .log()
      .split('\n')
      .filter((l) => l.includes(`"msg":"${msg}"`))
      .map((l) => {
        const line = JSON.parse(l) as { time: string; error?: string; to?: string }
        return { at: Date.parse(line.time), error: line.error ?? '', to: line.to ?? '' }
      })
  }

  /** The spool gauge, sampled every 250 ms while `ms` pass; returns its largest value. */
  async function watchSpool(engine: EngineProcess, ms: number): Promise<number> {
    let most = 0
    const end = Date.now() + ms
    while (Date.now() < end) {
      most = Math.max(most, metric(await engine.metrics(), 'analytics_sink_spool_bytes', SINK))
      await Bun.sleep(250)
    }
    return most
  }

  /** Waits for the spool gauge to reach 0 (load still running); returns the time it took. */
  async function spoolEmpty(engine: EngineProcess, ms: number): Promise<number> {
    const started = Date.now()
    await until(
      async () => metric(await engine.metrics(), 'analytics_sink_spool_bytes', SINK) === 0,
      ms,
      'the spool to drain',
    )
    return Date.now() - started
  }

  test('one replica killed under load: the sink moves to the other within 5 s; every 202 stored once', async () => {
    await everyMemberUp()
    const engine = await startEngineProcess(engineConfig('failover', [r1.url, r2.url]), scratch.path)
    const load = steadyStream(engine.url)
    await until(async () => (await written(engine)) > 0 && load.accepted.size > 100, 20_000, 'first inserts')
    // Kill the replica the sink writes to: its `url`, unless it moved already (the server closing a
    // kept-alive connection the client reused is a failure that moves it too).
    const moves = () => logLines(engine, 'ClickHouse endpoint failed; moved to the next one.')
    const movedBefore = moves()
    const writing = movedBefore.at(-1)?.to === logged(r2) ? r2 : r1
    const other = writing === r1 ? r2 : r1
    await writing.kill()
    const killedAt = Date.now()
    const firstAfterKill = load.next()
    // Fail-over: rows sent after the kill are stored on the other replica, which only the sink can
    // have put there.
    await until(
      async () => {
        const text = await other.query(`SELECT max(${SEQ}) FROM failover.events_v2_local`).catch(() => '0')
        return Number(text) >= firstAfterKill
      },
      20_000,
      'rows sent after the kill on the other replica',
    )
    const failoverMs = Date.now() - killedAt
    // The engine logs the move once the insert there has succeeded: the rows can be seen before
    // this process has read that line from the engine's stderr (seen with the machine loaded).
    await until(() => moves().length > movedBefore.length, 5000, 'the move to be logged')
    const moved = moves()[movedBefore.length]
    console.info(
      `replica killed: the sink moved to the other ${moved ? moved.at - killedAt : '?'} ms after the kill; rows sent after it were stored there ${failoverMs} ms after it`,
    )
    expect(moved?.to).toBe(logged(other))
    expect(failoverMs).toBeLessThan(5000)
    const atFailover = load.accepted.size
    // A migration (serve runs one at start) with a replica down neither hangs for the server's
    // 180 s DDL timeout nor fails: it waits 5 s, then leaves the statements queued for the dead replica.
    // A separate process: the in-process client once raised an unhandled ECONNREFUSED from the dead
    // replica's socket here, which failed the test although the migration handled it.
    const migrateStarted = Date.now()
    // Once one run in three here failed with the dead replica's ECONNREFUSED: the live one had closed
    // its connection after the statement answered with the timeout, the next statement reused that
    // connection and got no answer, and moved on to the dead one. The migration no longer keeps
    // connections, and a failure of every endpoint names what each one answered.
    const migration = await migrateProcess(engineConfig('late', [r1.url, r2.url]))
    const migrateMs = Date.now() - migrateStarted
    expect(migration.code, `${migration.stdout}\n${migration.stderr}`).toBe(0)
    expect(migration.stdout).toContain(
      `cluster ${cluster.name}: some hosts did not answer within 5 s; the statements are queued and they run them when they return`,
    )
    expect(migrateMs).toBeLessThan(25_000)
    await until(() => load.accepted.size > atFailover + 100, 20_000, 'more requests')
    await writing.start()
    const restartedAt = Date.now()
    const atRestart = load.accepted.size
    await until(() => load.accepted.size > atRestart + 100, 20_000, 'more requests')
    await load.stop()
    expect(load.refused()).toBe(0)
    const text = await drained(engine)
    expect(metric(text, 'analytics_sink_rows_failed_total', SINK)).toBe(0)
    expect(await engine.stop()).toBe(0)
    // The dead replica catches up on its own, and both hold every accepted event once.
    await replicated([r2, r1], 'failover', load.accepted.size)
    for (const ch of [r2, r1]) await expectExactlyOnce(ch, 'failover', load.accepted)
    await until(
      async () =>
        (await writing.query("SELECT max(absolute_delay) FROM system.replicas WHERE database = 'failover'")) === '0\n',
      20_000,
      'the restarted replica to catch up',
    )
    console.info(
      `replica killed: ${load.accepted.size} events, the restarted replica caught up (absolute_delay 0, same counts) ${Date.now() - restartedAt} ms after its restart`,
    )
  }, 90_000)

  test(
    `ZooKeeper killed for ${ZK_OUTAGE_S} s under a paced load: Code 242 at once, 202s go on, rows arrive once`,
    async () => {
      await everyMemberUp()
      const engine = await startEngineProcess(engineConfig('zk', [r1.url, r2.url], PACED), scratch.path)
      const load = pacedLoad(engine.url, { rate: RATE, max: RATE * (ZK_OUTAGE_S + 90) })
      await until(
        async () => (await written(engine)) > 0 && load.accepted.size > 4 * RATE,
        30_000,
        'four seconds of load',
      )
      await cluster.zookeeper.kill()
      const killedAt = Date.now()
      const atKill = load.accepted.size
      const mostSpooled = await watchSpool(engine, ZK_OUTAGE_S * 1000)
      const health = await engine.health()
      expect(health.status).toBe(200)
      expect(health.body.sinks[SINK]?.detail).toContain('242')
      // Replicated tables turn read-only at once: the first insert after the kill fails with 242.
      const first242 = logLines(engine, 'Sink insert failed; retrying with backoff and spooling meanwhile.').find(
        (l) => l.at >= killedAt && l.error.includes('242'),
      )
      expect(first242).toBeDefined()
      const writtenBefore = await written(engine)
      await cluster.zookeeper.start()
      const backAt = Date.now()
      const outage = latencyOf(load.timings, killedAt, backAt)
      const before = latencyOf(load.timings, killedAt - 3000, killedAt)
      await until(async () => (await written(engine)) > writtenBefore, 60_000, 'inserts to resume')
      const resumedMs = Date.now() - backAt
      const drainMs = await spoolEmpty(engine, 120_000)
      await load.stop()
      const text = await drained(engine)
      console.info(
        `ZooKeeper killed ${ZK_OUTAGE_S} s: first Code 242 logged ${first242!.at - killedAt} ms after the kill; ` +
          `${outage.requests} requests answered 202 meanwhile (${outage.perSecond}/s offered ${RATE}/s), p50 ${outage.p50.toFixed(1)} ms, p99 ${outage.p99.toFixed(1)} ms, max ${outage.max.toFixed(1)} ms (healthy before: p99 ${before.p99.toFixed(1)} ms); ` +
          `spool peaked at ${mostSpooled} bytes; inserts resumed ${resumedMs} ms after ZooKeeper returned, the spool was empty ${resumedMs + drainMs} ms after; ${load.accepted.size} events, ${load.resent()} resent after a reset`,
      )
      expect(load.accepted.size).toBeGreaterThan(atKill + RATE)
      expect(Object.fromEntries(load.failures)).toEqual({})
      expect(mostSpooled).toBeGreaterThan(0)
      expect(outage.p99).toBeLessThan(p99Bound(before.p99))
      expect(resumedMs).toBeLessThan(30_000)
      expect(metric(text, 'analytics_sink_rows_failed_total', SINK)).toBe(0)
      expect(metric(text, 'analytics_sink_retries_total', SINK)).toBeGreaterThan(0)
      expect(await engine.stop()).toBe(0)
      await replicated([r1, r2], 'zk', load.accepted.size)
      for (const ch of [r1, r2]) await expectExactlyOnce(ch, 'zk', load.accepted)
    },
    120_000 + ZK_OUTAGE_S * 1000,
  )

  test(
    `every ClickHouse server killed for ${CH_OUTAGE_S} s under ${RATE} requests/s: 202s go on, the spool drains, rows arrive once`,
    async () => {
      await everyMemberUp()
      const engine = await startEngineProcess(engineConfig('down', [r1.url, r2.url], PACED), scratch.path)
      const load = pacedLoad(engine.url, { rate: RATE, max: RATE * (CH_OUTAGE_S + 90) })
      await until(
        async () => (await written(engine)) > 0 && load.accepted.size > 4 * RATE,
        30_000,
        'four seconds of load',
      )
      // kill -9 both: an insert in flight may be committed without its answer; the retry is deduplicated.
      await Promise.all([r1.kill(), r2.kill()])
      const killedAt = Date.now()
      const atKill = load.accepted.size
      const mostSpooled = await watchSpool(engine, CH_OUTAGE_S * 1000)
      expect((await engine.health()).body.sinks[SINK]?.state).toBe('degraded')
      await Promise.all([r1.start(), r2.start()])
      const backAt = Date.now()
      const outage = latencyOf(load.timings, killedAt, backAt)
      const before = latencyOf(load.timings, killedAt - 3000, killedAt)
      await Promise.all([r1, r2].map((r) => waitForZooKeeper(r)))
      const drainMs = await spoolEmpty(engine, 120_000)
      const after = latencyOf(load.timings, backAt, Date.now())
      await load.stop()
      const text = await drained(engine)
      console.info(
        `ClickHouse killed ${CH_OUTAGE_S} s: ${outage.requests} requests answered 202 meanwhile (${outage.perSecond}/s, offered ${RATE}/s), p50 ${outage.p50.toFixed(1)} ms, p99 ${outage.p99.toFixed(1)} ms, max ${outage.max.toFixed(1)} ms (healthy before: p99 ${before.p99.toFixed(1)} ms); ` +
          `spool peaked at ${mostSpooled} bytes and was empty ${drainMs} ms after the restart (p99 ${after.p99.toFixed(1)} ms meanwhile); ${load.accepted.size} events, ${load.resent()} resent after a reset`,
      )
      expect(load.accepted.size).toBeGreaterThan(atKill + RATE)
      expect(Object.fromEntries(load.failures)).toEqual({})
      expect(mostSpooled).toBeGreaterThan(0)
      expect(outage.p99).toBeLessThan(p99Bound(before.p99))
      expect(drainMs).toBeLessThan(120_000)
      expect(metric(text, 'analytics_sink_rows_failed_total', SINK)).toBe(0)
      expect(await engine.stop()).toBe(0)
      await replicated([r1, r2], 'down', load.accepted.size)
      for (const ch of [r1, r2]) await expectExactlyOnce(ch, 'down', load.accepted)
    },
    150_000 + CH_OUTAGE_S * 1000,
  )

  test('a lost insert answer (one in five) is retried as the identical batch and stored once', async () => {
    await everyMemberUp()
    const counter = { n: 0 }
    const p1 = await dropProxy(r1.httpPort, { every: 5, counter })
    const p2 = await dropProxy(r2.httpPort, { every: 5, counter })
    const before = (await duplicatedBlocks(r1)) + (await duplicatedBlocks(r2))
    try {
      const engine = await startEngineProcess(
        engineConfig('lost', [`http://127.0.0.1:${p1.port}`, `http://127.0.0.1:${p2.port}`]),
        scratch.path,
      )
      const load = steadyStream(engine.url)
      const drops = () => p1.drops.length + p2.drops.length
      await until(() => drops() >= 6, 30_000, 'six dropped answers').catch((error: Error) => {
        throw new Error(`${error.message}: ${counter.n} inserts, ${drops()} dropped\n${engine.log().slice(-3000)}`)
      })
      await load.stop()
      expect(load.refused()).toBe(0)
      const text = await drained(engine)
      expect(metric(text, 'analytics_sink_rows_failed_total', SINK)).toBe(0)
      expect(await engine.stop()).toBe(0)
      const duplicates = (await duplicatedBlocks(r1)) + (await duplicatedBlocks(r2)) - before
      const lost = [...p1.drops, ...p2.drops]
      console.info(
        `lost answers, replicated: ${counter.n} inserts, ${lost.length} answers dropped (${lost.filter((d) => d.table.endsWith('.events_v2')).length} of events, ${lost.reduce((n, d) => n + rowsOf(d.body), 0)} rows), ${duplicates} duplicate blocks dropped by the servers, ${load.accepted.size} events`,
      )
      // Each dropped answer was for a committed batch; its retry reached a server, which dropped it.
      expect(duplicates).toBeGreaterThanOrEqual(lost.length)
      await replicated([r1, r2], 'lost', load.accepted.size)
      for (const ch of [r1, r2]) await expectExactlyOnce(ch, 'lost', load.accepted)
    } finally {
      await p1.close()
      await p2.close()
    }
  }, 60_000)

  /** The block ids in the deduplication log (ZooKeeper's `blocks` node) of `table`'s `_local` table. */
  const zookeeperPaths = new Map<string, string>()
  async function blockIds(table: string): Promise<string[]> {
    let path = zookeeperPaths.get(table)
    if (path === undefined) {
      const [db, name] = table.split('.')
      const [replica] = await r1.rows<{ zookeeper_path: string }>(
        `SELECT zookeeper_path FROM system.replicas WHERE database = '${db}' AND table = '${name}_local'`,
      )
      if (!replica) throw new Error(`${table}_local is not a replicated table`)
      path = replica.zookeeper_path
      zookeeperPaths.set(table, path)
    }
    const blocks = await r1.rows<{ name: string }>(`SELECT name FROM system.zookeeper WHERE path = '${path}/blocks'`)
    return blocks.map((b) => b.name)
  }

  /**
   * 4 sinks (shippers) write their own sessions through proxies that lose one insert answer in five
   * and keep that connection silent (an answer lost in a hung network) until `hold` is done; only
   * then is it cut and the sink resends the batch. The hold waits for what decides whether the
   * resent batch is a duplicate, not for a time in which that may or may not happen: with a window
   * of 3, until the cleanup (every second here; 30-40 s by default) has removed from ZooKeeper every
   * block id the log held when the answer was lost; with the engine's window, until `FILLS` newer
   * blocks went in and `CLEANUP_MS` passed, every id still there. The newer blocks come from the
   * other shippers and, so that they come even while every shipper waits, from a fifth writer
   * without a proxy that inserts `FILLS` batches into the lost insert's table at each loss. Tables
   * made by the engine's DDL with the given window. Returns the stored counts next to the expected
   * ones, the fifth writer's rows included.
   */
  async function shippersThroughLostAnswers(db: string, window: number) {
    // Longer than a period of the cleanup (cleanup_delay_period = 1 s plus its own run).
    const CLEANUP_MS = 1500
    // Blocks inserted after a lost one in its table: a window of 3 then keeps none older.
    const FILLS = 3
    const SHIPPERS = 4
    const CHUNKS = 8
    const CHUNK = 30
    const target: TableTarget = {
      database: db,
      eventsTable: 'events_v2',
      sessionsTable: 'sessions_v2',
      countersTable: '',
      cluster: cluster.name,
    }
    const caps = capsFor('18.16.1')
    // Idempotent, so tried again: in 2 of about 15 runs the replica reset the connection of this, the
    // test's first ON CLUSTER query, ~10 s in (ECONNRESET), before anything under test had run.
    for (let attempt = 1; ; attempt++) {
      try {
        await r1.query(`CREATE DATABASE IF NOT EXISTS ${db} ON CLUSTER ${cluster.name}`)
        break
      } catch (error) {
        const reset = (error as { code?: string }).code === 'ECONNRESET'
        if (!reset || attempt === 3) throw error
        console.warn(`CREATE DATABASE ${db} ON CLUSTER: connection reset, trying again (attempt ${attempt})`)
      }
    }
    for (const kind of ['events', 'sessions'] as const) {
      const sql = createTableSQL(target, kind, caps)
      expect(sql).toContain(`replicated_deduplication_window = ${DEDUP_WINDOW}`)
      await r1.query(
        sql.replace(
          `replicated_deduplication_window = ${DEDUP_WINDOW}`,
          `replicated_deduplication_window = ${window}, cleanup_delay_period = 1, cleanup_delay_period_random_add = 0`,
        ),
      )
    }
    const config = (urls: string[]) =>
      sinkConfig(db, urls, {
        countersTable: '',
        // Batches are sealed by the shippers' flush() calls.
        flushIntervalMs: 60_000,
        // Longer than any hold: the retry starts when the proxy cuts the connection, not before.
        requestTimeoutMs: 30_000,
      })
    // Events the shippers sent; events whose event rows, and whose session rows, the fifth writer stored.
    const all: AnalyticsEvent[] = []
    const filledEvents: AnalyticsEvent[] = []
    const filledSessions: AnalyticsEvent[] = []
    // The fifth writer: one session (3 events, one partition: one block) per batch, straight to a
    // replica's _local table, one connection per insert and no retry: stored once or the hold fails.
    const fillerEvents = realisticEvents(3 * 1000, SHIPPERS + 1)
    let taken = 0
    const fill = (table: string) =>
      Promise.all(
        Array.from({ length: FILLS }, async () => {
          const events = fillerEvents.slice(taken, taken + 3)
          taken += 3
          if (events.length < 3) throw new Error('the fifth writer ran out of events')
          const sessions = table.endsWith('.sessions_v2')
          const lines = sessions ? events.flatMap((e) => e.sessionRows.map(sessionLine)) : events.map(eventLine)
          await r1.query(`INSERT INTO ${table}_local FORMAT JSONEachRow\n${lines.join('\n')}`)
          ;(sessions ? filledSessions : filledEvents).push(...events)
        }),
      )
    const holdErrors: string[] = []
    const holdsMs: number[] = []
    // The fifth writer's inserts, still running when a hold ends early (awaited before counting).
    const fills: Promise<unknown>[] = []
    const hold = async (drop: DroppedInsert) => {
      const started = performance.now()
      try {
        const before = await blockIds(drop.table)
        // The shippers may insert the newer blocks first; the fifth writer makes sure they come.
        fills.push(fill(drop.table).catch((error: Error) => holdErrors.push(`${drop.table}: ${error.message}`)))
        const deadline = Date.now() + 10_000
        for (;;) {
          const now = new Set(await blockIds(drop.table))
          // With a window of 3: released once the cleanup removed every id the log held at the loss.
          if (window <= FILLS && before.every((id) => !now.has(id))) break
          // With the engine's: once FILLS newer blocks went in, and a cleanup period after that.
          if (window > FILLS && now.size - before.length >= FILLS) {
            await Bun.sleep(CLEANUP_MS)
            const after = new Set(await blockIds(drop.table))
            const gone = before.filter((id) => !after.has(id))
            if (gone.length > 0) throw new Error(`${gone.length} block ids left the deduplication log`)
            break
          }
          if (Date.now() > deadline) throw new Error('the deduplication log did not change as expected within 10 s')
          await Bun.sleep(100)
        }
      } catch (error) {
        holdErrors.push(`${drop.table}: ${(error as Error).message}`)
      } finally {
        holdsMs.push(performance.now() - started)
      }
    }
    const counter = { n: 0 }
    const p1 = await dropProxy(r1.httpPort, { every: 5, hold, counter })
    const p2 = await dropProxy(r2.httpPort, { every: 5, hold, counter })
    const urls = [`http://127.0.0.1:${p1.port}`, `http://127.0.0.1:${p2.port}`]
    // The migration adds the Distributed tables and reports the small window it cannot change.
    const lines = await clickhouse.migrate!(
      sinkOptions(clickhouse, { ...config(urls), url: r1.url, urls: [r2.url] }),
      scratchServices(),
    )
    if (window < DEDUP_WINDOW) {
      expect(lines).toContain(
        `${db}.events_v2_local has replicated_deduplication_window = ${window}, below ${DEDUP_WINDOW}; ClickHouse 18.16.1 cannot change it: recreate the table to make retries safe under load`,
      )
    }
    try {
      await Promise.all(
        Array.from({ length: SHIPPERS }, async (_, i) => {
          const { sink, stats } = await setupSink(clickhouse, config(urls))
          const events = realisticEvents(CHUNKS * CHUNK, i + 1)
          all.push(...events)
          for (let c = 0; c < CHUNKS; c++) {
            for (const event of events.slice(c * CHUNK, (c + 1) * CHUNK)) sink.write(event)
            await sink.flush()
          }
          // flush() also returns once a batch is spooled (both answers of an attempt lost): wait until
          // the spool has replayed too, or close() would leave those rows on disk for a next start.
          await until(
            () => {
              const health = sink.health()
              return health.spoolBytes === 0 && health.queuedRows === 0
            },
            30_000,
            'the shipper to deliver its spool',
          )
          await sink.close()
          expect(stats.rowsFailed).toBe(0)
        }),
      )
    } finally {
      await p1.close()
      await p2.close()
      await Promise.all(fills)
    }
    expect(holdErrors).toEqual([])
    const lost = [...p1.drops, ...p2.drops]
    await replicated([r1, r2], db, all.length + filledEvents.length)
    const [row] = await r1.rows<Record<string, string>>(
      `SELECT
         (SELECT count() FROM ${db}.events_v2_local) AS events,
         (SELECT uniqExact(pathname) FROM ${db}.events_v2_local) AS distinct_events,
         (SELECT sum(sign) FROM ${db}.sessions_v2_local) AS sessions,
         (SELECT sum(sign * events) FROM ${db}.sessions_v2_local) AS session_events,
         (SELECT count() FROM ${db}.sessions_v2_local FINAL) AS final_sessions`,
    )
    const last = finalSessions([...all, ...filledSessions])
    return {
      inserts: counter.n,
      filled: taken,
      longestHoldMs: Math.round(Math.max(...holdsMs)),
      lost: lost.length,
      lostEventRows: lost.filter((d) => d.table === `${db}.events_v2`).reduce((n, d) => n + rowsOf(d.body), 0),
      stored: {
        events: Number(row?.events),
        distinctEvents: Number(row?.distinct_events),
        sessions: Number(row?.sessions),
        sessionEvents: Number(row?.session_events),
        finalSessions: Number(row?.final_sessions),
      },
      expected: {
        events: all.length + filledEvents.length,
        distinctEvents: all.length + filledEvents.length,
        sessions: last.length,
        sessionEvents: last.reduce((n, s) => n + s.events, 0),
        finalSessions: last.length,
      },
    }
  }

  test('deduplication window: lost answers under 4 concurrent shippers double batches with a window of 3, none with the engine window', async () => {
    await everyMemberUp()
    expect(DEDUP_WINDOW).toBeGreaterThanOrEqual(10_000)
    const small = await shippersThroughLostAnswers('window3', 3)
    const engine = await shippersThroughLostAnswers('windowengine', DEDUP_WINDOW)
    console.info(
      `dedup window 3: ${small.inserts} inserts, ${small.filled} rows of a fifth writer, ${small.lost} answers lost (${small.lostEventRows} event rows, held up to ${small.longestHoldMs} ms), stored ${JSON.stringify(small.stored)} for ${JSON.stringify(small.expected)}; ` +
        `window ${DEDUP_WINDOW}: ${engine.inserts} inserts, ${engine.filled} rows of a fifth writer, ${engine.lost} lost (held up to ${engine.longestHoldMs} ms), stored ${JSON.stringify(engine.stored)} for ${JSON.stringify(engine.expected)}`,
    )
    // With 3: each retry came after 3 newer blocks and a cleanup that removed the lost block's id,
    // so every batch whose answer was lost was stored again: events, sessions or both, depending on
    // which answers were lost.
    expect(small.lost).toBeGreaterThan(0)
    expect(small.stored).not.toEqual(small.expected)
    expect(small.stored.events + small.stored.sessions).toBeGreaterThan(small.expected.events + small.expected.sessions)
    // With the engine's window: exact, sessions included.
    expect(engine.lost).toBeGreaterThan(0)
    expect(engine.stored).toEqual(engine.expected)
  }, 90_000)
})
