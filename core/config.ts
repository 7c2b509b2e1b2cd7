// The declarative config (design.md "The config file"): YAML, JSON or a typed TS file; `${VAR}` and
// `${VAR:-default}` substitution; named environments; every error reported with its path.

import { existsSync, readFileSync } from 'node:fs'
import { dirname, extname, isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { type Static, type TSchema, Type } from '@sinclair/typebox'
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler'
import { Value } from '@sinclair/typebox/value'
import { LineCounter, parseDocument } from 'yaml'
import { builtinPlugins } from '../plugins/registry.ts'
import { builtinSinks } from '../sinks/registry.ts'
import { appendKey, type ConfigIssue, resolveOptions } from './options.ts'
import { type AckMode, type PluginDefinition, type ServerSettings, STAGES } from './plugin.ts'
import type { SinkDefinition } from './sink.ts'
import { createSiteSource, type SiteSource, SiteSourceError, SiteSourceSchema } from './site-sources.ts'
import type { SiteConfig } from './sites.ts'

const StringList = (description: string) => Type.Array(Type.String({ minLength: 1 }), { description })

export const ServerSchema = Type.Object(
  {
    port: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 65535,
        default: 8000,
        description: 'TCP port to listen on (0 = any free port).',
      }),
    ),
    host: Type.Optional(Type.String({ default: '0.0.0.0', description: 'Address to listen on.' })),
    trustedProxies: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        default: ['loopback', 'private'],
        description:
          'Peers whose forwarding headers are believed: CIDRs, addresses, or the words loopback and private.',
      }),
    ),
    bodyLimit: Type.Optional(
      Type.Integer({
        minimum: 1,
        default: 65536,
        description: 'Largest request body in bytes, after decompression; larger ones get 413.',
      }),
    ),
    bodyTimeoutMs: Type.Optional(
      Type.Integer({
        minimum: 100,
        default: 10000,
        description: 'A body still arriving after this many milliseconds gets 408 (slow clients).',
      }),
    ),
    idleTimeoutSeconds: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 255,
        default: 10,
        description:
          'Connections idle this long are closed (Bun only; Bun checks about every 4 s, so small values round up).',
      }),
    ),
    shutdownTimeoutMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        default: 10000,
        description: 'How long shutdown waits for in-flight requests before flushing the sinks.',
      }),
    ),
    workers: Type.Optional(
      Type.Union([Type.Integer({ minimum: 1, maximum: 256 }), Type.Literal('auto')], {
        default: 1,
        description:
          'Processes serving the port (Linux reusePort), supervised and restarted when they die; auto = one per core. 1 runs a single process without a supervisor.',
        errorMessage: 'expected a number of workers (1 or more) or auto',
      }),
    ),
    batchRequests: Type.Optional(
      Type.Boolean({
        description:
          'Requests whose body arrives in one event-loop turn go through the pipeline together at the end of the turn: about half the CPU per request under load. Default true. Set false for HTTP/1.1 clients that pipeline requests on one connection: Bun closes such a connection, unanswered, when a pipelined request arrives while an earlier answer still waits (docs/performance.md).',
      }),
    ),
    youngCollectionMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 60000,
        description:
          "Bun only: while requests arrive, collect the young generation of the heap every this many milliseconds (each about 1.5-2 ms). Many short pauses replace the runtime's own rarer collections, after which event-loop turns of 9-12 ms set the latency's p99 (docs/performance.md). 0 leaves collecting to the runtime. Default 100.",
      }),
    ),
    affinity: Type.Optional(
      Type.Boolean({
        description:
          "With several workers: each client IP's events are processed by one owning worker (the others forward its requests over a Unix socket), so sessions are never split. Default true; false only for tests and measurements.",
      }),
    ),
  },
  { additionalProperties: false, default: {} },
)

export const ShieldsSchema = Type.Object(
  {
    ip: Type.Optional(StringList('Blocked client addresses or CIDR ranges.')),
    country: Type.Optional(StringList('Blocked ISO country codes; ZZ blocks unknown countries.')),
    page: Type.Optional(StringList('Blocked path patterns; * and ** match any characters, as in Plausible.')),
    hostname: Type.Optional(
      StringList('Allowed hostname patterns (* matches any characters); when set, other hostnames are dropped.'),
    ),
  },
  { additionalProperties: false },
)

