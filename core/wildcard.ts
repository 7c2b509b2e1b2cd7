// Wildcard rules of the page and hostname shields (spec/plausible-dialect.md §7), shared with shield-hostname.
//
// Plausible compiles a shield pattern by escaping it and turning both `*` and `**` into `.*` inside
// `^…$` (lib/plausible/shield/page_rule.ex, hostname_rule.ex; its tests treat `/test/*` and
// `/test/**` as the same rule). That is the `plausible` mode and the default. The `segments` mode is
// ours: `*` stays inside one segment (no separator), `**` crosses segments.
//
// No regex is built from a pattern: a match is a prefix/suffix/indexOf scan, or for `segments`
// patterns a set-of-states simulation, so the cost is at most input length × pattern length and no
// input can make it backtrack.

export type WildcardMode = 'plausible' | 'segments'

/** Tests one input against a compiled pattern. */
export type Matcher = (input: string) => boolean

const LITERAL = 0
const STAR = 1 // any run of characters except the separator
const ANY = 2 // any run of characters

/**
 * Compiles one pattern.
 *
 * @example
 *   compileWildcard('/admin/*', 'plausible', '/')('/admin/a/b') // true
 *   compileWildcard('/admin/*', 'segments', '/')('/admin/a/b')  // false
 */
export function compileWildcard(pattern: string, mode: WildcardMode, separator: string): Matcher {
  if (!pattern.includes('*')) return (input) => input === pattern

  const kinds: number[] = []
  const chars: string[] = []
  for (let i = 0; i < pattern.length; ) {
    if (pattern[i] !== '*') {
      kinds.push(LITERAL)
      chars.push(pattern[i]!)
      i++
      continue
    }
    let run = 0
    while (pattern[i] === '*') {
      run++
      i++
    }
    const kind = mode === 'segments' && run === 1 ? STAR : ANY
    // Two adjacent wildcards match what the wider one matches.
    const last = kinds.length - 1
    if (last >= 0 && kinds[last] !== LITERAL) kinds[last] = Math.max(kinds[last]!, kind)
    else {
      kinds.push(kind)
      chars.push('')
    }
  }
  if (!kinds.includes(STAR)) return anyStarMatcher(pattern)
  return segmentMatcher(kinds, chars, separator)
}

/** Only `.*`-like wildcards: the literal pieces must appear in order; leftmost placement is optimal. */
function anyStarMatcher(pattern: string): Matcher {
  const pieces = pattern.split(/\*+/)
  const prefix = pieces[0]!
  const suffix = pieces[pieces.length - 1]!
  const middle = pieces.slice(1, -1).filter((p) => p !== '')
  const minLength = pieces.reduce((n, p) => n + p.length, 0)
  return (input) => {
    if (input.length < minLength || !input.startsWith(prefix) || !input.endsWith(suffix)) return false
    const end = input.length - suffix.length
    let at = prefix.length
    for (const piece of middle) {
      const found = input.indexOf(piece, at)
      if (found < 0 || found + piece.length > end) return false
      at = found + piece.length
    }
    return at <= end
  }
}

/** A Thompson-style simulation: every pattern position that can be reached, advanced one character at a time. */
function segmentMatcher(kinds: number[], chars: string[], separator: string): Matcher {
  const size = kinds.length
  // One code per position: the literal's char code, or a negative wildcard kind.
  const codes = new Int32Array(size + 1)
  for (let i = 0; i < size; i++) codes[i] = kinds[i] === LITERAL ? chars[i]!.charCodeAt(0) : -kinds[i]!
  const sep = separator.charCodeAt(0)
  const prefix = chars
    .slice(
      0,
      kinds.findIndex((k) => k !== LITERAL),
    )
    .join('')
  // Allocated once per pattern: a match runs synchronously to its end, so nothing can interleave.
  let current = new Uint8Array(size + 1)
  let next = new Uint8Array(size + 1)
  // Entering a wildcard position also enters the one after it (the wildcard may match nothing);
  // adjacent wildcards were merged at compile time, so one step of closure is enough.
  const enter = (states: Uint8Array, j: number) => {
    states[j] = 1
    if (j < size && codes[j]! < 0) states[j + 1] = 1
  }
  return (input) => {
    if (!input.startsWith(prefix)) return false
    current.fill(0)
    enter(current, 0)
    for (let p = 0; p < input.length; p++) {
      const c = input.charCodeAt(p)
      next.fill(0)
      let alive = false
      for (let i = 0; i < size; i++) {
        if (current[i] === 0) continue
        const code = codes[i]!
        if (code >= 0) {
          if (code === c) {
            enter(next, i + 1)
            alive = true
          }
        } else if (code === -ANY || c !== sep) {
          enter(next, i)
          alive = true
        }
      }
      if (!alive) return false
      const swap = current
      current = next
      next = swap
    }
    return current[size] === 1
  }
}

/** Every rule of one scope (a site plus the engine-wide ones), compiled once. */
export interface RuleSet {
  readonly empty: boolean
  matches(input: string): boolean
}

/** Exact rules go into a Set; wildcard rules are tried in order after it. */
export function compileRuleSet(patterns: readonly string[], mode: WildcardMode, separator: string): RuleSet {
  const exact = new Set<string>()
  const wildcards: Matcher[] = []
  for (const pattern of new Set(patterns)) {
    if (pattern.includes('*')) wildcards.push(compileWildcard(pattern, mode, separator))
    else exact.add(pattern)
  }
  return {
    empty: exact.size === 0 && wildcards.length === 0,
    matches(input) {
      if (exact.has(input)) return true
      for (const matcher of wildcards) if (matcher(input)) return true
      return false
    },
  }
}

/**
 * A site's rule list compiled once and kept as long as the list lives. Keyed by the list, not the
 * Site: every site derived under `sites: any` shares one empty list, so a flood of domains compiles
 * nothing new, and a reload (new Site objects, new lists) recompiles on first use.
 */
export function ruleSetCache(compile: (list: readonly string[]) => RuleSet): (list: readonly string[]) => RuleSet {
  const compiled = new WeakMap<readonly string[], RuleSet>()
  return (list) => {
    let rules = compiled.get(list)
    if (!rules) {
      rules = compile(list)
      compiled.set(list, rules)
    }
    return rules
  }
}
