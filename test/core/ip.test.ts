// Address parsing used by client-ip, geoip and ip-type (spec/plausible-dialect.md §6).

import { expect, test } from 'bun:test'
import fc from 'fast-check'
import { cleanAddress, formatIPv4, normalizeIp, parseIPv4, parseIPv6 } from '../../core/ip.ts'

const scratch = new Uint16Array(8)

test.each([
  ['0.0.0.0', 0],
  ['255.255.255.255', 0xffffffff],
  ['203.0.113.7', 0xcb007107],
  ['1.2.3', -1],
  ['1.2.3.4.5', -1],
  ['01.2.3.4', -1],
  ['1.2.3.256', -1],
  ['1..3.4', -1],
  ['1.2.3.4 ', -1],
  ['', -1],
])('parseIPv4(%p) = %p', (text, value) => {
  expect(parseIPv4(text)).toBe(value)
})

test.each([
  ['::', [0, 0, 0, 0, 0, 0, 0, 0]],
  ['::1', [0, 0, 0, 0, 0, 0, 0, 1]],
  ['1::', [1, 0, 0, 0, 0, 0, 0, 0]],
  ['2001:db8::ff00:42:8329', [0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329]],
  ['2001:0db8:0000:0000:0000:ff00:0042:8329', [0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329]],
  ['::ffff:192.0.2.128', [0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0280]],
  ['1:2:3:4:5:6:7::', [1, 2, 3, 4, 5, 6, 7, 0]],
])('parseIPv6(%p)', (text, groups) => {
  const out = new Uint16Array(8)
  expect(parseIPv6(text, out)).toBe(true)
  expect([...out]).toEqual(groups)
})

test.each([
  [':'],
  [':::'],
  ['1:2:3:4:5:6:7:8:9'],
  ['1::2::3'],
  ['12345::'],
  ['1:2:3:4:5:6:7:8::'],
  ['fe80::1%eth0'],
  ['::ffff:1.2.3'],
  ['1:'],
  ['g::1'],
])('parseIPv6 refuses %p', (text) => {
  expect(parseIPv6(text, new Uint16Array(8))).toBe(false)
})

test('every IPv4 and IPv6 address fast-check makes is accepted, IPv4 unchanged', () => {
  fc.assert(
    fc.property(fc.ipV4(), (ip) => {
      expect(normalizeIp(ip, scratch)).toBe(ip)
      expect(formatIPv4(parseIPv4(ip))).toBe(ip)
    }),
  )
  fc.assert(
    fc.property(fc.ipV6(), (ip) => {
      expect(normalizeIp(ip, scratch)).not.toBe('')
    }),
  )
})

test.each([
  ['  203.0.113.7 ', '203.0.113.7'],
  ['"203.0.113.7"', '203.0.113.7'],
  ['203.0.113.7:65535', '203.0.113.7'],
  ['[::1]', '::1'],
  ['"[2001:DB8::1]:8080"', '2001:db8::1'],
  ['::ffff:127.0.0.1', '127.0.0.1'],
  ['[::ffff:7f00:1]', '127.0.0.1'],
  ['[2001:db8::1', ''],
  ['[2001:db8::1]x', ''],
  ['203.0.113.7:', ''],
  ['203.0.113.7:1234567', ''],
  ['unknown', ''],
  ['', ''],
])('cleanAddress(%p) = %p', (text, expected) => {
  expect(cleanAddress(text, scratch)).toBe(expected)
})

// RFC 5952: one text per address, so one client is one visitor and one rate-limit budget whatever
// spelling a proxy writes.
test.each([
  ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
  ['2001:db8:0000::0001', '2001:db8::1'],
  ['0:0:0:0:0:0:0:0', '::'],
  ['0:0:0:0:0:0:0:1', '::1'],
  ['1:0:0:0:0:0:0:0', '1::'],
  // A single zero group is not shortened.
  ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
  // The longest run wins; between equal runs, the first.
  ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
  ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
  ['64:ff9b::1.2.3.4', '64:ff9b::102:304'],
])('normalizeIp(%p) = %p (RFC 5952)', (text, expected) => {
  expect(normalizeIp(text, scratch)).toBe(expected)
})

test('every spelling of an IPv6 address normalises to one text, which parses to the same groups', () => {
  const a = new Uint16Array(8)
  const b = new Uint16Array(8)
  fc.assert(
    fc.property(fc.ipV6(), fc.boolean(), (ip, upper) => {
      const spelled = upper ? ip.toUpperCase() : ip
      const text = normalizeIp(spelled, scratch)
      if (text.includes('.')) return // IPv4-mapped: plain IPv4 by design
      expect(parseIPv6(spelled, a)).toBe(true)
      expect(parseIPv6(text, b)).toBe(true)
      expect([...b]).toEqual([...a])
      // The canonical text is its own normal form.
      expect(normalizeIp(text, scratch)).toBe(text)
      expect(text).toBe(text.toLowerCase())
    }),
  )
})