export const RetentionSchema = Type.Object(
  {
    days: Type.Integer({
      minimum: 1,
      // Far-off expiry dates would overflow ClickHouse's DateTime (year 2106).
      maximum: 18250,
      description: 'Rows older than this many days are deleted by the ClickHouse and chdb sinks.',
    }),
  },
  { additionalProperties: false, description: 'How long rows are kept; absent = forever.' },
)

export const SiteSchema = Type.Object(
  {
    id: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'The site_id written to the rows.' }),
    domain: Type.String({ minLength: 1, description: 'The domain clients send (Plausible `d`).' }),
    domains: Type.Optional(StringList('More domains that belong to this site.')),
    shields: Type.Optional(ShieldsSchema),
    tracking: Type.Optional(Type.Boolean({ description: 'false stops recording events for this site.' })),
    allowLocalhost: Type.Optional(Type.Boolean({ description: 'Accept events from localhost origins (Lynkow).' })),
    strict: Type.Optional(Type.Boolean({ description: 'Answer validation failures with 422 (Lynkow strict mode).' })),
    retention: Type.Optional(RetentionSchema),
    keys: Type.Optional(
      Type.Array(Type.String({ minLength: 16, maxLength: 512, pattern: '^[\\x21-\\x7e]+$' }), {
        description:
          'Keys of trusted server-side senders (`Authorization: Bearer <key>`): a keyed request speaks for a visitor (IP and user agent from forwarding headers, a client `timestamp`). At least 16 visible ASCII characters; substitute them from the environment to keep them out of the file.',
        examples: [['$' + '{SHOP_BACKEND_KEY}']],
      }),
    ),
  },
  { additionalProperties: false },
)

/** `name`, or `{ name: options }`, or `{ ./path/to/plugin.ts: options }`. */
const ComponentEntry = Type.Union(
  [
    Type.String({ minLength: 1 }),
    Type.Record(Type.String({ minLength: 1 }), Type.Unknown(), { minProperties: 1, maxProperties: 1 }),
  ],
  { errorMessage: 'expected a name, or a mapping of one name (or ./path) to its options' },
)

const TopLevel = {
  server: Type.Optional(ServerSchema),
  sites: Type.Optional(
    Type.Union([Type.Literal('any'), Type.Array(SiteSchema), SiteSourceSchema], {
      description:
        'The sites to accept: a list, `any` to accept every domain (site ids derived from the domain), or a source ({ file }, { sql, database } or { url }) reloaded every refreshSeconds.',
      errorMessage: 'expected `any`, a list of sites, or a source ({ file }, { sql, database } or { url })',
    }),
  ),
  retention: Type.Optional(RetentionSchema),
  plugins: Type.Optional(
    Type.Array(ComponentEntry, { description: 'Plugins in order; the stage table orders stages.' }),
  ),
  sinks: Type.Optional(
    Type.Array(ComponentEntry, { description: 'Where accepted events go; several run side by side.' }),
  ),
  ack: Type.Optional(
    Type.Union([Type.Literal('received'), Type.Literal('durable')], {
      default: 'received',
      description:
        "What a 202 promises: received (the event is in memory; a crash loses at most a flush interval) or durable (answered once the event is fsynced to the sinks' spools; a kill -9 loses nothing answered 202; a full spool answers 503).",
      errorMessage: 'expected received or durable',
    }),
  ),
  stateDir: Type.Optional(
    Type.String({ minLength: 1, description: 'Folder for state that survives restarts (salts, lists, spools).' }),
  ),
  log: Type.Optional(
    Type.Object(
      { level: Type.Optional(Type.Union(['debug', 'info', 'warn', 'error'].map((l) => Type.Literal(l)))) },
      { additionalProperties: false },
    ),
  ),
}

export const ConfigSchema = Type.Object(
  {
    ...TopLevel,
    environments: Type.Optional(
      Type.Record(Type.String(), Type.Object(TopLevel, { additionalProperties: false }), {
        description: 'Named partial configs; the one chosen by --env or ANALYTICS_ENV replaces the keys it sets.',
      }),
    ),
  },
  { additionalProperties: false },
)

export type RawConfig = Static<typeof ConfigSchema>

/** A typed config for `analytics.config.ts`: `export default defineConfig({ ... })`. */
export function defineConfig(config: RawConfig): RawConfig {
  return config
}

export interface ResolvedComponent<D> {
  /** The name as written (a built-in's name or the plugin's own name for a path). */
  name: string
  /** Where it sits in the config, for messages: `plugins[3]`. */
  path: string
  definition: D
  options: unknown
  /**
   * Plugins that drop inside the pipeline: `drop` (default) or `report`, which tags the event with
   * `would_drop` and lets it go on. Taken from the entry's options by the core, not by the plugin.
   */
  mode: DropMode
}

