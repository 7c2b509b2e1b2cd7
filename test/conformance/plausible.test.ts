// Plausible dialect conformance over HTTP, through the full default pipeline: every rule of
// spec/plausible-dialect.md checked on the answer and on the rows that reach the sink. Expectations
// come from the spec, not from the engine's output.

import { afterAll, beforeEach, describe, expect, test } from 'bun:test'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { STANDARD_PLUGINS } from '../../core/defaults.ts'
import type { JsonRow } from '../../core/rows.ts'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'
import { builtinPlugins } from '../../plugins/registry.ts'

const root = resolve(import.meta.dir, '../..')
const maxmind = resolve(root, '../shared/data/maxmind-test')
const haveMaxmind = existsSync(resolve(maxmind, 'GeoLite2-City-Test.mmdb'))
if (!haveMaxmind) console.warn('SKIPPING geo conformance: ../shared/data/maxmind-test is missing')

const FIREFOX_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0'
const spamList = resolve(root, 'test/fixtures/spammers.txt')

const plugins: unknown[] = STANDARD_PLUGINS.filter((name) => name in builtinPlugins).map((name) => {
  if (name === 'geoip' && haveMaxmind) return { geoip: { database: resolve(maxmind, 'GeoLite2-City-Test.mmdb') } }
  if (name === 'spam-referrers') return { 'spam-referrers': { lists: [spamList] } }
  return name
})

const t = await startTestEngine(
  {
    sites: [
      { id: 1, domain: 'example.com', domains: ['example.org'] },
      {
        id: 2,
        domain: 'shielded.example',
        shields: {
          ip: ['203.0.113.7', '198.51.100.0/24'],
          country: ['GB'],
          page: ['/admin/**', '/private/*'],
          hostname: ['shielded.example', '*.shielded.example'],
        },
      },
      { id: 3, domain: 'netlify-site.netlify.app' },
      { id: 4, domain: 'blog.example.co.uk' },
    ],
    plugins,
  },
  root,
)
afterAll(() => t.close())

let ipCounter = 0
/** A fresh documentation-range client address per call, so visitors do not share sessions by accident. */
function freshIp(): string {
  ipCounter++
  return `192.0.2.${ipCounter % 250}`.replace(/\.0$/, '.250')
}

interface Sent {
  status: number
  text: string
  dropped: string | null
  json(): unknown
}

async function send(
  body: unknown,
  { ip = '10.1.2.3', ua = TEST_UA, contentType = 'text/plain', headers = {} as Record<string, string> } = {},
): Promise<Sent> {
  const h: Record<string, string> = { 'x-forwarded-for': ip, ...headers }
  if (ua !== '') h['user-agent'] = ua
  if (contentType !== '') h['content-type'] = contentType
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  const res = await t.handle(new Request('http://localhost/api/event', { method: 'POST', headers: h, body: text }))
  const out = await res.text()
  return { status: res.status, text: out, dropped: res.headers.get('x-plausible-dropped'), json: () => JSON.parse(out) }
}

let before = 0
beforeEach(() => {
  before = t.events().length
})
/** Rows written since the current test began. */
const newRows = (): JsonRow[] => t.events().slice(before)
const lastRow = (): JsonRow => {
  const rows = newRows()
  expect(rows.length).toBeGreaterThan(0)
  return rows[rows.length - 1]!
}

const pageview = (over: Record<string, unknown> = {}) => ({
  n: 'pageview',
  u: 'https://example.com/',
  d: 'example.com',
  ...over,
})

