// Events and session rows as JSON lines, written straight into UTF-8 bytes: the text is exactly
// `JSON.stringify(eventRow(e))` (and `sessionRow(s)`) of core/rows.ts, tested against it, for events
// whose fields hold the types the class declares.
//
// Why not JSON.stringify: building a row object and stringifying it cost about 7.5 µs per request on
// the stdout sink's path (an event row and two session rows, then joining the lines), the sink's
// largest cost in a CPU profile of the engine under load. Building the text with string
// concatenation was slower still (JavaScriptCore makes a rope node per piece and copies them all
// when the line is joined). Copying characters into one growing byte buffer makes no string and no
// object per row, and what the sink writes is already UTF-8.
//
// A row makes room for its fixed part once and each string for itself (`reserve`, `extend`), so the
// other writers check nothing; numbers and date-times are written digit by digit, without making
// their strings (String(n), formatDateTime's pieces) first (bench/rows.ts: see the commit).

import type { AnalyticsEvent, SessionRow } from './event.ts'
import { compareBytes, formatDateTime, sessionIdText, userIdText } from './rows.ts'

const ENCODER = new TextEncoder()
const HEX = Array.from('0123456789abcdef', (c) => c.charCodeAt(0))
const QUOTE = 0x22
const BACKSLASH = 0x5c
const NEWLINE = 0x0a

/**
 * Constant bytes (a column's key, `null`, …) kept as little-endian 32-bit words and a tail of 0-3
 * bytes, so that `raw` writes them four at a time: byte by byte, the keys alone took over a third
 * of the writer's time (bench/rows.ts).
 */
class Fragment {
  readonly length: number
  readonly words: Int32Array
  readonly tail: Uint8Array

  constructor(bytes: Uint8Array) {
    this.length = bytes.length
    const whole = bytes.length - (bytes.length & 3)
    this.words = new Int32Array(whole / 4)
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    for (let i = 0; i < whole; i += 4) this.words[i / 4] = view.getInt32(i, true)
    this.tail = bytes.slice(whole)
  }
}

function fragment(text: string): Fragment {
  return new Fragment(ENCODER.encode(text))
}

/** `,"name":` (without the comma for the first column of a row). */
function key(name: string, first = false): Fragment {
  return fragment(`${first ? '' : ','}${JSON.stringify(name)}:`)
}

/**
 * A growing buffer of JSON lines. `take` hands the lines over without copying them and goes on in a
 * spare buffer; `recycle` gives a taken buffer back once written, so two buffers serve every batch.
 */
export class JsonLines {
  // Both set by `use` only, so that they always show the same memory.
  private bytes!: Uint8Array
  /** `bytes` as a DataView, for `raw`'s four-byte writes. */
  private view!: DataView
  private length = 0
  /** Byte offset after each line, so a writer can cut the buffer at line boundaries. */
  private ends: number[] = []
  private spare: Uint8Array | undefined
  /** Where the row being written may end at most (`reserve`); checked when the row is done. */
  private limit = 0
  /** `"YYYY-MM-DD ` of the day last written, so a date-time is written from its time of day alone. */
  private day = Number.NaN
  private dayBytes = fragment('')
  /**
   * The session row written last and where its attribution columns (`referrer` to the end) lie in
   * `bytes`: a session's update is a `-1` and a `+1` row with the same attribution, so the second
   * copies those bytes instead of writing its 21 columns again. Undefined once the buffer is taken.
   */
  private tailRow: SessionRow | undefined = undefined
  private tailStart = 0
  private tailEnd = 0

  constructor(initialBytes = 1 << 16) {
    this.use(new Uint8Array(initialBytes))
  }

