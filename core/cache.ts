// A bounded memo for the identify and classify plugins (design.md: "user agents (parsed, cached)").
//
// Two generations instead of a true LRU: a hit in the young map costs one Map lookup and no
// reordering; when the young map is full it becomes the old one and the previous old one is dropped.
// Entries used in the last generation survive by being copied forward on their next hit, so hot keys
// stay and a flood of one-off keys (random user agents, say) can never grow memory past `capacity`.

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
    this.young.clear()
    this.old.clear()
  }
}
