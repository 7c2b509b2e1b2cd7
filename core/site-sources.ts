// Sites from outside the config (issue #12 item 4): a file, a PostgreSQL query or an HTTP URL returning
// JSON. A source is loaded when the config is resolved (so start-up, `check` and SIGHUP see its sites),
// then refreshed on an interval by the engine; each refresh validates every row like an inline site and
// swaps the whole set at once, or fails as a whole and keeps the last good set.
//
// Secrets live in source URLs and headers: only `describe` (no user info, no query string, no headers)
// is ever logged or shown.

import { readFile } from 'node:fs/promises'
import { extname, resolve } from 'node:path'
import { type Static, Type } from '@sinclair/typebox'
import { parse as parseYaml } from 'yaml'
import type { Logger } from './logger.ts'
import type { ConfigIssue } from './options.ts'
import type { SiteConfig } from './sites.ts'

export const SiteSourceSchema = Type.Object(
  {
    file: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'A YAML or JSON file holding a list of sites, relative to the config file.',
      }),
    ),
    sql: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'A PostgreSQL query returning one row per site; columns named like the site keys (quote camelCase ones: AS "allowLocalhost").',
      }),
    ),
    database: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'The PostgreSQL URL the `sql` query runs on (postgres://user:password@host:5432/db).',
      }),
    ),
    url: Type.Optional(Type.String({ minLength: 1, description: 'An http(s) URL answering a JSON list of sites.' })),
    headers: Type.Optional(
      Type.Record(Type.String({ minLength: 1 }), Type.String(), {
        description: 'Request headers for `url` (an Authorization token, say); never logged.',
      }),
    ),
    refreshSeconds: Type.Optional(
      Type.Integer({
        minimum: 0,
        default: 60,
        description: 'Reload the sites this often (0 = only at start and on SIGHUP).',
      }),
    ),
    timeoutMs: Type.Optional(
      Type.Integer({
        minimum: 100,
        default: 10_000,
        description: 'A load taking longer fails (and the last good set stays).',
      }),
    ),
  },
  { additionalProperties: false },
)

export type SiteSourceOptions = Static<typeof SiteSourceSchema>

/** Checks loaded rows as the config checks inline sites; `at` is the source's description. */
export type SiteValidator = (rows: unknown) => { ok: true; sites: SiteConfig[] } | { ok: false; issues: ConfigIssue[] }

export interface SiteSource {
  readonly kind: 'file' | 'sql' | 'url'
  /** What operators see in logs, `check` and health: no password, query string or header. */
  readonly describe: string
  readonly refreshSeconds: number
  /** Loads and validates the whole set; throws SiteSourceError (with each bad row's path) on any problem. */
  load(): Promise<SiteConfig[]>
}

export class SiteSourceError extends Error {
  constructor(
    readonly source: string,
    readonly issues: ConfigIssue[],
  ) {
    super(`${source}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`)
    this.name = 'SiteSourceError'
  }
}

interface BunSqlClient {
  unsafe(query: string): Promise<Record<string, unknown>[]>
  close(options?: { timeout?: number }): Promise<void>
}
type BunSqlConstructor = new (url: string, options: Record<string, unknown>) => BunSqlClient

/** Bun's built-in PostgreSQL client; undefined on runtimes without it (Deno). */
function bunSql(): BunSqlConstructor | undefined {
  return (globalThis as { Bun?: { SQL?: BunSqlConstructor } }).Bun?.SQL
}

/**
 * `postgres://host:port/db` or `https://host/path`: the URL without user info, query or fragment,
 * and without path segments long enough to be tokens (`/sites/<token>` shows as `/sites/…`).
 */
export function redactUrl(text: string): string {
  try {
    const u = new URL(text)
    const path = u.pathname
      .split('/')
      .map((segment) => (segment.length >= 16 ? '…' : segment))
      .join('/')
    return `${u.protocol}//${u.host}${path}`
  } catch {
    return '(invalid url)'
  }
}

/**
 * Builds the source of `sites: { file | sql | url }`; config issues (with paths under `at`) when the
 * options are inconsistent or the runtime cannot run the source.
 */
