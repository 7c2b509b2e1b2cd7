// Behaviour of user-id from spec/plausible-dialect.md §9: the salted SipHash of UA ++ IP ++ domain
// ++ root domain, the previous-salt id, root domains with private suffixes, and daily salts.

import { describe, expect, test } from 'bun:test'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { AnalyticsEvent } from '../../core/event.ts'
import type { PluginInstance } from '../../core/plugin.ts'
import { contextFor, makeEvent, setupPlugin, testServices } from '../../core/testing.ts'
import plugin, { rootDomainOf } from './index.ts'
import { DAY_MS, dayName } from './salts.ts'
import { sipHash24, sipKey } from './siphash.ts'

const UA =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'
const VISIT = { userAgent: UA, clientIp: '203.0.113.7', domain: 'example.com', hostname: 'example.com' }
const ctx = contextFor(plugin)

function run(instance: PluginInstance, fields: Partial<AnalyticsEvent>): AnalyticsEvent {
  const event = makeEvent(fields)
  expect(instance.run?.(event, ctx)).toBeUndefined()
  return event
}

const today = () => Date.now()
const tomorrow = () => (Math.floor(Date.now() / DAY_MS) + 1) * DAY_MS + 60_000

describe('user_id', () => {
  test('is the SipHash-2-4 of UA ++ IP ++ domain ++ root domain under the day salt', async () => {
    const services = testServices()
    const instance = await setupPlugin(plugin, {}, services)
    const event = run(instance, { ...VISIT, hostname: 'app.example.com', receivedAt: today() })
    const salt = readFileSync(join(services.stateDir, 'salts', `salt-${dayName(Math.floor(today() / DAY_MS))}`))
    const input = new TextEncoder().encode(`${UA}203.0.113.7example.comexample.com`)
    expect(event.user_id).toBe(sipHash24(sipKey(new Uint8Array(salt)), input))
    expect(event.rootDomain).toBe('example.com')
  })

  test('the same visitor gets the same id', async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    expect(run(instance, VISIT).user_id).toBe(run(instance, VISIT).user_id)
  })

  test.each([
    ['user agent', { userAgent: `${UA} Edg/124.0` }],
    ['IP', { clientIp: '203.0.113.8' }],
    ['domain', { domain: 'example.org' }],
    ['root domain', { hostname: 'example.net' }],
  ])('another %s gives another id', async (_name, change) => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    expect(run(instance, { ...VISIT, ...change }).user_id).not.toBe(run(instance, VISIT).user_id)
  })

  test('a subdomain of the same site is the same visitor', async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    const www = run(instance, { ...VISIT, hostname: 'www.example.com' })
    const app = run(instance, { ...VISIT, hostname: 'app.example.com' })
    expect(app.user_id).toBe(www.user_id)
    expect(app.user_id).not.toBe(0n)
  })

  test('an id a dialect already set is kept', async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    const event = run(instance, { ...VISIT, user_id: 42n })
    expect(event.user_id).toBe(42n)
    expect(event.previousUserId).toBe(0n)
    expect(event.rootDomain).toBe('example.com')
  })

  test('the site domain stands in for an empty domain', async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    const site = testServices().sites.byDomain('example.com')
    expect(run(instance, { ...VISIT, domain: '', site }).user_id).toBe(run(instance, VISIT).user_id)
  })

  test('cached and uncached ids agree', async () => {
    const services = testServices()
    const cached = await setupPlugin(plugin, {}, services)
    const uncached = await setupPlugin(plugin, { cacheSize: 0 }, services)
    for (const ip of ['203.0.113.7', '203.0.113.7', '2001:db8::1']) {
      expect(run(cached, { ...VISIT, clientIp: ip }).user_id).toBe(run(uncached, { ...VISIT, clientIp: ip }).user_id)
    }
  })

  test('two user agents behind one address keep their own ids, taking turns', async () => {
    const services = testServices()
    const cached = await setupPlugin(plugin, {}, services)
    const uncached = await setupPlugin(plugin, { cacheSize: 0 }, services)
    const other = { ...VISIT, userAgent: `${UA} Edg/124.0` }
    const ids = [VISIT, other, VISIT, other, other, VISIT].map((visit) => {
      const id = run(cached, visit).user_id
      expect(id).toBe(run(uncached, visit).user_id)
      return id
    })
    expect(new Set(ids).size).toBe(2)
  })
})

describe('salt rotation', () => {
  test('the first day has no previous id', async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    expect(run(instance, { ...VISIT, receivedAt: today() }).previousUserId).toBe(0n)
  })

  test("after midnight UTC the id changes and previousUserId is yesterday's id", async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    const before = run(instance, { ...VISIT, receivedAt: today() })
    const after = run(instance, { ...VISIT, receivedAt: tomorrow() })
    expect(after.user_id).not.toBe(before.user_id)
    expect(after.previousUserId).toBe(before.user_id)
  })

  test('a late event from before midnight keeps the new salt (time never runs backwards)', async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    const after = run(instance, { ...VISIT, receivedAt: tomorrow() })
    const late = run(instance, { ...VISIT, receivedAt: today() })
    expect(late.user_id).toBe(after.user_id)
  })

  test('two engines sharing a state folder agree on ids, also after a rotation', async () => {
    const services = testServices()
    const a = await setupPlugin(plugin, {}, services)
    const b = await setupPlugin(plugin, {}, services)
    expect(run(a, VISIT).user_id).toBe(run(b, VISIT).user_id)
    const aNext = run(a, { ...VISIT, receivedAt: tomorrow() })
    const bNext = run(b, { ...VISIT, receivedAt: tomorrow() })
    expect(aNext.user_id).toBe(bNext.user_id)
    expect(aNext.previousUserId).toBe(bNext.previousUserId)
    const files = readdirSync(join(services.stateDir, 'salts')).filter((f) => f.startsWith('salt-'))
    expect(files.length).toBe(2)
  })

  test('the directory option places the salt files', async () => {
    const services = testServices()
    await setupPlugin(plugin, { directory: join(services.stateDir, 'elsewhere') }, services)
    expect(readdirSync(join(services.stateDir, 'elsewhere')).length).toBe(1)
  })
})

