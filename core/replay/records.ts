// What one input line of `replay` means (docs/operators/replay.md "Input formats"): a request record,
// a bare Plausible body, a row printed by the stdout sink, or one line of the documented nginx access
// log. Parsing never throws: a line that cannot be used becomes `{ kind: 'invalid', reason }`, and the
// reason never quotes the line (it may hold addresses and user agents).

/** A request to hand to a dialect's route, as live traffic would have been handed to it. */
export interface RequestRecord {
  readonly kind: 'request'
  readonly method: string
  /** Path and query string, e.g. `/api/event`; `undefined` for a bare body: the `plausible` route's path. */
  readonly path: string | undefined
  /** Header names in lower case. */
  readonly headers: readonly (readonly [string, string])[]
  readonly body: string
  /** Milliseconds since the epoch: when the request originally arrived. */
  readonly receivedAt: number
  /** Whether the time came from the input (else it is the replay's start, and not part of the id). */
  readonly timeGiven: boolean
  readonly peerIp: string
  /** An `id`/`event_id` the input carried; the replay id is then made from it alone. */
  readonly explicitId: string | undefined
}

/** One line the stdout sink printed: `{"_table":"events_v2", …}` or `{"_table":"sessions_v2", …}`. */
export interface RowRecord {
  readonly kind: 'row'
  readonly table: 'events_v2' | 'sessions_v2'
  /** The row without `_table`. */
  readonly row: Record<string, unknown>
}

export interface Invalid {
  readonly kind: 'invalid'
  /** Why, in words that never quote the input. */
  readonly reason: string
}

export type ParsedLine = RequestRecord | RowRecord | Invalid

const invalid = (reason: string): Invalid => ({ kind: 'invalid', reason })

const EARLIEST_MS = Date.UTC(2000, 0, 1)
// A request time more than a day ahead of the replay's clock is a broken record, not a backfill.
const MAX_AHEAD_MS = 86_400_000

// Headers that describe the body's transport, not its content: the record's body is already decoded
// text, so passing these on would make the route see a length or an encoding that is no longer true.
const TRANSPORT_HEADERS = new Set(['content-length', 'content-encoding', 'transfer-encoding'])

/**
 * A time as records give it: milliseconds since the epoch, or text: ISO 8601 with a zone, or
 * `YYYY-MM-DD hh:mm:ss[.fff]` (the rows' own format), which is UTC.
 */
export function parseTime(value: unknown, nowMs: number): number | string {
  let ms: number
  if (typeof value === 'number') ms = value
  else if (typeof value === 'string') {
    const text = /^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?$/.test(value) ? `${value.replace(' ', 'T')}Z` : value
    if (!/(Z|[+-]\d\d:?\d\d)$/.test(text)) return 'the time has no time zone'
    ms = Date.parse(text)
  } else return 'the time is neither a number of milliseconds nor a date'
  if (!Number.isFinite(ms)) return 'the time is not a valid date'
  // Analytics did not exist before; a number this small is most likely seconds, not milliseconds.
  if (ms < EARLIEST_MS) return 'the time is before 2000 (seconds instead of milliseconds?)'
  if (ms > nowMs + MAX_AHEAD_MS) return 'the time is more than a day in the future'
  return Math.floor(ms)
}

function explicitIdOf(value: unknown): string | undefined | Invalid {
  if (value === undefined || value === null) return undefined
  if (typeof value === 'string' && value !== '' && value.length <= 512) return value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return invalid('the id is not a non-empty string or a number')
}

/** One NDJSON line: a request record, a bare Plausible body, or a stdout sink row. */
export function parseNdjsonLine(text: string, nowMs: number): ParsedLine {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return invalid('not valid JSON')
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return invalid('not a JSON object')
  const object = value as Record<string, unknown>
  if ('_table' in object) {
    const { _table: table, ...row } = object
    if (table !== 'events_v2' && table !== 'sessions_v2') return invalid('_table is neither events_v2 nor sessions_v2')
    return { kind: 'row', table, row }
  }
  if ('body' in object || 'path' in object || 'method' in object) return requestRecord(object, nowMs)
  return bareBody(object, nowMs)
}