export function createSiteSource(
  options: SiteSourceOptions,
  at: string,
  baseDir: string,
  validate: SiteValidator,
): SiteSource | ConfigIssue[] {
  const kinds = (['file', 'sql', 'url'] as const).filter((k) => options[k] !== undefined)
  if (kinds.length !== 1) {
    return [{ path: at, message: 'expected exactly one of file, sql (with database) or url' }]
  }
  const kind = kinds[0]!
  const issues: ConfigIssue[] = []
  if (kind !== 'sql' && options.database !== undefined)
    issues.push({ path: `${at}.database`, message: 'only a sql source takes a database' })
  if (kind !== 'url' && options.headers !== undefined)
    issues.push({ path: `${at}.headers`, message: 'only a url source takes headers' })
  const refreshSeconds = options.refreshSeconds ?? 60
  const timeoutMs = options.timeoutMs ?? 10_000
  const check = (describe: string, rows: unknown): SiteConfig[] => {
    const result = validate(rows)
    if (!result.ok) throw new SiteSourceError(describe, result.issues)
    return result.sites
  }

  if (kind === 'file') {
    if (issues.length) return issues
    const path = resolve(baseDir, options.file!)
    const describe = `file ${options.file}`
    return {
      kind,
      describe,
      refreshSeconds,
      async load() {
        let text: string
        try {
          text = await readFile(path, 'utf8')
        } catch (error) {
          throw new SiteSourceError(describe, [{ path: 'sites', message: `cannot read: ${(error as Error).message}` }])
        }
        let rows: unknown
        try {
          rows = extname(path) === '.json' ? JSON.parse(text) : parseYaml(text)
        } catch (error) {
          throw new SiteSourceError(describe, [{ path: 'sites', message: `cannot parse: ${(error as Error).message}` }])
        }
        return check(describe, rows)
      },
    }
  }

  if (kind === 'url') {
    let url: URL | undefined
    try {
      url = new URL(options.url!)
    } catch {}
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:'))
      issues.push({ path: `${at}.url`, message: 'expected an http(s) URL' })
    if (issues.length) return issues
    const describe = `url ${redactUrl(options.url!)}`
    return {
      kind,
      describe,
      refreshSeconds,
      async load() {
        let rows: unknown
        try {
          const response = await fetch(options.url!, {
            headers: { accept: 'application/json', ...options.headers },
            signal: AbortSignal.timeout(timeoutMs),
          })
          if (!response.ok) throw new Error(`HTTP ${response.status}`)
          rows = await response.json()
        } catch (error) {
          // The fetch error may quote the URL; only the redacted one goes out.
          const message = (error as Error).name === 'TimeoutError' ? `no answer in ${timeoutMs} ms` : errorText(error)
          throw new SiteSourceError(describe, [{ path: 'sites', message: scrub(message, options.url!) }])
        }
        return check(describe, rows)
      },
    }
  }

  // sql
  if (options.database === undefined)
    issues.push({ path: `${at}.database`, message: 'a sql source needs a database URL' })
  else if (!options.database.startsWith('postgres://') && !options.database.startsWith('postgresql://'))
    issues.push({ path: `${at}.database`, message: 'expected a postgres:// URL' })
  const SQL = bunSql()
  if (!SQL) {
    issues.push({
      path: `${at}.sql`,
      message:
        'a sql source needs Bun’s built-in PostgreSQL client (Bun.SQL), which this runtime lacks; run on Bun or use a url or file source',
    })
  }
  if (issues.length) return issues
  const database = options.database!
  const describe = `sql on ${redactUrl(database)}`
  return {
    kind,
    describe,
    refreshSeconds,
    async load() {
      // A client per load: nothing to keep alive between refreshes, and a restarted server is no issue.
      const client = new SQL!(database, { max: 1, connectionTimeout: Math.ceil(timeoutMs / 1000), idleTimeout: 1 })
      let rows: Record<string, unknown>[]
      try {
        let timer: ReturnType<typeof setTimeout> | undefined
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs)
        })
        try {
          rows = await Promise.race([client.unsafe(options.sql!), timeout])
        } finally {
          clearTimeout(timer)
        }
      } catch (error) {
        throw new SiteSourceError(describe, [{ path: 'sites', message: scrub(errorText(error), database) }])
      } finally {
        void client.close({ timeout: 0 }).catch(() => {})
      }
      return check(describe, [...rows].map(fromSqlRow))
    },
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/** Removes the secret-bearing URL from a message, should a client quote it. */
function scrub(message: string, url: string): string {
  return message.split(url).join(redactUrl(url)).split('\n')[0] ?? ''
}

