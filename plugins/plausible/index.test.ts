// Tests spec/plausible-dialect.md §1–§5 and §7 (responses) through the dialect's route, with a small
// stand-in for the engine's ingest; the last block goes through the whole engine over HTTP.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import fc from 'fast-check'
import { type AnalyticsEvent, eventFromRequest } from '../../core/event.ts'
import type { Drop, Ingest, IngestRequest, Route, RunResult } from '../../core/plugin.ts'
import { setupPlugin, startTestEngine, type TestEngine, testServices } from '../../core/testing.ts'
import plugin from './index.ts'

const SITES = [
  { id: 1, domain: 'example.com' },
  { id: 2, domain: 'other.com' },
  { id: 3, domain: 'tracker.example' },
]
const RECEIVED_AT = 1_700_000_000_999
const UA = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_13_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110'

/** Stands in for the engine: fills the request context like `newEvent` and returns `verdict`'s outcomes. */
class FakeIngest implements Ingest {
  readonly processed: AnalyticsEvent[] = []
  readonly recorded: { event: AnalyticsEvent; drop: Drop }[] = []
  constructor(
    private readonly verdict: (event: AnalyticsEvent) => RunResult = () => undefined,
    private readonly asynchronous = false,
  ) {}

  newEvent(req: IngestRequest, dialect: string): AnalyticsEvent {
    return eventFromRequest(req, dialect)
  }

  process(events: AnalyticsEvent[]): RunResult[] | Promise<RunResult[]> {
    this.processed.push(...events)
    const outcomes = events.map(this.verdict)
    return this.asynchronous ? Promise.resolve(outcomes) : outcomes
  }

  recordDrop(event: AnalyticsEvent, drop: Drop): void {
    this.recorded.push({ event, drop })
  }
}

interface Sent {
  status: number
  text: string
  headers: Headers
  ingest: FakeIngest
}

interface SendOptions {
  /** `null` sends no Content-Type header. */
  contentType?: string | null
  ingest?: FakeIngest
  route?: Route
}

let route: Route

beforeAll(async () => {
  const instance = await setupPlugin(plugin, {}, testServices({ sites: SITES }))
  route = instance.routes![0]!
})

/** POSTs `body` (a string as is, anything else as JSON) straight to the route. */
async function send(body: unknown, options: SendOptions = {}): Promise<Sent> {
  const contentType = options.contentType === undefined ? 'text/plain' : options.contentType
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  const headers: Record<string, string> = { 'user-agent': UA }
  if (contentType !== null) headers['content-type'] = contentType
  const request = new Request('http://localhost/api/event', { method: 'POST', headers, body: text })
  const ingest = options.ingest ?? new FakeIngest()
  const req: IngestRequest = { request, body: text, params: {}, peerIp: '203.0.113.9', receivedAt: RECEIVED_AT }
  const used = options.route ?? route
  const response = await used.handle(req, ingest)
  // Every answer carries the CORS header itself, as the route declares (the HTTP layer adds none).
  expect(used.answersAllowAnyOrigin).toBe(true)
  expect(response.headers.get('access-control-allow-origin')).toBe('*')
  return { status: response.status, text: await response.text(), headers: response.headers, ingest }
}

const BASE = { n: 'pageview', u: 'http://example.com/', d: 'example.com' }

/** Sends a body that must be accepted as exactly one stored event, and returns that event. */
async function accepted(body: unknown, options?: SendOptions): Promise<AnalyticsEvent> {
  const sent = await send(body, options)
  expect(sent.text).toBe('ok')
  expect(sent.status).toBe(202)
  expect(sent.ingest.processed).toHaveLength(1)
  return sent.ingest.processed[0]!
}

/** Sends a body that must be refused, and returns the errors of its 400. */
async function refused(body: unknown, options?: SendOptions): Promise<Record<string, string[]>> {
  const sent = await send(body, options)
  expect(sent.status).toBe(400)
  expect(sent.headers.get('content-type')).toStartWith('application/json')
  expect(sent.ingest.processed).toHaveLength(0)
  return JSON.parse(sent.text).errors
}

