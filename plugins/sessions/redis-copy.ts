// The sessions' copy of record in Redis (issue "scale out": "the copy of record of sessions (written
// behind, pipelined, never one awaited round trip per event)"; research/scale-out.md §2.3, §3.2).
//
// The in-memory store stays the authority of the owning engine: every event's read-modify-write runs
// there, synchronously. Changed sessions are only marked here; every `flushMs` one batch of them is
// written with pipelined SET PX, never awaited by an event. Redis is read only on a local miss, so
// that a visitor whose owner changed (a restart, a machine added) continues the session the former
// owner left there.
//
// A write can only be stale when it is late: an engine cut off from Redis keeps its changes and
// writes them when Redis answers again, while its visitors may have moved to engines that wrote newer
// states meanwhile. Those late writes go through a guard script that keeps a newer stored state (by
// last event time, then event count). Writes on time go out plain: the script costs 6–7 µs of Redis
// CPU per state against 2 for SET PX (bench/redis-sessions.ts), and an on-time write of a former
// owner reaches Redis before its visitor's next event could be written by another engine.
//
// The value holds what a sessions_v2 row holds (hashed ids, pages, attribution), never an address or
// a user agent.

import { createHash } from 'node:crypto'
import type { Logger } from '../../core/logger.ts'
import { within } from '../../core/redis.ts'
import { encodeAsciiCommand, isAscii, RedisReplyError, type RespClient } from '../../core/resp.ts'
import { attributionFields, attributionFromFields, Session } from './session.ts'

/** Sessions per script call (or per pipelined run of SETs). */
const BATCH = 500
/** Changed sessions remembered while Redis is away; past it, changes are dropped (and counted). */
const MAX_DIRTY = 200_000
/** How often an unreachable Redis is asked again. */
const PROBE_MS = 1000
const LATE = Symbol('late')

/**
 * Writes KEYS[i] unless the stored state is newer, by last event time, then event count. ARGV: the
 * TTL (ms), then per key its last event time and event count, then per key its state. Only the head
 * of a stored state is read (GETRANGE): states begin with `[lastSeen,events,`. Returns how many
 * were written.
 */
export const GUARD_SCRIPT = `local n = #KEYS
local written = 0
for i = 1, n do
  local seen, events = tonumber(ARGV[1 + i]), tonumber(ARGV[1 + n + i])
  local head = redis.call('GETRANGE', KEYS[i], 0, 47)
  local newer = false
  if head ~= '' then
    local os, oe = string.match(head, '^%[([%d%.eE+-]+),(%d+),')
    os, oe = tonumber(os), tonumber(oe)
    if os then newer = os > seen or (os == seen and oe > events) end
  end
  if not newer then
    redis.call('SET', KEYS[i], ARGV[1 + 2 * n + i], 'PX', ARGV[1])
    written = written + 1
  end
end
return written`

export const GUARD_SHA = createHash('sha1').update(GUARD_SCRIPT).digest('hex')

/** The state as stored: a JSON array that starts with what the guard compares. */
export function encodeState(s: Session): string {
  const a = s.attribution
  // Attributions are shared by many sessions and never change: their part is encoded once.
  a.encoded ??= JSON.stringify(attributionFields(a)).slice(1)
  const text = `[${s.lastSeen},${s.events},"${s.sessionId}","${s.userId}",${s.siteId},${s.start},${s.timestamp},${s.pageviews},${s.isBounce},${JSON.stringify(s.hostname)},${JSON.stringify(s.entryPage)},${JSON.stringify(s.exitPage)},${JSON.stringify(s.exitPageHostname)},${a.encoded}`
  // ASCII only (JSON's \u escapes), so the writer counts its bytes by its length.
  return isAscii(text) ? text : escapeNonAscii(text)
}

/** JSON text with every non-ASCII UTF-16 unit written as a \u escape (surrogates one by one). */
function escapeNonAscii(text: string): string {
  let out = ''
  let from = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x80) continue
    out += `${text.slice(from, i)}\\u${c.toString(16).padStart(4, '0')}`
    from = i + 1
  }
  return out + text.slice(from)
}

const STATE_LENGTH = 33

