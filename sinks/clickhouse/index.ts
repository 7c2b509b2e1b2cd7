// The `clickhouse` sink: writes events_v2 and sessions_v2 (spec/clickhouse-schema.md) to a ClickHouse
// server over HTTP with @clickhouse/client, in batches, with retries, an on-disk spool and a dead-letter
// file (delivery.ts), and creates or upgrades the tables with `migrate` (schema.ts).
//
// Setup needs no network (design.md): the server's version is probed in the background and before
// the first insert; a server that is down at start only makes the sink report `degraded` and spool.

import { Readable } from 'node:stream'
import { type ClickHouseClient, type ClickHouseSettings, createClient } from '@clickhouse/client'
import { type Static, Type } from '@sinclair/typebox'
import type { EngineServices } from '../../core/plugin.ts'
import { ConfigError } from '../../core/plugin.ts'
import { defineSink } from '../../core/sink.ts'
import { withoutCredentials } from '../../core/urls.ts'
import { type Batch, deliveryOptions, IDENTIFIER, type Inserter, openTableWriter, writerOptions } from './delivery.ts'
import { classify } from './errors.ts'
import {
  applyRetention,
  CLUSTER_DDL_WAIT_S,
  capsFor,
  ident,
  migrateTables,
  RETENTION_CHECK_MS,
  type RetentionPlan,
  retentionPlan,
  type ServerCaps,
  type SqlRunner,
  type TableTarget,
} from './schema.ts'

const options = Type.Object(
  {
    url: Type.String({
      default: 'http://localhost:8123',
      description: 'HTTP(S) endpoint of the ClickHouse server.',
      examples: ['http://clickhouse:8123', 'https://ch.example.com:8443'],
    }),
    urls: Type.Array(Type.String(), {
      default: [],
      description:
        'More endpoints with the same tables, tried in order after url: the other replicas of a cluster. An insert or probe that gets no answer, or a read-only or unreachable-shard error, moves to the next at once with the identical batch; inserts stay where one succeeded.',
      examples: [['http://clickhouse-2:8123']],
    }),
    database: Type.String({ default: 'default', pattern: IDENTIFIER, description: 'Database of the tables.' }),
    ...deliveryOptions,
    username: Type.String({ default: 'default', description: 'ClickHouse user.' }),
    password: Type.String({
      default: '',
      description: 'Password of that user; better taken from an environment variable in the config.',
    }),
    compression: Type.Union([Type.Literal('gzip'), Type.Literal('none')], {
      default: 'gzip',
      description:
        'Compression of insert bodies: gzip cuts JSON about tenfold for a remote server; none saves CPU on loopback.',
    }),
    requestTimeoutMs: Type.Integer({
      minimum: 100,
      default: 30_000,
      description: 'Time an insert may take before it counts as failed and is retried.',
    }),
    spoolDir: Type.String({
      default: '',
      description: 'Folder of the on-disk spool; empty = <stateDir>/spool/clickhouse-<host>-<port>-<database>.',
    }),
    autoMigrate: Type.Boolean({
      default: true,
      description:
        'When an insert finds the database or a table missing (the server was down or empty when the engine started), run the migration and retry; off = wait for the migrate command.',
    }),
    cluster: Type.String({
      default: '',
      description:
        "Cluster name from the servers' remote_servers: ON CLUSTER DDL, Replicated tables named <table>_local and Distributed tables sharded by user_id. Needs ZooKeeper.",
    }),
  },
  { additionalProperties: false },
)

type Options = Static<typeof options>

function target(o: Options): TableTarget {
  return {
    database: o.database,
    eventsTable: o.eventsTable,
    sessionsTable: o.sessionsTable,
    countersTable: o.countersTable,
    cluster: o.cluster,
  }
}

function parseUrl(text: string, path: string): URL {
  try {
    const url = new URL(text)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http(s)')
    return url
  } catch {
    throw new ConfigError(path, `expected an http(s) URL, got ${JSON.stringify(text)}`)
  }
}

