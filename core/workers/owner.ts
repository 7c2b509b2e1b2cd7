// Which worker owns a client IP (research/scale-out.md §3.2): rendezvous (highest-random-weight)
// hashing over the fixed set of worker indices 0 … count - 1. Every worker computes the same owner
// without talking to the others; a worker that restarts keeps its index, hence its visitors.

/** FNV-1a over the UTF-16 code units: an address is ASCII, so these are its bytes. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** MurmurHash3's finaliser: spreads every input bit over the output. */
function mix(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The owning worker of `clientIp` among `count` workers. */
export function ownerOf(clientIp: string, count: number): number {
  if (count <= 1) return 0
  const h = fnv1a(clientIp)
  let best = 0
  let bestScore = -1
  for (let i = 0; i < count; i++) {
    const score = mix(h ^ Math.imul(i + 1, 0x9e3779b9))
    if (score > bestScore) {
      bestScore = score
      best = i
    }
  }
  return best
}
