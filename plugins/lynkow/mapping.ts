// A validated Lynkow body → the shared event (spec/lynkow-dialect.md "Into the shared event model").
//
// Columns first (name, path, host, referrer, time, ids, scroll, engagement, UTM), then every other
// field that validated goes to props as text, so nothing the client sent and we accepted is lost.
// Client hints (device type, browser, OS) pre-fill the device columns: the `user-agent` plugin, in a
// later stage, overwrites each only when its own parse finds a value, so the client's report is the
// fallback the spec asks for. They are also kept as sent in `dialectData`.

import type { AnalyticsEvent } from '../../core/event.ts'
import type { Site } from '../../core/sites.ts'
import { F, FIELDS, type FieldValue, type Issue, required } from './fields.ts'
import type { IdHasher } from './ids.ts'
import { clampEventTime } from './time.ts'
import { hostOf, pathOf, queryOf, stripWww, withoutQuery } from './urls.ts'

/** What the dialect keeps in `event.dialectData`: the client's own view of its device. */
export interface LynkowClientHints {
  /** From `device_type`: desktop/laptop → `Desktop`, mobile → `Mobile`, tablet → `Tablet`; '' when not sent. */
  screenSize: '' | 'Desktop' | 'Mobile' | 'Tablet'
  browser: string
  browserVersion: string
  os: string
  osVersion: string
}

/** Settings resolved once from the plugin options. */
export interface MappingSettings {
  hasher: IdHasher
  /** Client times older than this (ms before arrival) are replaced by the arrival time. */
  maxAgeMs: number
  /** Client times further ahead than this (ms after arrival) are replaced by the arrival time. */
  maxAheadMs: number
}

/**
 * Event types that report on a page rather than act on it: they do not end a bounce, like
 * Plausible's engagement events.
 */
const PASSIVE_TYPES: ReadonlySet<string> = new Set(['scroll', 'time_on_page', 'cwv', 'exit', 'heartbeat'])

const SCREEN_SIZE: Record<string, LynkowClientHints['screenSize']> = {
  desktop: 'Desktop',
  laptop: 'Desktop',
  mobile: 'Mobile',
  tablet: 'Tablet',
}

/**
 * Fields with a place of their own; every other field goes to props. `cookie_visitor_id` is an
 * identifier too and, like the raw visitor id, is never stored.
 */
const NOT_PROPS: ReadonlySet<number> = new Set([
  F.session_id,
  F.visitor_id,
  F.cookie_visitor_id,
  F.event_type,
  F.page_url,
  F.page_path,
  F.event_time,
  F.page_referrer,
  F.scroll_depth,
  F.max_scroll_depth,
  F.time_on_page,
  F.engaged_time,
  F.utm_source,
  F.utm_medium,
  F.utm_campaign,
  F.utm_term,
  F.utm_content,
  F.device_type,
  F.browser,
  F.browser_version,
  F.os,
  F.os_version,
])
const PROP_FIELDS: readonly number[] = FIELDS.map((_, i) => i).filter((i) => !NOT_PROPS.has(i))

function text(values: readonly (FieldValue | undefined)[], index: number): string | undefined {
  const v = values[index]
  return typeof v === 'string' ? v : undefined
}

function num(values: readonly (FieldValue | undefined)[], index: number): number | undefined {
  const v = values[index]
  return typeof v === 'number' ? v : undefined
}

/**
 * The issues for the two fields an event cannot do without: `event_type`, and `page_path` (unless
 * an absolute `page_url` gives the path), unless `invalid` already names them; undefined when none.
 */
export function missingRequired(
  values: readonly (FieldValue | undefined)[],
  invalid: readonly Issue[] | undefined,
): Issue[] | undefined {
  // A field sent but invalid already has its issue; "is required" would contradict it.
  const typeMissing = values[F.event_type] === undefined && !hasIssue(invalid, 'event_type')
  const pathMissing =
    values[F.page_path] === undefined &&
    pathOf(text(values, F.page_url) ?? '') === '' &&
    !hasIssue(invalid, 'page_path')
  if (!typeMissing && !pathMissing) return undefined
  const issues: Issue[] = []
  if (typeMissing) issues.push(required('event_type'))
  if (pathMissing) issues.push(required('page_path'))
  return issues
}

function hasIssue(issues: readonly Issue[] | undefined, field: string): boolean {
  if (issues === undefined) return false
  for (const issue of issues) if (issue.field === field) return true
  return false
}

/**
 * Fills `event` (its site already set) from the validated `values`. `originHost` (from the Origin or Referer
 * header) names the page's host when the body has no `page_url`. Call it only when
 * `missingRequired()` found nothing.
 */
