// Client timestamps of trusted senders (issue #12; docs/operators/senders-and-batches.md): the body
// field `timestamp`, as ISO-8601 text with a zone or as epoch milliseconds, and the window it must
// fall in. Ordinary (unkeyed) requests never get here: Plausible has no client timestamp (§2).

import { RawNumber } from '../../core/json.ts'

/** ISO-8601 date and time with a zone: `2026-11-22T10:15:00Z`, `…T10:15:00.250+01:00`, `…T10:15Z`. */
const ISO =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?:([Zz])|([+-])(\d{2}):?(\d{2}))$/
// Up to 15 digits: every millisecond until the year 33658, and always an exact double.
const DIGITS = /^[0-9]{1,15}$/

/**
 * The instant a `timestamp` field names, in epoch milliseconds; `undefined` when the field is absent
 * (`null` and `false` count as absent, as for every field of the dialect); `NaN` when it is present
 * but not a timestamp. A time without a zone is refused rather than guessed.
 *
 * @example clientTimestampMs('2026-11-22T10:15:00+01:00') // 1795338900000
 * @example clientTimestampMs(1795338900000) // 1795338900000
 */
export function clientTimestampMs(value: unknown): number | undefined {
  if (value === undefined || value === null || value === false) return undefined
  if (value instanceof RawNumber) value = value.value
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.floor(value) : Number.NaN
  if (typeof value !== 'string') return Number.NaN
  if (DIGITS.test(value)) return Number(value)
  const m = ISO.exec(value)
  if (m === null) return Number.NaN
  const [year, month, day, hour, minute] = [m[1], m[2], m[3], m[4], m[5]].map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ]
  const second = m[6] === undefined ? 0 : Number(m[6])
  const millis = m[7] === undefined ? 0 : Math.floor(Number(`0.${m[7]}`) * 1000)
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return Number.NaN
  const local = Date.UTC(year, month - 1, day, hour, minute, second, millis)
  // Date.UTC rolls 31 February over into March: a day past its month's end is no date.
  if (new Date(local).getUTCDate() !== day) return Number.NaN
  let offsetMinutes = 0
  if (m[8] === undefined) {
    const hours = Number(m[10])
    const minutes = Number(m[11])
    if (hours > 23 || minutes > 59) return Number.NaN
    offsetMinutes = (m[9] === '-' ? -1 : 1) * (hours * 60 + minutes)
  }
  const ms = local - offsetMinutes * 60_000
  return ms >= 0 ? ms : Number.NaN
}

export interface TimestampWindow {
  maxAgeHours: number
  maxFutureSeconds: number
}

export type WindowVerdict = 'timestamp_too_old' | 'timestamp_in_future' | undefined

/**
 * Whether a client time (ms) may be used for a request received at `receivedAt` (ms): not more than
 * `maxFutureSeconds` ahead (in whole seconds), not more than `maxAgeHours` old, and never before
 * yesterday 00:00 UTC, the oldest day whose salt still exists (spec §9), so a user id can be made.
 */
export function checkWindow(ms: number, receivedAt: number, window: TimestampWindow): WindowVerdict {
  if (Math.floor(ms / 1000) > Math.floor(receivedAt / 1000) + window.maxFutureSeconds) return 'timestamp_in_future'
  const yesterday = receivedAt - (receivedAt % 86_400_000) - 86_400_000
  if (Math.floor(ms / 1000) < Math.floor(receivedAt / 1000) - window.maxAgeHours * 3600 || ms < yesterday) {
    return 'timestamp_too_old'
  }
  return undefined
}
