// The Plausible wire dialect: `POST /api/event` (spec/plausible-dialect.md §1–§5, responses of §7).
// It reads the body, validates it as Plausible does, makes one event per domain of `d`, drops
// unknown domains as `not_found`, runs the rest through the pipeline and answers like Plausible:
// `202 ok` (with `x-plausible-dropped: N` when anything was dropped) or `400 {"errors": …}`.
//
// Two extensions (issue #12; docs/operators/senders-and-batches.md), neither of which changes an
// ordinary request: trusted senders (a site key in `Authorization: Bearer`, which brings the
// visitor's IP and user agent from headers and a client `timestamp`, and an answer naming each
// drop), and the batch route `<path>/batch` (a JSON array of bodies, answered per item).

import { Type } from '@sinclair/typebox'
import type { AnalyticsEvent } from '../../core/event.ts'
import { INVALID_JSON, isJsonObject, parseJson } from '../../core/json.ts'
import type { Drop, Ingest, IngestRequest, Route, RunResult } from '../../core/plugin.ts'
import { ALLOW_ANY_ORIGIN, definePlugin } from '../../core/plugin.ts'
import { anySiteAcceptsKey, bearerDigest, siteAcceptsKey, visitorUserAgent } from '../../core/senders.ts'
import { createBodyReader, NO_PARAMS, needsNumberText, type Params, UNREADABLE } from './body.ts'
import { type FieldErrors, type PlausibleRequest, readRequest, unreadableBody } from './request.ts'
import { checkWindow, clientTimestampMs } from './timestamp.ts'

// Phoenix's `text/2` and `json/2` answer with these exact types.
const TEXT = 'text/plain; charset=utf-8'
const JSON_TYPE = 'application/json; charset=utf-8'

/** Items one batch may hold (issue #12); more are refused whole with 413. */
export const MAX_BATCH_ITEMS = 1000

/** Field errors of this dialect's extensions, beside Plausible's own fields. */
type Errors = FieldErrors & { timestamp?: string[]; authorization?: string[] }

/** A verified trusted sender: the digest of its key, and the visitor's user agent it reports. */
interface Sender {
  readonly digest: Uint8Array
  readonly userAgent: string
}

/** A `Bearer` header whose key fits no configured site. */
const UNKNOWN_KEY: unique symbol = Symbol('unknown key')

const INVALID = 'is invalid'