function requestRecord(object: Record<string, unknown>, nowMs: number): RequestRecord | Invalid {
  const method = object.method ?? 'POST'
  if (method !== 'POST' && method !== 'GET') return invalid('method is neither POST nor GET')
  const path = object.path
  if (typeof path !== 'string' || !path.startsWith('/')) return invalid('path is missing or does not start with /')
  const headers: [string, string][] = []
  if (object.headers !== undefined) {
    if (typeof object.headers !== 'object' || object.headers === null || Array.isArray(object.headers)) {
      return invalid('headers is not an object of strings')
    }
    for (const [name, v] of Object.entries(object.headers)) {
      if (typeof v !== 'string') return invalid('headers is not an object of strings')
      const lower = name.toLowerCase()
      if (!TRANSPORT_HEADERS.has(lower)) headers.push([lower, v])
    }
  }
  let body: string
  if (object.body === undefined || object.body === null) body = ''
  else if (typeof object.body === 'string') body = object.body
  else if (typeof object.body === 'object') body = JSON.stringify(object.body)
  else return invalid('body is neither a string nor a JSON value')
  const time = object.receivedAt === undefined ? nowMs : parseTime(object.receivedAt, nowMs)
  if (typeof time === 'string') return invalid(`receivedAt: ${time}`)
  const peerIp = object.peerIp ?? '127.0.0.1'
  if (typeof peerIp !== 'string') return invalid('peerIp is not a string')
  const id = explicitIdOf(object.event_id ?? object.id)
  if (typeof id === 'object') return id
  return {
    kind: 'request',
    method,
    path,
    headers,
    body,
    receivedAt: time,
    timeGiven: object.receivedAt !== undefined,
    peerIp,
    explicitId: id,
  }
}

/**
 * A body as the Plausible Events API takes it, with the envelope lifted out of it: `receivedAt`,
 * `ip` (the client address), `userAgent`, `id`/`event_id`. None of these is a Plausible body key.
 */
function bareBody(object: Record<string, unknown>, nowMs: number): RequestRecord | Invalid {
  const { receivedAt, ip, userAgent, id, event_id, ...body } = object
  const time = receivedAt === undefined ? nowMs : parseTime(receivedAt, nowMs)
  if (typeof time === 'string') return invalid(`receivedAt: ${time}`)
  if (ip !== undefined && typeof ip !== 'string') return invalid('ip is not a string')
  if (userAgent !== undefined && typeof userAgent !== 'string') return invalid('userAgent is not a string')
  const explicitId = explicitIdOf(event_id ?? id)
  if (typeof explicitId === 'object') return explicitId
  const headers: [string, string][] = [['content-type', 'application/json']]
  if (userAgent !== undefined) headers.push(['user-agent', userAgent])
  return {
    kind: 'request',
    method: 'POST',
    path: undefined,
    headers,
    body: JSON.stringify(body),
    receivedAt: time,
    timeGiven: receivedAt !== undefined,
    peerIp: ip ?? '',
    explicitId,
  }
}

/**
 * The access-log line format replay reads (nginx `escape=default`, which writes `"`, `\`, control
 * characters and every byte above 0x7E as `\xHH`; an empty value as `-`):
 *
 *   log_format analytics_replay '$msec $remote_addr $status "$request_method $request_uri" '
 *                               '"$http_x_forwarded_for" "$http_user_agent" "$content_type" "$request_body"';
 *
 * `$time_iso8601` is accepted in place of `$msec` (second precision only).
 */
export const NGINX_LOG_FORMAT =
  `log_format analytics_replay '$msec $remote_addr $status "$request_method $request_uri" '\n` +
  `                            '"$http_x_forwarded_for" "$http_user_agent" "$content_type" "$request_body"';`