/**
 * A PostgreSQL row as a site: NULL columns are absent (an optional key), a bigint id (which the client
 * answers as a string) becomes a number, and an integer `retention` column means `{ days: n }`.
 */
function fromSqlRow(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(row)) {
    if (value === null || value === undefined) continue
    if (key === 'id' && typeof value === 'string') {
      // Only an exact decimal integer becomes a number; anything else stays and fails validation.
      const n = Number(value)
      out[key] = Number.isSafeInteger(n) && String(n) === value ? n : value
    } else if (key === 'retention' && typeof value === 'number') out[key] = { days: value }
    else out[key] = value
  }
  return out
}

export interface SiteSourceStatus {
  source: string
  /** Sites in the set in use. */
  sites: number
  /** ISO time of the last successful load. */
  loadedAt: string
  /** Set while refreshes fail: the set in use is older than it should be. */
  stale: boolean
  lastError?: string
  failingSince?: string
  refreshes: number
  failures: number
}

/**
 * Reloads a source every `refreshSeconds` and hands each good set to `apply`; a failed load keeps the
 * set in use, logs once per failure, and shows in `status()`. Loads never overlap.
 */
export class SiteRefresher {
  private timer: ReturnType<typeof setInterval> | undefined
  private stopped = false
  private running: Promise<void> | undefined
  private loadedAt = new Date()
  private count: number
  private lastError: string | undefined
  private failingSince: Date | undefined
  private refreshes = 0
  private failures = 0

  constructor(
    readonly source: SiteSource,
    initialCount: number,
    private readonly apply: (sites: SiteConfig[]) => void,
    private readonly logger: Logger,
  ) {
    this.count = initialCount
  }

  start(): void {
    if (this.source.refreshSeconds <= 0 || this.timer) return
    this.timer = setInterval(() => void this.refresh(), this.source.refreshSeconds * 1000)
    this.timer.unref?.()
  }

  stop(): void {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  /** Loads now (or joins the load in progress). Resolves when done; never throws. */
  refresh(): Promise<void> {
    this.running ??= this.load().finally(() => {
      this.running = undefined
    })
    return this.running
  }

  private async load(): Promise<void> {
    try {
      const sites = await this.source.load()
      // A reload replaced this source while it loaded: its set must not overwrite the new one.
      if (this.stopped) return
      this.apply(sites)
      this.refreshes++
      this.count = sites.length
      this.loadedAt = new Date()
      if (this.lastError !== undefined) this.logger.info('Site source answers again.', { source: this.source.describe })
      this.lastError = undefined
      this.failingSince = undefined
    } catch (error) {
      this.failures++
      this.lastError = errorText(error)
      this.failingSince ??= new Date()
      this.logger.error('Site refresh failed; the last good set of sites stays in use.', {
        source: this.source.describe,
        error: this.lastError,
        sites: this.count,
        loadedAt: this.loadedAt.toISOString(),
      })
    }
  }

  /** Marks a set loaded elsewhere (a SIGHUP reload) as the current one. */
  loaded(count: number): void {
    this.count = count
    this.loadedAt = new Date()
    this.lastError = undefined
    this.failingSince = undefined
  }

  status(): SiteSourceStatus {
    return {
      source: this.source.describe,
      sites: this.count,
      loadedAt: this.loadedAt.toISOString(),
      stale: this.lastError !== undefined,
      ...(this.lastError !== undefined
        ? { lastError: this.lastError, failingSince: this.failingSince?.toISOString() }
        : {}),
      refreshes: this.refreshes,
      failures: this.failures,
    }
  }
}
