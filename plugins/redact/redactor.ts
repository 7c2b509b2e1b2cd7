// The redaction rules of the `redact` plugin: e-mail addresses, long tokens and JWTs, and the values of
// configured query keys. E-mails and JWTs are found by hand-written scanners that visit each character
// a bounded number of times (a regex for them backtracks quadratically on inputs like "a@a@a@…");
// the two regexes left have no nested quantifiers.

export interface RedactorOptions {
  emails: boolean
  tokens: boolean
  minTokenLength: number
  queryKeys: string[]
}

export type Redactor = (value: string) => string

export function createRedactor(options: RedactorOptions): Redactor {
  const token = new RegExp(`[A-Za-z0-9_-]{${options.minTokenLength},}`, 'g')
  const keys = options.queryKeys.map((k) => k.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
  // `key=value` after `?`, `&` or `;`, case-insensitive; the value runs to the next separator.
  const query = keys.length ? new RegExp(`([?&;](?:${keys.join('|')})=)[^&#;]*`, 'gi') : undefined
  const minToken = options.minTokenLength
  return (value) => {
    if (value.length < 3) return value
    let out = value
    if (query && out.includes('=')) out = out.replace(query, '$1[redacted]')
    if (options.emails && (out.includes('@') || out.includes('%40'))) out = redactEmails(out)
    if (options.tokens && out.length >= minToken) {
      if (out.includes('eyJ')) out = redactJwts(out)
      out = out.replace(token, (m) => (hasDigitAndLetter(m) ? '[token]' : m))
    }
    return out
  }
}

const isLocal = (c: number) =>
  (c >= 48 && c <= 57) ||
  (c >= 65 && c <= 90) ||
  (c >= 97 && c <= 122) ||
  c === 46 ||
  c === 95 ||
  c === 37 ||
  c === 43 ||
  c === 45
const isDomain = (c: number) =>
  (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 46 || c === 45
const isLetter = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
const isTokenChar = (c: number) => (c >= 48 && c <= 57) || isLetter(c) || c === 95 || c === 45

/** `local@domain.tld` (also with `%40`) → `[email]`. */
export function redactEmails(s: string): string {
  let out = ''
  let last = 0
  let i = 0
  // The next separators are searched again only once passed, so the search stays linear.
  let a = s.indexOf('@')
  let p = s.indexOf('%40')
  for (;;) {
    if (a >= 0 && a < i) a = s.indexOf('@', i)
    if (p >= 0 && p < i) p = s.indexOf('%40', i)
    if (a < 0 && p < 0) break
    const at = a < 0 ? p : p < 0 ? a : Math.min(a, p)
    const sepLength = at === a ? 1 : 3
    let start = at
    // Never look left of the previous replacement: every character is walked left at most once.
    while (start > last && isLocal(s.charCodeAt(start - 1))) start--
    let end = at + sepLength
    while (end < s.length && isDomain(s.charCodeAt(end))) end++
    while (end > at + sepLength && !isLetter(s.charCodeAt(end - 1)) && !isDigit(s.charCodeAt(end - 1))) end--
    // The last dot within the domain only: lastIndexOf would run back to the start of the text.
    let dot = end - 1
    while (dot > at + sepLength && s.charCodeAt(dot) !== 46) dot--
    let tldOk = dot > at + sepLength && end - dot - 1 >= 2
    for (let k = dot + 1; tldOk && k < end; k++) tldOk = isLetter(s.charCodeAt(k))
    if (start === at || !tldOk) {
      i = at + sepLength
      continue
    }
    out += `${s.slice(last, start)}[email]`
    last = end
    i = end
  }
  return last === 0 ? s : out + s.slice(last)
}

const isDigit = (c: number) => c >= 48 && c <= 57

/** `eyJ….….…` (a JSON Web Token) → `[token]`. */
export function redactJwts(s: string): string {
  let out = ''
  let last = 0
  let i = 0
  for (;;) {
    const start = s.indexOf('eyJ', i)
    if (start < 0) break
    let k = start + 3
    const part = () => {
      const from = k
      while (k < s.length && isTokenChar(s.charCodeAt(k))) k++
      return k - from
    }
    const first = part()
    let ok = first >= 4 && s.charCodeAt(k) === 46
    if (ok) {
      k++
      ok = part() >= 4 && s.charCodeAt(k) === 46
      if (ok) {
        k++
        part()
      }
    }
    if (!ok) {
      // Nothing before k can start a JWT that ends past it: resume after the scanned run.
      i = Math.max(k, start + 3)
      continue
    }
    out += `${s.slice(last, start)}[token]`
    last = k
    i = k
  }
  return last === 0 ? s : out + s.slice(last)
}

/** Long runs of one kind (a slug of words, a row of zeros) are not secrets; tokens mix both. */
function hasDigitAndLetter(s: string): boolean {
  let digit = false
  let letter = false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (isDigit(c)) digit = true
    else if (isLetter(c)) letter = true
    if (digit && letter) return true
  }
  return false
}
