// Forwarded-IP spoofing (docs/reliability.md "Spoofed headers"): the client-ip, shield-ip, ip-type
// and user-id plugins of the standard pipeline, seen through engine.handle(request, peerIp).
// A blocked address (shield-ip) shows which address the engine believed; user_id equality shows
// whether two requests were taken for one visitor.

import { afterAll, describe, expect, test } from 'bun:test'
import { checkLynkow, checkPlausible, clearRows, LYNKOW, PLAUSIBLE, standardEngine, TEST_UA } from './harness.ts'

const BLOCKED = '198.51.100.66'
const BLOCKED_V6 = '2001:db8::66'
const t = await standardEngine({
  sites: [{ id: 1, domain: 'example.com', shields: { ip: [BLOCKED, BLOCKED_V6] } }],
  plugins: { 'rate-limit': { perIp: { events: 0 } } },
})
afterAll(() => t.close())

const UNTRUSTED = ['203.0.113.10', '100.64.0.1', '2001:db8:1::10', '::ffff:203.0.113.10', '8.8.8.8']
const TRUSTED = ['127.0.0.1', '10.0.0.1', '192.168.1.1', '172.16.0.1', '::1', 'fd00::1', '::ffff:127.0.0.1']

/** One header that claims the client is `ip`, in each of the five forms client-ip reads. */
const CLAIMS: [string, (ip: string) => Record<string, string>][] = [
  ['x-plausible-ip', (ip) => ({ 'x-plausible-ip': ip })],
  ['cf-connecting-ip', (ip) => ({ 'cf-connecting-ip': ip })],
  ['b-forwarded-for', (ip) => ({ 'b-forwarded-for': `${ip}, 10.0.0.2` })],
  ['x-forwarded-for', (ip) => ({ 'x-forwarded-for': `${ip}, 10.0.0.2` })],
  ['forwarded', (ip) => ({ forwarded: `for="${ip.includes(':') ? `[${ip}]` : ip}:4711";proto=https, for=10.0.0.2` })],
]

function request(path: string, headers: Record<string, string> | Headers, body: unknown): Request {
  const h = new Headers(headers)
  h.set('content-type', 'application/json')
  if (!h.has('user-agent')) h.set('user-agent', TEST_UA)
  return new Request(`http://localhost${path}`, { method: 'POST', headers: h, body: JSON.stringify(body) })
}

/** Whether the Plausible event was dropped, checked as a documented answer. */
async function plausibleDropped(headers: Record<string, string> | Headers, peer: string): Promise<boolean> {
  const res = await t.handle(
    request(PLAUSIBLE, headers, { n: 'pageview', u: 'https://example.com/', d: 'example.com' }),
    peer,
  )
  const { headers: answer } = await checkPlausible(res, peer)
  return answer.get('x-plausible-dropped') === '1'
}

/** The Lynkow message for one pageview. */
async function lynkowMessage(headers: Record<string, string>, peer: string): Promise<string> {
  const res = await t.handle(request(LYNKOW, headers, { event: 'pageview', path: '/' }), peer)
  return JSON.parse((await checkLynkow(res, peer)).text).message
}

/** The user_id stored for one Plausible pageview. */
async function userId(headers: Record<string, string>, peer: string): Promise<string> {
  clearRows(t)
  await plausibleDropped(headers, peer)
  const row = t.events().at(-1)
  expect(row, `stored from ${peer}`).toBeDefined()
  return row!.user_id as string
}

describe('an untrusted peer cannot choose its address', () => {
  test.each(CLAIMS)('%s from an untrusted peer is ignored', async (_name, claim) => {
    for (const peer of UNTRUSTED) {
      // Claiming a blocked address does not get the sender blocked ...
      expect(await plausibleDropped(claim(BLOCKED), peer), peer).toBe(false)
      expect(await lynkowMessage(claim(BLOCKED_V6), peer), peer).toBe('Event received')
      // ... and a blocked sender does not escape by claiming another address.
      expect(await plausibleDropped(claim('203.0.113.99'), BLOCKED), peer).toBe(true)
      expect(await plausibleDropped(claim('203.0.113.99'), `::ffff:${BLOCKED}`), peer).toBe(true)
    }
  })

  test.each(CLAIMS)('%s from an untrusted peer does not change the visitor', async (_name, claim) => {
    const peer = '203.0.113.10'
    const plain = await userId({}, peer)
    expect(await userId(claim('192.0.2.1'), peer)).toBe(plain)
    expect(await userId(claim('192.0.2.2'), peer)).toBe(plain)
  })

  test('x-plausible-ip-type from an untrusted peer is ignored', async () => {
    for (const type of ['dc_ip', 'threat_ip']) {
      expect(await plausibleDropped({ 'x-plausible-ip-type': type }, '203.0.113.10')).toBe(false)
      expect(await plausibleDropped({ 'x-plausible-ip-type': type }, '10.0.0.1')).toBe(true)
    }
    clearRows(t)
    await plausibleDropped({ 'x-plausible-ip-type': 'anonymous_vpn_ip' }, '203.0.113.10')
    expect(t.events().at(-1)!.country_code).not.toBe('A1')
  })
})