export type DropMode = 'drop' | 'report'

/** Whether `mode: report` applies: the plugin declares drops and decides them inside the pipeline. */
export function canReport(definition: PluginDefinition): boolean {
  return definition.stage !== 'parse' && Object.keys(definition.drops ?? {}).length > 0 && !ownsModeOption(definition)
}

function ownsModeOption(definition: { options: TSchema }): boolean {
  const properties = (definition.options as { properties?: Record<string, unknown> }).properties
  return properties !== undefined && 'mode' in properties
}

export interface ResolvedConfig {
  /** The file it came from, or `(embedded defaults)`. */
  source: string
  env: string | undefined
  baseDir: string
  stateDir: string
  ack: AckMode
  logLevel: 'debug' | 'info' | 'warn' | 'error'
  server: ServerSettings & {
    shutdownTimeoutMs: number
    /** `serve --workers`: a count, or `auto` (one per core), resolved by the CLI. */
    workers: number | 'auto'
    /** Owner-per-client-IP routing between workers; absent = on when workers > 1. */
    affinity?: boolean
    /** Requests of one event-loop turn processed together (core/http.ts TurnBatch); absent = on. */
    batchRequests?: boolean
    /** Young-generation collections while requests arrive, in ms (Bun); absent = 100, 0 = off. */
    youngCollectionMs?: number
  }
  /** The sites in use: inline, or as a source answered when the config was resolved. */
  sites: SiteConfig[] | 'any'
  /** Where the sites come from when not inline; the engine reloads it every refreshSeconds. */
  sitesSource?: SiteSource
  /** The global `retention.days`; undefined = rows are kept forever. */
  retentionDays?: number
  plugins: ResolvedComponent<PluginDefinition>[]
  sinks: ResolvedComponent<SinkDefinition>[]
}

/** Every problem of a config at once; start-up prints them and stops. */
export class ConfigErrors extends Error {
  constructor(
    readonly source: string,
    readonly issues: ConfigIssue[],
  ) {
    super(`invalid config (${source}):\n${issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`)
    this.name = 'ConfigErrors'
  }
}

export interface LoadOptions {
  /** The config file; when absent, `./analytics.yaml` if present, else the embedded defaults. */
  file?: string
  /** The environment to apply; defaults to ANALYTICS_ENV. */
  env?: string
  /** Variables for `${VAR}`; defaults to process.env. */
  vars?: Record<string, string | undefined>
  /** Overrides applied last (CLI flags). */
  port?: number
  host?: string
  /** `--workers`. */
  workers?: number | 'auto'
  cwd?: string
}

export const DEFAULT_CONFIG_FILES = ['analytics.yaml', 'analytics.yml', 'analytics.json', 'analytics.config.ts']

/** Reads, substitutes, validates and resolves a config; throws ConfigErrors with every issue. */
export async function loadConfig(options: LoadOptions = {}): Promise<ResolvedConfig> {
  const cwd = options.cwd ?? process.cwd()
  let file = options.file
  if (!file) file = DEFAULT_CONFIG_FILES.map((f) => resolve(cwd, f)).find((f) => existsSync(f))
  if (!file) {
    const { embeddedDefaults } = await import('./defaults.ts')
    return resolveConfig(embeddedDefaults(), { ...options, source: '(embedded defaults)', baseDir: cwd })
  }
  const path = isAbsolute(file) ? file : resolve(cwd, file)
  const raw = await readConfigFile(path)
  return resolveConfig(raw, { ...options, source: path, baseDir: dirname(path) })
}

async function readConfigFile(path: string): Promise<unknown> {
  if (!existsSync(path)) throw new ConfigErrors(path, [{ path: '(file)', message: `file not found: ${path}` }])
  const ext = extname(path)
  if (ext === '.ts' || ext === '.js' || ext === '.mjs') {
    try {
      const mod = (await import(pathToFileURL(path).href)) as { default?: unknown }
      return mod.default
    } catch (error) {
      throw new ConfigErrors(path, [{ path: '(file)', message: `cannot load: ${(error as Error).message}` }])
    }
  }
  const text = readFileSync(path, 'utf8')
  if (ext === '.json') {
    try {
      return JSON.parse(text)
    } catch (error) {
      throw new ConfigErrors(path, [{ path: '(file)', message: `invalid JSON: ${(error as Error).message}` }])
    }
  }
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  if (doc.errors.length > 0) {
    throw new ConfigErrors(
      path,
      doc.errors.map((e) => {
        const at = lineCounter.linePos(e.pos[0])
        return { path: `line ${at.line}, column ${at.col}`, message: e.message.split('\n')[0] ?? e.message }
      }),
    )
  }
  return doc.toJS() ?? {}
}