/** `url`, then `urls`, each checked: the endpoints in the order they are tried. */
function endpointUrls(o: Options): string[] {
  parseUrl(o.url, 'url')
  for (const [i, u] of o.urls.entries()) parseUrl(u, `urls/${i}`)
  return [o.url, ...o.urls]
}

/**
 * Time a migration statement may take: an ON CLUSTER statement waits up to CLUSTER_DDL_WAIT_S for
 * the hosts, and a client giving up first would send it to the next endpoint, queueing it twice.
 */
const MIGRATION_TIMEOUT_MS = (CLUSTER_DDL_WAIT_S + 25) * 1000

function makeClient(o: Options, url: string, timeoutMs: number, keepAlive: boolean): ClickHouseClient {
  return createClient({
    url,
    keep_alive: { enabled: keepAlive },
    username: o.username,
    password: o.password,
    // No default database: it may not exist before `migrate`, and every statement names it anyway.
    request_timeout: timeoutMs,
    compression: { request: o.compression === 'gzip', response: false },
    // The client logs to the console, which the stdout sink owns, and may quote row data: we log ourselves.
    log: { level: 127 },
  })
}

/** SQL over the HTTP client, for the migration. */
function httpRunner(client: ClickHouseClient): SqlRunner {
  return {
    async exec(sql, settings) {
      await client.command({ query: sql, clickhouse_settings: settings as ClickHouseSettings })
    },
    async select(sql) {
      const result = await client.query({ query: sql, format: 'JSONEachRow' })
      return result.json<Record<string, unknown>>()
    },
  }
}

/**
 * Failures after which another endpoint may succeed where this one cannot: no answer at all (refused,
 * reset, timed out: the server or its host is gone), and a replica that cannot write (read-only
 * without ZooKeeper, its shard's replicas unreachable, a network error between servers).
 */
const ENDPOINT_CODES = new Set([159, 209, 210, 242, 279])

function endpointFailure(error: unknown): boolean {
  const { code } = classify(error)
  return code === undefined || ENDPOINT_CODES.has(code)
}

/**
 * The sink's endpoints (`url`, then `urls`) and the one in use. An operation that fails for an
 * endpoint's reason moves on to the next at once, so a dead replica costs one refused connection
 * rather than a backoff; the lane's retries and spool handle the case where every endpoint fails.
 */
class Endpoints {
  readonly clients: ClickHouseClient[]
  private active = 0

  constructor(
    readonly urls: readonly string[],
    o: Options,
    private readonly logger: EngineServices['logger'],
    timeoutMs = o.requestTimeoutMs,
    keepAlive = true,
  ) {
    this.clients = urls.map((u) => makeClient(o, u, timeoutMs, keepAlive))
  }

  /**
   * Runs `op` on the active endpoint, then on each other one while `movable` says the failure is the
   * endpoint's. When every one fails, the error thrown is the last one's, and its message also names
   * what each endpoint before it answered: a dead replica's refusal must not hide why a live one failed.
   */
  async run<T>(op: (client: ClickHouseClient) => Promise<T>, movable = endpointFailure): Promise<T> {
    const n = this.clients.length
    let last: unknown
    let lastIndex = 0
    let earlier: string[] | undefined
    for (let i = 0; i < n; i++) {
      const index = (this.active + i) % n
      try {
        const result = await op(this.clients[index]!)
        if (index !== this.active) {
          this.logger.warn('ClickHouse endpoint failed; moved to the next one.', {
            sink: 'clickhouse',
            from: withoutCredentials(this.urls[this.active]!),
            to: withoutCredentials(this.urls[index]!),
            error: classify(last).summary,
          })
          this.active = index
        }
        return result
      } catch (error) {
        if (!movable(error)) throw error
        if (i > 0) {
          earlier ??= []
          earlier.push(`${withoutCredentials(this.urls[lastIndex]!)}: ${classify(last).summary}`)
        }
        last = error
        lastIndex = index
      }
    }
    throw earlier === undefined ? last : new EndpointsFailed(last, earlier)
  }

