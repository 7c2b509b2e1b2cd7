// The source tables and the referrer → source lookup (spec/plausible-dialect.md §8, referrer_source and Data tables).
//
// Three tables, all read once from ./data at setup (see data/README.md for their origin):
// - the referrer database (Snowplow's referers.yml plus Plausible's additions): matched on the referrer
//   host or a parent domain of it, plus an optional path prefix, the longest host+path winning;
// - the alias table: Plausible's custom sources (exact hosts and tag shorthands like `fb`, `ig`) and the
//   database's own names, all keyed lower-case, so a tag or a database name maps to one spelling;
// - the source categories (GA4's list plus Plausible's additions), used by the channel rules.

import { readFileSync } from 'node:fs'

export type Category = 'search' | 'social' | 'video' | 'shopping' | 'email' | 'ai'

/** One domain line of the referrer database. */
interface RefererEntry {
  /** Path prefix the referrer path must equal, or start with once a `/` is added. */
  path: string
  pathWithSlash: string
  /** Length of `.host` + `pathWithSlash`: upstream tries longer entries first. */
  weight: number
  /** The database name (`Google`, `Gmail`, …). */
  name: string
  /** File order, to make ties deterministic. */
  order: number
}

export interface SourceTables {
  /** Lower-cased tag, host or name → the stored source name. */
  aliases: Map<string, string>
  /** Referrer database: host → its entries. */
  referers: Map<string, RefererEntry[]>
  /** Lower-cased tagged sources that mean paid traffic whatever the medium. */
  paidSources: Set<string>
  /** Lower-cased source name → category. */
  categories: Map<string, Category>
}

export interface TableOptions {
  customSources: Record<string, string>
  sourceCategories: Record<string, Category>
}

interface RefererFile {
  tlds: Record<string, string[]>
  media: Record<string, Record<string, string[]>>
}

interface AdditionsFile {
  customSources: Record<string, string>
  referers: Record<string, string[]>
}

interface CategoryFile {
  plausible: Record<string, string>
  ga4: Record<string, string[]>
}

const CATEGORY_NAMES: Record<string, Category> = {
  SOURCE_CATEGORY_SEARCH: 'search',
  SOURCE_CATEGORY_SOCIAL: 'social',
  SOURCE_CATEGORY_VIDEO: 'video',
  SOURCE_CATEGORY_SHOPPING: 'shopping',
  SOURCE_CATEGORY_EMAIL: 'email',
  SOURCE_CATEGORY_AI_ASSISTANTS: 'ai',
}

function readData<T>(file: string): T {
  return JSON.parse(readFileSync(new URL(`./data/${file}`, import.meta.url), 'utf8')) as T
}

/** Builds every table from the shipped data files and the plugin's options. */
export function loadSourceTables(options: TableOptions): SourceTables {
  const refererFile = readData<RefererFile>('referers.json')
  const additions = readData<AdditionsFile>('plausible-additions.json')
  const customSources = readData<Record<string, string>>('custom-sources.json')
  const categoryFile = readData<CategoryFile>('source-categories.json')

  const referers = new Map<string, RefererEntry[]>()
  const aliases = new Map<string, string>()
  let order = 0
  const addDomains = (name: string, domains: string[]) => {
    // Database names map to themselves case-insensitively. Upstream lets an arbitrary one win when two
    // names differ only in case (`QIP` and `qip`); we keep the first in file order.
    const lower = name.toLowerCase()
    if (!aliases.has(lower)) aliases.set(lower, name)
    for (const pattern of domains) {
      for (const domain of expandTlds(pattern, refererFile.tlds)) addReferer(referers, domain, name, order++)
    }
  }
  for (const sources of Object.values(refererFile.media)) {
    for (const [name, domains] of Object.entries(sources)) addDomains(name, domains)
  }
  for (const [name, domains] of Object.entries(additions.referers)) addDomains(name, domains)
  for (const entries of referers.values()) entries.sort((a, b) => b.weight - a.weight || a.order - b.order)

  // Custom sources override database names: each key and each value's lower-case form map to the value.
  const customKeys: string[] = []
  for (const table of [customSources, additions.customSources, options.customSources]) {
    for (const [key, value] of Object.entries(table)) {
      const lowerKey = key.toLowerCase()
      customKeys.push(lowerKey)
      aliases.set(lowerKey, value)
      aliases.set(value.toLowerCase(), value)
    }
  }
  const paidSources = new Set<string>(['adwords'])
  for (const key of customKeys) if (key.endsWith('ads') || key.endsWith('ad')) paidSources.add(key)

  // Plausible's own categories first, GA4's list after (it wins on a clash, as upstream merges it last),
  // then the operator's.
  const categories = new Map<string, Category>()
  for (const [source, category] of Object.entries(categoryFile.plausible)) {
    const c = CATEGORY_NAMES[category]
    if (c) categories.set(source, c)
  }
  for (const [category, sources] of Object.entries(categoryFile.ga4)) {
    const c = CATEGORY_NAMES[category]
    if (c) for (const source of sources) categories.set(source, c)
  }
  for (const [source, category] of Object.entries(options.sourceCategories)) {
    categories.set(source.toLowerCase(), category)
  }

  return { aliases, referers, paidSources, categories }
}

