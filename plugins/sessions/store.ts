// Where live sessions are kept (spec/plausible-dialect.md §9; research/scale-out.md §1.1 on
// Plausible's node-local session cache).
//
// The interface is what a shared store (Redis, for several engine processes) would implement with
// promises; the in-memory store below is synchronous so that the plugin stays synchronous with it.

import type { Session } from './session.ts'

/**
 * Sessions are found by (site, user_id), or by (site, session_id) for dialects that send their own
 * session ids (Lynkow). The two spaces are kept apart so neither kind of id can land on the other.
 * `past` holds, by (site, user_id), the session of back-filled events older than the visitor's
 * session in `user`, so that a back-fill neither joins nor displaces the live session.
 */
export type KeySpace = 'user' | 'client' | 'past'

export interface SessionStore {
  /** The session stored under the key, live or not (the caller checks the timeout). */
  get(space: KeySpace, siteId: number, id: bigint): Session | undefined
  /** Stores a session, or writes it back after a change. */
  put(space: KeySpace, siteId: number, id: bigint, session: Session): void
  delete(space: KeySpace, siteId: number, id: bigint): void
  /**
   * Called with the event time (seconds) before each event: lets the store forget sessions idle
   * for longer than the timeout. It may keep them a while longer; it must not forget live ones.
   */
  sweep(now: number): void
  /**
   * Called now and then with the wall clock (seconds) when no event may come for a long time: lets
   * the store forget sessions that no event can continue any more. Returns how many it forgot.
   */
  expire(wallNow: number): number
  /** Sessions held, expired ones not yet forgotten included. */
  readonly size: number
  clear(): void
  /** Every session held with its key (for the snapshot at shutdown). */
  entries(): Iterable<[KeySpace, number, bigint, Session]>
}

type Generation = Map<number, Map<bigint, Session>>

function newGeneration(): Record<KeySpace, Generation> {
  return { user: new Map(), client: new Map(), past: new Map() }
}

/**
 * Two generations of per-site maps. New and re-found sessions go into the current generation;
 * once per timeout period (in event time) the previous generation is dropped whole and the current
 * one becomes previous. A session therefore outlives its last event by one to two timeouts, so a
 * live session is never forgotten, and eviction costs nothing per event: an update changes the
 * session object in place, with no map write, no reordering and no scan.
 *
 * Without events the event clock stops, so `expire` turns the generations by the wall clock too: a
 * session is then forgotten once it has been untouched for a timeout of wall time AND the newest
 * event time seen before that is more than a timeout old. The second condition keeps live traffic
 * whose event times run ahead of the wall clock; the first keeps a back-fill under way (event times
 * days old, each visitor's next event arriving seconds later), exactly as live traffic turning the
 * generations by event time already does.
 *
 * Past `maxSessions`, the sessions idle the longest are forgotten one by one (first those of the
 * previous generation, in the order they were stored), even if still live: a flood of new visitors
 * then costs some live sessions, but memory stays bounded.
 */
export class MemorySessionStore implements SessionStore {
  private current = newGeneration()
  private previous = newGeneration()
  private currentCount = 0
  private previousCount = 0
  private nextTurnAt = Number.NEGATIVE_INFINITY
  /** The latest event time seen by `sweep`. */
  private clock = Number.NEGATIVE_INFINITY
  // The last session `get` found in the current generation, and its key: writing it back under the
  // same key is then a no-op that needs no second hash lookup (a third of the cost of an update).
  private lastSpace: KeySpace = 'user'
  private lastSite = 0
  private lastId = 0n
  private lastSession: Session | undefined = undefined
  /** Wall time (seconds) of the last turn, or of the start. */
  private turnedAt: number
  /** The event clock at the last turn: no session of the previous generation was seen later. */
  private clockAtTurn = Number.NEGATIVE_INFINITY

  constructor(
    private readonly timeoutSeconds: number,
    private readonly maxSessions: number,
    private readonly wallClock: () => number = () => Date.now() / 1000,
  ) {
    this.turnedAt = wallClock()
  }

  get size(): number {
    return this.currentCount + this.previousCount
  }

