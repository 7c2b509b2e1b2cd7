// core/senders.ts (issue #12 item 2): reading a bearer key, comparing it with a site's keys, the
// visitor's user agent. The HTTP behaviour is in test/senders/senders.test.ts.

import { describe, expect, test } from 'bun:test'
import { anySiteAcceptsKey, bearerDigest, siteAcceptsKey, visitorUserAgent } from '../../core/senders.ts'
import { createSiteTable, keyDigest } from '../../core/sites.ts'

const KEY = 'k-0123456789abcdef'
const sites = createSiteTable([
  { id: 1, domain: 'a.example', keys: [KEY, 'second-key-fedcba9876'] },
  { id: 2, domain: 'b.example' },
])

describe('bearerDigest', () => {
  test.each([
    ['no header', undefined, undefined],
    ['another scheme', 'Basic dXNlcjpwYXNz', undefined],
    ['a word that starts like the scheme', 'Bearerish x', undefined],
    ['Bearer alone', 'Bearer', null],
    ['Bearer and blanks', 'Bearer   ', null],
    ['two tokens', `Bearer ${KEY} more`, null],
  ])('%s', (_, value, expected) => {
    const headers = new Headers(value === undefined ? {} : { authorization: value })
    expect(bearerDigest(headers)).toBe(expected as undefined | null)
  })

  test.each([[`Bearer ${KEY}`], [`bearer ${KEY}`], [`Bearer \t${KEY} `]])('reads the key of %p', (value) => {
    expect(bearerDigest(new Headers({ authorization: value }))).toEqual(keyDigest(KEY))
  })
})

describe('keys of sites', () => {
  test('a site holds digests of its keys, never the keys', () => {
    const site = sites.byDomain('a.example')!
    expect(site.keys).toHaveLength(2)
    expect(JSON.stringify(site)).not.toContain(KEY)
  })

  test('siteAcceptsKey compares with every key of the site', () => {
    const a = sites.byDomain('a.example')!
    expect(siteAcceptsKey(a, keyDigest(KEY))).toBe(true)
    expect(siteAcceptsKey(a, keyDigest('second-key-fedcba9876'))).toBe(true)
    expect(siteAcceptsKey(a, keyDigest(`${KEY}x`))).toBe(false)
    expect(siteAcceptsKey(sites.byDomain('b.example')!, keyDigest(KEY))).toBe(false)
  })

  test('anySiteAcceptsKey looks at every configured site, and sees a reload', () => {
    expect(anySiteAcceptsKey(sites, keyDigest(KEY))).toBe(true)
    expect(anySiteAcceptsKey(sites, keyDigest('nobody-has-this-key'))).toBe(false)
    const table = createSiteTable([{ id: 1, domain: 'a.example', keys: [KEY] }])
    table.replace([{ id: 1, domain: 'a.example', keys: ['rotated-key-0123456789'] }])
    expect(anySiteAcceptsKey(table, keyDigest(KEY))).toBe(false)
    expect(anySiteAcceptsKey(table, keyDigest('rotated-key-0123456789'))).toBe(true)
  })

  test('sites derived under `sites: any` accept no key', () => {
    const any = createSiteTable('any')
    expect(siteAcceptsKey(any.byDomain('c.example')!, keyDigest(KEY))).toBe(false)
  })
})

describe('visitorUserAgent', () => {
  test.each([
    ['X-Forwarded-User-Agent first', { 'x-forwarded-user-agent': 'Visitor/1', 'user-agent': 'node' }, 'Visitor/1'],
    ['an empty forwarded one falls back', { 'x-forwarded-user-agent': '', 'user-agent': 'Visitor/2' }, 'Visitor/2'],
    ['User-Agent otherwise', { 'user-agent': 'Visitor/3' }, 'Visitor/3'],
    ['none at all', {}, ''],
  ])('%s', (_, headers, expected) => {
    expect(visitorUserAgent(new Headers(headers))).toBe(expected)
  })
})