export interface ResolveOptions extends LoadOptions {
  source: string
  baseDir: string
}

/** Resolves an already-parsed config object (tests and embedders use this directly). */
export async function resolveConfig(raw: unknown, options: ResolveOptions): Promise<ResolvedConfig> {
  const issues: ConfigIssue[] = []
  const fail = (): never => {
    throw new ConfigErrors(options.source, issues)
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    issues.push({ path: '(root)', message: 'expected a mapping of server, sites, plugins, sinks, environments' })
    fail()
  }
  // Environments first: the chosen one replaces the keys it sets, then substitution runs on the result
  // only, so an unused environment's missing variables are no error.
  const env = options.env ?? process.env.ANALYTICS_ENV ?? undefined
  let merged = { ...(raw as Record<string, unknown>) }
  const environments = merged.environments
  if (env) {
    const chosen =
      environments && typeof environments === 'object' ? (environments as Record<string, unknown>)[env] : undefined
    if (chosen === undefined) {
      const known = environments && typeof environments === 'object' ? Object.keys(environments) : []
      issues.push({
        path: `environments.${env}`,
        message: `unknown environment (known: ${known.length ? known.join(', ') : 'none'})`,
      })
      fail()
    }
    if (chosen && typeof chosen === 'object') merged = { ...merged, ...(chosen as Record<string, unknown>) }
  }
  const vars = options.vars ?? process.env
  // Environments are applied above; their unused values may hold variables that are not set here,
  // so they are checked for known keys only, not substituted or validated deeply.
  const { environments: _unused, ...rest } = merged
  if (environments !== undefined) checkEnvironments(environments, issues)
  const substituted = substitute(rest, '', vars, issues)
  const checked = resolveOptions<RawConfig>(ConfigSchema, substituted, '')
  if (!checked.ok) issues.push(...checked.issues)
  // Go on with what is there, so one run reports the plugins' and sinks' errors too.
  const config = checked.ok ? checked.value : (substituted as RawConfig)
  const bad = (prefix: string) =>
    issues.some((i) => i.path === prefix || i.path.startsWith(`${prefix}.`) || i.path.startsWith(`${prefix}[`))
  if (options.port !== undefined) config.server = { ...(config.server as object), port: options.port } as never
  if (options.host !== undefined) config.server = { ...(config.server as object), host: options.host } as never
  if (options.workers !== undefined) {
    config.server = { ...(config.server as object), workers: options.workers } as never
  }
  const server = resolveOptions<ResolvedConfig['server']>(ServerSchema, config.server ?? {}, 'server')
  if (!server.ok && !bad('server')) issues.push(...server.issues)

  let sites: SiteConfig[] | 'any' = 'any'
  let sitesSource: SiteSource | undefined
  const rawSites = config.sites ?? 'any'
  if (Array.isArray(rawSites)) {
    sites = rawSites
    if (!bad('sites')) checkSites(rawSites, issues)
  } else if (rawSites !== 'any' && typeof rawSites === 'object' && !bad('sites')) {
    const made = createSiteSource(rawSites, 'sites', options.baseDir, validateSiteRows)
    if (Array.isArray(made)) issues.push(...made)
    else {
      sitesSource = made
      // The first load decides start-up: a source that cannot answer is a config error, as a bad
      // inline site would be (refreshes later keep the last good set instead).
      try {
        sites = await made.load()
      } catch (error) {
        if (error instanceof SiteSourceError) {
          for (const i of error.issues) issues.push({ path: i.path, message: `${i.message} (from ${made.describe})` })
        } else issues.push({ path: 'sites', message: `${made.describe}: ${(error as Error).message}` })
      }
    }
  }

  const plugins = await resolveComponents<PluginDefinition>(
    Array.isArray(config.plugins) ? config.plugins : [],
    'plugins',
    builtinPlugins,
    options.baseDir,
    issues,
    isPluginDefinition,
  )
  const sinks = await resolveComponents<SinkDefinition>(
    Array.isArray(config.sinks) ? config.sinks : [],
    'sinks',
    builtinSinks,
    options.baseDir,
    issues,
    isSinkDefinition,
  )
  if (Array.isArray(config.sinks) && config.sinks.length === 0) {
    issues.push({ path: 'sinks', message: 'at least one sink is needed, or accepted events would go nowhere' })
  }
  if (issues.length) fail()

  const resolvedServer = (server as { value: ResolvedConfig['server'] }).value
  return {
    source: options.source,
    env,
    baseDir: options.baseDir,
    stateDir: resolve(options.baseDir, config.stateDir ?? '.state'),
    ack: (config.ack ?? 'received') as AckMode,
    logLevel: (config.log?.level ?? 'info') as ResolvedConfig['logLevel'],
    server: resolvedServer,
    sites,
    ...(sitesSource ? { sitesSource } : {}),
    ...(config.retention ? { retentionDays: config.retention.days } : {}),
    plugins,
    sinks: sinks.length ? sinks : await defaultSinks(),
  }
}

