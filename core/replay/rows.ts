// Rows the stdout sink printed, turned back into what a sink's `write` takes: an AnalyticsEvent whose
// column fields are the row's columns, with the session rows that followed it. These rows already went
// through the pipeline (ids hashed, sessions counted), so replay writes them straight to the sinks;
// running them through the plugins again would hash the hashes. A row is accepted only when writing
// it back gives the very same columns (`eventRow(eventFromRow(row))` equals `row`), so what a sink
// writes is byte for byte what the stdout sink printed.

import { AnalyticsEvent, type SessionRow } from '../event.ts'
import { eventRow, type JsonRow, sessionRow } from '../rows.ts'

const DATE_TIME = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)$/
const UINT64 = /^(0|[1-9]\d{0,19})$/
const MAX_UINT64 = (1n << 64n) - 1n

class RowError extends Error {}

function dateTime(row: Record<string, unknown>, column: string): number {
  const m = typeof row[column] === 'string' ? DATE_TIME.exec(row[column] as string) : null
  if (m === null) throw new RowError(`${column} is not a YYYY-MM-DD hh:mm:ss time`)
  return Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!) / 1000
}

function uint64(row: Record<string, unknown>, column: string): bigint {
  const v = row[column]
  if (typeof v !== 'string' || !UINT64.test(v) || BigInt(v) > MAX_UINT64) {
    throw new RowError(`${column} is not a UInt64 decimal string`)
  }
  return BigInt(v)
}

function text(row: Record<string, unknown>, column: string): string {
  const v = row[column]
  if (typeof v !== 'string') throw new RowError(`${column} is not a string`)
  return v
}

function integer(row: Record<string, unknown>, column: string): number {
  const v = row[column]
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new RowError(`${column} is not an integer`)
  return v
}

function strings(row: Record<string, unknown>, column: string): string[] {
  const v = row[column]
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new RowError(`${column} is not a string list`)
  return v as string[]
}

/** A FixedString column printed as NULs when unknown: back to ''. */
const unNul = (v: string) => (v !== '' && v === '\u0000'.repeat(v.length) ? '' : v)

/** A Nullable decimal printed as null when absent: back to ''. */
function nullableDecimal(row: Record<string, unknown>, column: string): string {
  const v = row[column]
  if (v === null) return ''
  if (typeof v !== 'string') throw new RowError(`${column} is neither a decimal string nor null`)
  return v
}

function siteId(row: Record<string, unknown>): number {
  const id = uint64(row, 'site_id')
  if (id > BigInt(Number.MAX_SAFE_INTEGER)) throw new RowError('site_id is too large')
  return Number(id)
}

/** Same columns, same values; key order is not compared (a reader may have reordered them). */
function sameRow(written: JsonRow, input: Record<string, unknown>): string | undefined {
  const keys = Object.keys(written)
  for (const key of Object.keys(input)) if (!(key in written)) return `unknown column ${key}`
  for (const key of keys) {
    if (!(key in input)) return `missing column ${key}`
    if (JSON.stringify(written[key]) !== JSON.stringify(input[key])) return `column ${key} does not round-trip`
  }
  return undefined
}

