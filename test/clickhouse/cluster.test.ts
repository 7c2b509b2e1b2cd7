// The clickhouse sink's cluster mode against a real cluster (issue #11, scale-out): ZooKeeper and two
// ClickHouse 18.16 servers as one shard of two replicas (cluster-harness.ts), a real engine process,
// real HTTP requests each carrying a unique `seq` prop, and the exactly-once verdict read from the
// replicated tables of *both* replicas (cluster-checks.ts):
//   - migrate twice is idempotent and creates Replicated + Distributed tables on both replicas;
//   - identical drop-counter hand-overs are not deduplicated away.
// The faults (a replica, ZooKeeper or every server killed, lost insert answers, the deduplication
// window) are in cluster-faults.test.ts.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import clickhouse from '../../sinks/clickhouse/index.ts'
import { drained, expectExactlyOnce, replicated } from './cluster-checks.ts'
import { type Cluster, clusterAvailable, startCluster, warnIfNoCluster } from './cluster-harness.ts'
import { scratchServices, setupSink, sinkOptions, until } from './fixtures.ts'
import type { ClickHouseServer } from './harness.ts'
import { killEngines, scratchDir, standardPlugins, startEngineProcess, steadyStream } from './traffic.ts'

warnIfNoCluster()

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
    const load = steadyStream(engine.url, 4, 300)
    await load.done()
    expect(load.accepted.size).toBe(300)
    await drained(engine)
    expect(await engine.stop()).toBe(0)
    await replicated([r1, r2], 'mig', 300)
    for (const ch of [r1, r2]) await expectExactlyOnce(ch, 'mig', load.accepted)
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
})
