// The Lynkow dialect: `POST /public/:siteId/analytics/collect` (spec/lynkow-dialect.md, seed
// seeds/004_a84ef18e8bb230e0.txt). Turns one JSON body into one event of the shared model and maps
// the pipeline's outcome to Lynkow's fire-and-forget answers.
//
// Order of checks: site, tracking, localhost origin, then the body. The cheap checks come first so a
// disabled or unknown site costs no JSON parse. CORS and OPTIONS are the core's (core/http.ts).

import { join } from 'node:path'
import { Type } from '@sinclair/typebox'
import type { Drop, EngineServices, Ingest, IngestRequest, RunResult } from '../../core/plugin.ts'
import { definePlugin } from '../../core/plugin.ts'
import type { SiteTable } from '../../core/sites.ts'
import { FIELD_COUNT, type FieldValue, type Issue, readFields } from './fields.ts'
import { IdHasher, loadOrCreateKey } from './ids.ts'
import { fillEvent, type MappingSettings, missingRequired } from './mapping.ts'
import {
  droppedMessage,
  errorsBody,
  INVALID_BODY,
  invalidMessage,
  jsonResponse,
  LOCALHOST_ORIGIN,
  messageBody,
  RECEIVED,
  SITE_NOT_FOUND,
  TRACKING_DISABLED,
  throttled,
} from './messages.ts'
import { hostOf, isLocalHost } from './urls.ts'

const NAME = 'lynkow'
export const COLLECT_PATH = '/public/:siteId/analytics/collect'

const DROPS = {
  not_found: 'the site id in the path names no known site',
  tracking_disabled: 'tracking is disabled for the site (`tracking: false`)',
  localhost_origin: 'the Origin (or, without it, the Referer) host is localhost and the site does not allow it',
  invalid: 'the body failed validation (answered 202 with the issues, or 422 in strict mode)',
}

const dropOf = (reason: keyof typeof DROPS): Drop => Object.freeze({ kind: 'drop', reason, plugin: NAME })

const options = Type.Object(
  {
    paths: Type.Array(Type.String({ pattern: '^/[^*?#]*/:siteId(/[^*?#]*)?$' }), {
      default: [COLLECT_PATH],
      minItems: 1,
      uniqueItems: true,
      description:
        'Routes of the collect endpoint; each must hold the :siteId segment. Add a first-party path (proxied through your own domain) to survive ad blockers.',
      examples: [[COLLECT_PATH, '/t/:siteId/c']],
    }),
    strict: Type.Boolean({
      default: false,
      description:
        'Answer validation failures with 422 {"errors": [...]} for every site, instead of 202 with a message (a site can also set `strict` itself).',
    }),
    retryAfterSeconds: Type.Integer({
      minimum: 1,
      maximum: 86_400,
      default: 60,
      description:
        'Retry-After of the 429 answer when a rate limit drops the event (`throttle`, `ip_throttle`), in seconds.',
    }),
    maxEventAgeHours: Type.Number({
      minimum: 0,
      default: 72,
      description: 'A client event_time older than this before arrival is replaced by the arrival time.',
    }),
    maxFutureMinutes: Type.Number({
      minimum: 0,
      default: 5,
      description: 'A client event_time further ahead of arrival than this is replaced by the arrival time.',
    }),
    keyFile: Type.String({
      default: '',
      description:
        'File with the secret key that hashes visitor and session ids (32 hex digits, made with mode 0600 when missing). Empty: lynkow/id.key under the state folder. Engines serving the same sites must share it.',
      examples: ['/var/lib/analytics/lynkow-id.key'],
    }),
  },
  { additionalProperties: false },
)

export default definePlugin({
  name: NAME,
  stage: 'parse',
  summary: 'Accepts Lynkow analytics events on POST /public/:siteId/analytics/collect and answers them the Lynkow way.',
  drops: DROPS,
  options,
  setup(opts, engine) {
    const keyPath = opts.keyFile === '' ? join(engine.stateDir, NAME, 'id.key') : engine.resolvePath(opts.keyFile)
    const collector = new Collector(engine, {
      strict: opts.strict,
      retryAfterSeconds: opts.retryAfterSeconds,
      mapping: {
        hasher: new IdHasher(loadOrCreateKey(keyPath)),
        maxAgeMs: opts.maxEventAgeHours * 3_600_000,
        maxAheadMs: opts.maxFutureMinutes * 60_000,
      },
    })
    return {
      routes: opts.paths.map((path) => ({
        method: 'POST' as const,
        path,
        answersAllowAnyOrigin: true,
        handle: (req: IngestRequest, ingest: Ingest) => collector.handle(req, ingest),
      })),
    }
  },
})

interface CollectorSettings {
  strict: boolean
  retryAfterSeconds: number
  mapping: MappingSettings
}

