// The tables of spec/clickhouse-schema.md (events_v2, sessions_v2) as data, the DDL for a given server
// version, and the idempotent migration both the `clickhouse` and the `chdb` sink run.
//
// One column list, adapted per server rather than weakened for all (spec "Storage"): 18.16 gets no
// CODEC and needs allow_experimental_low_cardinality_type; 22.2+ gets a deduplication window on plain
// MergeTree so that insert_deduplication_token works; cluster mode adds ON CLUSTER, Replicated engines
// and a Distributed table sharded by user_id (research/scale-out.md §3.5).

export interface Column {
  name: string
  type: string
  /** Compression codec on servers that have codecs; omitted on 18.16 (a syntax error there). */
  codec?: string
}

const DELTA = 'Delta(4), LZ4'
const ZSTD = 'ZSTD(3)'
const LC = 'LowCardinality(String)'

/** events_v2, in the spec's order. */
export const EVENT_COLUMNS: readonly Column[] = [
  { name: 'timestamp', type: 'DateTime', codec: DELTA },
  { name: 'name', type: LC },
  { name: 'site_id', type: 'UInt64' },
  { name: 'user_id', type: 'UInt64' },
  { name: 'session_id', type: 'UInt64' },
  { name: 'hostname', type: 'String', codec: ZSTD },
  { name: 'pathname', type: 'String', codec: ZSTD },
  { name: 'referrer', type: 'String', codec: ZSTD },
  { name: 'referrer_source', type: 'String', codec: ZSTD },
  { name: 'country_code', type: 'FixedString(2)' },
  { name: 'screen_size', type: LC },
  { name: 'operating_system', type: LC },
  { name: 'browser', type: LC },
  { name: 'utm_medium', type: 'String', codec: ZSTD },
  { name: 'utm_source', type: 'String', codec: ZSTD },
  { name: 'utm_campaign', type: 'String', codec: ZSTD },
  { name: 'meta.key', type: 'Array(String)', codec: ZSTD },
  { name: 'meta.value', type: 'Array(String)', codec: ZSTD },
  { name: 'browser_version', type: LC },
  { name: 'operating_system_version', type: LC },
  { name: 'subdivision1_code', type: LC },
  { name: 'subdivision2_code', type: LC },
  { name: 'city_geoname_id', type: 'UInt32' },
  { name: 'utm_content', type: 'String', codec: ZSTD },
  { name: 'utm_term', type: 'String', codec: ZSTD },
  { name: 'revenue_reporting_amount', type: 'Nullable(Decimal64(3))' },
  { name: 'revenue_source_amount', type: 'Nullable(Decimal64(3))' },
  { name: 'revenue_reporting_currency', type: 'FixedString(3)' },
  { name: 'revenue_source_currency', type: 'FixedString(3)' },
  { name: 'click_id_param', type: LC },
  { name: 'scroll_depth', type: 'UInt8' },
  { name: 'engagement_time', type: 'UInt32' },
  { name: 'acquisition_channel', type: LC },
]

/** sessions_v2, in the spec's order. */
export const SESSION_COLUMNS: readonly Column[] = [
  { name: 'session_id', type: 'UInt64' },
  { name: 'sign', type: 'Int8' },
  { name: 'site_id', type: 'UInt64' },
  { name: 'user_id', type: 'UInt64' },
  { name: 'hostname', type: 'String' },
  { name: 'timestamp', type: 'DateTime', codec: DELTA },
  { name: 'start', type: 'DateTime', codec: DELTA },
  { name: 'is_bounce', type: 'UInt8' },
  { name: 'entry_page', type: 'String' },
  { name: 'exit_page', type: 'String' },
  { name: 'exit_page_hostname', type: 'String' },
  { name: 'pageviews', type: 'Int32' },
  { name: 'events', type: 'Int32' },
  { name: 'duration', type: 'UInt32' },
  { name: 'referrer', type: 'String' },
  { name: 'referrer_source', type: 'String' },
  { name: 'click_id_param', type: LC },
  { name: 'utm_medium', type: 'String' },
  { name: 'utm_source', type: 'String' },
  { name: 'utm_campaign', type: 'String' },
  { name: 'utm_content', type: 'String' },
  { name: 'utm_term', type: 'String' },
  { name: 'country_code', type: 'LowCardinality(FixedString(2))' },
  { name: 'subdivision1_code', type: LC },
  { name: 'subdivision2_code', type: LC },
  { name: 'city_geoname_id', type: 'UInt32' },
  { name: 'screen_size', type: LC },
  { name: 'operating_system', type: LC },
  { name: 'operating_system_version', type: LC },
  { name: 'browser', type: LC },
  { name: 'browser_version', type: LC },
  { name: 'entry_meta.key', type: 'Array(String)' },
  { name: 'entry_meta.value', type: 'Array(String)' },
  { name: 'transferred_from', type: 'String' },
  { name: 'acquisition_channel', type: LC },
]