describe('transport (§1)', () => {
  test.each(['text/plain', 'text/plain;charset=UTF-8', 'application/json', 'application/json; charset=utf-8'])(
    'reads a JSON object sent as %s',
    async (contentType) => {
      const event = await accepted(BASE, { contentType })
      expect(event.name).toBe('pageview')
    },
  )

  test('answers 202 "ok" as text/plain', async () => {
    const sent = await send(BASE)
    expect(sent.headers.get('content-type')).toStartWith('text/plain')
    expect(sent.headers.get('x-plausible-dropped')).toBeNull()
  })

  test.each([
    ['an empty body', ''],
    ['text that is not JSON', 'defnotjson'],
    ['a JSON string', '"<script>"'],
    ['a JSON array', '[{"n":"pageview"}]'],
    ['a JSON number', '42'],
    ['JSON null', 'null'],
  ])('text/plain: %s is a request error', async (_, body) => {
    const sent = await send(body)
    expect(sent.status).toBe(400)
    expect(sent.text).toBe('{"errors":{"request":["Unable to parse request body as json"]}}')
  })

  test.each([
    ['an empty body', ''],
    ['text that is not JSON', '{"n":'],
  ])('application/json: %s is a request error', async (_, body) => {
    expect(await refused(body, { contentType: 'application/json' })).toEqual({
      request: ['Unable to parse request body as json'],
    })
  })

  test.each([['[1,2]'], ['42'], ['"text"']])(
    'application/json: valid JSON %s that is no object misses every field',
    async (body) => {
      expect(await refused(body, { contentType: 'application/json' })).toEqual({
        domain: ["can't be blank"],
        event_name: ["can't be blank"],
        url: ['is required'],
      })
    },
  )

  test('without Content-Type the body is not read, as upstream', async () => {
    expect(await refused(BASE, { contentType: null })).toEqual({
      domain: ["can't be blank"],
      event_name: ["can't be blank"],
      url: ['is required'],
    })
  })

  test('option missingContentType: json reads the body anyway', async () => {
    const instance = await setupPlugin(plugin, { missingContentType: 'json' }, testServices({ sites: SITES }))
    const event = await accepted(BASE, { contentType: null, route: instance.routes![0]! })
    expect(event.site_id).toBe(1)
  })

  test('any other content type is read as raw JSON', async () => {
    await accepted(BASE, { contentType: 'application/octet-stream' })
  })

  test('application/x-www-form-urlencoded fields arrive as strings', async () => {
    const body = 'n=Sign+up&u=http%3A%2F%2Fexample.com%2Fa%3Fx%3D1&d=example.com&h=1&i=false&p=%7B%22f%22%3A2.0%7D'
    const event = await accepted(body, { contentType: 'application/x-www-form-urlencoded' })
    expect(event.name).toBe('Sign up')
    expect(event.pathname).toBe('/a')
    expect(event.query).toBe('x=1')
    expect(event.hashMode).toBe(true)
    // Only the JSON boolean false counts; the text "false" does not.
    expect(event.interactive).toBe(true)
    expect(event.props).toEqual({ f: '2.0' })
  })

  test('form fields with brackets nest like Plug', async () => {
    const body = 'n=Signup&u=http%3A%2F%2Fexample.com%2F&d=example.com&p[plan]=pro&p[seats]=3&p[list][]=a'
    const event = await accepted(body, { contentType: 'application/x-www-form-urlencoded' })
    expect(event.props).toEqual({ plan: 'pro', seats: '3' })
  })

  test('multipart/form-data fields are read', async () => {
    const form = new FormData()
    for (const [k, v] of Object.entries({ ...BASE, n: 'Signup', sd: '5' })) form.append(k, v)
    const encoded = new Response(form)
    const contentType = encoded.headers.get('content-type')
    const event = await accepted(await encoded.text(), { contentType })
    expect(event.name).toBe('Signup')
  })

  test('the exact bodies of the official tracker are accepted', async () => {
    const bodies = [
      '{"n":"pageview","v":36,"u":"http://tracker.example:8080/landing?utm_source=newsletter&utm_medium=email&utm_campaign=launch","d":"tracker.example","r":"http://news.example:8080/ref/article"}',
      '{"n":"engagement","sd":100,"d":"tracker.example","u":"http://tracker.example:8080/spa","e":154,"v":36}',
      '{"n":"pageview","v":36,"u":"http://tracker.example:8080/app#/home","d":"tracker.example","r":null,"h":1}',
      '{"n":"Signup","v":36,"u":"http://tracker.example:8080/props","d":"tracker.example","r":null,"p":{"author":"ada","plan":"pro","seats":3}}',
      '{"n":"Tagged Click","v":36,"u":"http://tracker.example:8080/links","d":"tracker.example","r":null,"p":{"author":"ada","color":"red","url":"http://tracker.example:8080/links#x"},"$":{}}',
      '{"n":"Form: Submission","v":36,"u":"http://tracker.example:8080/form","d":"tracker.example","r":null}',
    ]
    const events = []
    for (const body of bodies) events.push(await accepted(body))
    expect(events.map((e) => e.pathname)).toEqual(['/landing', '/spa', '/app#/home', '/props', '/links', '/form'])
    expect(events.map((e) => e.site_id)).toEqual([3, 3, 3, 3, 3, 3])
    expect(events[0]!.referrerUrl).toBe('http://news.example:8080/ref/article')
    expect(events[0]!.query).toBe('utm_source=newsletter&utm_medium=email&utm_campaign=launch')
    expect(events[1]!.scroll_depth).toBe(100)
    expect(events[1]!.engagement_time).toBe(154)
    expect(events[3]!.props).toEqual({ author: 'ada', plan: 'pro', seats: '3' })
    expect(events[5]!.props).toEqual({ path: '/form' })
  })
})

