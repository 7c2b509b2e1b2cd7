// Implements spec/plausible-dialect.md §9 (sessions, salt rotation) and §5 (engagement events need a session).
//
// Runs last in `enrich`: it freezes the attribution that `referrer`, `geoip`, `user-agent` and
// `user-id` put on the session's first event, and copies it onto every later event of the session.

import { join } from 'node:path'
import { Type } from '@sinclair/typebox'
import type { AnalyticsEvent } from '../../core/event.ts'
import { ConfigError, definePlugin, type PluginContext, type RunResult } from '../../core/plugin.ts'
import { connectRedis } from '../../core/redis.ts'
import { withoutCredentials } from '../../core/urls.ts'
import { AttributionPool, StringPool } from './intern.ts'
import { decodeState, RedisCopy, type RemoteSpace } from './redis-copy.ts'
import {
  isLive,
  putSessionOnEvent,
  type Session,
  SessionIds,
  sessionRow,
  startSession,
  touchSession,
  updateSession,
} from './session.ts'
import { restoreSnapshot, writeSnapshot } from './snapshot.ts'
import { type KeySpace, MemorySessionStore, type SessionStore } from './store.ts'

// Caps of the interning pools; they forget everything when full (see intern.ts).
const PAGE_POOL_LIMIT = 100_000
const ATTRIBUTION_POOL_LIMIT = 50_000

/** How often the wall-clock expiry runs: a quarter of the timeout, at most a minute. */
export function expiryIntervalMs(timeoutSeconds: number): number {
  return Math.min(60, timeoutSeconds / 4) * 1000
}

/** Below this many entries a pool is kept whatever the sessions: it costs next to nothing. */
const POOL_KEEP = 1024

/**
 * Empties a pool once most of what it holds is certainly unused: more than twice what the live
 * sessions could hold (four pages and hostnames each, one attribution). Sessions keep what they
 * hold; the expired sessions' strings and attributions become garbage.
 */
export function shrinkPools(sessions: number, pages: StringPool, attributions: AttributionPool): void {
  if (pages.size > POOL_KEEP && pages.size > 8 * sessions) pages.clear()
  if (attributions.size > POOL_KEEP && attributions.size > 2 * sessions) attributions.clear()
}

/** `redis://host…` or `rediss://host…`, with a host. */
function isRedisUrl(url: string): boolean {
  if (!URL.canParse(url)) return false
  const u = new URL(url)
  return (u.protocol === 'redis:' || u.protocol === 'rediss:') && u.hostname !== ''
}

