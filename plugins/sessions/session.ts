// Session state and its transitions (spec/plausible-dialect.md §9, §5; sessions_v2 in spec/clickhouse-schema.md).
//
// Pure functions over one session and one event, with no store in sight, so that an async store
// (Redis) can wrap the same logic: look up, apply, write back.

import type { AnalyticsEvent, SessionRow } from '../../core/event.ts'
import { sortedProps } from '../../core/rows.ts'

/**
 * What a session freezes from its first event. Shared between sessions whose first events agree
 * (see AttributionPool), so it must never be mutated after creation.
 */
export class Attribution {
  constructor(
    readonly referrer: string,
    readonly referrer_source: string,
    readonly click_id_param: string,
    readonly utm_medium: string,
    readonly utm_source: string,
    readonly utm_campaign: string,
    readonly utm_content: string,
    readonly utm_term: string,
    readonly country_code: string,
    readonly subdivision1_code: string,
    readonly subdivision2_code: string,
    readonly city_geoname_id: number,
    readonly screen_size: string,
    readonly operating_system: string,
    readonly operating_system_version: string,
    readonly browser: string,
    readonly browser_version: string,
    readonly acquisition_channel: string,
    readonly entry_meta_key: string[],
    readonly entry_meta_value: string[],
  ) {}

  /** Its part of a session's state in Redis, made on first use (see redis-copy.ts). */
  encoded: string | undefined = undefined
}

/** An attribution's fields in constructor order: what the snapshot and the Redis copy store. */
export function attributionFields(a: Attribution): unknown[] {
  return [
    a.referrer,
    a.referrer_source,
    a.click_id_param,
    a.utm_medium,
    a.utm_source,
    a.utm_campaign,
    a.utm_content,
    a.utm_term,
    a.country_code,
    a.subdivision1_code,
    a.subdivision2_code,
    a.city_geoname_id,
    a.screen_size,
    a.operating_system,
    a.operating_system_version,
    a.browser,
    a.browser_version,
    a.acquisition_channel,
    a.entry_meta_key,
    a.entry_meta_value,
  ]
}

/** The attribution `attributionFields` stored; a TypeError for a value of the wrong kind. */
export function attributionFromFields(f: readonly unknown[]): Attribution {
  if (f.length !== 20) throw new TypeError('not an attribution')
  const str = (i: number) => {
    const x = f[i]
    if (typeof x !== 'string') throw new TypeError('not a string')
    return x
  }
  const num = f[11]
  if (typeof num !== 'number' || !Number.isFinite(num)) throw new TypeError('not a number')
  const list = (i: number) => {
    const x = f[i]
    if (!Array.isArray(x) || !x.every((e) => typeof e === 'string')) throw new TypeError('not a list')
    return x as string[]
  }
  return new Attribution(
    str(0),
    str(1),
    str(2),
    str(3),
    str(4),
    str(5),
    str(6),
    str(7),
    str(8),
    str(9),
    str(10),
    num,
    str(12),
    str(13),
    str(14),
    str(15),
    str(16),
    str(17),
    list(18),
    list(19),
  )
}

// `pageviews`, `events` and `is_bounce` share one number (26 + 26 + 1 bits, exact in a double):
// twelve own fields instead of fourteen put a session in JSC's 112-byte size class instead of the
// 160-byte one (a million sessions: 48 MB less).
const COUNT_LIMIT = 2 ** 26
const EVENTS_UNIT = COUNT_LIMIT * 2

/**
 * One live session, kept as small as the rows allow: the frozen attribution is one shared
 * reference, `duration` is not stored because it always equals |timestamp − start|, and the
 * counters are packed (see above; each saturates at 2^26 − 1, some 67 million).
 */
export class Session {
  /** events × 2^27 + pageviews × 2 + is_bounce. */
  private counts: number