/** Expands `{list}` in a domain pattern with every suffix of that TLD list (`google.{google}`). */
function expandTlds(pattern: string, tlds: Record<string, string[]>): string[] {
  const open = pattern.indexOf('{')
  if (open < 0) return [pattern]
  const close = pattern.indexOf('}', open)
  const list = tlds[pattern.slice(open + 1, close)]
  if (!list) throw new Error(`referrer data: unknown TLD list in ${pattern}`)
  const head = pattern.slice(0, open)
  const tail = pattern.slice(close + 1)
  return list.map((tld) => head + tld + tail)
}

function addReferer(referers: Map<string, RefererEntry[]>, domain: string, name: string, order: number): void {
  // A database line is `host` or `host/path`, read as if it were `http://` + line.
  const slash = domain.indexOf('/')
  const host = slash < 0 ? domain : domain.slice(0, slash)
  const path = slash < 0 ? '/' : domain.slice(slash)
  const pathWithSlash = `${path.replace(/\/+$/, '')}/`
  const entry: RefererEntry = { path, pathWithSlash, weight: host.length + 1 + pathWithSlash.length, name, order }
  const list = referers.get(host)
  if (list) list.push(entry)
  else referers.set(host, [entry])
}

/** What one referrer host resolves to; `fixed` when the path cannot change the answer. */
interface HostSource {
  fixed: string | undefined
  /** Path-dependent candidates, longest first, with their final (aliased) names. */
  candidates: { path: string; pathWithSlash: string; source: string }[]
  /** The answer when no candidate's path matches: the host itself. */
  fallback: string
}

const NO_CANDIDATES: HostSource['candidates'] = []

/**
 * Resolves `referrer_source`, caching per referrer host (bounded, oldest entry evicted first).
 *
 * @example new SourceResolver(tables, 1000).fromReferrer(false, 'www.google.com', '/search') // 'Google'
 */
export class SourceResolver {
  private readonly cache = new Map<string, HostSource>()

  constructor(
    private readonly tables: SourceTables,
    private readonly cacheSize: number,
  ) {}

  /** A tagged source (`utm_source`, `source`, `ref`) mapped through the alias table; unmapped keeps its case. */
  tagged(value: string): string {
    return this.tables.aliases.get(value.toLowerCase()) ?? value
  }

  /**
   * The source of a valid external referrer: its exact host in the alias table, else the referrer
   * database on the host and its parent domains (name then aliased), else the host without `www.`.
   */
  fromReferrer(androidApp: boolean, host: string, path: string): string {
    const key = androidApp ? `android-app://${host}` : host
    let info = this.cache.get(key)
    if (info === undefined) {
      info = this.compute(androidApp, host)
      if (this.cacheSize > 0) {
        if (this.cache.size >= this.cacheSize) {
          const oldest = this.cache.keys().next()
          if (!oldest.done) this.cache.delete(oldest.value)
        }
        this.cache.set(key, info)
      }
    }
    if (info.fixed !== undefined) return info.fixed
    const refPath = path === '' ? '/' : path
    for (const c of info.candidates) {
      if (refPath === c.path || refPath.startsWith(c.pathWithSlash)) return c.source
    }
    return info.fallback
  }

  private compute(androidApp: boolean, host: string): HostSource {
    // Upstream trims the referrer before taking this host, so trailing blanks never reach the name.
    const bare = host.trimEnd()
    const formatted = (androidApp ? 'android-app://' : '') + (bare.startsWith('www.') ? bare.slice(4) : bare)
    const exact = this.tables.aliases.get(formatted.toLowerCase())
    if (exact !== undefined) return { fixed: exact, candidates: NO_CANDIDATES, fallback: formatted }

    const found: RefererEntry[] = []
    // The database matches the host itself or any parent domain (`a.b.c` → `a.b.c`, `b.c`, `c`).
    for (let from = 0; from >= 0; ) {
      const entries = this.tables.referers.get(from === 0 ? host : host.slice(from))
      if (entries) for (const e of entries) found.push(e)
      const dot = host.indexOf('.', from)
      from = dot < 0 ? -1 : dot + 1
    }
    if (found.length === 0) return { fixed: formatted, candidates: NO_CANDIDATES, fallback: formatted }
    found.sort((a, b) => b.weight - a.weight || a.order - b.order)
    const top = found[0]!
    // A `/` entry matches every path, so when the longest candidate has one, the path cannot matter.
    if (top.path === '/') return { fixed: this.tagged(top.name), candidates: NO_CANDIDATES, fallback: formatted }
    const candidates: HostSource['candidates'] = []
    for (const e of found) {
      candidates.push({ path: e.path, pathWithSlash: e.pathWithSlash, source: this.tagged(e.name) })
      if (e.path === '/') break
    }
    return { fixed: undefined, candidates, fallback: formatted }
  }
}
