// Redaction of free text a client may copy from the page (spec/lynkow-dialect.md "Into the shared
// event model": copied text, error messages and clicked text pass through redaction rules).
//
// Two passes, each linear in the text: e-mail addresses become `[email]`, then long tokens (32 or more
// characters of [A-Za-z0-9_-]: API keys, reset tokens, UUIDs) and JWT-like `a.b.c` chains become
// `[token]`. No regular expression: a hand-written scan cannot backtrack, whatever the client sends.

const EMAIL_MARK = '[email]'
const TOKEN_MARK = '[token]'
/** Shortest run of [A-Za-z0-9_-] taken for a secret. */
const TOKEN_MIN = 32
/** Each of the three parts of a JWT-like `a.b.c` chain has at least this many characters. */
const JWT_PART_MIN = 8

// Character classes by code unit (ASCII only; everything else is "other").
const WORD = 1 // [A-Za-z0-9_-]
const LOCAL = 2 // e-mail local part: word characters and . % +
const DOMAIN = 4 // e-mail domain: [A-Za-z0-9.-]
const CLASS = new Uint8Array(128)
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c)
  const alnum = /[A-Za-z0-9]/.test(ch)
  let cls = 0
  if (alnum || ch === '_' || ch === '-') cls |= WORD
  if (alnum || ch === '_' || ch === '-' || ch === '.' || ch === '%' || ch === '+') cls |= LOCAL
  if (alnum || ch === '-' || ch === '.') cls |= DOMAIN
  CLASS[c] = cls
}

function is(text: string, index: number, cls: number): boolean {
  const c = text.charCodeAt(index)
  return c < 128 && (CLASS[c]! & cls) !== 0
}

/**
 * Replaces e-mail addresses with `[email]` and long or JWT-like tokens with `[token]`.
 * @example redactText('mail ada@example.com, key sk_live_0123456789abcdef0123456789abcdef')
 *   === 'mail [email], key [token]'
 */
export function redactText(text: string): string {
  return redactTokens(redactEmails(text))
}

/** `local@domain.tld` → `[email]`; the domain needs a dot and a last label of two letters or more. */
export function redactEmails(text: string): string {
  let at = text.indexOf('@')
  if (at < 0) return text
  let out = ''
  let copied = 0 // text[0..copied) is already in `out`
  while (at >= 0) {
    // Left: the local part, never reaching back past what was already handled (keeps it linear).
    let start = at
    while (start > copied && is(text, start - 1, LOCAL)) start--
    // Right: the domain; trailing dots and hyphens belong to the sentence, not the address.
    let end = at + 1
    while (end < text.length && is(text, end, DOMAIN)) end++
    while (end > at + 1 && (text.charCodeAt(end - 1) === 46 || text.charCodeAt(end - 1) === 45)) end--
    if (start < at && validDomain(text, at + 1, end)) {
      out += text.slice(copied, start) + EMAIL_MARK
      copied = end
      at = text.indexOf('@', end)
    } else {
      at = text.indexOf('@', at + 1)
    }
  }
  return copied === 0 ? text : out + text.slice(copied)
}

/** Whether text[from..to) looks like `label.label…tld`, the last label two letters or more. */
function validDomain(text: string, from: number, to: number): boolean {
  // Searched within [from, to) only: lastIndexOf would run back to the start of the text each time.
  let dot = to - 1
  while (dot > from && text.charCodeAt(dot) !== 46) dot--
  if (dot <= from || dot >= to - 2) return false
  for (let i = dot + 1; i < to; i++) {
    const c = text.charCodeAt(i) | 0x20
    if (c < 97 || c > 122) return false
  }
  return true
}

/** Runs of 32+ word characters, and `a.b.c` chains of three 8+ character parts, → `[token]`. */
export function redactTokens(text: string): string {
  let out = ''
  let copied = 0
  let i = 0
  const n = text.length
  while (i < n) {
    if (!is(text, i, WORD)) {
      i++
      continue
    }
    // A chain of word runs joined by single dots: text[chainStart..i) after the loop.
    const chainStart = i
    let parts = 0
    let longParts = 0 // parts of JWT_PART_MIN or more
    let anyLong = false // a part of TOKEN_MIN or more
    for (;;) {
      const runStart = i
      while (i < n && is(text, i, WORD)) i++
      const len = i - runStart
      parts++
      if (len >= JWT_PART_MIN) longParts++
      if (len >= TOKEN_MIN) anyLong = true
      if (i + 1 < n && text.charCodeAt(i) === 46 && is(text, i + 1, WORD)) i++
      else break
    }
    if (parts === 3 && longParts === 3) {
      out += text.slice(copied, chainStart) + TOKEN_MARK
      copied = i
    } else if (anyLong) {
      // Replace only the long runs of the chain; walk it again (each character at most twice).
      let j = chainStart
      while (j < i) {
        const runStart = j
        while (j < i && is(text, j, WORD)) j++
        if (j - runStart >= TOKEN_MIN) {
          out += text.slice(copied, runStart) + TOKEN_MARK
          copied = j
        }
        j++ // the dot
      }
    }
  }
  return copied === 0 ? text : out + text.slice(copied)
}
