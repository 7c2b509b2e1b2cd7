// The user-id plugin: spec/plausible-dialect.md §9 (salted user id, root domain, daily salts).

import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { Type } from '@sinclair/typebox'
import { getDomain } from 'tldts'
import { BoundedCache } from '../../core/cache.ts'
import { definePlugin } from '../../core/plugin.ts'
import { connectRedis } from '../../core/redis.ts'
import { createRedisSaltStore, type RedisSaltStore } from './redis-salts.ts'
import { createFileSaltStore, createMemorySaltStore, DAY_MS, type SaltStore, type Salts } from './salts.ts'
import { type SipKey, sipHash24, sipKey } from './siphash.ts'

interface Ids {
  /** The user agent these ids were made for: the cache's key leaves it out (see `run`). */
  readonly userAgent: string
  readonly current: bigint
  readonly previous: bigint
}

const MAX_CACHED_KEY = 1024
/** Days before yesterday whose in-process salts are kept at once (a replay of several years). */
const MAX_PAST_DAYS = 1000

// Private suffixes count (spec §9): `foo.netlify.app` is its own root domain.
const TLD_OPTIONS = { allowPrivateDomains: true } as const

/**
 * The first-party root domain of a hostname: its registrable domain by the Public Suffix List with
 * private suffixes; the hostname itself when it has none (an IP literal, `localhost`, `(none)`).
 */
export function rootDomainOf(hostname: string): string {
  if (hostname === '') return '(none)'
  return getDomain(hostname, TLD_OPTIONS) ?? hostname
}