  constructor(
    readonly sessionId: bigint,
    /** The user id the session started with; kept across a salt rotation (§9). */
    readonly userId: bigint,
    readonly siteId: number,
    /** Seconds; the earliest event's time (a back-filled earlier event moves it back). */
    public start: number,
    /** Seconds; the `timestamp` of the last row written, so the next `-1` row repeats it exactly. */
    public timestamp: number,
    /** Seconds; the latest event time seen, engagements included: what the timeout counts from. */
    public lastSeen: number,
    pageviews: number,
    events: number,
    isBounce: 0 | 1,
    public hostname: string,
    public entryPage: string,
    public exitPage: string,
    public exitPageHostname: string,
    readonly attribution: Attribution,
  ) {
    this.counts = clamp(events) * EVENTS_UNIT + clamp(pageviews) * 2 + isBounce
  }

  get events(): number {
    return Math.floor(this.counts / EVENTS_UNIT)
  }

  set events(n: number) {
    this.counts = clamp(n) * EVENTS_UNIT + (this.counts % EVENTS_UNIT)
  }

  get pageviews(): number {
    return Math.floor((this.counts % EVENTS_UNIT) / 2)
  }

  set pageviews(n: number) {
    this.counts = this.counts - (this.counts % EVENTS_UNIT) + clamp(n) * 2 + (this.counts % 2)
  }

  get isBounce(): 0 | 1 {
    return (this.counts % 2) as 0 | 1
  }

  set isBounce(b: 0 | 1) {
    this.counts = this.counts - (this.counts % 2) + b
  }
}

const clamp = (n: number): number => (n < COUNT_LIMIT ? n : COUNT_LIMIT - 1)

/** Whether a session last seen at `lastSeen` still takes an event at `time` (both in seconds). */
export function isLive(session: Session, time: number, timeoutSeconds: number): boolean {
  // An event older than the last one (a late request) is inside the session, hence no abs(); one
  // dated more than a timeout before the session began (a back-filled event) is not.
  return time - session.lastSeen <= timeoutSeconds && session.start - time <= timeoutSeconds
}

const EMPTY: string[] = Object.freeze([]) as unknown as string[]

/** The attribution an event would freeze into a new session; `meta` its sorted props when known. */
export function attributionOf(event: AnalyticsEvent, meta?: [string[], string[]]): Attribution {
  let keys = EMPTY
  let values = EMPTY
  if (meta !== undefined) [keys, values] = meta
  else {
    for (const _ in event.props) {
      ;[keys, values] = sortedProps(event.props)
      break
    }
  }
  return new Attribution(
    event.referrer,
    event.referrer_source,
    event.click_id_param,
    event.utm_medium,
    event.utm_source,
    event.utm_campaign,
    event.utm_content,
    event.utm_term,
    event.country_code,
    event.subdivision1_code,
    event.subdivision2_code,
    event.city_geoname_id,
    event.screen_size,
    event.operating_system,
    event.operating_system_version,
    event.browser,
    event.browser_version,
    event.acquisition_channel,
    keys,
    values,
  )
}

/**
 * A new session from its first event (§9): pages only from a pageview, `is_bounce` set unless the
 * first event is an interactive non-pageview.
 */
export function startSession(
  event: AnalyticsEvent,
  sessionId: bigint,
  attribution: Attribution,
  pages: (s: string) => string,
): Session {
  const pageview = event.name === 'pageview'
  const page = pageview ? pages(event.pathname) : ''
  const host = pageview ? pages(event.hostname) : ''
  const t = event.timestamp
  return new Session(
    sessionId,
    event.user_id,
    event.site_id,
    t,
    t,
    t,
    pageview ? 1 : 0,
    1,
    pageview || !event.interactive ? 1 : 0,
    host,
    page,
    page,
    host,
    attribution,
  )
}

