import { describe, expect, test } from 'bun:test'
import type { AnalyticsEvent } from '../../core/event.ts'
import { ConfigError } from '../../core/plugin.ts'
import { contextFor, makeEvent, setupPlugin, testServices } from '../../core/testing.ts'
import plugin from './index.ts'
import { WindowCounter } from './window-counter.ts'

const T0 = Date.UTC(2026, 0, 1) // a window boundary for every window length used here

/** A set-up instance with two configured sites; `send` runs one event and returns its drop reason. */
async function limiter(options: object, worker = { index: 0, count: 1 }) {
  const services = {
    ...testServices({
      sites: [
        { id: 1, domain: 'example.com' },
        { id: 2, domain: 'other.example', domains: ['other.example', 'alias.example'] },
      ],
    }),
    worker,
  }
  const instance = await setupPlugin(plugin, options, services)
  const ctx = contextFor(plugin)
  const send = (fields: Partial<AnalyticsEvent> & { at: number; domain?: string }) => {
    const { at, domain = 'example.com', ...rest } = fields
    const event = makeEvent({ site: services.sites.byDomain(domain), clientIp: '203.0.113.1', receivedAt: at, ...rest })
    return (instance.run!(event, ctx) as { reason: string } | undefined)?.reason
  }
  /** Sends `n` events and counts how many went through. */
  const accepted = (n: number, fields: Parameters<typeof send>[0]) => {
    let ok = 0
    for (let i = 0; i < n; i++) if (send(fields) === undefined) ok++
    return ok
  }
  return { send, accepted }
}

test('lets events through while the site and the client IP are under their limits', async () => {
  const { accepted } = await limiter({ perSite: { events: 5 }, perIp: { events: 5 } })
  expect(accepted(5, { at: T0 })).toBe(5)
})

test('drops throttle when the site has accepted its limit in the current window', async () => {
  const { send, accepted } = await limiter({ perSite: { events: 3, windowSeconds: 10 }, perIp: { events: 0 } })
  expect(accepted(3, { at: T0, clientIp: '198.51.100.1' })).toBe(3)
  // Another client, same site: still the site's limit.
  expect(send({ at: T0 + 9_999, clientIp: '198.51.100.2' })).toBe('throttle')
  // Another site has its own budget.
  expect(send({ at: T0, domain: 'other.example' })).toBeUndefined()
  // A new fixed window starts from zero.
  expect(send({ at: T0 + 10_000 })).toBeUndefined()
})

test('with serve --workers 3, each worker grants a third of a site limit and the whole IP limit', async () => {
  const { accepted } = await limiter(
    { perSite: { events: 30 }, sites: { 'other.example': { events: 2 } }, perIp: { events: 0 } },
    { index: 1, count: 3 },
  )
  expect(accepted(50, { at: T0, clientIp: '198.51.100.1' })).toBe(10)
  // At least one event per worker, whatever the division gives.
  expect(accepted(5, { at: T0, domain: 'other.example' })).toBe(1)
  const ip = await limiter({ perIp: { events: 6 } }, { index: 1, count: 3 })
  expect(ip.accepted(10, { at: T0 })).toBe(6)
})

test('drops ip_throttle when the client IP has sent its limit in the current window', async () => {
  const { send, accepted } = await limiter({ perIp: { events: 2, windowSeconds: 60 } })
  expect(accepted(2, { at: T0 })).toBe(2)
  expect(send({ at: T0 + 1 })).toBe('ip_throttle')
  // Per IP across sites, and another IP has its own budget.
  expect(send({ at: T0 + 1, domain: 'other.example' })).toBe('ip_throttle')
  expect(send({ at: T0 + 1, clientIp: '203.0.113.2' })).toBeUndefined()
})

test('falls back to the peer address when no client IP was set', async () => {
  const { send } = await limiter({ perIp: { events: 1 } })
  expect(send({ at: T0, clientIp: '', peerIp: '192.0.2.9' })).toBeUndefined()
  expect(send({ at: T0, clientIp: '', peerIp: '192.0.2.9' })).toBe('ip_throttle')
})