  private use(bytes: Uint8Array): void {
    this.bytes = bytes
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  /** Lines waiting. */
  get lines(): number {
    return this.ends.length
  }

  /**
   * The lines written since the last `take`, and the byte offset after each. The bytes are this
   * buffer's own until given back with `recycle`.
   */
  take(): { bytes: Uint8Array; ends: number[] } {
    const taken = { bytes: this.bytes.subarray(0, this.length), ends: this.ends }
    this.use(this.spare ?? new Uint8Array(this.bytes.length))
    this.spare = undefined
    this.length = 0
    this.ends = []
    this.tailRow = undefined
    return taken
  }

  /** Gives back the bytes of a `take` once nothing reads them any more. */
  recycle(taken: Uint8Array): void {
    const whole = new Uint8Array(taken.buffer)
    if (this.spare === undefined || whole.length > this.spare.length) this.spare = whole
  }

  /**
   * One events_v2 row; `open` is the row's first bytes in place of `{`. A row that throws (a date
   * out of range) leaves nothing behind, as none is written when JSON.stringify of its row object throws.
   */
  event(e: AnalyticsEvent, open: Uint8Array): void {
    const start = this.length
    try {
      this.reserve(open.length + E_FIXED)
      this.eventRow(e, open)
      this.endLine()
    } catch (error) {
      this.length = start
      throw error
    }
  }

  /** One sessions_v2 row; `open` and a throw as for `event`. */
  session(s: SessionRow, open: Uint8Array): void {
    const start = this.length
    try {
      this.reserve(open.length + S_FIXED)
      const tailStart = this.sessionRow(s, open)
      // The attribution columns end where the row does, before endLine's `}` and newline.
      const tailEnd = this.length
      this.endLine()
      this.tailRow = s
      this.tailStart = tailStart
      this.tailEnd = tailEnd
    } catch (error) {
      this.length = start
      throw error
    }
  }

  private eventRow(e: AnalyticsEvent, open: Uint8Array): void {
    this.opening(open)
    this.raw(E.timestamp)
    this.dateTime(e.timestamp)
    this.raw(E.name)
    this.string(e.name)
    this.raw(E.site_id)
    this.quotedNumber(e.site_id)
    this.raw(E.user_id)
    this.quotedAscii(userIdText(e.user_id))
    this.raw(E.session_id)
    this.quotedAscii(sessionIdText(e.session_id))
    this.raw(E.hostname)
    this.string(e.hostname)
    this.raw(E.pathname)
    this.string(e.pathname)
    this.raw(E.referrer)
    this.string(e.referrer)
    this.raw(E.referrer_source)
    this.string(e.referrer_source)
    this.raw(E.country_code)
    if (e.country_code === '') this.raw(NUL2)
    else this.string(e.country_code)
    this.raw(E.screen_size)
    this.string(e.screen_size)
    this.raw(E.operating_system)
    this.string(e.operating_system)
    this.raw(E.browser)
    this.string(e.browser)
    this.raw(E.utm_medium)
    this.string(e.utm_medium)
    this.raw(E.utm_source)
    this.string(e.utm_source)
    this.raw(E.utm_campaign)
    this.string(e.utm_campaign)
    this.props(e.props)
    this.raw(E.browser_version)
    this.string(e.browser_version)
    this.raw(E.operating_system_version)
    this.string(e.operating_system_version)
    this.raw(E.subdivision1_code)
    this.string(e.subdivision1_code)
    this.raw(E.subdivision2_code)
    this.string(e.subdivision2_code)
    this.raw(E.city_geoname_id)
    this.number(e.city_geoname_id)
    this.raw(E.utm_content)
    this.string(e.utm_content)
    this.raw(E.utm_term)
    this.string(e.utm_term)
    this.raw(E.revenue_reporting_amount)
    this.nullable(e.revenue_reporting_amount)
    this.raw(E.revenue_reporting_currency)
    if (e.revenue_reporting_currency === '') this.raw(NUL3)
    else this.string(e.revenue_reporting_currency)
    this.raw(E.revenue_source_amount)
    this.nullable(e.revenue_source_amount)
    this.raw(E.revenue_source_currency)
    if (e.revenue_source_currency === '') this.raw(NUL3)
    else this.string(e.revenue_source_currency)
    this.raw(E.click_id_param)
    this.string(e.click_id_param)
    this.raw(E.scroll_depth)
    this.number(e.scroll_depth)
    this.raw(E.engagement_time)
    this.number(e.engagement_time)
    this.raw(E.acquisition_channel)
    this.string(e.acquisition_channel)
  }

  /** Writes the row but its closing `}`; returns where its attribution columns start. */
  private sessionRow(s: SessionRow, open: Uint8Array): number {
    this.opening(open)
    this.raw(S.session_id)
    this.quotedAscii(sessionIdText(s.session_id))
    this.raw(S.sign)
    this.number(s.sign)
    this.raw(S.site_id)
    this.quotedNumber(s.site_id)
    this.raw(S.user_id)
    this.quotedAscii(userIdText(s.user_id))
    this.raw(S.hostname)
    this.string(s.hostname)
    this.raw(S.timestamp)
    this.dateTime(s.timestamp)
    this.raw(S.start)
    this.dateTime(s.start)
    this.raw(S.is_bounce)
    this.number(s.is_bounce)
    this.raw(S.entry_page)
    this.string(s.entry_page)
    this.raw(S.exit_page)
    this.string(s.exit_page)
    this.raw(S.exit_page_hostname)
    this.string(s.exit_page_hostname)
    this.raw(S.pageviews)
    this.number(s.pageviews)
    this.raw(S.events)
    this.number(s.events)
    this.raw(S.duration)
    this.number(s.duration)
    const tailStart = this.length
    const previous = this.tailRow
    if (previous !== undefined && sameAttribution(previous, s)) {
      const n = this.tailEnd - this.tailStart
      this.extend(n)
      this.bytes.copyWithin(tailStart, this.tailStart, this.tailEnd)
      this.length = tailStart + n
    } else {
      this.sessionTail(s)
    }
    return tailStart
  }

  /** The attribution columns of a sessions_v2 row, `referrer` to the end (see `sameAttribution`). */
  private sessionTail(s: SessionRow): void {
    this.raw(S.referrer)
    this.string(s.referrer)
    this.raw(S.referrer_source)
    this.string(s.referrer_source)
    this.raw(S.click_id_param)
    this.string(s.click_id_param)
    this.raw(S.utm_medium)
    this.string(s.utm_medium)
    this.raw(S.utm_source)
    this.string(s.utm_source)
    this.raw(S.utm_campaign)
    this.string(s.utm_campaign)
    this.raw(S.utm_content)
    this.string(s.utm_content)
    this.raw(S.utm_term)
    this.string(s.utm_term)
    this.raw(S.country_code)
    if (s.country_code === '') this.raw(NUL2)
    else this.string(s.country_code)
    this.raw(S.subdivision1_code)
    this.string(s.subdivision1_code)
    this.raw(S.subdivision2_code)
    this.string(s.subdivision2_code)
    this.raw(S.city_geoname_id)
    this.number(s.city_geoname_id)
    this.raw(S.screen_size)
    this.string(s.screen_size)
    this.raw(S.operating_system)
    this.string(s.operating_system)
    this.raw(S.operating_system_version)
    this.string(s.operating_system_version)
    this.raw(S.browser)
    this.string(s.browser)
    this.raw(S.browser_version)
    this.string(s.browser_version)
    this.raw(S.entry_meta_key)
    this.strings(s.entry_meta_key)
    this.raw(S.entry_meta_value)
    this.strings(s.entry_meta_value)
    this.raw(S.transferred_from)
    this.string(s.transferred_from)
    this.raw(S.acquisition_channel)
    this.string(s.acquisition_channel)
  }

  /** `,"meta.key":[…],"meta.value":[…]`, keys sorted by their bytes as `sortedProps` does. */
  private props(props: Record<string, string>): void {
    const keys = Object.keys(props)
    if (keys.length > 1) keys.sort(compareBytes)
    this.raw(E.meta_key)
    this.strings(keys)
    this.raw(E.meta_value)
    this.bytes[this.length++] = 0x5b
    for (let i = 0; i < keys.length; i++) {
      if (i > 0) this.bytes[this.length++] = 0x2c
      this.string(props[keys[i]!]!)
    }
    this.bytes[this.length++] = 0x5d
  }

  private strings(list: readonly string[]): void {
    this.bytes[this.length++] = 0x5b
    for (let i = 0; i < list.length; i++) {
      if (i > 0) this.bytes[this.length++] = 0x2c
      this.string(list[i]!)
    }
    this.bytes[this.length++] = 0x5d
  }

  /**
   * Makes room for the `n` bytes that a row about to be written takes at most besides its strings
   * (which `string` makes room for): the writers below do not check. A typed array drops a write
   * past its end without a word, so `endLine` checks that the row kept within what was reserved
   * and throws if not, rather than let a cut line out.
   */
  private reserve(n: number): void {
    this.limit = this.length
    this.extend(n)
  }

  /** Reserves `n` bytes more for the row being written (a string's, known once it is written). */
  private extend(n: number): void {
    this.limit += n
    if (this.limit <= this.bytes.length) return
    let size = this.bytes.length * 2
    while (size < this.limit) size *= 2
    const grown = new Uint8Array(size)
    grown.set(this.bytes.subarray(0, this.length))
    this.use(grown)
  }

  private endLine(): void {
    if (this.length + 2 > this.limit) throw new Error('a JSON line outgrew the room reserved for it')
    this.bytes[this.length++] = 0x7d
    this.bytes[this.length++] = NEWLINE
    this.ends.push(this.length)
  }

  /** Constant bytes, four at a time (a DataView writes at any offset, and throws past the end). */
  private raw(fragment: Fragment): void {
    const view = this.view
    let at = this.length
    const words = fragment.words
    for (let i = 0; i < words.length; i++) {
      view.setInt32(at, words[i]!, true)
      at += 4
    }
    const tail = fragment.tail
    const bytes = this.bytes
    for (let i = 0; i < tail.length; i++) bytes[at++] = tail[i]!
    this.length = at
  }

  /** A row's opening bytes, given by the caller. */
  private opening(open: Uint8Array): void {
    const bytes = this.bytes
    let at = this.length
    for (let i = 0; i < open.length; i++) bytes[at++] = open[i]!
    this.length = at
  }

  /** A number as JSON.stringify writes it: small integers digit by digit, anything else by String. */
  private number(n: number): void {
    if ((n | 0) === n) {
      if (n < 0) {
        this.bytes[this.length++] = 0x2d
        this.digits(-n)
      } else this.digits(n)
    } else this.ascii(Number.isFinite(n) ? String(n) : 'null')
  }

  /** The decimal digits of an integer from 0 to 2^31. */
  private digits(n: number): void {
    let end = this.length + 1
    for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) end++
    this.length = end
    const bytes = this.bytes
    let rest = n
    do {
      bytes[--end] = 0x30 + (rest % 10)
      rest = Math.floor(rest / 10)
    } while (rest > 0)
  }

