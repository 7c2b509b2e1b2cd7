// A bounded memo for the identify and classify plugins (design.md: "user agents (parsed, cached)").
//
// Two generations instead of a true LRU: a hit in the young map costs one Map lookup and no
// reordering; when the young map is full it becomes the old one and the previous old one is dropped.
// Entries used in the last generation survive by being copied forward on their next hit, so hot keys
// stay and a flood of one-off keys (random user agents, say) can never grow memory past `capacity`.
//
// Every cache also turns a generation once a minute whatever its size (issue #6: memory back near the
// start once traffic stops). Under load that changes nothing (the young map fills and turns sooner);
// an engine left without traffic forgets what it cached within two minutes. Measured: 20,000-entry
// caches of user-id, geoip, user-agent and bots held after 200,000 visitors kept some 90 MB of RSS
// (a 10 MB live heap scattered over 70 MB of heap blocks) when every session had expired. One unref'd
// timer serves every cache; nothing is done per lookup.

/** How often every cache turns a generation on the clock, so an idle one empties in two turns. */
export const CACHE_AGE_MS = 60_000

const caches = new Set<WeakRef<BoundedCache<unknown>>>()
let ageing: ReturnType<typeof setInterval> | undefined

/** Turns a generation of every cache (what the minute timer does); exported for tests. */
export function ageCaches(): void {
  for (const ref of caches) {
    const cache = ref.deref()
    if (cache === undefined) caches.delete(ref)
    else cache.age()
  }
  if (caches.size === 0 && ageing !== undefined) {
    clearInterval(ageing)
    ageing = undefined
  }
}

function register(cache: BoundedCache<unknown>): void {
  caches.add(new WeakRef(cache))
  if (ageing === undefined) {
    ageing = setInterval(ageCaches, CACHE_AGE_MS)
    ageing.unref?.()
  }
}

/**
 * A string-keyed cache holding at most `capacity` entries.
 *
 * @example
 * const parsed = new BoundedCache<Parsed>(10_000)
 * let p = parsed.get(ua)
 * if (p === undefined) parsed.set(ua, (p = parse(ua)))
 */
export class BoundedCache<V> {
  private young = new Map<string, V>()
  private old = new Map<string, V>()
  private readonly generation: number

  constructor(capacity: number) {
    this.generation = Math.max(1, Math.ceil(capacity / 2))
    register(this)
  }

  /**
   * Forgets what was not used since the last turn: the young generation becomes the old one. Called
   * on the clock (see CACHE_AGE_MS); entries in use come forward again on their next hit.
   */
  age(): void {
    if (this.young.size === 0 && this.old.size === 0) return
    this.old = this.young
    this.young = new Map()
  }

  get(key: string): V | undefined {
    const hit = this.young.get(key)
    if (hit !== undefined) return hit
    const old = this.old.get(key)
    if (old !== undefined) this.set(key, old)
    return old
  }

  set(key: string, value: V): void {
    if (this.young.size >= this.generation) {
      this.old = this.young
      this.young = new Map()
    }
    this.young.set(key, value)
  }

  get size(): number {
    return this.young.size + this.old.size
  }

  clear(): void {
    this.young = new Map()
    this.old = new Map()
  }
}