/**
 * ingest_counters (issue "visible drops"): drops per minute, site and reason. Not in the Plausible
 * schema; a SummingMergeTree folds the rows of one key, so readers should still `sum()`.
 */
export const COUNTER_COLUMNS: readonly Column[] = [
  { name: 'minute', type: 'DateTime', codec: DELTA },
  { name: 'site_id', type: 'UInt64' },
  { name: 'reason', type: LC },
  { name: 'dropped', type: 'UInt64' },
  { name: 'would_drop', type: 'UInt64' },
]

/** What a server version can do, as far as our DDL and inserts care. */
export interface ServerCaps {
  version: string
  /** Column CODEC(...) (19.11+; a syntax error on 18.16). */
  codecs: boolean
  /** LowCardinality needs allow_experimental_low_cardinality_type = 1 (18.x; the setting is gone today). */
  lowCardinalitySetting: boolean
  /** insert_deduplication_token and non_replicated_deduplication_window (22.2+). */
  dedupTokens: boolean
  /** ALTER TABLE … ADD COLUMN IF NOT EXISTS (19.x+; 18.16 rejects the syntax). */
  addColumnIfNotExists: boolean
  /** Table TTL (19.6+). Without it, retention runs as an ALTER TABLE … DELETE mutation. */
  ttl: boolean
}

/** Capabilities from `SELECT version()` (e.g. `18.16.1`, `26.7.2.1`). */
export function capsFor(version: string): ServerCaps {
  const [major = 0, minor = 0] = version.trim().split('.').map(Number)
  const atLeast = (M: number, m: number) => major > M || (major === M && minor >= m)
  return {
    version: version.trim(),
    codecs: atLeast(19, 11),
    lowCardinalitySetting: major < 19,
    dedupTokens: atLeast(22, 2),
    addColumnIfNotExists: atLeast(19, 1),
    ttl: atLeast(19, 6),
  }
}

/** Settings every DDL statement needs on this server. */
export function ddlSettings(caps: ServerCaps): Record<string, number> {
  return caps.lowCardinalitySetting ? { allow_experimental_low_cardinality_type: 1 } : {}
}

/** Where the tables live. `cluster` empty = one server. */
export interface TableTarget {
  database: string
  eventsTable: string
  sessionsTable: string
  /** Table of drop counters; empty = none. */
  countersTable: string
  /** A cluster of the server's `remote_servers`; enables ON CLUSTER, Replicated engines and Distributed tables. */
  cluster: string
}

/** Deduplication window (blocks) set on our tables: it must outlast every retry of a batch by all writers. */
export const DEDUP_WINDOW = 10_000

/** Backquotes an identifier (`meta.key` needs it; names from options are validated but quoted anyway). */
export function ident(name: string): string {
  return `\`${name.replace(/\\/g, '\\\\').replace(/`/g, '\\`')}\``
}

/** `'…'` SQL string literal. */
export function literal(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
}

export function columnDDL(column: Column, caps: ServerCaps): string {
  const codec = caps.codecs && column.codec ? ` CODEC(${column.codec})` : ''
  return `${ident(column.name)} ${column.type}${codec}`
}

type Kind = 'events' | 'sessions' | 'counters'

const COLUMNS: Record<Kind, readonly Column[]> = {
  events: EVENT_COLUMNS,
  sessions: SESSION_COLUMNS,
  counters: COUNTER_COLUMNS,
}

/** The table an insert goes to (the Distributed table in cluster mode). */
export function insertTable(target: TableTarget, kind: Kind): string {
  return kind === 'events' ? target.eventsTable : kind === 'sessions' ? target.sessionsTable : target.countersTable
}

/** The table that stores the rows: `<name>_local` in cluster mode, else the table itself. */
export function storageTable(target: TableTarget, kind: Kind): string {
  const name = insertTable(target, kind)
  return target.cluster ? `${name}_local` : name
}

