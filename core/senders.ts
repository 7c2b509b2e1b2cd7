// Trusted server-side senders (issue #12 item 2; docs/operators/senders-and-batches.md): a backend
// that holds one of a site's keys (`sites[].keys`) sends events on behalf of a visitor, with
// `Authorization: Bearer <key>`. What every dialect needs for that lives here: reading the key,
// comparing it in constant time, and the visitor's user agent.

import { timingSafeEqual } from 'node:crypto'
import { keyDigest, type Site, type SiteTable } from './sites.ts'

/** The header a sender may put the visitor's user agent in when its HTTP client sets its own. */
export const VISITOR_UA_HEADER = 'x-forwarded-user-agent'

const BEARER = /^Bearer[ \t]+([\x21-\x7e]+)[ \t]*$/i

/**
 * What the `Authorization` header says: `undefined` when there is no bearer key (the request is an
 * ordinary one: another scheme, such as Basic for a proxy in front, changes nothing), else the
 * digest of the key, or `null` for a `Bearer` header without a usable key.
 *
 * @example bearerDigest(new Headers({ authorization: 'Bearer k3y…' })) // Uint8Array(32)
 */
export function bearerDigest(headers: Headers): Uint8Array | null | undefined {
  const value = headers.get('authorization')
  if (value === null || !/^bearer(?:[ \t]|$)/i.test(value)) return undefined
  const match = BEARER.exec(value)
  return match === null ? null : keyDigest(match[1]!)
}

/**
 * Whether the site holds the key of this digest. Every key of the site is compared, each in
 * constant time, so the answer's timing tells nothing about how close a guess came.
 */
export function siteAcceptsKey(site: Site, digest: Uint8Array): boolean {
  let found = false
  const keys = site.keys
  for (let i = 0; i < keys.length; i++) if (timingSafeEqual(keys[i]!, digest)) found = true
  return found
}

/**
 * Whether any configured site holds the key of this digest (a key that fits none is refused
 * outright). One lookup in the table's digest index, so a flood of made-up keys costs the same with
 * thousands of sites as with one.
 */
export function anySiteAcceptsKey(sites: SiteTable, digest: Uint8Array): boolean {
  return sites.hasKey(digest)
}

/**
 * The visitor's user agent as a trusted sender reports it: `X-Forwarded-User-Agent` when present
 * and not empty (for HTTP clients that insist on their own `User-Agent`), else `User-Agent` (what
 * Plausible's Events API asks server-side callers to set), else ''.
 */
export function visitorUserAgent(headers: Headers): string {
  const forwarded = headers.get(VISITOR_UA_HEADER)
  if (forwarded !== null && forwarded !== '') return forwarded
  return headers.get('user-agent') ?? ''
}
