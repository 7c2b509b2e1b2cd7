// JSON lines written as bytes (core/row-lines.ts) must be the very text of JSON.stringify on the row
// objects of core/rows.ts: the same keys in the same order, the same escapes, UTF-8.

import { describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import type { SessionRow } from '../../core/event.ts'
import { JsonLines } from '../../core/row-lines.ts'
import { eventRow, sessionRow } from '../../core/rows.ts'
import { makeEvent } from '../../core/testing.ts'

const OPEN = new TextEncoder().encode('{')
const decoder = new TextDecoder()

function lines(write: (lines: JsonLines) => void): string {
  const out = new JsonLines(16)
  write(out)
  return decoder.decode(out.take().bytes)
}

/** Every kind of character JSON.stringify treats apart: controls, quote, backslash, surrogates, non-ASCII. */
const HOSTILE = [
  '',
  'plain',
  'a"b\\c',
  '\u0000\u0001\u0008\t\n\u000b\f\r\u001f\u007f',
  'é ü ß 中文 \u2028\u2029',
  '😀 pair',
  'lone \ud800 high',
  'lone \udc00 low',
  'reversed \udc00\ud800',
  'end \ud83d',
  '</script>',
]

const session: SessionRow = {
  session_id: 18446744073709551615n,
  sign: -1,
  site_id: 3,
  user_id: 9007199254740993n,
  hostname: 'example.com',
  timestamp: 1_700_000_123,
  start: 1_700_000_000,
  is_bounce: 0,
  entry_page: '/',
  exit_page: '/x',
  exit_page_hostname: 'example.com',
  pageviews: 2,
  events: 3,
  duration: 123,
  referrer: 'news.example',
  referrer_source: 'News',
  click_id_param: '',
  utm_medium: 'm',
  utm_source: 's',
  utm_campaign: 'c',
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
  entry_meta_key: ['a', 'b'],
  entry_meta_value: ['1', '2'],
  transferred_from: '',
  acquisition_channel: 'Direct',
}

describe('events_v2 lines', () => {
  test('a default event, unknowns as NUL bytes and null amounts', () => {
    const event = makeEvent({ timestamp: 1_700_000_000 })
    expect(lines((l) => l.event(event, OPEN))).toBe(`${JSON.stringify(eventRow(event))}\n`)
  })

  test('a filled event, props sorted by their bytes, amounts and currencies set', () => {
    const event = makeEvent({
      timestamp: 1_700_000_000,
      name: 'Purchase',
      site_id: 42,
      user_id: 18446744073709551615n,
      session_id: 1n,
      hostname: 'shop.example',
      pathname: '/cart',
      country_code: 'DE',
      city_geoname_id: 2950159,
      revenue_source_amount: '12.5',
      revenue_source_currency: 'EUR',
      revenue_reporting_amount: '13.125',
      revenue_reporting_currency: 'USD',
      scroll_depth: 255,
      engagement_time: 1234,
      props: { b: '2', a: '1', É: 'x', Z: 'y', '😀': 'z' },
    })
    expect(lines((l) => l.event(event, OPEN))).toBe(`${JSON.stringify(eventRow(event))}\n`)
  })

  test.each(HOSTILE)('every string column escaped as JSON.stringify does: %j', (text) => {
    const event = makeEvent({ timestamp: 1_700_000_000 })
    for (const [key, value] of Object.entries(event))
      if (typeof value === 'string') Object.assign(event, { [key]: text })
    event.props = { [text]: text, [`${text}2`]: '' }
    expect(lines((l) => l.event(event, OPEN))).toBe(`${JSON.stringify(eventRow(event))}\n`)
  })

  test('arbitrary strings and numbers', () => {
    fc.assert(
      fc.property(
        fc.record({
          name: fc.string({ unit: 'binary' }),
          pathname: fc.string({ unit: 'grapheme' }),
          referrer: fc.string({ unit: 'binary-ascii' }),
          hostname: fc.string(),
          country_code: fc.constantFrom('', 'DE', 'US'),
          scroll_depth: fc.integer({ min: 0, max: 255 }),
          engagement_time: fc.integer({ min: 0, max: 2 ** 31 }),
          city_geoname_id: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
          user_id: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
          props: fc.dictionary(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' })),
        }),
        (fields) => {
          const event = makeEvent({ timestamp: 1_700_000_000, ...fields })
          expect(lines((l) => l.event(event, OPEN))).toBe(`${JSON.stringify(eventRow(event))}\n`)
        },
      ),
      { numRuns: 300 },
    )
  })

  test('UInt64 ids as their decimal text, at every limb and digit boundary', () => {
    const edges = [0n, 1n, 9n, 10n, 9999n, 10000n, 65535n, 65536n, 99_999_999n, 100_000_000n]
    for (let bits = 16n; bits <= 64n; bits += 16n) edges.push(2n ** bits - 1n, 2n ** bits - 2n)
    for (let digits = 1n; digits <= 19n; digits++) edges.push(10n ** digits - 1n, 10n ** digits, 10n ** digits + 1n)
    edges.push(2n ** 53n + 1n, 2n ** 63n)
    const ids = [...edges, ...fc.sample(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), 2000)]
    for (let i = 0; i < ids.length; i++) {
      const user_id = ids[i]!
      const session_id = ids[(i * 7 + 3) % ids.length]!
      const event = makeEvent({ timestamp: 1_700_000_000, user_id, session_id })
      const row = JSON.parse(lines((l) => l.event(event, OPEN)))
      expect([row.user_id, row.session_id]).toEqual([user_id.toString(), session_id.toString()])
    }
  })
})

/** Any number a row may carry, written as JSON.stringify writes it: integers of every size, fractions, -0, NaN. */
const anyNumber = fc.oneof(
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
  fc.integer({ min: -10, max: 10 }),
  fc.constantFrom(-0, 2 ** 31 - 1, -(2 ** 31) - 1, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY),
  fc.double(),
)
/** Seconds within Date's range, whole ones (the usual case, across many days) and fractions. */
const anyTime = fc.oneof(
  fc.integer({ min: -8_640_000_000_000, max: 8_640_000_000_000 }),
  fc.integer({ min: 1_699_999_000, max: 1_700_200_000 }),
  fc.double({ min: -8_640_000_000_000, max: 8_640_000_000_000, noNaN: true }),
)

test('numbers and date-times written digit by digit are the text of JSON.stringify', () => {
  fc.assert(
    fc.property(
      fc.record({
        timestamp: anyTime,
        site_id: anyNumber,
        scroll_depth: anyNumber,
        engagement_time: anyNumber,
        city_geoname_id: anyNumber,
      }),
      fc.record({
        sign: fc.constantFrom(1, -1),
        site_id: anyNumber,
        timestamp: anyTime,
        start: anyTime,
        is_bounce: anyNumber,
        pageviews: anyNumber,
        events: anyNumber,
        duration: anyNumber,
        city_geoname_id: anyNumber,
      }),
      (eventFields, sessionFields) => {
        const event = makeEvent(eventFields)
        const row = { ...session, ...sessionFields } as SessionRow
        // The same writer for both rows and in turn, as the sink has it: nothing of one row carries over wrong.
        const out = new JsonLines(16)
        out.event(event, OPEN)
        out.session(row, OPEN)
        out.event(event, OPEN)
        const event_ = `${JSON.stringify(eventRow(event))}\n`
        expect(decoder.decode(out.take().bytes)).toBe(`${event_}${JSON.stringify(sessionRow(row))}\n${event_}`)
      },
    ),
    { numRuns: 500 },
  )
})

describe('sessions_v2 lines', () => {
  test('a session row with entry props', () => {
    expect(lines((l) => l.session(session, OPEN))).toBe(`${JSON.stringify(sessionRow(session))}\n`)
  })

  test.each(HOSTILE)('every string column escaped as JSON.stringify does: %j', (text) => {
    const row = { ...session }
    for (const [key, value] of Object.entries(row)) if (typeof value === 'string') Object.assign(row, { [key]: text })
    row.entry_meta_key = [text, 'k']
    row.entry_meta_value = ['v', text]
    expect(lines((l) => l.session(row, OPEN))).toBe(`${JSON.stringify(sessionRow(row))}\n`)
  })
})

describe('consecutive session rows (a -1 row and its +1 share the attribution columns)', () => {
  const update = (sign: 1 | -1, changes: Partial<SessionRow> = {}): SessionRow => ({
    ...session,
    sign,
    entry_meta_key: [...session.entry_meta_key],
    entry_meta_value: [...session.entry_meta_value],
    ...changes,
  })
  const expected = (rows: SessionRow[]) => rows.map((r) => `${JSON.stringify(sessionRow(r))}\n`).join('')

  test('a pair of an update, and rows whose attribution differs in one column, each as JSON.stringify', () => {
    // Each row after the second differs from the one before it in one attribution column.
    const changes: Partial<SessionRow>[] = [
      { referrer: 'other.example' },
      { city_geoname_id: 2_950_159 },
      { entry_meta_value: ['v', 'changed'] },
      { entry_meta_key: [], entry_meta_value: [] },
      { acquisition_channel: 'Direct' },
      { transferred_from: 'x' },
    ]
    const rows = [
      update(-1),
      update(1, { timestamp: 1_700_000_500, exit_page: '/much/longer/exit/page', pageviews: 3, duration: 500 }),
    ]
    for (const change of changes) rows.push({ ...rows[rows.length - 1]!, ...change })
    rows.push({ ...rows[rows.length - 1]!, entry_meta_key: [], entry_meta_value: [] })
    expect(
      lines((l) => {
        for (const r of rows) l.session(r, OPEN)
      }),
    ).toBe(expected(rows))
  })

  test('the second row of a pair after a take, after the buffer grew, and after a row that threw', () => {
    const out = new JsonLines(16)
    const open = new TextEncoder().encode('{"_table":"sessions_v2",')
    const prefixed = (r: SessionRow) => `{"_table":"sessions_v2",${JSON.stringify(sessionRow(r)).slice(1)}\n`
    out.session(update(-1), open)
    const first = out.take()
    const firstText = decoder.decode(first.bytes)
    out.recycle(first.bytes)
    // The recycled buffer is written over from its start: nothing may be copied from the taken one.
    out.event(makeEvent({ name: 'x'.repeat(2000) }), OPEN)
    out.session(update(1, { exit_page: '/y'.repeat(3000) }), open)
    expect(() => out.session(update(1, { start: Number.POSITIVE_INFINITY }), open)).toThrow(RangeError)
    out.session(update(-1, { exit_page: '/z' }), open)
    const text = decoder.decode(out.take().bytes).split('\n').slice(1).join('\n')
    expect(firstText).toBe(prefixed(update(-1)))
    expect(text).toBe(prefixed(update(1, { exit_page: '/y'.repeat(3000) })) + prefixed(update(-1, { exit_page: '/z' })))
  })

  test('any sequence of rows from few values, with takes between, is the text of JSON.stringify', () => {
    const pick = <T>(values: readonly T[]) => fc.constantFrom(...values)
    const row = fc.record({
      sign: pick([1, -1] as const),
      timestamp: fc.integer({ min: 1_700_000_000, max: 1_700_100_000 }),
      exit_page: pick(['/', '/a', '/é/b']),
      referrer: pick(['', 'news.example', 'a"b']),
      utm_source: pick(['', 's']),
      country_code: pick(['', 'DE']),
      city_geoname_id: pick([0, 2_950_159]),
      browser: pick(['', 'Firefox', '中文']),
      entry_meta_key: pick([[], ['k'], ['k', 'l']]),
      acquisition_channel: pick(['', 'Direct']),
      take: fc.boolean(),
    })
    fc.assert(
      fc.property(fc.array(row, { maxLength: 30 }), (specs) => {
        const out = new JsonLines(16)
        let text = ''
        const rows: SessionRow[] = []
        for (const { take, ...changes } of specs) {
          const r = update(changes.sign, { ...changes, entry_meta_value: changes.entry_meta_key.map((k) => `v-${k}`) })
          out.session(r, OPEN)
          rows.push(r)
          if (take) {
            const taken = out.take()
            text += decoder.decode(taken.bytes)
            out.recycle(taken.bytes)
          }
        }
        text += decoder.decode(out.take().bytes)
        expect(text).toBe(expected(rows))
      }),
    )
  })
})

describe('the buffer', () => {
  test('grows past its first size, and take hands over whole lines with their ends', () => {
    const out = new JsonLines(16)
    const open = new TextEncoder().encode('{"_table":"events_v2",')
    const expected: string[] = []
    for (let i = 0; i < 200; i++) {
      const event = makeEvent({ timestamp: 1_700_000_000 + i, name: `e${i}`, pathname: '/ü'.repeat(i) })
      out.event(event, open)
      expected.push(`{"_table":"events_v2",${JSON.stringify(eventRow(event)).slice(1)}\n`)
    }
    expect(out.lines).toBe(200)
    const { bytes, ends } = out.take()
    expect(out.lines).toBe(0)
    expect(ends).toHaveLength(200)
    expect(ends[199]).toBe(bytes.length)
    expect(decoder.decode(bytes)).toBe(expected.join(''))
    expect(decoder.decode(bytes.subarray(ends[9], ends[10]))).toBe(expected[10]!)
  })

  test('a recycled buffer is written over only after it was given back', () => {
    const out = new JsonLines(1 << 12)
    out.event(makeEvent({ name: 'first' }), OPEN)
    const first = out.take()
    const kept = decoder.decode(first.bytes)
    out.event(makeEvent({ name: 'second' }), OPEN)
    expect(decoder.decode(first.bytes)).toBe(kept)
    const second = out.take()
    out.recycle(first.bytes)
    out.event(makeEvent({ name: 'third' }), OPEN)
    expect(decoder.decode(second.bytes)).toContain('"name":"second"')
    expect(decoder.decode(out.take().bytes)).toContain('"name":"third"')
  })
})

test('a row that throws leaves nothing behind, and the next row is whole', () => {
  const out = new JsonLines(16)
  out.event(makeEvent({ name: 'before', timestamp: 1_700_000_000 }), OPEN)
  expect(() => out.event(makeEvent({ name: 'broken', timestamp: Number.NaN }), OPEN)).toThrow(RangeError)
  expect(() => out.session({ ...session, start: Number.POSITIVE_INFINITY }, OPEN)).toThrow(RangeError)
  expect(() => JSON.stringify(eventRow(makeEvent({ timestamp: Number.NaN })))).toThrow(RangeError)
  out.event(makeEvent({ name: 'after', timestamp: 1_700_000_000 }), OPEN)
  const { bytes, ends } = out.take()
  expect(ends).toHaveLength(2)
  const text = decoder.decode(bytes)
  expect(
    text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l).name),
  ).toEqual(['before', 'after'])
})

test('rows far larger than the buffer: long strings, many props, a long opening', () => {
  const out = new JsonLines(16)
  const open = new TextEncoder().encode(`{"_table":"${'x'.repeat(10_000)}",`)
  const props: Record<string, string> = {}
  for (let i = 0; i < 2000; i++) props[String(i).padStart(5, '0')] = i % 2 ? '' : '\u0000"é'
  const event = makeEvent({ timestamp: 1_700_000_000, pathname: '/\u0001😀'.repeat(30_000), props })
  out.event(event, open)
  out.session({ ...session, entry_meta_key: Object.keys(props), entry_meta_value: Object.values(props) }, open)
  const lines = decoder.decode(out.take().bytes).split('\n')
  const prefix = `{"_table":"${'x'.repeat(10_000)}",`
  expect(lines[0]).toBe(`${prefix}${JSON.stringify(eventRow(event)).slice(1)}`)
  const row = { ...session, entry_meta_key: Object.keys(props), entry_meta_value: Object.values(props) }
  expect(lines[1]).toBe(`${prefix}${JSON.stringify(sessionRow(row)).slice(1)}`)
})