describe('§1 transport', () => {
  test('text/plain JSON object → 202 ok', async () => {
    const r = await send(pageview())
    expect(r.status).toBe(202)
    expect(r.text).toBe('ok')
    expect(r.dropped).toBeNull()
    expect(newRows()).toHaveLength(1)
  })

  test('text/plain;charset=UTF-8 (sendBeacon) is accepted', async () => {
    expect((await send(pageview(), { contentType: 'text/plain;charset=UTF-8' })).status).toBe(202)
  })

  test.each([
    ['not json', 'text/plain'],
    ['', 'text/plain'],
    ['[1,2]', 'text/plain'],
    ['"a string"', 'text/plain'],
    ['42', 'text/plain'],
  ])('text/plain body %j → 400 request error', async (body, contentType) => {
    const r = await send(body, { contentType })
    expect(r.status).toBe(400)
    expect(r.json()).toEqual({ errors: { request: ['Unable to parse request body as json'] } })
  })

  test('application/json with invalid JSON → 400', async () => {
    const r = await send('{"n":', { contentType: 'application/json' })
    expect(r.status).toBe(400)
  })

  test('application/json that is not an object gets the field errors', async () => {
    const r = await send('[1]', { contentType: 'application/json' })
    expect(r.status).toBe(400)
    const errors = (r.json() as { errors: Record<string, string[]> }).errors
    expect(Object.keys(errors).sort()).toEqual(['domain', 'event_name', 'url'])
  })

  test('application/x-www-form-urlencoded fields are accepted as strings', async () => {
    const r = await send('n=pageview&u=https%3A%2F%2Fexample.com%2Fform&d=example.com', {
      contentType: 'application/x-www-form-urlencoded',
    })
    expect(r.status).toBe(202)
    expect(lastRow().pathname).toBe('/form')
  })

  test('no content type: 400 with domain, event_name and url errors, or the documented deviation (parsed)', async () => {
    const r = await send(pageview(), { contentType: '' })
    if (r.status === 400) {
      const errors = (r.json() as { errors: Record<string, string[]> }).errors
      expect(Object.keys(errors).sort()).toEqual(['domain', 'event_name', 'url'])
    } else expect(r.status).toBe(202)
  })

  test('query parameters on /api/event are ignored', async () => {
    const res = await t.handle(
      new Request('http://localhost/api/event?n=custom&d=evil.example', {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA, 'x-forwarded-for': '10.9.9.9' },
        body: JSON.stringify(pageview()),
      }),
    )
    expect(res.status).toBe(202)
    expect(lastRow().name).toBe('pageview')
    expect(lastRow().site_id).toBe('1')
  })
})

