import { afterEach, describe, expect, test } from 'bun:test'
import type { AnalyticsEvent, SessionRow } from '../../core/event.ts'
import type { PluginInstance } from '../../core/plugin.ts'
import { contextFor, makeEvent, runPlugin, setupPlugin } from '../../core/testing.ts'
import plugin from './index.ts'
import { measureSessions } from './memory-check.ts'
import { Attribution, Session } from './session.ts'
import { MemorySessionStore } from './store.ts'

const T0 = 1_700_000_000
const MIN = 60
const ctx = contextFor(plugin)
let instance: PluginInstance | undefined

afterEach(async () => {
  await instance?.close?.()
  instance = undefined
})

/** One plugin instance for a sequence of events, like one engine process. */
async function sessions(options: Record<string, unknown> = {}) {
  instance = await setupPlugin(plugin, options)
  const run = instance.run!
  return (fields: Partial<AnalyticsEvent>) => {
    const event = makeEvent({
      site_id: 1,
      user_id: 42n,
      name: 'pageview',
      timestamp: T0,
      hostname: 'example.com',
      ...fields,
    })
    const result = run(event, ctx)
    if (result instanceof Promise) throw new Error('the memory store keeps the plugin synchronous')
    return { event, dropped: result?.reason, rows: event.sessionRows }
  }
}

function only(rows: SessionRow[]): SessionRow {
  expect(rows).toHaveLength(1)
  return rows[0]!
}

describe('a new session', () => {
  test('a first pageview writes one row with sign 1 and puts the session on the event', async () => {
    const send = await sessions()
    const { event, dropped, rows } = send({ pathname: '/landing' })
    expect(dropped).toBeUndefined()
    const row = only(rows)
    expect(row.session_id).not.toBe(0n)
    expect(row).toMatchObject({
      sign: 1,
      site_id: 1,
      user_id: 42n,
      hostname: 'example.com',
      entry_page: '/landing',
      exit_page: '/landing',
      exit_page_hostname: 'example.com',
      pageviews: 1,
      events: 1,
      duration: 0,
      is_bounce: 1,
      timestamp: T0,
      start: T0,
      transferred_from: '',
      entry_meta_key: [],
      entry_meta_value: [],
    })
    expect(event.session_id).toBe(row.session_id)
    expect(event.user_id).toBe(42n)
  })

  test('a first custom event has no pages and counts no pageview; it is a bounce only if not interactive', async () => {
    const send = await sessions()
    const interactive = only(send({ name: 'signup', pathname: '/form' }).rows)
    expect(interactive).toMatchObject({ entry_page: '', exit_page: '', hostname: '', exit_page_hostname: '' })
    expect(interactive).toMatchObject({ pageviews: 0, events: 1, is_bounce: 0 })
    const passive = only(send({ user_id: 43n, name: 'scroll', interactive: false }).rows)
    expect(passive).toMatchObject({ pageviews: 0, events: 1, is_bounce: 1 })
  })

  test('session ids are random and distinct per session', async () => {
    const send = await sessions()
    const ids = new Set<bigint>()
    for (let u = 1n; u <= 200n; u++) ids.add(only(send({ user_id: u }).rows).session_id)
    expect(ids.size).toBe(200)
    expect(ids.has(0n)).toBe(false)
  })

  test('the same user id on two sites makes two sessions', async () => {
    const send = await sessions()
    const a = only(send({ site_id: 1 }).rows)
    const b = only(send({ site_id: 2 }).rows)
    expect(a.session_id).not.toBe(b.session_id)
  })

  test('without a user id every event starts its own session, as nothing can be continued', async () => {
    const send = await sessions()
    const a = only(send({ user_id: 0n }).rows)
    const b = only(send({ user_id: 0n, timestamp: T0 + 1 }).rows)
    expect(a.session_id).not.toBe(b.session_id)
  })
})

