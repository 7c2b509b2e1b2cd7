// The verdicts the cluster tests read from ClickHouse (cluster.test.ts, cluster-faults.test.ts):
// exactly once on one replica's own `_local` tables, replication caught up, and the server's count of
// blocks it dropped as duplicates; plus waiting for an engine's sink to drain.

import { expect } from 'bun:test'
import { until } from './fixtures.ts'
import type { ClickHouseServer } from './harness.ts'
import { type EngineProcess, metric } from './traffic.ts'

export const SINK = 'clickhouse'

/** The `seq` prop of an events_v2 row, as a number. */
export const SEQ = "toUInt64OrZero(meta.value[indexOf(meta.key, 'seq')])"

/** Polls until the engine's sink has nothing left in memory or on disk; returns /metrics. */
export async function drained(engine: EngineProcess, ms = 30_000): Promise<string> {
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
 * Exactly once on one replica's own tables: every accepted seq stored once and nothing else; per
 * session sum(sign) = 1 and sum(sign * events) = the session's stored events over all rows (what
 * merges keep), and one row in sessions FINAL with sign 1 and the same events. A lost or doubled
 * session batch breaks both.
 */
export async function expectExactlyOnce(ch: ClickHouseServer, db: string, accepted: Set<number>): Promise<void> {
  const [counts] = await ch.rows<{ rows: string; seqs: string }>(
    `SELECT toString(count()) AS rows, toString(uniqExact(${SEQ})) AS seqs FROM ${db}.events_v2_local`,
  )
  expect(counts).toEqual({ rows: String(accepted.size), seqs: String(accepted.size) })
  const stored = await ch.rows<{ seq: string }>(`SELECT toString(${SEQ}) AS seq FROM ${db}.events_v2_local`)
  expect(stored.map((r) => Number(r.seq)).filter((s) => !accepted.has(s))).toEqual([])
  const perEvents = `(SELECT session_id, toInt64(count()) AS n FROM ${db}.events_v2_local GROUP BY session_id) AS e`
  const [sessions] = await ch.rows<{ sessions: string; bad: string }>(
    `SELECT toString(count()) AS sessions, toString(countIf(s.sign != 1 OR s.events != e.n)) AS bad
     FROM (SELECT session_id, sign, toInt64(events) AS events FROM ${db}.sessions_v2_local FINAL) AS s
     ANY LEFT JOIN ${perEvents} USING session_id`,
  )
  const [sums] = await ch.rows<{ sessions: string; bad: string }>(
    `SELECT toString(count()) AS sessions, toString(countIf(s.signs != 1 OR s.counted != e.n)) AS bad
     FROM (SELECT session_id, sum(sign) AS signs, sum(sign * events) AS counted FROM ${db}.sessions_v2_local GROUP BY session_id) AS s
     ANY LEFT JOIN ${perEvents} USING session_id`,
  )
  const [withEvents] = await ch.rows<{ n: string }>(
    `SELECT toString(uniqExact(session_id)) AS n FROM ${db}.events_v2_local`,
  )
  expect(sessions).toEqual({ sessions: withEvents!.n, bad: '0' })
  expect(sums).toEqual({ sessions: withEvents!.n, bad: '0' })
}

/**
 * Waits until replication has caught up on every replica: each holds at least `rows` events, has
 * empty replication queues, and all agree on the events and on the sessions' sum(sign) and
 * sum(sign * events) (merge-proof). A replica may not yet know of a part another committed, with
 * an empty queue, so a count alone is not enough, and duplicates could reach it.
 */
export async function replicated(
  replicas: readonly ClickHouseServer[],
  db: string,
  rows: number,
  ms = 30_000,
): Promise<void> {
  let states: string[] = []
  try {
    await until(
      async () => {
        states = await Promise.all(
          replicas.map((ch) =>
            ch
              .query(
                `SELECT (SELECT count() FROM ${db}.events_v2_local), (SELECT sum(sign) FROM ${db}.sessions_v2_local), (SELECT sum(sign * events) FROM ${db}.sessions_v2_local), (SELECT sum(queue_size) FROM system.replicas WHERE database = '${db}')`,
              )
              .catch((error: unknown) => `error: ${String(error)}`),
          ),
        )
        return states.every((s) => {
          const [events, , , queued] = s.trim().split('\t').map(Number)
          return events! >= rows && queued === 0 && s === states[0]
        })
      },
      ms,
      `${rows} rows, empty replication queues and the same counts on every replica`,
    )
  } catch (error) {
    const queues = await Promise.all(
      replicas.map((ch) =>
        ch
          .query(
            `SELECT table, type, new_part_name, num_tries, last_exception, postpone_reason FROM system.replication_queue WHERE database = '${db}' FORMAT TSV`,
          )
          .catch((e) => String(e)),
      ),
    )
    throw new Error(
      `${(error as Error).message}\nevents, sum(sign), sum(sign * events), queued per replica: ${states.map((s) => s.trim()).join(' | ')}\nreplication queues:\n${queues.join('\n')}`,
    )
  }
}

/** Blocks a replica dropped as already present (ProfileEvents, since the server started). */
export async function duplicatedBlocks(ch: ClickHouseServer): Promise<number> {
  const text = await ch.query("SELECT sum(value) FROM system.events WHERE event = 'DuplicatedInsertedBlocks'")
  return Number(text)
}
