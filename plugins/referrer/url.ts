// Splits a referrer URL the way Plausible's URI parser does (spec/plausible-dialect.md §8, Referrer).
//
// Plausible reads `r` with a lenient RFC 3986 (appendix B) split, not a WHATWG URL parser: nothing is
// normalised, the host keeps its case, only the scheme is lower-cased, userinfo (up to the last `@`)
// and port are dropped, and an empty host or path counts as absent. We mirror that by hand because
// `new URL()` would lower-case, punycode and percent-encode, and costs far more per event.

export interface SplitUri {
  /** Lower-cased scheme, or '' when there is none. */
  scheme: string
  /** The host as written (IPv6 brackets removed), or '' when absent or empty. */
  host: string
  /** The path as written (not decoded), or '' when absent. */
  path: string
}

/** Whether `c` may continue a scheme after its first letter (RFC 3986: ALPHA / DIGIT / + / - / .). */
function isSchemeChar(c: number): boolean {
  return (
    (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 43 || c === 45 || c === 46 // + - .
  )
}

function isAlpha(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90)
}

/** Where the component starting at `from` ends: at the first `?` or `#` (or `/` when asked), else at the end. */
function componentEnd(s: string, from: number, stopAtSlash: boolean): number {
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 63 || c === 35 || (stopAtSlash && c === 47)) return i // ? # /
  }
  return s.length
}

/**
 * Splits `s` into scheme, host and path; writes into `out` (reused by the caller to avoid an object
 * per event) and returns it.
 *
 * @example splitUri('https://user@www.Example.com:8080/a/?q#f', out) // { scheme: 'https', host: 'www.Example.com', path: '/a/' }
 */
export function splitUri(s: string, out: SplitUri): SplitUri {
  out.scheme = ''
  out.host = ''
  out.path = ''
  let i = 0
  // Scheme: a letter, then scheme characters, then ':'; anything else means there is no scheme.
  if (s.length > 0 && isAlpha(s.charCodeAt(0))) {
    let j = 1
    while (j < s.length && isSchemeChar(s.charCodeAt(j))) j++
    if (j < s.length && s.charCodeAt(j) === 58) {
      out.scheme = s.slice(0, j).toLowerCase()
      i = j + 1
    }
  }
  if (s.charCodeAt(i) === 47 && s.charCodeAt(i + 1) === 47) {
    const start = i + 2
    const end = componentEnd(s, start, true)
    out.host = hostOf(s, start, end)
    i = end
  }
  const pathEnd = componentEnd(s, i, false)
  out.path = s.slice(i, pathEnd)
  return out
}

/** The host inside the authority `s[start, end)`: after the last `@`, before a `:port`, brackets removed. */
function hostOf(s: string, start: number, end: number): string {
  const at = s.lastIndexOf('@', end - 1)
  if (at >= start) start = at + 1
  if (start >= end) return ''
  if (s.charCodeAt(start) === 91) {
    // `[v6]`: only the characters Plausible's parser accepts inside brackets, then the closing `]`.
    let j = start + 1
    while (j < end) {
      const c = s.charCodeAt(j)
      if (!(isAlpha(c) || (c >= 48 && c <= 57) || c === 58 || c === 46)) break
      j++
    }
    if (j < end && s.charCodeAt(j) === 93) return s.slice(start + 1, j)
  }
  const colon = s.indexOf(':', start)
  const hostEnd = colon >= 0 && colon < end ? colon : end
  const host = s.slice(start, hostEnd)
  // Brackets that do not form a valid `[v6]` are trimmed like upstream does (leading `[`, trailing `]`).
  // Loops, not /\]+$/: that regex is quadratic on a run of `]` followed by another character.
  let from = 0
  while (from < host.length && host.charCodeAt(from) === 91) from++
  let to = host.length
  while (to > from && host.charCodeAt(to - 1) === 93) to--
  return from === 0 && to === host.length ? host : host.slice(from, to)
}