describe('validation messages (§2, §4, §5)', () => {
  const U = 'http://example.com/'
  test.each<[string, unknown, Record<string, string[]>]>([
    ['url missing', { n: 'pageview', d: 'example.com' }, { url: ['is required'] }],
    ['url null', { n: 'pageview', d: 'example.com', u: null }, { url: ['is required'] }],
    ['url not a string', { ...BASE, u: 5 }, { url: ['must be a valid url'] }],
    ['url false as the last alias', { n: 'pageview', d: 'example.com', url: false }, { url: ['must be a valid url'] }],
    ['url over 2000 bytes', { ...BASE, u: `${U}${'a'.repeat(1982)}` }, { url: ['must be a valid url'] }],
    [
      'url over 2000 bytes in fewer characters',
      { ...BASE, u: `${U}${'é'.repeat(991)}` },
      { url: ['must be a valid url'] },
    ],
    [
      'data URL',
      { ...BASE, u: 'data:text/html,%3Cscript%3Ealert(1)%3C%2Fscript%3E' },
      { url: ['scheme is not allowed'] },
    ],
    ['DATA URL in capitals', { ...BASE, u: 'DATA:text/plain,x' }, { url: ['scheme is not allowed'] }],
    ['name missing', { u: U, d: 'example.com' }, { event_name: ["can't be blank"] }],
    ['name empty', { ...BASE, n: '' }, { event_name: ["can't be blank"] }],
    ['name whitespace only', { ...BASE, n: ' \t\n' }, { event_name: ["can't be blank"] }],
    ['name null', { ...BASE, n: null }, { event_name: ["can't be blank"] }],
    ['name a list', { ...BASE, n: ['list', 'of', 'things'] }, { event_name: ['is invalid'] }],
    ['name true', { ...BASE, n: true }, { event_name: ['is invalid'] }],
    ['name an object', { ...BASE, n: {} }, { event_name: ['is invalid'] }],
    ['name a float', { ...BASE, n: 1.5 }, { event_name: ['is invalid'] }],
    ['name a whole float', '{"n":404.0,"u":"http://example.com/","d":"example.com"}', { event_name: ['is invalid'] }],
    [
      'name over 120 characters',
      { ...BASE, n: 'a'.repeat(121) },
      { event_name: ['should be at most 120 character(s)'] },
    ],
    ['domain empty', { ...BASE, d: '' }, { domain: ["can't be blank"] }],
    ['domain whitespace only', { ...BASE, d: '  ' }, { domain: ["can't be blank"] }],
    ['no domain and a URL without host', { n: 'pageview', u: 'about:config' }, { domain: ["can't be blank"] }],
    ['no domain and a URL with an empty host', { n: 'pageview', u: 'file:///x' }, { domain: ["can't be blank"] }],
    [
      'no domain and an invalid URL',
      { n: 'pageview', u: 5 },
      { domain: ["can't be blank"], url: ['must be a valid url'] },
    ],
    ['hash mode true', { ...BASE, h: true }, { hash_mode: ['is invalid'] }],
    ['hash mode a float', { ...BASE, h: 1.5 }, { hash_mode: ['is invalid'] }],
    [
      'hash mode a whole float',
      '{"n":"pageview","u":"http://example.com/","d":"example.com","h":1.0}',
      { hash_mode: ['is invalid'] },
    ],
    ['hash mode other text', { ...BASE, h: 'yes' }, { hash_mode: ['is invalid'] }],
    ['hash mode decimal text', { ...BASE, h: '1.0' }, { hash_mode: ['is invalid'] }],
    ['hash mode a list', { ...BASE, h: [1] }, { hash_mode: ['is invalid'] }],
    ['hash mode false as the last alias', { ...BASE, hashMode: false }, { hash_mode: ['is invalid'] }],
    [
      'a prop key over 300 bytes',
      { ...BASE, p: { ['a'.repeat(301)]: 'abc' } },
      { props: ['keys should have at most 300 bytes and values 2000 bytes'] },
    ],
    [
      'a prop value over 2000 bytes',
      { ...BASE, p: { abc: 'a'.repeat(2001) } },
      { props: ['keys should have at most 300 bytes and values 2000 bytes'] },
    ],
    [
      'an engagement without sd or e',
      { ...BASE, n: 'engagement' },
      { event_name: ["engagement event requires a valid integer value for at least one of 'sd' or 'e' fields"] },
    ],
    [
      'an engagement with neither sd nor e valid',
      { ...BASE, n: 'engagement', sd: -1, e: '12asd' },
      { event_name: ["engagement event requires a valid integer value for at least one of 'sd' or 'e' fields"] },
    ],
  ])('%s', async (_, body, expected) => {
    expect(await refused(body)).toEqual(expected)
  })

  test('errors accumulate in one answer, fields in alphabetical order', async () => {
    const sent = await send({ n: true, u: 'data:x', h: 'x', p: { k: 'v'.repeat(2001) } })
    expect(sent.status).toBe(400)
    expect(sent.text).toBe(
      '{"errors":{"domain":["can\'t be blank"],"event_name":["is invalid"],"hash_mode":["is invalid"],' +
        '"props":["keys should have at most 300 bytes and values 2000 bytes"],"url":["scheme is not allowed"]}}',
    )
  })

  test('an empty object misses url, domain and name', async () => {
    const sent = await send('{}')
    expect(sent.text).toBe(
      '{"errors":{"domain":["can\'t be blank"],"event_name":["can\'t be blank"],"url":["is required"]}}',
    )
  })

  test.each<[string, unknown]>([
    ['a name of 120 characters', { ...BASE, n: 'a'.repeat(120) }],
    ['a name of 120 emoji (240 UTF-16 units)', { ...BASE, n: '😀'.repeat(120) }],
    ['a name of 120 graphemes with combining marks', { ...BASE, n: 'e\u0301'.repeat(120) }],
    ['an integer name', { ...BASE, n: 404 }],
    ['a URL of exactly 2000 bytes', { ...BASE, u: `${U}${'a'.repeat(1981)}` }],
    ['any string URL', { ...BASE, u: 'chrome-extension://abc/popup.html' }],
    ['an empty URL with a domain', { ...BASE, u: '' }],
    ['hash mode 2', { ...BASE, h: 2 }],
    ['hash mode "1"', { ...BASE, h: '1' }],
    ['hash mode empty text', { ...BASE, h: '' }],
    ['revenue with a bad currency', { ...BASE, $: { amount: '1831d', currency: 'ADSIE' } }],
    ['a malformed escape in the path', { ...BASE, u: 'http://example.com/%zz' }],
  ])('accepts %s', async (_, body) => {
    await accepted(body)
  })

  test('an integer name becomes its decimal text', async () => {
    expect((await accepted({ ...BASE, n: 404 })).name).toBe('404')
    expect((await accepted('{"n":12345678901234567890,"u":"http://example.com/","d":"example.com"}')).name).toBe(
      '12345678901234567890',
    )
  })
})

