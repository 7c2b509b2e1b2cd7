// Fault behaviour of the `clickhouse` sink against a real ClickHouse 18.16 (spec/clickhouse-schema.md
// "Writing"; research/scale-out.md §5): the server stops mid-stream, the sink closes while the server
// is down, the engine is killed with SIGKILL, the server rejects a batch as malformed.
//
// Exactly-once here rests on the spool: a batch is spooled only when its insert failed, and replayed
// until acknowledged. 18.16's plain MergeTree cannot deduplicate, so a response lost after a commit
// would duplicate a batch (documented in sinks/clickhouse/README.md); the server is stopped with
// SIGTERM, which lets running inserts answer, so these counts must be exact.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { AnalyticsEvent } from '../../core/event.ts'
import { makeEvent } from '../../core/testing.ts'
import clickhouse from '../../sinks/clickhouse/index.ts'
import {
  finalSessions,
  realisticEvents,
  removeScratch,
  scratchServices,
  setupSink,
  sinkOptions,
  until,
} from './fixtures.ts'
import { type ClickHouseServer, clickhouseBinary, freePort, startClickHouse, warnIfNoClickHouse } from './harness.ts'

warnIfNoClickHouse()

const sessionRows = (events: AnalyticsEvent[]) => events.reduce((n, e) => n + e.sessionRows.length, 0)

