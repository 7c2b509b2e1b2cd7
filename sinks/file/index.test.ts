// The `file` sink (issue #12 §5): events POSTed over real HTTP become NDJSON files whose lines equal the
// memory sink's rows, rotated by size and by age, published complete by rename; Parquet files read
// back by the embedded engine (chdb) give the same rows column by column, with the schema's types; a
// staging file left by a killed process is published (complete lines only) at the next start.

import { afterAll, describe, expect, test } from 'bun:test'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { AnalyticsEvent } from '../../core/event.ts'
import type { JsonRow } from '../../core/rows.ts'
import { startTestEngine, TEST_UA, testServices } from '../../core/testing.ts'
import {
  expectedEventRow,
  expectedSessionRow,
  normalizeRead,
  realisticEvents,
  selectList,
  setupSink,
  until,
} from '../../test/clickhouse/fixtures.ts'
import { acquireChdb } from '../chdb/protocol.ts'
import { EVENT_COLUMNS, literal, SESSION_COLUMNS } from '../clickhouse/schema.ts'
import file, { createFileSink } from './index.ts'

const root = resolve(import.meta.dir, '../..')
const scratch = mkdtempSync(join(tmpdir(), 'file-sink-test-'))
const chdbPath = join(scratch, 'chdb')
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const PLUGINS = ['plausible', 'client-ip', 'user-agent', 'user-id', 'bots', 'props', 'sessions']

/** Every file under `dir`, relative, sorted. */
function filesIn(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).filter((f) => statSync(join(dir, f)).isFile()).sort()
}

function linesOf(dir: string, files: string[]): JsonRow[] {
  return files.flatMap((f) => {
    const text = readFileSync(join(dir, f), 'utf8')
    // A published file is complete: it ends with a newline, and every line is a row.
    expect(text.endsWith('\n')).toBe(true)
    return text
      .slice(0, -1)
      .split('\n')
      .map((line) => JSON.parse(line) as JsonRow)
  })
}

const byJson = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).sort()

async function engineWith(options: Record<string, unknown>) {
  const folder = mkdtempSync(join(scratch, 'out-'))
  const t = await startTestEngine(
    {
      server: { port: 0, host: '127.0.0.1' },
      sites: [{ id: 1, domain: 'example.com' }],
      plugins: PLUGINS,
      sinks: [{ file: { folder, ...options } }],
    },
    root,
  )
  const { port } = await t.engine.listen()
  return { t, folder, base: `http://127.0.0.1:${port}` }
}

/** Plausible events over HTTP: three per visitor (so sessions get -1/+1 rows), a unique prop each. */
async function send(base: string, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    const visitor = Math.floor(i / 3)
    const res = await fetch(`${base}/api/event`, {
      method: 'POST',
      headers: {
        'content-type': 'text/plain',
        'user-agent': TEST_UA,
        'x-forwarded-for': `2001:db8::${visitor.toString(16)}`,
      },
      body: JSON.stringify({
        n: i % 3 === 2 ? 'Signup' : 'pageview',
        u: `https://example.com/page/${i}?utm_source=news`,
        d: 'example.com',
        r: 'https://news.ycombinator.com/item',
        p: { seq: String(i), quote: 'a "b" \\ c ✓' },
      }),
    })
    expect(res.status).toBe(202)
  }
}

