// Implements spec/plausible-dialect.md §3 (URL → hostname, pathname, query). The URL is split the
// way Plausible's parser (Elixir's URI.parse, the RFC 3986 appendix B pattern) splits it, so odd
// URLs (`about:config`, `/path`, `""`) get the same parts; no URL class, which would reject or
// normalise them.

import { trimEndWhitespace, trimWhitespace } from '../../core/text.ts'

export interface UrlParts {
  /** Lower-cased; '' when absent. */
  scheme: string
  /** The host without brackets, port or user info; undefined when there is no authority or it is empty. */
  host: string | undefined
  /** Raw, '' when absent. */
  path: string
  /** Raw query string without `?`; '' when absent. */
  query: string
  /** Raw fragment without `#`, or undefined when the URL has no `#`. */
  fragment: string | undefined
}

/** Splits a URL like Elixir's `URI.parse`, which never fails. */
export function splitUrl(url: string): UrlParts {
  const n = url.length
  let pos = 0
  let scheme = ''
  if (n > 0 && isAlpha(url.charCodeAt(0))) {
    let j = 1
    while (j < n && isSchemeChar(url.charCodeAt(j))) j++
    if (j < n && url.charCodeAt(j) === 0x3a) {
      scheme = url.slice(0, j)
      // Only `data` matters, and most schemes are lower-case already.
      if (scheme !== 'http' && scheme !== 'https') scheme = scheme.toLowerCase()
      pos = j + 1
    }
  }
  // Native searches: the delimiters are rare, so each scan is one pass over the URL.
  const question = url.indexOf('?', pos)
  const hash = url.indexOf('#', pos)
  // The path (and the authority) end at the first `?` or `#`.
  let pathEnd = question === -1 ? n : question
  if (hash !== -1 && hash < pathEnd) pathEnd = hash
  let host: string | undefined
  if (url.charCodeAt(pos) === 0x2f && url.charCodeAt(pos + 1) === 0x2f) {
    const slash = url.indexOf('/', pos + 2)
    const end = slash === -1 || slash > pathEnd ? pathEnd : slash
    host = hostOf(url, pos + 2, end)
    pos = end
  }
  const path = url.slice(pos, pathEnd)
  let query = ''
  if (pathEnd === question) query = url.slice(question + 1, hash === -1 || hash < question ? n : hash)
  let fragment: string | undefined
  if (hash !== -1) {
    // The upstream pattern's `.` stops at a line feed.
    const lf = url.indexOf('\n', hash + 1)
    fragment = url.slice(hash + 1, lf === -1 ? n : lf)
  }
  return { scheme, host, path, query, fragment }
}

/**
 * The host of the authority `url[start, end)`: after the last `@` (not past a line feed), then a
 * `[v6]` literal or everything up to `:`. Works on offsets: this runs once per event.
 */
function hostOf(url: string, start: number, end: number): string | undefined {
  if (start === end) return undefined
  const lf = url.indexOf('\n', start)
  const atLimit = lf === -1 || lf > end ? end : lf
  const at = url.lastIndexOf('@', atLimit - 1)
  if (at >= start) start = at + 1
  let stop = -1
  if (url.charCodeAt(start) === 0x5b) {
    let j = start + 1
    while (j < end && isIpLiteralChar(url.charCodeAt(j))) j++
    if (j < end && url.charCodeAt(j) === 0x5d) stop = j + 1
  }
  if (stop === -1) {
    const colon = url.indexOf(':', start)
    stop = colon === -1 || colon > end ? end : colon
  }
  if (stop === start) return undefined
  // Brackets go, as upstream trims every leading `[` and trailing `]`.
  while (start < stop && url.charCodeAt(start) === 0x5b) start++
  while (stop > start && url.charCodeAt(stop - 1) === 0x5d) stop--
  return stop === start ? undefined : url.slice(start, stop)
}

function isAlpha(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a)
}

function isSchemeChar(c: number): boolean {
  return isAlpha(c) || (c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2d || c === 0x2e
}

function isIpLiteralChar(c: number): boolean {
  return isAlpha(c) || (c >= 0x30 && c <= 0x39) || c === 0x3a || c === 0x2e
}

/**
 * A host as Plausible keeps it: trimmed, one leading `www.` removed, case kept.
 *
 * @example sanitiseHost(' www.Example.com ') // 'Example.com'
 */
export function sanitiseHost(host: string): string {
  const trimmed = trimWhitespace(host)
  return trimmed.startsWith('www.') ? trimmed.slice(4) : trimmed
}

/**
 * Percent-decodes `s` (`+` stays `+`, `%2F` becomes `/`). A malformed escape (`%zz`, `%4`) stays as
 * written, as in current Elixir; a run of escapes that is not UTF-8 also stays as written, since a
 * JavaScript string cannot hold the raw bytes Plausible would store.
 */
export function percentDecode(s: string): string {
  if (s.indexOf('%') === -1) return s
  try {
    return decodeURIComponent(s)
  } catch {
    return decodeLeniently(s)
  }
}

function decodeLeniently(s: string): string {
  let out = ''
  let i = 0
  const n = s.length
  while (i < n) {
    const pct = s.indexOf('%', i)
    if (pct === -1) {
      out += s.slice(i)
      break
    }
    out += s.slice(i, pct)
    let end = pct
    while (end + 2 < n && s.charCodeAt(end) === 0x25 && isHex(s.charCodeAt(end + 1)) && isHex(s.charCodeAt(end + 2))) {
      end += 3
    }
    if (end === pct) {
      out += '%'
      i = pct + 1
      continue
    }
    const run = s.slice(pct, end)
    try {
      out += decodeURIComponent(run)
    } catch {
      out += run
    }
    i = end
  }
  return out
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
}

/**
 * The pathname Plausible stores: the decoded path with trailing whitespace trimmed, `/` when empty,
 * and with hash mode the decoded fragment after `#`.
 */
export function pathnameOf(parts: UrlParts, hashMode: boolean): string {
  let pathname = parts.path === '' ? '/' : trimEndWhitespace(percentDecode(parts.path))
  // Upstream stores '' here and then fails validation; the spec asks for `/`.
  if (pathname === '') pathname = '/'
  if (hashMode && parts.fragment !== undefined) pathname = `${pathname}#${percentDecode(parts.fragment)}`
  return pathname
}
