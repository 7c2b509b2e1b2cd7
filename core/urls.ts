// URLs as they may appear in logs and messages: a password in a connection URL (from `${VAR}`
// substitution) must never reach them.

/** The URL without user and password; `(invalid url)` for text that is none. */
export function withoutCredentials(url: string): string {
  try {
    const u = new URL(url)
    u.password = ''
    u.username = ''
    return u.toString()
  } catch {
    return '(invalid url)'
  }
}
