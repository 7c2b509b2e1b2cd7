// Floods (docs/reliability.md "Floods"): the rate-limit plugin in the standard pipeline holds its
// per-IP and per-site limits under a burst, spoofed addresses do not buy a fresh budget, and memory
// stays bounded under a flood of distinct client addresses and of distinct sites.

import { afterAll, describe, expect, test } from 'bun:test'
import type { TestEngine } from '../../core/testing.ts'
import {
  checkLynkow,
  checkPlausible,
  clearRows,
  heapAfterGc,
  LYNKOW,
  PLAUSIBLE,
  rawPost,
  standardEngine,
} from './harness.ts'

const PAGEVIEW = JSON.stringify({ n: 'pageview', u: 'https://example.com/', d: 'example.com' })
// With a page_url, the hostname stays the same whatever the site (else it is the site's domain).
const LK_PAGEVIEW = JSON.stringify({ event: 'pageview', path: '/', page_url: 'https://example.com/' })

describe('per-IP and per-site limits under a burst', async () => {
  const t = await standardEngine({
    sites: [
      { id: 1, domain: 'example.com' },
      { id: 2, domain: 'busy.example' },
      { id: 3, domain: 'quiet.example' },
    ],
    plugins: {
      'rate-limit': {
        perIp: { events: 5, windowSeconds: 60 },
        perSite: { events: 0 },
        sites: { 'busy.example': { events: 10, windowSeconds: 60 } },
      },
    },
  })
  afterAll(() => t.close())

  /** Sends `count` Lynkow requests at once (one burst, not one after the other) and tallies the answers. */
  async function burst(
    count: number,
    peer: (i: number) => string,
    site = 1,
    headers: (i: number) => Record<string, string> = () => ({}),
  ) {
    const answers = await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        const res = await rawPost(
          t,
          `/public/${site}/analytics/collect`,
          LK_PAGEVIEW,
          { 'content-type': 'application/json', ...headers(i) },
          peer(i),
        )
        const { status, text, headers: h } = await checkLynkow(res)
        return { status, message: JSON.parse(text).message as string, retryAfter: h.get('retry-after') }
      }),
    )
    const accepted = answers.filter((a) => a.message === 'Event received').length
    const limited = answers.filter((a) => a.status === 429)
    return { accepted, limited }
  }

  test('one client IP gets exactly its budget; the rest get 429 with Retry-After', async () => {
    const { accepted, limited } = await burst(40, () => '203.0.113.1')
    expect(accepted).toBe(5)
    expect(limited).toHaveLength(35)
    for (const a of limited) {
      expect(a.retryAfter).toBe('60')
      expect(a.message).toBe('Event not stored: too many requests (ip_throttle); retry after 60 seconds')
    }
    // Another client is not affected.
    expect((await burst(3, () => '203.0.113.2')).accepted).toBe(3)
  })

  test('an untrusted client cannot buy a fresh budget with forwarding headers', async () => {
    const { accepted } = await burst(
      30,
      () => '203.0.113.3',
      1,
      (i) => ({ 'x-forwarded-for': `192.0.2.${i}`, 'x-plausible-ip': `192.0.2.${i}`, forwarded: `for=192.0.2.${i}` }),
    )
    expect(accepted).toBe(5)
  })

  test('behind a trusted proxy each forwarded client has its own budget', async () => {
    const { accepted } = await burst(
      30,
      () => '10.0.0.1',
      1,
      (i) => ({ 'x-forwarded-for': `192.0.2.${100 + (i % 3)}` }),
    )
    expect(accepted).toBe(15)
  })

  test('an IPv4-mapped peer and its IPv4 form share one budget', async () => {
    const spellings = ['::ffff:203.0.113.4', '203.0.113.4']
    expect((await burst(20, (i) => spellings[i % 2]!)).accepted).toBe(5)
    // IPv6 is lower-cased, not rewritten to one canonical form (docs/reliability.md, not guaranteed).
    expect((await burst(20, (i) => (i % 2 ? '2001:DB8::4' : '2001:db8::4'))).accepted).toBe(5)
  })

  test('a site limit holds under a burst from many clients; other sites are not affected', async () => {
    const { accepted, limited } = await burst(50, (i) => `198.51.100.${i}`, 2)
    expect(accepted).toBe(10)
    expect(limited).toHaveLength(40)
    for (const a of limited) expect(a.message).toContain('(throttle)')
    expect((await burst(5, (i) => `198.51.100.${100 + i}`, 3)).accepted).toBe(5)
  })

  test('one Plausible request naming a domain many times spends the per-IP budget per event', async () => {
    clearRows(t)
    const d = Array.from({ length: 50 }, () => 'example.com').join(',')
    const body = JSON.stringify({ n: 'pageview', u: 'https://example.com/', d })
    const res = await checkPlausible(await rawPost(t, PLAUSIBLE, body, { 'content-type': 'text/plain' }, '203.0.113.6'))
    expect(res.headers.get('x-plausible-dropped')).toBe('45')
    expect(t.events()).toHaveLength(5)
  })

  test('Plausible answers a throttled event with 202 and x-plausible-dropped, counted per reason', async () => {
    const throttled = 'analytics_events_dropped_total{reason="ip_throttle",site="example.com"}'
    const count = async () => {
      const metrics = await (await t.handle(new Request('http://localhost/metrics'))).text()
      return Number(
        metrics
          .split('\n')
          .find((l) => l.startsWith(`${throttled} `))
          ?.split(' ')[1],
      )
    }
    const before = await count()
    const answers = await Promise.all(
      Array.from({ length: 12 }, async () =>
        checkPlausible(await rawPost(t, PLAUSIBLE, PAGEVIEW, { 'content-type': 'text/plain' }, '203.0.113.5')),
      ),
    )
    expect(answers.every((a) => a.status === 202 && a.text === 'ok')).toBe(true)
    expect(answers.filter((a) => a.headers.get('x-plausible-dropped') === null)).toHaveLength(5)
    expect(answers.filter((a) => a.headers.get('x-plausible-dropped') === '1')).toHaveLength(7)
    expect(await count()).toBe(before + 7)
  })
})