describe('file sink, NDJSON', () => {
  test('rotation by size: several complete files whose lines are the memory sink rows', async () => {
    const { t, folder, base } = await engineWith({ rotateBytes: 4096, flushIntervalMs: 20 })
    await send(base, 0, 30)
    // The first burst's rows (about 27 KB) rotate the events file once flushed. Waiting for that, not
    // for a fixed time: a flush whose fdatasync is slow on a busy disk once let both bursts into one file.
    await until(
      () => filesIn(folder).some((f) => f.startsWith('events_v2/') && !f.endsWith('.partial')),
      5000,
      'a rotated events file',
    )
    await send(base, 30, 60)
    // While the engine runs, what is published is complete; the file being written is .partial.
    const running = filesIn(folder).filter((f) => !f.endsWith('.partial'))
    linesOf(folder, running)
    await t.close()
    const files = filesIn(folder)
    expect(files.some((f) => f.endsWith('.partial'))).toBe(false)
    const events = files.filter((f) => f.startsWith('events_v2/'))
    const sessions = files.filter((f) => f.startsWith('sessions_v2/'))
    // The second burst went to a file opened after the first one was rotated.
    expect(events.length).toBeGreaterThanOrEqual(2)
    for (const f of [...events, ...sessions])
      expect(f).toMatch(/^(events|sessions)_v2\/\d{4}-\d\d-\d\d\/\1_v2-\d{8}T\d{6}Z(-\d+)?\.ndjson$/)
    // Rotation is checked at each flush: only the file open at shutdown may hold less than rotateBytes.
    const small = events.filter((f) => statSync(join(folder, f)).size < 4096)
    expect(small.length).toBeLessThanOrEqual(1)
    expect(byJson(linesOf(folder, events))).toEqual(byJson(t.events()))
    expect(byJson(linesOf(folder, sessions))).toEqual(byJson(t.sessions()))
    expect(t.events().length).toBe(60)
    expect(t.sessions().length).toBe(20 + 2 * 40)
  }, 30_000)

  test('rotation by age publishes a file while the engine runs; shutdown publishes the rest', async () => {
    const { t, folder, base } = await engineWith({ rotateSeconds: 1, flushIntervalMs: 20, tables: ['events_v2'] })
    await send(base, 0, 5)
    await until(() => filesIn(folder).some((f) => f.endsWith('.ndjson')), 5000, 'the age rotation')
    const first = filesIn(folder).filter((f) => f.endsWith('.ndjson'))
    expect(first.length).toBe(1)
    expect(linesOf(folder, first).length).toBe(5)
    await send(base, 5, 8)
    await t.close()
    const files = filesIn(folder)
    expect(files.length).toBe(2)
    expect(files.every((f) => f.startsWith('events_v2/'))).toBe(true)
    expect(byJson(linesOf(folder, files))).toEqual(byJson(t.events()))
  }, 30_000)

  test('a staging file left by a killed process is published at start, cut after its last complete line', async () => {
    const folder = mkdtempSync(join(scratch, 'left-'))
    mkdirSync(join(folder, 'events_v2'))
    writeFileSync(join(folder, 'events_v2', 'old.ndjson.partial'), '{"name":"a"}\n{"name":"b"}\n{"name":"tor')
    writeFileSync(join(folder, 'events_v2', 'empty.ndjson.partial'), '{"na')
    const { sink } = await setupSink(file, { folder, tables: ['events_v2'] }, testServices({ stateDir: scratch }))
    await sink.close()
    expect(filesIn(folder)).toEqual(['events_v2/old.ndjson'])
    expect(readFileSync(join(folder, 'events_v2', 'old.ndjson'), 'utf8')).toBe('{"name":"a"}\n{"name":"b"}\n')
  })

  test('a bad pattern is a config error with its path', async () => {
    for (const [pattern, message] of [
      ['{table}/{minute}', 'unknown placeholder {minute}'],
      ['../{table}', 'relative path inside folder'],
      ['{date}/x', 'must contain {table}'],
    ] as const) {
      const error = await startTestEngine(
        { plugins: PLUGINS, sinks: [{ file: { pattern } }], stateDir: mkdtempSync(join(scratch, 'err-')) },
        root,
      ).then(
        () => undefined,
        (e: Error) => e,
      )
      expect(String(error)).toContain('sinks[0].file.pattern')
      expect(String(error)).toContain(message)
    }
  })
})

