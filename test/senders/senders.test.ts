// Trusted server-side senders and the Plausible batch route (issue #12 items 2 and 3;
// docs/operators/senders-and-batches.md), over real HTTP: the engine listens on a free port with the
// standard plugins and the memory sink, and every request is a real `fetch`. Expectations come from
// the issue and the guide, not from what the engine prints.
//
// The socket peer (127.0.0.1) is deliberately not a trusted proxy here (`trustedProxies: []`), so a
// forwarded address can only count because the request carries a site key.

import { afterAll, beforeEach, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { STANDARD_PLUGINS } from '../../core/defaults.ts'
import type { JsonRow } from '../../core/rows.ts'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'
import { builtinPlugins } from '../../plugins/registry.ts'
import { sipHash24, sipKey } from '../../plugins/user-id/siphash.ts'

const root = resolve(import.meta.dir, '../..')
const SHOP_KEY = 'shop-key-6d1f0c8a9b2e4f70'
const BLOG_KEY = 'blog-key-0a9e8d7c6b5a4f32'
const FIREFOX_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0'
const HOUR = 3_600_000
const DAY = 86_400_000

// rate-limit is left out: a 1,000-item batch from one visitor would meet its per-IP default.
const plugins: unknown[] = STANDARD_PLUGINS.filter((name) => name in builtinPlugins && name !== 'rate-limit').map(
  (name) => {
    if (name === 'spam-referrers') return { 'spam-referrers': { lists: [resolve(root, 'test/fixtures/spammers.txt')] } }
    // The proxy in front (loopback here) classifies addresses; the client-ip headers stay untrusted.
    if (name === 'ip-type') return { 'ip-type': { trustedProxies: ['loopback'] } }
    // Yesterday whole: the back-fill test must not depend on the hour it runs at.
    if (name === 'plausible') return { plausible: { clientTimestamps: { maxAgeHours: 48 } } }
    return name
  },
)

const stateDir = mkdtempSync(join(tmpdir(), 'senders-state-'))
const t = await startTestEngine(
  {
    server: { port: 0, host: '127.0.0.1', trustedProxies: [], bodyLimit: 1_000_000 },
    stateDir,
    sites: [
      { id: 1, domain: 'shop.example', keys: [SHOP_KEY], shields: { ip: ['203.0.113.7'] } },
      { id: 2, domain: 'blog.example', keys: [BLOG_KEY] },
      { id: 3, domain: 'plain.example' },
    ],
    plugins,
  },
  root,
)
const { port } = await t.engine.listen()
const BASE = `http://127.0.0.1:${port}`
afterAll(async () => {
  await t.close()
  rmSync(stateDir, { recursive: true, force: true })
})

interface Answer {
  status: number
  type: string | null
  text: string
  json: unknown
  headers: Headers
}

async function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(`${BASE}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'user-agent': TEST_UA, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  const text = await response.text()
  // Every answer of the engine, refusals included (413 too), lets any origin read it.
  expect(response.headers.get('access-control-allow-origin')).toBe('*')
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: response.status, type: response.headers.get('content-type'), text, json, headers: response.headers }
}

const keyed = (key: string, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${key}`, ...extra })

let visitor = 0
/** A fresh documentation-range address per call, so tests never share a visitor. */
function freshIp(): string {
  visitor++
  return `198.51.100.${(visitor % 250) + 1}`
}

const iso = (ms: number) => new Date(ms).toISOString()
const dateTime = (ms: number) => iso(ms).slice(0, 19).replace('T', ' ')
let marker = 0
/** A unique page path, so each test finds its own rows. */
const page = (name: string) => `/${name}-${++marker}`
const eventsAt = (path: string): JsonRow[] => t.events().filter((r) => r.pathname === path)

beforeEach(() => {
  // Each test reads only rows with its own unique paths; nothing to reset.
})