describe('aliases: the first present wins; "" counts, null and false do not (§2)', () => {
  const U = 'http://example.com/'
  test.each<[string, Record<string, unknown>, (e: AnalyticsEvent) => unknown, unknown]>([
    ['n over name', { u: U, d: 'example.com', n: 'A', name: 'B' }, (e) => e.name, 'A'],
    ['name alone', { u: U, d: 'example.com', name: 'B' }, (e) => e.name, 'B'],
    ['n null → name', { u: U, d: 'example.com', n: null, name: 'B' }, (e) => e.name, 'B'],
    ['n false → name', { u: U, d: 'example.com', n: false, name: 'B' }, (e) => e.name, 'B'],
    ['u over url', { ...BASE, u: `${U}a`, url: `${U}b` }, (e) => e.pathname, '/a'],
    ['url alone', { n: 'x', d: 'example.com', url: `${U}b` }, (e) => e.pathname, '/b'],
    ['u null → url', { n: 'x', d: 'example.com', u: null, url: `${U}b` }, (e) => e.pathname, '/b'],
    ['u false → url', { n: 'x', d: 'example.com', u: false, url: `${U}b` }, (e) => e.pathname, '/b'],
    ['u "" wins over url', { n: 'x', d: 'example.com', u: '', url: `${U}b` }, (e) => e.hostname, '(none)'],
    ['d over domain', { n: 'x', u: U, d: 'example.com', domain: 'other.com' }, (e) => e.site_id, 1],
    ['domain alone', { n: 'x', u: U, domain: 'other.com' }, (e) => e.site_id, 2],
    ['d null → domain', { n: 'x', u: U, d: null, domain: 'other.com' }, (e) => e.site_id, 2],
    ['d false → domain', { n: 'x', u: U, d: false, domain: 'other.com' }, (e) => e.site_id, 2],
    ['d not a string → URL host', { n: 'x', u: 'http://www.other.com/', d: 5 }, (e) => e.site_id, 2],
    ['no d → URL host without www.', { n: 'x', u: 'http://www.other.com/' }, (e) => e.domain, 'other.com'],
    [
      'r over referrer',
      { ...BASE, r: 'https://a.org/', referrer: 'https://b.org/' },
      (e) => e.referrerUrl,
      'https://a.org/',
    ],
    ['referrer alone', { ...BASE, referrer: 'https://b.org/' }, (e) => e.referrerUrl, 'https://b.org/'],
    ['r null → referrer', { ...BASE, r: null, referrer: 'https://b.org/' }, (e) => e.referrerUrl, 'https://b.org/'],
    ['r "" wins over referrer', { ...BASE, r: '', referrer: 'https://b.org/' }, (e) => e.referrerUrl, ''],
    ['r not a string is dropped', { ...BASE, r: 5, referrer: 'https://b.org/' }, (e) => e.referrerUrl, ''],
    ['h over hashMode', { ...BASE, h: 1, hashMode: 0 }, (e) => e.hashMode, true],
    ['h 0 over hashMode', { ...BASE, h: 0, hashMode: 1 }, (e) => e.hashMode, false],
    ['hashMode alone', { ...BASE, hashMode: 1 }, (e) => e.hashMode, true],
    ['h false → hashMode', { ...BASE, h: false, hashMode: 1 }, (e) => e.hashMode, true],
    [
      'm first',
      { ...BASE, m: { a: 'm' }, meta: { a: 'meta' }, p: { a: 'p' }, props: { a: 'props' } },
      (e) => e.props.a,
      'm',
    ],
    ['then meta', { ...BASE, meta: { a: 'meta' }, p: { a: 'p' }, props: { a: 'props' } }, (e) => e.props.a, 'meta'],
    ['then p', { ...BASE, m: null, p: { a: 'p' }, props: { a: 'props' } }, (e) => e.props.a, 'p'],
    ['then props', { ...BASE, m: false, props: { a: 'props' } }, (e) => e.props.a, 'props'],
    ['p "" wins over props', { ...BASE, p: '', props: { a: 'props' } }, (e) => e.props, {}],
    [
      'revenue over $',
      { ...BASE, revenue: { amount: 1, currency: 'USD' }, $: { amount: 2, currency: 'EUR' } },
      (e) => e.revenue_source_currency,
      'USD',
    ],
    ['$ alone', { ...BASE, $: { amount: 2, currency: 'EUR' } }, (e) => e.revenue_source_currency, 'EUR'],
  ])('%s', async (_, body, read, expected) => {
    expect(read(await accepted(body))).toEqual(expected)
  })
})

