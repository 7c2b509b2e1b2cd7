// The Lynkow dialect through its route's handler: a fake request in, a fake pipeline behind it.

import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { type AnalyticsEvent, eventFromRequest } from '../../core/event.ts'
import type { Drop, Ingest, IngestRequest, Route, RunResult } from '../../core/plugin.ts'
import { setupPlugin, startTestEngine, testServices } from '../../core/testing.ts'
import { EVENT_TYPES, FIELDS, type FieldName, type Issue, KEY_TO_FIELD } from './fields.ts'
import { IdHasher, siphash24, sipKey } from './ids.ts'
import plugin, { COLLECT_PATH } from './index.ts'
import type { LynkowClientHints } from './mapping.ts'
import { redactText } from './redact.ts'
import { parseEventTime, parseIsoTime } from './time.ts'
import { hostOf, isLocalHost, pathOf, queryOf } from './urls.ts'

// ---- fakes ----

/** A pipeline stand-in: records what the dialect hands it and answers with a chosen verdict. */
class FakeIngest implements Ingest {
  processed: AnalyticsEvent[] = []
  recorded: string[] = []
  constructor(
    private readonly verdict: string | undefined = undefined,
    private readonly async = false,
  ) {}

  newEvent(req: IngestRequest, dialect: string): AnalyticsEvent {
    return eventFromRequest(req, dialect)
  }

  process(events: AnalyticsEvent[]): RunResult[] | Promise<RunResult[]> {
    this.processed.push(...events)
    const verdict: RunResult =
      this.verdict === undefined ? undefined : { kind: 'drop', reason: this.verdict, plugin: 'fake' }
    const outcomes = events.map(() => verdict)
    return this.async ? Promise.resolve(outcomes) : outcomes
  }

  recordDrop(_event: AnalyticsEvent, drop: Drop): void {
    this.recorded.push(drop.reason)
  }
}

const NOW = Date.UTC(2026, 10, 22, 12, 0, 0)
const SITES = [
  { id: 1, domain: 'example.com' },
  { id: 2, domain: 'off.example', tracking: false },
  { id: 3, domain: 'dev.example', allowLocalhost: true },
  { id: 4, domain: 'strict.example', strict: true },
]
const stateDir = mkdtempSync(join(tmpdir(), 'lynkow-test-'))

async function routeFor(options: Record<string, unknown> = {}, dir = stateDir): Promise<Route> {
  const instance = await setupPlugin(plugin, options, testServices({ sites: SITES, stateDir: dir }))
  const route = instance.routes?.[0]
  if (!route) throw new Error('no route')
  return route
}
const defaultRoute = await routeFor()
const strictRoute = await routeFor({ strict: true })

interface Sent {
  status: number
  json: { message?: string; errors?: Issue[] }
  response: Response
  ingest: FakeIngest
  /** The event the pipeline got, if any. */
  event: AnalyticsEvent | undefined
}

interface SendOptions {
  siteId?: string
  headers?: Record<string, string>
  route?: Route
  verdict?: string
  async?: boolean
  receivedAt?: number
}

async function send(body: unknown, o: SendOptions = {}): Promise<Sent> {
  const request = new Request(`http://engine.test/public/${o.siteId ?? '1'}/analytics/collect`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'user-agent': 'Mozilla/5.0 test', ...o.headers },
  })
  const req: IngestRequest = {
    request,
    body: typeof body === 'string' ? body : JSON.stringify(body),
    params: { siteId: o.siteId ?? '1' },
    peerIp: '203.0.113.9',
    receivedAt: o.receivedAt ?? NOW,
  }
  const ingest = new FakeIngest(o.verdict, o.async)
  const used = o.route ?? defaultRoute
  const response = await used.handle(req, ingest)
  // Every answer carries the CORS header itself, as the route declares (the HTTP layer adds none).
  expect(used.answersAllowAnyOrigin).toBe(true)
  expect(response.headers.get('access-control-allow-origin')).toBe('*')
  const json = (await response.clone().json()) as Sent['json']
  return { status: response.status, json, response, ingest, event: ingest.processed[0] }
}

/** A valid minimal body with `extra` merged in. */
const minimal = (extra: Record<string, unknown> = {}) => ({ event_type: 'pageview', page_path: '/', ...extra })

async function stored(body: unknown, o: SendOptions = {}): Promise<AnalyticsEvent> {
  const sent = await send(body, o)
  expect(sent.json).toEqual({ message: 'Event received' })
  expect(sent.status).toBe(202)
  if (!sent.event) throw new Error('no event reached the pipeline')
  return sent.event
}

/** What of an event the dialect sets, for comparing two bodies. */
function snapshot(e: AnalyticsEvent) {
  return {
    name: e.name,
    pathname: e.pathname,
    hostname: e.hostname,
    url: e.url,
    query: e.query,
    referrerUrl: e.referrerUrl,
    timestamp: e.timestamp,
    user_id: e.user_id,
    session_id: e.session_id,
    scroll_depth: e.scroll_depth,
    engagement_time: e.engagement_time,
    utm: [e.utm_source, e.utm_medium, e.utm_campaign, e.utm_term, e.utm_content],
    props: e.props,
    dialectData: e.dialectData,
    interactive: e.interactive,
  }
}

const camel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())

/** One valid value per field (the "valid" case of every rule). */
const SAMPLES: Record<FieldName, unknown> = {
  session_id: 'sess-1',
  visitor_id: 'visitor-123',
  cookie_visitor_id: 'cookie-abc',
  visitor_id_source: 'cookie',
  event_type: 'click',
  page_url: 'https://www.shop.example/p?utm_source=q',
  page_path: '/p',
  event_time: NOW - 60_000,
  page_title: 'Pricing',
  page_referrer: 'https://news.example/a',
  scroll_depth: 40,
  time_on_page: 1500,
  engaged_time: 1200,
  lcp: 2100.5,
  fid: 12,
  cls: 0.05,
  ttfb: 80,
  inp: 120,
  utm_source: 'newsletter',
  utm_medium: 'email',
  utm_campaign: 'launch',
  utm_term: 'analytics',
  utm_content: 'hero',
  traffic_source: 'email',
  device_type: 'laptop',
  browser: 'Firefox',
  browser_version: '140.0',
  os: 'Linux',
  os_version: '6.1',
  screen_width: 1920,
  screen_height: 1080,
  language: 'fr-FR',
  timezone: 'Europe/Paris',
  referrer_domain: 'news.example',
  is_entry: true,
  is_exit: false,
  visible: true,
  max_scroll_depth: 75,
  click_x: 10.5,
  click_y: 300,
  click_element: 'button.cta',
  click_element_tag: 'button',
  click_element_id: 'buy',
  click_element_class: 'cta primary',
  click_element_text: 'Buy now',
  click_target_url: 'https://shop.example/cart',
  click_count: 3,
  viewport_width: 1280,
  viewport_height: 720,
  file_name: 'report.pdf',
  file_extension: 'pdf',
  file_url: 'https://shop.example/report.pdf',
  copied_text: 'hello world',
  scroll_behavior: 'reading',
  form_id: 'signup',
  form_name: 'Signup',
  field_name: 'email',
  field_type: 'email',
  field_time: 5000,
  error_message: 'Required field',
  form_completion_rate: 50,
}

