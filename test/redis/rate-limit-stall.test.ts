// A shared site count through a connection that stalls, as a network partition does (the link is
// down, the TCP connection lives on, the client's commands wait in the socket and arrive when the
// link heals). Without root this stands in for test/netns/machines.test.ts's partition: every event
// must reach Redis's count once, never once per timed-out sync.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Socket, TCPSocketListener } from 'bun'
import { createLogger } from '../../core/logger.ts'
import type { RedisCommands } from '../../core/redis.ts'
import { SharedSiteCounts } from '../../plugins/rate-limit/shared-counts.ts'
import { type RedisServer, redisBinary, startRedis, warnIfNoRedis } from './harness.ts'

warnIfNoRedis()

interface Link {
  upstream?: Socket<Link>
  /** Bytes from the client held while the link is down. */
  held: Uint8Array[]
}

/** A TCP relay to Redis that can hold every byte (both ways) while `stalled`, then pass it on. */
function stallingRelay(port: number) {
  let stalled = false
  const links = new Set<Socket<Link>>()
  const toRedis = (client: Socket<Link>) => {
    const up = client.data.upstream
    if (!up || stalled) return
    for (const chunk of client.data.held.splice(0)) up.write(chunk)
  }
  const listener: TCPSocketListener<Link> = Bun.listen<Link>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      async open(client) {
        client.data = { held: [] }
        links.add(client)
        client.data.upstream = await Bun.connect<Link>({
          hostname: '127.0.0.1',
          port,
          data: { held: [] },
          socket: {
            data(_up, chunk) {
              // Redis's answers wait too: nothing crosses a link that is down.
              _up.data.held.push(new Uint8Array(chunk))
              if (!stalled) for (const c of _up.data.held.splice(0)) client.write(c)
            },
            close() {
              client.end()
            },
          },
        })
        toRedis(client)
      },
      data(client, chunk) {
        client.data.held.push(new Uint8Array(chunk))
        toRedis(client)
      },
      close(client) {
        links.delete(client)
        client.data.upstream?.end()
      },
    },
  })
  return {
    url: `redis://127.0.0.1:${listener.port}`,
    stall() {
      stalled = true
    },
    heal() {
      stalled = false
      for (const client of links) {
        toRedis(client)
        const up = client.data.upstream
        if (up) for (const c of up.data.held.splice(0)) client.write(c)
      }
    },
    stop() {
      for (const client of links) client.end()
      listener.stop(true)
    },
  }
}

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
      redis: new Bun.RedisClient(relay.url) as unknown as RedisCommands,
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