  /** `String(n)` in quotes, as a UInt column's text (site_id). */
  private quotedNumber(n: number): void {
    if ((n | 0) !== n) {
      this.quotedAscii(String(n))
      return
    }
    this.bytes[this.length++] = QUOTE
    this.number(n)
    this.bytes[this.length++] = QUOTE
  }

  /** A DateTime column: `"YYYY-MM-DD hh:mm:ss"`, the text of `formatDateTime`. */
  private dateTime(seconds: number): void {
    if (!Number.isInteger(seconds)) {
      this.quotedAscii(formatDateTime(seconds))
      return
    }
    const day = Math.floor(seconds / 86400)
    if (day !== this.day) {
      // formatDateTime makes the day's text (and throws for a date out of range, as before).
      this.dayBytes = fragment(`"${formatDateTime(day * 86400).slice(0, 11)}`)
      this.day = day
    }
    this.raw(this.dayBytes)
    const rem = seconds - day * 86400
    const minutes = Math.floor(rem / 60)
    const bytes = this.bytes
    let at = this.length
    at = twoDigits(bytes, at, Math.floor(minutes / 60))
    bytes[at++] = 0x3a
    at = twoDigits(bytes, at, minutes % 60)
    bytes[at++] = 0x3a
    at = twoDigits(bytes, at, rem % 60)
    bytes[at++] = QUOTE
    this.length = at
  }