// ---- the route ----

describe('route', () => {
  test('declares POST /public/:siteId/analytics/collect', async () => {
    expect(defaultRoute.method).toBe('POST')
    expect(defaultRoute.path).toBe('/public/:siteId/analytics/collect')
    expect(COLLECT_PATH).toBe(defaultRoute.path)
  })

  test("records the seed's example as a pageview of /pricing", async () => {
    const event = await stored({ event: 'page_view', path: '/pricing' })
    expect(event.name).toBe('pageview')
    expect(event.pathname).toBe('/pricing')
    expect(event.site_id).toBe(1)
    expect(event.site?.domain).toBe('example.com')
    expect(event.domain).toBe('example.com')
    expect(event.hostname).toBe('example.com')
    expect(event.dialect).toBe('lynkow')
    // Missing ids are left for the user-id and sessions plugins; missing time is the arrival time.
    expect(event.user_id).toBe(0n)
    expect(event.session_id).toBe(0n)
    expect(event.timestamp).toBe(NOW / 1000)
    expect(event.props).toEqual({})
    expect(event.interactive).toBe(true)
  })

  test("records the seed's sendBeacon body (text/plain) the same way", async () => {
    const event = await stored(JSON.stringify({ event: 'page_view', path: '/pricing' }), {
      headers: { 'content-type': 'text/plain;charset=UTF-8' },
    })
    expect([event.name, event.pathname]).toEqual(['pageview', '/pricing'])
  })

  test('answers 202 {"message": "Event received"} as JSON when stored', async () => {
    const sent = await send(minimal())
    expect(sent.status).toBe(202)
    expect(sent.response.headers.get('content-type')).toBe('application/json')
    expect(await sent.response.text()).toBe('{"message":"Event received"}')
    expect(sent.ingest.recorded).toEqual([])
  })

  test('waits for an asynchronous pipeline', async () => {
    const sent = await send(minimal(), { async: true })
    expect(sent.json.message).toBe('Event received')
    const dropped = await send(minimal(), { async: true, verdict: 'bot' })
    expect(dropped.json.message).toBe('Event not stored: bot traffic (bot)')
  })

  test('ignores unknown keys', async () => {
    const event = await stored(minimal({ colour: 'red', nested: { a: 1 } }))
    expect(event.props).toEqual({})
  })
})

describe('through the engine', async () => {
  // Only this plugin, named by path (the registry line is the lead's), and the memory sink.
  const engine = await startTestEngine(
    { sites: [{ id: 7, domain: 'example.com' }], plugins: ['./plugins/lynkow/index.ts'] },
    join(import.meta.dir, '../..'),
  )
  afterAll(() => engine.close())

  test("stores the seed's sendBeacon example and answers with CORS", async () => {
    const res = await engine.post('/public/7/analytics/collect', '{ "event": "page_view", "path": "/pricing" }', {
      headers: { 'content-type': 'text/plain;charset=UTF-8', origin: 'https://www.example.com' },
    })
    expect(res.status).toBe(202)
    expect(await res.json()).toEqual({ message: 'Event received' })
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
    const row = engine.events().at(-1)
    expect(row).toMatchObject({ name: 'pageview', pathname: '/pricing', hostname: 'example.com' })
  })

  test('answers an unknown site with 202 and stores nothing', async () => {
    const before = engine.events().length
    const res = await engine.post('/public/8/analytics/collect', { event: 'pageview', path: '/' })
    expect([res.status, await res.json()]).toEqual([202, { message: 'Event not stored: unknown site' }])
    expect(engine.events().length).toBe(before)
  })
})

// ---- site, tracking, localhost ----

describe('site checks', () => {
  test('drops an event for an unknown site (not_found)', async () => {
    const sent = await send(minimal(), { siteId: '99' })
    expect(sent.status).toBe(202)
    expect(sent.json).toEqual({ message: 'Event not stored: unknown site' })
    expect(sent.ingest.recorded).toEqual(['not_found'])
    expect(sent.event).toBeUndefined()
  })

  test('drops an event when tracking is disabled for the site (tracking_disabled)', async () => {
    const sent = await send(minimal(), { siteId: '2' })
    expect(sent.status).toBe(202)
    expect(sent.json).toEqual({ message: 'Event not stored: tracking is disabled for this site' })
    expect(sent.ingest.recorded).toEqual(['tracking_disabled'])
    expect(sent.event).toBeUndefined()
  })

  test.each([
    ['origin', 'http://localhost:3000'],
    ['origin', 'http://127.0.0.1'],
    ['origin', 'http://[::1]:8080'],
    ['origin', 'https://app.localhost'],
    ['origin', 'http://127.0.0.2:5173'],
    ['referer', 'http://localhost:3000/page'],
  ])('drops an event whose %s is %s (localhost_origin)', async (header, value) => {
    const sent = await send(minimal(), { headers: { [header]: value } })
    expect(sent.status).toBe(202)
    expect(sent.json).toEqual({
      message: 'Event not stored: localhost origin (the site does not allow localhost)',
    })
    expect(sent.ingest.recorded).toEqual(['localhost_origin'])
    expect(sent.event).toBeUndefined()
  })

  test('judges by the Origin, not the Referer, when both are sent', async () => {
    await stored(minimal(), { headers: { origin: 'https://example.com', referer: 'http://localhost/' } })
    const sent = await send(minimal(), { headers: { origin: 'http://localhost', referer: 'https://example.com/' } })
    expect(sent.ingest.recorded).toEqual(['localhost_origin'])
  })

  test('reads the Referer when the Origin is "null"', async () => {
    const sent = await send(minimal(), { headers: { origin: 'null', referer: 'http://localhost/x' } })
    expect(sent.ingest.recorded).toEqual(['localhost_origin'])
  })

  test('accepts a localhost origin when the site allows it', async () => {
    const event = await stored(minimal(), { siteId: '3', headers: { origin: 'http://localhost:3000' } })
    expect(event.site_id).toBe(3)
    expect(event.hostname).toBe('localhost')
  })

  test.each(['https://localhost.example.com', 'https://mylocalhost', 'http://127.example', 'http://10.0.0.1'])(
    'keeps an event from %s',
    async (origin) => {
      await stored(minimal(), { headers: { origin } })
    },
  )

  test('checks the site before the body', async () => {
    const sent = await send('not json', { siteId: '2' })
    expect(sent.ingest.recorded).toEqual(['tracking_disabled'])
  })
})

