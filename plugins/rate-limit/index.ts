// Implements spec/plausible-dialect.md §7 (`throttle`: a site over its ingest rate limit) and the
// per-client-IP limit of spec/lynkow-dialect.md "Rate limit" (`ip_throttle`).
//
// The clock is the event's `receivedAt`, so a request's events share one instant and tests set
// time through the event. Only accepted events are counted: an event this plugin or an earlier one
// drops spends no budget, which in fixed mode gives the same verdicts as Plausible's Hammer buckets.

import { type Static, Type } from '@sinclair/typebox'
import { ConfigError, definePlugin } from '../../core/plugin.ts'
import { connectRedis } from '../../core/redis.ts'
import type { Site } from '../../core/sites.ts'
import { SharedSiteCounts } from './shared-counts.ts'
import { WindowCounter } from './window-counter.ts'

/** Site counters: this engine's own, or every engine's through Redis. */
type SiteCounts = Pick<WindowCounter<number>, 'allows' | 'take'>

// Sites derived under `sites: any` are unbounded in number; their counters are capped like IPs'.
const MAX_TRACKED_SITES = 10_000

/** A limit; `events` is required where no default is given (a per-domain override must name it). */
const Limit = (description: string, events: string, eventsDefault?: number) =>
  Type.Object(
    {
      events: Type.Integer({
        minimum: 0,
        ...(eventsDefault === undefined ? {} : { default: eventsDefault }),
        description: `${events} 0 turns the limit off.`,
      }),
      windowSeconds: Type.Integer({ minimum: 1, default: 60, description: 'Length of the window in seconds.' }),
    },
    { additionalProperties: false, default: {}, description },
  )

type LimitOptions = Static<ReturnType<typeof Limit>>

interface ResolvedLimit {
  events: number
  windowMs: number
}

const toLimit = (limit: LimitOptions, share = 1): ResolvedLimit => ({
  // One worker's share of a machine-wide limit, at least one event (0 stays "no limit").
  events: limit.events === 0 ? 0 : Math.max(1, Math.floor(limit.events / share)),
  windowMs: limit.windowSeconds * 1000,
})

