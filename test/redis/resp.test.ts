// The engine's one Redis client (core/resp.ts): the reply reader on replies split at every byte,
// then the client against a real redis-server: the commands the plugins send, pipelining in order,
// batches with one promise (error replies as values), order kept past a full socket buffer, error
// replies, AUTH and SELECT from the URL, a server that dies and comes back (waiting commands fail,
// the next command reconnects, after any number of failed attempts, and nothing sent while it was
// away reaches it later), and a stalled link reset without its commands arriving late.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { ConfigError } from '../../core/plugin.ts'
import { connectRedis } from '../../core/redis.ts'
import {
  encodeAsciiCommand,
  encodeCommand,
  isAscii,
  parseRedisUrl,
  RedisReplyError,
  type Reply,
  ReplyReader,
  RespClient,
} from '../../core/resp.ts'
import { type RedisServer, redisBinary, stallingRelay, startRedis, warnIfNoRedis } from './harness.ts'

warnIfNoRedis()

describe('the reply reader', () => {
  const wire = Buffer.from(
    '+OK\r\n' +
      '-ERR wrong number of arguments\r\n' +
      ':42\r\n' +
      '$5\r\nhé!\r\r\n' + // a bulk string counts bytes, may hold CR, and é is two bytes
      '$-1\r\n' +
      '*3\r\n:1\r\n$0\r\n\r\n*1\r\n+x\r\n' +
      '*-1\r\n',
  )
  const expected: Array<Reply | string> = [
    'OK',
    'ERR wrong number of arguments',
    42,
    'hé!\r',
    null,
    [1, '', ['x']],
    null,
  ]
  const plain = (replies: Array<Reply | RedisReplyError>) =>
    replies.map((r) => (r instanceof RedisReplyError ? r.message : r))

  test('reads each reply type in one chunk', () => {
    const replies = new ReplyReader().feed(wire)
    expect(replies[1]).toBeInstanceOf(RedisReplyError)
    expect(plain(replies)).toEqual(expected)
  })

  test('gives the same replies when the bytes arrive one at a time', () => {
    const reader = new ReplyReader()
    const replies: Array<Reply | RedisReplyError> = []
    for (let i = 0; i < wire.length; i++) replies.push(...reader.feed(wire.subarray(i, i + 1)))
    expect(plain(replies)).toEqual(expected)
  })

  test('encodes commands as arrays of bulk strings, counting bytes', () => {
    expect(encodeCommand('SET', ['k', 'é'])).toBe('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\né\r\n')
    expect(encodeAsciiCommand(['SET', 'k', 'v'])).toBe('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n')
    expect([isAscii('plain text'), isAscii('é'), isAscii('😀')]).toEqual([true, false, false])
  })

  test('reads credentials, port, database and TLS from the URL', () => {
    expect(parseRedisUrl('rediss://u%40x:p%3Aw@cache.internal:6380/2')).toEqual({
      host: 'cache.internal',
      port: 6380,
      tls: true,
      username: 'u@x',
      password: 'p:w',
      db: 2,
    })
    expect(parseRedisUrl('redis://[::1]')).toMatchObject({ host: '::1', port: 6379, db: 0, tls: false })
    expect(parseRedisUrl('valkeys://cache')).toMatchObject({ host: 'cache', tls: true })
    expect(() => parseRedisUrl('http://127.0.0.1:6379')).toThrow('not a redis://')
    expect(() => parseRedisUrl('redis://127.0.0.1/x')).toThrow('is not a number')
  })
})