describe('file sink, Parquet', () => {
  const select = async (sql: string) => {
    const { worker, release } = acquireChdb(chdbPath, 'chdb')
    try {
      await worker.open()
      return (await worker.call({ op: 'select', sql })) as Record<string, unknown>[]
    } finally {
      await release()
    }
  }
  const order = (rows: Record<string, unknown>[]) => byJson(rows).map((r) => JSON.parse(r) as Record<string, unknown>)

  test('rows over HTTP read back from the Parquet files by chdb equal the memory sink rows, with the schema types', async () => {
    const { t, folder, base } = await engineWith({ format: 'parquet', chdbPath, flushIntervalMs: 20 })
    await send(base, 0, 30)
    await t.close()
    const files = filesIn(folder)
    expect(files.length).toBe(2)
    expect(files.every((f) => f.endsWith('.parquet'))).toBe(true)
    const events = join(folder, files.find((f) => f.startsWith('events_v2/'))!)
    const sessions = join(folder, files.find((f) => f.startsWith('sessions_v2/'))!)
    const types = Object.fromEntries(
      (await select(`DESCRIBE file(${literal(events)}, Parquet)`)).map((r) => [r.name, r.type]),
    )
    expect(types).toMatchObject({
      site_id: 'UInt64',
      user_id: 'UInt64',
      country_code: 'FixedString(2)',
      'meta.key': 'Array(String)',
      city_geoname_id: 'UInt32',
      scroll_depth: 'UInt8',
      revenue_reporting_amount: 'Nullable(Decimal(18, 3))',
    })
    expect(String(types.timestamp)).toMatch(/^DateTime/)
    const readEvents = normalizeRead(
      await select(`SELECT ${selectList(EVENT_COLUMNS)} FROM file(${literal(events)}, Parquet)`),
    )
    const memoryEvents = t.events().map(asRead)
    expect(order(readEvents)).toEqual(order(memoryEvents))
    const readSessions = await select(`SELECT ${selectList(SESSION_COLUMNS)} FROM file(${literal(sessions)}, Parquet)`)
    expect(order(readSessions)).toEqual(order(t.sessions().map(asRead)))
    expect(readEvents.length).toBe(30)
  }, 60_000)

  test('edge values (UInt64 > 2^63, NUL codes, decimals, escapes, arrays) survive column by column', async () => {
    const folder = mkdtempSync(join(scratch, 'edge-'))
    const { sink, stats } = await setupSink(
      file,
      { folder, format: 'parquet', chdbPath, flushIntervalMs: 20 },
      testServices({ stateDir: scratch }),
    )
    const events: AnalyticsEvent[] = realisticEvents(300)
    for (const e of events) sink.write(e)
    await sink.close()
    expect(sink.health().state).toBe('ok')
    const sessionRows = events.flatMap((e) => e.sessionRows)
    expect(stats.rowsWritten).toBe(events.length + sessionRows.length)
    const files = filesIn(folder)
    const path = (table: string) => literal(join(folder, files.find((f) => f.startsWith(table))!))
    const readEvents = normalizeRead(
      await select(`SELECT ${selectList(EVENT_COLUMNS)} FROM file(${path('events_v2')}, Parquet)`),
    )
    expect(order(readEvents)).toEqual(order(events.map(expectedEventRow)))
    const readSessions = await select(
      `SELECT ${selectList(SESSION_COLUMNS)} FROM file(${path('sessions_v2')}, Parquet)`,
    )
    expect(order(readSessions)).toEqual(order(sessionRows.map(expectedSessionRow)))
  }, 60_000)

  test('when chdb cannot load, rows stay in the NDJSON staging file, health says so, and the next start converts them', async () => {
    const folder = mkdtempSync(join(scratch, 'broken-'))
    const options = { folder, format: 'parquet', chdbPath, flushIntervalMs: 20, tables: ['events_v2'] }
    const broken = createFileSink('chdb-that-is-not-installed')
    const first = await setupSink(broken, options, testServices({ stateDir: scratch }))
    const events = realisticEvents(30, 7)
    for (const e of events) first.sink.write(e)
    await first.sink.close()
    expect(first.sink.health().state).toBe('degraded')
    expect(first.sink.health().detail).toContain('Parquet conversion failed')
    const staged = filesIn(folder)
    expect(staged.length).toBe(1)
    expect(staged[0]).toEndWith('.parquet.partial')
    expect(readFileSync(join(folder, staged[0]!), 'utf8').trim().split('\n').length).toBe(30)

    const second = await setupSink(file, options, testServices({ stateDir: scratch }))
    await second.sink.close()
    const files = filesIn(folder)
    expect(files).toEqual([staged[0]!.slice(0, -'.partial'.length)])
    const read = normalizeRead(
      await select(`SELECT ${selectList(EVENT_COLUMNS)} FROM file(${literal(join(folder, files[0]!))}, Parquet)`),
    )
    expect(order(read)).toEqual(order(events.map(expectedEventRow)))
  }, 60_000)
})

/** A memory sink row as `selectList` reads it back: epoch seconds, thousandths. */
function asRead(row: JsonRow): Record<string, unknown> {
  const out: Record<string, unknown> = { ...row }
  for (const key of ['timestamp', 'start']) {
    if (typeof out[key] === 'string') out[key] = Date.parse(`${(out[key] as string).replace(' ', 'T')}Z`) / 1000
  }
  for (const key of ['revenue_reporting_amount', 'revenue_source_amount']) {
    const value = out[key]
    if (typeof value === 'string') {
      const [whole = '0', fraction = ''] = value.replace('-', '').split('.')
      const n = BigInt(whole) * 1000n + BigInt(fraction.padEnd(3, '0'))
      out[key] = String(value.startsWith('-') ? -n : n)
    }
  }
  return out
}
