// The dialect's answers (spec/lynkow-dialect.md "Transport and responses"): fire-and-forget, so every
// outcome but a rate limit is `202 {"message": …}` saying what happened; strict mode turns validation
// failures into `422 {"errors": […]}`; a rate-limit drop is `429` with `Retry-After`.

import { ALLOW_ANY_ORIGIN } from '../../core/plugin.ts'
import type { Issue } from './fields.ts'

const JSON_HEADERS: Readonly<Record<string, string>> = { ...ALLOW_ANY_ORIGIN, 'content-type': 'application/json' }

export const RECEIVED = 'Event received'
export const SITE_NOT_FOUND = 'Event not stored: unknown site'
export const TRACKING_DISABLED = 'Event not stored: tracking is disabled for this site'
export const LOCALHOST_ORIGIN = 'Event not stored: localhost origin (the site does not allow localhost)'
export const INVALID_BODY = 'body must be a JSON object'

/** Plain words for the drop reasons of the standard plugins; others are named by their reason alone. */
const DROP_WORDS: Readonly<Record<string, string>> = {
  bot: 'bot traffic',
  spam_referrer: 'spam referrer',
  dc_ip: 'data-center IP address',
  threat_ip: 'threat IP address',
  site_ip_blocklist: 'excluded IP address',
  site_page_blocklist: 'excluded path',
  site_country_blocklist: 'excluded country',
  site_hostname_allowlist: 'hostname not allowed for this site',
  block: 'ingestion is blocked for this site',
  no_session_for_engagement: 'no session to attach it to',
  plugin_error: 'a processing error',
  verification_agent: 'verification agent',
}

/** A JSON body with the given status, and the CORS header (the route says so: `answersAllowAnyOrigin`). */
export function jsonResponse(status: number, body: string, headers: Readonly<Record<string, string>> = JSON_HEADERS) {
  return new Response(body, { status, headers })
}

/** `{"message": text}` as JSON text. */
export function messageBody(text: string): string {
  return JSON.stringify({ message: text })
}

/** The 202 message for a body that failed validation: every issue, each naming its field and rule. */
export function invalidMessage(issues: readonly Issue[]): string {
  let text = 'Event not stored: invalid body: '
  for (let i = 0; i < issues.length; i++) text += (i === 0 ? '' : '; ') + issues[i]!.message
  return text
}

/** The 422 body of strict mode: `{"errors": [{field, rule, message}, …]}`. */
export function errorsBody(issues: readonly Issue[]): string {
  return JSON.stringify({ errors: issues })
}

/** The 202 message for an event a later stage dropped, with the drop's reason. */
export function droppedMessage(reason: string): string {
  const words = DROP_WORDS[reason]
  return words === undefined ? `Event not stored (${reason})` : `Event not stored: ${words} (${reason})`
}

/** The 429 answer's body and headers for a rate-limit drop. */
export function throttled(
  reason: string,
  retryAfterSeconds: number,
): { body: string; headers: Record<string, string> } {
  return {
    body: messageBody(`Event not stored: too many requests (${reason}); retry after ${retryAfterSeconds} seconds`),
    headers: { ...JSON_HEADERS, 'retry-after': String(retryAfterSeconds) },
  }
}
