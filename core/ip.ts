// IP address text: strict parsing, cleaning of proxy header values (spec/plausible-dialect.md §6).
//
// Hand-written scanners rather than regexes or `node:net`: they run on every event that carries a
// proxy header, must reject garbage without throwing, and the CIDR matcher needs the numeric form anyway.

const COLON = 58
const DOT = 46
const QUOTE = 34
const OPEN_BRACKET = 91
const CLOSE_BRACKET = 93

/** Parses a dotted-quad IPv4 address in `text[start..end)` as an unsigned 32-bit number, or -1. */
export function parseIPv4(text: string, start = 0, end = text.length): number {
  let value = 0
  let octets = 0
  let i = start
  while (i <= end) {
    const first = i
    let octet = 0
    while (i < end) {
      const c = text.charCodeAt(i) - 48
      if (c < 0 || c > 9) break
      octet = octet * 10 + c
      i++
    }
    const digits = i - first
    // Leading zeros are refused: some stacks read `010` as octal, so its meaning is ambiguous.
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && text.charCodeAt(first) === 48)) return -1
    value = value * 256 + octet
    octets++
    if (i === end) break
    if (octets === 4 || text.charCodeAt(i) !== DOT) return -1
    i++
  }
  return octets === 4 ? value : -1
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  const lower = c | 0x20
  if (lower >= 97 && lower <= 102) return lower - 87
  return -1
}

/**
 * Parses IPv6 text (with `::` and an optional dotted IPv4 tail, no zone) into eight 16-bit groups
 * written to `out`. Returns false, leaving `out` in an unspecified state, when the text is not IPv6.
 */
export function parseIPv6(text: string, out: Uint16Array, start = 0, end = text.length): boolean {
  const n = end - start
  if (n < 2 || n > 45) return false
  let groups = 0
  let gap = -1
  let i = start
  if (text.charCodeAt(i) === COLON) {
    if (text.charCodeAt(i + 1) !== COLON) return false
    gap = 0
    i += 2
  }
  while (i < end) {
    if (groups === 8) return false
    const first = i
    let value = 0
    while (i < end && i - first < 5) {
      const d = hexDigit(text.charCodeAt(i))
      if (d < 0) break
      value = value * 16 + d
      i++
    }
    if (i < end && text.charCodeAt(i) === DOT) {
      // An IPv4 tail fills the last two groups and ends the address.
      if (groups > 6) return false
      const v4 = parseIPv4(text, first, end)
      if (v4 < 0) return false
      out[groups++] = v4 >>> 16
      out[groups++] = v4 & 0xffff
      i = end
      break
    }
    const digits = i - first
    if (digits === 0 || digits > 4) return false
    out[groups++] = value
    if (i === end) break
    if (text.charCodeAt(i) !== COLON) return false
    i++
    if (i === end) return false
    if (text.charCodeAt(i) === COLON) {
      if (gap >= 0) return false
      gap = groups
      i++
    }
  }
  if (gap < 0) return groups === 8
  if (groups === 8) return false
  const tail = groups - gap
  for (let k = 0; k < tail; k++) out[7 - k] = out[groups - 1 - k]!
  for (let k = gap; k < 8 - tail; k++) out[k] = 0
  return true
}

/** Whether eight groups are an IPv4-mapped address (`::ffff:a.b.c.d`). */
export function isV4Mapped(groups: Uint16Array): boolean {
  return (
    groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff
  )
}

