// The shared event model (design.md "The flow"; spec/clickhouse-schema.md for the columns).
//
// One class, every field present from construction, so every event keeps one hidden class and the
// compiled pipeline stays monomorphic. Column fields carry the ClickHouse column names
// (snake_case); request context that never reaches a row is camelCase. Plugins fill fields and never
// add any: `props` is the one open map.

import type { Site } from './sites.ts'

/** A sessions_v2 row (spec/clickhouse-schema.md), written as `-1`/`+1` pairs by the sessions plugin. */
export interface SessionRow {
  session_id: bigint
  sign: 1 | -1
  site_id: number
  user_id: bigint
  hostname: string
  /** Seconds since the epoch, UTC. */
  timestamp: number
  /** Seconds since the epoch, UTC. */
  start: number
  is_bounce: 0 | 1
  entry_page: string
  exit_page: string
  exit_page_hostname: string
  pageviews: number
  events: number
  duration: number
  referrer: string
  referrer_source: string
  click_id_param: string
  utm_medium: string
  utm_source: string
  utm_campaign: string
  utm_content: string
  utm_term: string
  country_code: string
  subdivision1_code: string
  subdivision2_code: string
  city_geoname_id: number
  screen_size: string
  operating_system: string
  operating_system_version: string
  browser: string
  browser_version: string
  entry_meta_key: string[]
  entry_meta_value: string[]
  transferred_from: string
  acquisition_channel: string
}

export class AnalyticsEvent {
  // ---- columns of events_v2 ----
  /** Seconds since the epoch, UTC, truncated to the second. */
  timestamp = 0
  name = ''
  site_id = 0
  user_id = 0n
  session_id = 0n
  hostname = ''
  pathname = ''
  referrer = ''
  referrer_source = ''
  /** ISO alpha-2, or '' for unknown (written as two NUL bytes). */
  country_code = ''
  screen_size = ''
  operating_system = ''
  operating_system_version = ''
  browser = ''
  browser_version = ''
  utm_medium = ''
  utm_source = ''
  utm_campaign = ''
  utm_content = ''
  utm_term = ''
  subdivision1_code = ''
  subdivision2_code = ''
  city_geoname_id = 0
  /** Decimal text with at most 3 fractional digits, or '' for NULL. */
  revenue_source_amount = ''
  /** ISO 4217 code, or '' (written as three NUL bytes). */
  revenue_source_currency = ''
  revenue_reporting_amount = ''
  revenue_reporting_currency = ''
  click_id_param = ''
  /** 0..100, or 255 for "missing"; 0 for every event but `engagement`. */
  scroll_depth = 0
  /** Milliseconds; 0 for every event but `engagement`. */
  engagement_time = 0
  acquisition_channel = ''
  /** The event's properties, already sanitised to strings; written as sorted `meta.key`/`meta.value`. */
  props: Record<string, string> = {}

  // ---- request context (never written as such) ----
  /** Name of the dialect plugin that parsed the event (`plausible`, `lynkow`). */
  dialect = ''
  /** The configured site, resolved by the dialect; `undefined` until then. */
  site: Site | undefined = undefined
  /** The domain the client named (Plausible `d`), after the dialect's normalisation. */
  domain = ''
  /** The page URL as sent. */
  url = ''
  /** The page URL's query string without `?` (form-encoded), as sent. */
  query = ''
  /** The raw referrer URL as sent (`r`), at most 2000 characters; '' when absent. */
  referrerUrl = ''
  /** Plausible hash mode (`h: 1`). */
  hashMode = false
  /** Whether the event counts as an interaction for bounce rules. */
  interactive = true
  /**
   * Whether the TCP peer is known to be a process on this machine without asking for its address:
   * the request came in on a listener bound to a loopback address. `compileTrust` lets it stand for
   * the address when the trusted proxies include every loopback address.
   */
  peerIsLocal = false
  /** The peer's address once known; read `peerIp`. */
  peerAddress = ''
  /** Where the peer's address is still to be read from (a socket's peer, core/http.ts); read `peerIp`. */
  peerSource: { readonly peerIp: string } | undefined = undefined
  /** The client's address once set or read; read `clientIp`. */
  clientAddress: string | undefined = undefined

  /**
   * The TCP peer of the request, without port or brackets. Read from the socket on first use: the
   * runtime asks the kernel on every call (about 2.4 µs a request on Bun), and behind a proxy that
   * sends the client's address, with a loopback listener, nothing needs it.
   */
  get peerIp(): string {
    const source = this.peerSource
    if (source !== undefined) {
      this.peerSource = undefined
      this.peerAddress = source.peerIp
    }
    return this.peerAddress
  }

  set peerIp(ip: string) {
    this.peerSource = undefined
    this.peerAddress = ip
  }

  /** The client's address: the peer, or what a trusted proxy said (set by `client-ip`). */
  get clientIp(): string {
    return this.clientAddress ?? this.peerIp
  }

  set clientIp(ip: string) {
    this.clientAddress = ip
  }

  /** The first `user-agent` header, verbatim ('' when absent); a trusted sender's visitor's (core/senders.ts). */
  userAgent = ''
  /**
   * Set by a dialect once it verified a trusted sender's key (core/senders.ts): a backend speaking for
   * a visitor. `client-ip` then reads the forwarding headers from any peer, and the verdicts about the
   * sender's own machine (`bots`' user-agent check, `ip-type`'s `dc_ip`) are skipped.
   */
  trustedSender = false
  /** The request's headers, shared by every event of one request. Read-only. */
  headers: Headers = EMPTY_HEADERS
  /** Milliseconds since the epoch when the request arrived. */
  receivedAt = 0
  /** `user_id` under the previous day's salt, for session continuation after a rotation; 0n when none (set by `user-id`). */
  previousUserId = 0n
  /** The first-party root domain of `hostname` (set by `user-id`). */
  rootDomain = ''
  /** Session rows this event produced (set by `sessions`), written to `sessions_v2` after the event. */
  sessionRows: SessionRow[] = NO_SESSION_ROWS
  /** Free slot for the dialect's own per-event data (e.g. Lynkow's client ids). Plugins of other concerns leave it alone. */
  dialectData: unknown = undefined
}

/**
 * A new event with the request context filled: the peer (also the client until `client-ip` says
 * otherwise; its address read when first asked for), the headers, the user agent, and the arrival
 * time as the event's second. What every dialect's `ingest.newEvent` returns.
 */
export function eventFromRequest(
  req: {
    readonly request: Request
    readonly peerIp: string
    readonly peerIsLocal?: boolean
    readonly peerLookup?: { readonly peerIp: string }
    readonly receivedAt: number
  },
  dialect: string,
): AnalyticsEvent {
  const event = new AnalyticsEvent()
  event.dialect = dialect
  // A socket's peer is read when a plugin first asks for it (see `peerIp`).
  if (req.peerLookup !== undefined) event.peerSource = req.peerLookup
  else event.peerAddress = req.peerIp
  event.peerIsLocal = req.peerIsLocal === true
  event.headers = req.request.headers
  event.userAgent = req.request.headers.get('user-agent') ?? ''
  event.receivedAt = req.receivedAt
  event.timestamp = Math.floor(req.receivedAt / 1000)
  return event
}

const EMPTY_HEADERS = new Headers()
const NO_SESSION_ROWS: SessionRow[] = []
Object.freeze(NO_SESSION_ROWS)
