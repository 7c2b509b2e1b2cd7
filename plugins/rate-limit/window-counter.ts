// Per-key event counters over fixed or sliding windows, with a hard cap on the number of keys
// (spec/plausible-dialect.md §7 `throttle`; spec/lynkow-dialect.md "Rate limit").
//
// Fixed windows are Plausible's (Hammer buckets: `div(now, scale)`, the first N events of a bucket
// pass). Sliding windows use the two-bucket estimate: the previous window's count weighted by how
// much of it still overlaps the last `window` milliseconds, plus the current count. Exact sliding
// logs would keep one timestamp per event; this keeps three numbers per key.

export type WindowMode = 'fixed' | 'sliding'

interface Entry {
  /** Index of the window `count` belongs to: floor(now / windowMs). */
  window: number
  count: number
  /** The count of window `window - 1`, for the sliding estimate. */
  previous: number
}

export class WindowCounter<K> {
  // Map order doubles as age order: an entry moves to the back when its window rolls over, so the
  // front holds the keys that have been quiet longest and eviction takes them first.
  private readonly entries = new Map<K, Entry>()

  constructor(
    private readonly mode: WindowMode,
    private readonly maxKeys: number,
  ) {}

  /** Keys currently tracked (never more than `maxKeys`). */
  get size(): number {
    return this.entries.size
  }

  /**
   * Whether one more event for `key` fits in `limit` per `windowMs` at time `now` (milliseconds).
   * Does not count it: call `take` once the event is accepted, so a dropped event spends no budget.
   */
  allows(key: K, limit: number, windowMs: number, now: number): boolean {
    const entry = this.current(key, windowMs, now)
    if (!entry) return limit > 0
    if (this.mode === 'fixed') return entry.count < limit
    const elapsed = (now - entry.window * windowMs) / windowMs
    const overlap = elapsed >= 1 || elapsed < 0 ? 0 : 1 - elapsed
    return entry.previous * overlap + entry.count < limit
  }

  /** Counts one accepted event for `key`. */
  take(key: K, windowMs: number, now: number): void {
    let entry = this.current(key, windowMs, now)
    if (!entry) {
      if (this.entries.size >= this.maxKeys) this.evictOldest()
      entry = { window: Math.floor(now / windowMs), count: 0, previous: 0 }
      this.entries.set(key, entry)
    }
    entry.count++
  }

  /** The key's entry rolled forward to the window of `now`; undefined when the key is untracked. */
  private current(key: K, windowMs: number, now: number): Entry | undefined {
    const entry = this.entries.get(key)
    if (!entry) return undefined
    const window = Math.floor(now / windowMs)
    // A clock that steps back keeps counting into the newer window instead of resetting it.
    if (window > entry.window) {
      entry.previous = window === entry.window + 1 ? entry.count : 0
      entry.count = 0
      entry.window = window
      this.entries.delete(key)
      this.entries.set(key, entry)
    }
    return entry
  }

  private evictOldest(): void {
    const oldest = this.entries.keys().next()
    if (!oldest.done) this.entries.delete(oldest.value)
  }
}