/** The session of a stored state; undefined when the value is not one (another writer, damage). */
export function decodeState(text: string, pages: (s: string) => string): Session | undefined {
  try {
    const v = JSON.parse(text) as unknown[]
    if (!Array.isArray(v) || v.length !== STATE_LENGTH) return undefined
    const str = (i: number) => {
      const x = v[i]
      if (typeof x !== 'string') throw new TypeError('not a string')
      return x
    }
    const num = (i: number) => {
      const x = v[i]
      if (typeof x !== 'number' || !Number.isFinite(x)) throw new TypeError('not a number')
      return x
    }
    const attribution = attributionFromFields(v.slice(13, 33))
    return new Session(
      BigInt(str(2)),
      BigInt(str(3)),
      num(4),
      num(5),
      num(6),
      num(0),
      num(7),
      num(1),
      num(8) === 0 ? 0 : 1,
      pages(str(9)),
      pages(str(10)),
      pages(str(11)),
      pages(str(12)),
      attribution,
    )
  } catch {
    return undefined
  }
}

export interface RedisCopyOptions {
  /**
   * The connection, for reads (one MGET per turn of misses) and batched writes (one socket write and
   * one promise per batch). It connects again on the next command after an outage of any length.
   */
  redis: RespClient
  keyPrefix: string
  /** How long changes wait before they are written (ms): one batch per interval. */
  flushMs: number
  /** A read on a miss waits at most this long (ms); then the event starts a new session. */
  readTimeoutMs: number
  /** A batch of writes taking longer fails (ms). */
  writeTimeoutMs: number
  /** Keys expire this long after their last write (ms): the session timeout. */
  ttlMs: number
  /** Which writes go through the guard script: the late ones (after an outage), all, or none. */
  guard: GuardMode
  logger: Logger
}

export type GuardMode = 'late' | 'always' | 'never'

/** What the copy did, for logs, tests and the bench. */
export interface RedisCopyStats {
  /** Session states written (accepted by Redis). */
  written: number
  /** States the guard refused because Redis held a newer one. */
  refused: number
  /** States not written because Redis was away (or the backlog was full); later ones may be. */
  dropped: number
  /** Misses that asked Redis. */
  reads: number
  /** Misses answered with a stored session. */
  found: number
  /** Misses that went on as new sessions without an answer (Redis away or slow). */
  unanswered: number
  /** Batches sent. */
  batches: number
}

/** Which keys a session lives under: a visitor's user id, or a dialect's own session id. */
export type RemoteSpace = 'user' | 'client'

export class RedisCopy {
  readonly stats: RedisCopyStats = { written: 0, refused: 0, dropped: 0, reads: 0, found: 0, unanswered: 0, batches: 0 }
  // Changed sessions and the id they are stored under, by space; a session changed twice before a
  // flush is written once. Keyed by the object, so marking builds no key string.
  private dirtyUser = new Map<Session, bigint>()
  private dirtyClient = new Map<Session, bigint>()
  private timer: ReturnType<typeof setTimeout> | undefined
  private flushing: Promise<void> | undefined
  private unreachable = false
  private probing: ReturnType<typeof setInterval> | undefined
  private closed = false
  private readonly ttl: string
  private readonly redis: RespClient
  private probeUnderWay = false
  /** Misses of this turn of the event loop, read together. */
  private reads: { keys: string[]; resolve: (values: (string | null)[] | undefined) => void }[] = []
  /** Set by an outage, cleared by the first batch written after it: that batch is late. */
  private late = false

  constructor(private readonly o: RedisCopyOptions) {
    this.ttl = String(o.ttlMs)
    this.redis = o.redis
  }

  /** Whether misses should ask Redis now (not while it is known to be away). */
  get reachable(): boolean {
    return !this.unreachable
  }

  key(space: RemoteSpace, siteId: number, id: bigint): string {
    return `${this.o.keyPrefix}${space === 'user' ? 's' : 'sc'}:${siteId}:${id}`
  }

  /** Marks a session changed; it is written with the next batch. O(1), no allocation on a repeat. */
  mark(space: RemoteSpace, id: bigint, session: Session): void {
    const dirty = space === 'user' ? this.dirtyUser : this.dirtyClient
    if (dirty.size >= MAX_DIRTY && !dirty.has(session)) {
      this.stats.dropped++
      return
    }
    dirty.set(session, id)
    if (this.timer === undefined && !this.unreachable && !this.closed) {
      this.timer = setTimeout(this.onTimer, this.o.flushMs)
      this.timer.unref?.()
    }
  }

