// Issue "Scale out", proof "Durability with `ack: durable`": 100,000 events, each with a unique `seq`
// prop, sent to `serve --workers 2` writing to a ClickHouse cluster (ZooKeeper and two 18.16 replicas,
// Replicated tables), while three random workers are killed with kill -9 under the load. Every event
// answered 202 must be in ClickHouse exactly once; an event whose request was cut by a kill (the
// client saw no 202) may be stored or not, but never twice; the sessions stay consistent (one live row
// per session, whose events equal the session's stored events).
//
// DURABLE_EVENTS sets the count (100,000 by default, the figure).

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { SEQ } from '../clickhouse/cluster-checks.ts'
import { type Cluster, clusterAvailable, startCluster, warnIfNoCluster } from '../clickhouse/cluster-harness.ts'
import type { ClickHouseServer } from '../clickhouse/harness.ts'
import {
  envSeconds,
  killEngines,
  metric,
  scratchDir,
  standardPlugins,
  startEngineProcess,
  streamRequest,
} from '../clickhouse/traffic.ts'
import { series, workerPids } from './helpers.ts'

warnIfNoCluster()

const EVENTS = envSeconds('DURABLE_EVENTS', 100_000)
const KILLS = 3
const PARALLEL = 64

describe.skipIf(!clusterAvailable)('ack: durable over 2 workers on a ClickHouse cluster', () => {
  let cluster: Cluster
  let r1: ClickHouseServer
  let r2: ClickHouseServer
  const scratch = scratchDir('durable-cluster-')

  beforeAll(async () => {
    cluster = (await startCluster())!
    ;[r1, r2] = cluster.replicas
  }, 60_000)
  afterAll(async () => {
    killEngines()
    await cluster?.destroy()
    scratch.remove()
  }, 300_000)

  test(`${EVENTS} events, ${KILLS} kill -9 of random workers: every 202 stored exactly once`, async () => {
    const db = 'durable_workers'
    const engine = await startEngineProcess(
      {
        ack: 'durable',
        server: { host: '127.0.0.1', workers: 2, shutdownTimeoutMs: 10_000 },
        sites: [{ id: 1, domain: 'example.com' }],
        stateDir: join(scratch.path, 'state'),
        plugins: standardPlugins(),
        sinks: [
          {
            clickhouse: {
              url: r1.url,
              urls: [r2.url],
              database: db,
              cluster: cluster.name,
              batchRows: 2000,
              flushIntervalMs: 500,
              retryMaxMs: 250,
              requestTimeoutMs: 5000,
              compression: 'none',
            },
          },
        ],
      },
      scratch.path,
    )

    const accepted = new Set<number>()
    const cut = new Set<number>()
    let next = 0
    const killAt = Array.from({ length: KILLS }, (_, k) => Math.floor((EVENTS * (k + 1)) / (KILLS + 1)))
    const kills: { at: number; victim: number; replacedMs: number }[] = []
    let killing = Promise.resolve()
    const startedAt = Date.now()

    const killOne = async (at: number) => {
      const pids = workerPids(engine.proc.pid)
      const victim = pids[Math.floor(Math.random() * pids.length)]!
      const killedAt = Date.now()
      process.kill(victim, 'SIGKILL')
      // The supervisor replaces it; wait for the replacement before the next kill.
      for (;;) {
        const now = workerPids(engine.proc.pid)
        if (now.length === 2 && !now.includes(victim)) break
        if (Date.now() - killedAt > 10_000) throw new Error(`worker ${victim} was not replaced within 10 s`)
        await Bun.sleep(20)
      }
      kills.push({ at, victim, replacedMs: Date.now() - killedAt })
    }

    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        for (let seq = next++; seq < EVENTS; seq = next++) {
          if (killAt.includes(seq)) killing = killing.then(() => killOne(seq))
          try {
            const response = await fetch(streamRequest(engine.url, seq))
            await response.arrayBuffer()
            if (response.status === 202 && response.headers.get('x-plausible-dropped') === null) accepted.add(seq)
            else cut.add(seq)
          } catch {
            // Reset by the kill: the client saw no answer.
            cut.add(seq)
          }
        }
      }),
    )
    await killing
    const sendSeconds = (Date.now() - startedAt) / 1000

    // Every worker's sink drained (the summed /metrics of both workers), then a clean stop.
    const deadline = Date.now() + 120_000
    for (;;) {
      const text = await engine.metrics()
      if (
        series(text, 'analytics_workers_reporting') === 2 &&
        metric(text, 'analytics_sink_queued_rows', 'clickhouse') === 0 &&
        metric(text, 'analytics_sink_spool_bytes', 'clickhouse') === 0
      )
        break
      if (Date.now() > deadline) throw new Error('the sinks did not drain within 120 s')
      await Bun.sleep(200)
    }
    expect(await engine.stop()).toBe(0)

    // Replication caught up: both replicas hold the same events.
    const count = (ch: ClickHouseServer) => ch.query(`SELECT count() FROM ${db}.events_v2_local`).then(Number)
    const replicatedBy = Date.now() + 60_000
    while ((await count(r1)) !== (await count(r2))) {
      if (Date.now() > replicatedBy) throw new Error('the replicas did not agree within 60 s')
      await Bun.sleep(500)
    }

    const stored = (await r1.rows<{ seq: string }>(`SELECT toString(${SEQ}) AS seq FROM ${db}.events_v2_local`)).map(
      (r) => Number(r.seq),
    )
    const distinct = new Set(stored)
    const missing = [...accepted].filter((s) => !distinct.has(s))
    const strangers = [...distinct].filter((s) => !accepted.has(s) && !cut.has(s))
    const cutStored = [...cut].filter((s) => distinct.has(s)).length
    console.info(
      `durable over workers: ${EVENTS} sent in ${sendSeconds.toFixed(1)} s, ${accepted.size} answered 202, ` +
        `${cut.size} cut by the kills (${cutStored} of them stored), kills ${JSON.stringify(kills)}, ` +
        `${stored.length} rows, ${stored.length - distinct.size} stored twice`,
    )
    if (stored.length !== distinct.size) {
      console.info(
        await r1.query(
          `SELECT ${SEQ} AS seq, count() AS n, uniqExact(timestamp) AS ts, uniqExact(session_id) AS sessions, groupArray(_part) AS parts FROM ${db}.events_v2_local GROUP BY seq HAVING n > 1 ORDER BY seq LIMIT 20 FORMAT TSV`,
        ),
      )
      console.info(
        await r1.query(`SELECT _part, count() FROM ${db}.events_v2_local GROUP BY _part ORDER BY _part FORMAT TSV`),
      )
    }
    expect(kills.length).toBe(KILLS)
    expect(missing).toEqual([])
    expect(stored.length - distinct.size).toBe(0)
    expect(strangers).toEqual([])
    // Requests cut by a kill are bounded by the clients' parallelism: each client had at most one
    // request in flight at the kill, and may find its kept-alive connection to the dead worker reset
    // once more.
    expect(cut.size).toBeLessThanOrEqual(KILLS * PARALLEL * 2)

    // Sessions: every session whose events were all answered 202 has one live row (sum(sign) = 1)
    // whose events equal its stored events. A request cut by a kill may have reached one table's
    // spool and not the other's (each table commits on its own), so its session is left out; when
    // only the sessions table got it, no stored event names it, and the visitor's other request does
    // (each visitor sends two, seqs 2v and 2v + 1: streamRequest).
    const visitorCut = (seq: number) => cut.has(seq) || cut.has(seq ^ 1)
    const perSession = await r1.rows<{ session: string; seqs: string[] }>(
      `SELECT toString(session_id) AS session, groupArray(toString(${SEQ})) AS seqs FROM ${db}.events_v2_local GROUP BY session_id`,
    )
    const sessionRows = await r1.rows<{ session: string; signs: string; counted: string }>(
      `SELECT toString(session_id) AS session, toString(sum(sign)) AS signs, toString(sum(sign * events)) AS counted
       FROM ${db}.sessions_v2_local GROUP BY session_id`,
    )
    const bySession = new Map(sessionRows.map((r) => [r.session, r]))
    let checked = 0
    const bad: string[] = []
    for (const { session, seqs } of perSession) {
      if (seqs.some((seq) => visitorCut(Number(seq)))) continue
      checked++
      const row = bySession.get(session)
      if (row?.signs !== '1' || row.counted !== String(seqs.length))
        bad.push(`${session}: ${JSON.stringify(row)}, ${seqs.length} events`)
    }
    expect(checked).toBeGreaterThan(perSession.length * 0.9)
    expect(bad.slice(0, 10)).toEqual([])
  }, 600_000)
})
