// A shared site count through a connection that stalls, as a network partition does (the link is
// down, the TCP connection lives on, the client's commands wait in the socket and arrive when the
// link heals). Without root this stands in for test/netns/machines.test.ts's partition: every event
// must reach Redis's count once, never once per timed-out sync.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createLogger } from '../../core/logger.ts'
import { RespClient } from '../../core/resp.ts'
import { SharedSiteCounts } from '../../plugins/rate-limit/shared-counts.ts'
import { type RedisServer, redisBinary, stallingRelay, startRedis, warnIfNoRedis } from './harness.ts'

warnIfNoRedis()

describe.skipIf(!redisBinary)('shared site counts through a stalled link', () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = (await startRedis())!
  })
  afterAll(() => redis?.destroy())

  test('events counted while the link was stalled reach Redis once each after it heals', async () => {
    const relay = stallingRelay(redis.port)
    const logs: string[] = []
    const counts = new SharedSiteCounts({
      redis: new RespClient(relay.url),
      keyPrefix: 'stall:',
      syncMs: 20,
      timeoutMs: 100,
      logger: createLogger({ write: (l) => logs.push(l) }),
    })
    const windowMs = 86_400_000
    const key = `stall:ratelimit:1:${windowMs}:${Math.floor(Date.now() / windowMs)}`
    try {
      for (let i = 0; i < 10; i++) counts.take(1, windowMs, Date.now())
      await counts.sync()
      expect(Number(await redis.client.send('GET', [key]))).toBe(10)

      relay.stall()
      // 50 events over a second: about 50 syncs time out meanwhile.
      for (let i = 0; i < 50; i++) {
        expect(counts.allows(1, 1000, windowMs, Date.now())).toBe(true)
        counts.take(1, windowMs, Date.now())
        await Bun.sleep(20)
      }
      expect(logs.join('\n')).toContain('Redis is not reachable for rate limits')
      relay.heal()

      const deadline = Date.now() + 5_000
      while (!logs.join('\n').includes('Redis answers again') && Date.now() < deadline) await Bun.sleep(20)
      await Bun.sleep(200)
      expect(Number(await redis.client.send('GET', [key]))).toBe(60)
    } finally {
      await counts.close()
      relay.stop()
    }
  })
})
