// The `chdb` sink on the embedded engine (ClickHouse 26.x): full DDL, idempotent migrations, a
// column-by-column round trip, token deduplication, and a chdb that cannot load.
//
// chdb allows one data folder per process, so every test here uses the same folder (with its own
// database) and closes what it opens.

import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AnalyticsEvent } from '../../core/event.ts'
import { testServices } from '../../core/testing.ts'
import {
  eventSelect,
  normalizeRead,
  realisticEvents,
  sessionSelect,
  setupSink,
  sinkOptions,
  sortedExpectedEvents,
  sortedExpectedSessions,
  until,
} from '../../test/clickhouse/fixtures.ts'
import chdb, { createChdbSink } from './index.ts'
import { acquireChdb, type ChdbWorker } from './protocol.ts'

const root = mkdtempSync(join(tmpdir(), 'chdb-sink-test-'))
const path = join(root, 'db')
const services = () => testServices({ stateDir: root })
const rowsOf = (events: AnalyticsEvent[]) => events.length + events.reduce((n, e) => n + e.sessionRows.length, 0)

afterAll(() => {
  rmSync(root, { recursive: true, force: true })
})

/** Runs `fn` with a worker of its own on the shared folder. */
async function withEngine<T>(fn: (w: ChdbWorker) => Promise<T>): Promise<T> {
  const { worker, release } = acquireChdb(path, 'chdb')
  await worker.open()
  try {
    return await fn(worker)
  } finally {
    await release()
  }
}

const select = (w: ChdbWorker, sql: string) => w.call({ op: 'select', sql }) as Promise<Record<string, unknown>[]>

describe('chdb sink', () => {
  test('migrate creates the full DDL and twice changes nothing', async () => {
    const options = sinkOptions(chdb, { path, database: 'analytics' })
    const first = await chdb.migrate!(options, services())
    expect(first[0]).toMatch(/^ClickHouse 2\d\./)
    expect(first.slice(1)).toEqual([
      'created database analytics',
      'created table analytics.events_v2',
      'created table analytics.sessions_v2',
      'created table analytics.ingest_counters',
    ])
    const second = await chdb.migrate!(options, services())
    expect(second.slice(1)).toEqual([
      'table analytics.events_v2 is up to date',
      'table analytics.sessions_v2 is up to date',
      'table analytics.ingest_counters is up to date',
    ])
    const tables = await withEngine((w) =>
      select(w, "SELECT name, create_table_query FROM system.tables WHERE database = 'analytics' ORDER BY name"),
    )
    const events = String(tables[0]?.create_table_query)
    expect(events).toContain('`timestamp` DateTime CODEC(Delta(4), LZ4)')
    expect(events).toContain('non_replicated_deduplication_window = 10000')
    expect(String(tables[1]?.create_table_query)).toContain('SummingMergeTree((dropped, would_drop))')
    expect(String(tables[2]?.create_table_query)).toContain('VersionedCollapsingMergeTree(sign, events)')
  }, 60_000)

  test('rows written through write() read back column by column (sessions with FINAL)', async () => {
    const { sink, stats } = await setupSink(
      chdb,
      { path, database: 'roundtrip', batchRows: 200, flushIntervalMs: 20 },
      services(),
    )
    expect(sink.health().state).toBe('ok')
    const events = realisticEvents(600)
    for (const e of events) sink.write(e)
    await sink.flush()
    await until(() => stats.rowsWritten === rowsOf(events), 20_000, 'delivery')
    await sink.close()
    const [actualEvents, actualSessions] = await withEngine(async (w) => [
      normalizeRead(await select(w, eventSelect('roundtrip.events_v2'))),
      await select(w, sessionSelect('roundtrip.sessions_v2')),
    ])
    const expectedEvents = sortedExpectedEvents(events)
    expect(actualEvents.length).toBe(expectedEvents.length)
    for (let i = 0; i < expectedEvents.length; i++) expect(actualEvents[i]).toEqual(expectedEvents[i]!)
    expect(actualSessions).toEqual(sortedExpectedSessions(events))
  }, 60_000)

  test('migrate while the sink runs (serve does this at start) leaves its inserts working', async () => {
    const options = { path, database: 'running', flushIntervalMs: 20 }
    const { sink, stats } = await setupSink(chdb, options, services())
    expect(await chdb.migrate!(sinkOptions(chdb, options), services())).toContain(
      'table running.events_v2 is up to date',
    )
    const events = realisticEvents(12, 4)
    for (const e of events) sink.write(e)
    await until(() => stats.rowsWritten === rowsOf(events), 10_000, 'delivery')
    await sink.close()
  }, 30_000)

  test('a batch inserted twice with its token is stored once', async () => {
    await chdb.migrate!(sinkOptions(chdb, { path, database: 'dedup' }), services())
    const count = await withEngine(async (w) => {
      const payload = new TextEncoder().encode('{"name":"pageview","site_id":"1","timestamp":1767323045}')
      for (let i = 0; i < 2; i++) {
        await w.call({
          op: 'insert',
          table: 'dedup.events_v2',
          payload,
          settings: { insert_deduplication_token: 'batch-1', input_format_skip_unknown_fields: 0 },
        })
      }
      return select(w, 'SELECT count() AS n FROM dedup.events_v2')
    })
    expect(Number(count[0]?.n)).toBe(1)
  }, 60_000)

  test('when chdb cannot load, start-up goes on, health says so, rows are spooled and replayed later', async () => {
    const spoolDir = join(root, 'spool-broken')
    const broken = createChdbSink('chdb-that-is-not-installed')
    const options = { path, database: 'broken', spoolDir, flushIntervalMs: 20, retryMaxMs: 50 }
    const first = await setupSink(broken, options, services())
    expect(first.sink.health()).toMatchObject({ state: 'failing' })
    expect(first.sink.health().detail).toContain('chdb could not start')
    const events = realisticEvents(90, 3)
    for (const e of events) first.sink.write(e)
    await first.sink.flush()
    await until(() => (first.sink.health().spoolBytes ?? 0) > 0, 10_000, 'spooling')
    await first.sink.close()
    expect(first.stats.rowsWritten).toBe(0)

    const second = await setupSink(chdb, options, services())
    await until(() => second.stats.rowsWritten === rowsOf(events), 20_000, 'replay')
    await second.sink.close()
    expect(second.sink.health()).toMatchObject({ state: 'ok', spoolBytes: 0 })
    const [row] = await withEngine((w) => select(w, 'SELECT count() AS n FROM broken.events_v2'))
    expect(Number(row?.n)).toBe(90)
  }, 60_000)
})
