// The `clickhouse` sink: DDL per server version, error classes and row encoding without a server;
// migrations and a column-by-column round trip against a real ClickHouse 18.16 (test/clickhouse/harness.ts).
// Faults (server down mid-stream, replay after close, dead letters) are in test/clickhouse/faults.test.ts.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { resolveOptions } from '../../core/options.ts'
import { ConfigError } from '../../core/plugin.ts'
import { SinkStats } from '../../core/sink.ts'
import { makeEvent } from '../../core/testing.ts'
import {
  eventSelect,
  normalizeRead,
  realisticEvents,
  removeScratch,
  scratchServices,
  sessionSelect,
  setupSink,
  sinkOptions,
  sortedExpectedEvents,
  sortedExpectedSessions,
  until,
} from '../../test/clickhouse/fixtures.ts'
import {
  type ClickHouseServer,
  clickhouseBinary,
  startClickHouse,
  warnIfNoClickHouse,
} from '../../test/clickhouse/harness.ts'
import { eventLine } from './encode.ts'
import { classify } from './errors.ts'
import clickhouse from './index.ts'
import { capsFor, createDistributedSQL, createTableSQL, EVENT_COLUMNS, SESSION_COLUMNS } from './schema.ts'

warnIfNoClickHouse()

const single = {
  database: 'analytics',
  eventsTable: 'events_v2',
  sessionsTable: 'sessions_v2',
  countersTable: 'ingest_counters',
  cluster: '',
}

describe('DDL per server version', () => {
  test('18.16: no codecs, no deduplication window, the spec engine and keys', () => {
    const caps = capsFor('18.16.1')
    expect(caps).toMatchObject({ codecs: false, lowCardinalitySetting: true, dedupTokens: false })
    const events = createTableSQL(single, 'events', caps)
    expect(events).not.toContain('CODEC')
    expect(events).not.toContain('SETTINGS')
    expect(events).toContain('ENGINE = MergeTree\nPARTITION BY toYYYYMM(timestamp)')
    expect(events).toContain('PRIMARY KEY (site_id, toDate(timestamp), name, user_id)')
    expect(events).toContain('ORDER BY (site_id, toDate(timestamp), name, user_id, timestamp)\nSAMPLE BY user_id')
    const sessions = createTableSQL(single, 'sessions', caps)
    expect(sessions).toContain('VersionedCollapsingMergeTree(sign, events)')
    expect(sessions).toContain('ORDER BY (site_id, toDate(start), user_id, session_id)')
  })

  test('current ClickHouse: codecs and a deduplication window for tokens', () => {
    const caps = capsFor('26.7.2.1')
    expect(caps).toMatchObject({ codecs: true, lowCardinalitySetting: false, dedupTokens: true })
    const events = createTableSQL(single, 'events', caps)
    expect(events).toContain('`timestamp` DateTime CODEC(Delta(4), LZ4)')
    expect(events).toContain('`meta.key` Array(String) CODEC(ZSTD(3))')
    expect(events).toContain('SETTINGS non_replicated_deduplication_window = 10000')
  })

  test('cluster mode: ON CLUSTER, Replicated engines, Distributed tables sharded by user_id', () => {
    const target = { ...single, cluster: 'repl' }
    const caps = capsFor('18.16.1')
    const events = createTableSQL(target, 'events', caps)
    expect(events).toContain('CREATE TABLE IF NOT EXISTS `analytics`.`events_v2_local` ON CLUSTER `repl`')
    expect(events).toContain("ReplicatedMergeTree('/clickhouse/tables/{shard}/analytics/events_v2_local', '{replica}')")
    expect(events).toContain('SETTINGS replicated_deduplication_window = 10000')
    expect(createTableSQL(target, 'sessions', caps)).toContain(
      "ReplicatedVersionedCollapsingMergeTree('/clickhouse/tables/{shard}/analytics/sessions_v2_local', '{replica}', sign, events)",
    )
    expect(createDistributedSQL(target, 'sessions')).toBe(
      'CREATE TABLE IF NOT EXISTS `analytics`.`sessions_v2` ON CLUSTER `repl` AS `analytics`.`sessions_v2_local`\n' +
        'ENGINE = Distributed(`repl`, `analytics`, `sessions_v2_local`, user_id)',
    )
  })

  test('ingest_counters: SummingMergeTree by site, minute and reason; sharded by site on a cluster', () => {
    const counters = createTableSQL(single, 'counters', capsFor('18.16.1'))
    expect(counters).toContain('ENGINE = SummingMergeTree((dropped, would_drop))')
    expect(counters).toContain('PARTITION BY toYYYYMM(minute)\nORDER BY (site_id, minute, reason)')
    const target = { ...single, cluster: 'repl' }
    expect(createTableSQL(target, 'counters', capsFor('18.16.1'))).toContain(
      "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/analytics/ingest_counters_local', '{replica}', (dropped, would_drop))",
    )
    expect(createDistributedSQL(target, 'counters')).toEndWith('`ingest_counters_local`, site_id)')
  })
})