describe('an update', () => {
  test('a second pageview writes the previous state with -1 and the new one with +1', async () => {
    const send = await sessions()
    const first = only(send({ pathname: '/a' }).rows)
    const { event, rows } = send({ pathname: '/b', hostname: 'blog.example.com', timestamp: T0 + 10 })
    expect(rows).toHaveLength(2)
    expect(rows[0]).toEqual({ ...first, sign: -1 })
    expect(rows[1]).toMatchObject({
      sign: 1,
      session_id: first.session_id,
      pageviews: 2,
      events: 2,
      is_bounce: 0,
      duration: 10,
      entry_page: '/a',
      hostname: 'example.com',
      exit_page: '/b',
      exit_page_hostname: 'blog.example.com',
      timestamp: T0 + 10,
      start: T0,
    })
    expect(event.session_id).toBe(first.session_id)
  })

  test('each -1 row repeats the +1 row before it, so the pairs collapse', async () => {
    const send = await sessions()
    let previous = only(send({ pathname: '/0' }).rows)
    for (let i = 1; i <= 5; i++) {
      const rows = send({ pathname: `/${i}`, name: i % 2 ? 'click' : 'pageview', timestamp: T0 + i }).rows
      expect(rows[0]).toEqual({ ...previous, sign: -1 })
      expect(rows[1]!.events).toBe(i + 1)
      previous = rows[1]!
    }
  })

  test('an interactive custom event ends the bounce without counting a pageview or moving the exit page', async () => {
    const send = await sessions()
    send({ pathname: '/a' })
    const [, after] = send({ name: 'Signup', pathname: '/elsewhere', timestamp: T0 + 5 }).rows
    expect(after).toMatchObject({ is_bounce: 0, pageviews: 1, events: 2, exit_page: '/a', duration: 5 })
  })

  test('a non-interactive event keeps the bounce', async () => {
    const send = await sessions()
    send({ pathname: '/a' })
    const [, after] = send({ name: 'scroll', interactive: false, timestamp: T0 + 5 }).rows
    expect(after).toMatchObject({ is_bounce: 1, pageviews: 1, events: 2 })
  })

  test('a pageview after a custom event fills the empty entry page and hostname', async () => {
    const send = await sessions()
    send({ name: 'scroll', interactive: false, pathname: '/x', hostname: 'whatever.example.com' })
    const [, after] = send({ pathname: '/b', hostname: 'example.com', timestamp: T0 + 3 }).rows
    expect(after).toMatchObject({
      entry_page: '/b',
      hostname: 'example.com',
      exit_page: '/b',
      exit_page_hostname: 'example.com',
      pageviews: 1,
      is_bounce: 1,
    })
  })

  test('the duration of out-of-order events is the distance from the start', async () => {
    const send = await sessions()
    send({ timestamp: T0 + 10 })
    const [, after] = send({ timestamp: T0 }).rows
    expect(after!.duration).toBe(10)
  })
})

describe('the timeout', () => {
  test('an event exactly timeoutMinutes after the last one continues; one second later starts anew', async () => {
    const send = await sessions()
    const first = only(send({}).rows)
    const kept = send({ timestamp: T0 + 30 * MIN }).rows
    expect(kept[1]!.session_id).toBe(first.session_id)
    const fresh = only(send({ timestamp: T0 + 60 * MIN + 1 }).rows)
    expect(fresh.session_id).not.toBe(first.session_id)
    expect(fresh).toMatchObject({ sign: 1, events: 1, pageviews: 1, start: T0 + 60 * MIN + 1, duration: 0 })
  })

  test('timeoutMinutes is an option', async () => {
    const send = await sessions({ timeoutMinutes: 5 })
    const first = only(send({}).rows)
    const fresh = only(send({ timestamp: T0 + 5 * MIN + 1 }).rows)
    expect(fresh.session_id).not.toBe(first.session_id)
  })

  test('sessions survive many generations while they stay active', async () => {
    const send = await sessions({ timeoutMinutes: 1 })
    const first = only(send({}).rows)
    for (let i = 1; i <= 20; i++) {
      send({ user_id: 1000n + BigInt(i), timestamp: T0 + i * 50 })
      const rows = send({ timestamp: T0 + i * 50 }).rows
      expect(rows[1]!.session_id).toBe(first.session_id)
    }
  })
})