describe('URL → hostname, pathname, query (§3)', () => {
  test.each<[string, string, string, string]>([
    ['http://www.example.com/', 'example.com', '/', ''],
    ['http://www.example.com', 'example.com', '/', ''],
    ['http://example.com/path ', 'example.com', '/path', ''],
    ['http://example.com/path/', 'example.com', '/path/', ''],
    ['http://example.com   ', 'example.com', '/', ''],
    ['https://WWW.Example.COM/A', 'WWW.Example.COM', '/A', ''],
    ['https://www.Example.COM/A', 'Example.COM', '/A', ''],
    ['http://www.www.example.com/', 'www.example.com', '/', ''],
    ['http://user:pw@www.example.com:8080/x', 'example.com', '/x', ''],
    ['http://a@b@host.example/x', 'host.example', '/x', ''],
    ['//example.com/no-scheme', 'example.com', '/no-scheme', ''],
    ['http://:8080/x', '(none)', '/x', ''],
    ['http://www./x', '(none)', '/x', ''],
    ['http://[2001:db8::1]:8000/v6', '2001:db8::1', '/v6', ''],
    ['about:config', '(none)', 'config', ''],
    ['file:///x', '(none)', '/x', ''],
    ['/no/hostname', '(none)', '/no/hostname', ''],
    ['', '(none)', '/', ''],
    ['chrome-extension://abc/popup.html', 'abc', '/popup.html', ''],
    ['http://example.com/a%2Fb+c', 'example.com', '/a/b+c', ''],
    [
      'http://www.example.com/opportunity/category/%D8%AC%D9%88%D8%A7%D8%A6%D8%B2-%D9%88%D9%85%D8%B3%D8%A7%D8%A8%D9%82%D8%A7%D8%AA',
      'example.com',
      '/opportunity/category/جوائز-ومسابقات',
      '',
    ],
    ['http://example.com/a%zz', 'example.com', '/a%zz', ''],
    ['http://example.com/a%4', 'example.com', '/a%4', ''],
    ['http://example.com/%C3%A9%zz%41', 'example.com', '/é%zzA', ''],
    ['http://example.com/%FF', 'example.com', '/%FF', ''],
    ['http://example.com/p?utm_source=x&b=1#frag', 'example.com', '/p', 'utm_source=x&b=1'],
    ['http://example.com/p?a=%25balle%25', 'example.com', '/p', 'a=%25balle%25'],
    ['http://example.com/p#no-hash-mode', 'example.com', '/p', ''],
  ])('%p → %p %p %p', async (u, hostname, pathname, query) => {
    const event = await accepted({ ...BASE, u })
    expect([event.hostname, event.pathname, event.query, event.url]).toEqual([hostname, pathname, query, u])
  })

  test.each<[string, number, string]>([
    ['http://www.example.com/#page-a', 1, '/#page-a'],
    ['http://www.example.com/#page-a', 0, '/'],
    ['http://example.com/app#/orders/42', 1, '/app#/orders/42'],
    ['http://example.com/app?x=1#/a%20b', 1, '/app#/a b'],
    ['http://example.com/app', 1, '/app'],
    ['http://example.com/app#', 1, '/app#'],
    ['http://example.com/pictures/index.html#foo', 0, '/pictures/index.html'],
  ])('hash mode: %p with h=%p → %p', async (u, h, pathname) => {
    expect((await accepted({ ...BASE, u, h })).pathname).toBe(pathname)
  })
})

