// Implements spec/plausible-dialect.md §9 (sessions, salt rotation) and §5 (engagement events need a session).
//
// Runs last in `enrich`: it freezes the attribution that `referrer`, `geoip`, `user-agent` and
// `user-id` put on the session's first event, and copies it onto every later event of the session.

import { join } from 'node:path'
import { Type } from '@sinclair/typebox'
import type { AnalyticsEvent } from '../../core/event.ts'
import { definePlugin } from '../../core/plugin.ts'
import { AttributionPool, StringPool } from './intern.ts'
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

export default definePlugin({
  name: 'sessions',
  stage: 'enrich',
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
          'Live sessions kept in memory (about 300 bytes each); past it the longest idle are forgotten first.',
      }),
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
    const pages = new StringPool(PAGE_POOL_LIMIT).intern
    const attributions = new AttributionPool(ATTRIBUTION_POOL_LIMIT)
    const ids = new SessionIds()

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

    return {
      run(event, ctx) {
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
        if (id !== 0n) store.put(space, event.site_id, id, current)
        putSessionOnEvent(current, event)
        return undefined
      },
      close() {
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