// ---- drops by later stages ----

describe('outcomes of later stages', () => {
  test.each([
    ['bot', 'Event not stored: bot traffic (bot)'],
    ['spam_referrer', 'Event not stored: spam referrer (spam_referrer)'],
    ['site_ip_blocklist', 'Event not stored: excluded IP address (site_ip_blocklist)'],
    ['site_page_blocklist', 'Event not stored: excluded path (site_page_blocklist)'],
    ['site_country_blocklist', 'Event not stored: excluded country (site_country_blocklist)'],
    ['site_hostname_allowlist', 'Event not stored: hostname not allowed for this site (site_hostname_allowlist)'],
    ['dc_ip', 'Event not stored: data-center IP address (dc_ip)'],
    ['threat_ip', 'Event not stored: threat IP address (threat_ip)'],
    ['block', 'Event not stored: ingestion is blocked for this site (block)'],
    ['no_session_for_engagement', 'Event not stored: no session to attach it to (no_session_for_engagement)'],
    ['plugin_error', 'Event not stored: a processing error (plugin_error)'],
    ['verification_agent', 'Event not stored: verification agent (verification_agent)'],
    ['my_custom_rule', 'Event not stored (my_custom_rule)'],
  ])('answers 202 naming the reason when a later stage drops the event as %s', async (reason, message) => {
    const sent = await send(minimal(), { verdict: reason })
    expect(sent.status).toBe(202)
    expect(sent.json).toEqual({ message })
    // The pipeline counts its own drops; the dialect records nothing more.
    expect(sent.ingest.recorded).toEqual([])
    // The answer is the same the second time (served from the per-reason cache).
    expect((await send(minimal(), { verdict: reason })).json).toEqual({ message })
  })

  test.each(['throttle', 'ip_throttle'])(
    'answers 429 with Retry-After when the event is dropped as %s',
    async (reason) => {
      for (let i = 0; i < 2; i++) {
        const sent = await send(minimal(), { verdict: reason })
        expect(sent.status).toBe(429)
        expect(sent.response.headers.get('retry-after')).toBe('60')
        expect(sent.response.headers.get('content-type')).toBe('application/json')
        expect(sent.json).toEqual({
          message: `Event not stored: too many requests (${reason}); retry after 60 seconds`,
        })
      }
    },
  )

  test('takes Retry-After from retryAfterSeconds', async () => {
    const sent = await send(minimal(), { verdict: 'throttle', route: await routeFor({ retryAfterSeconds: 5 }) })
    expect(sent.response.headers.get('retry-after')).toBe('5')
    expect(sent.json.message).toContain('retry after 5 seconds')
  })
})

// ---- validation and its answers ----

describe('validation answers', () => {
  test.each([
    ['an empty body', ''],
    ['text that is not JSON', 'event=pageview'],
    ['a JSON array', '[{"event":"pageview","path":"/"}]'],
    ['a JSON number', '42'],
    ['JSON null', 'null'],
    ['a JSON string', '"pageview"'],
  ])('answers 202 for %s and counts it invalid', async (_, body) => {
    const sent = await send(body)
    expect(sent.status).toBe(202)
    expect(sent.json).toEqual({ message: 'Event not stored: invalid body: body must be a JSON object' })
    expect(sent.ingest.recorded).toEqual(['invalid'])
    expect(sent.event).toBeUndefined()
  })

  test('accepts a body that starts with a byte-order mark', async () => {
    await stored(`\uFEFF${JSON.stringify(minimal())}`)
  })

  test('answers 202 naming each failed field and rule, in table order', async () => {
    const sent = await send({ visitor_id: 'short', scroll_depth: 101, page_path: '/' })
    expect(sent.status).toBe(202)
    expect(sent.json).toEqual({
      message:
        'Event not stored: invalid body: visitor_id must be 8 to 64 characters; scroll_depth must be between 0 and 100; event_type is required',
    })
    expect(sent.ingest.recorded).toEqual(['invalid'])
  })

  test('answers 422 with the errors when the plugin option strict is on', async () => {
    const sent = await send({ visitor_id: 'short', page_path: '/' }, { route: strictRoute })
    expect(sent.status).toBe(422)
    expect(sent.json).toEqual({
      errors: [
        { field: 'visitor_id', rule: 'length', message: 'visitor_id must be 8 to 64 characters' },
        { field: 'event_type', rule: 'required', message: 'event_type is required' },
      ],
    })
    expect(sent.ingest.recorded).toEqual(['invalid'])
  })

  test('answers 422 when the site is strict', async () => {
    const sent = await send({ page_path: '/' }, { siteId: '4' })
    expect(sent.status).toBe(422)
    expect(sent.json.errors).toEqual([{ field: 'event_type', rule: 'required', message: 'event_type is required' }])
  })

  test('answers 422 for a body that is not a JSON object in strict mode', async () => {
    const sent = await send('nope', { route: strictRoute })
    expect(sent.status).toBe(422)
    expect(sent.json.errors).toEqual([{ field: 'body', rule: 'json', message: 'body must be a JSON object' }])
  })

  test('strict mode changes nothing for a valid event or a site check', async () => {
    expect((await send(minimal(), { route: strictRoute })).json.message).toBe('Event received')
    expect((await send(minimal(), { route: strictRoute, siteId: '99' })).status).toBe(202)
  })

  test('requires event_type and page_path', async () => {
    const sent = await send({}, { route: strictRoute })
    expect(sent.json.errors?.map((e) => [e.field, e.rule])).toEqual([
      ['event_type', 'required'],
      ['page_path', 'required'],
    ])
  })

  test('takes the path from an absolute page_url when page_path is missing', async () => {
    const event = await stored({ event: 'pageview', url: 'https://example.com/docs/intro?x=1#top' })
    expect(event.pathname).toBe('/docs/intro')
    expect(event.query).toBe('x=1')
  })

  test('still requires page_path when page_url is not absolute', async () => {
    const sent = await send({ event: 'pageview', url: '/docs' }, { route: strictRoute })
    expect(sent.json.errors?.map((e) => e.field)).toEqual(['page_path'])
  })

  test('treats null as absent', async () => {
    const event = await stored(minimal({ utm_source: null, visitor_id: null, scroll_depth: null, is_entry: null }))
    expect(event.utm_source).toBe('')
    expect(event.user_id).toBe(0n)
    expect(event.props).toEqual({})
    const sent = await send({ event_type: null, page_path: '/' }, { route: strictRoute })
    expect(sent.json.errors?.[0]?.rule).toBe('required')
  })

  test('never answers 5xx and never throws, whatever the body', async () => {
    const keys = [...KEY_TO_FIELD.keys(), 'other', '__proto__', 'constructor']
    const anyValue = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.double(),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.integer(), { maxLength: 3 }),
      fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2 }),
      fc.constantFrom(...EVENT_TYPES),
    )
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.constantFrom(...keys), anyValue, { maxKeys: 12 }), async (body) => {
        const sent = await send(body, { route: strictRoute })
        expect([202, 422]).toContain(sent.status)
        const lax = await send(body)
        expect(lax.status).toBe(202)
      }),
      { numRuns: 300 },
    )
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), async (text) => {
        expect((await send(text)).status).toBe(202)
      }),
      { numRuns: 200 },
    )
  })
})