export function fillEvent(
  event: AnalyticsEvent,
  site: Site,
  values: (FieldValue | undefined)[],
  originHost: string,
  settings: MappingSettings,
): void {
  // missingRequired() passed, so both are there.
  const type = text(values, F.event_type) ?? ''
  const pageUrl = text(values, F.page_url)
  const path = text(values, F.page_path) ?? pathOf(pageUrl ?? '')
  event.name = type
  event.interactive = !PASSIVE_TYPES.has(type)

  // Page: host from page_url, else the sending page's Origin/Referer, else the site's domain.
  event.pathname = decodePath(withoutQuery(path))
  const host = pageUrl === undefined ? '' : hostOf(pageUrl)
  event.hostname = stripWww(host !== '' ? host : originHost !== '' ? originHost : site.domain)
  if (pageUrl !== undefined) {
    event.url = pageUrl
    event.query = queryOf(pageUrl)
  }
  if (event.query === '') event.query = queryOf(path)
  event.referrerUrl = text(values, F.page_referrer) ?? ''

  const time = num(values, F.event_time)
  if (time !== undefined) {
    const ms = clampEventTime(time, event.receivedAt, settings.maxAgeMs, settings.maxAheadMs)
    event.timestamp = Math.floor(ms / 1000)
  }

  // Raw ids never reach the event: only their keyed hashes. Missing ones stay 0n for the
  // `user-id` and `sessions` plugins to fill.
  const visitor = text(values, F.visitor_id)
  if (visitor !== undefined) event.user_id = settings.hasher.hash('visitor', site.id, visitor)
  const session = text(values, F.session_id)
  if (session !== undefined) event.session_id = settings.hasher.hash('session', site.id, session)

  // Deepest scroll wins over the current one; engaged time over time on page (it excludes hidden
  // tabs). The one not used for the column is kept as a prop.
  const props = event.props
  const maxScroll = num(values, F.max_scroll_depth)
  const scroll = num(values, F.scroll_depth)
  if (maxScroll !== undefined) {
    event.scroll_depth = Math.round(maxScroll)
    if (scroll !== undefined) props.scroll_depth = String(scroll)
  } else if (scroll !== undefined) {
    event.scroll_depth = Math.round(scroll)
  }
  const engaged = num(values, F.engaged_time)
  const onPage = num(values, F.time_on_page)
  if (engaged !== undefined) {
    event.engagement_time = Math.round(engaged)
    if (onPage !== undefined) props.time_on_page = String(onPage)
  } else if (onPage !== undefined) {
    event.engagement_time = Math.round(onPage)
  }

  // UTM as sent; the page URL's query still reaches the enrich stage through `event.query`.
  event.utm_source = text(values, F.utm_source) ?? ''
  event.utm_medium = text(values, F.utm_medium) ?? ''
  event.utm_campaign = text(values, F.utm_campaign) ?? ''
  event.utm_term = text(values, F.utm_term) ?? ''
  event.utm_content = text(values, F.utm_content) ?? ''

  const device = text(values, F.device_type)
  const browser = text(values, F.browser)
  const browserVersion = text(values, F.browser_version)
  const os = text(values, F.os)
  const osVersion = text(values, F.os_version)
  if (
    device !== undefined ||
    browser !== undefined ||
    browserVersion !== undefined ||
    os !== undefined ||
    osVersion !== undefined
  ) {
    const hints: LynkowClientHints = {
      screenSize: device === undefined ? '' : (SCREEN_SIZE[device] ?? ''),
      browser: browser ?? '',
      browserVersion: browserVersion ?? '',
      os: os ?? '',
      osVersion: osVersion ?? '',
    }
    event.dialectData = hints
    event.screen_size = hints.screenSize
    event.browser = hints.browser
    event.browser_version = majorMinor(hints.browserVersion)
    event.operating_system = hints.os
    event.operating_system_version = majorMinor(hints.osVersion)
  }

  for (let k = 0; k < PROP_FIELDS.length; k++) {
    const i = PROP_FIELDS[k]!
    const v = values[i]
    if (v !== undefined) props[FIELDS[i]!.name] = typeof v === 'string' ? v : String(v)
  }
}

/** Percent-decoded like Plausible's pathname (a malformed escape keeps the raw text), trailing spaces trimmed, `/` when empty. */
function decodePath(path: string): string {
  let decoded = path
  if (path.includes('%')) {
    try {
      decoded = decodeURIComponent(path)
    } catch {
      decoded = path
    }
  }
  decoded = decoded.trimEnd()
  return decoded === '' ? '/' : decoded
}

/** `major.minor` of a version, as Plausible stores them (`140.0.7339.80` → `140.0`, `17` → `17`). */
function majorMinor(version: string): string {
  const first = version.indexOf('.')
  if (first < 0) return version
  const second = version.indexOf('.', first + 1)
  return second < 0 ? version : version.slice(0, second)
}
