// Hosts as the spam check compares them (spec/plausible-dialect.md §7): the referrer URL's host,
// trimmed, with one leading `www.` removed, and a list file's lines normalised the same way.
//
// Plausible compares `URI.parse(referrer).host` after that sanitising, exactly, against a set of
// Matomo's lines. Subdomains of a listed host do not match (Matomo's own substring matching would
// block them; Plausible's exact match does not). We also lower-case both sides, as DNS does.

/** Whether `code` may start a URL scheme (a letter) or continue one (letter, digit, `+`, `-`, `.`). */
function isSchemeChar(code: number, first: boolean): boolean {
  const lower = code | 0x20
  if (lower >= 97 && lower <= 122) return true
  if (first) return false
  return (code >= 48 && code <= 57) || code === 43 || code === 45 || code === 46
}

/** Trims, lower-cases, drops a trailing dot and one leading `www.`. */
export function sanitizeHost(host: string): string {
  let h = host.trim().toLowerCase()
  if (h.endsWith('.')) h = h.slice(0, -1)
  return h.startsWith('www.') ? h.slice(4) : h
}

/**
 * The sanitised host of a referrer URL, or '' when it has none (no `//` authority, as for
 * `android-app:` or a bare path). Scans by index: no regex sees the referrer.
 *
 * @example referrerHost('https://www.Spam.example:8080/x?y') // 'spam.example'
 */
export function referrerHost(url: string): string {
  const n = url.length
  let i = 0
  while (i < n && url.charCodeAt(i) <= 32) i++
  // An optional scheme, then `//` for an authority.
  let j = i
  while (j < n && isSchemeChar(url.charCodeAt(j), j === i)) j++
  if (j > i && url.charCodeAt(j) === 58 /* : */) i = j + 1
  if (url.charCodeAt(i) !== 47 || url.charCodeAt(i + 1) !== 47) return ''
  i += 2
  let end = i
  while (end < n) {
    const c = url.charCodeAt(end)
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */ || c === 92 /* \ */) break
    end++
  }
  const at = url.lastIndexOf('@', end - 1)
  if (at >= i) i = at + 1
  if (url.charCodeAt(i) === 91 /* [ */) {
    const close = url.indexOf(']', i)
    return close < 0 || close > end ? '' : url.slice(i + 1, close).toLowerCase()
  }
  const colon = url.indexOf(':', i)
  if (colon >= 0 && colon < end) end = colon
  return end > i ? sanitizeHost(url.slice(i, end)) : ''
}

/** Whether a sanitised line is a plausible host: no spaces, slashes or markup; dots, dashes, IDN allowed. */
function looksLikeHost(host: string): boolean {
  if (host === '' || host.length > 253) return false
  for (let k = 0; k < host.length; k++) {
    const c = host.charCodeAt(k)
    const ok = (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c > 127 // IDN
    if (!ok) return false
  }
  return true
}

/**
 * Parses a host list in Matomo's `spammers.txt` format: one host per line, empty lines allowed.
 * `#` comment lines and lines that are not a host (an HTML error page, say) are skipped.
 */
export function parseHostList(text: string): string[] {
  const hosts: string[] = []
  for (const line of text.split('\n')) {
    const trimmed = line.trim()
    if (trimmed === '' || trimmed.startsWith('#')) continue
    const host = sanitizeHost(trimmed)
    if (looksLikeHost(host)) hosts.push(host)
  }
  return hosts
}