describe('domains and sites (§2, §7)', () => {
  test('one event per domain, sharing one server second', async () => {
    const sent = await send({ ...BASE, d: 'example.com,other.com' })
    expect(sent.status).toBe(202)
    expect(sent.headers.get('x-plausible-dropped')).toBeNull()
    const events = sent.ingest.processed
    expect(events.map((e) => [e.domain, e.site_id, e.timestamp])).toEqual([
      ['example.com', 1, 1_700_000_000],
      ['other.com', 2, 1_700_000_000],
    ])
    expect(events[0]!.site?.id).toBe(1)
    expect(events[0]!.props).not.toBe(events[1]!.props)
  })

  test('domain parts are trimmed and lose one www.', async () => {
    const sent = await send({ ...BASE, d: ' www.example.com , www.other.com ' })
    expect(sent.ingest.processed.map((e) => e.domain)).toEqual(['example.com', 'other.com'])
  })

  test('drops an event as not_found when its domain is not a site', async () => {
    const sent = await send({ ...BASE, d: 'unknown.org' })
    expect(sent.status).toBe(202)
    expect(sent.text).toBe('ok')
    expect(sent.headers.get('x-plausible-dropped')).toBe('1')
    expect(sent.ingest.processed).toHaveLength(0)
    expect(sent.ingest.recorded.map((r) => [r.event.domain, r.drop.reason, r.drop.plugin])).toEqual([
      ['unknown.org', 'not_found', 'plausible'],
    ])
  })

  test('domains are not lower-cased', async () => {
    const sent = await send({ ...BASE, d: 'Example.com' })
    expect(sent.ingest.recorded.map((r) => r.drop.reason)).toEqual(['not_found'])
  })

  test('empty parts of d are unknown sites, not errors', async () => {
    const one = await send({ ...BASE, d: 'example.com,' })
    expect(one.status).toBe(202)
    expect(one.headers.get('x-plausible-dropped')).toBe('1')
    expect(one.ingest.processed).toHaveLength(1)
    const none = await send({ ...BASE, d: ',' })
    expect(none.headers.get('x-plausible-dropped')).toBe('2')
    expect(none.ingest.recorded.map((r) => r.event.domain)).toEqual(['', ''])
  })

  test('x-plausible-dropped counts pipeline drops too', async () => {
    const bot = Object.freeze({ kind: 'drop', reason: 'bot', plugin: 'user-agent' }) as Drop
    const ingest = new FakeIngest((e) => (e.domain === 'other.com' ? bot : undefined))
    const sent = await send({ ...BASE, d: 'example.com,other.com,unknown.org' }, { ingest })
    expect(sent.status).toBe(202)
    expect(sent.headers.get('x-plausible-dropped')).toBe('2')
  })

  test('an asynchronous pipeline is awaited', async () => {
    const drop = Object.freeze({ kind: 'drop', reason: 'throttle', plugin: 'rate-limit' }) as Drop
    const sent = await send(BASE, { ingest: new FakeIngest(() => drop, true) })
    expect(sent.status).toBe(202)
    expect(sent.headers.get('x-plausible-dropped')).toBe('1')
  })
})

