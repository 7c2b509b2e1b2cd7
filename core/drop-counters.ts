// Per-site drop counts by minute (issue "visible drops"): Prometheus keeps only configured sites'
// labels, so the exact per-site, per-minute picture goes to sinks that can store it (the
// `ingest_counters` table of the ClickHouse-shaped sinks). Drops are a small share of traffic; one
// map entry per (minute, site, reason) is all the hot path touches.

/** One row of `ingest_counters`. Sinks sum rows with the same key (SummingMergeTree). */
export interface CounterRow {
  /** Seconds since the epoch, UTC, at the start of the minute (event time). */
  minute: number
  site_id: number
  reason: string
  /** Events dropped for this reason. */
  dropped: number
  /** Events a plugin in `mode: report` would have dropped, kept and tagged instead. */
  would_drop: number
}

export const COUNTERS_TABLE = 'ingest_counters'

export class DropCounters {
  private rows = new Map<string, CounterRow>()

  add(timestamp: number, siteId: number, reason: string, reported: boolean): void {
    const minute = timestamp - (timestamp % 60)
    const key = `${minute}\u0000${siteId}\u0000${reason}`
    let row = this.rows.get(key)
    if (!row) {
      row = { minute, site_id: siteId, reason, dropped: 0, would_drop: 0 }
      this.rows.set(key, row)
    }
    if (reported) row.would_drop++
    else row.dropped++
  }

  /** The rows counted since the last call; the counts start again from zero. */
  take(): CounterRow[] {
    if (this.rows.size === 0) return []
    const rows = [...this.rows.values()]
    this.rows = new Map()
    return rows
  }
}
