// Retention as config (issue #12 item 6), applied by `migrate` on the embedded engine (chdb, ClickHouse
// 26.x: a table TTL) and on a real ClickHouse 18.16 (no TTL there: a DELETE mutation): rows past their
// site's days disappear, newer rows and other sites' rows stay, a second migrate changes nothing, and
// changing the days changes what is kept.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { EngineServices } from '../../core/plugin.ts'
import { createSiteTable, type SiteConfig } from '../../core/sites.ts'
import { testServices } from '../../core/testing.ts'
import { sinkOptions } from '../../test/clickhouse/fixtures.ts'
import {
  type ClickHouseServer,
  clickhouseBinary,
  startClickHouse,
  warnIfNoClickHouse,
} from '../../test/clickhouse/harness.ts'
import chdb from '../chdb/index.ts'
import { acquireChdb } from '../chdb/protocol.ts'
import clickhouse from './index.ts'
import { retentionPlan, ttlExpression } from './schema.ts'

warnIfNoClickHouse()

const root = mkdtempSync(join(tmpdir(), 'retention-test-'))
afterAll(() => rmSync(root, { recursive: true, force: true }))

/** Services whose site table carries the retention under test. */
function servicesWith(sites: SiteConfig[], days?: number): EngineServices {
  return { ...testServices({ stateDir: root }), sites: createSiteTable(sites, days) }
}

const SITES: SiteConfig[] = [
  { id: 1, domain: 'default.example' },
  { id: 2, domain: 'short.example', retention: { days: 30 } },
  { id: 3, domain: 'long.example', retention: { days: 400 } },
]

/** Rows aged in days, per site: which of them a 90-day default with the sites above keeps. */
const AGES: { site: number; days: number; kept: boolean }[] = [
  { site: 1, days: 100, kept: false },
  { site: 1, days: 50, kept: true },
  { site: 2, days: 40, kept: false },
  { site: 2, days: 10, kept: true },
  { site: 3, days: 100, kept: true },
  { site: 99, days: 100, kept: false }, // not configured: the default applies
  { site: 99, days: 5, kept: true },
]

const insertSQL = (db: string) => [
  `INSERT INTO ${db}.events_v2 (timestamp, name, site_id, user_id) VALUES ${AGES.map(
    (a, i) => `(now() - ${a.days * 86400}, 'pageview', ${a.site}, ${i})`,
  ).join(', ')}`,
  `INSERT INTO ${db}.sessions_v2 (session_id, sign, site_id, user_id, timestamp, start, events) VALUES ${AGES.map(
    (a, i) => `(${i}, 1, ${a.site}, ${i}, now() - ${a.days * 86400}, now() - ${a.days * 86400}, 1)`,
  ).join(', ')}`,
]

const key = (rows: Record<string, unknown>[]) => rows.map((r) => `${r.site_id}:${r.age}`).sort()
const expected = (keep: (a: (typeof AGES)[number]) => boolean) =>
  AGES.filter(keep)
    .map((a) => `${a.site}:${a.days}`)
    .sort()
const AGE_SQL = (db: string, table: string, column: string) =>
  `SELECT site_id, intDiv(toUInt32(now()) - toUInt32(${column}) + 3600, 86400) AS age FROM ${db}.${table}`

describe('the retention plan', () => {
  test('one TTL expression for every site; no global days keep unlisted sites forever', () => {
    const plan = retentionPlan(createSiteTable(SITES, 90))
    expect(plan).toEqual({
      defaultDays: 90,
      sites: [
        { id: 2, days: 30 },
        { id: 3, days: 400 },
      ],
    })
    expect(ttlExpression(plan, 'events')).toBe('timestamp + toIntervalDay(transform(site_id, [2, 3], [30, 400], 90))')
    expect(ttlExpression(plan, 'sessions')).toBe('start + toIntervalDay(transform(site_id, [2, 3], [30, 400], 90))')
    expect(ttlExpression(retentionPlan(createSiteTable(SITES.slice(0, 1), 90)), 'events')).toBe(
      'timestamp + toIntervalDay(90)',
    )
    expect(ttlExpression(retentionPlan(createSiteTable(SITES)), 'events')).toBe(
      'if(has([2, 3], site_id), timestamp + toIntervalDay(transform(site_id, [2, 3], [30, 400], 0)), toDateTime(4294967295))',
    )
    expect(ttlExpression(retentionPlan(createSiteTable(SITES.slice(0, 1))), 'events')).toBeUndefined()
  })
})