  close(): Promise<unknown> {
    return Promise.all(this.clients.map((c) => c.close()))
  }
}

/**
 * Every endpoint failed: the last one's error (its message first, and its `code`, so `classify` reads
 * it as before), with what each earlier endpoint answered on the lines after.
 */
class EndpointsFailed extends Error {
  readonly code: unknown

  constructor(last: unknown, earlier: string[]) {
    super(`${last instanceof Error ? last.message : String(last)}\nbefore that: ${earlier.join('; ')}`, { cause: last })
    this.name = last instanceof Error ? last.name : 'Error'
    this.code = (last as { code?: unknown } | null)?.code
  }
}

/**
 * The migration on the first endpoint that answers, with its own clients (a DDL statement may take
 * longer than an insert). Only silence moves it on: an ON CLUSTER statement that timed out on the
 * server is already queued for every host. A new connection per statement: the few statements of a
 * migration gain nothing from keeping one, and a kept one the server has closed meanwhile fails
 * the next statement without an answer.
 */
async function migrateOn(o: Options, logger: EngineServices['logger'], retention: RetentionPlan): Promise<string[]> {
  const endpoints = new Endpoints(endpointUrls(o), o, logger, Math.max(o.requestTimeoutMs, MIGRATION_TIMEOUT_MS), false)
  try {
    return await migrateTables(endpointsRunner(endpoints), target(o), retention)
  } finally {
    await endpoints.close()
  }
}

/** SQL on whichever endpoint answers; a statement moves on at once when one does not. */
function endpointsRunner(endpoints: Endpoints): SqlRunner {
  const silent = (error: unknown) => classify(error).code === undefined
  return {
    exec: (sql, settings) => endpoints.run((client) => httpRunner(client).exec(sql, settings), silent),
    select: (sql) => endpoints.run((client) => httpRunner(client).select(sql), silent),
  }
}

/** Inserts over HTTP; knows the server version, probed once and again after a connection failure. */
class HttpInserter implements Inserter {
  private caps: ServerCaps | undefined
  private migrating: Promise<string[]> | undefined
  readonly createMissing?: () => Promise<string[]>

  constructor(
    private readonly endpoints: Endpoints,
    private readonly target: TableTarget,
    migrate: (() => Promise<string[]>) | undefined,
  ) {
    // Both lanes find the tables missing at once: one migration serves them both.
    if (migrate) {
      this.createMissing = () => {
        this.migrating ??= migrate().finally(() => {
          this.migrating = undefined
        })
        return this.migrating
      }
    }
  }

  async probe(): Promise<ServerCaps> {
    if (this.caps) return this.caps
    const [row] = await this.endpoints.run(async (client) => {
      const result = await client.query({ query: 'SELECT version() AS version', format: 'JSONEachRow' })
      return result.json<{ version: string }>()
    })
    this.caps = capsFor(row?.version ?? '')
    return this.caps
  }

  async insert(table: string, batch: Batch): Promise<void> {
    try {
      const caps = await this.probe()
      // Unknown fields fail rather than vanish: an old table is a reason to migrate, not to lose columns.
      const settings: ClickHouseSettings = { input_format_skip_unknown_fields: 0 }
      if (caps.dedupTokens) settings.insert_deduplication_token = batch.id
      // Without tokens, Replicated tables deduplicate by content: counter rows repeat exactly (one
      // drop per hand-over in the same minute), so identical hand-overs would vanish. Counting them
      // all is worth more than exactness after a lost answer, which may count a batch twice.
      else if (this.target.cluster && table === this.target.countersTable) settings.insert_deduplicate = 0
      // A 2xx must mean "on every shard", so that a retry resends the whole batch (scale-out.md §3.5).
      if (this.target.cluster) settings.insert_distributed_sync = 1
      // Every endpoint gets the identical bytes: a replica that already has the block drops it.
      await this.endpoints.run(async (client) => {
        const result = await client.exec({
          query: `INSERT INTO ${ident(this.target.database)}.${ident(table)} FORMAT JSONEachRow`,
          values: Readable.from([batch.payload], { objectMode: false }),
          clickhouse_settings: settings,
        })
        // The answer of an INSERT is empty; reading it to the end frees the socket for keep-alive.
        for await (const _ of result.stream) {
        }
      })
    } catch (error) {
      // No ClickHouse code = no answer: the server may have been replaced by another version.
      if (classify(error).code === undefined) this.caps = undefined
      throw error
    }
  }
}

