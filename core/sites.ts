// The site table: configured sites by domain and by id, or every domain with `sites: any`.

import { createHash } from 'node:crypto'

export interface Shields {
  /** Addresses, and CIDR ranges (our extension to Plausible's exact addresses). */
  ip: string[]
  /** ISO alpha-2 codes; `ZZ` blocks unknown countries. */
  country: string[]
  /** Path patterns with `*` and `**` wildcards. */
  page: string[]
  /** Hostname patterns with `*` and `**` wildcards: an allowlist, applied only when non-empty. */
  hostname: string[]
}

export interface Site {
  /** `site_id` in the rows. */
  id: number
  /** The main domain. */
  domain: string
  /** Every domain the site answers to (the main one first). */
  domains: string[]
  shields: Shields
  /** `false` stops tracking for the site (Lynkow: "tracking disabled"). */
  tracking: boolean
  /** Accept events whose origin is localhost (Lynkow). */
  allowLocalhost: boolean
  /** Answer validation failures with 422 instead of 202 (Lynkow strict/debug mode). */
  strict: boolean
  /** The metrics label: the configured domain, or `other` for sites derived under `sites: any`. */
  label: string
  /** Whether the site comes from the config, not derived under `sites: any`. */
  configured: boolean
  /** Days its rows are kept (its own `retention`, else the global one); undefined = forever. */
  retentionDays: number | undefined
  /**
   * SHA-256 digests of the site's trusted-sender keys (core/senders.ts), never the keys themselves,
   * so nothing that prints a Site can print a key. Empty: the site has no trusted senders.
   */
  keys: readonly Uint8Array[]
}

export interface SiteConfig {
  id: number
  domain: string
  domains?: string[]
  shields?: Partial<Shields>
  tracking?: boolean
  allowLocalhost?: boolean
  strict?: boolean
  retention?: { days: number }
  /** Trusted-sender keys, as configured. */
  keys?: string[]
}

export interface SiteTable {
  /** Whether unknown domains are accepted (`sites: any`). */
  readonly any: boolean
  /** The global `retention.days`: sites without their own, and derived ones, keep rows this long. */
  readonly retentionDays: number | undefined
  /**
   * Swaps in a new site list at once (config reload on SIGHUP, a refreshed site source). Lookups after
   * the call see only the new sites; plugins that cache per Site object recompile for the new objects.
   * `retentionDays` replaces the global retention when given.
   */
  replace(config: SiteConfig[] | 'any', retentionDays?: number | null): void
  byDomain(domain: string): Site | undefined
  /** By the id as written in a URL path (decimal). */
  byId(id: string): Site | undefined
  /** Configured sites, in config order. */
  list(): readonly Site[]
  /** Whether any configured site holds the key of this SHA-256 digest (one lookup, whatever the sites). */
  hasKey(digest: Uint8Array): boolean
}

const NO_SHIELDS: Shields = Object.freeze({ ip: [], country: [], page: [], hostname: [] }) as Shields
const NO_KEYS: readonly Uint8Array[] = Object.freeze([])

/** The SHA-256 of a trusted-sender key: what sites keep and what a presented key is compared by. */
export function keyDigest(key: string): Uint8Array {
  return createHash('sha256').update(key).digest()
}
const DERIVED_CACHE_LIMIT = 10_000

/**
 * A stable site id for a domain under `sites: any`: the first 52 bits of its SHA-256, so it stays an
 * exact JavaScript number and never changes between versions or machines.
 */
export function derivedSiteId(domain: string): number {
  const digest = createHash('sha256').update(domain).digest()
  return digest.readUIntBE(0, 6) * 16 + (digest[6]! >> 4)
}

/** `retentionDays`: the global `retention.days` (undefined = rows are kept forever). */
export function createSiteTable(config: SiteConfig[] | 'any', retentionDays?: number): SiteTable {
  let state = buildState(config, retentionDays)
  return {
    get any() {
      return state.any
    },
    get retentionDays() {
      return state.retentionDays
    },
    byDomain: (domain) => state.byDomain.get(domain) ?? (state.any && domain !== '' ? state.derive(domain) : undefined),
    byId: (id) => state.byId.get(id) ?? (state.any && id !== '' ? state.derive(id) : undefined),
    list: () => state.sites,
    hasKey: (digest) => state.keyDigests.has(Buffer.from(digest).toString('hex')),
    replace(next, days) {
      // null clears the global retention; undefined keeps it.
      state = buildState(next, days === undefined ? state.retentionDays : (days ?? undefined))
    },
  }
}

function buildState(config: SiteConfig[] | 'any', retentionDays: number | undefined) {
  const byDomain = new Map<string, Site>()
  const byId = new Map<string, Site>()
  // Digests, not keys: a lookup's timing can tell only about a SHA-256, which no guess can aim at.
  const keyDigests = new Set<string>()
  const sites: Site[] = []
  if (config !== 'any') {
    for (const c of config) {
      const domains = [c.domain, ...(c.domains ?? []).filter((d) => d !== c.domain)]
      const site: Site = {
        id: c.id,
        domain: c.domain,
        domains,
        shields: {
          ip: c.shields?.ip ?? [],
          country: c.shields?.country ?? [],
          page: c.shields?.page ?? [],
          hostname: c.shields?.hostname ?? [],
        },
        tracking: c.tracking ?? true,
        allowLocalhost: c.allowLocalhost ?? false,
        strict: c.strict ?? false,
        label: c.domain,
        configured: true,
        retentionDays: c.retention?.days ?? retentionDays,
        keys: c.keys === undefined || c.keys.length === 0 ? NO_KEYS : c.keys.map(keyDigest),
      }
      sites.push(site)
      for (const d of domains) byDomain.set(d, site)
      byId.set(String(c.id), site)
      for (const k of site.keys) keyDigests.add(Buffer.from(k).toString('hex'))
    }
  }
  const any = config === 'any'
  // Derived sites are cached so each domain hashes once; the cache is bounded against floods of domains.
  const derived = new Map<string, Site>()
  const derive = (domain: string): Site => {
    let site = derived.get(domain)
    if (site) return site
    if (derived.size >= DERIVED_CACHE_LIMIT) derived.clear()
    site = {
      id: derivedSiteId(domain),
      domain,
      domains: [domain],
      shields: NO_SHIELDS,
      tracking: true,
      allowLocalhost: false,
      strict: false,
      label: 'other',
      configured: false,
      retentionDays,
      keys: NO_KEYS,
    }
    derived.set(domain, site)
    return site
  }
  return { any, retentionDays, byDomain, byId, sites, keyDigests, derive }
}