// limit 10 a minute; 10 events accepted at 50 s, then a burst of 20 at the given time.
describe.each<[string, number, number]>([
  ['fixed', 61_000, 10],
  ['fixed', 119_000, 10],
  ['sliding', 61_000, 1], // 10 × (1 − 1/60) ≈ 9.8 still counts: room for one
  ['sliding', 90_000, 5], // half the previous window overlaps: 5 counted
  ['sliding', 120_000, 10], // the previous window no longer overlaps
])('window %s, burst at %d ms', (window, at, expected) => {
  test(`accepts ${expected} of 20`, async () => {
    const { accepted } = await limiter({ window, perIp: { events: 10, windowSeconds: 60 } })
    expect(accepted(10, { at: T0 + 50_000 })).toBe(10)
    expect(accepted(20, { at: T0 + at })).toBe(expected)
  })
})

test.each<[string, object, string, number]>([
  [
    'a per-domain override replaces perSite',
    { perSite: { events: 5 }, sites: { 'example.com': { events: 2 } } },
    'example.com',
    2,
  ],
  ['an override may name any domain of the site', { sites: { 'alias.example': { events: 1 } } }, 'other.example', 1],
  [
    'events 0 turns an override off',
    { perSite: { events: 5 }, sites: { 'example.com': { events: 0 } } },
    'example.com',
    50,
  ],
  ['no site limit by default', {}, 'example.com', 50],
])('%s', async (_name, options, domain, expected) => {
  const { accepted } = await limiter({ ...options, perIp: { events: 0 } })
  expect(accepted(50, { at: T0, domain })).toBe(expected)
})

test('limits each client IP to 1,200 events a minute by default', async () => {
  const { accepted } = await limiter({})
  expect(accepted(1_300, { at: T0 })).toBe(1_200)
})

test('an event one limit drops costs the other limit nothing', async () => {
  const { send, accepted } = await limiter({ perSite: { events: 3 }, perIp: { events: 1 } })
  expect(send({ at: T0, clientIp: '192.0.2.1' })).toBeUndefined()
  expect(accepted(10, { at: T0, clientIp: '192.0.2.1' })).toBe(0) // all ip_throttle
  expect(accepted(2, { at: T0, clientIp: '192.0.2.2' }) + accepted(1, { at: T0, clientIp: '192.0.2.3' })).toBe(2)
})

test('never throws on an event without a site or an address', async () => {
  const { send } = await limiter({ perSite: { events: 1 } })
  expect(send({ at: 0, site: undefined, clientIp: '', peerIp: '' })).toBeUndefined()
})

test('rejects a per-domain limit for a domain no site has', async () => {
  const services = testServices({ sites: [{ id: 1, domain: 'example.com' }] })
  await expect(setupPlugin(plugin, { sites: { 'typo.example': { events: 1 } } }, services)).rejects.toThrow(ConfigError)
})

describe('bounded memory', () => {
  test('keeps at most maxKeys keys under a flood of distinct IPs', () => {
    const counter = new WindowCounter<string>('sliding', 1_000)
    const started = performance.now()
    for (let i = 0; i < 300_000; i++) {
      const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`
      if (counter.allows(ip, 5, 60_000, T0 + i)) counter.take(ip, 60_000, T0 + i)
      expect(counter.size).toBeLessThanOrEqual(1_000)
    }
    expect(performance.now() - started).toBeLessThan(5_000)
  })

  test('forgets the longest-quiet IPs first when the table is full', async () => {
    const { send, accepted } = await limiter({ perIp: { events: 1 }, maxTrackedIps: 100 })
    expect(send({ at: T0, clientIp: '192.0.2.1' })).toBeUndefined()
    expect(send({ at: T0, clientIp: '192.0.2.1' })).toBe('ip_throttle')
    for (let i = 0; i < 100; i++) accepted(1, { at: T0, clientIp: `198.51.100.${i}` })
    // Evicted by the flood: its count starts again.
    expect(send({ at: T0, clientIp: '192.0.2.1' })).toBeUndefined()
    // The most recent ones are still counted.
    expect(send({ at: T0, clientIp: '198.51.100.99' })).toBe('ip_throttle')
  })
})

test('a clock that steps back does not reset a window', () => {
  const counter = new WindowCounter<string>('fixed', 10)
  counter.take('k', 1_000, T0 + 5_000)
  expect(counter.allows('k', 1, 1_000, T0 + 4_000)).toBe(false)
})