/** `clickhouse-<host>-<port>-<database>`: two sinks to different servers never share a spool. */
function defaultSpoolName(url: URL, database: string): string {
  const port = url.port || (url.protocol === 'https:' ? '443' : '80')
  return `clickhouse-${url.hostname}-${port}-${database}`.replace(/[^A-Za-z0-9._-]/g, '_')
}

function spoolDirOf(o: Options, engine: EngineServices): string {
  // A spool is locked by one process: each worker of `serve --workers` keeps its own.
  return engine.perWorker(
    o.spoolDir
      ? engine.resolvePath(o.spoolDir)
      : `${engine.stateDir}/spool/${defaultSpoolName(parseUrl(o.url, 'url'), o.database)}`,
  )
}

export default defineSink({
  name: 'clickhouse',
  summary:
    'Writes events and sessions to ClickHouse over HTTP in batches, spooling to disk while the server is unavailable.',
  options,
  async setup(o, engine, stats) {
    const endpoints = new Endpoints(endpointUrls(o), o, engine.logger)
    const inserter = new HttpInserter(
      endpoints,
      target(o),
      o.autoMigrate ? () => migrateOn(o, engine.logger, retentionPlan(engine.sites)) : undefined,
    )
    const spoolDir = spoolDirOf(o, engine)
    const writer = await openTableWriter(writerOptions('clickhouse', o, spoolDir, engine, inserter, stats))
    // Learn early whether the server answers, without holding start-up: health says so meanwhile.
    let unreachable: string | undefined
    let probing: Promise<void> | undefined
    const probe = () => {
      probing ??= inserter
        .probe()
        .then(
          () => {
            unreachable = undefined
          },
          (error: unknown) => {
            if (unreachable === undefined) {
              engine.logger.warn('ClickHouse is not reachable; rows are spooled until it is.', {
                sink: 'clickhouse',
                url: withoutCredentials(o.url),
                error: classify(error).summary,
              })
            }
            unreachable = classify(error).summary
          },
        )
        .finally(() => {
          probing = undefined
        })
      return probing
    }
    void probe()
    let closed = false
    // Retention follows the sites in use (a refreshed source may bring new ones), and on servers
    // without TTL this is what deletes expired rows.
    const retentionTimer = setInterval(() => {
      applyRetention(endpointsRunner(endpoints), target(o), retentionPlan(engine.sites)).then(
        (lines) => {
          for (const line of lines) engine.logger.debug('Retention.', { sink: 'clickhouse', detail: line })
        },
        (error: unknown) =>
          engine.logger.warn('Could not apply retention; will try again.', {
            sink: 'clickhouse',
            error: classify(error).summary,
          }),
      )
    }, RETENTION_CHECK_MS)
    retentionTimer.unref?.()
    return {
      write: (event) => writer.write(event),
      writeCounters: writer.writeCounters,
      sync: () => writer.sync(),
      flush: () => writer.flush(),
      async close() {
        closed = true
        clearInterval(retentionTimer)
        await probing
        await writer.close()
        await endpoints.close()
      },
      health() {
        // Until an insert says otherwise, the start-up probe is the only news; repeat it, one at a time.
        if (unreachable !== undefined && !closed) void probe()
        return writer.health(
          unreachable !== undefined ? { state: 'degraded', detail: `server unreachable: ${unreachable}` } : undefined,
        )
      },
    }
  },
  migrate: (o, engine) => migrateOn(o, engine.logger, retentionPlan(engine.sites)),
})