describe('errors', () => {
  test.each([
    [
      '18.16 parse error',
      'Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: "x"}: (at row 2)\n, e.what() = DB::Exception',
      'malformed',
      27,
    ],
    [
      '26.x value too long',
      'Code: 131. DB::Exception: Too large value for FixedString(2): (at row 1)\n: While executing ParallelParsingBlockInputFormat. (TOO_LARGE_STRING_SIZE)',
      'malformed',
      131,
    ],
    [
      'missing table',
      "Code: 60, e.displayText() = DB::Exception: Table analytics.events_v2 doesn't exist., e.what() = DB::Exception",
      'schema',
      60,
    ],
    [
      'older table',
      'Code: 117. DB::Exception: Unknown field found while parsing JSONEachRow format: acquisition_channel: (at row 1)\n. (INCORRECT_DATA)',
      'schema',
      117,
    ],
    ['read-only replica', 'Code: 242. DB::Exception: Table is in readonly mode (TABLE_IS_READ_ONLY)', 'transient', 242],
    ['connection refused', 'connect ECONNREFUSED 127.0.0.1:8123', 'transient', undefined],
    ['timeout', 'Timeout error.', 'transient', undefined],
  ])('%s', (_label, message, kind, code) => {
    const failure = classify(new Error(message))
    expect(failure.kind).toBe(kind as never)
    expect(failure.code).toBe(code)
    // The summary never carries what the server quoted from the rows.
    expect(failure.summary).not.toContain('"x"')
    expect(failure.summary).not.toContain('at row')
  })
})

describe('row encoding', () => {
  test('DateTime as epoch seconds, decimals as bare numbers, 64-bit ids as text', () => {
    const line = eventLine(
      makeEvent({ timestamp: 1_767_323_045, user_id: 2n ** 64n - 1n, revenue_reporting_amount: '123456789012345.678' }),
    )
    const row = JSON.parse(line)
    expect(row.timestamp).toBe(1_767_323_045)
    expect(row.user_id).toBe('18446744073709551615')
    expect(line).toContain('"revenue_reporting_amount":123456789012345.678')
    expect(row.revenue_source_amount).toBeNull()
  })

  test('text that is not a decimal stays quoted, for the server to reject', () => {
    expect(eventLine(makeEvent({ revenue_source_amount: '1e5' }))).toContain('"revenue_source_amount":"1e5"')
  })
})