describe('back-filled events (a trusted sender’s past timestamps)', () => {
  test('a late event up to a timeout before the start still joins the session', async () => {
    const send = await sessions()
    const first = only(send({}).rows)
    const late = send({ timestamp: T0 - 30 * MIN, pathname: '/late' }).rows
    expect(late[1]!.session_id).toBe(first.session_id)
    // It is the session's earliest page: the start and the entry move back; the exit and the
    // session's time stay with the latest event.
    expect(late[1]).toMatchObject({
      start: T0 - 30 * MIN,
      timestamp: T0,
      duration: 30 * MIN,
      entry_page: '/late',
      exit_page: first.exit_page,
      pageviews: 2,
    })
  })

  test('older events get sessions of their own time, and the live session goes on untouched', async () => {
    const send = await sessions()
    const live = only(send({ pathname: '/live' }).rows)
    // Earlier the same day, in time order: two pageviews and one more 40 minutes later.
    const a = only(send({ timestamp: T0 - 3 * 60 * MIN, pathname: '/a' }).rows)
    const b = send({ timestamp: T0 - 3 * 60 * MIN + 10 * MIN, pathname: '/b' }).rows
    const c = only(send({ timestamp: T0 - 3 * 60 * MIN + 50 * MIN, pathname: '/c' }).rows)
    expect(a.session_id).not.toBe(live.session_id)
    expect(a).toMatchObject({ start: T0 - 180 * MIN, entry_page: '/a', pageviews: 1, events: 1 })
    expect(b[0]).toEqual({ ...a, sign: -1 })
    expect(b[1]).toMatchObject({
      session_id: a.session_id,
      start: T0 - 180 * MIN,
      timestamp: T0 - 170 * MIN,
      duration: 10 * MIN,
      entry_page: '/a',
      exit_page: '/b',
      pageviews: 2,
      events: 2,
    })
    expect([live.session_id, a.session_id]).not.toContain(c.session_id)
    // The live session was neither joined nor displaced.
    const next = send({ timestamp: T0 + 5 * MIN, pathname: '/live-2' }).rows
    expect(next[0]).toEqual({ ...live, sign: -1 })
    expect(next[1]).toMatchObject({ session_id: live.session_id, events: 2, exit_page: '/live-2', duration: 5 * MIN })
  })
})

describe('after a salt rotation', () => {
  test('an id with no session continues the session of the previous-salt id, keeping its user_id and session_id', async () => {
    const send = await sessions()
    const first = only(send({ user_id: 111n }).rows)
    const { event, rows } = send({ user_id: 222n, previousUserId: 111n, timestamp: T0 + 60 })
    expect(rows).toHaveLength(2)
    expect(rows[1]).toMatchObject({ session_id: first.session_id, user_id: 111n, events: 2 })
    expect(event.user_id).toBe(111n)
    expect(event.session_id).toBe(first.session_id)
    // Later events under the new id keep finding it.
    const third = send({ user_id: 222n, previousUserId: 111n, timestamp: T0 + 120 }).rows
    expect(third[1]).toMatchObject({ session_id: first.session_id, user_id: 111n, events: 3 })
    const fourth = send({ user_id: 222n, timestamp: T0 + 180 }).rows
    expect(fourth[1]).toMatchObject({ session_id: first.session_id, events: 4 })
  })

  test('the current-salt session wins over the previous-salt one', async () => {
    const send = await sessions()
    only(send({ user_id: 111n }).rows)
    const current = only(send({ user_id: 222n }).rows)
    const rows = send({ user_id: 222n, previousUserId: 111n, timestamp: T0 + 1 }).rows
    expect(rows[1]!.session_id).toBe(current.session_id)
  })

  test('an expired previous-salt session is not continued', async () => {
    const send = await sessions()
    const first = only(send({ user_id: 111n }).rows)
    const fresh = only(send({ user_id: 222n, previousUserId: 111n, timestamp: T0 + 31 * MIN }).rows)
    expect(fresh.session_id).not.toBe(first.session_id)
    expect(fresh.user_id).toBe(222n)
  })
})

