// The Plausible wire dialect: `POST /api/event` (spec/plausible-dialect.md §1–§5, responses of §7).
// It reads the body, validates it as Plausible does, makes one event per domain of `d`, drops
// unknown domains as `not_found`, runs the rest through the pipeline and answers like Plausible:
// `202 ok` (with `x-plausible-dropped: N` when anything was dropped) or `400 {"errors": …}`.

import { Type } from '@sinclair/typebox'
import type { AnalyticsEvent } from '../../core/event.ts'
import type { Drop, Ingest, IngestRequest, RunResult } from '../../core/plugin.ts'
import { definePlugin } from '../../core/plugin.ts'
import { createBodyReader, type Params, UNREADABLE } from './body.ts'
import { createRequestReader, type FieldErrors, type PlausibleRequest, unreadableBody } from './request.ts'

// Phoenix's `text/2` and `json/2` answer with these exact types.
const TEXT = 'text/plain; charset=utf-8'
const JSON_TYPE = 'application/json; charset=utf-8'

export default definePlugin({
  name: 'plausible',
  stage: 'parse',
  summary: "Accepts Plausible's POST /api/event and answers as Plausible does.",
  drops: {
    not_found: 'the domain named in `d` (or the URL host) is not a configured site, or is an empty part of `d`',
  },
  options: Type.Object(
    {
      paths: Type.Array(Type.String({ pattern: '^/[^:*?#]*$' }), {
        default: ['/api/event'],
        minItems: 1,
        uniqueItems: true,
        description:
          'Routes of the events endpoint. The official tracker posts to /api/event; a first-party path (proxied through your own domain) survives ad blockers that block /api/event.',
        examples: [['/api/event', '/p/e']],
      }),
      missingContentType: Type.Union([Type.Literal('reject'), Type.Literal('json')], {
        default: 'reject',
        description:
          'A request without Content-Type: `reject` answers 400 as Plausible does (it reads no body); `json` reads the body as JSON.',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    const readParams = createBodyReader(options.missingContentType)
    const readRequest = createRequestReader()
    const sites = engine.sites
    // Response copies its init headers, so one Headers object serves every answer.
    const okHeaders = new Headers({ 'content-type': TEXT })
    const errorHeaders = new Headers({ 'content-type': JSON_TYPE })
    const notFound: Drop = Object.freeze({ kind: 'drop', reason: 'not_found', plugin: 'plausible' })

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
        const domain = domains[i]!
        const event = ingest.newEvent(req, 'plausible')
        event.timestamp = timestamp
        event.name = request.name
        event.domain = domain
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
        const site = sites.byDomain(domain)
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

    return {
      routes: options.paths.map((path) => ({
        method: 'POST',
        path,
        handle(req: IngestRequest, ingest: Ingest) {
          const params = readParams(req.request.headers.get('content-type'), req.body)
          if (params instanceof Promise) return params.then((read) => respond(req, ingest, read))
          return respond(req, ingest, params)
        },
      })),
    }
  },
})

function countDrops(outcomes: RunResult[]): number {
  let n = 0
  for (let i = 0; i < outcomes.length; i++) if (outcomes[i] !== undefined) n++
  return n
}

function accepted(dropped: number, headers: Headers): Response {
  if (dropped === 0) return new Response('ok', { status: 202, headers })
  return new Response('ok', {
    status: 202,
    headers: { 'content-type': TEXT, 'x-plausible-dropped': String(dropped) },
  })
}

/** `400 {"errors":{field:[message]}}`, fields in alphabetical order like Plausible's (sorted) map. */
function errorResponse(errors: FieldErrors, headers: Headers): Response {
  const sorted: FieldErrors = {}
  for (const field of Object.keys(errors).sort() as (keyof FieldErrors)[]) sorted[field] = errors[field]
  return new Response(JSON.stringify({ errors: sorted }), { status: 400, headers })
}