/** Applies a non-engagement event to a live session (§9 "An update"). */
export function updateSession(session: Session, event: AnalyticsEvent, pages: (s: string) => string): void {
  const t = event.timestamp
  // Live traffic arrives in order; a back-filled event (a trusted sender's timestamp) may be older
  // than the session's last event, or than its start: it then neither moves the exit nor the time
  // backwards, and an earlier one becomes the start (and, for a page, the entry).
  const earlier = t < session.timestamp
  const beforeStart = t < session.start
  session.events += 1
  if (event.name === 'pageview') {
    session.pageviews += 1
    const page = pages(event.pathname)
    const host = pages(event.hostname)
    if (!earlier) {
      session.exitPage = page
      session.exitPageHostname = host
    }
    if (session.entryPage === '' || beforeStart) session.entryPage = page
    if (session.hostname === '') session.hostname = host
  } else if (event.interactive) {
    session.isBounce = 0
  }
  if (session.pageviews >= 2) session.isBounce = 0
  if (beforeStart) session.start = t
  if (!earlier) session.timestamp = t
  if (t > session.lastSeen) session.lastSeen = t
}

/** Keeps a session alive for an engagement event: no counters, no rows (Plausible `refresh_session_cache`). */
export function touchSession(session: Session, event: AnalyticsEvent): void {
  if (event.timestamp > session.lastSeen) session.lastSeen = event.timestamp
}

/** The session's current state as a sessions_v2 row. */
export function sessionRow(s: Session, sign: 1 | -1): SessionRow {
  const a = s.attribution
  return {
    session_id: s.sessionId,
    sign,
    site_id: s.siteId,
    user_id: s.userId,
    hostname: s.hostname,
    timestamp: s.timestamp,
    start: s.start,
    is_bounce: s.isBounce,
    entry_page: s.entryPage,
    exit_page: s.exitPage,
    exit_page_hostname: s.exitPageHostname,
    pageviews: s.pageviews,
    events: s.events,
    duration: Math.abs(s.timestamp - s.start),
    referrer: a.referrer,
    referrer_source: a.referrer_source,
    click_id_param: a.click_id_param,
    utm_medium: a.utm_medium,
    utm_source: a.utm_source,
    utm_campaign: a.utm_campaign,
    utm_content: a.utm_content,
    utm_term: a.utm_term,
    country_code: a.country_code,
    subdivision1_code: a.subdivision1_code,
    subdivision2_code: a.subdivision2_code,
    city_geoname_id: a.city_geoname_id,
    screen_size: a.screen_size,
    operating_system: a.operating_system,
    operating_system_version: a.operating_system_version,
    browser: a.browser,
    browser_version: a.browser_version,
    entry_meta_key: a.entry_meta_key,
    entry_meta_value: a.entry_meta_value,
    transferred_from: '',
    acquisition_channel: a.acquisition_channel,
  }
}

/** Puts the session's ids and frozen attribution on the event ("Each stored event carries …", §9). */
export function putSessionOnEvent(s: Session, event: AnalyticsEvent): void {
  const a = s.attribution
  event.session_id = s.sessionId
  event.user_id = s.userId
  event.referrer = a.referrer
  event.referrer_source = a.referrer_source
  event.click_id_param = a.click_id_param
  event.utm_medium = a.utm_medium
  event.utm_source = a.utm_source
  event.utm_campaign = a.utm_campaign
  event.utm_content = a.utm_content
  event.utm_term = a.utm_term
  event.country_code = a.country_code
  event.subdivision1_code = a.subdivision1_code
  event.subdivision2_code = a.subdivision2_code
  event.city_geoname_id = a.city_geoname_id
  event.screen_size = a.screen_size
  event.operating_system = a.operating_system
  event.operating_system_version = a.operating_system_version
  event.browser = a.browser
  event.browser_version = a.browser_version
  event.acquisition_channel = a.acquisition_channel
}

/** Random non-zero 64-bit session ids from the system CSPRNG, drawn 256 at a time. */
export class SessionIds {
  private readonly pool = new BigUint64Array(256)
  private next = this.pool.length

  take(): bigint {
    for (;;) {
      if (this.next === this.pool.length) {
        crypto.getRandomValues(this.pool)
        this.next = 0
      }
      const id = this.pool[this.next++]!
      // 0 means "no session" on an event (AnalyticsEvent.session_id), so it is never handed out.
      if (id !== 0n) return id
    }
  }
}
