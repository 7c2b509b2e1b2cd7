// Site counters shared by every engine through Redis (issue "scale out": "rate-limit counters (synced
// in short intervals, failing open and counted when Redis is down)").
//
// The verdict stays synchronous and local: an engine allows an event while the site's last known
// total (every engine's events in the window, as Redis had it at the last sync) plus its own events
// since then stays under the limit. Every `syncMs` it adds its new events to the window's key with
// INCRBY and learns the total from the answer (or GETs it when it had none). So the total can pass
// the limit by what the other engines accepted within one sync interval, and never by more. When
// Redis does not answer, each engine goes on with what it knows (its own counts still bind it: no
// engine alone passes the limit) and says so; the failed syncs are counted.

import type { Logger } from '../../core/logger.ts'
import { type RedisCommands, within } from '../../core/redis.ts'

interface Entry {
  window: number
  windowMs: number
  /** The window's total over all engines at the last sync (this engine's synced events included). */
  synced: number
  /** This engine's events sent in the sync under way (still counted here until Redis answers). */
  inflight: number
  /** This engine's events since the last sync. */
  unsynced: number
  /** When `synced` was learnt, and how fast the other engines' events came in before (per ms). */
  syncedAt: number
  othersRate: number
  /**
   * The command of the last sync while the client has not settled it (true: answered). A command
   * that timed out may still reach Redis: a partition holds it in the socket and the client sends it
   * when the link heals. Until it settles its events stay in flight and no other command of this key
   * goes out, so no event is ever added twice (measured before: 50 events cut off for 10 s were
   * added ~27 times each once the link healed).
   */
  pending: Promise<boolean> | undefined
}

export interface SharedCountsOptions {
  redis: RedisCommands
  keyPrefix: string
  syncMs: number
  timeoutMs: number
  logger: Logger
}

export class SharedSiteCounts {
  private readonly entries = new Map<number, Entry>()
  private syncing: Promise<void> | undefined
  private readonly timer: ReturnType<typeof setInterval>
  private unreachable = false
  /** Syncs that failed (Redis down or slow): the verdicts then rest on stale totals. */
  failedSyncs = 0
  /** Verdicts given while Redis was unreachable: on this engine's own counts (failing open). */
  decidedAlone = 0

  constructor(private readonly o: SharedCountsOptions) {
    this.timer = setInterval(() => void this.sync(), o.syncMs)
    this.timer.unref?.()
  }

  /**
   * Whether one more event of `site` fits in `limit` per window at `now` (fixed windows): the total
   * at the last sync, this engine's events since, and what the other engines are likely to have
   * accepted since (their rate between the last two syncs), so a steady load stays at the limit.
   */
  allows(site: number, limit: number, windowMs: number, now: number): boolean {
    const entry = this.current(site, windowMs, now)
    if (this.unreachable) this.decidedAlone++
    const others = entry.othersRate * Math.max(0, Date.now() - entry.syncedAt)
    return entry.synced + entry.inflight + entry.unsynced + others < limit
  }

  /** Counts one accepted event of `site`. */
  take(site: number, windowMs: number, now: number): void {
    this.current(site, windowMs, now).unsynced++
  }

  /** Sends this engine's new events and learns the totals; one at a time, never throws. */
  sync(): Promise<void> {
    this.syncing ??= this.syncOnce().finally(() => {
      this.syncing = undefined
    })
    return this.syncing
  }

  async close(): Promise<void> {
    clearInterval(this.timer)
    await this.sync()
    this.o.redis.close()
  }

  private current(site: number, windowMs: number, now: number): Entry {
    const window = Math.floor(now / windowMs)
    let entry = this.entries.get(site)
    if (entry === undefined || window > entry.window || entry.windowMs !== windowMs) {
      // A new window starts from nothing here; the first sync tells what the others already counted.
      entry = {
        window,
        windowMs,
        synced: 0,
        inflight: 0,
        unsynced: 0,
        syncedAt: Date.now(),
        othersRate: 0,
        pending: undefined,
      }
      this.entries.set(site, entry)
    }
    return entry
  }

  private async syncOnce(): Promise<void> {
    const now = Date.now()
    const work: Promise<void>[] = []
    for (const [site, entry] of this.entries) {
      // Windows that ended are not asked about again; their keys expire in Redis.
      if (Math.floor(now / entry.windowMs) > entry.window + 1) {
        this.entries.delete(site)
        continue
      }
      work.push(this.syncEntry(site, entry))
    }
    const results = await Promise.allSettled(work)
    const failure = results.find((r) => r.status === 'rejected')
    if (failure) {
      this.failedSyncs++
      if (!this.unreachable) {
        this.o.logger.error('Redis is not reachable for rate limits; each engine counts alone until it is.', {
          plugin: 'rate-limit',
          error: String((failure as PromiseRejectedResult).reason?.message ?? failure),
        })
      }
      this.unreachable = true
    } else if (this.unreachable) {
      this.unreachable = false
      this.o.logger.info('Redis answers again; rate limits are shared.', { plugin: 'rate-limit' })
    }
  }

  private async syncEntry(site: number, entry: Entry): Promise<void> {
    if (entry.pending !== undefined) {
      // The previous command has not settled: wait for it (no longer than the timeout), send nothing.
      if (!(await within(entry.pending, this.o.timeoutMs))) throw new Error('redis did not take the last count')
      return
    }
    const key = `${this.o.keyPrefix}ratelimit:${site}:${entry.windowMs}:${entry.window}`
    const delta = entry.unsynced
    entry.unsynced = 0
    entry.inflight += delta
    const before = entry.synced
    // Auto-pipelined by the client: every site's commands of one sync go out together.
    const command = delta > 0 ? this.o.redis.send('INCRBY', [key, String(delta)]) : this.o.redis.send('GET', [key])
    const settled = command.then(
      (answer) => {
        entry.inflight -= delta
        if (delta > 0) void this.o.redis.send('PEXPIRE', [key, String(entry.windowMs * 2)]).catch(() => {})
        const total = Number(answer ?? 0)
        // A window that rolled over meanwhile keeps its fresh entry.
        if (this.entries.get(site) === entry && Number.isFinite(total) && total >= entry.synced) {
          const now = Date.now()
          const others = total - before - delta
          const elapsed = now - entry.syncedAt
          if (elapsed > 0) entry.othersRate = Math.max(0, others) / elapsed
          entry.synced = total
          entry.syncedAt = now
        }
      },
      (error: unknown) => {
        // Refused by the client (connection lost before sending): still counted here, sent next time.
        entry.inflight -= delta
        entry.unsynced += delta
        throw error
      },
    )
    entry.pending = settled.then(
      () => true,
      () => false,
    )
    void entry.pending.then(() => {
      entry.pending = undefined
    })
    await within(settled, this.o.timeoutMs)
  }
}
