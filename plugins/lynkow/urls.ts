// Just enough URL handling for the dialect: host, path and query of a page URL or an Origin/Referer
// header, by index arithmetic. No `new URL()`: it allocates, throws on half the strings clients send,
// and rewrites what it keeps (punycode, re-encoding), while the rows want the text as sent.

/**
 * The host of an absolute URL (`scheme://[user@]host[:port]/…`), lower-cased, port and user info
 * removed, IPv6 literals kept in brackets; '' when there is no `scheme://` or no host.
 * @example hostOf('https://Www.Example.com:8443/a?b') === 'www.example.com'
 */
export function hostOf(url: string): string {
  const start = authorityStart(url)
  if (start < 0) return ''
  const end = authorityEnd(url, start)
  let from = start
  const at = url.lastIndexOf('@', end - 1)
  if (at >= start) from = at + 1
  let to = end
  if (url.charCodeAt(from) === 91 /* [ */) {
    const close = url.indexOf(']', from)
    if (close >= 0 && close < end) to = close + 1
  } else {
    const colon = url.indexOf(':', from)
    if (colon >= 0 && colon < end) to = colon
  }
  return url.slice(from, to).toLowerCase()
}

/** The path of an absolute URL (`/` when it has none), or '' when `url` is not `scheme://…`. */
export function pathOf(url: string): string {
  const start = authorityStart(url)
  if (start < 0) return ''
  const from = authorityEnd(url, start)
  let to = from
  while (to < url.length) {
    const c = url.charCodeAt(to)
    if (c === 63 /* ? */ || c === 35 /* # */) break
    to++
  }
  return to === from ? '/' : url.slice(from, to)
}

/**
 * The query of a URL or path without `?` and without the fragment, as sent; '' when none. A `?`
 * inside the fragment (`/#/a?b=1`, hash routing) is not a query.
 */
export function queryOf(url: string): string {
  const q = url.indexOf('?')
  if (q < 0) return ''
  const hash = url.indexOf('#')
  if (hash >= 0 && hash < q) return ''
  return url.slice(q + 1, hash < 0 ? url.length : hash)
}

/** `path` without its query and fragment. */
export function withoutQuery(path: string): string {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i)
    if (c === 63 || c === 35) return path.slice(0, i)
  }
  return path
}

/** One leading `www.` removed, as Plausible does for hostnames and referrers. */
export function stripWww(host: string): string {
  return host.startsWith('www.') ? host.slice(4) : host
}

const LOOPBACK_V4 = /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/

/**
 * Whether a (lower-case) host is the local machine: `localhost` and its subdomains (RFC 6761),
 * the whole 127.0.0.0/8 range, and `[::1]`. Wider than the spec's three names on purpose: a dev
 * server on `app.localhost` or `127.0.0.2` is just as local.
 */
export function isLocalHost(host: string): boolean {
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host === '[::1]' ||
    (host.startsWith('127.') && LOOPBACK_V4.test(host))
  )
}

/** Index just after `scheme://`, or -1 when the text does not start with a scheme and `//`. */
function authorityStart(url: string): number {
  const sep = url.indexOf('://')
  if (sep <= 0 || sep > 32) return -1
  // scheme = letter *( letter / digit / "+" / "-" / "." ) (RFC 3986 §3.1)
  for (let i = 0; i < sep; i++) {
    const c = url.charCodeAt(i)
    const lower = c | 0x20
    if (lower >= 97 && lower <= 122) continue
    if (i > 0 && ((c >= 48 && c <= 57) || c === 43 || c === 45 || c === 46)) continue
    return -1
  }
  return sep + 3
}

/** Index of the first `/`, `?`, `#` or `\` after the authority's start, or the end of the text. */
function authorityEnd(url: string, start: number): number {
  let i = start
  while (i < url.length) {
    const c = url.charCodeAt(i)
    if (c === 47 || c === 63 || c === 35 || c === 92) break
    i++
  }
  return i
}
