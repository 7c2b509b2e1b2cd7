// A Redis connection for the plugins that share state between engines (salts, rate counters):
// Bun's built-in client, which pipelines on its own; on other runtimes (Deno, Node) the small RESP2
// client in resp.ts, which pipelines too.

import { ConfigError } from './plugin.ts'
import { RespClient } from './resp.ts'
import { withoutCredentials } from './urls.ts'

/** What the plugins send: raw commands. Bun's RedisClient provides it; tests may pass another. */
export interface RedisCommands {
  send(command: string, args: string[]): Promise<unknown>
  close(): void
}

/** Connects (lazily: Bun's client connects on the first command) to `url`; `path` names the option. */
export function connectRedis(url: string, path = 'redis.url'): RedisCommands {
  const bun = (globalThis as { Bun?: { RedisClient?: new (url: string, options?: object) => RedisCommands } }).Bun
  try {
    if (!bun?.RedisClient) return new RespClient(url, { connectTimeoutMs: 2000 })
    return new bun.RedisClient(url, { connectionTimeout: 2000, autoReconnect: true })
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