  /** A Nullable(Decimal) as the rows have it: null for '', else the text as a string. */
  private nullable(text: string): void {
    if (text === '') this.raw(NULL)
    else this.string(text)
  }

  /** Text known to be printable ASCII without quotes or backslashes: digits, dates. */
  private ascii(text: string): void {
    const bytes = this.bytes
    let at = this.length
    for (let i = 0; i < text.length; i++) bytes[at++] = text.charCodeAt(i)
    this.length = at
  }

  private quotedAscii(text: string): void {
    const bytes = this.bytes
    let at = this.length
    bytes[at++] = QUOTE
    for (let i = 0; i < text.length; i++) bytes[at++] = text.charCodeAt(i)
    bytes[at++] = QUOTE
    this.length = at
  }

  /**
   * A string as JSON.stringify writes it (the same escapes, lone surrogates as `\udxxx`), in UTF-8.
   * The loop here copies the printable ASCII that needs no escape, nearly every character written,
   * with one test per character; the rest of the string goes to `escaped` from the first character
   * that needs more.
   */
  private string(text: string): void {
    const n = text.length
    this.extend(PER_UNIT * n + PER_STRING)
    const bytes = this.bytes
    let at = this.length
    bytes[at++] = QUOTE
    let i = 0
    for (; i < n; i++) {
      const c = text.charCodeAt(i)
      if (c < 0x20 || c >= 0x80 || c === QUOTE || c === BACKSLASH) break
      bytes[at++] = c
    }
    if (i < n) at = this.escaped(text, i, at)
    bytes[at++] = QUOTE
    this.length = at
  }