describe('engagement events', () => {
  test('drops an engagement when the visitor has no session', async () => {
    const { dropped, event } = await runPlugin(
      plugin,
      {},
      { site_id: 1, user_id: 7n, name: 'engagement', timestamp: T0 },
    )
    expect(dropped).toBe('no_session_for_engagement')
    expect(event.sessionRows).toHaveLength(0)
  })

  test('drops an engagement when the session has expired', async () => {
    const send = await sessions()
    send({})
    expect(send({ name: 'engagement', timestamp: T0 + 31 * MIN }).dropped).toBe('no_session_for_engagement')
  })

  test('an engagement writes no rows, changes no counters, carries the session and extends its timeout', async () => {
    const send = await sessions()
    const first = only(send({ pathname: '/a', referrer: 'news.example', country_code: 'EE' }).rows)
    const engaged = send({ name: 'engagement', timestamp: T0 + 25 * MIN, referrer: '', country_code: 'FR' })
    expect(engaged.dropped).toBeUndefined()
    expect(engaged.rows).toHaveLength(0)
    expect(engaged.event.session_id).toBe(first.session_id)
    expect(engaged.event).toMatchObject({ referrer: 'news.example', country_code: 'EE' })
    // 50 minutes after the pageview but 25 after the engagement: still the same session, and the
    // -1 row is the pageview's +1 row unchanged (no counter moved, no timestamp moved).
    const later = send({ pathname: '/b', timestamp: T0 + 50 * MIN }).rows
    expect(later).toHaveLength(2)
    expect(later[0]).toEqual({ ...first, sign: -1 })
    expect(later[1]).toMatchObject({ session_id: first.session_id, events: 2, pageviews: 2, duration: 50 * MIN })
  })

  test('an engagement finds the session through the previous-salt id', async () => {
    const send = await sessions()
    const first = only(send({ user_id: 111n }).rows)
    const engaged = send({ name: 'engagement', user_id: 222n, previousUserId: 111n, timestamp: T0 + 5 })
    expect(engaged.dropped).toBeUndefined()
    expect(engaged.event.session_id).toBe(first.session_id)
  })
})

describe('attribution', () => {
  const firstEvent: Partial<AnalyticsEvent> = {
    referrer: 'news.ycombinator.com',
    referrer_source: 'Hacker News',
    click_id_param: 'gclid',
    utm_medium: 'social',
    utm_source: 'hn',
    utm_campaign: 'launch',
    utm_content: 'post',
    utm_term: 'analytics',
    country_code: 'EE',
    subdivision1_code: 'EE-37',
    subdivision2_code: 'EE-784',
    city_geoname_id: 588409,
    screen_size: 'Desktop',
    operating_system: 'Mac',
    operating_system_version: '14.1',
    browser: 'Firefox',
    browser_version: '120.0',
    acquisition_channel: 'Organic Social',
  }
  const laterEvent: Partial<AnalyticsEvent> = {
    referrer: 'google.com',
    referrer_source: 'Google',
    click_id_param: '',
    utm_medium: '',
    utm_source: '',
    utm_campaign: '',
    utm_content: '',
    utm_term: '',
    country_code: 'DE',
    subdivision1_code: 'DE-BE',
    subdivision2_code: '',
    city_geoname_id: 2950159,
    screen_size: 'Mobile',
    operating_system: 'iOS',
    operating_system_version: '17.0',
    browser: 'Safari',
    browser_version: '17.0',
    acquisition_channel: 'Organic Search',
  }

  test('is frozen from the first event onto the rows and every later event', async () => {
    const send = await sessions()
    const first = only(send(firstEvent).rows)
    expect(first).toMatchObject(firstEvent)
    const { event, rows } = send({ ...laterEvent, timestamp: T0 + 60 })
    expect(rows[1]).toMatchObject(firstEvent)
    expect(event).toMatchObject(firstEvent)
  })

  test('sessions with equal attributions share it, different ones do not mix', async () => {
    const send = await sessions()
    only(send({ ...firstEvent, user_id: 1n }).rows)
    const same = only(send({ ...firstEvent, user_id: 2n }).rows)
    const other = only(send({ ...laterEvent, user_id: 3n }).rows)
    expect(same).toMatchObject(firstEvent)
    expect(other).toMatchObject(laterEvent)
  })

  test('entry_meta holds the first event props sorted by key bytes, and later props do not change it', async () => {
    const send = await sessions()
    const props = { b: '2', a: '1', Z: 'upper', é: 'accent' }
    const first = only(send({ props }).rows)
    expect(first.entry_meta_key).toEqual(['Z', 'a', 'b', 'é'])
    expect(first.entry_meta_value).toEqual(['upper', '1', '2', 'accent'])
    const later = send({ props: { c: '3' }, timestamp: T0 + 1 }).rows
    expect(later[1]!.entry_meta_key).toEqual(['Z', 'a', 'b', 'é'])
    expect(later[1]!.entry_meta_value).toEqual(['upper', '1', '2', 'accent'])
  })
})

