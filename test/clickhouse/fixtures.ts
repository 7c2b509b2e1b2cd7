// Realistic events and session rows for the ClickHouse-shaped sinks, and the column-by-column
// comparison of what a server returns with what core/rows.ts says each row is.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Static, TSchema } from '@sinclair/typebox'
import type { AnalyticsEvent, SessionRow } from '../../core/event.ts'
import { resolveOptions } from '../../core/options.ts'
import type { EngineServices } from '../../core/plugin.ts'
import { eventRow, type JsonRow, sessionRow } from '../../core/rows.ts'
import { type SinkDefinition, type SinkInstance, SinkStats } from '../../core/sink.ts'
import { makeEvent, testServices } from '../../core/testing.ts'
import { type Column, EVENT_COLUMNS, ident, SESSION_COLUMNS } from '../../sinks/clickhouse/schema.ts'

const BASE = 1_767_323_045 // 2026-01-02 03:04:05 UTC

/** One folder for every state folder these tests make; `removeScratch` in afterAll deletes it. */
let scratchRoot: string | undefined

/** testServices() with a state folder that `removeScratch` cleans up (spools, dead letters). */
export function scratchServices(): EngineServices & { closeAll(): Promise<void> } {
  scratchRoot ??= mkdtempSync(join(tmpdir(), 'clickhouse-sink-tests-'))
  return testServices({ stateDir: mkdtempSync(join(scratchRoot, 'state-')) })
}

/** Deletes the folders `scratchServices` made (bun test runs no process 'exit' handlers). */
export function removeScratch(): void {
  if (scratchRoot !== undefined) rmSync(scratchRoot, { recursive: true, force: true })
  scratchRoot = undefined
}

/**
 * `n` events of `n / 3` sessions; event k of a session emits the session rows Plausible would: `+1`
 * for the first, then `-1` of the previous state and `+1` of the new one. Values exercise escaping,
 * UInt64 beyond 2^63, NUL country codes, decimals, props order and two partitions.
 */
export function realisticEvents(n: number, seed = 0): AnalyticsEvent[] {
  const events: AnalyticsEvent[] = []
  let previous: SessionRow | undefined
  for (let i = 0; i < n; i++) {
    const k = i % 3
    const sessionNo = seed * 1_000_000 + Math.floor(i / 3)
    const session_id = 0xa000_0000_0000_0000n + BigInt(sessionNo)
    const user_id = 0xf000_0000_0000_0000n + BigInt(sessionNo * 7)
    const site_id = 1 + (sessionNo % 3)
    // One session in seven lives in the previous month: a batch then spans two partitions.
    const start = BASE - (sessionNo % 7 === 0 ? 40 * 86400 : 0) + sessionNo
    const timestamp = start + k * 10
    const name = k === 2 && i % 2 === 0 ? 'engagement' : i % 5 === 4 ? 'Signup' : 'pageview'
    const pathname = `/blog/${sessionNo}/${k}/caf\u00e9 "quoted" \\ back\tslash 😀`
    const country = sessionNo % 4 === 0 ? '' : 'DE'
    const props: Record<string, string> = i % 3 === 0 ? {} : { seq: String(i), plan: 'pro', Zeta: 'last', alpha: 'a' }
    const event = makeEvent({
      timestamp,
      name,
      site_id,
      user_id,
      session_id,
      hostname: 'www.example.com',
      pathname,
      referrer: 'news.ycombinator.com/item',
      referrer_source: 'Hacker News',
      country_code: country,
      screen_size: ['Desktop', 'Mobile', 'Tablet', ''][i % 4]!,
      operating_system: 'Mac',
      operating_system_version: '14.5',
      browser: 'Chrome',
      browser_version: '126.0',
      utm_medium: i % 2 ? 'social' : '',
      utm_source: i % 2 ? 'hn' : '',
      utm_campaign: i % 2 ? 'launch' : '',
      utm_content: i % 6 === 1 ? 'banner' : '',
      utm_term: i % 6 === 1 ? 'analytics' : '',
      subdivision1_code: country ? 'DE-BE' : '',
      subdivision2_code: '',
      city_geoname_id: country ? 2_950_159 : 0,
      props,
      revenue_reporting_amount: i % 10 === 1 ? '1234.567' : i % 10 === 3 ? '123456789012345.678' : '',
      revenue_reporting_currency: i % 10 === 1 || i % 10 === 3 ? 'EUR' : '',
      revenue_source_amount: i % 10 === 1 ? '-0.5' : '',
      revenue_source_currency: i % 10 === 1 ? 'USD' : '',
      click_id_param: i % 8 === 2 ? 'gclid' : '',
      scroll_depth: name === 'engagement' ? 73 : 0,
      engagement_time: name === 'engagement' ? 12_345 : 0,
      acquisition_channel: 'Referral',
    })
    const state: SessionRow = {
      session_id,
      sign: 1,
      site_id,
      user_id,
      hostname: 'www.example.com',
      timestamp,
      start,
      is_bounce: k === 0 ? 1 : 0,
      entry_page: `/blog/${sessionNo}/0/caf\u00e9 "quoted" \\ back\tslash 😀`,
      exit_page: pathname,
      exit_page_hostname: 'www.example.com',
      pageviews: k + 1,
      events: k + 1,
      duration: k * 10,
      referrer: 'news.ycombinator.com/item',
      referrer_source: 'Hacker News',
      click_id_param: '',
      utm_medium: '',
      utm_source: '',
      utm_campaign: '',
      utm_content: '',
      utm_term: '',
      country_code: country,
      subdivision1_code: country ? 'DE-BE' : '',
      subdivision2_code: '',
      city_geoname_id: country ? 2_950_159 : 0,
      screen_size: 'Desktop',
      operating_system: 'Mac',
      operating_system_version: '14.5',
      browser: 'Chrome',
      browser_version: '126.0',
      entry_meta_key: ['author'],
      entry_meta_value: ['ada'],
      transferred_from: '',
      acquisition_channel: 'Referral',
    }
    event.sessionRows = k === 0 || !previous ? [state] : [{ ...previous, sign: -1 }, state]
    previous = state
    events.push(event)
  }
  return events
}

