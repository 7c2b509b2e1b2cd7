// Behaviour of client-ip from spec/plausible-dialect.md §6.

import { describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import { normalizeIp } from '../../core/ip.ts'
import { ConfigError } from '../../core/plugin.ts'
import { contextFor, makeEvent, runPlugin, setupPlugin, testServices } from '../../core/testing.ts'
import plugin from './index.ts'

const PROXY = '127.0.0.1'
const STRANGER = '198.51.100.20'

async function clientIp(peerIp: string, headers: Record<string, string> | Headers, options: unknown = {}) {
  const { event } = await runPlugin(plugin, options, {
    peerIp,
    clientIp: peerIp,
    headers: headers instanceof Headers ? headers : new Headers(headers),
  })
  return event.clientIp
}

describe('a trusted proxy', () => {
  test('x-plausible-ip wins over every other header (Plausible order)', async () => {
    const ip = await clientIp(PROXY, {
      'cf-connecting-ip': '192.0.2.1',
      'b-forwarded-for': '192.0.2.2',
      'x-forwarded-for': '192.0.2.3',
      forwarded: 'for=192.0.2.4;host=dashboard.site.com;proto=https',
      'x-plausible-ip': '216.160.83.56',
    })
    expect(ip).toBe('216.160.83.56')
  })

  test.each([
    [
      'cf-connecting-ip over b-forwarded-for',
      { 'cf-connecting-ip': '192.0.2.1', 'b-forwarded-for': '192.0.2.2' },
      '192.0.2.1',
    ],
    [
      'b-forwarded-for over x-forwarded-for',
      { 'b-forwarded-for': '192.0.2.2', 'x-forwarded-for': '192.0.2.3' },
      '192.0.2.2',
    ],
    ['x-forwarded-for over forwarded', { 'x-forwarded-for': '192.0.2.3', forwarded: 'for=192.0.2.4' }, '192.0.2.3'],
  ])('%s', async (_name, headers, expected) => {
    expect(await clientIp(PROXY, headers)).toBe(expected)
  })

  test.each([
    ['the first x-forwarded-for entry', { 'x-forwarded-for': '203.0.113.7, 10.0.0.3, 127.0.0.1' }, '203.0.113.7'],
    ['the first b-forwarded-for entry', { 'b-forwarded-for': ' 203.0.113.8 ,10.0.0.3' }, '203.0.113.8'],
    ['an IPv4 port', { 'x-plausible-ip': '203.0.113.9:4711' }, '203.0.113.9'],
    ['an IPv6 port and brackets', { 'cf-connecting-ip': '[2001:db8::1]:443' }, '2001:db8::1'],
    ['brackets without a port', { 'x-forwarded-for': '[2001:db8::2]' }, '2001:db8::2'],
    ['a bare IPv6', { 'x-forwarded-for': '2001:DB8::3, 10.0.0.1' }, '2001:db8::3'],
    ['an IPv4-mapped IPv6 as IPv4', { 'x-forwarded-for': '::ffff:203.0.113.10' }, '203.0.113.10'],
    [
      'Forwarded: the first for=',
      { forwarded: 'by=0.0.0.0;for=216.160.83.56;host=somehost.com;proto=https' },
      '216.160.83.56',
    ],
    [
      'Forwarded: a quoted IPv6 with port',
      { forwarded: 'for="[2001:db8:cafe::17]:4711";proto=http' },
      '2001:db8:cafe::17',
    ],
    ['Forwarded: the first element of several', { forwarded: 'for=192.0.2.43, for=198.51.100.17' }, '192.0.2.43'],
    ['Forwarded: parameter names in any case', { forwarded: 'proto=https; For=192.0.2.60' }, '192.0.2.60'],
  ])('reads %s', async (_name, headers, expected) => {
    expect(await clientIp(PROXY, headers)).toBe(expected)
  })

  test('several x-forwarded-for headers: the first entry of the first one', async () => {
    const headers = new Headers()
    headers.append('x-forwarded-for', '203.0.113.11, 10.0.0.1')
    headers.append('x-forwarded-for', '203.0.113.12')
    expect(await clientIp(PROXY, headers)).toBe('203.0.113.11')
  })

  test.each([
    ['Forwarded without for=', { forwarded: 'by=203.0.113.43;proto=https' }],
    ['Forwarded for=unknown', { forwarded: 'for=unknown' }],
    ['Forwarded obfuscated for=_hidden', { forwarded: 'for=_hidden' }],
    ['x-forwarded-for garbage', { 'x-forwarded-for': 'not-an-ip' }],
    ['an empty header', { 'x-plausible-ip': '' }],
    ['octets above 255', { 'cf-connecting-ip': '256.1.1.1' }],
    ['a port that is no number', { 'cf-connecting-ip': '203.0.113.1:http' }],
    ['a list in a single-address header', { 'x-plausible-ip': '203.0.113.1, 203.0.113.2' }],
  ])('ignores %s and uses the socket', async (_name, headers) => {
    expect(await clientIp(PROXY, headers)).toBe(PROXY)
  })

  test('garbage in one header falls through to the next source', async () => {
    const ip = await clientIp(PROXY, { 'x-plausible-ip': 'garbage', 'x-forwarded-for': '203.0.113.13' })
    expect(ip).toBe('203.0.113.13')
  })

  test.each([
    ['10.1.2.3'],
    ['172.16.0.1'],
    ['172.31.255.255'],
    ['192.168.1.1'],
    ['fd00::1'],
    ['::1'],
    ['::ffff:10.0.0.1'],
  ])('the default list (loopback, private) trusts %s', async (peer) => {
    expect(await clientIp(peer, { 'x-forwarded-for': '203.0.113.14' })).toBe('203.0.113.14')
  })
})

describe('an untrusted peer', () => {
  test('its headers are ignored: the socket address is the client', async () => {
    const ip = await clientIp(STRANGER, {
      'x-plausible-ip': '203.0.113.1',
      'cf-connecting-ip': '203.0.113.2',
      'x-forwarded-for': '203.0.113.3',
      forwarded: 'for=203.0.113.4',
    })
    expect(ip).toBe(STRANGER)
  })

  test.each([['172.32.0.1'], ['100.64.0.1'], ['8.8.8.8'], ['2001:db8::1']])(
    '%s is not a private proxy',
    async (peer) => {
      expect(await clientIp(peer, { 'x-forwarded-for': '203.0.113.14' })).toBe(peer)
    },
  )

  test('an IPv4-mapped socket address is stored as IPv4', async () => {
    expect(await clientIp('::ffff:198.51.100.20', {})).toBe(STRANGER)
  })

  test('an empty peer stays empty', async () => {
    expect(await clientIp('', { 'x-forwarded-for': '203.0.113.14' })).toBe('')
  })
})

describe('options', () => {
  test('trustedProxies overrides server.trustedProxies (CIDR and single address)', async () => {
    const options = { trustedProxies: ['203.0.113.0/24', '2001:db8::5'] }
    expect(await clientIp('203.0.113.200', { 'x-forwarded-for': '192.0.2.1' }, options)).toBe('192.0.2.1')
    expect(await clientIp('2001:db8::5', { 'x-forwarded-for': '192.0.2.2' }, options)).toBe('192.0.2.2')
    expect(await clientIp(PROXY, { 'x-forwarded-for': '192.0.2.3' }, options)).toBe(PROXY)
  })

  test('an IPv4-mapped CIDR matches plain IPv4 peers', async () => {
    const options = { trustedProxies: ['::ffff:198.51.100.0/120'] }
    expect(await clientIp(STRANGER, { 'x-forwarded-for': '192.0.2.1' }, options)).toBe('192.0.2.1')
  })

  test('server.trustedProxies is the default', async () => {
    const services = testServices({ server: { trustedProxies: ['198.51.100.0/24'] } })
    const instance = await setupPlugin(plugin, {}, services)
    const event = makeEvent({ peerIp: STRANGER, headers: new Headers({ 'x-forwarded-for': '192.0.2.9' }) })
    instance.run?.(event, contextFor(plugin))
    expect(event.clientIp).toBe('192.0.2.9')
  })

  test('an empty trust list believes no header', async () => {
    expect(await clientIp(PROXY, { 'x-forwarded-for': '192.0.2.1' }, { trustedProxies: [] })).toBe(PROXY)
  })

  test('headers limits and orders the headers read', async () => {
    const headers = { 'x-plausible-ip': '192.0.2.1', 'x-forwarded-for': '192.0.2.2', forwarded: 'for=192.0.2.3' }
    expect(await clientIp(PROXY, headers, { headers: ['forwarded', 'x-forwarded-for'] })).toBe('192.0.2.3')
    expect(await clientIp(PROXY, headers, { headers: ['x-forwarded-for'] })).toBe('192.0.2.2')
  })

  test('an unknown header name is refused', async () => {
    await expect(setupPlugin(plugin, { headers: ['x-real-ip'] })).rejects.toThrow()
  })

  test.each([['10.0.0.0/33'], ['not-an-ip'], ['1.2.3.4/x'], ['2001:db8::/129']])(
    'a trustedProxies entry %s is a ConfigError',
    async (entry) => {
      const error = await setupPlugin(plugin, { trustedProxies: [entry] }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).path).toBe('trustedProxies')
    },
  )
})

