// Client timestamps of trusted senders (issue #12; docs/operators/senders-and-batches.md): what the
// `timestamp` field may hold, and the window it must fall in.

import { describe, expect, test } from 'bun:test'
import { RawNumber } from '../props/index.ts'
import { checkWindow, clientTimestampMs } from './timestamp.ts'

const T = Date.UTC(2026, 10, 22, 10, 15, 0)

describe('clientTimestampMs', () => {
  test.each([
    ['ISO-8601 in UTC', '2026-11-22T10:15:00Z', T],
    ['lower-case z and a space', '2026-11-22 10:15:00z', T],
    ['milliseconds', '2026-11-22T10:15:00.250Z', T + 250],
    ['nanoseconds, cut to milliseconds', '2026-11-22T10:15:00.123456789Z', T + 123],
    ['no seconds', '2026-11-22T10:15Z', T],
    ['an offset', '2026-11-22T11:15:00+01:00', T],
    ['an offset without colon', '2026-11-22T05:15:00-0500', T],
    ['epoch milliseconds', T, T],
    ['fractional milliseconds', T + 0.9, T],
    ['epoch milliseconds as text', String(T), T],
    ['a number kept with its text', new RawNumber(T, false, String(T)), T],
  ])('reads %s', (_, value, expected) => {
    expect(clientTimestampMs(value)).toBe(expected)
  })

  test.each([[undefined], [null], [false]])('%p counts as absent', (value) => {
    expect(clientTimestampMs(value)).toBeUndefined()
  })

  test.each([
    ['no zone', '2026-11-22T10:15:00'],
    ['a date only', '2026-11-22'],
    ['a day past the month', '2026-02-30T10:00:00Z'],
    ['hour 24', '2026-11-22T24:00:00Z'],
    ['a leap second', '2026-11-22T10:15:60Z'],
    ['a bad offset', '2026-11-22T10:15:00+25:00'],
    ['words', 'yesterday'],
    ['an empty string', ''],
    ['a negative number', -1],
    ['infinity', Number.POSITIVE_INFINITY],
    ['a boolean', true],
    ['an object', { at: T }],
    ['an array', [T]],
    ['too many digits', '1'.repeat(16)],
    ['before 1970', '1969-12-31T23:59:59Z'],
  ])('refuses %s', (_, value) => {
    expect(clientTimestampMs(value)).toBeNaN()
  })
})

describe('checkWindow', () => {
  const window = { maxAgeHours: 24, maxFutureSeconds: 0 }
  const now = Date.UTC(2026, 10, 22, 18, 0, 0, 500)

  test.each([
    ['now', now, undefined],
    ['later in the same second', now + 499, undefined],
    ['the next second', now + 500, 'timestamp_in_future'],
    ['24 hours ago', now - 24 * 3_600_000, undefined],
    ['24 hours and a second ago', now - 24 * 3_600_000 - 1000, 'timestamp_too_old'],
  ])('%s', (_, ms, verdict) => {
    expect(checkWindow(ms, now, window)).toBe(verdict as ReturnType<typeof checkWindow>)
  })

  test('maxFutureSeconds lets a skewed clock through', () => {
    expect(checkWindow(now + 5000, now, { maxAgeHours: 24, maxFutureSeconds: 5 })).toBeUndefined()
    expect(checkWindow(now + 6000, now, { maxAgeHours: 24, maxFutureSeconds: 5 })).toBe('timestamp_in_future')
  })

  test('nothing before yesterday 00:00 UTC, whatever maxAgeHours says', () => {
    const wide = { maxAgeHours: 48, maxFutureSeconds: 0 }
    const yesterday = Date.UTC(2026, 10, 21)
    expect(checkWindow(yesterday, now, wide)).toBeUndefined()
    expect(checkWindow(yesterday - 1, now, wide)).toBe('timestamp_too_old')
  })

  test('maxAgeHours 1 keeps only the last hour', () => {
    expect(checkWindow(now - 3_600_000, now, { maxAgeHours: 1, maxFutureSeconds: 0 })).toBeUndefined()
    expect(checkWindow(now - 3_601_000, now, { maxAgeHours: 1, maxFutureSeconds: 0 })).toBe('timestamp_too_old')
  })
})