describe('§2 fields and validation messages', () => {
  test.each([
    [{ u: 'https://example.com/', d: 'example.com' }, { event_name: ["can't be blank"] }],
    [{ n: '', u: 'https://example.com/', d: 'example.com' }, { event_name: ["can't be blank"] }],
    [{ n: '   ', u: 'https://example.com/', d: 'example.com' }, { event_name: ["can't be blank"] }],
    [
      { n: 'x'.repeat(121), u: 'https://example.com/', d: 'example.com' },
      { event_name: ['should be at most 120 character(s)'] },
    ],
    [{ n: 1.5, u: 'https://example.com/', d: 'example.com' }, { event_name: ['is invalid'] }],
    [{ n: ['a'], u: 'https://example.com/', d: 'example.com' }, { event_name: ['is invalid'] }],
    [{ n: 'pageview', d: 'example.com' }, { url: ['is required'] }],
    [{ n: 'pageview', u: 5, d: 'example.com' }, { url: ['must be a valid url'] }],
    [
      { n: 'pageview', u: `https://example.com/${'a'.repeat(2000)}`, d: 'example.com' },
      { url: ['must be a valid url'] },
    ],
    [{ n: 'pageview', u: 'data:text/plain,hi', d: 'example.com' }, { url: ['scheme is not allowed'] }],
    [{ n: 'pageview', u: 'https://example.com/', d: '   ' }, { domain: ["can't be blank"] }],
    [{ n: 'pageview', u: '/no/host' }, { domain: ["can't be blank"] }],
    [{ n: 'pageview', u: 'https://example.com/', d: 'example.com', h: true }, { hash_mode: ['is invalid'] }],
    [{ n: 'pageview', u: 'https://example.com/', d: 'example.com', h: 1.5 }, { hash_mode: ['is invalid'] }],
    [{ n: 'pageview', u: 'https://example.com/', d: 'example.com', h: 'yes' }, { hash_mode: ['is invalid'] }],
    [{}, { event_name: ["can't be blank"], url: ['is required'], domain: ["can't be blank"] }],
  ])('%j → 400 %j', async (body, errors) => {
    const r = await send(body)
    expect(r.status).toBe(400)
    expect(r.json()).toEqual({ errors })
  })

  test('an integer event name becomes its decimal string', async () => {
    expect((await send(pageview({ n: 404 }))).status).toBe(202)
    expect(lastRow().name).toBe('404')
  })

  test('event name is kept as is (no trimming of inner text, case kept)', async () => {
    await send(pageview({ n: 'Signup Clicked' }))
    expect(lastRow().name).toBe('Signup Clicked')
  })

  test('url may be any string except data: ("", about:config, /path, file:///, chrome-extension://)', async () => {
    for (const u of ['about:config', 'file:///x', 'chrome-extension://abc/popup.html']) {
      const r = await send({ n: 'pageview', u, d: 'example.com' })
      expect(r.status).toBe(202)
    }
    const hosts = newRows().map((r) => [r.hostname, r.pathname])
    expect(hosts).toEqual([
      ['(none)', 'config'],
      ['(none)', '/x'],
      ['abc', '/popup.html'],
    ])
  })

  test('aliases: name/url/domain/referrer/props long forms', async () => {
    const r = await send(
      {
        name: 'Signup',
        url: 'https://example.com/long',
        domain: 'example.com',
        referrer: 'https://news.ycombinator.com/item',
        props: { plan: 'pro' },
      },
      { ip: freshIp() },
    )
    expect(r.status).toBe(202)
    const row = lastRow()
    expect([row.name, row.pathname, row.referrer, row['meta.key'], row['meta.value']]).toEqual([
      'Signup',
      '/long',
      'news.ycombinator.com/item',
      ['plan'],
      ['pro'],
    ])
  })

  test('first alias present wins; "" counts as present; null and false do not', async () => {
    // n: "" is present → blank error even though name is set.
    expect((await send({ n: '', name: 'x', u: 'https://example.com/', d: 'example.com' })).json()).toEqual({
      errors: { event_name: ["can't be blank"] },
    })
    // n: null is absent → name is used.
    await send({ n: null, name: 'FromName', u: 'https://example.com/', d: 'example.com' })
    expect(lastRow().name).toBe('FromName')
    await send({ n: false, name: 'FromName2', u: 'https://example.com/', d: 'example.com' })
    expect(lastRow().name).toBe('FromName2')
    // m wins over props.
    await send(pageview({ n: 'Aliased', m: { a: '1' }, props: { b: '2' } }))
    expect(lastRow()['meta.key']).toEqual(['a'])
  })

  test('domain: trimmed, one leading www. removed, not lower-cased; absent → URL host without www.', async () => {
    await send(pageview({ d: '  www.example.com  ' }))
    expect(lastRow().site_id).toBe('1')
    await send({ n: 'pageview', u: 'https://www.example.org/x' })
    expect(lastRow().site_id).toBe('1')
    const r = await send(pageview({ d: 'EXAMPLE.COM' }))
    expect(r.dropped).toBe('1')
  })

  test('referrer is kept only if a string and cut to 2000 characters', async () => {
    // Fresh visitors: a continuing session would carry its first event's referrer instead.
    await send(pageview({ r: 5 }), { ip: freshIp() })
    expect(lastRow().referrer).toBe('')
    await send(pageview({ r: `https://ref.example/${'p'.repeat(3000)}` }), { ip: freshIp() })
    const stored = String(lastRow().referrer)
    expect(stored.startsWith('ref.example/ppp')).toBe(true)
    expect(stored.length).toBe(2000 - 'https://'.length)
  })

  test('hash mode: integer or integer string; only 1 turns it on', async () => {
    await send(pageview({ u: 'https://example.com/app#/home', h: '1' }))
    expect(lastRow().pathname).toBe('/app#/home')
    await send(pageview({ u: 'https://example.com/app#/home', h: 0 }))
    expect(lastRow().pathname).toBe('/app')
    await send(pageview({ u: 'https://example.com/app#/home', h: '2' }))
    expect(lastRow().pathname).toBe('/app')
  })

  test('tracker version v is telemetry only and accepted', async () => {
    expect((await send(pageview({ v: 36 }))).status).toBe(202)
  })
})

describe('§3 URL → hostname and pathname', () => {
  test.each([
    ['https://www.example.com/a', 'example.com', '/a'],
    ['https://Sub.Example.com/A', 'Sub.Example.com', '/A'],
    ['https://example.com', 'example.com', '/'],
    ['https://example.com/path/', 'example.com', '/path/'],
    ['https://example.com/a%2Fb', 'example.com', '/a/b'],
    ['https://example.com/a+b', 'example.com', '/a+b'],
    ['https://example.com/caf%C3%A9', 'example.com', '/café'],
    ['https://example.com/bad%zz', 'example.com', '/bad%zz'],
    ['https://example.com/trailing%20%20', 'example.com', '/trailing'],
    ['https://example.com/q?x=1#frag', 'example.com', '/q'],
    ['https://www.www.example.com/', 'www.example.com', '/'],
  ])('%s → %s %s', async (u, hostname, pathname) => {
    const r = await send({ n: 'pageview', u, d: 'example.com' })
    expect(r.status).toBe(202)
    expect([lastRow().hostname, lastRow().pathname]).toEqual([hostname, pathname])
  })

  test('hash mode appends the decoded fragment', async () => {
    await send(pageview({ u: 'https://example.com/app#/orders/%C3%A9', h: 1 }))
    expect(lastRow().pathname).toBe('/app#/orders/é')
  })
})