export default definePlugin({
  name: 'rate-limit',
  stage: 'shield',
  summary: 'Drops events beyond a per-site or per-client-IP rate, over fixed or sliding windows.',
  drops: {
    throttle: "the site has accepted its limit of events in the current window (Plausible's name)",
    ip_throttle: 'the client IP has sent its limit of events in the current window',
  },
  options: Type.Object(
    {
      window: Type.Union([Type.Literal('fixed'), Type.Literal('sliding')], {
        default: 'fixed',
        description:
          'fixed: counters reset at each window boundary (as Plausible does); sliding: the previous ' +
          "window's count, weighted by its overlap with the last window length, also counts.",
      }),
      perSite: Limit(
        'The limit every site gets unless `sites` names it.',
        'Events accepted per window for each site.',
        0,
      ),
      sites: Type.Record(
        Type.String({ minLength: 1 }),
        Limit('The limit of this site.', 'Events accepted per window for this site.'),
        {
          default: {},
          description: 'Per-domain limits replacing perSite for that site (any of its domains may be named).',
          examples: [{ 'example.com': { events: 6000, windowSeconds: 60 } }],
        },
      ),
      perIp: Limit(
        'The limit of each client IP.',
        'Events accepted per window from each client IP (Lynkow: about 1,200 a minute).',
        1200,
      ),
      shared: Type.Optional(
        Type.Object(
          {
            redis: Type.String({
              default: 'redis://localhost:6379',
              description: 'Redis server that every engine of the deployment counts site events in.',
            }),
            keyPrefix: Type.String({ default: 'analytics:', description: 'Prefix of the counter keys.' }),
            syncMs: Type.Integer({
              minimum: 5,
              default: 50,
              description:
                'How often each engine sends its new events and learns the totals; a site may pass its limit by what the other engines accept in one interval.',
            }),
            timeoutMs: Type.Integer({
              minimum: 10,
              default: 1000,
              description: 'A Redis command taking longer fails.',
            }),
          },
          {
            additionalProperties: false,
            description:
              'Site limits shared by every engine through Redis (fixed windows). Per-IP limits stay per engine. Without it each engine counts alone.',
          },
        ),
      ),
      maxTrackedIps: Type.Integer({
        minimum: 1,
        default: 100_000,
        description:
          'Most client IPs counted at once. Beyond it the longest-quiet IPs are forgotten (their counts restart), ' +
          'so a flood of distinct addresses cannot exhaust memory.',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    // With `serve --workers N` a site's visitors are spread over the workers (each owns a share of
    // the client IPs), so without a shared count each worker grants its 1/N of the site's limit.
    // Per-IP limits stay whole: every event of an IP reaches its one owning worker.
    const siteShare = options.shared ? 1 : engine.worker.count
    const overrides = new Map<string, ResolvedLimit>()
    for (const [domain, limit] of Object.entries(options.sites)) {
      if (!engine.sites.any && !engine.sites.byDomain(domain)) {
        throw new ConfigError(`sites[${JSON.stringify(domain)}]`, `no configured site has the domain ${domain}`)
      }
      overrides.set(domain, toLimit(limit, siteShare))
    }
    const perSite = toLimit(options.perSite, siteShare)
    const perIp = toLimit(options.perIp)
    const limits = new WeakMap<Site, ResolvedLimit>()
    const limitFor = (site: Site): ResolvedLimit => {
      let limit = limits.get(site)
      if (!limit) {
        limit = perSite
        for (const domain of site.domains ?? [site.domain]) {
          const override = overrides.get(domain)
          if (override) {
            limit = override
            break
          }
        }
        limits.set(site, limit)
      }
      return limit
    }
    for (const site of engine.sites.list()) limitFor(site)

    if (options.shared && options.window === 'sliding') {
      throw new ConfigError('shared', 'shared site limits use fixed windows; set window: fixed')
    }
    const shared = options.shared
      ? new SharedSiteCounts({
          redis: connectRedis(options.shared.redis, 'shared.redis'),
          keyPrefix: options.shared.keyPrefix,
          syncMs: options.shared.syncMs,
          timeoutMs: options.shared.timeoutMs,
          logger: engine.logger,
        })
      : undefined
    if (shared) {
      engine.metric(
        'analytics_rate_limit_shared_failed_syncs_total',
        'counter',
        'Syncs of shared site counts that Redis did not answer.',
        () => shared.failedSyncs,
      )
      engine.metric(
        'analytics_rate_limit_shared_decided_alone_total',
        'counter',
        "Site-limit verdicts given while Redis was unreachable, on this engine's own counts (failing open).",
        () => shared.decidedAlone,
      )
    }
    const siteCounts: SiteCounts = shared ?? new WindowCounter<number>(options.window, MAX_TRACKED_SITES)
    const ipCounts = new WindowCounter<string>(options.window, options.maxTrackedIps)
    return {
      run(event, ctx) {
        const now = event.receivedAt > 0 ? event.receivedAt : Date.now()
        const site = event.site
        const siteLimit = site ? limitFor(site) : undefined
        const checkSite = siteLimit !== undefined && siteLimit.events > 0
        const ip = event.clientIp || event.peerIp
        const checkIp = perIp.events > 0 && ip !== ''
        // Both verdicts before counting either, so an event that one limit drops costs the other nothing.
        if (checkSite && !siteCounts.allows(site!.id, siteLimit.events, siteLimit.windowMs, now)) {
          return ctx.drop('throttle')
        }
        if (checkIp && !ipCounts.allows(ip, perIp.events, perIp.windowMs, now)) return ctx.drop('ip_throttle')
        if (checkSite) siteCounts.take(site!.id, siteLimit.windowMs, now)
        if (checkIp) ipCounts.take(ip, perIp.windowMs, now)
        return undefined
      },
      close: () => shared?.close(),
    }
  },
})