describe('client session ids (Lynkow)', () => {
  test('a preset session_id keys the session and becomes its id', async () => {
    const send = await sessions()
    const first = only(send({ session_id: 9001n, user_id: 5n }).rows)
    expect(first).toMatchObject({ session_id: 9001n, user_id: 5n })
    // The same client session continues even if the user id changed (a new salt, say).
    const { event, rows } = send({ session_id: 9001n, user_id: 6n, timestamp: T0 + 5 })
    expect(rows[1]).toMatchObject({ session_id: 9001n, user_id: 5n, events: 2, pageviews: 2 })
    expect(event.user_id).toBe(5n)
  })

  test('another client session of the same user is another session', async () => {
    const send = await sessions()
    only(send({ session_id: 1n, user_id: 5n }).rows)
    const second = only(send({ session_id: 2n, user_id: 5n, timestamp: T0 + 1 }).rows)
    expect(second.session_id).toBe(2n)
  })

  test('client session ids and user ids never find each other', async () => {
    const send = await sessions()
    only(send({ user_id: 77n }).rows)
    const client = only(send({ session_id: 77n, user_id: 1n, timestamp: T0 + 1 }).rows)
    expect(client).toMatchObject({ session_id: 77n, events: 1 })
  })
})

describe('robustness', () => {
  test('odd input never throws', async () => {
    const send = await sessions()
    const odd: Partial<AnalyticsEvent>[] = [
      { timestamp: Number.NaN },
      { timestamp: -1, name: '' },
      { timestamp: Number.POSITIVE_INFINITY, name: 'engagement' },
      { site_id: Number.NaN, pathname: '\u0000'.repeat(3000) },
      { props: { ['k'.repeat(300)]: 'v'.repeat(2000) } },
      { session_id: 2n ** 64n - 1n, user_id: 2n ** 64n - 1n },
    ]
    for (const fields of odd) expect(() => send(fields)).not.toThrow()
  })

  test('options are validated', async () => {
    await expect(setupPlugin(plugin, { timeoutMinutes: 0 })).rejects.toThrow()
    await expect(setupPlugin(plugin, { timeout: 30 })).rejects.toThrow()
  })
})

describe('the memory store', () => {
  const attribution = new Attribution('', '', '', '', '', '', '', '', '', '', '', 0, '', '', '', '', '', '', [], [])
  const session = (lastSeen: number) =>
    new Session(1n, 1n, 1, lastSeen, lastSeen, lastSeen, 1, 1, 1, '', '', '', '', attribution)

  test('keeps a session for at least one timeout after it was last seen and forgets it within two', () => {
    const store = new MemorySessionStore(100, 1_000)
    store.sweep(0)
    store.put('user', 1, 1n, session(0))
    store.sweep(100)
    expect(store.size).toBe(1)
    store.sweep(101)
    store.put('user', 1, 2n, session(150))
    store.sweep(200)
    expect(store.size).toBe(2)
    // The first session is past its timeout and goes with its generation; the second is live until 250.
    store.sweep(202)
    expect(store.size).toBe(1)
    store.sweep(250)
    expect(store.get('user', 1, 2n)).toBeDefined()
  })

  test('forgets sessions nobody asks for again', () => {
    const store = new MemorySessionStore(100, 1_000)
    store.sweep(0)
    for (let i = 1n; i <= 10n; i++) store.put('client', 3, i, session(0))
    store.sweep(101)
    store.sweep(202)
    expect(store.size).toBe(0)
    expect(store.get('client', 3, 1n)).toBeUndefined()
  })

  test('holds at most maxSessions', () => {
    const store = new MemorySessionStore(1_000, 100)
    store.sweep(0)
    for (let i = 1n; i <= 10_000n; i++) {
      store.put('user', 1, i, session(0))
      expect(store.size).toBeLessThanOrEqual(100)
    }
    expect(store.get('user', 1, 10_000n)).toBeDefined()
  })
})

test('a session costs a few hundred bytes of heap (1e6 sessions: bun plugins/sessions/memory-check.ts)', async () => {
  const report = await measureSessions(100_000, 1_000)
  console.log(`sessions memory: ${JSON.stringify(report)}`)
  expect(report.heapBytesPerSession).toBeLessThan(400)
})
