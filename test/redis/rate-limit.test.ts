// A site rate limit shared by two engines through a real Redis (issue "scale out": "a site rate limit
// over 2 workers and over 2 machines holds within 5 % of its threshold"), over real HTTP; without
// sharing each engine grants the whole limit; with Redis down each engine goes on alone, said loudly.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createLogger } from '../../core/logger.ts'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'
import { type RedisServer, redisBinary, startRedis, warnIfNoRedis } from './harness.ts'

warnIfNoRedis()

const LIMIT = 1000

describe.skipIf(!redisBinary)('rate-limit shared through Redis', () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = (await startRedis())!
  })
  afterAll(() => redis?.destroy())

  async function engines(shared: object | undefined, logs: string[] = []) {
    const config = {
      server: { port: 0, host: '127.0.0.1', trustedProxies: ['loopback'] },
      sites: [{ id: 7, domain: 'example.com' }],
      plugins: [
        'plausible',
        'client-ip',
        {
          'rate-limit': {
            // A day-long window: the test never straddles a boundary.
            perSite: { events: LIMIT, windowSeconds: 86_400 },
            perIp: { events: 0 },
            ...(shared ? { shared } : {}),
          },
        },
      ],
    }
    const logger = createLogger({ write: (l) => logs.push(l) })
    const list = [
      await startTestEngine(config, process.cwd(), { logger }),
      await startTestEngine(config, process.cwd(), { logger }),
    ]
    const ports = await Promise.all(list.map(async (t) => (await t.engine.listen()).port))
    return { list, ports }
  }

  /**
   * `total` requests from 8 clients, alternating between the engines, paced at `perSecond` in all
   * (the limit is then reached in a second or so, not in the first sync intervals); how many were
   * accepted.
   */
  async function offer(
    ports: number[],
    total: number,
    perSecond = 2000,
  ): Promise<{ accepted: number; statuses: Set<number> }> {
    let next = 0
    let accepted = 0
    const statuses = new Set<number>()
    const started = performance.now()
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < total) {
          const i = next++
          const due = started + (i * 1000) / perSecond
          if (due > performance.now()) await Bun.sleep(due - performance.now())
          const res = await fetch(`http://127.0.0.1:${ports[i % ports.length]}/api/event`, {
            method: 'POST',
            headers: {
              'content-type': 'text/plain',
              'user-agent': TEST_UA,
              'x-forwarded-for': `198.51.100.${i % 200}`,
            },
            body: JSON.stringify({ n: 'pageview', u: `https://example.com/${i}`, d: 'example.com' }),
          })
          statuses.add(res.status)
          if (res.status === 202 && res.headers.get('x-plausible-dropped') === null) accepted++
          await res.arrayBuffer()
        }
      }),
    )
    return { accepted, statuses }
  }

  test('two engines together accept the limit, within 5 %', async () => {
    const { list, ports } = await engines({ redis: redis.url, keyPrefix: 'shared:', syncMs: 20 })
    try {
      const { accepted } = await offer(ports, 3 * LIMIT)
      expect(accepted).toBeGreaterThanOrEqual(LIMIT)
      expect(accepted).toBeLessThanOrEqual(LIMIT * 1.05)
    } finally {
      for (const t of list) await t.close()
    }
  })

  test('without sharing, each engine grants the whole limit (the test has teeth)', async () => {
    const { list, ports } = await engines(undefined)
    try {
      const { accepted } = await offer(ports, 3 * LIMIT)
      expect(accepted).toBe(2 * LIMIT)
    } finally {
      for (const t of list) await t.close()
    }
  })

  test('Redis down: every request is answered, each engine counts alone, and the log says so', async () => {
    const logs: string[] = []
    const { list, ports } = await engines(
      { redis: 'redis://127.0.0.1:1', keyPrefix: 'down:', syncMs: 20, timeoutMs: 100 },
      logs,
    )
    try {
      const { accepted, statuses } = await offer(ports, 3 * LIMIT)
      expect([...statuses]).toEqual([202])
      // Each engine's own count still binds it.
      expect(accepted).toBe(2 * LIMIT)
      await Bun.sleep(300)
      expect(logs.join('\n')).toContain('Redis is not reachable for rate limits')
      // Failing open is counted: every verdict of each engine was given on its own counts.
      let alone = 0
      for (const port of ports) {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
        const value = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
        expect(value('analytics_rate_limit_shared_failed_syncs_total')).toBeGreaterThan(0)
        alone += value('analytics_rate_limit_shared_decided_alone_total')
      }
      // The first verdicts may come before the first sync has failed.
      expect(alone).toBeGreaterThan(2 * LIMIT)
      expect(alone).toBeLessThanOrEqual(3 * LIMIT)
    } finally {
      for (const t of list) await t.close()
    }
  })
})
