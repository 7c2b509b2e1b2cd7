// The sessions' copy of record in Redis (issue "scale out"), against a real redis-server and over
// real HTTP: a visitor whose next request reaches another engine continues its session (and, as
// control, is split without Redis); a former owner's late write cannot overwrite a newer state; the
// hit path sends no read and at most one batched write per event; Redis killed under a steady load
// costs no request, no split session, and writes resume after it returns.
//
// REDIS_OUTAGE_SECONDS sets the outage of the load test (default 10 s; the figure is 120 s).

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createLogger } from '../../core/logger.ts'
import { ConfigError } from '../../core/plugin.ts'
import { RespClient } from '../../core/resp.ts'
import { setupPlugin, startTestEngine, TEST_UA, type TestEngine } from '../../core/testing.ts'
import plugin from '../../plugins/sessions/index.ts'
import { decodeState, encodeState, type GuardMode, RedisCopy } from '../../plugins/sessions/redis-copy.ts'
import { Attribution, Session } from '../../plugins/sessions/session.ts'
import { type RedisServer, redisBinary, stallingRelay, startRedis, warnIfNoRedis } from './harness.ts'

warnIfNoRedis()

const OUTAGE_SECONDS = Number(process.env.REDIS_OUTAGE_SECONDS ?? 10)

test('a stored state is ASCII (a RESP length is its length) and reads back the same', () => {
  const attribution = new Attribution(
    'https://例え.jp/',
    'Ünïcode',
    '',
    '',
    '',
    '',
    '',
    '',
    'DE',
    '',
    '',
    7,
    '',
    '',
    '',
    'Chrome',
    '',
    '',
    ['k'],
    ['😀'],
  )
  const s = new Session(
    2n ** 63n + 5n,
    99n,
    4,
    1000,
    1010,
    1020,
    2,
    3,
    0,
    'ex.com',
    '/café',
    '/"q"\\',
    'ex.com',
    attribution,
  )
  const text = encodeState(s)
  expect(Buffer.byteLength(text)).toBe(text.length)
  attribution.encoded = undefined // the cache of the encoding, not state
  expect(decodeState(text, (p) => p)).toEqual(s)
})

test('a store URL that is not redis:// is a config error with its path', async () => {
  for (const redis of ['http://cache:6379', 'redis://', 'cache:6379']) {
    const error = await setupPlugin(plugin, { store: { redis } }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).path).toBe('store.redis')
  }
  // Key prefixes are printable ASCII (the writer counts bytes by length).
  await expect(setupPlugin(plugin, { store: { keyPrefix: 'séance:' } })).rejects.toThrow('keyPrefix')
})