export default definePlugin({
  name: 'sessions',
  stage: 'enrich',
  // Only a miss with `store.redis` set waits (one read); every other event runs synchronously.
  async: true,
  summary: 'Groups events into sessions, writes sessions_v2 rows and gives each event its session id and attribution.',
  drops: {
    no_session_for_engagement: 'an engagement event arrived for a visitor with no live session',
  },
  options: Type.Object(
    {
      timeoutMinutes: Type.Integer({
        minimum: 1,
        default: 30,
        description: 'A session ends when no event arrives for this many minutes.',
      }),
      snapshot: Type.Boolean({
        default: true,
        description:
          'Write the live sessions to <stateDir>/sessions/snapshot.ndjson at shutdown and continue them at the next start, so a restart does not cut visits in two.',
      }),
      maxSessions: Type.Integer({
        minimum: 1,
        default: 1_000_000,
        description:
          'Live sessions kept in memory (about 250 bytes each); past it the longest idle are forgotten first.',
      }),
      store: Type.Optional(
        Type.Object(
          {
            redis: Type.String({
              default: 'redis://localhost:6379',
              description:
                "Redis server holding the copy of record of every engine's sessions; `redis://[:password@]host:port[/db]`.",
            }),
            keyPrefix: Type.String({
              default: 'analytics:',
              pattern: '^[!-~]*$',
              description: 'Prefix of the session keys (`<prefix>s:<site>:<user_id>`).',
            }),
            flushMs: Type.Integer({
              minimum: 1,
              maximum: 1000,
              default: 20,
              description:
                "Changed sessions are written behind in one batch per interval; an engine that dies loses at most this much of its sessions' changes.",
            }),
            readTimeoutMs: Type.Integer({
              minimum: 5,
              default: 75,
              description:
                'A visitor unknown to this engine is looked up in Redis once; an answer later than this starts a new session.',
            }),
            writeTimeoutMs: Type.Integer({
              minimum: 10,
              default: 1000,
              description: 'A batch of writes unanswered this long counts Redis as away until it answers a probe.',
            }),
            guard: Type.Union([Type.Literal('late'), Type.Literal('always'), Type.Literal('never')], {
              default: 'late',
              description:
                'Which writes go through the script that keeps a newer stored state: `late` ones (held back by an outage, when visitors may have moved to other engines), `always` (about 3 times the Redis CPU of SET PX), or `never`.',
            }),
          },
          {
            additionalProperties: false,
            description:
              'Copy of record of the sessions in Redis, so that a visitor moved to another engine (restart, scaling) continues its session. Writes are batched behind the events; only a visitor unknown here waits for one read.',
          },
        ),
      ),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    const timeoutSeconds = options.timeoutMinutes * 60
    const store: SessionStore = new MemorySessionStore(timeoutSeconds, options.maxSessions)
    // A tool's engine (explain, replay) neither takes the server's snapshot nor leaves one.
    const snapshotFile =
      options.snapshot && !engine.transient
        ? join(engine.perWorker(join(engine.stateDir, 'sessions')), 'snapshot.ndjson')
        : undefined
    if (snapshotFile) {
      const { restored, skipped } = restoreSnapshot(snapshotFile, store, Date.now() / 1000, timeoutSeconds)
      if (restored + skipped > 0) {
        engine.logger.info('Sessions of the previous run restored.', { plugin: 'sessions', restored, expired: skipped })
      }
    }
    const pagePool = new StringPool(PAGE_POOL_LIMIT)
    const pages = pagePool.intern
    const attributions = new AttributionPool(ATTRIBUTION_POOL_LIMIT)
    // Sessions expire on the wall clock too (store.ts `expire`), so an engine left without traffic
    // forgets them; one unref'd interval for the plugin, nothing per event. A tool's engine (replay,
    // explain) keeps to event time alone, so that what it makes does not depend on how fast it runs.
    const expiry = engine.transient
      ? undefined
      : setInterval(() => {
          store.expire(Date.now() / 1000)
          shrinkPools(store.size, pagePool, attributions)
        }, expiryIntervalMs(timeoutSeconds))
    expiry?.unref?.()
    const ids = new SessionIds()
    const url = options.store?.redis ?? ''
    if (options.store && !isRedisUrl(url)) {
      throw new ConfigError('store.redis', `not a redis:// or rediss:// URL: ${withoutCredentials(url)}`)
    }
    const remote = options.store
      ? new RedisCopy({
          redis: connectRedis(url, 'store.redis', options.store.writeTimeoutMs),
          keyPrefix: options.store.keyPrefix,
          flushMs: options.store.flushMs,
          readTimeoutMs: options.store.readTimeoutMs,
          writeTimeoutMs: options.store.writeTimeoutMs,
          ttlMs: timeoutSeconds * 1000,
          guard: options.store.guard,
          logger: engine.logger,
        })
      : undefined
    if (remote) {
      const stats = remote.stats
      const series: [keyof typeof stats, string][] = [
        ['written', "Session states written to Redis (the sessions' copy of record)."],
        ['refused', 'Late session states Redis refused because it held a newer one (stale owner).'],
        ['dropped', 'Session states not written because Redis was away or the backlog was full.'],
        ['reads', 'Reads of Redis on a local miss.'],
        ['found', 'Local misses that found the session in Redis (an owner change).'],
        ['unanswered', 'Local misses Redis did not answer in time: a new session was started.'],
      ]
      for (const [key, help] of series) {
        engine.metric(`analytics_sessions_redis_${key}_total`, 'counter', help, () => stats[key])
      }
    }

    const live = (s: Session | undefined, time: number) =>
      s !== undefined && isLive(s, time, timeoutSeconds) ? s : undefined

    /**
     * The live session this event belongs to, re-keyed under the event's current id when it was
     * found under the previous salt's id (so later events find it directly). Keeps its user_id.
     */
    const findSession = (event: AnalyticsEvent, space: KeySpace, id: bigint): Session | undefined => {
      const site = event.site_id
      const time = event.timestamp
      const stored = store.get(space, site, id)
      const found = live(stored, time)
      if (found !== undefined || space === 'client') return found
      if (stored !== undefined && time < stored.start) {
        // Back-filled (a trusted sender's past timestamp), older than the visitor's stored session:
        // it goes to a session of its own time, kept apart so the stored one stays as it is.
        pastSpace = true
        return live(store.get('past', site, id), time)
      }
      const previous = event.previousUserId
      if (previous === 0n || previous === id) return undefined
      const rotated = live(store.get('user', site, previous), time)
      if (rotated !== undefined) store.delete('user', site, previous)
      return rotated
    }

    // Set by findSession when the event belongs in the `past` key space.
    let pastSpace = false

    const runLocal = (event: AnalyticsEvent, ctx: PluginContext): RunResult => {
      const time = event.timestamp
      store.sweep(time)
      // A dialect that sends its own session ids (Lynkow) has set session_id already: the
      // client's session is then the session, and the engine's own grouping by user steps aside.
      const preset = event.session_id !== 0n
      const id = preset ? event.session_id : event.user_id
      pastSpace = false
      // Without any id (no user-id plugin ran) nothing can be continued, as in Plausible, where a
      // nil user_id finds no session: every event starts its own and none is kept.
      const session = id === 0n ? undefined : findSession(event, preset ? 'client' : 'user', id)
      const space: KeySpace = preset ? 'client' : pastSpace ? 'past' : 'user'

      if (event.name === 'engagement') {
        if (session === undefined) return ctx.drop('no_session_for_engagement')
        touchSession(session, event)
        store.put(space, event.site_id, id, session)
        if (remote !== undefined && space !== 'past') remote.mark(space, id, session)
        putSessionOnEvent(session, event)
        return undefined
      }

      let current: Session
      if (session !== undefined) {
        const before = sessionRow(session, -1)
        updateSession(session, event, pages)
        event.sessionRows = [before, sessionRow(session, 1)]
        current = session
      } else {
        current = startSession(event, preset ? id : ids.take(), attributions.of(event), pages)
        event.sessionRows = [sessionRow(current, 1)]
      }
      if (id !== 0n) {
        store.put(space, event.site_id, id, current)
        if (remote !== undefined && space !== 'past') remote.mark(space, id, current)
      }
      putSessionOnEvent(current, event)
      return undefined
    }

    /** Whether this engine holds a live session for the event's key (or the previous salt's). */
    const knownHere = (event: AnalyticsEvent, space: RemoteSpace, id: bigint): boolean => {
      const time = event.timestamp
      if (live(store.get(space, event.site_id, id), time) !== undefined) return true
      const previous = event.previousUserId
      return (
        space === 'user' &&
        previous !== 0n &&
        previous !== id &&
        live(store.get('user', event.site_id, previous), time) !== undefined
      )
    }

    /** Takes a session found in Redis unless this engine holds one at least as new under that key. */
    const adopt = (space: RemoteSpace, siteId: number, id: bigint, value: string | null | undefined) => {
      if (typeof value !== 'string') return
      const found = decodeState(value, pages)
      if (found === undefined || found.siteId !== siteId) return
      const here = store.get(space, siteId, id)
      if (
        here !== undefined &&
        (here.lastSeen > found.lastSeen || (here.lastSeen === found.lastSeen && here.events >= found.events))
      )
        return
      store.put(space, siteId, id, found)
    }

    // Keys whose events wait behind a read (a miss), with the promise of the last of them: the
    // events of one visitor are applied in arrival order, never interleaved.
    const waiting = new Map<string, Promise<RunResult>>()
    const enqueue = (key: string, work: Promise<RunResult>): Promise<RunResult> => {
      waiting.set(key, work)
      const done = () => {
        if (waiting.get(key) === work) waiting.delete(key)
      }
      work.then(done, done)
      return work
    }

    return {
      run(event, ctx) {
        if (remote === undefined) return runLocal(event, ctx)
        const preset = event.session_id !== 0n
        const id = preset ? event.session_id : event.user_id
        if (id === 0n) return runLocal(event, ctx)
        const space: RemoteSpace = preset ? 'client' : 'user'
        const site = event.site_id
        let key: string | undefined
        if (waiting.size > 0) {
          key = remote.key(space, site, id)
          const before = waiting.get(key)
          if (before !== undefined) {
            const next = () => runLocal(event, ctx)
            return enqueue(key, before.then(next, next))
          }
        }
        // The hit path: everything in memory, synchronous; the write goes out with the next batch.
        if (knownHere(event, space, id)) return runLocal(event, ctx)
        if (!remote.reachable) {
          remote.skipRead()
          return runLocal(event, ctx)
        }
        key ??= remote.key(space, site, id)
        const previous = event.previousUserId
        const rotated = space === 'user' && previous !== 0n && previous !== id
        const keys = rotated ? [key, remote.key('user', site, previous)] : [key]
        return enqueue(
          key,
          remote.read(keys).then((values) => {
            if (values !== undefined) {
              adopt(space, site, id, values[0])
              if (rotated) adopt('user', site, previous, values[1])
            }
            return runLocal(event, ctx)
          }),
        )
      },
      async close() {
        clearInterval(expiry)
        await remote?.close()
        if (snapshotFile) {
          try {
            const saved = writeSnapshot(snapshotFile, store, Date.now() / 1000, timeoutSeconds)
            engine.logger.info('Live sessions saved for the next start.', { plugin: 'sessions', sessions: saved })
          } catch (error) {
            engine.logger.error('Live sessions could not be saved; the next start begins new ones.', {
              plugin: 'sessions',
              error: (error as Error).message,
            })
          }
        }
        store.clear()
      },
    }
  },
})