// ---- fields: every rule at its limits ----

const chars = (n: number, c = 'a') => c.repeat(n)

type Row = [field: FieldName, value: unknown, expected: 'ok' | string]
const RULES: Row[] = [
  // ids
  ['session_id', '', 'length'],
  ['session_id', 'x', 'ok'],
  ['session_id', chars(128), 'ok'],
  ['session_id', chars(129), 'length'],
  ['session_id', 12345, 'ok'],
  ['session_id', true, 'string'],
  ['visitor_id', chars(7), 'length'],
  ['visitor_id', chars(8), 'ok'],
  ['visitor_id', chars(64), 'ok'],
  ['visitor_id', chars(65), 'length'],
  ['visitor_id', 12345678, 'ok'],
  ['visitor_id', 1234567, 'length'],
  ['visitor_id', { id: 'x' }, 'string'],
  ['cookie_visitor_id', '', 'ok'],
  ['cookie_visitor_id', chars(128), 'ok'],
  ['cookie_visitor_id', chars(129), 'maxLength'],
  // enums
  ...(['cookie', 'fingerprint', 'hybrid', 'Cookie'] as const).map((v): Row => ['visitor_id_source', v, 'ok']),
  ['visitor_id_source', 'device', 'enum'],
  ['visitor_id_source', 1, 'enum'],
  ...(['direct', 'organic', 'social', 'paid', 'referral', 'email', 'internal', 'ai', 'AI'] as const).map(
    (v): Row => ['traffic_source', v, 'ok'],
  ),
  ['traffic_source', 'search', 'enum'],
  ...(['desktop', 'laptop', 'mobile', 'tablet', 'Mobile'] as const).map((v): Row => ['device_type', v, 'ok']),
  ['device_type', 'tv', 'enum'],
  ...(['reading', 'skimming', 'jumping'] as const).map((v): Row => ['scroll_behavior', v, 'ok']),
  ['scroll_behavior', 'scanning', 'enum'],
  ['event_type', 'purchase', 'enum'],
  ['event_type', 7, 'enum'],
  ['event_type', chars(65), 'enum'],
  // the seed's length limits reject
  ['page_url', `https://example.com/${chars(2048 - 20)}`, 'ok'],
  ['page_url', `https://example.com/${chars(2049 - 20)}`, 'maxLength'],
  ['page_url', false, 'string'],
  ['page_path', `/${chars(1023)}`, 'ok'],
  ['page_path', `/${chars(1024)}`, 'maxLength'],
  ['page_title', chars(500), 'ok'],
  ['page_title', chars(501), 'maxLength'],
  // our caps cut instead (checked in the mapping tests); wrong types still fail
  ['page_referrer', chars(5000), 'ok'],
  ['page_referrer', ['x'], 'string'],
  ['utm_source', chars(3000), 'ok'],
  ['copied_text', chars(9000), 'ok'],
  ['browser', true, 'string'],
  // numbers
  ['scroll_depth', -1, 'range'],
  ['scroll_depth', 0, 'ok'],
  ['scroll_depth', 100, 'ok'],
  ['scroll_depth', 101, 'range'],
  ['scroll_depth', 100.5, 'range'],
  ['scroll_depth', '50', 'ok'],
  ['scroll_depth', '50.5', 'ok'],
  ['scroll_depth', '50%', 'number'],
  ['scroll_depth', '', 'number'],
  ['scroll_depth', true, 'number'],
  ['max_scroll_depth', -1, 'range'],
  ['max_scroll_depth', 100, 'ok'],
  ['max_scroll_depth', 101, 'range'],
  ['time_on_page', -1, 'range'],
  ['time_on_page', 0, 'ok'],
  ['time_on_page', 2_592_000_000, 'ok'],
  ['time_on_page', 2_592_000_001, 'range'],
  ['engaged_time', 2_592_000_000, 'ok'],
  ['engaged_time', 2_592_000_001, 'range'],
  ['field_time', 2_592_000_000, 'ok'],
  ['field_time', 2_592_000_001, 'range'],
  ...(['lcp', 'fid', 'ttfb', 'inp'] as const).flatMap((f): Row[] => [
    [f, -1, 'range'],
    [f, 0, 'ok'],
    [f, 3_600_000, 'ok'],
    [f, 3_600_001, 'range'],
    [f, 'fast', 'number'],
  ]),
  ['cls', -0.01, 'range'],
  ['cls', 0, 'ok'],
  ['cls', 100, 'ok'],
  ['cls', 100.01, 'range'],
  ...(['screen_width', 'screen_height', 'viewport_width', 'viewport_height'] as const).flatMap((f): Row[] => [
    [f, -1, 'range'],
    [f, 0, 'ok'],
    [f, 100_000, 'ok'],
    [f, 100_001, 'range'],
    [f, 1.5, 'integer'],
  ]),
  ...(['click_x', 'click_y'] as const).flatMap((f): Row[] => [
    [f, -1, 'range'],
    [f, 0.5, 'ok'],
    [f, 10_000_000, 'ok'],
    [f, 10_000_001, 'range'],
  ]),
  ['click_count', -1, 'range'],
  ['click_count', 1_000_000, 'ok'],
  ['click_count', 1_000_001, 'range'],
  ['click_count', 2.5, 'integer'],
  ['form_completion_rate', -1, 'range'],
  ['form_completion_rate', 100, 'ok'],
  ['form_completion_rate', 101, 'range'],
  // booleans
  ...(['is_entry', 'is_exit', 'visible'] as const).flatMap((f): Row[] => [
    [f, true, 'ok'],
    [f, false, 'ok'],
    [f, 'true', 'ok'],
    [f, 'false', 'ok'],
    [f, 1, 'boolean'],
    [f, 'yes', 'boolean'],
  ]),
  // event_time
  ['event_time', '2026-11-22T11:00:00Z', 'ok'],
  ['event_time', '2026-11-22T11:00:00.123456+01:00', 'ok'],
  ['event_time', '2026-11-22 11:00', 'ok'],
  ['event_time', '2026-11-22', 'ok'],
  ['event_time', NOW, 'ok'],
  ['event_time', String(NOW), 'ok'],
  ['event_time', 'yesterday', 'date'],
  ['event_time', '2026-13-01T00:00:00Z', 'date'],
  ['event_time', '2026-02-29T00:00:00Z', 'date'],
  ['event_time', '2026-11-22T24:00:00Z', 'date'],
  ['event_time', 'Sun, 22 Nov 2026 11:00:00 GMT', 'date'],
  ['event_time', true, 'date'],
]