// Every field is delimited by a character it cannot contain (nginx escapes `"`), so the match
// never backtracks across fields: linear in the line (test/reliability/redos.test.ts).
const ACCESS_LINE =
  /^(\d{9,}\.\d{3}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:Z|[+-]\d\d:\d\d)) (\S+) (\d{3}) "([A-Z]+) ([^"\s]+)(?: HTTP\/[\d.]+)?" "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)"$/

export interface AccessLogFilter {
  /** Only lines nginx answered with one of these statuses (e.g. 502 while the engine was down). */
  statuses?: ReadonlySet<number>
}

/** One access-log line; `undefined` when the filter leaves it out. */
export function parseAccessLogLine(text: string, nowMs: number, filter: AccessLogFilter = {}): ParsedLine | undefined {
  const m = ACCESS_LINE.exec(text)
  if (m === null) return invalid('does not match the analytics_replay log format')
  const [, time, remoteAddr, status, method, uri, forwarded, userAgent, contentType, body] = m as unknown as string[]
  if (filter.statuses !== undefined && !filter.statuses.has(Number(status))) return undefined
  // `$msec` (seconds with milliseconds) has no `-`; `$time_iso8601` always has.
  const ms = time!.includes('-') ? parseTime(time, nowMs) : Number(time) * 1000
  const receivedAt = typeof ms === 'number' ? parseTime(Math.round(ms), nowMs) : ms
  if (typeof receivedAt === 'string') return invalid(`time: ${receivedAt}`)
  if (method !== 'POST' && method !== 'GET') return invalid('method is neither POST nor GET')
  const path = unescapeNginx(uri!)
  if (path === undefined) return invalid('request URI: not valid UTF-8')
  const headers: [string, string][] = []
  const fields = [
    ['x-forwarded-for', forwarded],
    ['user-agent', userAgent],
    ['content-type', contentType],
  ] as const
  for (const [name, value] of fields) {
    if (value === '-') continue
    const decoded = unescapeNginx(value!)
    if (decoded === undefined) return invalid(`${name}: not valid UTF-8`)
    headers.push([name, decoded])
  }
  const decodedBody = body === '-' ? '' : unescapeNginx(body!)
  if (decodedBody === undefined) return invalid('request body: not valid UTF-8')
  return {
    kind: 'request',
    method,
    path,
    headers,
    body: decodedBody,
    receivedAt,
    timeGiven: true,
    peerIp: remoteAddr!,
    explicitId: undefined,
  }
}

const ENCODER = new TextEncoder()
const UTF8 = new TextDecoder('utf-8', { fatal: true })

/** The value of a hex digit's character code, or -1 (NaN past the end of the text is not one). */
function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30
  if (code >= 0x41 && code <= 0x46) return code - 0x37
  if (code >= 0x61 && code <= 0x66) return code - 0x57
  return -1
}

/** Undoes nginx's `\xHH` escaping; the bytes are UTF-8. `undefined` when they are not. */
export function unescapeNginx(text: string): string | undefined {
  if (!text.includes('\\x')) return text
  const bytes: number[] = []

  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    const high = c === 0x5c && text[i + 1] === 'x' ? hexValue(text.charCodeAt(i + 2)) : -1
    const low = high >= 0 ? hexValue(text.charCodeAt(i + 3)) : -1
    if (low >= 0) {
      bytes.push(high * 16 + low)
      i += 3
    } else if (c < 0x80) bytes.push(c)
    else {
      // Unescaped non-ASCII (a log written with escape=none): its own UTF-8 bytes.
      const cp = text.codePointAt(i)!
      for (const b of ENCODER.encode(String.fromCodePoint(cp))) bytes.push(b)
      if (cp > 0xffff) i++
    }
  }
  try {
    return UTF8.decode(new Uint8Array(bytes))
  } catch {
    return undefined
  }
}
