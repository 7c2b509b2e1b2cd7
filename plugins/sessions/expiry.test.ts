// Sessions expire on the wall clock as well as on event time (issue #6: the memory goes back once
// the sessions expire, also when no event arrives), without changing the rows of live traffic or of
// a back-fill under way.

import { heapStats } from 'bun:jsc'
import { afterEach, describe, expect, jest, test } from 'bun:test'
import { resolve } from 'node:path'
import type { AnalyticsEvent } from '../../core/event.ts'
import type { EngineServices, PluginInstance } from '../../core/plugin.ts'
import { contextFor, makeEvent, runScript, setupPlugin, testServices } from '../../core/testing.ts'
import plugin, { expiryIntervalMs, shrinkPools } from './index.ts'
import { AttributionPool, StringPool } from './intern.ts'
import { Attribution, Session } from './session.ts'
import { MemorySessionStore } from './store.ts'

const MIN = 60
const TIMEOUT = 30 * MIN
const ctx = contextFor(plugin)
let instance: PluginInstance | undefined

afterEach(async () => {
  await instance?.close?.()
  instance = undefined
  jest.useRealTimers()
})

/** Seconds on the (fake) wall clock. */
const wallNow = () => Math.floor(Date.now() / 1000)

/** The plugin under fake timers: the expiry interval runs when the test moves the clock on. */
async function sessions(services: EngineServices = testServices()) {
  jest.useFakeTimers()
  jest.setSystemTime(new Date('2026-11-23T12:00:00Z'))
  instance = await setupPlugin(plugin, { snapshot: false }, services)
  const run = instance.run!
  return (fields: Partial<AnalyticsEvent>) => {
    const event = makeEvent({ site_id: 1, user_id: 42n, name: 'pageview', hostname: 'example.com', ...fields })
    const result = run(event, ctx)
    if (result instanceof Promise) throw new Error('the memory store keeps the plugin synchronous')
    return { event, rows: event.sessionRows }
  }
}

const wait = (seconds: number) => jest.advanceTimersByTime(seconds * 1000)

describe('expiry on the wall clock', () => {
  test('an idle engine forgets a session within two timeouts and two checks, without writing a row', async () => {
    const send = await sessions()
    const t0 = wallNow()
    const first = send({ timestamp: t0, pathname: '/a' })
    expect(first.rows).toHaveLength(1)
    // No event for a timeout: still held, so an event dated within the session continues it.
    wait(TIMEOUT)
    const late = send({ timestamp: t0 + 60, pathname: '/b' })
    expect(late.rows!.map((r) => r.sign)).toEqual([-1, 1])
    expect(late.event.session_id).toBe(first.event.session_id)
    // Two timeouts and two checks with no event at all: forgotten. An event dated within the old
    // session (event-time rules would continue it) proves it is gone: it starts a new one.
    wait(2 * TIMEOUT + (2 * expiryIntervalMs(TIMEOUT)) / 1000)
    const after = send({ timestamp: t0 + 120, pathname: '/c' })
    expect(after.rows!.map((r) => r.sign)).toEqual([1])
    expect(after.event.session_id).not.toBe(first.event.session_id)
  })

  test('live traffic gets the rows it got before: one session while events come within the timeout', async () => {
    const send = await sessions()
    const ids = new Set<bigint>()
    let events = 0
    // An event every 29 minutes of wall and event time for five hours: the checks run in between.
    for (let i = 0; i < 10; i++) {
      const { event, rows } = send({ timestamp: wallNow(), pathname: `/p${i}` })
      ids.add(event.session_id)
      events++
      expect(rows!.at(-1)).toMatchObject({ sign: 1, events })
      if (i > 0) expect(rows!.map((r) => r.sign)).toEqual([-1, 1])
      wait(29 * MIN)
    }
    expect(ids.size).toBe(1)
    // A gap past the timeout starts a new session, as event time alone decides.
    wait(2 * MIN)
    const next = send({ timestamp: wallNow(), pathname: '/again' })
    expect(next.rows!.map((r) => r.sign)).toEqual([1])
    expect(ids.has(next.event.session_id)).toBe(false)
  })

  test('a back-filled day under way keeps its sessions, however old its event times', async () => {
    const send = await sessions()
    const yesterday = wallNow() - 24 * 60 * MIN
    // Yesterday's visit, ten events 20 minutes apart in event time, sent 10 minutes of wall time
    // apart (a slow back-fill): far older than a timeout on the wall clock, but touched often.
    const ids = new Set<bigint>()
    for (let i = 0; i < 10; i++) {
      const { event, rows } = send({ user_id: 7n, timestamp: yesterday + i * 20 * MIN, pathname: `/y${i}` })
      ids.add(event.session_id)
      expect(rows!.at(-1)).toMatchObject({ sign: 1, events: i + 1, pageviews: i + 1 })
      wait(10 * MIN)
    }
    expect(ids.size).toBe(1)
    // The back-fill stops: once idle for two timeouts of wall time, the session is forgotten.
    wait(2 * TIMEOUT + (2 * expiryIntervalMs(TIMEOUT)) / 1000)
    const more = send({ user_id: 7n, timestamp: yesterday + 9 * 20 * MIN + 60, pathname: '/y-late' })
    expect(more.rows!.map((r) => r.sign)).toEqual([1])
  })

  test('a back-fill older than a live session, beside live traffic, is unaffected by the checks', async () => {
    const send = await sessions()
    const live = send({ timestamp: wallNow(), pathname: '/today' })
    const past = send({ timestamp: wallNow() - 3 * 60 * MIN, pathname: '/earlier' })
    expect(past.event.session_id).not.toBe(live.event.session_id)
    wait(20 * MIN)
    const past2 = send({ timestamp: wallNow() - 3 * 60 * MIN, pathname: '/earlier-2' })
    expect(past2.event.session_id).toBe(past.event.session_id)
    const live2 = send({ timestamp: wallNow(), pathname: '/today-2' })
    expect(live2.event.session_id).toBe(live.event.session_id)
    expect(live2.rows!.map((r) => r.sign)).toEqual([-1, 1])
  })

  test("a tool's engine (replay, explain) keeps to event time: no check runs", async () => {
    const send = await sessions({ ...testServices(), transient: true })
    const t0 = wallNow()
    const first = send({ timestamp: t0 })
    wait(10 * TIMEOUT)
    const late = send({ timestamp: t0 + 60 })
    expect(late.event.session_id).toBe(first.event.session_id)
  })

  test('the expiry timer does not keep the process alive', async () => {
    const script = `
      import plugin from ${JSON.stringify(resolve(import.meta.dir, 'index.ts'))}
      import { contextFor, makeEvent, setupPlugin } from ${JSON.stringify(resolve(import.meta.dir, '../../core/testing.ts'))}
      const instance = await setupPlugin(plugin, { snapshot: false, timeoutMinutes: 1 })
      instance.run(makeEvent({ site_id: 1, user_id: 1n, name: 'pageview', timestamp: Date.now() / 1000 }), contextFor(plugin))
      console.log('ran')
    `
    const { stdout, code, ms } = await runScript(script)
    expect(stdout).toBe('ran\n')
    expect(code).toBe(0)
    // The interval is 15 s for a one-minute timeout: exiting before it fires shows it was unref'd.
    expect(ms).toBeLessThan(8_000)
  })
})