describe('§4 props', () => {
  const propsOf = async (p: unknown, extra: Record<string, unknown> = {}) => {
    const r = await send(pageview({ n: 'Custom', p, ...extra }))
    expect(r.status).toBe(202)
    const row = lastRow()
    return Object.fromEntries((row['meta.key'] as string[]).map((k, i) => [k, (row['meta.value'] as string[])[i]]))
  }

  test('drops arrays, objects, empty and null values; keeps booleans and integers as strings', async () => {
    expect(
      await propsOf({ a: [1], b: { c: 1 }, e: '', w: '   ', n: null, t: true, f: false, i: 3, s: 'x', neg: -7 }),
    ).toEqual({ t: 'true', f: 'false', i: '3', s: 'x', neg: '-7' })
  })

  test('leading whitespace only counts as empty; trailing text is kept verbatim', async () => {
    expect(await propsOf({ a: '  x ', '  ': 'v' })).toEqual({ a: '  x ' })
  })

  test.each([
    ['2.0', '2.0'],
    ['1.5', '1.5'],
    ['100.0', '100.0'],
    ['1000.0', '1.0e3'],
    ['1500.0', '1.5e3'],
    ['0.001', '0.001'],
    ['0.00001', '1.0e-5'],
    ['1e2', '100.0'],
  ])('float %s → %s (Elixir notation, from the raw number text)', async (raw, expected) => {
    const body = `{"n":"Custom","u":"https://example.com/","d":"example.com","p":{"x":${raw}}}`
    const r = await send(body)
    expect(r.status).toBe(202)
    expect(lastRow()['meta.value']).toEqual([expected])
  })

  test('props given as a JSON string are decoded; anything else counts as {}', async () => {
    expect(await propsOf(JSON.stringify({ a: 'b' }))).toEqual({ a: 'b' })
    expect(await propsOf('not json')).toEqual({})
    expect(await propsOf([1, 2])).toEqual({})
  })

  test('404, WP Form Completions and Form: Submission get path = pathname unless a path prop survived', async () => {
    for (const n of ['404', 'WP Form Completions', 'Form: Submission']) {
      await send({ n, u: 'https://example.com/missing/page', d: 'example.com' })
      expect(lastRow()['meta.key']).toEqual(['path'])
      expect(lastRow()['meta.value']).toEqual(['/missing/page'])
    }
    await send({ n: '404', u: 'https://example.com/x', d: 'example.com', p: { path: '/custom' } })
    expect(lastRow()['meta.value']).toEqual(['/custom'])
  })

  test('at most 30 props: the greatest keys in byte order are kept, stored sorted', async () => {
    const p = Object.fromEntries(Array.from({ length: 35 }, (_, i) => [`k${String(i).padStart(2, '0')}`, 'v']))
    const kept = Object.keys(await propsOf(p))
    expect(kept).toEqual(Array.from({ length: 30 }, (_, i) => `k${String(i + 5).padStart(2, '0')}`))
  })

  test('the added path survives the cut', async () => {
    const p = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`z${String(i).padStart(2, '0')}`, 'v']))
    await send({ n: '404', u: 'https://example.com/gone', d: 'example.com', p })
    const keys = lastRow()['meta.key'] as string[]
    expect(keys).toHaveLength(30)
    expect(keys).toContain('path')
  })

  test.each([[{ ['k'.repeat(301)]: 'v' }], [{ k: 'v'.repeat(2001) }]])(
    'a key over 300 bytes or a value over 2000 bytes → 400',
    async (p) => {
      const r = await send(pageview({ p }))
      expect(r.status).toBe(400)
      expect(r.json()).toEqual({ errors: { props: ['keys should have at most 300 bytes and values 2000 bytes'] } })
    },
  )

  test('byte limits count bytes, not characters', async () => {
    const r = await send(pageview({ p: { k: 'é'.repeat(1001) } }))
    expect(r.status).toBe(400)
    const ok = await send(pageview({ p: { k: 'é'.repeat(1000) } }))
    expect(ok.status).toBe(202)
  })

  test('keys are stored sorted ascending by bytes', async () => {
    expect(Object.keys(await propsOf({ b: '1', B: '2', a: '3', é: '4' }))).toEqual(['B', 'a', 'b', 'é'])
  })
})

