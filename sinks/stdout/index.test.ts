import { expect, test } from 'bun:test'
import type { SessionRow } from '../../core/event.ts'
import { SinkStats } from '../../core/sink.ts'
import { makeEvent } from '../../core/testing.ts'
import { createLineSink } from './index.ts'

function collector() {
  const chunks: string[] = []
  // The sink reuses a chunk's memory once written: decode it now.
  const decoder = new TextDecoder()
  return { chunks, writer: { write: async (chunk: Uint8Array) => void chunks.push(decoder.decode(chunk)) } }
}

const session: SessionRow = {
  session_id: 18446744073709551615n,
  sign: 1,
  site_id: 3,
  user_id: 9007199254740993n,
  hostname: 'example.com',
  timestamp: 1_700_000_000,
  start: 1_700_000_000,
  is_bounce: 1,
  entry_page: '/',
  exit_page: '/',
  exit_page_hostname: 'example.com',
  pageviews: 1,
  events: 1,
  duration: 0,
  referrer: '',
  referrer_source: '',
  click_id_param: '',
  utm_medium: '',
  utm_source: '',
  utm_campaign: '',
  utm_content: '',
  utm_term: '',
  country_code: '',
  subdivision1_code: '',
  subdivision2_code: '',
  city_geoname_id: 0,
  screen_size: 'Desktop',
  operating_system: 'Mac',
  operating_system_version: '10.15',
  browser: 'Chrome',
  browser_version: '120.0',
  entry_meta_key: [],
  entry_meta_value: [],
  transferred_from: '',
  acquisition_channel: 'Direct',
}

test('one JSON object per row per line, tagged with _table, UInt64 as decimal strings', async () => {
  const { chunks, writer } = collector()
  const stats = new SinkStats()
  const sink = createLineSink(
    { batchRows: 100, flushIntervalMs: 1000, tables: ['events_v2', 'sessions_v2'] },
    stats,
    writer,
  )
  const event = makeEvent({
    timestamp: 1_700_000_000,
    name: 'pageview',
    site_id: 3,
    user_id: 9007199254740993n,
    session_id: 18446744073709551615n,
    props: { b: '2', a: '1' },
    sessionRows: [session],
  })
  sink.write(event)
  expect(chunks).toHaveLength(0)
  await sink.close()
  const lines = chunks.join('').trimEnd().split('\n')
  expect(lines).toHaveLength(2)
  const [row, sessionLine] = lines.map((l) => JSON.parse(l))
  expect(Object.keys(row)[0]).toBe('_table')
  expect(row._table).toBe('events_v2')
  expect(row.timestamp).toBe('2023-11-14 22:13:20')
  expect(row.user_id).toBe('9007199254740993')
  expect(row.session_id).toBe('18446744073709551615')
  expect(row.site_id).toBe('3')
  expect(row.country_code).toBe('\u0000\u0000')
  expect(row['meta.key']).toEqual(['a', 'b'])
  expect(row['meta.value']).toEqual(['1', '2'])
  expect(row.revenue_source_amount).toBeNull()
  expect(sessionLine._table).toBe('sessions_v2')
  expect(sessionLine.sign).toBe(1)
  expect(sessionLine.user_id).toBe('9007199254740993')
  expect(stats.rowsWritten).toBe(2)
})

test('writes when batchRows rows are waiting, without waiting for the interval', async () => {
  const { chunks, writer } = collector()
  const sink = createLineSink({ batchRows: 3, flushIntervalMs: 60_000, tables: ['events_v2'] }, new SinkStats(), writer)
  for (let i = 0; i < 3; i++) sink.write(makeEvent({ name: `e${i}` }))
  await Bun.sleep(5)
  expect(chunks.join('').trimEnd().split('\n')).toHaveLength(3)
  await sink.close()
})

test('writes on the interval', async () => {
  const { chunks, writer } = collector()
  const sink = createLineSink({ batchRows: 1000, flushIntervalMs: 10, tables: ['events_v2'] }, new SinkStats(), writer)
  sink.write(makeEvent({ name: 'x' }))
  await Bun.sleep(40)
  expect(chunks).toHaveLength(1)
  await sink.close()
})

test('a failing writer marks the sink degraded and counts the rows as failed', async () => {
  const stats = new SinkStats()
  const sink = createLineSink({ batchRows: 1, flushIntervalMs: 10, tables: ['events_v2'] }, stats, {
    write: async () => {
      throw new Error('EPIPE')
    },
  })
  sink.write(makeEvent({ name: 'x' }))
  await sink.flush()
  expect(stats.rowsFailed).toBe(1)
  expect(sink.health().state).toBe('degraded')
})

test('a large batch goes out in several writes, every line once and in order, so one flush never holds the event loop long', async () => {
  const { chunks, writer } = collector()
  const stats = new SinkStats()
  const sink = createLineSink({ batchRows: 5000, flushIntervalMs: 1000, tables: ['events_v2'] }, stats, writer)
  for (let i = 0; i < 1200; i++) sink.write(makeEvent({ name: `e${i}` }))
  await sink.flush()
  expect(chunks.length).toBeGreaterThan(1)
  const names = chunks
    .join('')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as { name: string }).name)
  expect(names).toEqual(Array.from({ length: 1200 }, (_, i) => `e${i}`))
  expect(stats.rowsWritten).toBe(1200)
  expect(stats.rowsFailed).toBe(0)
})
