// The clickhouse sink's cluster mode against a real cluster (issue #11, scale-out): ZooKeeper and two
// ClickHouse 18.16 servers as one shard of two replicas (cluster-harness.ts), a real engine process,
// real HTTP requests each carrying a unique `seq` prop, and the exactly-once verdict read from the
// replicated tables of *both* replicas:
//   - migrate twice is idempotent and creates Replicated + Distributed tables on both replicas;
//   - one replica killed under load: the sink moves to the other within 5 s, nothing lost or doubled;
//   - ZooKeeper killed under load (20 s here, 2 min in the issue: the behaviour is the same once the
//     replicas turned read-only, which takes milliseconds): 202s go on, rows spool, then arrive once;
//   - a proxy drops the answer of one insert in five: the sink resends the identical batch (to the
//     other replica) and the servers deduplicate it.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'
import { join } from 'node:path'
import clickhouse from '../../sinks/clickhouse/index.ts'
import { type Cluster, clusterAvailable, startCluster, warnIfNoCluster } from './cluster-harness.ts'
import { scratchServices, setupSink, sinkOptions, until } from './fixtures.ts'
import type { ClickHouseServer } from './harness.ts'
import {
  type EngineProcess,
  killEngines,
  metric,
  scratchDir,
  sendStream,
  standardPlugins,
  startEngineProcess,
} from './traffic.ts'

warnIfNoCluster()

const SINK = 'clickhouse'
const SEQ = "toUInt64OrZero(meta.value[indexOf(meta.key, 'seq')])"

/**
 * A TCP proxy in front of a ClickHouse HTTP port that forwards every request, and for one INSERT in
 * `every` lets the server answer but closes the client's connection instead of passing the answer on:
 * the insert is committed, the client only sees a cut connection (research/scale-out.md §4.6).
 */
function droppingProxy(
  targetPort: number,
  every: number,
): Promise<{
  port: number
  inserts: () => number
  dropped: () => number
  close(): Promise<void>
}> {
  let inserts = 0
  let dropped = 0
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(targetPort, '127.0.0.1')
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
    }
    let doomed = false
    client.on('data', (chunk: Buffer) => {
      // A request line starts a request (a kept-alive connection may carry several, one at a time).
      if (/(^|\r\n)POST [^\r\n]*INSERT/i.test(chunk.toString('latin1'))) {
        inserts++
        doomed = inserts % every === 0
      }
    })
    client.pipe(upstream)
    upstream.on('data', (chunk: Buffer) => {
      if (doomed) {
        // The server has committed and begun to answer; the client gets a reset instead.
        dropped++
        doomed = false
        client.destroy()
        upstream.destroy()
        return
      }
      client.write(chunk)
    })
    upstream.on('end', () => client.end())
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
    client.on('close', () => upstream.destroy())
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      resolve({
        port: typeof address === 'object' && address ? address.port : 0,
        inserts: () => inserts,
        dropped: () => dropped,
        // close() alone would wait for the connections a still running engine keeps open.
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r())
            for (const socket of sockets) socket.destroy()
          }),
      })
    })
  })
}