  get(space: KeySpace, siteId: number, id: bigint): Session | undefined {
    let session = this.current[space].get(siteId)?.get(id)
    if (session === undefined) {
      const older = this.previous[space].get(siteId)
      session = older?.get(id)
      if (session === undefined) return undefined
      // Promoted, so that only sessions untouched for a whole period are left to be dropped.
      older!.delete(id)
      this.previousCount--
      // Not remembered below: storing it may have turned the generations (maxSessions).
      this.setCurrent(space, siteId, id, session)
      return session
    }
    this.lastSpace = space
    this.lastSite = siteId
    this.lastId = id
    this.lastSession = session
    return session
  }

  put(space: KeySpace, siteId: number, id: bigint, session: Session): void {
    // Sessions are mutated in place, so writing back the one just found changes nothing.
    if (session === this.lastSession && id === this.lastId && siteId === this.lastSite && space === this.lastSpace)
      return
    this.setCurrent(space, siteId, id, session)
  }

  delete(space: KeySpace, siteId: number, id: bigint): void {
    this.lastSession = undefined
    if (this.current[space].get(siteId)?.delete(id)) this.currentCount--
    if (this.previous[space].get(siteId)?.delete(id)) this.previousCount--
  }

  sweep(now: number): void {
    // A time that is not finite would stop the clock (or turn on every event); such an event
    // still gets its session, only the clock ignores it.
    if (!Number.isFinite(now)) return
    if (now > this.clock) this.clock = now
    // Strictly after: a session last seen exactly one timeout ago is still live (§9 "within").
    if (now <= this.nextTurnAt) return
    // The first call only starts the clock: turning then would just drop an empty generation.
    if (this.nextTurnAt === Number.NEGATIVE_INFINITY) this.nextTurnAt = now + this.timeoutSeconds
    else this.turn()
  }

  expire(wallNow: number): number {
    if (this.size === 0) return 0
    // Both inequalities strict like sweep's: a session last seen exactly a timeout ago is live.
    if (wallNow - this.turnedAt <= this.timeoutSeconds || wallNow - this.clockAtTurn <= this.timeoutSeconds) return 0
    const before = this.size
    this.turn()
    // The current generation is now previous; when nothing was touched since the turn before
    // either, the next expiry (a timeout later) drops it.
    return before - this.size
  }

  *entries(): Iterable<[KeySpace, number, bigint, Session]> {
    for (const generation of [this.previous, this.current]) {
      for (const space of ['user', 'client', 'past'] as const) {
        for (const [siteId, sessions] of generation[space]) {
          for (const [id, session] of sessions) yield [space, siteId, id, session]
        }
      }
    }
  }

  clear(): void {
    this.lastSession = undefined
    this.current = newGeneration()
    this.previous = newGeneration()
    this.currentCount = 0
    this.previousCount = 0
  }

  // Every turn, early ones included, restarts the period: what becomes previous now may have been
  // touched a moment ago and must get a whole timeout before it is dropped.
  private turn(): void {
    this.nextTurnAt = this.clock + this.timeoutSeconds
    this.turnedAt = this.wallClock()
    this.clockAtTurn = this.clock
    this.lastSession = undefined
    this.previous = this.current
    this.previousCount = this.currentCount
    this.current = newGeneration()
    this.currentCount = 0
  }

  private setCurrent(space: KeySpace, siteId: number, id: bigint, session: Session): void {
    const sites = this.current[space]
    let sessions = sites.get(siteId)
    if (sessions === undefined) {
      sessions = new Map()
      sites.set(siteId, sessions)
    }
    const before = sessions.size
    sessions.set(id, session)
    if (sessions.size === before) return
    this.currentCount++
    while (this.currentCount + this.previousCount > this.maxSessions) this.evictOldest()
  }

  // Maps keep insertion order, so the first entry of the previous generation is among the sessions
  // idle the longest. Empty site maps met on the way are dropped, so this is O(1) amortised.
  private evictOldest(): void {
    if (this.previousCount === 0) this.turn()
    for (const space of ['user', 'client', 'past'] as const) {
      const sites = this.previous[space]
      for (const [siteId, sessions] of sites) {
        for (const id of sessions.keys()) {
          sessions.delete(id)
          this.previousCount--
          if (sessions.size === 0) sites.delete(siteId)
          return
        }
        sites.delete(siteId)
      }
    }
  }
}