test('never throws, and yields a valid address or the peer, whatever the headers say', async () => {
  const instance = await setupPlugin(plugin, {})
  const ctx = contextFor(plugin)
  const scratch = new Uint16Array(8)
  const headerValue = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.ipV4(),
    fc.ipV6(),
    fc.ipV4().map((ip) => `${ip}:${Math.floor(Math.random() * 70000)}`),
    fc.ipV6().map((ip) => `[${ip}]:80`),
    fc.string({ maxLength: 30 }).map((s) => `for=${s}`),
  )
  fc.assert(
    fc.property(headerValue, headerValue, headerValue, (a, b, c) => {
      const headers = new Headers()
      // Headers refuses some characters itself; such values cannot reach a plugin.
      try {
        headers.set('x-plausible-ip', a)
        headers.set('x-forwarded-for', b)
        headers.set('forwarded', c)
      } catch {
        return
      }
      const event = makeEvent({ peerIp: PROXY, clientIp: PROXY, headers })
      expect(() => instance.run?.(event, ctx)).not.toThrow()
      expect(event.clientIp === PROXY || normalizeIp(event.clientIp, scratch) === event.clientIp).toBe(true)
    }),
    { numRuns: 2000 },
  )
})

describe('a trusted sender (a backend with a site key)', () => {
  test('its forwarding headers are read whatever its peer, in the configured order', async () => {
    const instance = await setupPlugin(plugin, {})
    const ctx = contextFor(plugin)
    const headers = new Headers({ 'x-forwarded-for': '192.0.2.9, 10.0.0.1', forwarded: 'for=192.0.2.10' })
    const keyed = makeEvent({ peerIp: STRANGER, clientIp: STRANGER, headers, trustedSender: true })
    instance.run!(keyed, ctx)
    expect(keyed.clientIp).toBe('192.0.2.9')
    // The same request's headers without the key: the stranger is the client.
    const plain = makeEvent({ peerIp: STRANGER, clientIp: STRANGER, headers, trustedSender: false })
    instance.run!(plain, ctx)
    expect(plain.clientIp).toBe(STRANGER)
  })

  test('without any forwarding header its own address is the client', async () => {
    const { event } = await runPlugin(plugin, {}, { peerIp: STRANGER, clientIp: STRANGER, trustedSender: true })
    expect(event.clientIp).toBe(STRANGER)
  })

  test('the address is worked out once per request and never carried to another request', async () => {
    const instance = await setupPlugin(plugin, {})
    const ctx = contextFor(plugin)
    const first = new Headers({ 'x-forwarded-for': '192.0.2.1' })
    const second = new Headers({ 'x-forwarded-for': '192.0.2.2' })
    const ips = [first, first, second, first].map((headers) => {
      const event = makeEvent({ peerIp: STRANGER, clientIp: STRANGER, headers, trustedSender: true })
      instance.run!(event, ctx)
      return event.clientIp
    })
    expect(ips).toEqual(['192.0.2.1', '192.0.2.1', '192.0.2.2', '192.0.2.1'])
  })
})