describe.skipIf(!redisBinary)('sessions in Redis', () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = (await startRedis())!
  })
  afterAll(() => redis?.destroy())

  /** An engine of the deployment: salts and (unless `shared` is false) sessions in the test's Redis. */
  const engine = (prefix: string, shared = true, logs: string[] = []) =>
    startTestEngine(
      {
        server: { port: 0, host: '127.0.0.1', trustedProxies: ['loopback'] },
        sites: [{ id: 4, domain: 'example.com' }],
        plugins: [
          'plausible',
          'client-ip',
          'user-agent',
          { 'user-id': { store: 'redis', redis: { url: redis.url, keyPrefix: prefix } } },
          'referrer',
          {
            sessions: shared
              ? { snapshot: false, store: { redis: redis.url, keyPrefix: prefix } }
              : { snapshot: false },
          },
        ],
      },
      process.cwd(),
      { logger: createLogger({ write: (l) => logs.push(l) }) },
    )

  const send = async (port: number, ip: string, path: string, agent = fetch) => {
    const res = await agent(`http://127.0.0.1:${port}/api/event`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA, 'x-forwarded-for': ip },
      body: JSON.stringify({ n: 'pageview', u: `https://example.com${path}`, d: 'example.com' }),
    })
    await res.arrayBuffer()
    return res.status
  }

  const keysOf = async (prefix: string) => ((await redis.client.send('KEYS', [`${prefix}s:*`])) as string[]).length

  async function until(check: () => Promise<boolean>, ms = 5000) {
    const deadline = Date.now() + ms
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error('condition not met in time')
      await Bun.sleep(10)
    }
  }

  /** A visitor's first pageview reaches A, the next reaches B: B's rows. */
  async function ownerChange(prefix: string, shared: boolean) {
    const a = await engine(prefix, shared)
    const b = await engine(prefix, shared)
    try {
      const [pa, pb] = [(await a.engine.listen()).port, (await b.engine.listen()).port]
      expect(await send(pa, '198.51.100.20', '/first')).toBe(202)
      if (shared) await until(async () => (await keysOf(prefix)) === 1)
      expect(await send(pb, '198.51.100.20', '/second')).toBe(202)
      const metricsB = await (await fetch(`http://127.0.0.1:${pb}/metrics`)).text()
      return { rowsA: [...a.sessions()], rowsB: [...b.sessions()], eventsB: [...b.events()], metricsB }
    } finally {
      await a.close()
      await b.close()
    }
  }

  test('a visitor moved to another engine continues its session there', async () => {
    const { rowsA, rowsB, eventsB, metricsB } = await ownerChange('owner:', true)
    // B asked Redis once and found the session there; /metrics counts it.
    expect(metricsB).toContain('analytics_sessions_redis_reads_total 1\n')
    expect(metricsB).toContain('analytics_sessions_redis_found_total 1\n')
    expect(rowsA.length).toBe(1)
    const first = rowsA[0]!
    // B cancels A's last +1 row exactly and writes the continued session.
    expect(rowsB.length).toBe(2)
    expect(rowsB[0]).toEqual({ ...first, sign: -1 })
    expect(rowsB[1]!.session_id).toBe(first.session_id)
    expect(rowsB[1]!.user_id).toBe(first.user_id)
    expect(rowsB[1]!.events).toBe(2)
    expect(rowsB[1]!.pageviews).toBe(2)
    expect(rowsB[1]!.entry_page).toBe('/first')
    expect(rowsB[1]!.exit_page).toBe('/second')
    expect(eventsB[0]!.session_id).toBe(first.session_id)
    // What Redis holds is a session row's content, never the address or the user agent.
    const [key] = (await redis.client.send('KEYS', ['owner:s:*'])) as string[]
    const value = String(await redis.client.send('GET', [key!]))
    expect(value).not.toContain('198.51.100.20')
    expect(value).not.toContain('Mozilla')
    expect(Number(await redis.client.send('PTTL', [key!]))).toBeGreaterThan(29 * 60_000)
  })

  test('events arriving while a miss is read queue behind it: one session, updates in order', async () => {
    const a = await engine('queue:')
    const b = await engine('queue:')
    try {
      const [pa, pb] = [(await a.engine.listen()).port, (await b.engine.listen()).port]
      expect(await send(pa, '198.51.100.21', '/first')).toBe(202)
      await until(async () => (await keysOf('queue:')) === 1)
      // Four requests at once to B: the first misses and reads Redis, the others wait behind it.
      const statuses = await Promise.all([1, 2, 3, 4].map((i) => send(pb, '198.51.100.21', `/next/${i}`)))
      expect(statuses).toEqual([202, 202, 202, 202])
      const rows = b.sessions()
      expect(new Set(rows.map((r) => r.session_id))).toEqual(new Set([a.sessions()[0]!.session_id]))
      // Each update cancels exactly the state before it: -1 of events n, +1 of events n+1.
      expect(rows.map((r) => [r.sign, r.events])).toEqual([
        [-1, 1],
        [1, 2],
        [-1, 2],
        [1, 3],
        [-1, 3],
        [1, 4],
        [-1, 4],
        [1, 5],
      ])
    } finally {
      await a.close()
      await b.close()
    }
  })

  test('the database of the URL is used for reads and writes', async () => {
    const url = `${redis.url}/3`
    const config = {
      server: { port: 0, host: '127.0.0.1', trustedProxies: ['loopback'] },
      sites: [{ id: 4, domain: 'example.com' }],
      plugins: [
        'plausible',
        'client-ip',
        'user-agent',
        { 'user-id': { store: 'redis', redis: { url, keyPrefix: 'db3:' } } },
        { sessions: { snapshot: false, store: { redis: url, keyPrefix: 'db3:' } } },
      ],
    }
    const a = await startTestEngine(config)
    const b = await startTestEngine(config)
    const db3 = new Bun.RedisClient(url)
    try {
      expect(await send((await a.engine.listen()).port, '198.51.100.30', '/a')).toBe(202)
      await until(async () => ((await db3.send('KEYS', ['db3:s:*'])) as string[]).length === 1)
      expect(await keysOf('db3:')).toBe(0) // nothing in database 0
      // B finds the session in database 3.
      expect(await send((await b.engine.listen()).port, '198.51.100.30', '/b')).toBe(202)
      expect(b.sessions().at(-1)!.events).toBe(2)
    } finally {
      db3.close()
      await a.close()
      await b.close()
    }
  })

  test('without Redis the same visit is split in two sessions (the control)', async () => {
    const { rowsA, rowsB } = await ownerChange('control:', false)
    expect(rowsA.length).toBe(1)
    expect(rowsB.length).toBe(1)
    expect(rowsB[0]!.session_id).not.toBe(rowsA[0]!.session_id)
    expect(rowsB[0]!.events).toBe(1)
  })

  test("a former owner's late write does not overwrite the newer state", async () => {
    const attribution = new Attribution('', '', '', '', '', '', '', '', '', '', '', 0, '', '', '', '', '', '', [], [])
    const state = (events: number, lastSeen: number) =>
      new Session(
        11n,
        22n,
        4,
        1000,
        lastSeen,
        lastSeen,
        events,
        events,
        0,
        'example.com',
        '/',
        '/x',
        'example.com',
        attribution,
      )
    const logger = createLogger({ write: () => {} })
    const copy = (prefix: string, guard: GuardMode, url: string) =>
      new RedisCopy({
        redis: new RespClient(url, { connectTimeoutMs: 500 }),
        keyPrefix: prefix,
        flushMs: 60_000,
        readTimeoutMs: 1000,
        writeTimeoutMs: 500,
        ttlMs: 60_000,
        guard,
        logger,
      })
    for (const guard of ['late', 'never'] as const) {
      const prefix = `guard-${guard}:`
      // A is cut off from Redis: its link stalls (a partition) until it heals.
      const relay = stallingRelay(redis.port)
      relay.stall()
      const a = copy(prefix, guard, relay.url)
      const b = copy(prefix, guard, redis.url)
      const key = b.key('user', 4, 22n)
      // A holds the session at 2 events and cannot write it.
      a.mark('user', 22n, state(2, 1020))
      await a.flush()
      expect(a.reachable).toBe(false)
      // Meanwhile the visitor moved to B, which continued the session to 3 events and wrote it.
      b.mark('user', 22n, state(3, 1030))
      await b.flush()
      // The link heals: A writes its held-back change, late.
      relay.heal()
      await until(async () => a.reachable && a.stats.batches >= 2)
      await a.flush()
      const stored = JSON.parse(String(await redis.client.send('GET', [key])))
      if (guard === 'late') {
        expect(stored.slice(0, 2)).toEqual([1030, 3])
        expect(a.stats.refused).toBe(1)
      } else {
        // Without the guard the stale state wins: what the guard is for.
        expect(stored.slice(0, 2)).toEqual([1020, 2])
      }
      // On time, the owner's newer state is written; so is a new session after a timeout (a later
      // last event with fewer events).
      a.mark('user', 22n, state(1, 5000))
      await a.flush()
      expect(JSON.parse(String(await redis.client.send('GET', [key]))).slice(0, 2)).toEqual([5000, 1])
      await a.close()
      await b.close()
      relay.stop()
    }
  })

  test('the hit path reads nothing and writes at most one SET per event, batched', async () => {
    const t = await engine('hits:')
    try {
      const { port } = await t.engine.listen()
      const visitors = 50
      const ip = (v: number) => `203.0.113.${v + 1}`
      for (let v = 0; v < visitors; v++) expect(await send(port, ip(v), '/landing')).toBe(202)
      await until(async () => (await keysOf('hits:')) === visitors)
      await redis.client.send('CONFIG', ['RESETSTAT'])
      const rounds = 6
      for (let r = 0; r < rounds; r++) {
        await Promise.all(Array.from({ length: visitors }, (_, v) => send(port, ip(v), `/page/${r}`)))
      }
      const events = visitors * rounds
      // The writes are behind: wait until the last state of every visitor is stored.
      let ownReads = 0
      await until(async () => {
        ownReads++
        const values = (await redis.client.send('MGET', [
          ...((await redis.client.send('KEYS', ['hits:s:*'])) as string[]),
        ])) as string[]
        return values.every((v) => JSON.parse(v)[1] === rounds + 1)
      })
      const stats = String(await redis.client.send('INFO', ['commandstats']))
      const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0)
      // No MGET but this test's own: every visitor was known here.
      expect(calls('mget')).toBe(ownReads)
      // No read at all, and at most one write per event (fewer when a session changed twice
      // within one flush): plain SET PX, the guard script being only for writes after an outage.
      expect(calls('get')).toBe(0)
      expect(calls('set')).toBeLessThanOrEqual(events)
      expect(calls('set')).toBeGreaterThanOrEqual(visitors)
      expect(calls('evalsha') + calls('eval')).toBe(0)
      // Batched: Redis read its socket far fewer times than it ran SETs (this test's own commands
      // included), i.e. many SETs arrived per write of the engine.
      const reads = Number(/total_reads_processed:(\d+)/.exec(String(await redis.client.send('INFO', ['stats'])))?.[1])
      expect(reads).toBeLessThan(calls('set') / 2)
      console.log(
        `hit path: ${events} events → ${calls('set')} SETs over ${reads} socket reads by Redis, ${calls('mget') - ownReads} MGETs, 0 GETs`,
      )
    } finally {
      await t.close()
    }
  })

  test(
    `Redis killed for ${OUTAGE_SECONDS} s under load: every request 202, no split session, writes resume`,
    async () => {
      const logs: string[] = []
      const t: TestEngine = await engine('outage:', true, logs)
      const { port } = await t.engine.listen()
      const visitors = 100
      const sent = new Array<number>(visitors).fill(0)
      const latencies: number[] = []
      const statuses = new Map<number, number>()
      let stop = false
      let beforeKill = 0
      try {
        // 8 clients, each visitor sending pageviews paced at ~400 requests/s in all.
        const load = Promise.all(
          Array.from({ length: 8 }, async (_, c) => {
            let n = c
            while (!stop) {
              const v = n % visitors
              n += 8
              const started = performance.now()
              const status = await send(port, `192.0.2.${v + 1}`, `/p/${sent[v]}`)
              latencies.push(performance.now() - started)
              statuses.set(status, (statuses.get(status) ?? 0) + 1)
              if (status === 202) sent[v]!++
              await Bun.sleep(20)
            }
          }),
        )
        await Bun.sleep(1500)
        beforeKill = await keysOf('outage:')
        expect(beforeKill).toBe(visitors)
        await redis.kill()
        await Bun.sleep(OUTAGE_SECONDS * 1000)
        await redis.start()
        // Redis comes back empty (no persistence): the keys come back as visitors go on.
        await until(async () => (await keysOf('outage:')) === visitors, 10_000)
        stop = true
        await load
      } finally {
        stop = true
        await t.close()
      }
      expect([...statuses.keys()]).toEqual([202])
      latencies.sort((x, y) => x - y)
      const p99 = latencies[Math.floor(latencies.length * 0.99)]!
      console.log(
        `outage ${OUTAGE_SECONDS} s: ${latencies.length} requests, p99 ${p99.toFixed(1)} ms, max ${latencies.at(-1)!.toFixed(1)} ms`,
      )
      expect(p99).toBeLessThan(100)
      // Every visitor kept one session with exactly the events it sent.
      const last = new Map<string, { events: number; user: string }>()
      for (const row of t.sessions())
        if (row.sign === 1) last.set(String(row.session_id), { events: Number(row.events), user: String(row.user_id) })
      expect(last.size).toBe(visitors)
      expect(new Set([...last.values()].map((s) => s.user)).size).toBe(visitors)
      expect([...last.values()].map((s) => s.events).sort((x, y) => x - y)).toEqual([...sent].sort((x, y) => x - y))
      const text = logs.join('\n')
      expect(text.split('Redis is not reachable for sessions').length - 1).toBe(1)
      expect(text).toContain('Redis answers again; sessions are written to it.')
    },
    60_000 + OUTAGE_SECONDS * 2000,
  )
})