describe('trusted senders on /api/event', () => {
  test('a keyed event takes the visitor IP and user agent from headers and its client timestamp', async () => {
    const path = page('keyed')
    const at = Date.now() - 2 * HOUR
    const ip = freshIp()
    const body = { n: 'pageview', u: `https://shop.example${path}`, d: 'shop.example', timestamp: iso(at) }
    const headers = keyed(SHOP_KEY, {
      'x-forwarded-for': `${ip}, 10.0.0.1`,
      'user-agent': 'python-requests/2.31.0',
      'x-forwarded-user-agent': FIREFOX_UA,
    })
    const answer = await post('/api/event', body, headers)
    expect(answer.status).toBe(202)
    expect(answer.type).toStartWith('application/json')
    expect(answer.json).toEqual({ accepted: 1, dropped: [] })
    const [row] = eventsAt(path)
    expect(row?.timestamp).toBe(dateTime(at))
    expect(row?.browser).toBe('Firefox')
    expect(row?.operating_system).toBe('GNU/Linux')

    // The same visitor (forwarded IP and UA) a minute later continues the session: the address came
    // from the header, not from the peer, and the user agent from X-Forwarded-User-Agent.
    const next = page('keyed-next')
    await post('/api/event', { ...body, u: `https://shop.example${next}`, timestamp: iso(at + 60_000) }, headers)
    expect(eventsAt(next)[0]?.session_id).toBe(row!.session_id)
    // Another forwarded address is another visitor.
    const other = page('keyed-other')
    await post(
      '/api/event',
      { ...body, u: `https://shop.example${other}`, timestamp: iso(at + 60_000) },
      { ...headers, 'x-forwarded-for': freshIp() },
    )
    expect(eventsAt(other)[0]?.user_id).not.toBe(row!.user_id)
  })

  test('without X-Forwarded-User-Agent the User-Agent header is the visitor’s', async () => {
    const path = page('plain-ua')
    const answer = await post(
      '/api/event',
      { n: 'pageview', u: `https://shop.example${path}`, d: 'shop.example' },
      keyed(SHOP_KEY, { 'x-forwarded-for': freshIp(), 'user-agent': FIREFOX_UA }),
    )
    expect(answer.json).toEqual({ accepted: 1, dropped: [] })
    expect(eventsAt(path)[0]?.browser).toBe('Firefox')
  })

  test('the forwarded address counts for shields: the answer names the drop', async () => {
    const path = page('shielded')
    const body = { n: 'pageview', u: `https://shop.example${path}`, d: 'shop.example' }
    const answer = await post('/api/event', body, keyed(SHOP_KEY, { 'x-forwarded-for': '203.0.113.7' }))
    expect(answer.status).toBe(202)
    expect(answer.json).toEqual({ accepted: 0, dropped: [{ domain: 'shop.example', reason: 'site_ip_blocklist' }] })
    expect(answer.headers.get('x-plausible-dropped')).toBe('1')
    // Unkeyed, the same header from an untrusted peer is not believed: the event is stored.
    const unkeyed = await post('/api/event', body, { 'x-forwarded-for': '203.0.113.7' })
    expect(unkeyed.status).toBe(202)
    expect(unkeyed.text).toBe('ok')
    expect(eventsAt(path)).toHaveLength(1)
  })

  test.each([
    ['an unknown domain', { d: 'shop.example,nowhere.example' }, [{ domain: 'nowhere.example', reason: 'not_found' }]],
    ['a spam referrer', { r: 'https://spam-seo.example/x' }, [{ domain: 'shop.example', reason: 'spam_referrer' }]],
    ['a timestamp over the window', { timestamp: iso(Date.now() - 49 * HOUR) }, 'timestamp_too_old'],
    [
      'a timestamp before yesterday',
      { timestamp: iso(Date.now() - (Date.now() % DAY) - DAY - 1000) },
      'timestamp_too_old',
    ],
    ['a timestamp in the future', { timestamp: Date.now() + 120_000 }, 'timestamp_in_future'],
  ])('the answer names the drop reason: %s', async (_, fields, expected) => {
    const path = page('reason')
    const body = { n: 'pageview', u: `https://shop.example${path}`, d: 'shop.example', ...fields }
    const answer = await post('/api/event', body, keyed(SHOP_KEY, { 'x-forwarded-for': freshIp() }))
    expect(answer.status).toBe(202)
    const dropped = typeof expected === 'string' ? [{ domain: 'shop.example', reason: expected }] : expected
    expect(answer.json).toEqual({ accepted: body.d.includes(',') ? 1 : 0, dropped })
    expect(answer.headers.get('x-plausible-dropped')).toBe(String(dropped.length))
  })

  test.each([
    ['epoch milliseconds', (ms: number) => ms],
    ['epoch milliseconds as text', (ms: number) => String(ms)],
    ['ISO-8601 with an offset', (ms: number) => iso(ms).replace('Z', '+00:00')],
    ['ISO-8601 in another zone', (ms: number) => `${new Date(ms + 2 * HOUR).toISOString().slice(0, 19)}+02:00`],
  ])('a timestamp as %s dates the event', async (_, format) => {
    const path = page('format')
    const at = Math.floor((Date.now() - 30 * 60_000) / 1000) * 1000
    const body = { n: 'pageview', u: `https://shop.example${path}`, d: 'shop.example', timestamp: format(at) }
    const answer = await post('/api/event', body, keyed(SHOP_KEY, { 'x-forwarded-for': freshIp() }))
    expect(answer.json).toEqual({ accepted: 1, dropped: [] })
    expect(eventsAt(path)[0]?.timestamp).toBe(dateTime(at))
  })

  test.each([['yesterday'], ['2026-11-22T10:00:00'], [true], [{ at: 1 }], [-5]])(
    'a timestamp that is no timestamp (%p) is a 400 naming the field',
    async (timestamp) => {
      const body = { n: 'pageview', u: 'https://shop.example/x', d: 'shop.example', timestamp }
      const answer = await post('/api/event', body, keyed(SHOP_KEY))
      expect(answer.status).toBe(400)
      expect(answer.json).toEqual({ errors: { timestamp: ['is invalid'] } })
    },
  )

  test('a bot user agent does not drop a keyed event; unkeyed it does', async () => {
    for (const ua of ['curl/8.4.0', 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)']) {
      const path = page('bot')
      const body = { n: 'pageview', u: `https://shop.example${path}`, d: 'shop.example' }
      const kept = await post('/api/event', body, keyed(SHOP_KEY, { 'user-agent': ua, 'x-forwarded-for': freshIp() }))
      expect(kept.json).toEqual({ accepted: 1, dropped: [] })
      const dropped = await post('/api/event', body, { 'user-agent': ua })
      expect(dropped.text).toBe('ok')
      expect(dropped.headers.get('x-plausible-dropped')).toBe('1')
      expect(eventsAt(path)).toHaveLength(1)
    }
  })

  test('a datacenter verdict does not drop a keyed event; a threat verdict does', async () => {
    const path = page('dc')
    const body = { n: 'pageview', u: `https://shop.example${path}`, d: 'shop.example' }
    const dc = { 'x-plausible-ip-type': 'dc_ip', 'x-forwarded-for': freshIp() }
    expect((await post('/api/event', body, keyed(SHOP_KEY, dc))).json).toEqual({ accepted: 1, dropped: [] })
    const unkeyed = await post('/api/event', body, dc)
    expect(unkeyed.headers.get('x-plausible-dropped')).toBe('1')
    const threat = { 'x-plausible-ip-type': 'threat_ip', 'x-forwarded-for': freshIp() }
    expect((await post('/api/event', body, keyed(SHOP_KEY, threat))).json).toEqual({
      accepted: 0,
      dropped: [{ domain: 'shop.example', reason: 'threat_ip' }],
    })
    expect(eventsAt(path)).toHaveLength(1)
  })

  test.each([
    ['an unknown key', `Bearer ${'x'.repeat(24)}`, 'shop.example'],
    ['another site’s key', `Bearer ${BLOG_KEY}`, 'shop.example'],
    ['a key on a site without keys', `Bearer ${SHOP_KEY}`, 'plain.example'],
    ['a Bearer header without a key', 'Bearer', 'shop.example'],
  ])('%s is refused with 401 and nothing is stored', async (_, authorization, domain) => {
    const path = page('refused')
    const body = { n: 'pageview', u: `https://${domain}${path}`, d: domain }
    const answer = await post('/api/event', body, { authorization })
    expect(answer.status).toBe(401)
    expect(answer.type).toStartWith('application/json')
    expect(answer.headers.get('www-authenticate')).toStartWith('Bearer')
    const errors = (answer.json as { errors: { authorization: string[] } }).errors
    expect(Object.keys(errors)).toEqual(['authorization'])
    expect(errors.authorization).toHaveLength(1)
    // The answer never repeats the key.
    expect(answer.text).not.toContain(BLOG_KEY)
    expect(answer.text).not.toContain(SHOP_KEY)
    expect(eventsAt(path)).toHaveLength(0)
  })

  test('a key with several domains must fit every configured site among them', async () => {
    const path = page('two-sites')
    const body = { n: 'pageview', u: `https://shop.example${path}`, d: 'shop.example,blog.example' }
    expect((await post('/api/event', body, keyed(SHOP_KEY))).status).toBe(401)
    expect(eventsAt(path)).toHaveLength(0)
  })

  test('without a key nothing changes: 202 ok, server time, the peer as client, timestamp ignored', async () => {
    const path = page('unkeyed')
    const before = Math.floor(Date.now() / 1000) * 1000
    const body = {
      n: 'pageview',
      u: `https://shop.example${path}`,
      d: 'shop.example',
      timestamp: iso(before - 5 * HOUR),
    }
    const answer = await post('/api/event', body, {
      'x-forwarded-for': '203.0.113.7',
      'x-forwarded-user-agent': FIREFOX_UA,
      authorization: 'Basic dXNlcjpwYXNz',
    })
    expect(answer.status).toBe(202)
    expect(answer.text).toBe('ok')
    expect(answer.type).toBe('text/plain; charset=utf-8')
    const [row] = eventsAt(path)
    const stored = Date.parse(`${row?.timestamp as string}Z`.replace(' ', 'T'))
    expect(stored).toBeGreaterThanOrEqual(before)
    expect(stored).toBeLessThanOrEqual(Date.now())
    // TEST_UA is Chrome: X-Forwarded-User-Agent is not read without a key.
    expect(row?.browser).toBe('Chrome')
    // An invalid timestamp is no error without a key either: the field is not read.
    const again = await post('/api/event', { ...body, timestamp: 'not a time' })
    expect(again.status).toBe(202)
    expect(again.text).toBe('ok')
  })
})