function onCluster(target: TableTarget): string {
  return target.cluster ? ` ON CLUSTER ${ident(target.cluster)}` : ''
}

/** CREATE TABLE for the storage table of `kind`. */
export function createTableSQL(target: TableTarget, kind: Kind, caps: ServerCaps): string {
  const columns = COLUMNS[kind]
  const table = storageTable(target, kind)
  const name = `${ident(target.database)}.${ident(table)}`
  const replicated = target.cluster !== ''
  // The ZooKeeper path names the database and table so that two deployments on one cluster never meet.
  const zkPath = literal(`/clickhouse/tables/{shard}/${target.database}/${table}`)
  let engine: string
  let layout: string
  if (kind === 'events') {
    engine = replicated ? `ReplicatedMergeTree(${zkPath}, '{replica}')` : 'MergeTree'
    layout =
      'PARTITION BY toYYYYMM(timestamp)\n' +
      'PRIMARY KEY (site_id, toDate(timestamp), name, user_id)\n' +
      'ORDER BY (site_id, toDate(timestamp), name, user_id, timestamp)\n' +
      'SAMPLE BY user_id'
  } else if (kind === 'counters') {
    engine = replicated
      ? `ReplicatedSummingMergeTree(${zkPath}, '{replica}', (dropped, would_drop))`
      : 'SummingMergeTree((dropped, would_drop))'
    layout = 'PARTITION BY toYYYYMM(minute)\nORDER BY (site_id, minute, reason)'
  } else {
    engine = replicated
      ? `ReplicatedVersionedCollapsingMergeTree(${zkPath}, '{replica}', sign, events)`
      : 'VersionedCollapsingMergeTree(sign, events)'
    layout =
      'PARTITION BY toYYYYMM(start)\n' +
      'ORDER BY (site_id, toDate(start), user_id, session_id)\n' +
      'SAMPLE BY user_id'
  }
  const settings = tableSettings(target, caps)
  return (
    `CREATE TABLE IF NOT EXISTS ${name}${onCluster(target)}\n(\n` +
    columns.map((c) => `  ${columnDDL(c, caps)}`).join(',\n') +
    `\n)\nENGINE = ${engine}\n${layout}` +
    (settings ? `\nSETTINGS ${settings}` : '')
  )
}

/**
 * Table-level settings: a deduplication window large enough for retries (Replicated tables have one
 * on every version, 100 blocks by default; plain MergeTree only from 22.2, off by default).
 */
function tableSettings(target: TableTarget, caps: ServerCaps): string {
  if (target.cluster) return `replicated_deduplication_window = ${DEDUP_WINDOW}`
  if (caps.dedupTokens) return `non_replicated_deduplication_window = ${DEDUP_WINDOW}`
  return ''
}

/**
 * The Distributed table readers and inserts use in cluster mode, sharded by user_id (a session stays
 * on one shard); counters have no user and go by site.
 */
export function createDistributedSQL(target: TableTarget, kind: Kind): string {
  const table = insertTable(target, kind)
  const local = storageTable(target, kind)
  const db = ident(target.database)
  const shardKey = kind === 'counters' ? 'site_id' : 'user_id'
  return (
    `CREATE TABLE IF NOT EXISTS ${db}.${ident(table)}${onCluster(target)} AS ${db}.${ident(local)}\n` +
    `ENGINE = Distributed(${ident(target.cluster)}, ${db}, ${ident(local)}, ${shardKey})`
  )
}

/** What the migration needs from a server: the embedded engine and the HTTP client both provide it. */
export interface SqlRunner {
  /** Runs a statement that returns nothing. */
  exec(sql: string, settings?: Record<string, string | number>): Promise<void>
  /** Runs a SELECT and returns its rows (JSONEachRow, values as the server prints them). */
  select(sql: string): Promise<Record<string, unknown>[]>
}

/**
 * Creates the database and tables, adds columns that an older table lacks, raises the deduplication
 * window. Idempotent: a second run changes nothing and says so. Returns one line per action.
 */