  /**
   * The stored states under `keys` (a visitor's current and previous ids), or none when Redis does
   * not answer within the read timeout (counted; the event goes on). The misses of one turn of the
   * event loop share one MGET: under load that is one command for many new visitors, not one each.
   */
  read(keys: string[]): Promise<(string | null)[] | undefined> {
    this.stats.reads++
    return new Promise((resolve) => {
      this.reads.push({ keys, resolve })
      if (this.reads.length === 1) setImmediate(this.sendReads)
    })
  }

  private readonly sendReads = () => {
    const batch = this.reads
    this.reads = []
    const unanswered = () => {
      this.stats.unanswered += batch.length
      for (const r of batch) r.resolve(undefined)
    }
    if (this.unreachable) return unanswered()
    const keys = batch.length === 1 ? batch[0]!.keys : batch.flatMap((r) => r.keys)
    let timer: ReturnType<typeof setTimeout> | undefined
    const late = new Promise<typeof LATE>((resolve) => {
      timer = setTimeout(() => resolve(LATE), this.o.readTimeoutMs)
    })
    Promise.race([this.redis.send('MGET', keys) as Promise<(string | null)[]>, late]).then(
      (values) => {
        clearTimeout(timer)
        // Slow, not necessarily away: these events go on, the next misses ask again.
        if (values === LATE) return unanswered()
        let at = 0
        for (const r of batch) {
          const mine = values.slice(at, at + r.keys.length)
          at += r.keys.length
          if (mine.some((v) => v !== null)) this.stats.found++
          r.resolve(mine)
        }
      },
      (error: unknown) => {
        clearTimeout(timer)
        unanswered()
        this.lost(error)
      },
    )
  }

  /** Counts a miss that did not ask because Redis is known to be away. */
  skipRead(): void {
    this.stats.unanswered++
  }

