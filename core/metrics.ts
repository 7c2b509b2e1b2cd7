// Prometheus text exposition, hand-written: counters are plain numbers in maps made at start, so the
// hot path only increments. Labels use configured sites only (others share `other`), so a client
// cannot create unbounded series.

import type { SinkHealth, SinkStats } from './sink.ts'
import type { SiteSourceStatus } from './site-sources.ts'

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export class Histogram {
  readonly counts = new Array<number>(BUCKETS.length).fill(0)
  sum = 0
  count = 0
  observe(seconds: number): void {
    this.sum += seconds
    this.count++
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) this.counts[i]!++
  }
}

export interface SinkView {
  name: string
  stats: SinkStats
  health(): SinkHealth
  batchSeconds: Histogram
}

export class Metrics {
  /** `route status` → count. */
  readonly requests = new Map<string, number>()
  /** site label → count. */
  readonly accepted = new Map<string, number>()
  /** `reason\0site` → count. */
  readonly dropped = new Map<string, number>()
  /** `reason\0site` → count of events a plugin in `mode: report` kept and tagged. */
  readonly wouldDropped = new Map<string, number>()
  readonly sinks: SinkView[] = []
  readonly startedAt = Date.now()
  /** The site source's state, when sites come from a file, a database or a URL. */
  siteSource: () => SiteSourceStatus | undefined = () => undefined
  /** Requests moved between the workers of `serve --workers` (core/workers/link.ts); absent for one process. */
  workerLink?: { forwarded: number; fallback: number; received: number; interrupted: number }
  /** Errors no code caught (a library's socket without an error listener, a custom plugin's timer). */
  uncaughtErrors = 0
  /** Series plugins added (EngineServices.metric), read at each scrape. */
  private readonly pluginSeries: { name: string; type: 'counter' | 'gauge'; help: string; read: () => number }[] = []

  /** `route` → status → its `requests` key, so counting a request builds no string. */
  private readonly requestKeys = new Map<string, Map<number, string>>()

  /** A plugin's series; a name taken twice keeps the first (a plugin configured twice). */
  addSeries(name: string, type: 'counter' | 'gauge', help: string, read: () => number): void {
    const valid =
      name.startsWith('analytics_') &&
      [...name].every((c) => (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c === '_')
    if (!valid) throw new Error(`a plugin's metric is named analytics_[a-z0-9_]*, not ${JSON.stringify(name)}`)
    if (this.pluginSeries.some((s) => s.name === name)) return
    this.pluginSeries.push({ name, type, help, read })
  }

  request(route: string, status: number): void {
    let keys = this.requestKeys.get(route)
    if (keys === undefined) {
      keys = new Map()
      this.requestKeys.set(route, keys)
    }
    let key = keys.get(status)
    if (key === undefined) {
      key = `${route} ${status}`
      keys.set(status, key)
    }
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1)
  }

  accept(site: string): void {
    this.accepted.set(site, (this.accepted.get(site) ?? 0) + 1)
  }

  drop(reason: string, site: string): void {
    const key = `${reason}\u0000${site}`
    this.dropped.set(key, (this.dropped.get(key) ?? 0) + 1)
  }

  wouldDrop(reason: string, site: string): void {
    const key = `${reason}\u0000${site}`
    this.wouldDropped.set(key, (this.wouldDropped.get(key) ?? 0) + 1)
  }

  /** Makes the series of a reason and a site exist from start (value 0), as Prometheus prefers. */
  declareDrop(reason: string, site: string): void {
    const key = `${reason}\u0000${site}`
    if (!this.dropped.has(key)) this.dropped.set(key, 0)
  }

  render(): string {
    const out: string[] = []
    const family = (name: string, type: string, help: string) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)

    family('analytics_http_requests_total', 'counter', 'HTTP requests by route and status.')
    for (const [key, n] of this.requests) {
      const space = key.lastIndexOf(' ')
      out.push(
        `analytics_http_requests_total{route="${esc(key.slice(0, space))}",status="${key.slice(space + 1)}"} ${n}`,
      )
    }
    family('analytics_events_accepted_total', 'counter', 'Events that passed every plugin and went to the sinks.')
    for (const [site, n] of this.accepted) out.push(`analytics_events_accepted_total{site="${esc(site)}"} ${n}`)
    family('analytics_events_dropped_total', 'counter', 'Events dropped, by reason and site.')
    for (const [key, n] of this.dropped) {
      const [reason, site] = key.split('\u0000') as [string, string]
      out.push(`analytics_events_dropped_total{reason="${esc(reason)}",site="${esc(site)}"} ${n}`)
    }
    family(
      'analytics_events_would_drop_total',
      'counter',
      'Events a plugin in mode: report would have dropped; kept and tagged with the would_drop prop.',
    )
    for (const [key, n] of this.wouldDropped) {
      const [reason, site] = key.split('\u0000') as [string, string]
      out.push(`analytics_events_would_drop_total{reason="${esc(reason)}",site="${esc(site)}"} ${n}`)
    }