describe('event fields', () => {
  test('a pageview fills the request fields and nothing of later stages', async () => {
    const event = await accepted({
      n: 'pageview',
      v: 36,
      u: 'http://tracker.example:8080/landing?utm_source=newsletter',
      d: 'tracker.example',
      r: 'http://news.example/ref',
    })
    expect(event).toMatchObject({
      dialect: 'plausible',
      name: 'pageview',
      url: 'http://tracker.example:8080/landing?utm_source=newsletter',
      hostname: 'tracker.example',
      pathname: '/landing',
      query: 'utm_source=newsletter',
      referrerUrl: 'http://news.example/ref',
      domain: 'tracker.example',
      site_id: 3,
      timestamp: 1_700_000_000,
      hashMode: false,
      interactive: true,
      props: {},
      scroll_depth: 0,
      engagement_time: 0,
      userAgent: UA,
      peerIp: '203.0.113.9',
      referrer: '',
      referrer_source: '',
      utm_source: '',
    })
  })

  test('the referrer is cut to 2000 characters', async () => {
    expect((await accepted({ ...BASE, r: 'a'.repeat(2500) })).referrerUrl).toBe('a'.repeat(2000))
    expect((await accepted({ ...BASE, r: '😀'.repeat(2001) })).referrerUrl).toBe('😀'.repeat(2000))
    expect((await accepted({ ...BASE, r: null })).referrerUrl).toBe('')
  })

  test('props follow §4, with floats printed the Elixir way', async () => {
    const body =
      '{"n":"Signup","u":"http://example.com/","d":"example.com","p":{"f":2.0,"g":1000.0,"h":1.5,"i":0.00001,' +
      '"n":3,"b":true,"nil":null,"arr":[1],"obj":{},"empty":"","big":12345678901234567890}}'
    expect((await accepted(body)).props).toEqual({
      f: '2.0',
      g: '1.0e3',
      h: '1.5',
      i: '1.0e-5',
      n: '3',
      b: 'true',
      big: '12345678901234567890',
    })
  })

  test('fractions need no second parse and still print the Elixir way', async () => {
    const body = '{"n":"Purchase","u":"http://example.com/","d":"example.com","p":{"price":15.99,"tiny":0.00001}}'
    expect((await accepted(body)).props).toEqual({ price: '15.99', tiny: '1.0e-5' })
  })

  test('a whole float beside an integer name keeps both right', async () => {
    const body = '{"n":404,"u":"http://example.com/gone","d":"example.com","p":{"x":1.5,"y":2.0,"z":7}}'
    const event = await accepted(body)
    expect(event.name).toBe('404')
    expect(event.props).toEqual({ path: '/gone', x: '1.5', y: '2.0', z: '7' })
  })

  test('props sent as a JSON string keep their floats', async () => {
    expect((await accepted({ ...BASE, n: 'Signup', p: '{"f":2.0,"n":12}' })).props).toEqual({ f: '2.0', n: '12' })
  })

  test('a 404 gets the path prop, hash included in hash mode', async () => {
    expect((await accepted({ ...BASE, n: 404, u: 'http://example.com/missing' })).props).toEqual({ path: '/missing' })
    expect((await accepted({ ...BASE, n: '404', u: 'http://example.com/app#/gone', h: 1 })).props).toEqual({
      path: '/app#/gone',
    })
  })

  test('revenue is stored as the source amount and currency', async () => {
    const cases: [unknown, string, string][] = [
      [{ amount: 15.99, currency: 'USD' }, '15.99', 'USD'],
      [{ amount: 20, currency: 'EUR' }, '20', 'EUR'],
      [{ amount: '12.3', currency: 'USD' }, '12.3', 'USD'],
      ['{"amount":20.2,"currency":"EUR"}', '20.2', 'EUR'],
      [{ amount: 1.23456, currency: 'USD' }, '1.235', 'USD'],
      [{ amount: '1831d', currency: 'USD' }, '1831', 'USD'],
      [{}, '', ''],
      [{ amount: 1233.2, currency: 'EEEE' }, '', ''],
      [{ amount: 'abc', currency: 'USD' }, '', ''],
      [{ amount: 10 }, '', ''],
    ]
    for (const [revenue, amount, currency] of cases) {
      const event = await accepted({ ...BASE, n: 'Purchase', revenue })
      expect([event.revenue_source_amount, event.revenue_source_currency]).toEqual([amount, currency])
    }
  })
})

describe('interactive (§2)', () => {
  test.each<[string, Record<string, unknown>, boolean]>([
    ['by default', {}, true],
    ['i: false (deviation: honoured)', { i: false }, false],
    ['interactive: false', { interactive: false }, false],
    ['i: null, interactive: false', { i: null, interactive: false }, false],
    ['i: true over interactive: false', { i: true, interactive: false }, true],
    ['i: "false" (text)', { i: 'false' }, true],
    ['i: 0', { i: 0 }, true],
  ])('a custom event, %s', async (_, extra, expected) => {
    expect((await accepted({ ...BASE, n: 'Signup', ...extra })).interactive).toBe(expected)
  })

  test.each([
    'pageview',
    'Outbound Link: Click',
    'Cloaked Link: Click',
    'File Download',
    '404',
    'WP Form Completions',
    'Form: Submission',
  ])('system event %p stays interactive with i: false', async (n) => {
    expect((await accepted({ ...BASE, n, i: false })).interactive).toBe(true)
  })

  test('an engagement stays interactive with i: false', async () => {
    expect((await accepted({ ...BASE, n: 'engagement', sd: 10, i: false })).interactive).toBe(true)
  })
})

