// A Redis connection for the plugins that share state between engines (salts, rate counters):
// Bun's built-in client, which pipelines on its own. Other runtimes have none here yet, so a config
// that asks for Redis there stops start-up with the path of the option.

import { ConfigError } from './plugin.ts'
import { withoutCredentials } from './urls.ts'

/** What the plugins send: raw commands. Bun's RedisClient provides it; tests may pass another. */
export interface RedisCommands {
  send(command: string, args: string[]): Promise<unknown>
  close(): void
}

/** Connects (lazily: Bun's client connects on the first command) to `url`; `path` names the option. */
export function connectRedis(url: string, path = 'redis.url'): RedisCommands {
  const bun = (globalThis as { Bun?: { RedisClient?: new (url: string, options?: object) => RedisCommands } }).Bun
  if (!bun?.RedisClient) {
    throw new ConfigError(path, 'Redis needs Bun (its built-in client); this runtime has none')
  }
  try {
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