describe.skipIf(!clusterAvailable)('clickhouse sink, cluster mode: ZooKeeper + two ClickHouse 18.16 replicas', () => {
  let cluster: Cluster
  let r1: ClickHouseServer
  let r2: ClickHouseServer
  const scratch = scratchDir('cluster-test-')

  beforeAll(async () => {
    cluster = (await startCluster())!
    ;[r1, r2] = cluster.replicas
  }, 60_000)
  afterAll(async () => {
    killEngines()
    await cluster?.destroy()
    scratch.remove()
  }, 30_000)

  function sinkConfig(database: string, urls: string[], flushIntervalMs = 500) {
    return {
      url: urls[0],
      urls: urls.slice(1),
      database,
      cluster: cluster.name,
      batchRows: 1000,
      // 18.16 takes 0.1-0.3 s per insert into a replicated 34-column table here, whatever its size;
      // fewer, larger batches also shorten the replay of the spool after an outage.
      flushIntervalMs,
      retryMaxMs: 250,
      requestTimeoutMs: 5000,
      compression: 'none',
    }
  }

  const sinkConfigOptions = (database: string, urls: string[]) => sinkOptions(clickhouse, sinkConfig(database, urls))

  function engineConfig(database: string, urls: string[], stateDir: string, flushIntervalMs?: number) {
    return {
      server: { host: '127.0.0.1', shutdownTimeoutMs: 5000 },
      sites: [{ id: 1, domain: 'example.com' }],
      stateDir,
      log: { level: 'info' },
      plugins: standardPlugins(),
      sinks: [{ clickhouse: sinkConfig(database, urls, flushIntervalMs) }],
    }
  }

  /** A steady stream from `clients` clients until stop() (at most `max` requests). */
  function stream(engine: EngineProcess, clients = 4, max = 20_000) {
    const accepted = new Set<number>()
    let refused = 0
    let next = 0
    let streaming = true
    const running = Array.from({ length: clients }, async () => {
      while (streaming && next < max) {
        const seq = next++
        if (await sendStream(engine.url, seq)) accepted.add(seq)
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

  /** Polls until the engine has nothing left in memory or on disk; returns /metrics. */
  async function drained(engine: EngineProcess, ms = 30_000): Promise<string> {
    let text = ''
    await until(
      async () => {
        text = await engine.metrics()
        return metric(text, 'analytics_sink_spool_bytes', SINK) + metric(text, 'analytics_sink_queued_rows', SINK) === 0
      },
      ms,
      'the sink to drain',
    )
    return text
  }

  /**
   * Exactly once on one replica's own tables: every accepted seq stored once and nothing else, and
   * per session one row in sessions FINAL with sign 1 and `events` = the session's stored events.
   */
  async function expectExactlyOnce(ch: ClickHouseServer, db: string, accepted: Set<number>): Promise<void> {
    const [counts] = await ch.rows<{ rows: string; seqs: string }>(
      `SELECT toString(count()) AS rows, toString(uniqExact(${SEQ})) AS seqs FROM ${db}.events_v2_local`,
    )
    expect(counts).toEqual({ rows: String(accepted.size), seqs: String(accepted.size) })
    const stored = await ch.rows<{ seq: string }>(`SELECT toString(${SEQ}) AS seq FROM ${db}.events_v2_local`)
    expect(stored.map((r) => Number(r.seq)).filter((s) => !accepted.has(s))).toEqual([])
    const [sessions] = await ch.rows<{ sessions: string; bad: string }>(
      `SELECT toString(count()) AS sessions, toString(countIf(s.sign != 1 OR s.events != e.n)) AS bad
       FROM (SELECT session_id, sign, events FROM ${db}.sessions_v2_local FINAL) AS s
       ANY LEFT JOIN (SELECT session_id, toInt32(count()) AS n FROM ${db}.events_v2_local GROUP BY session_id) AS e
       USING session_id`,
    )
    const [withEvents] = await ch.rows<{ n: string }>(
      `SELECT toString(uniqExact(session_id)) AS n FROM ${db}.events_v2_local`,
    )
    expect(sessions).toEqual({ sessions: withEvents!.n, bad: '0' })
  }

  /** Waits until replication has brought `rows` events to this replica, and its queues are empty. */
  async function replicated(ch: ClickHouseServer, db: string, rows: number, ms = 30_000): Promise<void> {
    try {
      await until(
        async () => {
          // Sessions replicate on their own: the event count alone says nothing about them.
          const text = await ch
            .query(
              `SELECT (SELECT count() FROM ${db}.events_v2_local), (SELECT sum(queue_size) FROM system.replicas WHERE database = '${db}')`,
            )
            .catch(() => '-1\t-1')
          const [events, queued] = text.trim().split('\t').map(Number)
          return events! >= rows && queued === 0
        },
        ms,
        `${rows} rows and empty replication queues on ${ch.url}`,
      )
    } catch (error) {
      const queue = await ch
        .query(
          `SELECT table, type, new_part_name, num_tries, last_exception, postpone_reason FROM system.replication_queue WHERE database = '${db}' FORMAT TSV`,
        )
        .catch((e) => String(e))
      throw new Error(`${(error as Error).message}\nreplication queue:\n${queue}`)
    }
  }

  /** Blocks a replica dropped as already present (ProfileEvents, since the server started). */
  async function duplicatedBlocks(ch: ClickHouseServer): Promise<number> {
    const text = await ch.query("SELECT sum(value) FROM system.events WHERE event = 'DuplicatedInsertedBlocks'")
    return Number(text)
  }

  test('migrate twice is idempotent, both replicas get Replicated and Distributed tables, rows reach both', async () => {
    const options = sinkConfigOptions('mig', [r1.url, r2.url])
    const first = await clickhouse.migrate!(options, scratchServices())
    expect(first).toEqual([
      `ClickHouse 18.16.1, cluster ${cluster.name}`,
      'created database mig',
      'created table mig.events_v2_local',
      'created table mig.events_v2 (Distributed)',
      'created table mig.sessions_v2_local',
      'created table mig.sessions_v2 (Distributed)',
      'created table mig.ingest_counters_local',
      'created table mig.ingest_counters (Distributed)',
    ])
    // The second run starts on the other replica: the tables exist there too.
    const second = await clickhouse.migrate!({ ...options, url: r2.url, urls: [r1.url] }, scratchServices())
    expect(second).toEqual([
      `ClickHouse 18.16.1, cluster ${cluster.name}`,
      ...[
        'events_v2_local',
        'events_v2',
        'sessions_v2_local',
        'sessions_v2',
        'ingest_counters_local',
        'ingest_counters',
      ].map((t) => `table mig.${t} is up to date`),
    ])
    for (const ch of [r1, r2]) {
      const tables = await ch.rows<{ name: string; engine_full: string }>(
        "SELECT name, engine_full FROM system.tables WHERE database = 'mig' ORDER BY name",
      )
      const engine = Object.fromEntries(tables.map((t) => [t.name, t.engine_full]))
      expect(Object.keys(engine)).toEqual([
        'events_v2',
        'events_v2_local',
        'ingest_counters',
        'ingest_counters_local',
        'sessions_v2',
        'sessions_v2_local',
      ])
      expect(engine.events_v2_local).toStartWith(
        "ReplicatedMergeTree('/clickhouse/tables/{shard}/mig/events_v2_local', '{replica}')",
      )
      expect(engine.sessions_v2_local).toStartWith(
        "ReplicatedVersionedCollapsingMergeTree('/clickhouse/tables/{shard}/mig/sessions_v2_local', '{replica}', sign, events)",
      )
      expect(engine.ingest_counters_local).toStartWith('ReplicatedSummingMergeTree(')
      // 18.16 cannot ALTER … MODIFY SETTING: the window is set by CREATE, on every replicated table.
      for (const local of ['events_v2_local', 'sessions_v2_local', 'ingest_counters_local']) {
        expect(engine[local]).toContain('replicated_deduplication_window = 10000')
      }
      expect(engine.events_v2).toBe(`Distributed(${cluster.name}, mig, events_v2_local, user_id)`)
      expect(engine.sessions_v2).toBe(`Distributed(${cluster.name}, mig, sessions_v2_local, user_id)`)
      expect(engine.ingest_counters).toBe(`Distributed(${cluster.name}, mig, ingest_counters_local, site_id)`)
    }

    const engine = await startEngineProcess(
      engineConfig('mig', [r1.url, r2.url], join(scratch.path, 'state-mig')),
      scratch.path,
    )
    const load = stream(engine, 4, 300)
    await load.done()
    expect(load.accepted.size).toBe(300)
    await drained(engine)
    expect(await engine.stop()).toBe(0)
    for (const ch of [r1, r2]) {
      await replicated(ch, 'mig', 300)
      await expectExactlyOnce(ch, 'mig', load.accepted)
    }
  }, 60_000)

  test('drop counters: identical hand-overs in one minute all count (no false deduplication)', async () => {
    const { sink } = await setupSink(clickhouse, sinkConfig('counters', [r1.url, r2.url]))
    await clickhouse.migrate!(sinkConfigOptions('counters', [r1.url, r2.url]), scratchServices())
    const minute = Math.floor(Date.now() / 60_000) * 60
    // The engine hands counters over every ten seconds: a steady trickle repeats the same rows.
    for (let i = 0; i < 3; i++) {
      sink.writeCounters!([{ minute, site_id: 7, reason: 'bot', dropped: 1, would_drop: 0 }])
      await sink.flush()
    }
    await sink.close()
    for (const ch of [r1, r2]) {
      const sum = () => ch.query('SELECT sum(dropped) FROM counters.ingest_counters_local')
      await until(async () => (await sum()) === '3\n', 10_000, `3 drops counted on ${ch.url}`).catch(() => {})
      expect(await sum()).toBe('3\n')
    }
  }, 30_000)

  test('one replica killed under load: the sink moves to the other within 5 s; every 202 stored once', async () => {
    const engine = await startEngineProcess(
      engineConfig('failover', [r1.url, r2.url], join(scratch.path, 'state-failover')),
      scratch.path,
    )
    const load = stream(engine)
    await until(
      async () =>
        metric(await engine.metrics(), 'analytics_sink_rows_written_total', SINK) > 0 && load.accepted.size > 100,
      20_000,
      'first inserts',
    )
    // The sink writes to r1 (its `url`); kill it.
    await r1.kill()
    const killedAt = Date.now()
    const firstAfterKill = load.next()
    // Fail-over: rows sent after the kill are stored on r2, which only the sink can have put there.
    await until(
      async () => {
        const text = await r2.query(`SELECT max(${SEQ}) FROM failover.events_v2_local`).catch(() => '0')
        return Number(text) >= firstAfterKill
      },
      20_000,
      'rows sent after the kill on r2',
    )
    const failoverMs = Date.now() - killedAt
    console.info(`cluster fail-over: rows sent after the kill stored on the other replica ${failoverMs} ms later`)
    expect(failoverMs).toBeLessThan(5000)
    const atFailover = load.accepted.size
    // A migration (serve runs one at start) with a replica down neither hangs for the server's
    // 180 s DDL timeout nor fails: it waits 5 s, then leaves the statements queued for r1.
    const migrateStarted = Date.now()
    const lines = await clickhouse.migrate!(sinkConfigOptions('late', [r1.url, r2.url]), scratchServices())
    const migrateMs = Date.now() - migrateStarted
    expect(lines).toContain(
      `cluster ${cluster.name}: some hosts did not answer within 5 s; the statements are queued and they run them when they return`,
    )
    expect(migrateMs).toBeLessThan(10_000)
    await until(() => load.accepted.size > atFailover + 100, 20_000, 'more requests')
    await r1.start()
    const atRestart = load.accepted.size
    await until(() => load.accepted.size > atRestart + 100, 20_000, 'more requests')
    await load.stop()
    expect(load.refused()).toBe(0)
    const text = await drained(engine)
    expect(metric(text, 'analytics_sink_rows_failed_total', SINK)).toBe(0)
    expect(engine.log()).toContain('ClickHouse endpoint failed; moved to the next one.')
    expect(await engine.stop()).toBe(0)
    // The dead replica catches up on its own, and both hold every accepted event once.
    for (const ch of [r2, r1]) {
      await replicated(ch, 'failover', load.accepted.size)
      await expectExactlyOnce(ch, 'failover', load.accepted)
    }
    await until(
      async () =>
        (await r1.query("SELECT max(absolute_delay) FROM system.replicas WHERE database = 'failover'")) === '0\n',
      20_000,
      'r1 to catch up',
    )
  }, 90_000)

  test('ZooKeeper killed under load: 202s go on, rows spool, and arrive once after it returns', async () => {
    const engine = await startEngineProcess(
      // One batch a second: the outage's backlog replays in fewer inserts.
      engineConfig('zk', [r1.url, r2.url], join(scratch.path, 'state-zk'), 1000),
      scratch.path,
    )
    const load = stream(engine)
    const written = async () => metric(await engine.metrics(), 'analytics_sink_rows_written_total', SINK)
    await until(async () => (await written()) > 0 && load.accepted.size > 100, 20_000, 'first inserts')
    await cluster.zookeeper.kill()
    const atKill = load.accepted.size
    // Replicated inserts fail at once (read-only replicas, code 242); the sink spools meanwhile.
    let sawSpool = false
    let sawReadOnly = false
    const until20s = Date.now() + 20_000
    while (Date.now() < until20s) {
      const health = await engine.health()
      if (health.body.sinks[SINK]?.detail?.includes('242')) sawReadOnly = true
      if (metric(await engine.metrics(), 'analytics_sink_spool_bytes', SINK) > 0) sawSpool = true
      await Bun.sleep(250)
    }
    expect(load.accepted.size).toBeGreaterThan(atKill + 100)
    expect(load.refused()).toBe(0)
    expect(sawSpool).toBe(true)
    expect(sawReadOnly).toBe(true)
    const writtenBefore = await written()
    await cluster.zookeeper.start()
    const backAt = Date.now()
    await until(async () => (await written()) > writtenBefore, 30_000, 'inserts to resume')
    console.info(`cluster: inserts resumed ${Date.now() - backAt} ms after ZooKeeper returned`)
    await load.stop()
    expect(load.refused()).toBe(0)
    const text = await drained(engine)
    expect(metric(text, 'analytics_sink_rows_failed_total', SINK)).toBe(0)
    expect(metric(text, 'analytics_sink_retries_total', SINK)).toBeGreaterThan(0)
    expect(await engine.stop()).toBe(0)
    for (const ch of [r1, r2]) {
      await replicated(ch, 'zk', load.accepted.size)
      await expectExactlyOnce(ch, 'zk', load.accepted)
    }
  }, 90_000)

  test('a lost insert answer (one in five) is retried as the identical batch and stored once', async () => {
    const p1 = await droppingProxy(r1.httpPort, 5)
    const p2 = await droppingProxy(r2.httpPort, 5)
    const before = (await duplicatedBlocks(r1)) + (await duplicatedBlocks(r2))
    try {
      const engine = await startEngineProcess(
        engineConfig(
          'lost',
          [`http://127.0.0.1:${p1.port}`, `http://127.0.0.1:${p2.port}`],
          join(scratch.path, 'state-lost'),
        ),
        scratch.path,
      )
      const load = stream(engine)
      await until(() => p1.dropped() + p2.dropped() >= 6, 30_000, 'six dropped answers').catch((error: Error) => {
        throw new Error(
          `${error.message}: ${p1.inserts()} + ${p2.inserts()} inserts, ${p1.dropped()} + ${p2.dropped()} dropped, ${load.accepted.size} events\n${engine.log().slice(-3000)}`,
        )
      })
      await load.stop()
      expect(load.refused()).toBe(0)
      const text = await drained(engine)
      expect(metric(text, 'analytics_sink_rows_failed_total', SINK)).toBe(0)
      expect(await engine.stop()).toBe(0)
      const dropped = p1.dropped() + p2.dropped()
      const duplicates = (await duplicatedBlocks(r1)) + (await duplicatedBlocks(r2)) - before
      console.info(
        `cluster: ${p1.inserts() + p2.inserts()} inserts, ${dropped} answers dropped, ${duplicates} duplicate blocks dropped by the servers, ${load.accepted.size} events`,
      )
      // Each dropped answer was for a committed batch; its retry reached a server, which dropped it.
      expect(duplicates).toBeGreaterThanOrEqual(dropped)
      for (const ch of [r1, r2]) {
        await replicated(ch, 'lost', load.accepted.size)
        await expectExactlyOnce(ch, 'lost', load.accepted)
      }
    } finally {
      await p1.close()
      await p2.close()
    }
  }, 60_000)
})
