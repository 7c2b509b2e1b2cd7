// Bounded interning for session state, so a million idle sessions share their repeated strings and
// attributions instead of each holding copies (design.md: memory of idle sessions).
//
// Attributions with props (entry_meta) are shared too: a site's custom props mostly repeat.
//
// Both pools forget everything when full rather than tracking reference counts: sessions keep what
// they already hold, new sessions start sharing afresh, and the pool's own memory stays capped. For
// the same reason the plugin empties them when most sessions have expired (`clear`): what they held
// for the expired sessions is then garbage too.

import type { AnalyticsEvent } from '../../core/event.ts'
import { sortedProps } from '../../core/rows.ts'
import { type Attribution, attributionOf } from './session.ts'

/** Interns strings (pages, hostnames) up to `limit` distinct values. */
export class StringPool {
  private map = new Map<string, string>()

  constructor(private readonly limit: number) {}

  get size(): number {
    return this.map.size
  }

  /** Forgets every string; a new map, since a cleared one may keep its grown table. */
  clear(): void {
    this.map = new Map()
  }

  readonly intern = (s: string): string => {
    if (s === '') return ''
    const known = this.map.get(s)
    if (known !== undefined) return known
    if (this.map.size >= this.limit) this.map = new Map()
    this.map.set(s, s)
    return s
  }
}

/**
 * Interns attributions by their content, up to `limit` distinct ones. Lookups hash a few characters
 * of each field rather than building a key string (which cost ~1 µs per new session), then compare
 * every field; a bucket of colliding attributions is capped, so crafted collisions cost at most
 * `BUCKET_LIMIT` comparisons and then just go unshared.
 */
export class AttributionPool {
  private buckets = new Map<number, Attribution[]>()
  private count = 0

  constructor(private readonly limit: number) {}

  get size(): number {
    return this.count
  }

  /** Forgets every attribution (see StringPool.clear). */
  clear(): void {
    this.buckets = new Map()
    this.count = 0
  }

  /** The shared attribution equal to the one `event` would freeze. */
  of(event: AnalyticsEvent): Attribution {
    // Props make the session's entry_meta: sorted once here, compared and hashed with the rest.
    let meta: [string[], string[]] | undefined
    for (const _ in event.props) {
      meta = sortedProps(event.props)
      break
    }
    let hash = hashOf(event)
    if (meta !== undefined) for (let i = 0; i < meta[0].length; i++) hash = mix(mix(hash, meta[0][i]!), meta[1][i]!)
    let bucket = this.buckets.get(hash)
    if (bucket !== undefined) {
      for (const known of bucket) if (sameAttribution(known, event, meta)) return known
      if (bucket.length >= BUCKET_LIMIT) return attributionOf(event, meta)
    }
    const made = attributionOf(event, meta)
    if (this.count >= this.limit) {
      this.clear()
      bucket = undefined
    }
    if (bucket === undefined) this.buckets.set(hash, [made])
    else bucket.push(made)
    this.count++
    return made
  }
}

const BUCKET_LIMIT = 8

function hashOf(e: AnalyticsEvent): number {
  let h = e.city_geoname_id | 0
  h = mix(h, e.referrer)
  h = mix(h, e.referrer_source)
  h = mix(h, e.click_id_param)
  h = mix(h, e.utm_medium)
  h = mix(h, e.utm_source)
  h = mix(h, e.utm_campaign)
  h = mix(h, e.utm_content)
  h = mix(h, e.utm_term)
  h = mix(h, e.country_code)
  h = mix(h, e.subdivision1_code)
  h = mix(h, e.subdivision2_code)
  h = mix(h, e.screen_size)
  h = mix(h, e.operating_system)
  h = mix(h, e.operating_system_version)
  h = mix(h, e.browser)
  h = mix(h, e.browser_version)
  return mix(h, e.acquisition_channel)
}

function mix(h: number, s: string): number {
  const n = s.length
  h = Math.imul(h ^ n, 0x9e3779b1)
  if (n === 0) return h
  h = Math.imul(h ^ s.charCodeAt(0) ^ (s.charCodeAt(n - 1) << 16), 0x85ebca6b)
  return Math.imul(
    h ^ s.charCodeAt(n >> 1) ^ (s.charCodeAt(n >> 2) << 8) ^ (s.charCodeAt((3 * n) >> 2) << 16),
    0xc2b2ae35,
  )
}

function sameList(a: readonly string[], b: readonly string[] | undefined): boolean {
  if (b === undefined) return a.length === 0
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function sameAttribution(a: Attribution, e: AnalyticsEvent, meta: [string[], string[]] | undefined): boolean {
  return (
    sameList(a.entry_meta_key, meta?.[0]) &&
    sameList(a.entry_meta_value, meta?.[1]) &&
    a.city_geoname_id === e.city_geoname_id &&
    a.referrer === e.referrer &&
    a.referrer_source === e.referrer_source &&
    a.click_id_param === e.click_id_param &&
    a.utm_medium === e.utm_medium &&
    a.utm_source === e.utm_source &&
    a.utm_campaign === e.utm_campaign &&
    a.utm_content === e.utm_content &&
    a.utm_term === e.utm_term &&
    a.country_code === e.country_code &&
    a.subdivision1_code === e.subdivision1_code &&
    a.subdivision2_code === e.subdivision2_code &&
    a.screen_size === e.screen_size &&
    a.operating_system === e.operating_system &&
    a.operating_system_version === e.operating_system_version &&
    a.browser === e.browser &&
    a.browser_version === e.browser_version &&
    a.acquisition_channel === e.acquisition_channel
  )
}