/** An events_v2 row as an event with its column fields set; an error sentence when it is not one. */
export function eventFromRow(row: Record<string, unknown>): AnalyticsEvent | string {
  const e = new AnalyticsEvent()
  try {
    e.timestamp = dateTime(row, 'timestamp')
    e.name = text(row, 'name')
    e.site_id = siteId(row)
    e.user_id = uint64(row, 'user_id')
    e.session_id = uint64(row, 'session_id')
    e.hostname = text(row, 'hostname')
    e.pathname = text(row, 'pathname')
    e.referrer = text(row, 'referrer')
    e.referrer_source = text(row, 'referrer_source')
    e.country_code = unNul(text(row, 'country_code'))
    e.screen_size = text(row, 'screen_size')
    e.operating_system = text(row, 'operating_system')
    e.operating_system_version = text(row, 'operating_system_version')
    e.browser = text(row, 'browser')
    e.browser_version = text(row, 'browser_version')
    e.utm_medium = text(row, 'utm_medium')
    e.utm_source = text(row, 'utm_source')
    e.utm_campaign = text(row, 'utm_campaign')
    e.utm_content = text(row, 'utm_content')
    e.utm_term = text(row, 'utm_term')
    e.subdivision1_code = text(row, 'subdivision1_code')
    e.subdivision2_code = text(row, 'subdivision2_code')
    e.city_geoname_id = integer(row, 'city_geoname_id')
    e.revenue_source_amount = nullableDecimal(row, 'revenue_source_amount')
    e.revenue_source_currency = unNul(text(row, 'revenue_source_currency'))
    e.revenue_reporting_amount = nullableDecimal(row, 'revenue_reporting_amount')
    e.revenue_reporting_currency = unNul(text(row, 'revenue_reporting_currency'))
    e.click_id_param = text(row, 'click_id_param')
    e.scroll_depth = integer(row, 'scroll_depth')
    e.engagement_time = integer(row, 'engagement_time')
    e.acquisition_channel = text(row, 'acquisition_channel')
    const keys = strings(row, 'meta.key')
    const values = strings(row, 'meta.value')
    if (keys.length !== values.length) return 'meta.key and meta.value differ in length'
    const props: Record<string, string> = {}
    for (let i = 0; i < keys.length; i++) props[keys[i]!] = values[i]!
    e.props = props
  } catch (error) {
    if (error instanceof RowError) return error.message
    throw error
  }
  return sameRow(eventRow(e), row) ?? e
}

/** A sessions_v2 row; an error sentence when it is not one. */
export function sessionFromRow(row: Record<string, unknown>): SessionRow | string {
  let s: SessionRow
  try {
    const sign = integer(row, 'sign')
    const isBounce = integer(row, 'is_bounce')
    if (sign !== 1 && sign !== -1) return 'sign is neither 1 nor -1'
    if (isBounce !== 0 && isBounce !== 1) return 'is_bounce is neither 0 nor 1'
    s = {
      session_id: uint64(row, 'session_id'),
      sign,
      site_id: siteId(row),
      user_id: uint64(row, 'user_id'),
      hostname: text(row, 'hostname'),
      timestamp: dateTime(row, 'timestamp'),
      start: dateTime(row, 'start'),
      is_bounce: isBounce,
      entry_page: text(row, 'entry_page'),
      exit_page: text(row, 'exit_page'),
      exit_page_hostname: text(row, 'exit_page_hostname'),
      pageviews: integer(row, 'pageviews'),
      events: integer(row, 'events'),
      duration: integer(row, 'duration'),
      referrer: text(row, 'referrer'),
      referrer_source: text(row, 'referrer_source'),
      click_id_param: text(row, 'click_id_param'),
      utm_medium: text(row, 'utm_medium'),
      utm_source: text(row, 'utm_source'),
      utm_campaign: text(row, 'utm_campaign'),
      utm_content: text(row, 'utm_content'),
      utm_term: text(row, 'utm_term'),
      country_code: unNul(text(row, 'country_code')),
      subdivision1_code: text(row, 'subdivision1_code'),
      subdivision2_code: text(row, 'subdivision2_code'),
      city_geoname_id: integer(row, 'city_geoname_id'),
      screen_size: text(row, 'screen_size'),
      operating_system: text(row, 'operating_system'),
      operating_system_version: text(row, 'operating_system_version'),
      browser: text(row, 'browser'),
      browser_version: text(row, 'browser_version'),
      entry_meta_key: strings(row, 'entry_meta.key'),
      entry_meta_value: strings(row, 'entry_meta.value'),
      transferred_from: text(row, 'transferred_from'),
      acquisition_channel: text(row, 'acquisition_channel'),
    }
  } catch (error) {
    if (error instanceof RowError) return error.message
    throw error
  }
  return sameRow(sessionRow(s), row) ?? s
}

/** The canonical text of a row group, for its replay id: columns in the schema's order. */
export function canonicalRows(event: AnalyticsEvent): string {
  return JSON.stringify([eventRow(event), ...event.sessionRows.map(sessionRow)])
}