describe('field rules', () => {
  test.each(RULES)('%s = %p → %s', async (field, value, expected) => {
    const body = { event_type: 'pageview', page_path: '/', [field]: value }
    const sent = await send(body, { route: strictRoute })
    if (expected === 'ok') {
      expect(sent.json).toEqual({ message: 'Event received' })
    } else {
      expect(sent.status).toBe(422)
      expect(sent.json.errors).toEqual([expect.objectContaining({ field, rule: expected })])
      expect(sent.json.errors?.[0]?.message.startsWith(`${field} `)).toBe(true)
      // The lax answer names the same rule.
      expect((await send(body)).json.message).toContain(sent.json.errors?.[0]?.message ?? '?')
    }
  })

  test('every field of the seed has a rule row or a sample', () => {
    expect(Object.keys(SAMPLES).sort()).toEqual(FIELDS.map((f) => f.name).sort())
  })

  test('names the allowed values of an enum', async () => {
    const sent = await send(minimal({ device_type: 'tv' }))
    expect(sent.json.message).toBe(
      'Event not stored: invalid body: device_type must be one of: desktop, laptop, mobile, tablet',
    )
  })
})

// ---- aliases and event names ----

describe('aliases', () => {
  test.each(FIELDS.map((f) => f.name))('accepts %s and its camelCase spelling alike', async (name) => {
    const value = SAMPLES[name as FieldName]
    const base = name === 'event_type' || name === 'page_path' ? {} : minimal()
    const canonical = await stored({ ...base, ...minimal(), [name]: value })
    const spelt = camel(name)
    const body: Record<string, unknown> = { ...base, [spelt]: value }
    if (name !== 'event_type') body.eventType = 'pageview'
    if (name !== 'page_path') body.pagePath = '/'
    const camelEvent = await stored(body)
    expect(snapshot(camelEvent)).toEqual(snapshot(canonical))
  })

  test.each([
    ['event', 'event_type', 'scroll', (e: AnalyticsEvent) => e.name],
    ['path', 'page_path', '/a', (e: AnalyticsEvent) => e.pathname],
    ['url', 'page_url', 'https://example.com/b?q=1', (e: AnalyticsEvent) => e.url],
    ['title', 'page_title', 'Home', (e: AnalyticsEvent) => e.props.page_title],
    ['referrer', 'page_referrer', 'https://ref.example/', (e: AnalyticsEvent) => e.referrerUrl],
  ])('accepts the short name %s for %s', async (short, long, value, read) => {
    const body: Record<string, unknown> = { event: 'pageview', path: '/', [short]: value }
    const viaShort = await stored(body)
    const viaLong = await stored({ event: 'pageview', path: '/', [long]: value })
    expect(read(viaShort)).toBe(value)
    expect(snapshot(viaShort)).toEqual(snapshot(viaLong))
  })

  test('prefers the canonical name, whatever the key order', async () => {
    expect((await stored({ path: '/short', page_path: '/canonical', event: 'pageview' })).pathname).toBe('/canonical')
    expect((await stored({ page_path: '/canonical', path: '/short', event: 'pageview' })).pathname).toBe('/canonical')
    expect((await stored({ pagePath: '/camel', path: '/short', event: 'pageview' })).pathname).toBe('/camel')
  })

  test('does not let an invalid alias hide behind a valid canonical value', async () => {
    // The canonical name wins before validation, so the alias's value is never read.
    await stored({ event_type: 'pageview', eventType: 'nonsense', page_path: '/' })
  })
})

describe('event types', () => {
  const spellings = (t: string) => {
    const words = t.split('_')
    const camelCase = words.map((w, i) => (i === 0 ? w : w[0]!.toUpperCase() + w.slice(1))).join('')
    return [
      t,
      camelCase,
      words.join('-'),
      words.join(' '),
      t.toUpperCase(),
      camelCase[0]!.toUpperCase() + camelCase.slice(1),
    ]
  }
  const passive = new Set(['scroll', 'time_on_page', 'cwv', 'exit', 'heartbeat'])

  test.each([...EVENT_TYPES])('records every spelling of %s as its canonical name', async (type) => {
    for (const spelling of spellings(type)) {
      const event = await stored({ event: spelling, path: '/' })
      expect(event.name).toBe(type)
      expect(event.interactive).toBe(!passive.has(type))
    }
  })

  test.each(['page_view', 'pageView', 'page-view', 'PageView', 'PAGE_VIEW', 'page view'])(
    'records %s as pageview',
    async (spelling) => {
      expect((await stored({ event: spelling, path: '/' })).name).toBe('pageview')
    },
  )

  test('rejects an unknown type, listing the known ones', async () => {
    const sent = await send({ event: 'purchase', path: '/' })
    expect(sent.json.message).toBe(
      `Event not stored: invalid body: event_type must be one of: ${EVENT_TYPES.join(', ')}`,
    )
  })
})

// ---- into the event model ----