async function defaultSinks(): Promise<ResolvedComponent<SinkDefinition>[]> {
  const definition = (await builtinSinks.stdout!()).default
  return [{ name: 'stdout', path: 'sinks', definition, options: resolveDefaults(definition.options), mode: 'drop' }]
}

function resolveDefaults(schema: TSchema): unknown {
  const r = resolveOptions(schema, {}, '')
  return r.ok ? r.value : {}
}

const VAR = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g

function checkEnvironments(environments: unknown, issues: ConfigIssue[]): void {
  if (!environments || typeof environments !== 'object' || Array.isArray(environments)) {
    issues.push({ path: 'environments', message: 'expected a mapping of environment names to partial configs' })
    return
  }
  for (const [name, env] of Object.entries(environments)) {
    const at = appendKey('environments', name)
    if (!env || typeof env !== 'object' || Array.isArray(env)) {
      issues.push({ path: at, message: 'expected a partial config (server, sites, plugins, sinks, …)' })
      continue
    }
    for (const key of Object.keys(env)) {
      if (!(key in TopLevel)) issues.push({ path: appendKey(at, key), message: 'unknown option' })
    }
  }
}

function substitute(
  value: unknown,
  path: string,
  vars: Record<string, string | undefined>,
  issues: ConfigIssue[],
): unknown {
  if (typeof value === 'string') {
    if (!value.includes('${')) return value
    return value.replace(VAR, (_m, name: string, fallback: string | undefined) => {
      const v = vars[name]
      if (v !== undefined && v !== '') return v
      if (fallback !== undefined) return fallback
      issues.push({ path: path || '(root)', message: `environment variable ${name} is not set and has no default` })
      return ''
    })
  }
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, `${path}[${i}]`, vars, issues))
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = substitute(v, appendKey(path, k), vars, issues)
    return out
  }
  return value
}

const SiteList = Type.Array(SiteSchema)
let siteListCheck: TypeCheck<typeof SiteList> | undefined

/** Rows from a site source, checked exactly as inline sites are (paths `sites[3].domain`). */
export function validateSiteRows(
  rows: unknown,
): { ok: true; sites: SiteConfig[] } | { ok: false; issues: ConfigIssue[] } {
  if (!Array.isArray(rows)) return { ok: false, issues: [{ path: 'sites', message: 'expected a list of sites' }] }
  // A refresh validates on the event loop: the compiled check keeps a thousand sites to a millisecond
  // or two; the slower walk that names each bad value runs only when something is wrong.
  siteListCheck ??= TypeCompiler.Compile(SiteList)
  // Defaults first, as for inline sites (resolveOptions does the same).
  const withDefaults = Value.Default(SiteList, Value.Clone(rows))
  let sites: SiteConfig[]
  if (siteListCheck.Check(withDefaults)) sites = withDefaults as SiteConfig[]
  else {
    const checked = resolveOptions<SiteConfig[]>(SiteList, rows, 'sites')
    if (!checked.ok) return checked
    sites = checked.value
  }
  const issues: ConfigIssue[] = []
  checkSites(sites, issues)
  return issues.length ? { ok: false, issues } : { ok: true, sites }
}

function checkSites(sites: SiteConfig[], issues: ConfigIssue[]): void {
  const ids = new Map<number, number>()
  const domains = new Map<string, number>()
  sites.forEach((site, i) => {
    const seen = ids.get(site.id)
    if (seen !== undefined)
      issues.push({ path: `sites[${i}].id`, message: `duplicate id ${site.id} (also sites[${seen}])` })
    else ids.set(site.id, i)
    for (const d of [site.domain, ...(site.domains ?? [])]) {
      const other = domains.get(d)
      if (other !== undefined && other !== i) {
        issues.push({ path: `sites[${i}].domain`, message: `domain ${d} already belongs to sites[${other}]` })
      } else domains.set(d, i)
    }
  })
}