describe.skipIf(!redisBinary)('the RESP2 client against redis-server', () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = (await startRedis())!
  })
  afterAll(() => redis?.destroy())

  test('runs the commands the plugins send, with the replies Bun’s client gives', async () => {
    const client = new RespClient(redis.url)
    const bun = redis.client
    try {
      for (const c of [client, bun]) await c.send('DEL', ['resp:salt', 'resp:count'])
      expect(await client.send('SET', ['resp:salt', 'abc', 'NX', 'EX', '60'])).toBe('OK')
      expect(await client.send('SET', ['resp:salt', 'other', 'NX', 'EX', '60'])).toBeNull()
      expect(await client.send('GET', ['resp:salt'])).toBe(await bun.send('GET', ['resp:salt']))
      expect(await client.send('GET', ['resp:missing'])).toBeNull()
      expect(await client.send('INCRBY', ['resp:count', '5'])).toBe(5)
      expect(await client.send('PEXPIRE', ['resp:count', '60000'])).toBe(1)
      expect(await client.send('MGET', ['resp:salt', 'resp:missing'])).toEqual(['abc', null])
    } finally {
      client.close()
    }
  })

  test('pipelines: 2,000 commands sent at once answer in order', async () => {
    const client = new RespClient(redis.url)
    try {
      await client.send('DEL', ['resp:pipe'])
      const answers = await Promise.all(Array.from({ length: 2000 }, () => client.send('INCR', ['resp:pipe'])))
      expect(answers).toEqual(Array.from({ length: 2000 }, (_, i) => i + 1))
    } finally {
      client.close()
    }
  })

  test('an error reply rejects that command only', async () => {
    const client = new RespClient(redis.url)
    try {
      await client.send('SET', ['resp:text', 'not a number'])
      const [bad, good] = await Promise.allSettled([
        client.send('INCR', ['resp:text']),
        client.send('GET', ['resp:text']),
      ])
      expect(bad.status).toBe('rejected')
      expect((bad as PromiseRejectedResult).reason).toBeInstanceOf(RedisReplyError)
      expect(good).toEqual({ status: 'fulfilled', value: 'not a number' })
    } finally {
      client.close()
    }
  })

  test('a batch is one promise: replies in order, error replies as values, UTF-8 counted in bytes', async () => {
    const client = new RespClient(redis.url)
    try {
      expect(await client.sendBatch([])).toEqual([])
      const replies = await client.sendBatch([
        ['SET', 'resp:batch', 'é😀'],
        ['INCR', 'resp:batch'],
        ['GET', 'resp:batch'],
        ['MGET', 'resp:batch', 'resp:none'],
      ])
      expect(replies[1]).toBeInstanceOf(RedisReplyError)
      expect(replies.map((r) => (r instanceof RedisReplyError ? 'error' : r))).toEqual([
        'OK',
        'error',
        'é😀',
        ['é😀', null],
      ])
      // Pre-encoded ASCII text, as the sessions' write-behind sends it; single commands around it
      // keep their places.
      let text = ''
      for (let i = 0; i < 100; i++) text += encodeAsciiCommand(['SET', `resp:pre:${i}`, String(i), 'PX', '60000'])
      const [before, batch, after] = await Promise.all([
        client.send('DEL', ['resp:pre:99']),
        client.sendEncoded(text, 100),
        client.send('GET', ['resp:pre:99']),
      ])
      expect(before).toBe(0)
      expect(batch).toEqual(Array.from({ length: 100 }, () => 'OK'))
      expect(after).toBe('99')
    } finally {
      client.close()
    }
  })

  test('keeps order past a full socket buffer: 16 MB of batches and commands between them', async () => {
    const client = new RespClient(redis.url)
    try {
      await client.send('DEL', ['resp:order'])
      const value = 'v'.repeat(8000)
      const sends: Promise<unknown>[] = []
      for (let b = 0; b < 20; b++) {
        let text = ''
        for (let i = 0; i < 100; i++) text += encodeAsciiCommand(['SET', `resp:big:${i}`, `${b}:${value}`])
        // Not awaited: the socket's buffer fills long before the last batch is handed over.
        sends.push(client.sendEncoded(text, 100), client.send('INCR', ['resp:order']))
      }
      const answers = await Promise.all(sends)
      expect(answers.filter((_, i) => i % 2 === 1)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
      for (let b = 0; b < 20; b++) expect(answers[2 * b]).toEqual(Array.from({ length: 100 }, () => 'OK'))
      expect(String(await client.send('GET', ['resp:big:99'])).startsWith('19:')).toBe(true)
    } finally {
      client.close()
    }
  })

  test('selects the database named in the URL', async () => {
    const client = new RespClient(`${redis.url}/3`)
    try {
      await client.send('SET', ['resp:db', 'three'])
      expect(await redis.client.send('GET', ['resp:db'])).toBeNull()
      await redis.client.send('SELECT', ['3'])
      expect(await redis.client.send('GET', ['resp:db'])).toBe('three')
      await redis.client.send('SELECT', ['0'])
    } finally {
      client.close()
    }
  })

  /** Runs `during` with Redis killed, and starts it again even when `during` fails (the next tests need it). */
  async function whileKilled(during: () => Promise<void>): Promise<void> {
    await redis.kill()
    try {
      await during()
    } finally {
      await redis.start()
    }
  }

  test('fails waiting commands when the server dies, and reconnects on the next one', async () => {
    const client = new RespClient(redis.url, { connectTimeoutMs: 500 })
    try {
      expect(await client.send('PING', [])).toBe('PONG')
      await whileKilled(async () => {
        await expect(client.send('PING', [])).rejects.toThrow()
      })
      expect(await client.send('PING', [])).toBe('PONG')
    } finally {
      client.close()
    }
  })

  test('reconnects after any number of failed attempts; a command sent meanwhile fails at once and never arrives', async () => {
    // A connect timeout far longer than the test: a command that waited for it, or for a back-off,
    // would show as a timeout error (or a test timeout), whatever pauses the test process has.
    const client = new RespClient(redis.url, { connectTimeoutMs: 60_000 })
    try {
      expect(await client.send('PING', [])).toBe('PONG')
      // Bun's client gave up for good after about 31 s of attempts; this one has no such limit.
      const codes: string[] = []
      await whileKilled(async () => {
        for (let attempt = 0; attempt < 50; attempt++) {
          const error = await client.send('INCR', ['resp:late']).then(
            () => undefined,
            (e: Error & { code?: string }) => e,
          )
          expect(error).toBeInstanceOf(Error)
          codes.push(error?.code ?? error?.message ?? '')
        }
      })
      // At once: each command made a connection attempt that the kernel refused. The first may instead
      // have gone out on the connection of the killed server, and failed with it.
      expect(codes.slice(1)).toEqual(Array(49).fill('ECONNREFUSED'))
      // None of the 50 refused INCRs was kept to be sent now: Redis came back empty and counts 1.
      expect(await client.send('INCR', ['resp:late'])).toBe(1)
    } finally {
      client.close()
    }
  })

  test('reset fails what a stalled link holds, and none of it reaches Redis when the link heals', async () => {
    const relay = stallingRelay(redis.port)
    const client = new RespClient(relay.url)
    try {
      await client.send('DEL', ['resp:stalled'])
      expect(await client.send('INCR', ['resp:stalled'])).toBe(1)
      relay.stall()
      const held = client.sendBatch([
        ['INCR', 'resp:stalled'],
        ['INCR', 'resp:stalled'],
      ])
      await Bun.sleep(50)
      client.reset('cut off')
      await expect(held).rejects.toThrow('cut off')
      // The link heals a little later (the relay sees the reset first, as a router would drop it).
      await Bun.sleep(100)
      relay.heal()
      await Bun.sleep(100)
      expect(await client.send('INCR', ['resp:stalled'])).toBe(2)
    } finally {
      client.close()
      relay.stop()
    }
  })

  test('a refused AUTH fails the command and is tried again on the next', async () => {
    const client = new RespClient(redis.url.replace('redis://', 'redis://:wrong@'))
    try {
      // The server has no password: AUTH is refused, and so is every command until the URL is fixed.
      await expect(client.send('PING', [])).rejects.toThrow(/AUTH|password/i)
      await expect(client.send('PING', [])).rejects.toThrow(/AUTH|password/i)
    } finally {
      client.close()
    }
  })

  test('a closed client refuses commands', async () => {
    const client = new RespClient(redis.url)
    client.close()
    await expect(client.send('PING', [])).rejects.toThrow('closed')
  })
})

test('connectRedis names the option when the URL cannot be used', () => {
  let error: unknown
  try {
    connectRedis('http://x', 'shared.redis')
  } catch (e) {
    error = e
  }
  expect(error).toBeInstanceOf(ConfigError)
  expect((error as ConfigError).path).toBe('shared.redis')
})