describe('mapping', () => {
  test('maps a full canonical body', async () => {
    const event = await stored({ ...SAMPLES, event_type: 'click' })
    expect(event.name).toBe('click')
    expect(event.pathname).toBe('/p')
    expect(event.hostname).toBe('shop.example')
    expect(event.url).toBe('https://www.shop.example/p?utm_source=q')
    expect(event.query).toBe('utm_source=q')
    expect(event.referrerUrl).toBe('https://news.example/a')
    expect(event.timestamp).toBe((NOW - 60_000) / 1000)
    expect(event.user_id).not.toBe(0n)
    expect(event.session_id).not.toBe(0n)
    expect(event.scroll_depth).toBe(75)
    expect(event.engagement_time).toBe(1200)
    expect([event.utm_source, event.utm_medium, event.utm_campaign, event.utm_term, event.utm_content]).toEqual([
      'newsletter',
      'email',
      'launch',
      'analytics',
      'hero',
    ])
    const hints: LynkowClientHints = {
      screenSize: 'Desktop',
      browser: 'Firefox',
      browserVersion: '140.0',
      os: 'Linux',
      osVersion: '6.1',
    }
    expect(event.dialectData).toEqual(hints)
    // The hints pre-fill the device columns; the user-agent plugin overwrites what its parse finds.
    expect([
      event.screen_size,
      event.browser,
      event.browser_version,
      event.operating_system,
      event.operating_system_version,
    ]).toEqual(['Desktop', 'Firefox', '140.0', 'Linux', '6.1'])
    expect(event.props).toEqual({
      visitor_id_source: 'cookie',
      page_title: 'Pricing',
      scroll_depth: '40',
      time_on_page: '1500',
      lcp: '2100.5',
      fid: '12',
      cls: '0.05',
      ttfb: '80',
      inp: '120',
      traffic_source: 'email',
      screen_width: '1920',
      screen_height: '1080',
      language: 'fr-FR',
      timezone: 'Europe/Paris',
      referrer_domain: 'news.example',
      is_entry: 'true',
      is_exit: 'false',
      visible: 'true',
      click_x: '10.5',
      click_y: '300',
      click_element: 'button.cta',
      click_element_tag: 'button',
      click_element_id: 'buy',
      click_element_class: 'cta primary',
      click_element_text: 'Buy now',
      click_target_url: 'https://shop.example/cart',
      click_count: '3',
      viewport_width: '1280',
      viewport_height: '720',
      file_name: 'report.pdf',
      file_extension: 'pdf',
      file_url: 'https://shop.example/report.pdf',
      copied_text: 'hello world',
      scroll_behavior: 'reading',
      form_id: 'signup',
      form_name: 'Signup',
      field_name: 'email',
      field_type: 'email',
      field_time: '5000',
      error_message: 'Required field',
      form_completion_rate: '50',
    })
  })

  test('never stores the raw ids', async () => {
    const event = await stored(
      minimal({ visitor_id: 'visitor-secret-1', session_id: 'session-secret-1', cookie_visitor_id: 'cookie-secret' }),
    )
    const text = JSON.stringify(event, (_, v) => (typeof v === 'bigint' ? v.toString() : v))
    for (const raw of ['visitor-secret-1', 'session-secret-1', 'cookie-secret']) expect(text).not.toContain(raw)
  })

  test.each([
    ['device_type desktop', { device_type: 'desktop' }, 'Desktop'],
    ['device_type laptop', { device_type: 'laptop' }, 'Desktop'],
    ['device_type mobile', { device_type: 'mobile' }, 'Mobile'],
    ['device_type tablet', { device_type: 'tablet' }, 'Tablet'],
    ['browser only', { browser: 'Safari' }, ''],
  ] as [string, Record<string, string>, LynkowClientHints['screenSize']][])(
    'keeps the client hints in dialectData (%s)',
    async (_, extra, screenSize) => {
      const hints = (await stored(minimal(extra))).dialectData as LynkowClientHints
      expect(hints.screenSize).toBe(screenSize)
    },
  )

  test('cuts client versions to major.minor in the columns, not in dialectData', async () => {
    const event = await stored(minimal({ browser: 'Chrome', browser_version: '140.0.7339.80', os_version: '17' }))
    expect([event.browser_version, event.operating_system_version]).toEqual(['140.0', '17'])
    expect((event.dialectData as LynkowClientHints).browserVersion).toBe('140.0.7339.80')
  })

  test('leaves dialectData and the device columns unset without client hints', async () => {
    const event = await stored(minimal())
    expect(event.dialectData).toBeUndefined()
    expect([event.screen_size, event.browser, event.operating_system]).toEqual(['', '', ''])
  })

  test('takes scroll_depth alone, and max_scroll_depth over it', async () => {
    const one = await stored(minimal({ scroll_depth: 33.4 }))
    expect([one.scroll_depth, one.props.scroll_depth]).toEqual([33, undefined])
    const both = await stored(minimal({ scroll_depth: 20, max_scroll_depth: 80.6 }))
    expect([both.scroll_depth, both.props.scroll_depth, both.props.max_scroll_depth]).toEqual([81, '20', undefined])
  })

  test('takes time_on_page alone, and engaged_time over it', async () => {
    const one = await stored(minimal({ time_on_page: 1234.6 }))
    expect([one.engagement_time, one.props.time_on_page]).toEqual([1235, undefined])
    const both = await stored(minimal({ time_on_page: 9000, engaged_time: 4000 }))
    expect([both.engagement_time, both.props.time_on_page, both.props.engaged_time]).toEqual([4000, '9000', undefined])
  })

  test('leaves scroll_depth and engagement_time at 0 when not sent', async () => {
    const event = await stored(minimal())
    expect([event.scroll_depth, event.engagement_time]).toEqual([0, 0])
  })

  test('keeps numbers sent as strings as their decimal text', async () => {
    const event = await stored(minimal({ lcp: '2500', cls: '0.10', click_count: '4' }))
    expect([event.props.lcp, event.props.cls, event.props.click_count]).toEqual(['2500', '0.1', '4'])
  })

  test('keeps ids and names sent as numbers as text', async () => {
    const event = await stored(minimal({ form_id: 42 }))
    expect(event.props.form_id).toBe('42')
  })

  describe('page', () => {
    test.each([
      ['https://www.example.com/a', 'example.com'],
      ['https://www.www.example.com/a', 'www.example.com'],
      ['https://Blog.Example.COM:8443/a', 'blog.example.com'],
      ['https://user:pw@example.org/a', 'example.org'],
      ['http://[2001:db8::1]:8080/a', '[2001:db8::1]'],
    ])('takes the hostname of %s as %s', async (url, host) => {
      expect((await stored(minimal({ page_url: url }))).hostname).toBe(host)
    })

    test('falls back to the Origin host, then the Referer host, then the site domain', async () => {
      const origin = await stored(minimal(), { headers: { origin: 'https://www.shop.example' } })
      expect(origin.hostname).toBe('shop.example')
      const referer = await stored(minimal(), { headers: { referer: 'https://blog.example/post' } })
      expect(referer.hostname).toBe('blog.example')
      expect((await stored(minimal())).hostname).toBe('example.com')
      const relative = await stored(minimal({ page_url: '/relative' }), { headers: { origin: 'https://o.example' } })
      expect([relative.hostname, relative.url]).toEqual(['o.example', '/relative'])
    })

    test('prefers the page_url host over the Origin', async () => {
      const event = await stored(minimal({ page_url: 'https://a.example/' }), {
        headers: { origin: 'https://b.example' },
      })
      expect(event.hostname).toBe('a.example')
    })

    test.each([
      ['/pricing', '/pricing'],
      ['', '/'],
      ['/a%20b/%E2%9C%93', '/a b/✓'],
      ['/a+b', '/a+b'],
      ['/a%2Fb', '/a/b'],
      ['/bad%zz', '/bad%zz'],
      ['/trailing/  ', '/trailing/'],
      ['/with?x=1#frag', '/with'],
      ['/hash#/route', '/hash'],
    ])('stores page_path %p as pathname %p', async (path, pathname) => {
      expect((await stored(minimal({ page_path: path }))).pathname).toBe(pathname)
    })

    test('takes the query from page_url, else from page_path', async () => {
      const fromUrl = await stored(
        minimal({ page_url: 'https://example.com/x?utm_source=a&b=2#h', page_path: '/x?c=3' }),
      )
      expect(fromUrl.query).toBe('utm_source=a&b=2')
      const fromPath = await stored(minimal({ page_path: '/x?c=3#h' }))
      expect(fromPath.query).toBe('c=3')
      const hashRoute = await stored(minimal({ page_url: 'https://example.com/#/a?b=1' }))
      expect(hashRoute.query).toBe('')
    })

    test('leaves utm_* empty when the body has none (the enrich stage reads event.query)', async () => {
      const event = await stored(minimal({ page_url: 'https://example.com/?utm_source=q' }))
      expect(event.utm_source).toBe('')
      expect(event.query).toBe('utm_source=q')
    })
  })

  describe('text caps', () => {
    test.each([
      ['page_referrer', 2000],
      ['utm_source', 2000],
      ['utm_term', 2000],
      ['copied_text', 2000],
      ['error_message', 2000],
      ['click_element_text', 500],
      ['click_target_url', 2048],
      ['form_name', 255],
      ['language', 100],
    ] as const)('cuts %s at %i characters', async (field, cap) => {
      // Words, not one long run, which redaction would take for a token.
      const text = 'word '.repeat(cap).slice(0, cap + 1)
      const at = await stored(minimal({ [field]: text.slice(0, cap) }))
      const over = await stored(minimal({ [field]: text }))
      const read = (e: AnalyticsEvent) =>
        field === 'page_referrer'
          ? e.referrerUrl
          : field.startsWith('utm_')
            ? e.utm_source || e.utm_term
            : e.props[field]
      expect(read(at)).toBe(text.slice(0, cap))
      expect(read(over)).toBe(text.slice(0, cap))
    })

    test('cuts client hints at 100 characters', async () => {
      const hints = (await stored(minimal({ browser: chars(101) }))).dialectData as LynkowClientHints
      expect(hints.browser).toBe(chars(100))
    })

    test('does not leave half a surrogate pair at the cut', async () => {
      const event = await stored(minimal({ language: `${chars(99)}😀` }))
      expect(event.props.language).toBe(chars(99))
    })
  })

  describe('redaction', () => {
    test.each(['copied_text', 'error_message', 'click_element_text'])(
      'redacts e-mails and tokens in %s',
      async (field) => {
        const event = await stored(
          minimal({
            [field]: 'write to ada.lovelace+x@mail.example.org or use key sk_0123456789abcdefghij0123456789ab',
          }),
        )
        expect(event.props[field]).toBe('write to [email] or use key [token]')
      },
    )

    test('leaves other text fields as sent', async () => {
      const text = 'ada@example.org'
      const event = await stored(minimal({ page_title: text, form_name: text }))
      expect([event.props.page_title, event.props.form_name]).toEqual([text, text])
    })
  })

  describe('time', () => {
    const at = async (eventTime: unknown) => (await stored(minimal({ event_time: eventTime }))).timestamp
    const seconds = (ms: number) => Math.floor(ms / 1000)

    test('uses the arrival time when event_time is missing', async () => {
      expect(await at(undefined)).toBe(seconds(NOW))
    })

    test('keeps a client time inside the window, truncated to the second', async () => {
      expect(await at(NOW - 1500)).toBe(seconds(NOW - 1500))
      expect(await at(new Date(NOW - 3_600_000).toISOString())).toBe(seconds(NOW - 3_600_000))
    })

    test('keeps a time exactly 5 minutes ahead and clamps one second more', async () => {
      expect(await at(NOW + 300_000)).toBe(seconds(NOW + 300_000))
      expect(await at(NOW + 301_000)).toBe(seconds(NOW))
    })

    test('keeps a time exactly 72 hours old and clamps one second more', async () => {
      expect(await at(NOW - 72 * 3_600_000)).toBe(seconds(NOW - 72 * 3_600_000))
      expect(await at(NOW - 72 * 3_600_000 - 1000)).toBe(seconds(NOW))
    })

    test('clamps epoch seconds mistaken for milliseconds (they read as 1970)', async () => {
      expect(await at(Math.floor(NOW / 1000))).toBe(seconds(NOW))
    })

    test('reads zones; a time without one is UTC', async () => {
      expect(await at('2026-11-22T12:30:00+01:00')).toBe(seconds(NOW - 1_800_000))
      expect(await at('2026-11-22T11:30:00')).toBe(seconds(NOW - 1_800_000))
      expect(await at('2026-11-22T06:30:00-0500')).toBe(seconds(NOW - 1_800_000))
    })

    test('takes the bounds from the options', async () => {
      const route = await routeFor({ maxEventAgeHours: 1, maxFutureMinutes: 0 })
      const old = await stored(minimal({ event_time: NOW - 3_601_000 }), { route })
      expect(old.timestamp).toBe(seconds(NOW))
      const ahead = await stored(minimal({ event_time: NOW + 1000 }), { route })
      expect(ahead.timestamp).toBe(seconds(NOW))
    })
  })
})