    family('analytics_sink_rows_written_total', 'counter', 'Rows a sink wrote to its destination.')
    for (const s of this.sinks)
      out.push(`analytics_sink_rows_written_total{sink="${esc(s.name)}"} ${s.stats.rowsWritten}`)
    family('analytics_sink_rows_failed_total', 'counter', 'Rows a sink could not write (dead-lettered or lost).')
    for (const s of this.sinks)
      out.push(`analytics_sink_rows_failed_total{sink="${esc(s.name)}"} ${s.stats.rowsFailed}`)
    family('analytics_sink_retries_total', 'counter', 'Batch insert retries.')
    for (const s of this.sinks) out.push(`analytics_sink_retries_total{sink="${esc(s.name)}"} ${s.stats.retries}`)
    family('analytics_sink_dead_letters_total', 'counter', 'Batches written to the dead-letter file.')
    for (const s of this.sinks)
      out.push(`analytics_sink_dead_letters_total{sink="${esc(s.name)}"} ${s.stats.deadLetters}`)
    family('analytics_sink_queued_rows', 'gauge', 'Rows waiting in memory.')
    for (const s of this.sinks)
      out.push(`analytics_sink_queued_rows{sink="${esc(s.name)}"} ${s.health().queuedRows ?? 0}`)
    family('analytics_sink_spool_bytes', 'gauge', 'Bytes spooled on disk waiting for the destination.')
    for (const s of this.sinks)
      out.push(`analytics_sink_spool_bytes{sink="${esc(s.name)}"} ${s.health().spoolBytes ?? 0}`)
    family('analytics_sink_up', 'gauge', '1 when the sink is healthy, 0.5 degraded, 0 failing.')
    for (const s of this.sinks) {
      const state = s.health().state
      out.push(`analytics_sink_up{sink="${esc(s.name)}"} ${state === 'ok' ? 1 : state === 'degraded' ? 0.5 : 0}`)
    }
    family('analytics_sink_batch_duration_seconds', 'histogram', 'Time to write one batch.')
    for (const s of this.sinks) {
      // Sinks record raw durations; fold them into the histogram on scrape.
      for (const seconds of s.stats.batchSeconds.splice(0)) s.batchSeconds.observe(seconds)
      const h = s.batchSeconds
      for (let i = 0; i < BUCKETS.length; i++) {
        out.push(
          `analytics_sink_batch_duration_seconds_bucket{sink="${esc(s.name)}",le="${BUCKETS[i]}"} ${h.counts[i]}`,
        )
      }
      out.push(`analytics_sink_batch_duration_seconds_bucket{sink="${esc(s.name)}",le="+Inf"} ${h.count}`)
      out.push(`analytics_sink_batch_duration_seconds_sum{sink="${esc(s.name)}"} ${h.sum}`)
      out.push(`analytics_sink_batch_duration_seconds_count{sink="${esc(s.name)}"} ${h.count}`)
    }
    const source = this.siteSource()
    if (source) {
      family('analytics_sites', 'gauge', 'Sites in the set in use.')
      out.push(`analytics_sites ${source.sites}`)
      family('analytics_sites_loaded_timestamp_seconds', 'gauge', 'When the site set in use was loaded.')
      out.push(`analytics_sites_loaded_timestamp_seconds ${Math.floor(Date.parse(source.loadedAt) / 1000)}`)
      family('analytics_sites_stale', 'gauge', '1 while refreshes of the site source fail (the last good set stays).')
      out.push(`analytics_sites_stale ${source.stale ? 1 : 0}`)
      family('analytics_sites_refresh_failures_total', 'counter', 'Failed refreshes of the site source.')
      out.push(`analytics_sites_refresh_failures_total ${source.failures}`)
    }
    const link = this.workerLink
    if (link) {
      family(
        'analytics_worker_forwarded_total',
        'counter',
        'Requests a worker forwarded to the owner of their client IP.',
      )
      out.push(`analytics_worker_forwarded_total ${link.forwarded}`)
      family(
        'analytics_worker_forward_fallback_total',
        'counter',
        'Requests processed by the accepting worker because their owner could not be reached (a session may split).',
      )
      out.push(`analytics_worker_forward_fallback_total ${link.fallback}`)
      family('analytics_worker_forwarded_received_total', 'counter', 'Requests other workers forwarded to this one.')
      out.push(`analytics_worker_forwarded_received_total ${link.received}`)
      family(
        'analytics_worker_forward_interrupted_total',
        'counter',
        'Forwarded requests whose owner died before answering: answered 503, never sent again (they may be stored).',
      )
      out.push(`analytics_worker_forward_interrupted_total ${link.interrupted}`)
    }
    for (const series of this.pluginSeries) {
      family(series.name, series.type, series.help)
      out.push(`${series.name} ${series.read()}`)
    }
    family(
      'analytics_uncaught_errors_total',
      'counter',
      'Errors outside any request that no code caught; each is logged and the engine serves on.',
    )
    out.push(`analytics_uncaught_errors_total ${this.uncaughtErrors}`)
    family('analytics_uptime_seconds', 'gauge', 'Seconds since the engine started.')
    out.push(`analytics_uptime_seconds ${Math.floor((Date.now() - this.startedAt) / 1000)}`)
    return `${out.join('\n')}\n`
  }
}

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}