// Answers that never change are serialised once.
const RECEIVED_BODY = messageBody(RECEIVED)
const NOT_FOUND_BODY = messageBody(SITE_NOT_FOUND)
const TRACKING_DISABLED_BODY = messageBody(TRACKING_DISABLED)
const LOCALHOST_BODY = messageBody(LOCALHOST_ORIGIN)
/**
 * Rate-limit drops, answered 429 with Retry-After (Lynkow's contract): the site limit (Plausible's
 * name) and the per-client-IP limit of the `rate-limit` plugin.
 */
const RATE_LIMITED: ReadonlySet<string> = new Set(['throttle', 'ip_throttle'])
const BAD_BODY: readonly Issue[] = [{ field: 'body', rule: 'json', message: INVALID_BODY }]

/** One per plugin instance: the route's state, made in setup. */
class Collector {
  private readonly sites: SiteTable
  private readonly notFound = dropOf('not_found')
  private readonly trackingDisabled = dropOf('tracking_disabled')
  private readonly localhost = dropOf('localhost_origin')
  private readonly invalid = dropOf('invalid')
  // Both caches are keyed by drop reason: a closed set the plugins declare, so they stay small.
  private readonly rateLimitAnswers = new Map<string, { body: string; headers: Record<string, string> }>()
  private readonly droppedBodies = new Map<string, string>()

  constructor(
    engine: EngineServices,
    private readonly settings: CollectorSettings,
  ) {
    this.sites = engine.sites
  }

  handle(req: IngestRequest, ingest: Ingest): Response | Promise<Response> {
    const event = ingest.newEvent(req, NAME)
    const site = this.sites.byId(req.params.siteId ?? '')
    if (site === undefined) {
      ingest.recordDrop(event, this.notFound)
      return jsonResponse(202, NOT_FOUND_BODY)
    }
    event.site = site
    event.site_id = site.id
    // The path names the site, not the body: its domain stands in for Plausible's `d` (user-id hashes it).
    event.domain = site.domain
    if (!site.tracking) {
      ingest.recordDrop(event, this.trackingDisabled)
      return jsonResponse(202, TRACKING_DISABLED_BODY)
    }
    const originHost = senderHost(event.headers)
    if (!site.allowLocalhost && isLocalHost(originHost)) {
      ingest.recordDrop(event, this.localhost)
      return jsonResponse(202, LOCALHOST_BODY)
    }

    const body = parseObject(req.body)
    let issues: readonly Issue[] | undefined = BAD_BODY
    if (body !== undefined) {
      const values: (FieldValue | undefined)[] = new Array(FIELD_COUNT)
      const invalid = readFields(body, values)
      const missing = missingRequired(values, invalid)
      issues = invalid && missing ? invalid.concat(missing) : (invalid ?? missing)
      if (issues === undefined) fillEvent(event, site, values, originHost, this.settings.mapping)
    }
    if (issues !== undefined) {
      ingest.recordDrop(event, this.invalid)
      return this.settings.strict || site.strict
        ? jsonResponse(422, errorsBody(issues))
        : jsonResponse(202, messageBody(invalidMessage(issues)))
    }

    const outcomes = ingest.process([event])
    return outcomes instanceof Promise ? outcomes.then(this.respond) : this.respond(outcomes)
  }

  /** The answer for the pipeline's verdict on the request's one event. */
  private readonly respond = (outcomes: RunResult[]): Response => {
    const drop = outcomes[0]
    // `== null`: the pipeline's own checks also treat null as "no verdict".
    if (drop == null) return jsonResponse(202, RECEIVED_BODY)
    if (RATE_LIMITED.has(drop.reason)) {
      let answer = this.rateLimitAnswers.get(drop.reason)
      if (answer === undefined) {
        answer = throttled(drop.reason, this.settings.retryAfterSeconds)
        this.rateLimitAnswers.set(drop.reason, answer)
      }
      return jsonResponse(429, answer.body, answer.headers)
    }
    let body = this.droppedBodies.get(drop.reason)
    if (body === undefined) {
      body = messageBody(droppedMessage(drop.reason))
      this.droppedBodies.set(drop.reason, body)
    }
    return jsonResponse(202, body)
  }
}

/** The sending page's host: the Origin header's, or without one (or `null`) the Referer's; '' when neither. */
function senderHost(headers: Headers): string {
  const origin = headers.get('origin')
  const host = origin !== null && origin !== 'null' ? hostOf(origin) : ''
  if (host !== '') return host
  const referer = headers.get('referer')
  return referer === null ? '' : hostOf(referer)
}

/** The body as a JSON object, or undefined when it is empty, not JSON, or JSON but not an object. */
function parseObject(text: string): Record<string, unknown> | undefined {
  // A byte-order mark is not JSON, but some clients send one.
  const json = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
  if (json === '') return undefined
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    return undefined
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined
}