export async function migrateTables(
  server: SqlRunner,
  target: TableTarget,
  retention?: RetentionPlan,
): Promise<string[]> {
  const [versionRow] = await server.select('SELECT version() AS version')
  const caps = capsFor(String(versionRow?.version ?? ''))
  const settings = ddlSettings(caps)
  const lines: string[] = [`ClickHouse ${caps.version}${target.cluster ? `, cluster ${target.cluster}` : ''}`]
  const db = target.database
  const run = target.cluster ? clusterRunner(server, target, caps, lines) : server

  // On a cluster every statement runs even when this host has the object: another host may lack it.
  const dbExists = await run.select(`SELECT name FROM system.databases WHERE name = ${literal(db)}`)
  if (dbExists.length === 0 || target.cluster)
    await run.exec(`CREATE DATABASE IF NOT EXISTS ${ident(db)}${onCluster(target)}`)
  if (dbExists.length === 0) lines.push(`created database ${db}`)

  const kinds: Kind[] = target.countersTable ? ['events', 'sessions', 'counters'] : ['events', 'sessions']
  for (const kind of kinds) {
    const wanted = COLUMNS[kind]
    const tables = target.cluster
      ? [storageTable(target, kind), insertTable(target, kind)]
      : [insertTable(target, kind)]
    for (const table of tables) {
      const isDistributed = target.cluster !== '' && table === insertTable(target, kind)
      const existing = await run.select(
        `SELECT name, type FROM system.columns WHERE database = ${literal(db)} AND table = ${literal(table)}`,
      )
      if (existing.length === 0 || target.cluster) {
        await run.exec(
          isDistributed ? createDistributedSQL(target, kind) : createTableSQL(target, kind, caps),
          settings,
        )
      }
      if (existing.length === 0) {
        lines.push(`created table ${db}.${table}${isDistributed ? ' (Distributed)' : ''}`)
        continue
      }
      const types = new Map(existing.map((r) => [String(r.name), String(r.type)]))
      let changed = false
      for (const column of wanted) {
        const type = types.get(column.name)
        if (type === undefined) {
          const ifNot = caps.addColumnIfNotExists ? 'IF NOT EXISTS ' : ''
          await run.exec(
            `ALTER TABLE ${ident(db)}.${ident(table)}${onCluster(target)} ADD COLUMN ${ifNot}${columnDDL(column, caps)}`,
            settings,
          )
          lines.push(`added column ${db}.${table}.${column.name} ${column.type}`)
          changed = true
        } else if (normalizeType(type) !== normalizeType(column.type)) {
          // Changing a type can rewrite a whole table; that is an operator's decision, not a migration's.
          lines.push(`column ${db}.${table}.${column.name} has type ${type}, expected ${column.type}: left unchanged`)
        }
      }
      if (!isDistributed) changed = (await raiseDedupWindow(run, target, table, caps, lines)) || changed
      if (!changed) lines.push(`table ${db}.${table} is up to date`)
    }
  }
  if (retention) lines.push(...(await applyRetention(run, target, retention, caps)))
  return lines
}

/** How often a running sink re-applies retention (new sites from a source; deletes where there is no TTL). */
export const RETENTION_CHECK_MS = 60 * 60 * 1000

/**
 * How long rows are kept (issue #12 item 6): `defaultDays` for every site not listed (undefined =
 * forever), and the sites whose own retention differs from it.
 */
export interface RetentionPlan {
  defaultDays: number | undefined
  sites: { id: number; days: number }[]
}

/** The plan for the sites in use: each site's own days where they differ from the global ones. */
export function retentionPlan(sites: {
  retentionDays: number | undefined
  list(): readonly { id: number; retentionDays: number | undefined }[]
}): RetentionPlan {
  const defaultDays = sites.retentionDays
  const own = sites
    .list()
    .filter((s) => s.retentionDays !== undefined && s.retentionDays !== defaultDays)
    .map((s) => ({ id: s.id, days: s.retentionDays as number }))
    .sort((a, b) => a.id - b.id)
  return { defaultDays, sites: own }
}

/** One line for operators: `90 days; site 2: 30 days` or `forever`. */
export function describeRetention(plan: RetentionPlan): string {
  const base = plan.defaultDays === undefined ? 'forever' : `${plan.defaultDays} days`
  return [base, ...plan.sites.map((s) => `site ${s.id}: ${s.days} days`)].join('; ')
}

/** The column a row's age is measured by: sessions by `start`, so both rows of a session go together. */
function ageColumn(kind: Kind): string {
  return kind === 'events' ? 'timestamp' : 'start'
}

/**
 * A site's days as one expression over `site_id`, with `fallback` for the sites not listed. Written
 * the way ClickHouse prints it back in `engine_full`, so a second migration finds nothing to change.
 */