describe.skipIf(!clickhouseBinary)('clickhouse sink faults (ClickHouse 18.16)', () => {
  let ch: ClickHouseServer

  beforeAll(async () => {
    ch = (await startClickHouse())!
  }, 30_000)
  afterAll(async () => {
    await ch?.destroy()
    removeScratch()
  })

  async function migrated(database: string, extra: Record<string, unknown> = {}) {
    const options = { url: ch.url, database, batchRows: 200, flushIntervalMs: 30, retryMaxMs: 200, ...extra }
    await clickhouse.migrate!(sinkOptions(clickhouse, options), scratchServices())
    return options
  }

  /**
   * Events: rows and distinct rows (every test event has its own pathname). Sessions: merges collapse
   * -1/+1 pairs at any time, so count what merges keep: sum(sign) is one per session and
   * sum(sign * events) the events of their last states; a duplicated or lost pair changes the latter.
   */
  async function counts(database: string) {
    const [row] = await ch.rows<Record<string, string>>(
      `SELECT
         (SELECT count() FROM ${database}.events_v2) AS events,
         (SELECT uniqExact(pathname) FROM ${database}.events_v2) AS distinct_events,
         (SELECT sum(sign) FROM ${database}.sessions_v2) AS sessions,
         (SELECT sum(sign * events) FROM ${database}.sessions_v2) AS session_events,
         (SELECT count() FROM ${database}.sessions_v2 FINAL) AS final_sessions`,
    )
    return {
      events: Number(row?.events),
      distinctEvents: Number(row?.distinct_events),
      sessions: Number(row?.sessions),
      sessionEvents: Number(row?.session_events),
      finalSessions: Number(row?.final_sessions),
    }
  }

  /** What `counts` must say for these events written exactly once. */
  function expected(events: AnalyticsEvent[]) {
    const last = finalSessions(events)
    const sessionEvents = last.reduce((n, s) => n + s.events, 0)
    return {
      events: events.length,
      distinctEvents: events.length,
      sessions: last.length,
      sessionEvents,
      finalSessions: last.length,
    }
  }

  test('server stopped mid-stream, writes go on, server back: every row exactly once', async () => {
    const options = await migrated('midstream')
    const { sink, stats } = await setupSink(clickhouse, options)
    const events = realisticEvents(3000)
    let stopping: Promise<void> | undefined
    for (let i = 0; i < events.length; i += 50) {
      for (const e of events.slice(i, i + 50)) sink.write(e)
      if (i === 1000) stopping = ch.stop()
      if (i === 2000) {
        await stopping
        expect(ch.running).toBe(false)
      }
      await Bun.sleep(5)
    }
    await sink.flush()
    await until(() => sink.health().spoolBytes! > 0, 10_000, 'spooling')
    expect(sink.health().state).toBe('degraded')
    expect(sink.health().detail).toContain('rows spooled')
    await ch.start()
    const total = events.length + sessionRows(events)
    await until(() => stats.rowsWritten === total && sink.health().state === 'ok', 20_000, 'replay')
    expect(sink.health()).toMatchObject({ state: 'ok', queuedRows: 0, spoolBytes: 0 })
    expect(stats.retries).toBeGreaterThan(0)
    expect(stats.rowsFailed).toBe(0)
    await sink.close()
    expect(await counts('midstream')).toEqual(expected(events))
  }, 60_000)

  test('close() while the server is down spools; a new instance after the restart replays it', async () => {
    const options = await migrated('closedown')
    const services = scratchServices()
    await ch.kill()
    const first = await setupSink(clickhouse, options, services)
    const events = realisticEvents(500, 1)
    for (const e of events) first.sink.write(e)
    await first.sink.close()
    expect(first.stats.rowsWritten).toBe(0)
    expect(first.stats.rowsFailed).toBe(0)
    expect(first.sink.health().spoolBytes).toBeGreaterThan(0)

    await ch.start()
    const second = await setupSink(clickhouse, options, services)
    const total = events.length + sessionRows(events)
    await until(() => second.stats.rowsWritten === total, 20_000, 'replay')
    await second.sink.close()
    expect(second.sink.health().spoolBytes).toBe(0)
    expect(await counts('closedown')).toEqual(expected(events))
  }, 60_000)

  test('after a SIGKILL of the engine, the next start replays its spool', async () => {
    const options = await migrated('killed')
    const services = scratchServices()
    const spoolDir = join(services.stateDir, 'spool-killed')
    const child = Bun.spawn(
      [process.execPath, join(import.meta.dir, 'spool-writer.ts'), spoolDir, String(await freePort()), '300'],
      { stdout: 'pipe', stderr: 'inherit' },
    )
    const reader = child.stdout.getReader()
    let said = ''
    while (!said.includes('\n')) {
      const { value, done } = await reader.read()
      if (done) break
      said += new TextDecoder().decode(value)
    }
    expect(said).toStartWith('spooled')
    child.kill('SIGKILL')
    await child.exited

    const { sink, stats } = await setupSink(clickhouse, { ...options, spoolDir }, services)
    const events = realisticEvents(300, 7)
    const total = events.length + sessionRows(events)
    await until(() => stats.rowsWritten === total, 20_000, 'replay')
    await sink.close()
    expect(await counts('killed')).toEqual(expected(events))
  }, 60_000)

  test('a batch the server rejects as malformed lands in the dead-letter file, and the rest flows', async () => {
    const services = scratchServices()
    const deadLetterFile = join(services.stateDir, 'dead.ndjson')
    const options = await migrated('malformed', { batchRows: 10_000, deadLetterFile })
    const { sink, stats } = await setupSink(clickhouse, options, services)
    const good = realisticEvents(30, 2)
    for (const e of good.slice(0, 10)) sink.write(e)
    await sink.flush()
    // A three-letter country does not fit FixedString(2): the server refuses the whole batch.
    sink.write(
      makeEvent({ timestamp: 1_767_323_045, name: 'pageview', site_id: 1, country_code: 'DEU', pathname: '/bad' }),
    )
    await sink.flush()
    for (const e of good.slice(10)) sink.write(e)
    await sink.flush()
    await until(() => stats.rowsWritten === 30 + sessionRows(good), 10_000, 'delivery')
    await sink.close()
    expect(stats.deadLetters).toBe(1)
    expect(stats.rowsFailed).toBe(1)
    const lines = readFileSync(deadLetterFile, 'utf8').trim().split('\n')
    expect(lines.length).toBe(1)
    const dead = JSON.parse(lines[0]!)
    expect(dead).toMatchObject({ table: 'events_v2', rows: 1 })
    expect(dead.error).toMatch(/^Code: \d+/)
    expect(JSON.parse(dead.payload)).toMatchObject({ country_code: 'DEU', pathname: '/bad' })
    expect((await counts('malformed')).events).toBe(30)
  }, 30_000)
})
