// Events and session states as rows of spec/clickhouse-schema.md, in JSON form: column names as in
// the schema (`meta.key`), DateTime as `YYYY-MM-DD hh:mm:ss` UTC, UInt64 as decimal strings (they
// exceed 2^53), FixedString unknowns as NUL bytes, Nullable decimals as null.

import type { AnalyticsEvent, SessionRow } from './event.ts'

export const EVENTS_TABLE = 'events_v2'
export const SESSIONS_TABLE = 'sessions_v2'

export type JsonRow = Record<string, string | number | null | string[]>

const NUL2 = '\u0000\u0000'
const NUL3 = '\u0000\u0000\u0000'

const TWO_DIGITS = Array.from({ length: 60 }, (_, i) => String(i).padStart(2, '0'))

/** `YYYY-MM-DD hh:mm:ss` (UTC) for seconds since the epoch. */
export function formatDateTime(seconds: number): string {
  // A session row formats its start and its last event, so a one-entry cache of whole strings
  // misses on every other call: cache the day's date part instead and build the time from a table.
  if (!Number.isInteger(seconds)) return isoDateTime(seconds)
  const day = Math.floor(seconds / 86400)
  if (day !== lastDay) {
    lastDay = day
    lastDate = `${isoDateTime(day * 86400).slice(0, 10)} `
  }
  const rem = seconds - day * 86400
  const minutes = Math.floor(rem / 60)
  return `${lastDate}${TWO_DIGITS[Math.floor(minutes / 60)]}:${TWO_DIGITS[minutes % 60]}:${TWO_DIGITS[rem % 60]}`
}
let lastDay = Number.NaN
let lastDate = ''

function isoDateTime(seconds: number): string {
  const iso = new Date(seconds * 1000).toISOString()
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}`
}

/**
 * Decimal text of a UInt64 id. An event and its two session rows carry the same user and session
 * ids, so one remembered value per column spares two of every three conversions.
 */
export function userIdText(id: bigint): string {
  if (id !== lastUserId) {
    lastUserId = id
    lastUserIdText = id.toString()
  }
  return lastUserIdText
}
let lastUserId = 0n
let lastUserIdText = '0'

export function sessionIdText(id: bigint): string {
  if (id !== lastSessionId) {
    lastSessionId = id
    lastSessionIdText = id.toString()
  }
  return lastSessionIdText
}
let lastSessionId = 0n
let lastSessionIdText = '0'

/** Props as the two aligned arrays of the schema, keys sorted ascending by bytes. */
export function sortedProps(props: Record<string, string>): [string[], string[]] {
  const keys = Object.keys(props)
  if (keys.length === 0) return [[], []]
  keys.sort(compareBytes)
  return [keys, keys.map((k) => props[k]!)]
}

/** Compares two strings by their UTF-8 bytes (code point order, which equals UTF-8 byte order). */
export function compareBytes(a: string, b: string): number {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!
    const y = b.codePointAt(i)!
    if (x !== y) return x - y
    if (x > 0xffff) i++
  }
  return a.length - b.length
}

export function eventRow(e: AnalyticsEvent): JsonRow {
  const [keys, values] = sortedProps(e.props)
  return {
    timestamp: formatDateTime(e.timestamp),
    name: e.name,
    site_id: String(e.site_id),
    user_id: userIdText(e.user_id),
    session_id: sessionIdText(e.session_id),
    hostname: e.hostname,
    pathname: e.pathname,
    referrer: e.referrer,
    referrer_source: e.referrer_source,
    country_code: e.country_code === '' ? NUL2 : e.country_code,
    screen_size: e.screen_size,
    operating_system: e.operating_system,
    browser: e.browser,
    utm_medium: e.utm_medium,
    utm_source: e.utm_source,
    utm_campaign: e.utm_campaign,
    'meta.key': keys,
    'meta.value': values,
    browser_version: e.browser_version,
    operating_system_version: e.operating_system_version,
    subdivision1_code: e.subdivision1_code,
    subdivision2_code: e.subdivision2_code,
    city_geoname_id: e.city_geoname_id,
    utm_content: e.utm_content,
    utm_term: e.utm_term,
    revenue_reporting_amount: e.revenue_reporting_amount === '' ? null : e.revenue_reporting_amount,
    revenue_reporting_currency: e.revenue_reporting_currency === '' ? NUL3 : e.revenue_reporting_currency,
    revenue_source_amount: e.revenue_source_amount === '' ? null : e.revenue_source_amount,
    revenue_source_currency: e.revenue_source_currency === '' ? NUL3 : e.revenue_source_currency,
    click_id_param: e.click_id_param,
    scroll_depth: e.scroll_depth,
    engagement_time: e.engagement_time,
    acquisition_channel: e.acquisition_channel,
  }
}

export function sessionRow(s: SessionRow): JsonRow {
  return {
    session_id: sessionIdText(s.session_id),
    sign: s.sign,
    site_id: String(s.site_id),
    user_id: userIdText(s.user_id),
    hostname: s.hostname,
    timestamp: formatDateTime(s.timestamp),
    start: formatDateTime(s.start),
    is_bounce: s.is_bounce,
    entry_page: s.entry_page,
    exit_page: s.exit_page,
    exit_page_hostname: s.exit_page_hostname,
    pageviews: s.pageviews,
    events: s.events,
    duration: s.duration,
    referrer: s.referrer,
    referrer_source: s.referrer_source,
    click_id_param: s.click_id_param,
    utm_medium: s.utm_medium,
    utm_source: s.utm_source,
    utm_campaign: s.utm_campaign,
    utm_content: s.utm_content,
    utm_term: s.utm_term,
    country_code: s.country_code === '' ? NUL2 : s.country_code,
    subdivision1_code: s.subdivision1_code,
    subdivision2_code: s.subdivision2_code,
    city_geoname_id: s.city_geoname_id,
    screen_size: s.screen_size,
    operating_system: s.operating_system,
    operating_system_version: s.operating_system_version,
    browser: s.browser,
    browser_version: s.browser_version,
    'entry_meta.key': s.entry_meta_key,
    'entry_meta.value': s.entry_meta_value,
    transferred_from: s.transferred_from,
    acquisition_channel: s.acquisition_channel,
  }
}
