// `event_time` (spec/lynkow-dialect.md "Fields and aliases"): ISO-8601 text or epoch milliseconds,
// and the clamp that keeps a client's clock from placing events far in the future or the past.

// Date, then optionally a time with seconds and fraction, then optionally a zone. Anchored, no nested
// repetition: it cannot backtrack badly, and the input is capped at 40 characters before it runs.
const ISO =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?)?$/
const EPOCH_DIGITS = /^\d{1,16}$/
const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

/**
 * Milliseconds since the epoch for an ISO-8601 date or date-time, or NaN when the text is not one.
 * A date-time without a zone is read as UTC (the server's zone must not change the meaning); a date
 * alone is its midnight UTC. Fractions beyond milliseconds are cut.
 * @example parseIsoTime('2026-05-12T10:00:00+02:00') === Date.UTC(2026, 4, 12, 8)
 */
export function parseIsoTime(text: string): number {
  if (text.length > 40) return Number.NaN
  const m = ISO.exec(text)
  if (!m) return Number.NaN
  const year = Number(m[1])
  const month = Number(m[2])
  const day = Number(m[3])
  const hour = m[4] === undefined ? 0 : Number(m[4])
  const minute = m[5] === undefined ? 0 : Number(m[5])
  const second = m[6] === undefined ? 0 : Number(m[6])
  const millis = m[7] === undefined ? 0 : Number(m[7].slice(0, 3).padEnd(3, '0'))
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return Number.NaN
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0)
  if (day > (month === 2 && !leap ? 28 : DAYS_IN_MONTH[month - 1]!)) return Number.NaN
  let offsetMinutes = 0
  if (m[9] !== undefined) {
    const oh = Number(m[10])
    const om = m[11] === undefined ? 0 : Number(m[11])
    if (oh > 23 || om > 59) return Number.NaN
    offsetMinutes = (oh * 60 + om) * (m[9] === '-' ? -1 : 1)
  }
  let ms: number
  if (year >= 100) {
    ms = Date.UTC(year, month - 1, day, hour, minute, second, millis)
  } else {
    // Date.UTC maps the years 0..99 to 1900..1999; setUTCFullYear does not.
    const utc = new Date(0)
    utc.setUTCFullYear(year, month - 1, day)
    utc.setUTCHours(hour, minute, second, millis)
    ms = utc.getTime()
  }
  return ms - offsetMinutes * 60_000
}

/**
 * Milliseconds since the epoch for a client `event_time`: ISO-8601 text, a JSON number of epoch
 * milliseconds, or the same number as a string of digits. NaN when it is none of these.
 */
export function parseEventTime(value: unknown): number {
  if (typeof value === 'number') return Number.isFinite(value) ? Math.floor(value) : Number.NaN
  if (typeof value !== 'string') return Number.NaN
  if (EPOCH_DIGITS.test(value)) return Number(value)
  return parseIsoTime(value)
}

/**
 * The event's time in milliseconds: the client's when it lies within [now − maxAgeMs, now + maxAheadMs],
 * else the server's `now`. A client clock that is wrong by days says nothing useful about when the
 * event happened; the arrival time is the better guess, and it keeps sessions in order.
 */
export function clampEventTime(clientMs: number, now: number, maxAgeMs: number, maxAheadMs: number): number {
  return clientMs > now + maxAheadMs || clientMs < now - maxAgeMs ? now : clientMs
}