describe('the store by the wall clock', () => {
  const attribution = new Attribution('', '', '', '', '', '', '', '', '', '', '', 0, '', '', '', '', '', '', [], [])
  const session = (lastSeen: number) =>
    new Session(1n, 1n, 1, lastSeen, lastSeen, lastSeen, 1, 1, 1, '', '', '', '', attribution)

  test('forgets a session idle for more than a timeout of both clocks, within two timeouts', () => {
    let wall = 1000
    const store = new MemorySessionStore(100, 1_000, () => wall)
    store.sweep(1000)
    store.put('user', 1, 1n, session(1000))
    wall = 1100
    expect(store.expire(wall)).toBe(0)
    expect(store.size).toBe(1)
    wall = 1101
    expect(store.expire(wall)).toBe(0) // the current generation becomes the previous one
    expect(store.get('user', 1, 1n)).toBeDefined() // and a get brings it back
    wall = 1202
    store.expire(wall)
    expect(store.size).toBe(1)
    wall = 1303
    expect(store.expire(wall)).toBe(1)
    expect(store.size).toBe(0)
  })

  test('keeps sessions whose event times run ahead of the wall clock', () => {
    let wall = 1000
    const store = new MemorySessionStore(100, 1_000, () => wall)
    // A client clock five minutes ahead: event time 1300 while the wall says 1000.
    store.sweep(1300)
    store.put('user', 1, 1n, session(1300))
    for (wall = 1000; wall <= 1400; wall += 25) store.expire(wall)
    expect(store.get('user', 1, 1n)).toBeDefined()
  })

  test('keeps back-filled sessions touched within a timeout of wall time', () => {
    let wall = 100_000
    const store = new MemorySessionStore(100, 1_000, () => wall)
    const s = session(10)
    store.sweep(10)
    store.put('past', 1, 1n, s)
    for (let i = 0; i < 20; i++) {
      wall += 60
      store.expire(wall)
      expect(store.get('past', 1, 1n)).toBe(s)
    }
    wall += 201
    store.expire(wall)
    wall += 101
    store.expire(wall)
    expect(store.size).toBe(0)
  })
})

describe('the interning pools', () => {
  test('are emptied once most of what they hold belongs to no live session', () => {
    const pages = new StringPool(100_000)
    const attributions = new AttributionPool(50_000)
    for (let i = 0; i < 5000; i++) {
      pages.intern(`/page/${i}`)
      attributions.of(makeEvent({ city_geoname_id: i + 1 }))
    }
    shrinkPools(5000, pages, attributions)
    expect([pages.size, attributions.size]).toEqual([5000, 5000])
    shrinkPools(1000, pages, attributions)
    expect([pages.size, attributions.size]).toEqual([5000, 0])
    shrinkPools(600, pages, attributions)
    expect(pages.size).toBe(0)
  })

  test('an idle engine gives back the heap of expired sessions, pools included', async () => {
    const send = await sessions()
    const heap = () => {
      Bun.gc(true)
      return heapStats().heapSize
    }
    // Warm up the code paths so that what remains is data, not compiled code.
    for (let i = 0; i < 2000; i++) send({ user_id: BigInt(1e9 + i), timestamp: wallNow(), pathname: `/w/${i}` })
    wait(3 * TIMEOUT)
    const before = heap()
    // 50,000 sessions, each with its own page and its own attribution: pools of 50,000 pages
    // and 50,000 attributions when the sessions expire.
    for (let i = 0; i < 50_000; i++) {
      send({ user_id: BigInt(i + 1), timestamp: wallNow(), pathname: `/p/${i}`, city_geoname_id: i + 1 })
    }
    const full = heap()
    wait(2 * TIMEOUT + (2 * expiryIntervalMs(TIMEOUT)) / 1000)
    const after = heap()
    console.log(`heap MB: before ${before / 1e6}, 50,000 sessions ${full / 1e6}, expired ${after / 1e6}`)
    expect(full - before).toBeGreaterThan(10e6)
    expect(after - before).toBeLessThan(2e6)
  })
})