function daysExpression(plan: RetentionPlan, fallback: number): string {
  if (plan.sites.length === 0) return String(fallback)
  const ids = plan.sites.map((s) => s.id).join(', ')
  const days = plan.sites.map((s) => s.days).join(', ')
  return `transform(site_id, [${ids}], [${days}], ${fallback})`
}

function listedIds(plan: RetentionPlan): string {
  return `[${plan.sites.map((s) => s.id).join(', ')}]`
}

/** The table TTL of a plan, or undefined when every row is kept forever. */
export function ttlExpression(plan: RetentionPlan, kind: Kind): string | undefined {
  const column = ageColumn(kind)
  if (plan.defaultDays !== undefined) return `${column} + toIntervalDay(${daysExpression(plan, plan.defaultDays)})`
  if (plan.sites.length === 0) return undefined
  // Sites without retention get the last DateTime: a large day count would overflow it and expire at once.
  return `if(has(${listedIds(plan)}, site_id), ${column} + toIntervalDay(${daysExpression(plan, 0)}), toDateTime(4294967295))`
}

/**
 * The rows past their retention, for servers without TTL: whole days, so that a check every hour
 * finds something to delete (and rewrites parts) at most once a day.
 */
export function expiredCondition(plan: RetentionPlan, kind: Kind): string | undefined {
  const age = `toDate(${ageColumn(kind)})`
  if (plan.defaultDays !== undefined) return `${age} < today() - ${daysExpression(plan, plan.defaultDays)}`
  if (plan.sites.length === 0) return undefined
  return `has(${listedIds(plan)}, site_id) AND ${age} < today() - ${daysExpression(plan, 0)}`
}

const normalizeSql = (sql: string) => sql.replace(/\s+/g, '')

function isOurTtl(ttl: string, kind: Kind): boolean {
  const t = normalizeSql(ttl)
  return t.startsWith(`${ageColumn(kind)}+toIntervalDay(`) || t.startsWith('if(has([')
}

/**
 * Makes the storage tables keep rows as long as the plan says: a table TTL where the server has
 * them (set or changed with MODIFY TTL, removed with REMOVE TTL), else a DELETE mutation for the rows
 * already expired (none while one is still running). Idempotent; returns one line per action.
 */
export async function applyRetention(
  run: SqlRunner,
  target: TableTarget,
  plan: RetentionPlan,
  caps?: ServerCaps,
): Promise<string[]> {
  if (!caps) {
    const [versionRow] = await run.select('SELECT version() AS version')
    caps = capsFor(String(versionRow?.version ?? ''))
  }
  const lines: string[] = []
  const db = target.database
  for (const kind of ['events', 'sessions'] as const) {
    const table = storageTable(target, kind)
    const name = `${ident(db)}.${ident(table)}`
    if (caps.ttl) {
      const [row] = await run.select(
        `SELECT engine_full FROM system.tables WHERE database = ${literal(db)} AND name = ${literal(table)}`,
      )
      const current = / TTL (.+?)(?: SETTINGS .*)?$/.exec(String(row?.engine_full ?? ''))?.[1]
      const wanted = ttlExpression(plan, kind)
      if (wanted === undefined) {
        // Only a TTL of the shape we write is ours to remove; one an operator set by hand stays.
        if (current === undefined || !isOurTtl(current, kind)) continue
        await run.exec(`ALTER TABLE ${name}${onCluster(target)} REMOVE TTL`)
        lines.push(`removed the TTL of ${db}.${table}: rows are kept forever`)
      } else if (current === undefined || normalizeSql(current) !== normalizeSql(wanted)) {
        // The server rewrites the parts holding expired rows in the background (materialize_ttl_after_modify).
        await run.exec(`ALTER TABLE ${name}${onCluster(target)} MODIFY TTL ${wanted}`)
        lines.push(`set the TTL of ${db}.${table}: ${describeRetention(plan)}`)
      }
      continue
    }
    const condition = expiredCondition(plan, kind)
    if (condition === undefined) continue
    // A mutation rewrites every part on 18.16: run one only when rows expired and none is still running.
    const [pending] = await run.select(
      `SELECT count() AS n FROM system.mutations WHERE database = ${literal(db)} AND table = ${literal(table)} AND is_done = 0`,
    )
    if (Number(pending?.n ?? 0) > 0) {
      lines.push(`retention of ${db}.${table}: a delete is still running`)
      continue
    }
    // In cluster mode the Distributed table counts every shard, not only the host asked.
    const counted = `${ident(db)}.${ident(insertTable(target, kind))}`
    const [expired] = await run.select(`SELECT count() AS n FROM ${counted} WHERE ${condition}`)
    const n = Number(expired?.n ?? 0)
    if (n === 0) continue
    await run.exec(`ALTER TABLE ${name}${onCluster(target)} DELETE WHERE ${condition}`)
    lines.push(`deleting ${n} expired rows of ${db}.${table} (${describeRetention(plan)}; no TTL on ${caps.version})`)
  }
  const managed = plan.defaultDays !== undefined || plan.sites.length > 0
  if (lines.length === 0 && managed) lines.push(`retention is up to date: ${describeRetention(plan)}`)
  return lines
}

