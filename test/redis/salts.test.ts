// Daily salts shared through Redis (issue "scale out"), against a real redis-server: engines agree on
// user ids, all switch at 00:00 UTC from memory (tomorrow's salt is made a day ahead), a session across
// midnight continues, every salt expires 48 h after its day began, and nothing reaches a disk.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { createLogger } from '../../core/logger.ts'
import { RespClient } from '../../core/resp.ts'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'
import { createRedisSaltStore } from '../../plugins/user-id/redis-salts.ts'
import { DAY_MS, dayName } from '../../plugins/user-id/salts.ts'
import { type RedisServer, redisBinary, startRedis, warnIfNoRedis } from './harness.ts'

warnIfNoRedis()

// The day of the clock tests: today (UTC). Redis deletes at once a key whose EXAT has passed, so a
// fixed day failed the expiry test from the day after it on (day D-1's salt expires when day D ends).
const D = Math.floor(Date.now() / DAY_MS)

describe.skipIf(!redisBinary)('salts in Redis', () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = (await startRedis())!
  })
  afterAll(() => redis?.destroy())

  const storeWith = (clock: () => number, prefix: string, logs: string[] = []) =>
    createRedisSaltStore({
      redis: new RespClient(redis.url),
      keyPrefix: prefix,
      refreshMs: 60_000,
      timeoutMs: 1000,
      clock,
      logger: createLogger({ write: (l) => logs.push(l) }),
    })

  test('two engines over HTTP give one visitor one user id, and keep no salt on disk', async () => {
    const config = {
      server: { port: 0, host: '127.0.0.1', trustedProxies: ['loopback'] },
      sites: [{ id: 1, domain: 'example.com' }],
      plugins: ['plausible', 'client-ip', 'user-agent', { 'user-id': { store: 'redis', redis: { url: redis.url } } }],
    }
    const a = await startTestEngine(config)
    const b = await startTestEngine(config)
    try {
      const send = async (engine: typeof a) => {
        const { port } = await engine.engine.listen()
        const res = await fetch(`http://127.0.0.1:${port}/api/event`, {
          method: 'POST',
          headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA, 'x-forwarded-for': '198.51.100.7' },
          body: JSON.stringify({ n: 'pageview', u: 'https://example.com/', d: 'example.com' }),
        })
        expect(res.status).toBe(202)
        return engine.events().at(-1)!.user_id
      }
      const [ida, idb] = [await send(a), await send(b)]
      expect(ida).toBe(idb)
      expect(ida).not.toBe('0')
      for (const engine of [a, b]) {
        const salts = join(engine.engine.config.stateDir, 'salts')
        expect(existsSync(salts) ? readdirSync(salts) : []).toEqual([])
      }
      // Yesterday's, today's and tomorrow's salts exist in Redis, and Redis itself writes nothing.
      const today = Math.floor(Date.now() / DAY_MS)
      for (const day of [today - 1, today, today + 1]) {
        expect(await redis.client.send('EXISTS', [`analytics:salt:${dayName(day)}`])).toBe(1)
      }
      expect(redis.files()).toEqual([])
    } finally {
      await a.close()
      await b.close()
    }
  })

  test('every engine switches at 00:00 UTC from memory, even with Redis down; the session continues', async () => {
    let now = (D + 1) * DAY_MS - 500 // 23:59:59.5 on day D
    const clock = () => now
    const a = storeWith(clock, 'midnight:')
    const b = storeWith(clock, 'midnight:')
    await Promise.all([a.ready, b.ready])
    const before = [a.get(), b.get()]
    expect(before[0]!.day).toBe(D)
    expect(Buffer.from(before[0]!.current)).toEqual(Buffer.from(before[1]!.current))
    // Redis goes away just before midnight; the switch needs no round trip.
    await redis.kill()
    try {
      now = (D + 1) * DAY_MS + 200 // 00:00:00.2 on day D+1
      const after = [a.get(), b.get()]
      for (const salts of after) {
        expect(salts.day).toBe(D + 1)
        // Yesterday's salt is the previous one: a session across midnight continues under it.
        expect(Buffer.from(salts.previous!)).toEqual(Buffer.from(before[0]!.current))
      }
      expect(Buffer.from(after[0]!.current)).toEqual(Buffer.from(after[1]!.current))
      expect(Buffer.from(after[0]!.current)).not.toEqual(Buffer.from(before[0]!.current))
    } finally {
      await redis.start()
      a.close()
      b.close()
    }
  })

  test('each salt expires 48 h after its day began (EXAT), so none outlives 48 h', async () => {
    const store = storeWith(() => D * DAY_MS + 3_600_000, 'expiry:')
    await store.ready
    for (const day of [D - 1, D, D + 1]) {
      const at = await redis.client.send('EXPIRETIME', [`expiry:salt:${dayName(day)}`])
      expect(at).toBe(((day + 2) * DAY_MS) / 1000)
    }
    store.close()
  })

  test('Redis unreachable at start: ingestion goes on with salts of this process, said loudly', async () => {
    const logs: string[] = []
    const store = createRedisSaltStore({
      redis: new RespClient('redis://127.0.0.1:1', { connectTimeoutMs: 200 }),
      keyPrefix: 'down:',
      refreshMs: 60_000,
      timeoutMs: 300,
      logger: createLogger({ write: (l) => logs.push(l) }),
    })
    await store.ready
    const salts = store.get()
    expect(salts.current.length).toBe(16)
    expect(store.get().current).toBe(salts.current)
    expect(logs.join('\n')).toContain('Redis is not reachable for salts')
    expect(logs.join('\n')).toContain('this process uses its own')
    store.close()
  })
})