describe('§5 engagement', () => {
  const engage = async (ip: string, extra: Record<string, unknown>) =>
    send({ n: 'engagement', u: 'https://example.com/read', d: 'example.com', ...extra }, { ip })

  test('needs a session: without one it is dropped as no_session_for_engagement (202 + header)', async () => {
    const r = await engage(freshIp(), { sd: 50, e: 1000 })
    expect(r.status).toBe(202)
    expect(r.dropped).toBe('1')
    expect(newRows()).toHaveLength(0)
  })

  test.each([
    [{ sd: 50, e: 1000 }, 50, 1000],
    [{ sd: 150, e: 10 }, 100, 10],
    [{ sd: -5, e: 10 }, 255, 10],
    [{ sd: '25', e: '30' }, 25, 30],
    [{ sd: '25.5', e: 10 }, 255, 10],
    [{ sd: '12asd', e: 10 }, 255, 10],
    [{ sd: 25.5, e: 10 }, 255, 10],
    [{ sd: 10, e: 2_592_000_000 }, 10, 0],
    [{ sd: 10, e: -1 }, 10, 0],
  ])('%j → scroll_depth %d, engagement_time %d', async (fields, sd, e) => {
    const ip = freshIp()
    await send({ n: 'pageview', u: 'https://example.com/read', d: 'example.com' }, { ip })
    const r = await engage(ip, fields)
    expect(r.status).toBe(202)
    expect(r.dropped).toBeNull()
    const row = lastRow()
    expect([row.name, row.scroll_depth, row.engagement_time]).toEqual(['engagement', sd, e])
  })

  test('neither a valid sd nor e → 400 event_name error', async () => {
    const r = await engage(freshIp(), { sd: 'x', e: 'y' })
    expect(r.status).toBe(400)
    expect(r.json()).toEqual({
      errors: {
        event_name: ["engagement event requires a valid integer value for at least one of 'sd' or 'e' fields"],
      },
    })
  })

  test('other events ignore sd and e (stored as 0)', async () => {
    await send(pageview({ sd: 50, e: 100 }))
    expect([lastRow().scroll_depth, lastRow().engagement_time]).toEqual([0, 0])
  })

  test('engagement extends the session and writes no session rows', async () => {
    const ip = freshIp()
    await send({ n: 'pageview', u: 'https://example.com/e', d: 'example.com' }, { ip })
    const sessionsBefore = t.sessions().length
    await engage(ip, { sd: 80, e: 5000 })
    expect(t.sessions().length).toBe(sessionsBefore)
    const [pv, eng] = newRows()
    expect(eng!.session_id).toBe(pv!.session_id)
  })
})

describe('§6 client IP', () => {
  const ipHeadersFrom = async (headers: Record<string, string>, peer: string) => {
    const res = await t.handle(
      new Request('http://localhost/api/event', {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'user-agent': FIREFOX_UA, ...headers },
        body: JSON.stringify(pageview({ u: 'https://example.com/ip-test' })),
      }),
      peer,
    )
    expect(res.status).toBe(202)
    return lastRow().user_id
  }

  test('forwarded headers from a trusted peer decide the client; from an untrusted peer they are ignored', async () => {
    const viaProxyA = await ipHeadersFrom({ 'x-forwarded-for': '203.0.113.50' }, '127.0.0.1')
    const viaProxyB = await ipHeadersFrom({ 'x-forwarded-for': '203.0.113.50' }, '10.0.0.9')
    const spoofed = await ipHeadersFrom({ 'x-forwarded-for': '203.0.113.50' }, '8.8.4.4')
    const direct = await ipHeadersFrom({}, '8.8.4.4')
    expect(viaProxyA).toBe(viaProxyB)
    expect(spoofed).toBe(direct)
    expect(spoofed).not.toBe(viaProxyA)
  })

  test('header order: x-plausible-ip, cf-connecting-ip, b-forwarded-for, x-forwarded-for, Forwarded', async () => {
    const target = await ipHeadersFrom({ 'x-forwarded-for': '203.0.113.60' }, '127.0.0.1')
    expect(
      await ipHeadersFrom({ 'x-plausible-ip': '203.0.113.60', 'cf-connecting-ip': '203.0.113.61' }, '127.0.0.1'),
    ).toBe(target)
    expect(
      await ipHeadersFrom({ 'cf-connecting-ip': '203.0.113.60', 'x-forwarded-for': '203.0.113.61' }, '127.0.0.1'),
    ).toBe(target)
    expect(
      await ipHeadersFrom(
        { 'b-forwarded-for': '203.0.113.60, 1.1.1.1', 'x-forwarded-for': '203.0.113.61' },
        '127.0.0.1',
      ),
    ).toBe(target)
    expect(await ipHeadersFrom({ forwarded: 'for="203.0.113.60:4711";proto=https' }, '127.0.0.1')).toBe(target)
    expect(await ipHeadersFrom({ 'x-forwarded-for': '203.0.113.60:1234' }, '127.0.0.1')).toBe(target)
  })

  test('a Forwarded header without for= is ignored (no 500) and the next source is used', async () => {
    const peer = await ipHeadersFrom({}, '127.0.0.2')
    expect(await ipHeadersFrom({ forwarded: 'proto=https' }, '127.0.0.2')).toBe(peer)
  })

  test('x-plausible-ip-type: dc_ip and threat_ip are dropped', async () => {
    for (const type of ['dc_ip', 'threat_ip']) {
      const r = await send(pageview(), { headers: { 'x-plausible-ip-type': type } })
      expect(r.status).toBe(202)
      expect(r.dropped).toBe('1')
    }
    expect(newRows()).toHaveLength(0)
  })
})

