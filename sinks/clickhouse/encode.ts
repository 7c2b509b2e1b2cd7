// JSONEachRow lines for events_v2 and sessions_v2 (spec/clickhouse-schema.md), built from the shared
// rows of core/rows.ts with two deviations that make one payload valid on every server version:
//
// - DateTime columns are written as epoch seconds, not `YYYY-MM-DD hh:mm:ss` text: ClickHouse parses
//   DateTime text in the *server's* time zone, so text is off by hours on a server not set to UTC;
//   a number is the same instant everywhere (18.16 and 26.x both accept it).
// - Decimal amounts are written as bare JSON numbers copied from the decimal text: 18.16 rejects a
//   quoted decimal, and a JS number would lose digits beyond 2^53.
//
// JSONEachRow rather than RowBinary: see README.md ("Wire format") for the measurement.

import type { CounterRow } from '../../core/drop-counters.ts'
import type { AnalyticsEvent, SessionRow } from '../../core/event.ts'
import { eventRow, sessionRow } from '../../core/rows.ts'

const DECIMAL = /^-?\d{1,15}(\.\d{1,3})?$/

/** One events_v2 row as a JSON line (no trailing newline). */
export function eventLine(e: AnalyticsEvent): string {
  const row = eventRow(e)
  row.timestamp = e.timestamp
  let line = JSON.stringify(row)
  if (e.revenue_reporting_amount !== '')
    line = bareDecimal(line, 'revenue_reporting_amount', e.revenue_reporting_amount)
  if (e.revenue_source_amount !== '') line = bareDecimal(line, 'revenue_source_amount', e.revenue_source_amount)
  return line
}

/** One sessions_v2 row as a JSON line (no trailing newline). */
export function sessionLine(s: SessionRow): string {
  const row = sessionRow(s)
  row.timestamp = s.timestamp
  row.start = s.start
  return JSON.stringify(row)
}

/** One ingest_counters row as a JSON line: UInt64 as a decimal string, DateTime as seconds. */
export function counterLine(row: CounterRow): string {
  return JSON.stringify({
    minute: row.minute,
    site_id: String(row.site_id),
    reason: row.reason,
    dropped: row.dropped,
    would_drop: row.would_drop,
  })
}

/**
 * Replaces `"key":"12.5"` by `"key":12.5`. The needle cannot occur inside another string value, where
 * every quote is escaped. Text that is not a plain decimal stays quoted: the server then rejects the
 * batch as malformed and it is dead-lettered rather than written wrong.
 */
function bareDecimal(line: string, key: string, value: string): string {
  if (!DECIMAL.test(value)) return line
  return line.replace(`"${key}":${JSON.stringify(value)}`, `"${key}":${value}`)
}