describe('root domain', () => {
  test.each([
    ['app.example.com', 'example.com'],
    ['www.example.co.uk', 'example.co.uk'],
    ['foo.netlify.app', 'foo.netlify.app'],
    ['a.b.github.io', 'b.github.io'],
    ['example.com', 'example.com'],
    ['192.168.0.1', '192.168.0.1'],
    ['[::1]', '[::1]'],
    ['localhost', 'localhost'],
    ['(none)', '(none)'],
    ['', '(none)'],
  ])('%p → %p', (hostname, root) => {
    expect(rootDomainOf(hostname)).toBe(root)
  })
})

describe('back-dated events (a trusted sender’s client timestamp)', () => {
  const seconds = (ms: number) => Math.floor(ms / 1000)

  test("an event of yesterday that arrives today gets yesterday's id, with no previous id", async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    const live = run(instance, { ...VISIT, receivedAt: today(), timestamp: seconds(today()) })
    const backfilled = run(instance, { ...VISIT, receivedAt: tomorrow(), timestamp: seconds(today()) })
    expect(backfilled.user_id).toBe(live.user_id)
    expect(backfilled.previousUserId).toBe(0n)
    // The same visitor live on the arrival day has the new day's id.
    const next = run(instance, { ...VISIT, receivedAt: tomorrow(), timestamp: seconds(tomorrow()) })
    expect(next.user_id).not.toBe(live.user_id)
    expect(next.previousUserId).toBe(live.user_id)
  })

  test("yesterday's salt is made when none was, as a file pruned like the others", async () => {
    const services = testServices()
    const instance = await setupPlugin(plugin, {}, services)
    const yesterday = today() - DAY_MS
    const event = run(instance, { ...VISIT, receivedAt: today(), timestamp: seconds(yesterday) })
    const salt = readFileSync(join(services.stateDir, 'salts', `salt-${dayName(Math.floor(yesterday / DAY_MS))}`))
    const input = new TextEncoder().encode(`${UA}203.0.113.7example.comexample.com`)
    expect(event.user_id).toBe(sipHash24(sipKey(new Uint8Array(salt)), input))
    // Today's events keep today's salt, and now find yesterday's as their previous one.
    const live = run(instance, { ...VISIT, receivedAt: today(), timestamp: seconds(today()) })
    expect(live.user_id).not.toBe(event.user_id)
    expect(live.previousUserId).toBe(event.user_id)
  })

  test('an event dated earlier on its arrival day keeps the day’s id', async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    const now = today()
    const startOfDay = now - (now % DAY_MS)
    const live = run(instance, { ...VISIT, receivedAt: now, timestamp: seconds(now) })
    const earlier = run(instance, { ...VISIT, receivedAt: now, timestamp: seconds(startOfDay) })
    expect(earlier.user_id).toBe(live.user_id)
  })

  test('an event dated before yesterday (a replay) gets a salt of this process for its day, never written', async () => {
    const services = testServices()
    const instance = await setupPlugin(plugin, {}, services)
    const now = today()
    const dayStart = now - (now % DAY_MS)
    const at = (days: number) => seconds(dayStart - days * DAY_MS + 3_600_000)
    // A replay sets the arrival to the record's own time.
    const old = (days: number) => run(instance, { ...VISIT, receivedAt: at(days) * 1000, timestamp: at(days) })
    const fiveAgo = old(5)
    const fourAgo = old(4)
    const live = run(instance, { ...VISIT, receivedAt: now, timestamp: seconds(now) })
    expect(fiveAgo.user_id).not.toBe(0n)
    expect(old(5).user_id).toBe(fiveAgo.user_id)
    expect(fourAgo.user_id).not.toBe(fiveAgo.user_id)
    // A session across midnight of the replayed days continues under the previous day's id.
    expect(fourAgo.previousUserId).toBe(fiveAgo.user_id)
    expect([fiveAgo.user_id, fourAgo.user_id]).not.toContain(live.user_id)
    expect([fiveAgo.user_id, fourAgo.user_id]).not.toContain(live.previousUserId)
    // Only today's salt is on disk.
    expect(readdirSync(join(services.stateDir, 'salts')).filter((f) => f.startsWith('salt-'))).toEqual([
      `salt-${dayName(Math.floor(now / DAY_MS))}`,
    ])
  })

  test("a replayed record of yesterday takes yesterday's salt, as a live event of yesterday did", async () => {
    const instance = await setupPlugin(plugin, { store: 'memory' })
    const now = today()
    const yesterday = now - DAY_MS
    const replayed = run(instance, { ...VISIT, receivedAt: yesterday, timestamp: seconds(yesterday) })
    const live = run(instance, { ...VISIT, receivedAt: now, timestamp: seconds(now) })
    expect(live.previousUserId).toBe(replayed.user_id)
    expect(live.user_id).not.toBe(replayed.user_id)
  })
})
