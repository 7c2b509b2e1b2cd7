// Issue "Scale out": "a site rate limit over 2 workers … holds within 5 % of its threshold". A site
// limit of 1,000 events, 3,000 offered from 3,000 client addresses on fresh connections to
// `serve --workers 2`: with the limit shared through Redis the workers together accept 1,000–1,050;
// without Redis each worker grants half of the limit to the visitors it owns, so together they
// accept about 1,000 too (not 2,000, which each worker granting the whole limit would give).

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { killEngines, scratchDir, startEngineProcess } from '../clickhouse/traffic.ts'
import { type RedisServer, redisBinary, startRedis, warnIfNoRedis } from '../redis/harness.ts'
import { send, series } from './helpers.ts'

warnIfNoRedis()

const LIMIT = 1000
const OFFERED = 3000

describe('a site limit over serve --workers 2', () => {
  let redis: RedisServer | undefined
  const scratch = scratchDir('workers-rate-')
  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    killEngines()
    await redis?.destroy()
    scratch.remove()
  })

  async function accepted(shared: object | undefined): Promise<{ accepted: number; throttled: number }> {
    const engine = await startEngineProcess(
      {
        server: { host: '127.0.0.1', workers: 2, trustedProxies: ['loopback'] },
        sites: [{ id: 1, domain: 'example.com' }],
        plugins: [
          'plausible',
          'client-ip',
          {
            'rate-limit': {
              // A day-long window: the test never straddles a boundary but at midnight.
              perSite: { events: LIMIT, windowSeconds: 86_400 },
              perIp: { events: 0 },
              ...(shared ? { shared } : {}),
            },
          },
        ],
        sinks: ['stdout'],
      },
      scratch.path,
    )
    try {
      const port = Number(new URL(engine.url).port)
      let next = 0
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let v = next++; v < OFFERED; v = next++) {
            expect(await send(port, v, { n: 'pageview', u: `https://example.com/${v}`, d: 'example.com' })).toBe(202)
            // About 1,000 a second in all, so the shared counts sync many times during the run.
            await Bun.sleep(16)
          }
        }),
      )
      const text = await engine.metrics()
      expect(series(text, 'analytics_workers_reporting')).toBe(2)
      return {
        accepted: series(text, 'analytics_events_accepted_total{site="example.com"}'),
        throttled: series(text, 'analytics_events_dropped_total{reason="throttle",site="example.com"}'),
      }
    } finally {
      expect(await engine.stop()).toBe(0)
    }
  }

  test.skipIf(!redisBinary)(
    'shared through Redis: the workers together accept the limit, within 5 %',
    async () => {
      const { accepted: n, throttled } = await accepted({ redis: redis!.url, keyPrefix: 'workers:', syncMs: 50 })
      console.info(`2 workers, shared limit ${LIMIT}: ${n} accepted, ${throttled} throttled of ${OFFERED}`)
      expect(n).toBeGreaterThanOrEqual(LIMIT)
      expect(n).toBeLessThanOrEqual(LIMIT * 1.05)
      expect(n + throttled).toBe(OFFERED)
    },
    60_000,
  )

  test('without Redis: each worker grants its half, together about the limit', async () => {
    const { accepted: n, throttled } = await accepted(undefined)
    console.info(`2 workers, limit ${LIMIT} split: ${n} accepted, ${throttled} throttled of ${OFFERED}`)
    expect(n).toBe(LIMIT)
    expect(n + throttled).toBe(OFFERED)
  }, 60_000)
})