describe('on chdb (table TTL)', () => {
  const path = join(root, 'chdb')
  const db = 'kept'
  const options = sinkOptions(chdb, { path, database: db })
  const select = async (sql: string) => {
    const { worker, release } = acquireChdb(path, 'chdb')
    try {
      await worker.open()
      return (await worker.call({ op: 'select', sql })) as Record<string, unknown>[]
    } finally {
      await release()
    }
  }
  const exec = async (...sqls: string[]) => {
    const { worker, release } = acquireChdb(path, 'chdb')
    try {
      await worker.open()
      for (const sql of sqls) await worker.call({ op: 'exec', sql })
    } finally {
      await release()
    }
  }
  const remaining = async (table: string, column: string) => {
    await exec(`OPTIMIZE TABLE ${db}.${table} FINAL`)
    return key(await select(AGE_SQL(db, table, column)))
  }

  test('migrate deletes what is past each site’s days, keeps the rest, and twice changes nothing', async () => {
    await chdb.migrate!(options, servicesWith(SITES))
    await exec(...insertSQL(db))
    const lines = await chdb.migrate!(options, servicesWith(SITES, 90))
    expect(lines.slice(1)).toEqual([
      `table ${db}.events_v2 is up to date`,
      `table ${db}.sessions_v2 is up to date`,
      `table ${db}.ingest_counters is up to date`,
      `set the TTL of ${db}.events_v2: 90 days; site 2: 30 days; site 3: 400 days`,
      `set the TTL of ${db}.sessions_v2: 90 days; site 2: 30 days; site 3: 400 days`,
    ])
    expect(await remaining('events_v2', 'timestamp')).toEqual(expected((a) => a.kept))
    expect(await remaining('sessions_v2', 'start')).toEqual(expected((a) => a.kept))

    const again = await chdb.migrate!(options, servicesWith(SITES, 90))
    expect(again.slice(1)).toEqual([
      `table ${db}.events_v2 is up to date`,
      `table ${db}.sessions_v2 is up to date`,
      `table ${db}.ingest_counters is up to date`,
      'retention is up to date: 90 days; site 2: 30 days; site 3: 400 days',
    ])
  }, 60_000)

  test('changing the days updates the TTL; dropping retention removes it', async () => {
    const shorter = SITES.map((s) => (s.id === 2 ? { ...s, retention: { days: 5 } } : s))
    const lines = await chdb.migrate!(options, servicesWith(shorter, 90))
    expect(lines).toContain(`set the TTL of ${db}.events_v2: 90 days; site 2: 5 days; site 3: 400 days`)
    expect(await remaining('events_v2', 'timestamp')).toEqual(expected((a) => a.kept && !(a.site === 2)))

    const forever = await chdb.migrate!(options, servicesWith(SITES.slice(0, 1)))
    expect(forever).toContain(`removed the TTL of ${db}.events_v2: rows are kept forever`)
    const [row] = await select(`SELECT engine_full FROM system.tables WHERE database = '${db}' AND name = 'events_v2'`)
    expect(String(row?.engine_full)).not.toContain('TTL')
  }, 60_000)
})

describe.skipIf(!clickhouseBinary)('on ClickHouse 18.16 (no TTL: a DELETE mutation)', () => {
  let ch: ClickHouseServer
  beforeAll(async () => {
    ch = (await startClickHouse())!
  }, 30_000)
  afterAll(async () => {
    await ch?.destroy()
  }, 30_000)

  const db = 'kept'
  const mutationsDone = async () => {
    for (let i = 0; i < 100; i++) {
      const [row] = await ch.rows<{ n: string }>(
        `SELECT count() AS n FROM system.mutations WHERE database = '${db}' AND is_done = 0`,
      )
      if (Number(row?.n) === 0) return
      await Bun.sleep(100)
    }
    throw new Error('mutations did not finish')
  }

  test('migrate deletes what is past each site’s days, keeps the rest, and twice changes nothing', async () => {
    const options = sinkOptions(clickhouse, { url: ch.url, database: db })
    await clickhouse.migrate!(options, servicesWith(SITES))
    for (const sql of insertSQL(db)) await ch.query(sql)
    const started = performance.now()
    const lines = await clickhouse.migrate!(options, servicesWith(SITES, 90))
    expect(lines.slice(1)).toEqual([
      `table ${db}.events_v2 is up to date`,
      `table ${db}.sessions_v2 is up to date`,
      `table ${db}.ingest_counters is up to date`,
      `deleting 3 expired rows of ${db}.events_v2 (90 days; site 2: 30 days; site 3: 400 days; no TTL on 18.16.1)`,
      `deleting 3 expired rows of ${db}.sessions_v2 (90 days; site 2: 30 days; site 3: 400 days; no TTL on 18.16.1)`,
    ])
    await mutationsDone()
    console.log(
      `retention on 18.16: delete mutations done ${Math.round(performance.now() - started)} ms after migrate began`,
    )
    expect(key(await ch.rows(AGE_SQL(db, 'events_v2', 'timestamp')))).toEqual(expected((a) => a.kept))
    expect(key(await ch.rows(AGE_SQL(db, 'sessions_v2', 'start')))).toEqual(expected((a) => a.kept))

    const again = await clickhouse.migrate!(options, servicesWith(SITES, 90))
    expect(again.slice(1)).toEqual([
      `table ${db}.events_v2 is up to date`,
      `table ${db}.sessions_v2 is up to date`,
      `table ${db}.ingest_counters is up to date`,
      'retention is up to date: 90 days; site 2: 30 days; site 3: 400 days',
    ])

    // Shorter days for site 2: its 10-day-old rows go too.
    const shorter = SITES.map((s) => (s.id === 2 ? { ...s, retention: { days: 5 } } : s))
    const changed = await clickhouse.migrate!(options, servicesWith(shorter, 90))
    expect(changed).toContain(
      `deleting 1 expired rows of ${db}.events_v2 (90 days; site 2: 5 days; site 3: 400 days; no TTL on 18.16.1)`,
    )
    await mutationsDone()
    expect(key(await ch.rows(AGE_SQL(db, 'events_v2', 'timestamp')))).toEqual(expected((a) => a.kept && a.site !== 2))
  }, 60_000)
})