  /** Writes every marked session now; resolves when Redis answered (never rejects). */
  flush(): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    this.flushing ??= this.flushOnce().finally(() => {
      this.flushing = undefined
      // Changes made while the batch was under way wait for the next interval.
      if ((this.dirtyUser.size > 0 || this.dirtyClient.size > 0) && !this.unreachable && !this.closed) {
        this.timer ??= setTimeout(this.onTimer, this.o.flushMs)
        this.timer.unref?.()
      }
    })
    return this.flushing
  }

  /** Writes what is marked (at shutdown: the next owner finds the sessions), then disconnects. */
  async close(): Promise<void> {
    this.closed = true
    if (this.probing !== undefined) clearInterval(this.probing)
    await this.flushing
    if (!this.unreachable) await this.flush()
    const left = this.dirtyUser.size + this.dirtyClient.size
    if (left > 0) this.stats.dropped += left
    this.o.logger.info('Sessions copy in Redis closed.', { plugin: 'sessions', ...this.stats })
    this.redis.close()
  }

  private readonly onTimer = () => {
    this.timer = undefined
    void this.flush()
  }

  private async flushOnce(): Promise<void> {
    const user = this.dirtyUser
    const client = this.dirtyClient
    if (user.size === 0 && client.size === 0) return
    this.dirtyUser = new Map()
    this.dirtyClient = new Map()
    const guard = this.o.guard === 'always' || (this.o.guard === 'late' && this.late)
    const keys: string[] = []
    const values: string[] = []
    const seen: string[] = []
    const events: string[] = []
    for (const [map, space] of [
      [user, 'user'],
      [client, 'client'],
    ] as const) {
      for (const [session, id] of map) {
        keys.push(this.key(space, session.siteId, id))
        values.push(encodeState(session))
        if (guard) {
          seen.push(String(session.lastSeen))
          events.push(String(session.events))
        }
      }
    }
    const sends: Promise<unknown>[] = []
    for (let i = 0; i < keys.length; i += BATCH) {
      sends.push(
        this.sendBatch(
          keys.slice(i, i + BATCH),
          values.slice(i, i + BATCH),
          seen.slice(i, i + BATCH),
          events.slice(i, i + BATCH),
          guard,
        ),
      )
    }
    try {
      await within(Promise.all(sends), this.o.writeTimeoutMs)
      if (this.unreachable) this.back()
      if (guard) this.late = false
    } catch (error) {
      // Kept for the next try when Redis answers again, unless changed meanwhile (newer is marked).
      for (const [map, dirty] of [
        [user, this.dirtyUser],
        [client, this.dirtyClient],
      ] as const) {
        for (const [session, id] of map) {
          if (dirty.has(session)) continue
          if (dirty.size >= MAX_DIRTY) this.stats.dropped++
          else dirty.set(session, id)
        }
      }
      this.lost(error)
    }
  }

  private async sendBatch(
    keys: string[],
    values: string[],
    seen: string[],
    events: string[],
    guard: boolean,
  ): Promise<void> {
    this.stats.batches++
    if (!guard) {
      // One text, one socket write, one promise for the batch. Keys and states are ASCII.
      let text = ''
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i]!
        const v = values[i]!
        text += `*5\r\n$3\r\nSET\r\n$${k.length}\r\n${k}\r\n$${v.length}\r\n${v}\r\n$2\r\nPX\r\n$${this.ttl.length}\r\n${this.ttl}\r\n`
      }
      const replies = await this.redis.sendEncoded(text, keys.length)
      const failed = replies.filter((r) => r instanceof RedisReplyError)
      this.stats.written += keys.length - failed.length
      if (failed.length > 0) this.refusedByRedis(failed.length, failed[0]!)
      return
    }
    const args = [GUARD_SHA, String(keys.length), ...keys, this.ttl, ...seen, ...events, ...values]
    let [reply] = await this.redis.sendEncoded(encodeAsciiCommand(['EVALSHA', ...args]), 1)
    if (reply instanceof RedisReplyError && reply.message.startsWith('NOSCRIPT')) {
      // A restarted Redis has forgotten the script: the body once, cached by Redis from then on.
      args[0] = GUARD_SCRIPT
      ;[reply] = await this.redis.sendEncoded(encodeAsciiCommand(['EVAL', ...args]), 1)
    }
    if (reply instanceof Error || typeof reply !== 'number') {
      this.refusedByRedis(keys.length, reply instanceof Error ? reply : new Error(String(reply)))
      return
    }
    this.stats.written += reply
    this.stats.refused += keys.length - reply
  }

  /** Redis answered a write with an error (out of memory, a read-only replica): counted, logged now and then. */
  private refusedByRedis(count: number, error: Error): void {
    this.stats.dropped += count
    this.o.logger.throttled('sessions:redis-write', 'error', 'Redis refused session writes; they are dropped.', {
      plugin: 'sessions',
      error: error.message.slice(0, 200),
    })
  }

  /** Redis failed: said once per outage; misses stop asking and writes wait until a probe answers. */
  private lost(error: unknown): void {
    if (this.unreachable || this.closed) return
    this.unreachable = true
    this.late = true
    this.o.logger.warn(
      'Redis is not reachable for sessions; they go on in memory, changes are written when it answers.',
      { plugin: 'sessions', error: String((error as Error)?.message ?? error) },
    )
    // Commands held by a stalled connection fail now rather than reach Redis minutes late.
    this.redis.reset('redis is not reachable for sessions')
    this.probing = setInterval(() => void this.probe(), PROBE_MS)
    this.probing.unref?.()
  }

  /** Asks Redis (connecting anew); when it answers, the backlog is written. */
  private async probe(): Promise<void> {
    if (this.probeUnderWay || this.closed) return
    this.probeUnderWay = true
    try {
      await within(this.redis.send('PING', []), this.o.writeTimeoutMs)
    } catch {
      // A PING held by a stalled link must not keep the connection: the next probe connects anew.
      this.redis.reset('redis did not answer the probe')
      return
    } finally {
      this.probeUnderWay = false
    }
    this.back()
    await this.flush()
  }

  private back(): void {
    if (!this.unreachable) return
    this.unreachable = false
    if (this.probing !== undefined) clearInterval(this.probing)
    this.probing = undefined
    this.o.logger.info('Redis answers again; sessions are written to it.', {
      plugin: 'sessions',
      dropped: this.stats.dropped,
      unanswered: this.stats.unanswered,
    })
  }
}