// Small bounds, so the tables fill within a warm-up: the per-IP counters, the visitor and geo caches
// and the sessions. The client-ip trust cache holds 10,000 peers, a fixed bound.
const BOUNDED = {
  'rate-limit': { maxTrackedIps: 1000 },
  'user-id': { store: 'memory', cacheSize: 1000 },
  geoip: { cacheSize: 1000 },
  sessions: { maxSessions: 1000 },
}

/**
 * Sends `count` requests, both dialects, from distinct client addresses (IPv4 and IPv6 alternating),
 * or to distinct paths from a few addresses when `path` is given.
 */
async function flood(t: TestEngine, count: number, from: { n: number }, path?: (i: number) => string) {
  for (let i = 0; i < count; i++) {
    const n = ++from.n
    const peer =
      path !== undefined
        ? `203.0.113.${n % 50}`
        : n % 2 === 0
          ? `${11 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}.${1 + (n % 200)}`
          : `2001:db8:${(n >> 16).toString(16)}::${(n & 0xffff).toString(16)}`
    const lynkow = path !== undefined || n % 3 === 0
    const res = await rawPost(
      t,
      path ? path(n) : lynkow ? LYNKOW : PLAUSIBLE,
      lynkow ? LK_PAGEVIEW : PAGEVIEW,
      { 'content-type': 'text/plain' },
      peer,
    )
    expect(res.status).toBeLessThan(500)
    await res.arrayBuffer()
    if (i % 2000 === 0) clearRows(t)
  }
  clearRows(t)
}

describe('memory under floods', () => {
  test('a flood of distinct client addresses leaves the heap flat once the bounded tables are full', async () => {
    const t = await standardEngine({ plugins: BOUNDED })
    try {
      const from = { n: 0 }
      await flood(t, 15_000, from)
      const before = heapAfterGc()
      await flood(t, 30_000, from)
      const growth = heapAfterGc() - before
      // 30,000 new addresses: keeping even 100 bytes for each would show as 3 MB.
      expect(growth).toBeLessThan(1.5 * 1024 * 1024)
    } finally {
      await t.close()
    }
  }, 30_000)

  test('a flood of distinct sites under `sites: any` leaves the heap flat', async () => {
    const t = await standardEngine({ sites: 'any', plugins: { ...BOUNDED, 'rate-limit': { perIp: { events: 0 } } } })
    try {
      const from = { n: 0 }
      // Every request names a new site id in the Lynkow path; metrics label them all `other`. The
      // table of derived sites is emptied each time it reaches 10,000, so both measurements are
      // taken at the same point of that cycle (30,000 is a multiple of it).
      const site = (n: number) => `/public/${n}/analytics/collect`
      await flood(t, 15_000, from, site)
      const before = heapAfterGc()
      await flood(t, 30_000, from, site)
      const growth = heapAfterGc() - before
      expect(growth).toBeLessThan(1.5 * 1024 * 1024)
      const metrics = await (await t.handle(new Request('http://localhost/metrics'))).text()
      expect(metrics.split('\n').length).toBeLessThan(300)
    } finally {
      await t.close()
    }
  }, 30_000)
})