// ---- ids ----

describe('ids', () => {
  test('hashes visitor_id into user_id and session_id into session_id, stably', async () => {
    const body = minimal({ visitor_id: 'visitor-123', session_id: 's-1' })
    const a = await stored(body)
    const b = await stored(body)
    expect(a.user_id).toBe(b.user_id)
    expect(a.session_id).toBe(b.session_id)
    expect(a.user_id).not.toBe(0n)
    expect(a.user_id < 2n ** 64n).toBe(true)
    expect((await stored(minimal({ visitor_id: 'visitor-124', session_id: 's-2' }))).user_id).not.toBe(a.user_id)
  })

  test('gives the same id other hashes on another site', async () => {
    const body = minimal({ visitor_id: 'visitor-123' })
    const one = await stored(body)
    const three = await stored(body, { siteId: '3' })
    expect(three.user_id).not.toBe(one.user_id)
  })

  test('keeps visitor and session hashes apart for the same text', async () => {
    const event = await stored(minimal({ visitor_id: 'same-id-1', session_id: 'same-id-1' }))
    expect(event.user_id).not.toBe(event.session_id)
  })

  test('creates the key file once, 0600, and reuses it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lynkow-key-'))
    const route = await routeFor({}, dir)
    const file = join(dir, 'lynkow', 'id.key')
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const key = readFileSync(file, 'utf8')
    expect(key).toMatch(/^[0-9a-f]{32}\n$/)
    const body = minimal({ visitor_id: 'visitor-123' })
    const first = await stored(body, { route })
    const again = await stored(body, { route: await routeFor({}, dir) })
    expect(readFileSync(file, 'utf8')).toBe(key)
    expect(again.user_id).toBe(first.user_id)
    // Another state folder, another key, other ids.
    const other = await stored(body, { route: await routeFor({}, mkdtempSync(join(tmpdir(), 'lynkow-key-'))) })
    expect(other.user_id).not.toBe(first.user_id)
  })

  test('uses the keyFile option, and its key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lynkow-key-'))
    const file = join(dir, 'shared.key')
    writeFileSync(file, '000102030405060708090a0b0c0d0e0f\n')
    const event = await stored(minimal({ visitor_id: 'visitor-123' }), { route: await routeFor({ keyFile: file }) })
    const hasher = new IdHasher(Uint8Array.from({ length: 16 }, (_, i) => i))
    expect(event.user_id).toBe(hasher.hash('visitor', 1, 'visitor-123'))
  })

  test('refuses a key file that does not hold 32 hex digits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lynkow-key-'))
    const file = join(dir, 'bad.key')
    writeFileSync(file, 'not a key')
    await expect(routeFor({ keyFile: file })).rejects.toThrow('must hold 32 hexadecimal digits')
  })

  test('rejects unknown options', async () => {
    await expect(routeFor({ strictness: true })).rejects.toThrow('unknown option')
  })
})