describe('engagement fields (§5)', () => {
  // sd and e as JSON text, so floats stay floats; undefined leaves the field out.
  test.each<[string | undefined, string | undefined, number, number]>([
    ['25', undefined, 25, 0],
    ['0', undefined, 0, 0],
    ['100', '0', 100, 0],
    ['101', '5', 100, 5],
    ['-1', '5', 255, 5],
    ['"25"', '5', 25, 5],
    ['"+25"', '5', 25, 5],
    ['"25.5"', '5', 255, 5],
    ['"12asd"', '5', 255, 5],
    ['" 25"', '5', 255, 5],
    ['25.5', '5', 255, 5],
    ['25.0', '5', 255, 5],
    ['true', '5', 255, 5],
    ['null', '5', 255, 5],
    ['[25]', '5', 255, 5],
    ['1000000000000000000000', '5', 100, 5],
    [undefined, '154', 255, 154],
    [undefined, '"154"', 255, 154],
    [undefined, '2591999999', 255, 2_591_999_999],
    ['10', '2592000000', 10, 0],
    ['10', '-1', 10, 0],
    ['10', '1.5', 10, 0],
    ['10', '154.0', 10, 0],
    ['10', '"1.5"', 10, 0],
    ['10', '{}', 10, 0],
  ])('sd=%s e=%s → scroll_depth %p, engagement_time %p', async (sd, e, scrollDepth, engagementTime) => {
    const fields = [
      '"n":"engagement"',
      '"u":"http://example.com/"',
      '"d":"example.com"',
      ...(sd === undefined ? [] : [`"sd":${sd}`]),
      ...(e === undefined ? [] : [`"e":${e}`]),
    ]
    const event = await accepted(`{${fields.join(',')}}`)
    expect([event.scroll_depth, event.engagement_time]).toEqual([scrollDepth, engagementTime])
  })

  test('other events ignore sd and e and store 0', async () => {
    const event = await accepted({ ...BASE, n: 'pageview', sd: 10, e: 50 })
    expect([event.scroll_depth, event.engagement_time]).toEqual([0, 0])
  })
})

describe('robustness', () => {
  const KEYS = ['n', 'name', 'u', 'url', 'd', 'domain', 'r', 'referrer', 'h', 'hashMode', 'm', 'meta', 'p', 'props']
  const MORE_KEYS = ['i', 'interactive', 'v', 'sd', 'e', '$', 'revenue', '__proto__', 'constructor']
  const value = fc.oneof(
    fc.jsonValue(),
    fc.string({ unit: 'binary' }),
    fc.constantFrom(
      'pageview',
      'engagement',
      '404',
      'example.com',
      'example.com,other.com,',
      'http://www.example.com/a%zz?b=1#c',
      'data:x',
      '{"a":2.0}',
      '1',
    ),
  )
  const CONTENT_TYPES = ['text/plain', 'application/json', 'application/x-www-form-urlencoded', null] as const

  test('random JSON bodies never throw and always answer 202 or 400', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.constantFrom(...KEYS, ...MORE_KEYS), value),
        fc.constantFrom(...CONTENT_TYPES),
        async (body, contentType) => {
          const sent = await send(body, { contentType })
          expect([202, 400]).toContain(sent.status)
        },
      ),
      { numRuns: 1000 },
    )
  })

  test('random text bodies never throw and always answer 202 or 400', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.string({ unit: 'binary' }), fc.json()),
        fc.constantFrom(...CONTENT_TYPES),
        async (body, contentType) => {
          const sent = await send(body, { contentType })
          expect([202, 400]).toContain(sent.status)
        },
      ),
      { numRuns: 500 },
    )
  })
})

describe('over HTTP, through the engine', () => {
  let engine: TestEngine

  beforeAll(async () => {
    engine = await startTestEngine({ sites: SITES, plugins: [join(import.meta.dir, 'index.ts')] })
  })

  afterAll(async () => {
    await engine?.close()
  })

  test('stores a tracker pageview and answers 202 ok', async () => {
    const body = '{"n":"pageview","v":36,"u":"http://www.example.com/a/b?x=1","d":"example.com","r":null,"p":{"f":2.0}}'
    const response = await engine.post('/api/event', body, { headers: { 'content-type': 'text/plain' } })
    expect(response.status).toBe(202)
    expect(await response.text()).toBe('ok')
    const rows = engine.events().filter((r) => r.pathname === '/a/b')
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ name: 'pageview', site_id: '1', hostname: 'example.com', 'meta.value': ['2.0'] })
  })

  test('answers 400 with the errors of an invalid body', async () => {
    const response = await engine.post('/api/event', '{}', { headers: { 'content-type': 'text/plain' } })
    expect(response.status).toBe(400)
    expect(await response.json()).toEqual({
      errors: { domain: ["can't be blank"], event_name: ["can't be blank"], url: ['is required'] },
    })
  })

  test('counts an unknown domain in x-plausible-dropped', async () => {
    const response = await engine.post('/api/event', { ...BASE, d: 'example.com,nowhere.org' })
    expect(response.status).toBe(202)
    expect(response.headers.get('x-plausible-dropped')).toBe('1')
  })
})