describe('options', () => {
  test('defaults', () => {
    const resolved = resolveOptions(clickhouse.options, {}, 'clickhouse')
    expect(resolved.ok && resolved.value).toMatchObject({
      url: 'http://localhost:8123',
      database: 'default',
      eventsTable: 'events_v2',
      sessionsTable: 'sessions_v2',
      batchRows: 10_000,
      flushIntervalMs: 1000,
      compression: 'gzip',
      spoolLimitMb: 1024,
      autoMigrate: true,
      cluster: '',
    })
  })

  test('urls: further endpoints, none by default; a bad one is a config error naming its path', async () => {
    expect(sinkOptions(clickhouse, {}).urls).toEqual([])
    const options = sinkOptions(clickhouse, {
      url: 'http://127.0.0.1:1',
      urls: ['http://127.0.0.1:2', 'ftp://replica-2'],
      cluster: 'repl',
    })
    const error = await Promise.resolve()
      .then(() => clickhouse.setup(options, scratchServices(), new SinkStats()))
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).path).toBe('urls/1')
    expect(await clickhouse.migrate!(options, scratchServices()).catch((e: unknown) => (e as ConfigError).path)).toBe(
      'urls/1',
    )
    removeScratch()
  })

  test('every endpoint failing: the error is the last one, and it names what each one before it answered', async () => {
    // Endpoint 1 takes the connection and closes it without an answer; endpoint 2 refuses it.
    const silent = Bun.listen({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        data(socket) {
          socket.end()
        },
      },
    })
    const refusing = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
    const refusingPort = refusing.port
    refusing.stop(true)
    try {
      const silentUrl = `http://127.0.0.1:${silent.port}`
      const options = sinkOptions(clickhouse, { url: silentUrl, urls: [`http://127.0.0.1:${refusingPort}`] })
      const error = (await clickhouse.migrate!(options, scratchServices()).catch((e: unknown) => e)) as Error
      const [first, ...rest] = error.message.split('\n')
      expect(first).toContain(`ECONNREFUSED`)
      expect(first).toContain(`:${refusingPort}`)
      expect(rest.join('\n')).toContain(`before that: ${silentUrl}/: `)
      // Read as the last endpoint's failure: no answer, so no ClickHouse code.
      expect(classify(error)).toMatchObject({ kind: 'transient', code: undefined })
      expect(classify(error).summary).toStartWith('ECONNREFUSED')
    } finally {
      silent.stop(true)
      removeScratch()
    }
  })

  test('rejects unknown keys and unsafe table names', () => {
    expect(resolveOptions(clickhouse.options, { tabel: 'x' }, 'clickhouse').ok).toBe(false)
    expect(resolveOptions(clickhouse.options, { eventsTable: 'x; DROP' }, 'clickhouse').ok).toBe(false)
  })
})