  /** Writes `text` from `from` on at `at`, escaped as `string` says; returns where it ended. */
  private escaped(text: string, from: number, at: number): number {
    const bytes = this.bytes
    for (let i = from; i < text.length; i++) {
      const c = text.charCodeAt(i)
      if (c >= 0x20 && c < 0x80) {
        if (c === QUOTE || c === BACKSLASH) bytes[at++] = BACKSLASH
        bytes[at++] = c
      } else if (c < 0x20) {
        bytes[at++] = BACKSLASH
        const short = SHORT_ESCAPES[c]
        if (short !== 0) bytes[at++] = short!
        else {
          bytes[at++] = 0x75
          bytes[at++] = 0x30
          bytes[at++] = 0x30
          bytes[at++] = HEX[c >> 4]!
          bytes[at++] = HEX[c & 15]!
        }
      } else if (c < 0x800) {
        bytes[at++] = 0xc0 | (c >> 6)
        bytes[at++] = 0x80 | (c & 63)
      } else if (c < 0xd800 || c > 0xdfff) {
        bytes[at++] = 0xe0 | (c >> 12)
        bytes[at++] = 0x80 | ((c >> 6) & 63)
        bytes[at++] = 0x80 | (c & 63)
      } else {
        const next = i + 1 < text.length ? text.charCodeAt(i + 1) : 0
        if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
          const cp = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00)
          bytes[at++] = 0xf0 | (cp >> 18)
          bytes[at++] = 0x80 | ((cp >> 12) & 63)
          bytes[at++] = 0x80 | ((cp >> 6) & 63)
          bytes[at++] = 0x80 | (cp & 63)
          i++
        } else {
          bytes[at++] = BACKSLASH
          bytes[at++] = 0x75
          bytes[at++] = HEX[c >> 12]!
          bytes[at++] = HEX[(c >> 8) & 15]!
          bytes[at++] = HEX[(c >> 4) & 15]!
          bytes[at++] = HEX[c & 15]!
        }
      }
    }
    return at
  }
}

/**
 * Whether two session rows have the same text from `referrer` to the end of the row (the columns
 * `sessionTail` writes). Strings compare by value; the lists by identity or element by element.
 */