describe('a trusted proxy names the client', () => {
  test.each(CLAIMS)('%s from a trusted proxy is believed', async (_name, claim) => {
    for (const peer of TRUSTED) {
      expect(await plausibleDropped(claim(BLOCKED), peer), peer).toBe(true)
      expect(await lynkowMessage(claim(BLOCKED_V6), peer), peer).toBe(
        'Event not stored: excluded IP address (site_ip_blocklist)',
      )
      expect(await plausibleDropped(claim('203.0.113.99'), peer), peer).toBe(false)
    }
  })

  test.each(CLAIMS)('%s from a trusted proxy separates visitors', async (_name, claim) => {
    const a = await userId(claim('192.0.2.1'), '10.0.0.1')
    const b = await userId(claim('192.0.2.2'), '10.0.0.1')
    expect(a).not.toBe(b)
    // The same client through two proxies is one visitor.
    expect(await userId(claim('192.0.2.1'), '127.0.0.1')).toBe(a)
  })

  test("Plausible's header order: the first valid source wins", async () => {
    const peer = '10.0.0.1'
    expect(await plausibleDropped({ 'x-plausible-ip': BLOCKED, 'x-forwarded-for': '192.0.2.1' }, peer)).toBe(true)
    expect(await plausibleDropped({ 'x-plausible-ip': '192.0.2.1', 'x-forwarded-for': BLOCKED }, peer)).toBe(false)
    expect(await plausibleDropped({ 'cf-connecting-ip': BLOCKED, forwarded: 'for=192.0.2.1' }, peer)).toBe(true)
    expect(await plausibleDropped({ 'x-forwarded-for': '192.0.2.1', forwarded: `for=${BLOCKED}` }, peer)).toBe(false)
  })

  test('several X-Forwarded-For headers: the first entry of the first one', async () => {
    const first = new Headers()
    first.append('x-forwarded-for', BLOCKED)
    first.append('x-forwarded-for', '192.0.2.1')
    expect(await plausibleDropped(first, '10.0.0.1')).toBe(true)
    const second = new Headers()
    second.append('x-forwarded-for', '192.0.2.1')
    second.append('x-forwarded-for', BLOCKED)
    expect(await plausibleDropped(second, '10.0.0.1')).toBe(false)
  })

  test('ports and brackets are removed, spellings of one address are one address', async () => {
    const peer = '10.0.0.1'
    for (const value of [
      `${BLOCKED}:8080`,
      ` ${BLOCKED} `,
      `"${BLOCKED}"`,
      `::ffff:${BLOCKED}`,
      `[::ffff:${BLOCKED}]:1`,
    ]) {
      expect(await plausibleDropped({ 'x-forwarded-for': value }, peer), value).toBe(true)
    }
    for (const value of ['[2001:DB8::66]:443', '2001:db8:0:0:0:0:0:66', '2001:0db8::0066']) {
      expect(await plausibleDropped({ 'x-plausible-ip': value }, peer), value).toBe(true)
    }
  })
})

describe('IPv4-mapped IPv6 peers', () => {
  test('::ffff:127.0.0.1 is loopback, so trusted; ::ffff:203.0.113.10 is not', async () => {
    expect(await plausibleDropped({ 'x-forwarded-for': BLOCKED }, '::ffff:127.0.0.1')).toBe(true)
    expect(await plausibleDropped({ 'x-forwarded-for': BLOCKED }, '::ffff:10.1.2.3')).toBe(true)
    expect(await plausibleDropped({ 'x-forwarded-for': BLOCKED }, '::ffff:203.0.113.10')).toBe(false)
  })

  test('a mapped peer and its IPv4 form are one visitor', async () => {
    expect(await userId({}, '::ffff:203.0.113.10')).toBe(await userId({}, '203.0.113.10'))
  })
})

describe('garbage in forwarding headers', () => {
  const GARBAGE = [
    'unknown',
    '_hidden',
    'for=',
    'by=203.0.113.1',
    '999.999.999.999',
    '1.2.3',
    '1.2.3.4.5',
    '::::::',
    '[::1',
    '::1]',
    '[]',
    '',
    ',',
    ', , ,',
    'for="_gazonk"',
    'for=[2001:db8::1',
    '1.2.3.4/24',
    '0x7f.0.0.1',
    '127.1',
    '\u00a0127.0.0.1',
    '1.2.3.4\u00ff',
    `${'1'.repeat(5000)}`,
    `${'1.'.repeat(3000)}1`,
    `${'a:'.repeat(3000)}`,
    `for=${'"'.repeat(1000)}`,
  ]

  test('every garbage value falls through to the next source, never a fault', async () => {
    for (const garbage of GARBAGE) {
      for (const [name] of CLAIMS) {
        // Garbage first, the real client in the next header: the next header counts.
        const headers: Record<string, string> = { [name]: garbage }
        if (name !== 'forwarded') headers.forwarded = `for=${BLOCKED}`
        const dropped = await plausibleDropped(headers, '10.0.0.1')
        expect(dropped, `${name}: ${garbage.slice(0, 30)}`).toBe(name !== 'forwarded')
        expect(await lynkowMessage({ [name]: garbage }, '10.0.0.1')).toBe('Event received')
      }
    }
  })

  test('garbage alone leaves the socket address, which is then the visitor', async () => {
    const socketOnly = await userId({}, '10.0.0.7')
    for (const garbage of GARBAGE.slice(0, 8)) {
      expect(await userId({ 'x-forwarded-for': garbage, forwarded: garbage }, '10.0.0.7'), garbage).toBe(socketOnly)
    }
  })

  test('an empty or unknown peer is never trusted', async () => {
    for (const peer of ['', 'not-an-ip', '127.0.0.1.evil', '10.0.0.1:80']) {
      expect(await plausibleDropped({ 'x-forwarded-for': BLOCKED }, peer), peer).toBe(false)
    }
  })
})