/** The session states a reader sees with FINAL: the last state of each session. */
export function finalSessions(events: AnalyticsEvent[]): SessionRow[] {
  const last = new Map<bigint, SessionRow>()
  for (const e of events) for (const s of e.sessionRows) if (s.sign === 1) last.set(s.session_id, s)
  return [...last.values()]
}

/**
 * A SELECT list that prints every column the same way on 18.16 and 26.x: DateTime as epoch seconds,
 * UInt64 as text, decimals as text for `normalizeRead`.
 */
export function selectList(columns: readonly Column[]): string {
  return columns
    .map((c) => {
      const name = ident(c.name)
      if (c.type === 'DateTime') return `toUnixTimestamp(${name}) AS ${name}`
      if (c.type === 'UInt64') return `toString(${name}) AS ${name}`
      if (c.type.startsWith('Nullable(Decimal')) return `toString(${name}) AS ${name}`
      return name
    })
    .join(', ')
}

export const eventSelect = (table: string) =>
  `SELECT ${selectList(EVENT_COLUMNS)} FROM ${table} ORDER BY session_id, timestamp, name`
export const sessionSelect = (table: string) =>
  `SELECT ${selectList(SESSION_COLUMNS)} FROM ${table} FINAL ORDER BY session_id`

/** Decimals as thousandths: 18.16 prints `-0.500`, 26.x `-0.5`. Apply to rows read with `selectList`. */
export function normalizeRead(rows: Record<string, unknown>[]): Record<string, unknown>[] {
  for (const row of rows) {
    for (const key of ['revenue_reporting_amount', 'revenue_source_amount']) {
      if (typeof row[key] === 'string') row[key] = thousandths(row[key] as string)
    }
  }
  return rows
}

/** The row core/rows.ts makes, printed the way `selectList` reads it back. */
export function expectedEventRow(e: AnalyticsEvent): JsonRow {
  const row = eventRow(e)
  row.timestamp = e.timestamp
  row.revenue_reporting_amount = thousandths(e.revenue_reporting_amount)
  row.revenue_source_amount = thousandths(e.revenue_source_amount)
  return row
}

export function expectedSessionRow(s: SessionRow): JsonRow {
  const row = sessionRow(s)
  row.timestamp = s.timestamp
  row.start = s.start
  return row
}

function thousandths(decimal: string): string | null {
  if (decimal === '') return null
  const [whole = '0', fraction = ''] = decimal.replace('-', '').split('.')
  const value = BigInt(whole) * 1000n + BigInt(fraction.padEnd(3, '0'))
  return String(decimal.startsWith('-') ? -value : value)
}

/** Expected events in the order `eventSelect` returns them. */
export function sortedExpectedEvents(events: AnalyticsEvent[]): JsonRow[] {
  return [...events]
    .sort((a, b) =>
      a.session_id !== b.session_id
        ? a.session_id < b.session_id
          ? -1
          : 1
        : a.timestamp - b.timestamp || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
    )
    .map(expectedEventRow)
}

export function sortedExpectedSessions(events: AnalyticsEvent[]): JsonRow[] {
  return finalSessions(events)
    .sort((a, b) => (a.session_id < b.session_id ? -1 : a.session_id > b.session_id ? 1 : 0))
    .map(expectedSessionRow)
}

/** Validates options as the engine does and sets the sink up with fresh stats. */
export async function setupSink<S extends TSchema>(
  definition: SinkDefinition<S>,
  raw: unknown,
  services: EngineServices = scratchServices(),
): Promise<{ sink: SinkInstance; stats: SinkStats; options: Static<S>; services: EngineServices }> {
  const resolved = resolveOptions<Static<S>>(definition.options, raw, definition.name)
  if (!resolved.ok) throw new Error(resolved.issues.map((i) => `${i.path}: ${i.message}`).join('\n'))
  const stats = new SinkStats()
  const sink = await definition.setup(resolved.value, services, stats)
  return { sink, stats, options: resolved.value, services }
}

/** Validated options with defaults, for `migrate`. */
export function sinkOptions<S extends TSchema>(definition: SinkDefinition<S>, raw: unknown): Static<S> {
  const resolved = resolveOptions<Static<S>>(definition.options, raw, definition.name)
  if (!resolved.ok) throw new Error(resolved.issues.map((i) => `${i.path}: ${i.message}`).join('\n'))
  return resolved.value
}

/** Polls until `check` holds (or throws after `ms`). */
export async function until(check: () => boolean | Promise<boolean>, ms = 20_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await Bun.sleep(20)
  }
}