/** Dotted-quad text of an unsigned 32-bit IPv4 address. */
export function formatIPv4(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`
}

/**
 * Normalises an address without brackets or port: a valid IPv4 stays as it is, an IPv4-mapped IPv6
 * becomes plain IPv4 (so `::ffff:203.0.113.7` and `203.0.113.7` are one visitor, one country, one
 * shield rule), other IPv6 takes its RFC 5952 form (so `2001:DB8:0:0::1` and `2001:db8::1` are one
 * visitor too). Anything else gives ''.
 *
 * `scratch` is an 8-group buffer reused between calls to avoid an allocation per address.
 */
export function normalizeIp(text: string, scratch: Uint16Array, start = 0, end = text.length): string {
  if (end - start < 2) return ''
  let hasColon = false
  for (let i = start; i < end; i++) {
    if (text.charCodeAt(i) === COLON) {
      hasColon = true
      break
    }
  }
  if (!hasColon) {
    if (parseIPv4(text, start, end) < 0) return ''
    return start === 0 && end === text.length ? text : text.slice(start, end)
  }
  if (!parseIPv6(text, scratch, start, end)) return ''
  if (isV4Mapped(scratch)) return formatIPv4(scratch[6]! * 65536 + scratch[7]!)
  return formatIPv6(scratch)
}

/**
 * RFC 5952 text of eight groups: lower-case hex without leading zeros, the longest run of two or
 * more zero groups (the first of equals) as `::`. An embedded IPv4 tail is written in hex too, as
 * the RFC allows for addresses other than the mapped ones.
 */
export function formatIPv6(groups: Uint16Array): string {
  let bestStart = -1
  let bestLength = 1
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLength) {
      bestStart = i
      bestLength = j - i
    }
    i = j
  }
  let out = ''
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += '::'
      i += bestLength - 1
      continue
    }
    if (out !== '' && !out.endsWith(':')) out += ':'
    out += groups[i]!.toString(16)
  }
  return out
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9
}

/**
 * Cleans one address as a proxy writes it: surrounding blanks and double quotes removed, a port
 * removed (`203.0.113.7:8080`, `[2001:db8::1]:443`), brackets removed, then `normalizeIp`.
 * Returns '' for anything that is not an address (`unknown`, `_hidden`, garbage), so the caller can
 * fall back to the next source.
 */
export function cleanAddress(value: string, scratch: Uint16Array, start = 0, end = value.length): string {
  while (start < end && isSpace(value.charCodeAt(start))) start++
  while (end > start && isSpace(value.charCodeAt(end - 1))) end--
  if (end - start >= 2 && value.charCodeAt(start) === QUOTE && value.charCodeAt(end - 1) === QUOTE) {
    start++
    end--
  }
  if (start >= end) return ''
  if (value.charCodeAt(start) === OPEN_BRACKET) {
    let close = -1
    for (let i = start + 1; i < end; i++) {
      if (value.charCodeAt(i) === CLOSE_BRACKET) {
        close = i
        break
      }
    }
    if (close < 0 || !isPortSuffix(value, close + 1, end)) return ''
    return normalizeIp(value, scratch, start + 1, close)
  }
  // One colon means IPv4 with a port; several mean bare IPv6, which cannot carry a port unbracketed.
  let firstColon = -1
  let colons = 0
  for (let i = start; i < end; i++) {
    if (value.charCodeAt(i) === COLON) {
      if (colons === 0) firstColon = i
      colons++
    }
  }
  if (colons === 1) {
    if (!isPortSuffix(value, firstColon, end)) return ''
    return normalizeIp(value, scratch, start, firstColon)
  }
  return normalizeIp(value, scratch, start, end)
}

/** Whether `text[start..end)` is empty or `:` followed by 1–5 digits. */
function isPortSuffix(text: string, start: number, end: number): boolean {
  if (start === end) return true
  if (text.charCodeAt(start) !== COLON || end - start < 2 || end - start > 6) return false
  for (let i = start + 1; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c < 48 || c > 57) return false
  }
  return true
}

/** The first comma-separated entry of an `X-Forwarded-For`-style list, cleaned (see `cleanAddress`). */
export function firstListEntry(value: string, scratch: Uint16Array): string {
  const comma = value.indexOf(',')
  return cleanAddress(value, scratch, 0, comma < 0 ? value.length : comma)
}

/**
 * The address of the first `for=` parameter of an RFC 7239 `Forwarded` header, cleaned; '' when
 * there is none or it is not an address (`for=unknown`, obfuscated `for=_hidden`).
 */
export function forwardedFor(value: string, scratch: Uint16Array): string {
  const n = value.length
  for (let i = 0; i + 4 <= n; i++) {
    // Parameter names are case-insensitive (RFC 7239 §4); `for` must start a parameter.
    if ((value.charCodeAt(i) | 0x20) !== 102) continue
    if ((value.charCodeAt(i + 1) | 0x20) !== 111 || (value.charCodeAt(i + 2) | 0x20) !== 114) continue
    if (value.charCodeAt(i + 3) !== 61) continue
    if (i > 0) {
      const before = value.charCodeAt(i - 1)
      if (before !== 59 && before !== 44 && !isSpace(before)) continue
    }
    let end = i + 4
    let quoted = false
    while (end < n) {
      const c = value.charCodeAt(end)
      if (c === QUOTE) quoted = !quoted
      else if (!quoted && (c === 59 || c === 44)) break
      end++
    }
    return cleanAddress(value, scratch, i + 4, end)
  }
  return ''
}
