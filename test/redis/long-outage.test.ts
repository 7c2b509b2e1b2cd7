// Sharing resumes after a Redis outage longer than Bun's built-in client lasted (it gave up for good
// ~31 s into one, so salts and site limits were never shared again; the fault test kills
// Redis for 2 min). Two engines share salts and a site limit over real HTTP; Redis is killed for
// REDIS_LONG_OUTAGE_SECONDS (default 35) and comes back empty. Then a third engine, started after the
// outage, gives a visitor the same user id as the first (the engines put their salts back), and the
// three together accept the site limit once, not once each.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createLogger } from '../../core/logger.ts'
import { startTestEngine, TEST_UA, type TestEngine } from '../../core/testing.ts'
import { DAY_MS, dayName } from '../../plugins/user-id/salts.ts'
import { type RedisServer, redisBinary, startRedis, warnIfNoRedis } from './harness.ts'

warnIfNoRedis()

const OUTAGE_SECONDS = Number(process.env.REDIS_LONG_OUTAGE_SECONDS ?? 35)
const LIMIT = 60

async function until(check: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms`)
    await Bun.sleep(50)
  }
}

describe.skipIf(!redisBinary)('sharing through Redis after a long outage', () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = (await startRedis())!
  })
  afterAll(() => redis?.destroy())

  test(
    `Redis down ${OUTAGE_SECONDS} s: salts and the site limit are shared again afterwards`,
    async () => {
      const logs: string[] = []
      const logger = createLogger({ write: (l) => logs.push(l) })
      const config = {
        server: { port: 0, host: '127.0.0.1', trustedProxies: ['loopback'] },
        sites: [{ id: 7, domain: 'example.com' }],
        plugins: [
          'plausible',
          'client-ip',
          'user-agent',
          {
            'user-id': {
              store: 'redis',
              redis: { url: redis.url, keyPrefix: 'long:', refreshSeconds: 1, timeoutMs: 500 },
            },
          },
          {
            'rate-limit': {
              // A day-long window: the test never straddles a boundary.
              perSite: { events: LIMIT, windowSeconds: 86_400 },
              perIp: { events: 0 },
              shared: { redis: redis.url, keyPrefix: 'long:', syncMs: 20, timeoutMs: 500 },
            },
          },
        ],
      }
      const engines: TestEngine[] = []
      const start = async () => {
        const t = await startTestEngine(config, process.cwd(), { logger })
        engines.push(t)
        return { t, port: (await t.engine.listen()).port }
      }
      /** One pageview of visitor `ip`; its user id when accepted, undefined when the limit dropped it. */
      const view = async (e: { t: TestEngine; port: number }, ip: string, path: string) => {
        const res = await fetch(`http://127.0.0.1:${e.port}/api/event`, {
          method: 'POST',
          headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA, 'x-forwarded-for': ip },
          body: JSON.stringify({ n: 'pageview', u: `https://example.com${path}`, d: 'example.com' }),
        })
        expect(res.status).toBe(202)
        return res.headers.get('x-plausible-dropped') === null ? String(e.t.events().at(-1)!.user_id) : undefined
      }
      try {
        const a = await start()
        const b = await start()
        const before = await view(a, '198.51.100.40', '/before')
        expect(before).toBeDefined()

        await redis.kill()
        await Bun.sleep(OUTAGE_SECONDS * 1000)
        await redis.start()

        // Redis came back empty; the engines put today's salt back within a refresh or so.
        const today = `long:salt:${dayName(Math.floor(Date.now() / DAY_MS))}`
        await until(async () => (await redis.client.send('EXISTS', [today])) === 1, 10_000)
        const c = await start()
        expect(await view(c, '198.51.100.40', '/after')).toBe(before!)

        // The three engines share one limit again: offered three times the limit, round robin,
        // paced (~300/s), they accept it about once (each alone would accept it whole).
        let accepted = 0
        const all = [a, b, c]
        for (let i = 0; i < 3 * LIMIT; i++) {
          if ((await view(all[i % 3]!, `203.0.113.${i % 200}`, `/load/${i}`)) !== undefined) accepted++
          await Bun.sleep(3)
        }
        expect(accepted).toBeLessThanOrEqual(LIMIT * 1.15)
        expect(accepted).toBeGreaterThanOrEqual(LIMIT * 0.8)
        const text = logs.join('\n')
        expect(text).toContain('Redis is not reachable for rate limits')
        expect(text).toContain('Redis answers again; rate limits are shared.')
        expect(text).toContain('Redis is not reachable for salts')
        expect(text).toContain('Redis answers again; salts are shared.')
        console.log(
          `after a ${OUTAGE_SECONDS} s outage: ${accepted} of ${3 * LIMIT} accepted over 3 engines (limit ${LIMIT})`,
        )
      } finally {
        for (const t of engines) await t.close()
      }
    },
    60_000 + OUTAGE_SECONDS * 1000,
  )
})