describe('the batch route', () => {
  test('answers per item: accepted, dropped with reasons, rejected with the single route’s errors', async () => {
    const p = Array.from({ length: 4 }, () => page('batch'))
    const ip = freshIp()
    const items: unknown[] = [
      { n: 'pageview', u: `https://shop.example${p[0]}`, d: 'shop.example' },
      { n: 'pageview', d: 'shop.example' },
      { n: 'pageview', u: `https://nowhere.example${p[1]}` },
      { n: 'pageview', u: `https://shop.example${p[2]}`, d: 'shop.example', timestamp: iso(Date.now() - 49 * HOUR) },
      { n: 'Signup', u: `https://shop.example${p[3]}`, d: 'shop.example', r: 'https://free-traffic.example/' },
      { n: 'pageview', u: 'https://blog.example/', d: 'blog.example' },
      42,
      { n: 'pageview', u: `https://shop.example${p[0]}`, d: 'shop.example', timestamp: 'soon' },
      { n: 'engagement', u: `https://shop.example${p[0]}`, d: 'shop.example', e: 1500, sd: 40 },
    ]
    const answer = await post('/api/event/batch', items, keyed(SHOP_KEY, { 'x-forwarded-for': ip }))
    expect(answer.status).toBe(202)
    expect(answer.type).toStartWith('application/json')
    expect(answer.json).toEqual({
      accepted: 2,
      dropped: [
        { index: 2, reason: 'not_found' },
        { index: 3, reason: 'timestamp_too_old' },
        { index: 4, reason: 'spam_referrer' },
      ],
      rejected: [
        { index: 1, errors: { url: ['is required'] } },
        { index: 5, errors: { authorization: ['the key is not one of the keys of the site "blog.example"'] } },
        { index: 6, errors: { domain: ["can't be blank"], event_name: ["can't be blank"], url: ['is required'] } },
        { index: 7, errors: { timestamp: ['is invalid'] } },
      ],
    })
    expect(eventsAt(p[0]!).map((r) => r.name)).toEqual(['pageview', 'engagement'])
    // One request, one visitor: the engagement found the pageview's session.
    expect(new Set(eventsAt(p[0]!).map((r) => r.session_id)).size).toBe(1)
  })

  test('1,001 items are refused whole with 413; 1,000 are taken', async () => {
    const path = page('big')
    const item = { n: 'pageview', u: `https://shop.example${path}`, d: 'shop.example' }
    const tooMany = await post(
      '/api/event/batch',
      Array(1001).fill(item),
      keyed(SHOP_KEY, { 'x-forwarded-for': freshIp() }),
    )
    expect(tooMany.status).toBe(413)
    expect(tooMany.json).toEqual({ errors: { request: ['a batch holds at most 1000 items; this one holds 1001'] } })
    expect(eventsAt(path)).toHaveLength(0)
    const full = await post(
      '/api/event/batch',
      Array(1000).fill(item),
      keyed(SHOP_KEY, { 'x-forwarded-for': freshIp() }),
    )
    expect(full.status).toBe(202)
    expect(full.json).toEqual({ accepted: 1000, dropped: [], rejected: [] })
    expect(eventsAt(path)).toHaveLength(1000)
  })

  test('a body over the server limit is refused with 413 before it is read', async () => {
    const item = { n: 'pageview', u: `https://shop.example/${'x'.repeat(1500)}`, d: 'shop.example' }
    const answer = await post('/api/event/batch', Array(800).fill(item), keyed(SHOP_KEY))
    expect(answer.status).toBe(413)
  })

  test.each([
    ['an object', { n: 'pageview' }],
    ['invalid JSON', '[{"n":'],
    ['an empty body', ''],
  ])('a body that is no JSON array (%s) is a 400', async (_, body) => {
    const answer = await post('/api/event/batch', body, keyed(SHOP_KEY))
    expect(answer.status).toBe(400)
    expect(answer.json).toEqual({ errors: { request: ['Unable to parse request body as a JSON array'] } })
  })

  test('an unknown key is refused whole with 401', async () => {
    const path = page('batch-401')
    const answer = await post('/api/event/batch', [{ n: 'pageview', u: `https://shop.example${path}` }], {
      authorization: `Bearer ${'y'.repeat(20)}`,
    })
    expect(answer.status).toBe(401)
    expect(eventsAt(path)).toHaveLength(0)
  })

  test('unkeyed callers may batch: server time, no forwarded headers, drop reasons withheld', async () => {
    const p = [page('open'), page('open')]
    const items = [
      { n: 'pageview', u: `https://plain.example${p[0]}`, d: 'plain.example', timestamp: iso(Date.now() - 5 * HOUR) },
      { n: 'pageview', u: `https://nowhere.example${p[1]}` },
      { n: 'pageview', u: `https://plain.example${p[1]}`, d: 'plain.example', timestamp: 'ignored' },
    ]
    const before = Math.floor(Date.now() / 1000) * 1000
    const answer = await post('/api/event/batch', items, { 'user-agent': FIREFOX_UA })
    expect(answer.status).toBe(202)
    expect(answer.json).toEqual({ accepted: 2, dropped: [{ index: 1, reason: 'dropped' }], rejected: [] })
    const [row] = eventsAt(p[0]!)
    expect(Date.parse(`${(row!.timestamp as string).replace(' ', 'T')}Z`)).toBeGreaterThanOrEqual(before)
    // A bot batch is dropped without saying why.
    const bots = await post('/api/event/batch', [items[0]], { 'user-agent': 'curl/8.4.0' })
    expect(bots.json).toEqual({ accepted: 0, dropped: [{ index: 0, reason: 'dropped' }], rejected: [] })
  })
})