describe.skipIf(!haveMaxmind)('§8 geolocation (MaxMind test City database)', () => {
  test.each([
    ['81.2.69.142', 'GB'],
    ['216.160.83.56', 'US'],
    ['2001:218:1:1:1:1:1:1', 'JP'],
  ])('%s → %s', async (ip, country) => {
    await send(pageview({ u: `https://example.com/geo-${ip}` }), { ip })
    expect(lastRow().country_code).toBe(country)
  })

  test('2.125.160.216 → GB (country, not registered_country), GB-ENG, GB-WBK, city 2655045', async () => {
    await send(pageview(), { ip: '2.125.160.216' })
    const row = lastRow()
    expect([row.country_code, row.subdivision1_code, row.subdivision2_code, row.city_geoname_id]).toEqual([
      'GB',
      'GB-ENG',
      'GB-WBK',
      2655045,
    ])
  })

  test('unknown address → empty codes (two NUL bytes in the row) and city 0', async () => {
    await send(pageview(), { ip: '10.200.0.1' })
    expect([lastRow().country_code, lastRow().city_geoname_id]).toEqual(['\u0000\u0000', 0])
  })

  test('x-plausible-ip-type anonymous_vpn_ip → country A1, no lookup', async () => {
    // A visitor of its own (another UA): a session of this IP from an earlier test would carry GB.
    await send(pageview(), {
      ip: '81.2.69.142',
      ua: 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0',
      headers: { 'x-plausible-ip-type': 'anonymous_vpn_ip' },
    })
    expect([lastRow().country_code, lastRow().city_geoname_id]).toEqual(['A1', 0])
  })
})

describe('§8 user agent and bots', () => {
  test('a desktop Chrome UA → Chrome major.minor, Windows, Desktop', async () => {
    await send(pageview())
    const row = lastRow()
    expect([
      row.browser,
      row.browser_version,
      row.operating_system,
      row.operating_system_version,
      row.screen_size,
    ]).toEqual(['Chrome', '120.0', 'Windows', '10', 'Desktop'])
  })

  test('an iPhone Safari UA → Safari, iOS, Mobile', async () => {
    await send(pageview(), {
      ua: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1',
    })
    const row = lastRow()
    expect([row.browser, row.operating_system, row.screen_size]).toEqual(['Safari', 'iOS', 'Mobile'])
  })

  test.each([
    'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36',
  ])('bot %s is dropped as bot (202 + header)', async (ua) => {
    const r = await send(pageview(), { ua })
    expect(r.status).toBe(202)
    expect(r.dropped).toBe('1')
    expect(newRows()).toHaveLength(0)
  })

  test.each(['', 'Mozilla', 'unknown UA', 'a'.repeat(8192)])('UA %j is not a bot', async (ua) => {
    const r = await send(pageview(), { ua })
    expect(r.dropped).toBeNull()
    expect(newRows()).toHaveLength(1)
  })
})

