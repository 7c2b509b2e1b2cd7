// A throwaway Redis server for tests: a free port, a temp folder, no persistence (nothing reaches the
// disk), started from Debian's `redis-server`, stopped and removed afterwards.
//
//   const redis = await startRedis()   // undefined (and a loud warning) when no binary exists
//   await redis.client.send('PING', [])
//   await redis.kill(); await redis.start()
//   await redis.destroy()

import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RedisClient, type Socket, type Subprocess, spawn, type TCPSocketListener } from 'bun'
import { freePort } from '../clickhouse/harness.ts'

export const redisBinary: string | undefined = ['/usr/bin/redis-server', '/usr/sbin/redis-server'].find((p) =>
  existsSync(p),
)

let warned = false
/** Says loudly, once per process, that Redis tests are skipped. */
export function warnIfNoRedis(): void {
  if (redisBinary || warned) return
  warned = true
  console.warn('\n*** redis-server not found: Redis tests are SKIPPED. Install the redis-server package. ***\n')
}

export interface RedisServer {
  readonly url: string
  readonly port: number
  /** The server's folder; it must stay empty (no RDB, no AOF). */
  readonly dir: string
  /** A client for the test's own checks (a new one after each `start`). */
  readonly client: RedisClient
  /** The server process's id (for its CPU time in /proc), while it runs. */
  pid(): number | undefined
  files(): string[]
  start(): Promise<void>
  kill(): Promise<void>
  destroy(): Promise<void>
}

/** `host`: the address to listen on (default 127.0.0.1), e.g. a bridge the test made for namespaces. */
export async function startRedis(o: { host?: string } = {}): Promise<RedisServer | undefined> {
  if (!redisBinary) return undefined
  const host = o.host ?? '127.0.0.1'
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'redis-test-'))
  let proc: Subprocess | undefined
  const url = `redis://${host}:${port}`
  const start = async () => {
    proc = spawn(
      [
        ...[redisBinary, '--port', String(port), '--bind', host, '--dir', dir, '--save', '', '--appendonly', 'no'],
        // Off loopback, protected mode refuses every client without a password; such an address
        // exists only on links the test made (test/netns/network.ts).
        ...(host === '127.0.0.1' ? [] : ['--protected-mode', 'no']),
      ],
      { stdout: 'ignore', stderr: 'ignore' },
    )
    const deadline = Date.now() + 10_000
    for (;;) {
      const probe = new RedisClient(url, { connectionTimeout: 500, autoReconnect: false })
      try {
        if ((await probe.send('PING', [])) === 'PONG') return
      } catch {
        if (Date.now() > deadline) throw new Error(`redis-server did not start on port ${port}`)
        await Bun.sleep(50)
      } finally {
        probe.close()
      }
    }
  }
  await start()
  // Bun's client gives up for good after its reconnection attempts (about 31 s): after a restart
  // the tests get a fresh one.
  let client = new RedisClient(url)
  return {
    url,
    port,
    dir,
    get client() {
      return client
    },
    pid: () => proc?.pid,
    files: () => readdirSync(dir),
    async start() {
      await start()
      client.close()
      client = new RedisClient(url)
    },
    async kill() {
      proc?.kill('SIGKILL')
      await proc?.exited
    },
    async destroy() {
      client.close()
      proc?.kill('SIGKILL')
      await proc?.exited
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

interface Link {
  upstream?: Socket<Link>
  /** Bytes from the client held while the link is down. */
  held: Uint8Array[]
}

/** A TCP relay to Redis that can hold every byte (both ways) while `stalled`, then pass it on. */
export function stallingRelay(port: number) {
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