/** Seconds an ON CLUSTER statement waits for every host before the migration goes on without it. */
export const CLUSTER_DDL_WAIT_S = 5

/**
 * ON CLUSTER statements with a bounded wait. A host that is down makes the server report a timeout
 * (code 159) after distributed_ddl_task_timeout (180 s by default) although the statement stays
 * queued and the host runs it when it returns; `serve` migrates before it listens, so one dead replica
 * must not hold start-up for minutes. After the first such timeout the other statements are queued
 * without waiting. 18.16's LowCardinality error under ON CLUSTER gets the operator's fix attached.
 */
function clusterRunner(run: SqlRunner, target: TableTarget, caps: ServerCaps, lines: string[]): SqlRunner {
  let wait = CLUSTER_DDL_WAIT_S
  return {
    select: (sql) => run.select(sql),
    async exec(sql, settings) {
      if (!/ ON CLUSTER /.test(sql)) return run.exec(sql, settings)
      try {
        await run.exec(sql, { ...settings, distributed_ddl_task_timeout: wait })
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error)
        if (/\bCode: 159\b/.test(message) && /unfinished hosts/.test(message)) {
          if (wait > 0) {
            lines.push(
              `cluster ${target.cluster}: some hosts did not answer within ${wait} s; the statements are queued and they run them when they return`,
            )
          }
          wait = 0
          return
        }
        if (caps.lowCardinalitySetting && /\bCode: 44\b/.test(message) && /LowCardinality/.test(message)) {
          throw new Error(
            `${message.split('\n')[0]} — on ClickHouse 18.x the ON CLUSTER DDL ignores the session's settings: put <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type> in the default profile (users.xml) of every server of cluster ${target.cluster}`,
          )
        }
        throw error
      }
    },
  }
}

/** Tables created before this sink (or by hand) may lack the window that makes tokens work. */
async function raiseDedupWindow(
  run: SqlRunner,
  target: TableTarget,
  table: string,
  caps: ServerCaps,
  lines: string[],
): Promise<boolean> {
  const setting = target.cluster
    ? 'replicated_deduplication_window'
    : caps.dedupTokens
      ? 'non_replicated_deduplication_window'
      : undefined
  // 18.16's plain MergeTree has no deduplication at all (documented gap).
  if (!setting) return false
  const [row] = await run.select(
    `SELECT engine_full FROM system.tables WHERE database = ${literal(target.database)} AND name = ${literal(table)}`,
  )
  const current = new RegExp(`${setting} = (\\d+)`).exec(String(row?.engine_full ?? ''))
  if (current && Number(current[1]) >= DEDUP_WINDOW) return false
  if (!caps.dedupTokens) {
    // 18.16 cannot MODIFY SETTING: only CREATE sets the window. A table made elsewhere keeps its own.
    lines.push(
      `${target.database}.${table} has ${setting} = ${current?.[1] ?? 'the default (100)'}, below ${DEDUP_WINDOW}; ClickHouse ${caps.version} cannot change it: recreate the table to make retries safe under load`,
    )
    return false
  }
  await run.exec(
    `ALTER TABLE ${ident(target.database)}.${ident(table)}${onCluster(target)} MODIFY SETTING ${setting} = ${DEDUP_WINDOW}`,
  )
  lines.push(`set ${setting} = ${DEDUP_WINDOW} on ${target.database}.${table}`)
  return true
}

/** Servers print `Decimal64(3)` as `Decimal(18, 3)`. */
function normalizeType(type: string): string {
  return type.replace(/Decimal64\((\d+)\)/g, 'Decimal(18, $1)').replace(/\s+/g, '')
}