describe('§7 drops and the x-plausible-dropped header', () => {
  test('unknown site → not_found: 202 ok with x-plausible-dropped: 1', async () => {
    const r = await send(pageview({ d: 'unknown.example' }))
    expect([r.status, r.text, r.dropped]).toEqual([202, 'ok', '1'])
  })

  test('multi-domain d: one event per domain with the same timestamp; unknown and empty parts are dropped', async () => {
    const r = await send(pageview({ d: 'example.com, www.example.org ,unknown.example,' }))
    expect(r.status).toBe(202)
    expect(r.dropped).toBe('2')
    const rows = newRows()
    expect(rows).toHaveLength(2)
    expect(rows[0]!.timestamp).toBe(rows[1]!.timestamp)
    expect(rows.map((x) => x.site_id)).toEqual(['1', '1'])
  })

  test('a spam referrer drops the event for every domain', async () => {
    const r = await send(pageview({ d: 'example.com,shielded.example', r: 'https://www.spam-seo.example/x' }))
    expect(r.dropped).toBe('2')
    expect(newRows()).toHaveLength(0)
  })

  test('a subdomain of a listed spam host is not dropped (exact host after one www. strip)', async () => {
    const r = await send(pageview({ r: 'https://sub.spam-seo.example/x' }))
    expect(r.dropped).toBeNull()
  })
})

describe('§7 shields', () => {
  const shielded = (over: Record<string, unknown> = {}) =>
    pageview({ d: 'shielded.example', u: 'https://shielded.example/ok', ...over })

  test('passing case', async () => {
    const r = await send(shielded(), { ip: '192.0.2.200' })
    expect(r.dropped).toBeNull()
  })

  test.each([
    ['exact IP', { ip: '203.0.113.7' }, {}],
    ['CIDR range', { ip: '198.51.100.42' }, {}],
    ['page /admin/**', {}, { u: 'https://shielded.example/admin/users/1' }],
    ['page /private/*', {}, { u: 'https://shielded.example/private/x' }],
    ['hostname not on the allowlist', {}, { u: 'https://evil.example/ok' }],
  ])('%s is dropped', async (_name, opts, over) => {
    const r = await send(shielded(over), { ip: '192.0.2.201', ...opts })
    expect(r.status).toBe(202)
    expect(r.dropped).toBe('1')
  })

  test('subdomains on the hostname allowlist pass', async () => {
    const r = await send(shielded({ u: 'https://app.shielded.example/x' }), { ip: '192.0.2.202' })
    expect(r.dropped).toBeNull()
  })

  test.skipIf(!haveMaxmind)('country GB is dropped', async () => {
    const r = await send(shielded(), { ip: '81.2.69.142' })
    expect(r.dropped).toBe('1')
  })

  test('other sites are not affected by a site’s shields', async () => {
    const r = await send(pageview({ u: 'https://example.com/admin/users' }), { ip: '203.0.113.7' })
    expect(r.dropped).toBeNull()
  })
})

describe('§9 user id', () => {
  const idFor = async (opts: { ua?: string; ip?: string; u?: string; d?: string }) => {
    await send(pageview({ u: opts.u ?? 'https://example.com/uid', d: opts.d ?? 'example.com' }), {
      ua: opts.ua ?? TEST_UA,
      ip: opts.ip ?? '10.77.0.1',
    })
    return lastRow().user_id
  }

  test('same UA, IP, domain and root domain → same id; any of them changed → different', async () => {
    const base = await idFor({})
    expect(await idFor({})).toBe(base)
    expect(await idFor({ ua: FIREFOX_UA })).not.toBe(base)
    expect(await idFor({ ip: '10.77.0.2' })).not.toBe(base)
    expect(await idFor({ d: 'shielded.example', u: 'https://shielded.example/uid' })).not.toBe(base)
  })

  test('a subdomain of the same site gives the same id (root domain)', async () => {
    const base = await idFor({ d: 'example.com', u: 'https://example.com/a' })
    const sub = await idFor({ d: 'example.com', u: 'https://blog.example.com/a' })
    // Plausible hashes domain ++ root_domain; blog.example.com and example.com share the root domain.
    expect(sub).toBe(base)
  })

  test('user_id is an unsigned 64-bit decimal', async () => {
    const id = await idFor({})
    expect(id).toMatch(/^\d+$/)
    expect(BigInt(id as string) < 2n ** 64n).toBe(true)
  })
})

