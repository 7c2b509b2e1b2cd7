import { describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import { ConfigError } from '../../core/plugin.ts'
import { runPlugin, setupPlugin, testServices } from '../../core/testing.ts'
import { compileIpRules, parseAddress, parseRange } from './addresses.ts'
import plugin from './index.ts'

/** Runs shield-ip for one event of a configured site with the given IP rules. */
async function verdict(options: object, ip: string[], clientIp: string) {
  const services = testServices({ sites: [{ id: 1, domain: 'example.com', shields: { ip } }] })
  const site = services.sites.byDomain('example.com')
  return (await runPlugin(plugin, options, { site, clientIp }, services)).dropped
}

test('lets an event through when its client IP is not on the blocklist', async () => {
  expect(await verdict({}, ['203.0.113.7'], '203.0.113.8')).toBeUndefined()
})

test("drops site_ip_blocklist when the client IP is one of the site's addresses", async () => {
  expect(await verdict({}, ['203.0.113.7'], '203.0.113.7')).toBe('site_ip_blocklist')
})

test('drops site_ip_blocklist when the client IP is in an engine-wide range, for sites derived under sites: any', async () => {
  const services = testServices({ sites: 'any' })
  const site = services.sites.byDomain('other.example')
  const result = await runPlugin(plugin, { addresses: ['10.0.0.0/8'] }, { site, clientIp: '10.1.2.3' }, services)
  expect(result.dropped).toBe('site_ip_blocklist')
})

describe.each<[string, string, boolean]>([
  // Exact addresses (Plausible's rules) in every spelling of the same address.
  ['203.0.113.7', '203.0.113.7', true],
  ['203.0.113.7', '::ffff:203.0.113.7', true],
  ['203.0.113.7', '[::ffff:203.0.113.7]', true],
  ['203.0.113.7', '::ffff:cb00:7107', true],
  ['2001:db8::1', '2001:0DB8:0:0:0:0:0:1', true],
  ['2001:db8::1', 'fe80::1', false],
  ['fe80::1', 'fe80::1%eth0', true],
  ['::1', '::1', true],
  ['::1', '127.0.0.1', false],
  // CIDR ranges (our extension).
  ['198.51.100.0/24', '198.51.100.0', true],
  ['198.51.100.0/24', '198.51.100.255', true],
  ['198.51.100.0/24', '198.51.101.0', false],
  ['198.51.100.77/24', '198.51.100.1', true],
  ['10.0.0.0/8', '::ffff:10.200.0.1', true],
  ['0.0.0.0/0', '8.8.8.8', true],
  ['0.0.0.0/0', '2001:db8::1', false],
  ['2001:db8::/32', '2001:db8:ffff::1', true],
  ['2001:db8::/32', '2001:db9::1', false],
  ['2001:db8:0:1::/64', '2001:db8:0:1:ffff:ffff:ffff:ffff', true],
  ['2001:db8:0:1::/64', '2001:db8:0:2::', false],
  ['::/0', '1.2.3.4', true],
  ['203.0.113.7/32', '203.0.113.7', true],
  ['203.0.113.7/31', '203.0.113.6', true],
  ['203.0.113.7/31', '203.0.113.8', false],
])('rule %s', (rule, clientIp, blocked) => {
  test(`${blocked ? 'blocks' : 'lets through'} ${clientIp}`, async () => {
    expect(await verdict({}, [rule], clientIp)).toBe(blocked ? 'site_ip_blocklist' : undefined)
  })
})

test.each(['', 'unknown', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1::2::3', ':::', '1.2.3.4:80', 'long'])(
  'never throws and blocks nothing on the odd client IP %p',
  async (clientIp) => {
    const ip = clientIp === 'long' ? '1'.repeat(100_000) : clientIp
    expect(await verdict({}, ['0.0.0.0/0', '::/0'], ip)).toBeUndefined()
  },
)

test('rejects an invalid engine-wide address as a config error naming its place', async () => {
  const attempt = setupPlugin(plugin, { addresses: ['10.0.0.1', '10.0.0.0/33'] })
  await expect(attempt).rejects.toThrow(ConfigError)
  await expect(attempt).rejects.toMatchObject({ path: 'addresses[1]' })
})

test("rejects an invalid address in a configured site's shields at start", async () => {
  const services = testServices({ sites: [{ id: 1, domain: 'example.com', shields: { ip: ['1.2.3.4', 'nope'] } }] })
  await expect(setupPlugin(plugin, {}, services)).rejects.toThrow('site example.com: shields.ip[1]')
})

test('parses addresses and ranges by hand', () => {
  expect(parseAddress('1.2.3.4')).toEqual([0, 0, 0xffff, 0x01020304])
  expect(parseAddress('::')).toEqual([0, 0, 0, 0])
  expect(parseAddress('1:2:3:4:5:6:7:8')).toEqual([0x00010002, 0x00030004, 0x00050006, 0x00070008])
  expect(parseAddress('1:2:3:4:5:6:7:8:9')).toBeUndefined()
  expect(parseAddress('1::2:3:4:5:6:7:8')).toBeUndefined()
  expect(parseAddress('12345::')).toBeUndefined()
  expect(parseAddress('1:')).toBeUndefined()
  expect(parseRange('10.0.0.0/8')).toBeDefined()
  expect(parseRange('10.0.0.0/x')).toBeUndefined()
  expect(parseRange('::/129')).toBeUndefined()
})

test('a dotted-quad client IP and its IPv4-mapped form always get the same verdict', () => {
  const octet = fc.integer({ min: 0, max: 255 })
  const v4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'))
  const rule = fc.oneof(
    v4,
    fc.tuple(v4, fc.integer({ min: 0, max: 32 })).map(([a, bits]) => `${a}/${bits}`),
    fc.tuple(v4, fc.integer({ min: 0, max: 128 })).map(([a, bits]) => `::ffff:${a}/${bits}`),
  )
  fc.assert(
    fc.property(fc.array(rule, { maxLength: 4 }), v4, (rules, ip) => {
      const set = compileIpRules(rules, () => {})
      return set.matches(ip) === set.matches(`::ffff:${ip}`)
    }),
    { numRuns: 5000 },
  )
})