export default definePlugin({
  name: 'plausible',
  stage: 'parse',
  summary: "Accepts Plausible's POST /api/event and answers as Plausible does.",
  drops: {
    not_found: 'the domain named in `d` (or the URL host) is not a configured site, or is an empty part of `d`',
    timestamp_too_old:
      "a trusted sender's `timestamp` is older than `clientTimestamps.maxAgeHours`, or than yesterday 00:00 UTC",
    timestamp_in_future: "a trusted sender's `timestamp` is later than `clientTimestamps.maxFutureSeconds` from now",
  },
  options: Type.Object(
    {
      paths: Type.Array(Type.String({ pattern: '^/[^:*?#]*$' }), {
        default: ['/api/event'],
        minItems: 1,
        uniqueItems: true,
        description:
          'Routes of the events endpoint; each also gets `<path>/batch`. The official tracker posts to /api/event; a first-party path (proxied through your own domain) survives ad blockers that block /api/event.',
        examples: [['/api/event', '/p/e']],
      }),
      missingContentType: Type.Union([Type.Literal('reject'), Type.Literal('json')], {
        default: 'reject',
        description:
          'A request without Content-Type: `reject` answers 400 as Plausible does (it reads no body); `json` reads the body as JSON.',
      }),
      clientTimestamps: Type.Object(
        {
          maxAgeHours: Type.Number({
            minimum: 0,
            maximum: 48,
            default: 24,
            description:
              "How old a trusted sender's `timestamp` may be. Whatever the value, nothing before yesterday 00:00 UTC is taken: older days' salts are deleted (spec §9).",
          }),
          maxFutureSeconds: Type.Integer({
            minimum: 0,
            maximum: 3600,
            default: 0,
            description:
              "How far ahead of the engine's clock a trusted sender's `timestamp` may be, in whole seconds (raise it for senders with a skewed clock).",
          }),
        },
        {
          additionalProperties: false,
          default: {},
          description:
            'The window for the `timestamp` field of trusted senders (requests with a site key); outside it the event is dropped with a named reason. Ordinary requests ignore the field.',
        },
      ),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    const readParams = createBodyReader(options.missingContentType)
    const sites = engine.sites
    const window = options.clientTimestamps
    // Response copies its init headers, so one Headers object serves every answer.
    const okHeaders = new Headers({ ...ALLOW_ANY_ORIGIN, 'content-type': TEXT })
    const errorHeaders = new Headers({ ...ALLOW_ANY_ORIGIN, 'content-type': JSON_TYPE })
    const drops: Record<string, Drop> = {}
    for (const reason of ['not_found', 'timestamp_too_old', 'timestamp_in_future']) {
      drops[reason] = Object.freeze({ kind: 'drop', reason, plugin: 'plausible' })
    }
    const notFound = drops.not_found!

    /** The sender of a request, worked out once per request: undefined for an ordinary one. */
    const senderOf = (req: IngestRequest): Sender | undefined | typeof UNKNOWN_KEY => {
      const headers = req.request.headers
      const digest = bearerDigest(headers)
      if (digest === undefined) return undefined
      if (digest === null || !anySiteAcceptsKey(sites, digest)) return UNKNOWN_KEY
      return { digest, userAgent: visitorUserAgent(headers) }
    }

    /** One domain's event, with every field the body gives. */
    const eventFor = (
      req: IngestRequest,
      ingest: Ingest,
      request: PlausibleRequest,
      i: number,
      timestamp: number,
    ): AnalyticsEvent => {
      const event = ingest.newEvent(req, 'plausible')
      event.timestamp = timestamp
      event.name = request.name
      event.domain = request.domains[i]!
      event.url = request.url
      event.hostname = request.hostname
      event.pathname = request.pathname
      event.query = request.query
      event.referrerUrl = request.referrer
      event.hashMode = request.hashMode
      event.interactive = request.interactive
      // Each event owns its props: later plugins may write to them.
      event.props = i === 0 ? request.props : { ...request.props }
      event.scroll_depth = request.scrollDepth
      event.engagement_time = request.engagementTime
      event.revenue_source_amount = request.revenueAmount
      event.revenue_source_currency = request.revenueCurrency
      return event
    }

    // ---- ordinary requests: exactly Plausible's behaviour ----

    const respond = (
      req: IngestRequest,
      ingest: Ingest,
      params: Params | typeof UNREADABLE,
    ): Response | Promise<Response> => {
      if (params === UNREADABLE) return errorResponse(unreadableBody(), errorHeaders)
      const request = readRequest(params)
      if (request.errors !== undefined) return errorResponse(request.errors, errorHeaders)
      return ingestEvents(req, ingest, request)
    }

    const ingestEvents = (
      req: IngestRequest,
      ingest: Ingest,
      request: PlausibleRequest,
    ): Response | Promise<Response> => {
      // One server second for every domain of the request.
      const timestamp = Math.floor(req.receivedAt / 1000)
      const domains = request.domains
      const events: AnalyticsEvent[] = []
      let dropped = 0
      for (let i = 0; i < domains.length; i++) {
        const event = eventFor(req, ingest, request, i, timestamp)
        const site = sites.byDomain(event.domain)
        if (site === undefined) {
          ingest.recordDrop(event, notFound)
          dropped++
          continue
        }
        event.site = site
        event.site_id = site.id
        events.push(event)
      }
      if (events.length === 0) return accepted(dropped, okHeaders)
      const outcomes = ingest.process(events)
      if (Array.isArray(outcomes)) return accepted(dropped + countDrops(outcomes), okHeaders)
      return outcomes.then((settled) => accepted(dropped + countDrops(settled), okHeaders))
    }

    // ---- trusted senders and batches ----

    /**
     * Adds one body's events to `run`: validated, with the sender's key checked against each site
     * and its timestamp against the window. Returns the item's errors when it is rejected whole.
     */
    const addItem = (
      run: Run,
      req: IngestRequest,
      ingest: Ingest,
      params: Params,
      sender: Sender | undefined,
      index: number,
    ): Errors | undefined => {
      const request = readRequest(params)
      let errors: Errors | undefined = request.errors
      let timestamp = Math.floor(req.receivedAt / 1000)
      let late: string | undefined
      if (sender !== undefined) {
        const ms = clientTimestampMs(params.timestamp)
        if (Number.isNaN(ms)) errors = { ...errors, timestamp: [INVALID] }
        else if (ms !== undefined) {
          late = checkWindow(ms, req.receivedAt, window)
          timestamp = Math.floor(ms / 1000)
        }
      }
      if (errors !== undefined) return errors
      const domains = request.domains
      if (sender !== undefined) {
        for (let i = 0; i < domains.length; i++) {
          const site = sites.byDomain(domains[i]!)
          if (site !== undefined && !siteAcceptsKey(site, sender.digest)) {
            return { authorization: [`the key is not one of the keys of the site ${JSON.stringify(domains[i])}`] }
          }
        }
      }
      for (let i = 0; i < domains.length; i++) {
        const event = eventFor(req, ingest, request, i, timestamp)
        const site = sites.byDomain(event.domain)
        if (site === undefined) {
          ingest.recordDrop(event, notFound)
          run.settle(index, event.domain, 'not_found')
          continue
        }
        event.site = site
        event.site_id = site.id
        if (late !== undefined) {
          ingest.recordDrop(event, drops[late]!)
          run.settle(index, event.domain, late)
          continue
        }
        if (sender !== undefined) {
          event.trustedSender = true
          event.userAgent = sender.userAgent
        }
        run.add(index, event)
      }
      return undefined
    }

    /** Runs the collected events through the pipeline, in order, and fills in their outcomes. */
    const finish = (run: Run, ingest: Ingest, answer: () => Response): Response | Promise<Response> => {
      if (run.events.length === 0) return answer()
      const outcomes = ingest.process(run.events)
      if (Array.isArray(outcomes)) {
        run.outcomes(outcomes)
        return answer()
      }
      return outcomes.then((settled) => {
        run.outcomes(settled)
        return answer()
      })
    }

    const respondKeyed = (
      req: IngestRequest,
      ingest: Ingest,
      params: Params | typeof UNREADABLE,
      sender: Sender,
    ): Response | Promise<Response> => {
      if (params === UNREADABLE) return errorResponse(unreadableBody(), errorHeaders)
      const run = new Run()
      const errors = addItem(run, req, ingest, params, sender, 0)
      if (errors?.authorization !== undefined) return unauthorized(errors.authorization[0]!)
      if (errors !== undefined) return errorResponse(errors, errorHeaders)
      return finish(run, ingest, () => keyedAnswer(run))
    }

    const respondBatch = (
      req: IngestRequest,
      ingest: Ingest,
      sender: Sender | undefined,
    ): Response | Promise<Response> => {
      // Items are read as `application/json` bodies whatever the Content-Type: a batch is JSON.
      const body = parseJson(req.body, (plain) => Array.isArray(plain) && plain.some(needsNumberText))
      if (body === INVALID_JSON || !Array.isArray(body)) {
        return errorResponse({ request: ['Unable to parse request body as a JSON array'] }, errorHeaders)
      }
      if (body.length > MAX_BATCH_ITEMS) {
        return new Response(
          JSON.stringify({
            errors: { request: [`a batch holds at most ${MAX_BATCH_ITEMS} items; this one holds ${body.length}`] },
          }),
          { status: 413, headers: errorHeaders },
        )
      }
      const run = new Run()
      for (let i = 0; i < body.length; i++) {
        const item: unknown = body[i]
        // Like an `application/json` body that is valid JSON but no object: every field is missing.
        const errors = addItem(run, req, ingest, isJsonObject(item) ? item : NO_PARAMS, sender, i)
        if (errors !== undefined) run.reject(i, sortErrors(errors))
      }
      return finish(run, ingest, () => batchAnswer(run, sender !== undefined))
    }

    return {
      routes: options.paths.flatMap((path): Route[] => [
        {
          method: 'POST',
          path,
          answersAllowAnyOrigin: true,
          handle(req, ingest) {
            const sender = senderOf(req)
            if (sender === UNKNOWN_KEY) return unauthorized('the key is not one of the configured keys')
            const params = readParams(req.request.headers.get('content-type'), req.body)
            if (sender === undefined) {
              if (params instanceof Promise) return params.then((read) => respond(req, ingest, read))
              return respond(req, ingest, params)
            }
            if (params instanceof Promise) return params.then((read) => respondKeyed(req, ingest, read, sender))
            return respondKeyed(req, ingest, params, sender)
          },
        },
        {
          method: 'POST',
          path: `${path.replace(/\/+$/, '')}/batch`,
          answersAllowAnyOrigin: true,
          handle(req, ingest) {
            const sender = senderOf(req)
            if (sender === UNKNOWN_KEY) return unauthorized('the key is not one of the configured keys')
            return respondBatch(req, ingest, sender)
          },
        },
      ]),
    }
  },
})

/**
 * The events of one request on the keyed or batch path, and what became of each: every domain of
 * every item gets a slot, in order, settled before the pipeline (not_found, a timestamp outside the
 * window) or by it.
 */
class Run {
  readonly events: AnalyticsEvent[] = []
  /** The slot of each event in `events`. */
  private readonly slotOfEvent: number[] = []
  private readonly slotItem: number[] = []
  private readonly slotDomain: string[] = []
  /** The drop reason of each slot; undefined = stored. */
  private readonly slotReason: (string | undefined)[] = []
  readonly rejected: { index: number; errors: Errors }[] = []

  add(index: number, event: AnalyticsEvent): void {
    this.slotOfEvent.push(this.slotItem.length)
    this.events.push(event)
    this.settle(index, event.domain, undefined)
  }

  settle(index: number, domain: string, reason: string | undefined): void {
    this.slotItem.push(index)
    this.slotDomain.push(domain)
    this.slotReason.push(reason)
  }

  reject(index: number, errors: Errors): void {
    this.rejected.push({ index, errors })
  }

  outcomes(results: RunResult[]): void {
    for (let i = 0; i < results.length; i++) {
      const drop = results[i]
      if (drop !== undefined) this.slotReason[this.slotOfEvent[i]!] = drop.reason
    }
  }

  get accepted(): number {
    let n = 0
    for (const reason of this.slotReason) if (reason === undefined) n++
    return n
  }

  /** The dropped events, in order, by the domain they named (the single route's answer). */
  droppedByDomain(): { domain: string; reason: string }[] {
    const out: { domain: string; reason: string }[] = []
    for (let s = 0; s < this.slotReason.length; s++) {
      const reason = this.slotReason[s]
      if (reason !== undefined) out.push({ domain: this.slotDomain[s]!, reason })
    }
    return out
  }

  /** The dropped events, in order, by item index; `withReasons: false` says only `dropped`. */
  droppedByIndex(withReasons: boolean): { index: number; reason: string }[] {
    const out: { index: number; reason: string }[] = []
    for (let s = 0; s < this.slotReason.length; s++) {
      const reason = this.slotReason[s]
      if (reason !== undefined) out.push({ index: this.slotItem[s]!, reason: withReasons ? reason : 'dropped' })
    }
    return out
  }
}

/** A trusted sender's answer: how many events were stored, and each dropped one's domain and reason. */
function keyedAnswer(run: Run): Response {
  const dropped = run.droppedByDomain()
  const headers: Record<string, string> = { ...ALLOW_ANY_ORIGIN, 'content-type': JSON_TYPE }
  if (dropped.length > 0) headers['x-plausible-dropped'] = String(dropped.length)
  return new Response(JSON.stringify({ accepted: run.accepted, dropped }), { status: 202, headers })
}

/**
 * A batch's answer, per item. An ordinary (unkeyed) caller learns that an item was dropped but not
 * why, as the single route tells it only how many: a bot is not told which rule caught it.
 */
function batchAnswer(run: Run, trusted: boolean): Response {
  return new Response(
    JSON.stringify({ accepted: run.accepted, dropped: run.droppedByIndex(trusted), rejected: run.rejected }),
    { status: 202, headers: { ...ALLOW_ANY_ORIGIN, 'content-type': JSON_TYPE } },
  )
}

/** `401` for a bearer key that is unknown or does not belong to the event's site. */
function unauthorized(message: string): Response {
  return new Response(JSON.stringify({ errors: { authorization: [message] } }), {
    status: 401,
    headers: { ...ALLOW_ANY_ORIGIN, 'content-type': JSON_TYPE, 'www-authenticate': 'Bearer error="invalid_token"' },
  })
}

function countDrops(outcomes: RunResult[]): number {
  let n = 0
  for (let i = 0; i < outcomes.length; i++) if (outcomes[i] !== undefined) n++
  return n
}

function accepted(dropped: number, headers: Headers): Response {
  if (dropped === 0) return new Response('ok', { status: 202, headers })
  return new Response('ok', {
    status: 202,
    headers: { ...ALLOW_ANY_ORIGIN, 'content-type': TEXT, 'x-plausible-dropped': String(dropped) },
  })
}

/** Fields in alphabetical order, like Plausible's (sorted) error map. */
function sortErrors(errors: Errors): Errors {
  const sorted: Errors = {}
  for (const field of Object.keys(errors).sort() as (keyof Errors)[]) sorted[field] = errors[field]
  return sorted
}

/** `400 {"errors":{field:[message]}}`, fields in alphabetical order like Plausible's (sorted) map. */
function errorResponse(errors: Errors, headers: Headers): Response {
  return new Response(JSON.stringify({ errors: sortErrors(errors) }), { status: 400, headers })
}