describe('§9 sessions and bounces', () => {
  const sessionRows = (sessionId: unknown) => t.sessions().filter((s) => s.session_id === sessionId)

  test('a single pageview: one +1 session row, a bounce', async () => {
    const ip = freshIp()
    await send(pageview({ u: 'https://example.com/landing?utm_source=newsletter', r: 'https://www.google.com/' }), {
      ip,
    })
    const row = lastRow()
    const rows = sessionRows(row.session_id)
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({
      sign: 1,
      is_bounce: 1,
      pageviews: 1,
      events: 1,
      entry_page: '/landing',
      exit_page: '/landing',
      hostname: 'example.com',
      utm_source: 'newsletter',
      referrer_source: 'newsletter',
    })
  })

  test('a second pageview: a -1/+1 pair, pageviews 2, not a bounce, same session', async () => {
    const ip = freshIp()
    await send(pageview({ u: 'https://example.com/one' }), { ip })
    await send(pageview({ u: 'https://example.com/two' }), { ip })
    const [a, b] = newRows()
    expect(b!.session_id).toBe(a!.session_id)
    const rows = sessionRows(a!.session_id)
    expect(rows.map((r) => [r.sign, r.pageviews, r.is_bounce, r.exit_page])).toEqual([
      [1, 1, 1, '/one'],
      [-1, 1, 1, '/one'],
      [1, 2, 0, '/two'],
    ])
  })

  test('an interactive custom event ends the bounce; a non-interactive one does not', async () => {
    const ip = freshIp()
    await send(pageview(), { ip })
    await send(pageview({ n: 'Scroll', i: false }), { ip })
    const sid = lastRow().session_id
    expect(sessionRows(sid).at(-1)).toMatchObject({ is_bounce: 1, events: 2 })
    await send(pageview({ n: 'Signup' }), { ip })
    expect(sessionRows(sid).at(-1)).toMatchObject({ is_bounce: 0, events: 3 })
  })

  test('system events are always interactive (i:false ignored)', async () => {
    const ip = freshIp()
    await send(pageview(), { ip })
    await send(pageview({ n: 'Outbound Link: Click', i: false, p: { url: 'https://x.example' } }), { ip })
    expect(sessionRows(lastRow().session_id).at(-1)).toMatchObject({ is_bounce: 0 })
  })

  test('events carry their session’s frozen attribution', async () => {
    const ip = freshIp()
    await send(pageview({ u: 'https://example.com/in?utm_source=twitter&utm_medium=social' }), { ip })
    await send(pageview({ u: 'https://example.com/next?utm_source=other' }), { ip })
    const [first, second] = newRows()
    expect(second!.utm_source).toBe(first!.utm_source)
    expect(second!.referrer_source).toBe(first!.referrer_source)
    expect(second!.acquisition_channel).toBe(first!.acquisition_channel)
  })
})

describe('§8 referrer, source, UTM and channel through the pipeline', () => {
  test.each([
    [
      { r: 'https://www.google.com/search?q=x' },
      'https://example.com/',
      'Google',
      'google.com/search',
      'Organic Search',
    ],
    [{ r: 'https://www.facebook.com/' }, 'https://example.com/', 'Facebook', 'facebook.com', 'Organic Social'],
    [{ r: null }, 'https://example.com/?utm_source=fb&utm_medium=cpc', 'Facebook', '', 'Paid Social'],
    [{ r: 'https://example.com/internal' }, 'https://example.com/', '', '', 'Direct'],
    [
      { r: 'https://blog.example.com/post' },
      'https://example.com/',
      'blog.example.com',
      'blog.example.com/post',
      'Referral',
    ],
    [{ r: null }, 'https://example.com/?gclid=abc', '', '', 'Direct'],
  ])('%j on %s → source %s, referrer %s, channel %s', async (over, u, source, referrer, channel) => {
    await send(pageview({ u, ...over }), { ip: freshIp() })
    const row = lastRow()
    expect([row.referrer_source, row.referrer, row.acquisition_channel]).toEqual([source, referrer, channel])
  })

  test('click ids: the first present of gclid, gbraid, wbraid, msclkid, fbclid, twclid', async () => {
    await send(pageview({ u: 'https://example.com/?fbclid=1&msclkid=2' }), { ip: freshIp() })
    expect(lastRow().click_id_param).toBe('msclkid')
  })

  test('Google + gclid without utm_medium → (gclid)', async () => {
    await send(pageview({ u: 'https://example.com/?gclid=x', r: 'https://www.google.com/' }), { ip: freshIp() })
    expect([lastRow().utm_medium, lastRow().acquisition_channel]).toEqual(['(gclid)', 'Paid Search'])
  })
})

describe('reliability at the dialect', () => {
  test('a 10 KB user agent and CR/LF in the referrer never break the answer', async () => {
    const r = await send(pageview({ r: 'https://a.example/\r\nSet-Cookie: x=1' }), {
      ua: `Mozilla/5.0 ${'x'.repeat(10_000)}`,
    })
    expect(r.status).toBe(202)
    expect(r.text).toBe('ok')
  })
})
