// Daily salts shared by every engine of a deployment through Redis (issue "scale out": "salts created
// once per day with SET NX, expiring 48 h after their day starts, never on disk").
//
// The SaltStore interface is synchronous (hashing happens on the request path), Redis is not: the
// store keeps the salts of yesterday, today and tomorrow in memory and refreshes them in the
// background. Tomorrow's salt is created a day ahead, so every engine switches at 00:00 UTC from
// memory, without a round trip, even when Redis is briefly away at midnight. Every salt is created
// with SET NX, so the first engine's random bytes win and all agree; EXAT deletes it 48 h after its
// day began. A salt, once served for a day, never changes in this process: a visitor's id is stable
// for the day even if Redis comes back with another one. Each refresh puts the known salts back with
// SET NX, so a Redis that restarted empty gets them again and engines started after it agree.

import { randomBytes } from 'node:crypto'
import type { Logger } from '../../core/logger.ts'
import { type RedisCommands, within } from '../../core/redis.ts'
import { DAY_MS, dayName, dayOf, SALT_BYTES, type SaltStore, type Salts } from './salts.ts'

export interface RedisSaltStoreOptions {
  redis: RedisCommands
  /** Prefix of the keys: `<prefix>salt:YYYY-MM-DD`. */
  keyPrefix: string
  /** How often the salts are read again (ms). */
  refreshMs: number
  /** A command taking longer fails (ms). */
  timeoutMs: number
  clock?: () => number
  random?: (size: number) => Uint8Array
  logger?: Logger
}

export interface RedisSaltStore extends SaltStore {
  /** Resolves after the first refresh: yesterday's, today's and tomorrow's salts are known. */
  readonly ready: Promise<void>
  /** Reads (and creates) the salts of yesterday, today and tomorrow now. */
  refresh(): Promise<void>
  close(): void
}

const defaultRandom = (size: number): Uint8Array => new Uint8Array(randomBytes(size))
const HEX = /^[0-9a-f]{32}$/

export function createRedisSaltStore(o: RedisSaltStoreOptions): RedisSaltStore {
  const clock = o.clock ?? Date.now
  const random = o.random ?? defaultRandom
  /** Salts by day as this process uses them; a day's entry never changes once set. */
  const known = new Map<number, Uint8Array>()
  let served: Salts | undefined
  let unreachable = false

  const keyOf = (day: number) => `${o.keyPrefix}salt:${dayName(day)}`
  /** 48 h after the day began, in seconds (EXAT). */
  const expiryOf = (day: number) => String(((day + 2) * DAY_MS) / 1000)

  /** Creates the day's salt unless one exists, then reads the one that won. */
  const fetchDay = async (day: number): Promise<Uint8Array | undefined> => {
    const candidate = Buffer.from(random(SALT_BYTES)).toString('hex')
    await within(o.redis.send('SET', [keyOf(day), candidate, 'NX', 'EXAT', expiryOf(day)]), o.timeoutMs)
    const value = await within(o.redis.send('GET', [keyOf(day)]), o.timeoutMs)
    if (typeof value !== 'string' || !HEX.test(value)) return undefined
    return new Uint8Array(Buffer.from(value, 'hex'))
  }

  const refresh = async (): Promise<void> => {
    const today = dayOf(clock())
    try {
      for (const day of [today - 1, today, today + 1]) {
        const mine = known.get(day)
        if (mine !== undefined) {
          // Puts a salt back that Redis lost (restarted empty), so that engines started since agree
          // with this one; a no-op while Redis holds it. Also how an outage and its end are noticed.
          const hex = Buffer.from(mine).toString('hex')
          await within(o.redis.send('SET', [keyOf(day), hex, 'NX', 'EXAT', expiryOf(day)]), o.timeoutMs)
          continue
        }
        const salt = await fetchDay(day)
        if (salt) known.set(day, salt)
      }
      for (const day of known.keys()) if (day < today - 1) known.delete(day)
      if (unreachable) o.logger?.info('Redis answers again; salts are shared.', { store: 'redis' })
      unreachable = false
    } catch (error) {
      if (!unreachable) {
        o.logger?.error('Redis is not reachable for salts; known salts stay in use.', {
          store: 'redis',
          error: (error as Error).message,
        })
      }
      unreachable = true
    }
  }

  /** A salt for `day`: the shared one if known, else one of this process (logged), kept for the day. */
  const saltFor = (day: number): Uint8Array => {
    let salt = known.get(day)
    if (salt === undefined) {
      salt = random(SALT_BYTES)
      known.set(day, salt)
      o.logger?.error('No shared salt for the day; this process uses its own until the next day.', {
        store: 'redis',
        day: dayName(day),
      })
    }
    return salt
  }

  const get = (nowMs = clock()): Salts => {
    const day = dayOf(nowMs)
    if (served && day === served.day && served.previous === undefined && known.has(day - 1)) {
      // Yesterday's salt arrived after today's was first served (Redis was late): use it from now on.
      served = Object.freeze({ day, current: served.current, previous: known.get(day - 1) })
    }
    if (served && day <= served.day) return served
    const current = saltFor(day)
    served = Object.freeze({ day, current, previous: known.get(day - 1) })
    // Tomorrow's salt is fetched a day ahead; a rotation is the moment to look further.
    void refresh()
    return served
  }

  const ready = refresh()
  const timer = setInterval(() => void refresh(), o.refreshMs)
  timer.unref?.()

  return {
    ready,
    refresh,
    get,
    withPrevious(nowMs = clock()) {
      const salts = get(nowMs)
      if (salts.previous !== undefined) return salts
      served = Object.freeze({ day: salts.day, current: salts.current, previous: saltFor(salts.day - 1) })
      return served
    },
    close() {
      clearInterval(timer)
      o.redis.close()
    },
  }
}