describe.skipIf(!clickhouseBinary)('against ClickHouse 18.16', () => {
  let ch: ClickHouseServer

  beforeAll(async () => {
    ch = (await startClickHouse())!
  }, 30_000)
  afterAll(async () => {
    await ch?.destroy()
    removeScratch()
  }, 30_000)

  test('migrate creates the tables as specified, and twice changes nothing', async () => {
    const options = sinkOptions(clickhouse, { url: ch.url, database: 'analytics' })
    const first = await clickhouse.migrate!(options, scratchServices())
    expect(first).toEqual([
      'ClickHouse 18.16.1',
      'created database analytics',
      'created table analytics.events_v2',
      'created table analytics.sessions_v2',
      'created table analytics.ingest_counters',
    ])
    const second = await clickhouse.migrate!(options, scratchServices())
    expect(second).toEqual([
      'ClickHouse 18.16.1',
      'table analytics.events_v2 is up to date',
      'table analytics.sessions_v2 is up to date',
      'table analytics.ingest_counters is up to date',
    ])
    for (const [table, columns] of [
      ['events_v2', EVENT_COLUMNS],
      ['sessions_v2', SESSION_COLUMNS],
    ] as const) {
      const actual = await ch.rows<{ name: string; type: string }>(
        `SELECT name, type FROM system.columns WHERE database = 'analytics' AND table = '${table}'`,
      )
      expect(actual).toEqual(
        columns.map((c) => ({ name: c.name, type: c.type.replace('Decimal64(3)', 'Decimal(18, 3)') })),
      )
    }
  }, 30_000)

  test('migrate adds the columns an older table lacks', async () => {
    const options = sinkOptions(clickhouse, { url: ch.url, database: 'older' })
    await clickhouse.migrate!(options, scratchServices())
    await ch.query('ALTER TABLE older.events_v2 DROP COLUMN acquisition_channel, DROP COLUMN scroll_depth')
    const lines = await clickhouse.migrate!(options, scratchServices())
    expect(lines).toContain('added column older.events_v2.scroll_depth UInt8')
    expect(lines).toContain('added column older.events_v2.acquisition_channel LowCardinality(String)')
    expect(lines).toContain('table older.sessions_v2 is up to date')
  }, 30_000)

  test('rows written through write() read back column by column (sessions with FINAL)', async () => {
    const options = { url: ch.url, database: 'roundtrip', batchRows: 100, flushIntervalMs: 50 }
    await clickhouse.migrate!(sinkOptions(clickhouse, options), scratchServices())
    const { sink, stats } = await setupSink(clickhouse, options)
    const events = realisticEvents(450)
    for (const e of events) sink.write(e)
    await sink.flush()
    // flush() may leave a burst on the spool (more than a few batches at once); delivery follows.
    const rows = 450 + events.reduce((n, e) => n + e.sessionRows.length, 0)
    await until(() => stats.rowsWritten === rows, 10_000, 'delivery')
    expect(stats.deadLetters).toBe(0)
    expect(sink.health()).toMatchObject({ state: 'ok', queuedRows: 0, spoolBytes: 0 })
    await sink.close()

    const actualEvents = normalizeRead(await ch.rows(eventSelect('roundtrip.events_v2')))
    const expectedEvents = sortedExpectedEvents(events)
    expect(actualEvents.length).toBe(expectedEvents.length)
    for (let i = 0; i < expectedEvents.length; i++) expect(actualEvents[i]).toEqual(expectedEvents[i]!)
    const actualSessions = await ch.rows(sessionSelect('roundtrip.sessions_v2'))
    expect(actualSessions).toEqual(sortedExpectedSessions(events))
  }, 30_000)

  test('without compression the same rows arrive', async () => {
    const options = { url: ch.url, database: 'plain', compression: 'none', batchRows: 50 }
    await clickhouse.migrate!(sinkOptions(clickhouse, options), scratchServices())
    const { sink } = await setupSink(clickhouse, options)
    for (const e of realisticEvents(60)) sink.write(e)
    await sink.close()
    expect(await ch.query('SELECT count() FROM plain.events_v2')).toBe('60\n')
  }, 30_000)

  test('a missing database is created by the sink itself, and the rows arrive', async () => {
    const options = { url: ch.url, database: 'selfmade', flushIntervalMs: 20, retryMaxMs: 50 }
    const { sink, stats } = await setupSink(clickhouse, options)
    const events = realisticEvents(6, 5)
    for (const e of events) sink.write(e)
    await sink.flush()
    const rows = events.length + events.reduce((n, e) => n + e.sessionRows.length, 0)
    await until(() => stats.rowsWritten === rows, 10_000, 'delivery')
    expect(sink.health()).toMatchObject({ state: 'ok', spoolBytes: 0 })
    expect(stats.deadLetters).toBe(0)
    expect(await ch.query('SELECT count() FROM selfmade.events_v2')).toBe('6\n')
    // The tables are the migration's: a second migration finds nothing to do.
    const again = await clickhouse.migrate!(sinkOptions(clickhouse, options), scratchServices())
    expect(again.slice(1)).toEqual([
      'table selfmade.events_v2 is up to date',
      'table selfmade.sessions_v2 is up to date',
      'table selfmade.ingest_counters is up to date',
    ])
    await sink.close()
  }, 30_000)

  test('with autoMigrate off, a missing table keeps rows spooled and says to migrate', async () => {
    const options = { url: ch.url, database: 'nothere', flushIntervalMs: 20, retryMaxMs: 50, autoMigrate: false }
    const { sink, stats } = await setupSink(clickhouse, options)
    for (const e of realisticEvents(3)) sink.write(e)
    await sink.flush()
    const deadline = Date.now() + 5000
    while (sink.health().detail?.includes('migrate') !== true && Date.now() < deadline) await Bun.sleep(20)
    expect(sink.health().state).toBe('degraded')
    expect(sink.health().detail).toContain('UNKNOWN_DATABASE')
    expect(stats.deadLetters).toBe(0)
    expect(await ch.query("SELECT count() FROM system.databases WHERE name = 'nothere'")).toBe('0\n')
    await clickhouse.migrate!(sinkOptions(clickhouse, options), scratchServices())
    while (sink.health().state !== 'ok' && Date.now() < deadline + 5000) await Bun.sleep(20)
    expect(await ch.query('SELECT count() FROM nothere.events_v2')).toBe('3\n')
    await sink.close()
  }, 30_000)
})