function isPluginDefinition(value: unknown): value is PluginDefinition {
  const v = value as PluginDefinition
  return (
    !!v &&
    typeof v.name === 'string' &&
    typeof v.setup === 'function' &&
    (STAGES as readonly string[]).includes(v.stage) &&
    typeof v.options === 'object'
  )
}

function isSinkDefinition(value: unknown): value is SinkDefinition {
  const v = value as SinkDefinition
  return !!v && typeof v.name === 'string' && typeof v.setup === 'function' && typeof v.options === 'object'
}

function isPathRef(name: string): boolean {
  return name.startsWith('.') || name.startsWith('/') || /\.(ts|js|mjs)$/.test(name)
}

async function resolveComponents<D extends { name: string; options: TSchema }>(
  entries: unknown[],
  kind: 'plugins' | 'sinks',
  registry: Record<string, () => Promise<{ default: unknown }>>,
  baseDir: string,
  issues: ConfigIssue[],
  guard: (v: unknown) => v is D,
): Promise<ResolvedComponent<D>[]> {
  const out: ResolvedComponent<D>[] = []
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]
    const at = `${kind}[${i}]`
    // Entries of the wrong shape were reported by the schema check already.
    if (typeof entry !== 'string' && (!entry || typeof entry !== 'object' || Object.keys(entry).length !== 1)) continue
    const [ref, rawOptions] =
      typeof entry === 'string' ? [entry, undefined] : (Object.entries(entry as object)[0] as [string, unknown])
    let definition: unknown
    if (isPathRef(ref)) {
      const file = resolve(baseDir, ref)
      if (!existsSync(file)) {
        issues.push({ path: at, message: `file not found: ${ref}` })
        continue
      }
      try {
        definition = ((await import(pathToFileURL(file).href)) as { default?: unknown }).default
      } catch (error) {
        issues.push({ path: at, message: `cannot load ${ref}: ${(error as Error).message}` })
        continue
      }
      if (!guard(definition)) {
        issues.push({
          path: at,
          message: `${ref} does not export a ${kind === 'plugins' ? 'definePlugin' : 'defineSink'}(...) value as default`,
        })
        continue
      }
    } else {
      const load = registry[ref]
      if (!load) {
        issues.push({
          path: at,
          message: `unknown ${kind.slice(0, -1)} "${ref}" (known: ${Object.keys(registry).join(', ')})`,
        })
        continue
      }
      definition = (await load()).default
    }
    const def = definition as D
    const key = appendKey(at, ref)
    const { mode, options: ownOptions } = splitMode(kind, def, rawOptions, key, issues)
    const checked = resolveOptions(def.options, ownOptions ?? {}, key)
    if (!checked.ok) {
      issues.push(...checked.issues)
      continue
    }
    out.push({ name: isPathRef(ref) ? def.name : ref, path: key, definition: def, options: checked.value, mode })
  }
  return out
}

/**
 * Takes the core's `mode` out of a plugin entry's options. Only plugins that drop inside the pipeline
 * have it; a dialect's drops (unknown site, …) are decided before any event exists to tag.
 */
function splitMode(
  kind: 'plugins' | 'sinks',
  definition: { options: TSchema },
  raw: unknown,
  key: string,
  issues: ConfigIssue[],
): { mode: DropMode; options: unknown } {
  if (kind !== 'plugins' || !raw || typeof raw !== 'object' || Array.isArray(raw) || !('mode' in raw)) {
    return { mode: 'drop', options: raw }
  }
  const plugin = definition as PluginDefinition
  if (ownsModeOption(plugin)) return { mode: 'drop', options: raw }
  const { mode, ...rest } = raw as Record<string, unknown>
  if (!canReport(plugin)) {
    issues.push({
      path: `${key}.mode`,
      message:
        plugin.stage === 'parse'
          ? 'a dialect cannot report: its drops (unknown site, …) happen before there is an event to tag'
          : 'this plugin never drops, so it has no mode',
    })
  } else if (mode !== 'drop' && mode !== 'report') {
    issues.push({ path: `${key}.mode`, message: 'expected drop or report' })
  } else return { mode, options: rest }
  return { mode: 'drop', options: rest }
}