// ---- helpers ----

describe('siphash24', () => {
  const bytes = (n: number) => Uint8Array.from({ length: n }, (_, i) => i)
  const key = sipKey(bytes(16))

  test('matches the test vector of spec/plausible-dialect.md §9', () => {
    const enc = new TextEncoder()
    expect(siphash24(sipKey(enc.encode('0123456789ABCDEF')), enc.encode('hello'), 5)).toBe(4402678656023170274n)
  })

  // From the SipHash paper's reference vectors (key 00..0f, message 00..n-1), read little-endian.
  test.each([
    [0, 0x726fdb47dd0e0e31n],
    [1, 0x74f839c593dc67fdn],
    [7, 0xab0200f58b01d137n],
    [8, 0x93f5f5799a932462n],
    [15, 0xa129ca6149be45e5n],
    [63, 0x958a324ceb064572n],
  ])('matches the reference vector for %i bytes', (n, expected) => {
    expect(siphash24(key, bytes(n), n)).toBe(expected)
  })

  test('hashes only the given length of a larger buffer', () => {
    expect(siphash24(key, bytes(64), 8)).toBe(0x93f5f5799a932462n)
  })

  test('hashes ids longer than the scratch buffer the same way', () => {
    const hasher = new IdHasher(bytes(16))
    const long = '€'.repeat(400)
    const enc = new TextEncoder().encode(`visitor\u00001\u0000${long}`)
    expect(hasher.hash('visitor', 1, long)).toBe(siphash24(key, enc, enc.length))
  })
})

describe('redactText', () => {
  test.each([
    ['no secrets here', 'no secrets here'],
    ['mail ada@example.com.', 'mail [email].'],
    ['a.b-c+tag@sub.mail.example.co.uk, then', '[email], then'],
    ['user@localhost and x@y.c', 'user@localhost and x@y.c'],
    ['@handle and foo@@bar.com', '@handle and foo@@bar.com'],
    [chars(31, 'k'), chars(31, 'k')],
    [chars(32, 'k'), '[token]'],
    [`id ${'0f0e0d0c-0b0a-0908-0706-050403020100'}`, 'id [token]'],
    ['eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U x', '[token] x'],
    ['abcdefgh.abcdefgh.abcdefgh', '[token]'],
    ['abcdefgh.abcdefg.abcdefgh', 'abcdefgh.abcdefg.abcdefgh'],
    ['www.example.com v1.2.3', 'www.example.com v1.2.3'],
    [`see docs.${chars(40, 'z')}.html`, 'see docs.[token].html'],
  ])('%p → %p', (input, output) => {
    expect(redactText(input)).toBe(output)
  })

  test('takes linear time on adversarial input', () => {
    const inputs = ['a@'.repeat(100_000), `${'a.'.repeat(100_000)}@`, 'a'.repeat(200_000), '@a.'.repeat(70_000)]
    const started = performance.now()
    for (const input of inputs) redactText(input)
    expect(performance.now() - started).toBeLessThan(500)
  })
})

describe('urls', () => {
  test.each([
    ['https://Example.com/a', 'example.com'],
    ['https://example.com', 'example.com'],
    ['https://example.com?x', 'example.com'],
    ['https://a@b@example.com:1/x', 'example.com'],
    ['http://[::1]:3000/', '[::1]'],
    ['android-app://com.example.app/', 'com.example.app'],
    ['/relative', ''],
    ['example.com/a', ''],
    ['about:config', ''],
    ['1http://x.example/', ''],
    ['', ''],
  ])('hostOf(%p) is %p', (url, host) => {
    expect(hostOf(url)).toBe(host)
  })

  test('pathOf and queryOf', () => {
    expect(pathOf('https://example.com')).toBe('/')
    expect(pathOf('https://example.com/a/b?c#d')).toBe('/a/b')
    expect(pathOf('/a')).toBe('')
    expect(queryOf('/a?b=1&c#d')).toBe('b=1&c')
    expect(queryOf('/a#x?b')).toBe('')
  })

  test('isLocalHost', () => {
    for (const h of ['localhost', 'a.localhost', '127.0.0.1', '127.1.2.3', '[::1]']) expect(isLocalHost(h)).toBe(true)
    for (const h of ['', 'example.com', 'localhost.example', '127.0.0.1.example', '[::2]', '10.0.0.1']) {
      expect(isLocalHost(h)).toBe(false)
    }
  })
})

describe('time parsing', () => {
  test('parseIsoTime', () => {
    expect(parseIsoTime('2026-05-12T10:00:00+02:00')).toBe(Date.UTC(2026, 4, 12, 8))
    expect(parseIsoTime('2024-02-29T01:02:03.4567Z')).toBe(Date.UTC(2024, 1, 29, 1, 2, 3, 456))
    expect(parseIsoTime('2026-05-12t10:00z')).toBe(Date.UTC(2026, 4, 12, 10))
    expect(parseIsoTime('0099-01-01T00:00:00Z')).toBe(-59_042_995_200_000)
    expect(parseIsoTime('2026-05-12T10:00:00+24:00')).toBeNaN()
    expect(parseIsoTime(`2026-05-12T10:00:00.${'1'.repeat(40)}Z`)).toBeNaN()
  })

  test('parseEventTime', () => {
    expect(parseEventTime(1_700_000_000_123.9)).toBe(1_700_000_000_123)
    expect(parseEventTime('1700000000123')).toBe(1_700_000_000_123)
    expect(parseEventTime(Number.POSITIVE_INFINITY)).toBeNaN()
    expect(parseEventTime('-5')).toBeNaN()
    expect(parseEventTime(null)).toBeNaN()
  })
})
