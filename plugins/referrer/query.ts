// Reads the tracking parameters from the page query (spec/plausible-dialect.md §3 query, §8 UTM).
//
// The query is form-encoded: `+` is a space, `%XX` a byte, a malformed escape stays as written, a
// repeated key keeps its last value and a key without `=` has the value ''. Only the thirteen keys
// this plugin reads are decoded; the rest of the query is skipped without allocating.

/** Click-id parameters in Plausible's order of preference (first present wins). */
export const CLICK_ID_PARAMS = ['gclid', 'gbraid', 'wbraid', 'msclkid', 'fbclid', 'twclid'] as const

/** The tracking parameters of one page query; `undefined` = the key is absent. Reused between events. */
export class TrackingParams {
  utmSource: string | undefined = undefined
  source: string | undefined = undefined
  ref: string | undefined = undefined
  utmMedium: string | undefined = undefined
  utmCampaign: string | undefined = undefined
  utmContent: string | undefined = undefined
  utmTerm: string | undefined = undefined
  /** Bit i set = CLICK_ID_PARAMS[i] is present. */
  clickIds = 0

  reset(): void {
    this.utmSource = undefined
    this.source = undefined
    this.ref = undefined
    this.utmMedium = undefined
    this.utmCampaign = undefined
    this.utmContent = undefined
    this.utmTerm = undefined
    this.clickIds = 0
  }

  /** The first present click-id parameter name, or ''. */
  clickIdParam(): string {
    const bits = this.clickIds
    if (bits === 0) return ''
    for (let i = 0; i < CLICK_ID_PARAMS.length; i++) if (bits & (1 << i)) return CLICK_ID_PARAMS[i]!
    return ''
  }
}

/** Fills `out` from the raw query string (without `?`). Never throws. */
export function readTrackingParams(query: string, out: TrackingParams): TrackingParams {
  out.reset()
  const n = query.length
  let start = 0
  while (start <= n) {
    let amp = query.indexOf('&', start)
    if (amp < 0) amp = n
    if (amp > start) readPair(query, start, amp, out)
    start = amp + 1
  }
  return out
}

function readPair(query: string, start: number, end: number, out: TrackingParams): void {
  let eq = query.indexOf('=', start)
  if (eq < 0 || eq > end) eq = -1
  const rawKey = query.slice(start, eq < 0 ? end : eq)
  const key = needsDecoding(rawKey) ? decodeFormComponent(rawKey) : rawKey
  // Values are decoded only for the keys we keep, so a long unrelated query costs one scan.
  switch (key) {
    case 'utm_source':
      out.utmSource = pairValue(query, eq, end)
      return
    case 'source':
      out.source = pairValue(query, eq, end)
      return
    case 'ref':
      out.ref = pairValue(query, eq, end)
      return
    case 'utm_medium':
      out.utmMedium = pairValue(query, eq, end)
      return
    case 'utm_campaign':
      out.utmCampaign = pairValue(query, eq, end)
      return
    case 'utm_content':
      out.utmContent = pairValue(query, eq, end)
      return
    case 'utm_term':
      out.utmTerm = pairValue(query, eq, end)
      return
    case 'gclid':
      out.clickIds |= 1
      return
    case 'gbraid':
      out.clickIds |= 2
      return
    case 'wbraid':
      out.clickIds |= 4
      return
    case 'msclkid':
      out.clickIds |= 8
      return
    case 'fbclid':
      out.clickIds |= 16
      return
    case 'twclid':
      out.clickIds |= 32
      return
  }
}

function pairValue(query: string, eq: number, end: number): string {
  if (eq < 0) return ''
  const raw = query.slice(eq + 1, end)
  return needsDecoding(raw) ? decodeFormComponent(raw) : raw
}

function needsDecoding(s: string): boolean {
  return s.indexOf('%') >= 0 || s.indexOf('+') >= 0
}

const utf8 = new TextDecoder('utf-8')

/**
 * Form-decodes one key or value: `+` → space, `%XX` → byte (bytes read as UTF-8, invalid sequences
 * become U+FFFD), a `%` not followed by two hex digits is kept as written.
 *
 * @example decodeFormComponent('a+b%20c%zz') // 'a b c%zz'
 */
export function decodeFormComponent(s: string): string {
  const spaced = s.indexOf('+') >= 0 ? s.replaceAll('+', ' ') : s
  try {
    return decodeURIComponent(spaced)
  } catch {
    return decodeLeniently(spaced)
  }
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 97 && c <= 102) return c - 87
  if (c >= 65 && c <= 70) return c - 55
  return -1
}

/** The slow path for malformed input: decode valid escapes byte-wise, keep the rest as written. */
function decodeLeniently(s: string): string {
  let result = ''
  let bytes: number[] = []
  const flush = () => {
    if (bytes.length > 0) {
      result += utf8.decode(new Uint8Array(bytes))
      bytes = []
    }
  }
  let i = 0
  while (i < s.length) {
    const c = s.charCodeAt(i)
    if (c === 37 && i + 2 < s.length) {
      const hi = hexValue(s.charCodeAt(i + 1))
      const lo = hexValue(s.charCodeAt(i + 2))
      if (hi >= 0 && lo >= 0) {
        bytes.push(hi * 16 + lo)
        i += 3
        continue
      }
    }
    flush()
    result += s.charAt(i)
    i++
  }
  flush()
  return result
}