function sameAttribution(a: SessionRow, b: SessionRow): boolean {
  return (
    a.referrer === b.referrer &&
    a.referrer_source === b.referrer_source &&
    a.click_id_param === b.click_id_param &&
    a.utm_medium === b.utm_medium &&
    a.utm_source === b.utm_source &&
    a.utm_campaign === b.utm_campaign &&
    a.utm_content === b.utm_content &&
    a.utm_term === b.utm_term &&
    a.country_code === b.country_code &&
    a.subdivision1_code === b.subdivision1_code &&
    a.subdivision2_code === b.subdivision2_code &&
    a.city_geoname_id === b.city_geoname_id &&
    a.screen_size === b.screen_size &&
    a.operating_system === b.operating_system &&
    a.operating_system_version === b.operating_system_version &&
    a.browser === b.browser &&
    a.browser_version === b.browser_version &&
    sameList(a.entry_meta_key, b.entry_meta_key) &&
    sameList(a.entry_meta_value, b.entry_meta_value) &&
    a.transferred_from === b.transferred_from &&
    a.acquisition_channel === b.acquisition_channel
  )
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** `n` (0-99) as two digits at `at`; returns the offset after them. */
function twoDigits(bytes: Uint8Array, at: number, n: number): number {
  bytes[at] = 0x30 + Math.floor(n / 10)
  bytes[at + 1] = 0x30 + (n % 10)
  return at + 2
}

/**
 * Room for a column's text besides its string's characters: its key, quotes, the longest number
 * (`-1.7976931348623157e+308`), date-time, id or NUL-byte unknown, a comma or bracket.
 */
const COLUMN_ROOM = 32

/**
 * The most a string takes written, besides its characters' 6 bytes per UTF-16 unit (`\u001f`,
 * `\udc00`): its quotes and a comma after it in a list.
 */
const PER_UNIT = 6
const PER_STRING = 3

/** JSON.stringify's two-character escapes below 0x20 (`\b \t \n \f \r`); 0 where it writes `\u00xx`. */
const SHORT_ESCAPES = new Uint8Array(32)
SHORT_ESCAPES[0x08] = 0x62
SHORT_ESCAPES[0x09] = 0x74
SHORT_ESCAPES[0x0a] = 0x6e
SHORT_ESCAPES[0x0c] = 0x66
SHORT_ESCAPES[0x0d] = 0x72

const NUL2 = fragment('"\\u0000\\u0000"')
const NUL3 = fragment('"\\u0000\\u0000\\u0000"')
const NULL = fragment('null')

/** Column keys of events_v2 in the order of `eventRow`. */
const E = {
  timestamp: key('timestamp', true),
  name: key('name'),
  site_id: key('site_id'),
  user_id: key('user_id'),
  session_id: key('session_id'),
  hostname: key('hostname'),
  pathname: key('pathname'),
  referrer: key('referrer'),
  referrer_source: key('referrer_source'),
  country_code: key('country_code'),
  screen_size: key('screen_size'),
  operating_system: key('operating_system'),
  browser: key('browser'),
  utm_medium: key('utm_medium'),
  utm_source: key('utm_source'),
  utm_campaign: key('utm_campaign'),
  meta_key: key('meta.key'),
  meta_value: key('meta.value'),
  browser_version: key('browser_version'),
  operating_system_version: key('operating_system_version'),
  subdivision1_code: key('subdivision1_code'),
  subdivision2_code: key('subdivision2_code'),
  city_geoname_id: key('city_geoname_id'),
  utm_content: key('utm_content'),
  utm_term: key('utm_term'),
  revenue_reporting_amount: key('revenue_reporting_amount'),
  revenue_reporting_currency: key('revenue_reporting_currency'),
  revenue_source_amount: key('revenue_source_amount'),
  revenue_source_currency: key('revenue_source_currency'),
  click_id_param: key('click_id_param'),
  scroll_depth: key('scroll_depth'),
  engagement_time: key('engagement_time'),
  acquisition_channel: key('acquisition_channel'),
}

/** Column keys of sessions_v2 in the order of `sessionRow`. */
const S = {
  session_id: key('session_id', true),
  sign: key('sign'),
  site_id: key('site_id'),
  user_id: key('user_id'),
  hostname: key('hostname'),
  timestamp: key('timestamp'),
  start: key('start'),
  is_bounce: key('is_bounce'),
  entry_page: key('entry_page'),
  exit_page: key('exit_page'),
  exit_page_hostname: key('exit_page_hostname'),
  pageviews: key('pageviews'),
  events: key('events'),
  duration: key('duration'),
  referrer: key('referrer'),
  referrer_source: key('referrer_source'),
  click_id_param: key('click_id_param'),
  utm_medium: key('utm_medium'),
  utm_source: key('utm_source'),
  utm_campaign: key('utm_campaign'),
  utm_content: key('utm_content'),
  utm_term: key('utm_term'),
  country_code: key('country_code'),
  subdivision1_code: key('subdivision1_code'),
  subdivision2_code: key('subdivision2_code'),
  city_geoname_id: key('city_geoname_id'),
  screen_size: key('screen_size'),
  operating_system: key('operating_system'),
  operating_system_version: key('operating_system_version'),
  browser: key('browser'),
  browser_version: key('browser_version'),
  entry_meta_key: key('entry_meta.key'),
  entry_meta_value: key('entry_meta.value'),
  transferred_from: key('transferred_from'),
  acquisition_channel: key('acquisition_channel'),
}

/** The room of an events_v2 row besides its strings' characters (and its closing `}` and newline). */
const E_FIXED = Object.values(E).reduce((n, key) => n + key.length + COLUMN_ROOM, 2)
/** The same for a sessions_v2 row. */
const S_FIXED = Object.values(S).reduce((n, key) => n + key.length + COLUMN_ROOM, 2)