describe('back-fill by event time', () => {
  test('a back-filled yesterday gets its own sessions, with yesterday’s salt, apart from today’s', async () => {
    const ip = freshIp()
    const headers = keyed(SHOP_KEY, { 'x-forwarded-for': ip, 'user-agent': FIREFOX_UA })
    const tag = `bf${++marker}`
    const url = (path: string) => `https://shop.example/${tag}${path}`

    // Today: the visitor is live in the browser (sent through the backend, no timestamp).
    const live = await post('/api/event', { n: 'pageview', u: url('/today'), d: 'shop.example' }, headers)
    expect(live.json).toEqual({ accepted: 1, dropped: [] })

    const yesterday = Date.now() - (Date.now() % DAY) - DAY
    const at = (h: number, m: number) => yesterday + h * HOUR + m * 60_000
    const items = [
      { n: 'pageview', u: url('/a'), timestamp: iso(at(10, 0)) },
      { n: 'pageview', u: url('/b'), timestamp: iso(at(10, 5)) },
      { n: 'Signup', u: url('/b'), timestamp: iso(at(10, 20)) },
      { n: 'pageview', u: url('/c'), timestamp: iso(at(10, 25)) },
      // Four and a half hours later: a new session.
      { n: 'pageview', u: url('/d'), timestamp: iso(at(15, 0)) },
      { n: 'pageview', u: url('/e'), timestamp: iso(at(15, 10)) },
    ].map((item) => ({ ...item, d: 'shop.example' }))
    const answer = await post('/api/event/batch', items, headers)
    expect(answer.json).toEqual({ accepted: 6, dropped: [], rejected: [] })

    // Today again: continues today's session, untouched by the back-fill.
    await post('/api/event', { n: 'pageview', u: url('/today-2'), d: 'shop.example' }, headers)

    const mine = t.events().filter((r) => (r.pathname as string).startsWith(`/${tag}/`))
    expect(mine.map((r) => r.pathname)).toEqual(
      ['/today', '/a', '/b', '/b', '/c', '/d', '/e', '/today-2'].map((p) => `/${tag}${p}`),
    )
    expect(mine.slice(1, 7).map((r) => r.timestamp)).toEqual(
      [at(10, 0), at(10, 5), at(10, 20), at(10, 25), at(15, 0), at(15, 10)].map(dateTime),
    )
    const ids = new Set(mine.map((r) => r.session_id as string))
    expect(ids.size).toBe(3)

    // sessions_v2 as the table would collapse them: per session, the +1 rows outnumber the -1 rows
    // by one, and the last +1 row is the state.
    const rows = t.sessions().filter((r) => ids.has(r.session_id as string))
    const state = new Map<string, JsonRow>()
    const balance = new Map<string, number>()
    for (const r of rows) {
      balance.set(r.session_id as string, (balance.get(r.session_id as string) ?? 0) + (r.sign as number))
      if (r.sign === 1) state.set(r.session_id as string, r)
    }
    expect([...balance.values()]).toEqual([1, 1, 1])
    const sessions = [...state.values()].sort((a, b) => String(a.start).localeCompare(String(b.start)))
    const pick = (r: JsonRow) => ({
      start: r.start,
      timestamp: r.timestamp,
      duration: r.duration,
      entry_page: r.entry_page,
      exit_page: r.exit_page,
      pageviews: r.pageviews,
      events: r.events,
      is_bounce: r.is_bounce,
    })
    expect(sessions.slice(0, 2).map(pick)).toEqual([
      {
        start: dateTime(at(10, 0)),
        timestamp: dateTime(at(10, 25)),
        duration: 25 * 60,
        entry_page: `/${tag}/a`,
        exit_page: `/${tag}/c`,
        pageviews: 3,
        events: 4,
        is_bounce: 0,
      },
      {
        start: dateTime(at(15, 0)),
        timestamp: dateTime(at(15, 10)),
        duration: 10 * 60,
        entry_page: `/${tag}/d`,
        exit_page: `/${tag}/e`,
        pageviews: 2,
        events: 2,
        is_bounce: 0,
      },
    ])
    const today = sessions[2]!
    expect(today.entry_page).toBe(`/${tag}/today`)
    expect(today.exit_page).toBe(`/${tag}/today-2`)
    expect(today.pageviews).toBe(2)
    expect(today.session_id).toBe(mine[0]!.session_id!)
    expect(Date.parse(`${(today.start as string).replace(' ', 'T')}Z`)).toBeGreaterThanOrEqual(yesterday + DAY)

    // The user id of yesterday's events is the one yesterday's salt gives (spec §9 input), not today's.
    const salt = new Uint8Array(readFileSync(join(stateDir, 'salts', `salt-${iso(yesterday).slice(0, 10)}`)))
    const input = new TextEncoder().encode(`${FIREFOX_UA}${ip}shop.exampleshop.example`)
    const expected = sipHash24(sipKey(salt), input).toString()
    expect(sessions[0]!.user_id).toBe(expected)
    expect(sessions[1]!.user_id).toBe(expected)
    expect(today.user_id).not.toBe(expected)
  })
})