export default definePlugin({
  name: 'user-id',
  stage: 'identify',
  summary: 'Sets the salted daily user id (SipHash of user agent, IP, domain, root domain) and the root domain.',
  options: Type.Object(
    {
      store: Type.Union([Type.Literal('file'), Type.Literal('memory'), Type.Literal('redis')], {
        default: 'file',
        description:
          'Where salts live: `file` shares them between the processes of one machine through a folder; `redis` between every engine of a deployment (never on disk here); `memory` keeps them in this process (ids change on restart).',
      }),
      directory: Type.Optional(
        Type.String({
          description: 'Folder of the salt files (store `file`). Default: `salts` under the state folder.',
        }),
      ),
      redis: Type.Object(
        {
          url: Type.String({
            default: 'redis://localhost:6379',
            description: 'Redis server of the shared salts (store `redis`); `redis://[:password@]host:port[/db]`.',
          }),
          keyPrefix: Type.String({ default: 'analytics:', description: 'Prefix of the salt keys.' }),
          refreshSeconds: Type.Integer({
            minimum: 1,
            default: 60,
            description: "How often the salts are read again; tomorrow's is created a day ahead.",
          }),
          timeoutMs: Type.Integer({ minimum: 10, default: 2000, description: 'A Redis command taking longer fails.' }),
        },
        { additionalProperties: false, default: {}, description: 'Store `redis` only.' },
      ),
      cacheSize: Type.Integer({
        minimum: 0,
        default: 20_000,
        description:
          'Distinct visitors (user agent, IP, domain, root domain) whose ids are kept for the day, and hostnames whose root domain is kept (0 = no cache).',
      }),
    },
    { additionalProperties: false },
  ),
  async setup(options, engine) {
    let redisStore: RedisSaltStore | undefined
    if (options.store === 'redis') {
      redisStore = createRedisSaltStore({
        redis: connectRedis(options.redis.url, 'redis.url'),
        keyPrefix: options.redis.keyPrefix,
        refreshMs: options.redis.refreshSeconds * 1000,
        timeoutMs: options.redis.timeoutMs,
        logger: engine.logger,
      })
      // Unreachable at start: ingestion goes on with salts of this process (logged loudly).
      await redisStore.ready
    }
    const store: SaltStore =
      redisStore ??
      (options.store === 'memory'
        ? createMemorySaltStore()
        : createFileSaltStore({
            directory:
              options.directory === undefined ? join(engine.stateDir, 'salts') : engine.resolvePath(options.directory),
            logger: engine.logger,
          }))

    let salts: Salts = store.get(Date.now())
    let currentKey: SipKey = sipKey(salts.current)
    let previousKey: SipKey | undefined = salts.previous && sipKey(salts.previous)
    // The next rotation, as a number: the per-event check is one comparison.
    let nextDayMs = (salts.day + 1) * DAY_MS
    // Events dated before this second (the start of yesterday) have no salt left.
    let yesterdayStart = ((salts.day - 1) * DAY_MS) / 1000

    const useCache = options.cacheSize > 0
    const roots = new BoundedCache<string>(options.cacheSize)
    // A visitor's ids are fixed for the day: one hash pair costs ~0.8 µs, a hit ~0.1 µs.
    const ids = new BoundedCache<Ids>(options.cacheSize)

    const rotate = (nowMs: number, fillPrevious = false) => {
      const next = fillPrevious ? store.withPrevious(nowMs) : store.get(nowMs)
      if (next === salts) return
      salts = next
      currentKey = sipKey(next.current)
      previousKey = next.previous && sipKey(next.previous)
      nextDayMs = (next.day + 1) * DAY_MS
      yesterdayStart = ((next.day - 1) * DAY_MS) / 1000
      ids.clear()
    }

    // Days before yesterday (a replay of old records) get a salt that lives in this process only and
    // is never written: their ids are consistent within the run and match no live id, as ids of a
    // deleted salt would. Bounded, so a replay of years stays small.
    const pastKeys = new Map<number, SipKey>()
    const pastKey = (day: number): SipKey => {
      let key = pastKeys.get(day)
      if (key === undefined) {
        if (pastKeys.size >= MAX_PAST_DAYS) pastKeys.clear()
        key = sipKey(new Uint8Array(randomBytes(16)))
        pastKeys.set(day, key)
      }
      return key
    }

    // Rotate and delete expired salts on time even when no event arrives to trigger it.
    const timer = setInterval(() => {
      const now = Date.now()
      if (now >= nextDayMs) rotate(now)
    }, 60_000)
    timer.unref?.()

    const encoder = new TextEncoder()
    let buffer = new Uint8Array(4096)
    /** UTF-8 of `text` into `buffer` (grown to fit: at most 3 bytes a UTF-16 unit); its byte length. */
    const encode = (text: string): number => {
      if (text.length * 3 > buffer.length) buffer = new Uint8Array(text.length * 3)
      return encoder.encodeInto(text, buffer).written
    }

    return {
      run(event) {
        // The request's arrival decides the day; 0 (a hand-made event) means "now".
        const now = event.receivedAt > 0 ? event.receivedAt : Date.now()
        if (now >= nextDayMs) rotate(now)

        const hostname = event.hostname
        let root = useCache ? roots.get(hostname) : undefined
        if (root === undefined) {
          root = rootDomainOf(hostname)
          if (useCache) roots.set(hostname, root)
        }
        event.rootDomain = root

        // A dialect may have set the id from a client-side id (Lynkow's visitor_id): keep it.
        if (event.user_id !== 0n) return undefined

        const domain = event.domain !== '' ? event.domain : (event.site?.domain ?? '')
        // UA ++ IP ++ domain ++ root domain, UTF-8, no separators (Plausible's exact input).
        const userAgent = event.userAgent
        const key = event.clientIp + domain + root
        const text = userAgent + key

        // An event dated before the day of the salt in force (a trusted sender's client timestamp, a
        // replayed record) takes the salt of its own day, so a back-filled yesterday gets the ids
        // that day's live events got. Only yesterday's salt still exists (spec §9: deleted after
        // 48 h); older days get a salt of this process (pastKey).
        const eventMs = event.timestamp * 1000
        if (event.timestamp > 0 && eventMs < nextDayMs - DAY_MS) {
          const length = encode(text)
          if (event.timestamp >= yesterdayStart) {
            // At the start of the salt day in force: a replayed record's arrival may be days old.
            if (previousKey === undefined) rotate(Math.max(now, nextDayMs - DAY_MS), true)
            event.user_id = sipHash24(previousKey!, buffer, length)
            // The day before yesterday's salt is gone: nothing to continue a session under.
            event.previousUserId = 0n
          } else {
            const day = Math.floor(eventMs / DAY_MS)
            event.user_id = sipHash24(pastKey(day), buffer, length)
            event.previousUserId = sipHash24(pastKey(day - 1), buffer, length)
          }
          return undefined
        }
        // The cache is keyed by the rest of the input, and an entry keeps its user agent to compare:
        // the key is then a fourth as long to hash on every event (measured: ~0.3 against ~0.6 µs a
        // lookup, 20,000 entries). Two user agents on one address and site take turns in one entry.
        // Overlong keys are not kept: 20,000 of them could hold hundreds of megabytes.
        const cacheable = useCache && text.length <= MAX_CACHED_KEY
        let known = cacheable ? ids.get(key) : undefined
        if (known === undefined || known.userAgent !== userAgent) {
          const length = encode(text)
          known = {
            userAgent,
            current: sipHash24(currentKey, buffer, length),
            previous: previousKey === undefined ? 0n : sipHash24(previousKey, buffer, length),
          }
          if (cacheable) ids.set(key, known)
        }
        event.user_id = known.current
        event.previousUserId = known.previous
        return undefined
      },
      close() {
        clearInterval(timer)
        redisStore?.close()
        roots.clear()
        ids.clear()
      },
    }
  },
})
