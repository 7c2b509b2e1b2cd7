// A Redis connection for the plugins that share state between engines (salts, rate counters, the
// sessions' copy): the RESP2 client of resp.ts on every runtime. Not Bun's built-in RedisClient: it
// gives up for good ~31 s into an outage (the plugins would never share again after a longer one) and
// sends commands queued while disconnected late. This one reconnects on the next command after any
// outage, and a command sent while Redis is away fails as soon as the connection attempt does.

import { ConfigError } from './plugin.ts'
import { RespClient } from './resp.ts'
import { withoutCredentials } from './urls.ts'

/** What the plugins send: raw commands. RespClient provides it; tests may pass another. */
export interface RedisCommands {
  send(command: string, args: string[]): Promise<unknown>
  close(): void
}

/** A client for `url` (connecting lazily, on the first command); `path` names the option in errors. */
export function connectRedis(url: string, path = 'redis.url', connectTimeoutMs = 2000): RespClient {
  try {
    return new RespClient(url, { connectTimeoutMs })
  } catch (error) {
    throw new ConfigError(path, `cannot use ${withoutCredentials(url)}: ${(error as Error).message}`)
  }
}

/** Rejects when `promise` has not settled within `ms`: a command must not wait for a dead server. */
export function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis did not answer within ${ms} ms`)), ms)
    promise.then(
      (v) => {
        clearTimeout(timer)
        resolve(v)
      },
      (e) => {
        clearTimeout(timer)
        reject(e)
      },
    )
  })
}
