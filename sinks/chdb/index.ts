// The `chdb` sink: events_v2 and sessions_v2 (spec/clickhouse-schema.md) in an embedded ClickHouse
// (npm `chdb`, ClickHouse 26.x) stored in a local folder. Same DDL, batching, retries, spool and dead
// letters as the `clickhouse` sink (../clickhouse/); the engine runs on a Worker (worker.ts) because
// each chdb call blocks its thread.
//
// If chdb cannot load (no native build for this platform, a broken install) or cannot open its folder,
// start-up goes on: the sink logs an error, reports `failing` with the reason, and spools rows, which a
// later start delivers once chdb works. A ConfigError would stop the whole engine for one sink.

import { type Static, Type } from '@sinclair/typebox'
import type { EngineServices } from '../../core/plugin.ts'
import { defineSink } from '../../core/sink.ts'
import {
  type Batch,
  deliveryOptions,
  IDENTIFIER,
  type Inserter,
  openTableWriter,
  writerOptions,
} from '../clickhouse/delivery.ts'
import {
  applyRetention,
  migrateTables,
  RETENTION_CHECK_MS,
  type RetentionPlan,
  retentionPlan,
  type SqlRunner,
  type TableTarget,
} from '../clickhouse/schema.ts'
import { acquireChdb, type ChdbWorker } from './protocol.ts'

const options = Type.Object(
  {
    path: Type.String({
      default: '',
      description: 'Folder of the embedded database; empty = <stateDir>/chdb. One chdb folder per process.',
    }),
    database: Type.String({ default: 'default', pattern: IDENTIFIER, description: 'Database of the tables.' }),
    ...deliveryOptions,
    spoolDir: Type.String({ default: '', description: 'Folder of the on-disk spool; empty = <stateDir>/spool/chdb.' }),
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
    cluster: '',
  }
}

function pathOf(o: Options, engine: EngineServices): string {
  // One embedded database per process: each worker of `serve --workers` has its own folder.
  return engine.perWorker(o.path ? engine.resolvePath(o.path) : `${engine.stateDir}/chdb`)
}

function runner(worker: ChdbWorker): SqlRunner {
  return {
    async exec(sql, settings) {
      await worker.call({ op: 'exec', sql, ...(settings ? { settings } : {}) })
    },
    async select(sql) {
      return (await worker.call({ op: 'select', sql })) as Record<string, unknown>[]
    },
  }
}

/** Opens the engine and makes sure the tables exist: the database is the sink's own, so it migrates itself. */
async function start(worker: ChdbWorker, o: Options, retention: RetentionPlan): Promise<void> {
  await worker.open()
  await migrateTables(runner(worker), target(o), retention)
}

/**
 * The sink definition; `module` is the package the worker loads (tests name a missing one to see the
 * sink survive a chdb that cannot load).
 */
export function createChdbSink(module = 'chdb') {
  return defineSink({
    name: 'chdb',
    summary: 'Writes events and sessions to an embedded ClickHouse (chDB) in a local folder, off the HTTP thread.',
    options,
    async setup(o, engine, stats) {
      const { worker, release } = acquireChdb(pathOf(o, engine), module)
      let problem: { state: 'failing'; detail: string } | undefined
      const plan = () => retentionPlan(engine.sites)
      try {
        await start(worker, o, plan())
      } catch (error) {
        problem = { state: 'failing', detail: `chdb could not start: ${(error as Error).message.split('\n')[0]}` }
        engine.logger.error('chdb could not start; rows are spooled until it can.', {
          sink: 'chdb',
          path: pathOf(o, engine),
          error: problem.detail,
        })
        // End the worker that failed; the next attempt starts a fresh one.
        await worker.close().catch(() => {})
      }
      const inserter: Inserter = {
        async insert(table: string, batch: Batch) {
          if (worker.version === undefined) {
            // A worker that died (or never started) is started again, tables included, then retried.
            await start(worker, o, plan())
            problem = undefined
          }
          await worker.call({
            op: 'insert',
            table: `${o.database}.${table}`,
            payload: batch.payload,
            // chdb is ClickHouse 26.x: tokens exist, and the tables carry a deduplication window.
            settings: { insert_deduplication_token: batch.id, input_format_skip_unknown_fields: 0 },
          })
        },
        // Tables dropped under a running sink: the folder is the sink's own, so it recreates them.
        async createMissing() {
          if (worker.version === undefined) await worker.open()
          return migrateTables(runner(worker), target(o), plan())
        },
      }
      const spoolDir = engine.perWorker(o.spoolDir ? engine.resolvePath(o.spoolDir) : `${engine.stateDir}/spool/chdb`)
      const writer = await openTableWriter(writerOptions('chdb', o, spoolDir, engine, inserter, stats))
      // Retention follows the sites in use: a refreshed source may bring sites with their own.
      const retentionTimer = setInterval(() => {
        if (worker.version === undefined) return
        applyRetention(runner(worker), target(o), plan()).catch((error: unknown) =>
          engine.logger.warn('Could not apply retention; will try again.', {
            sink: 'chdb',
            error: (error as Error).message.split('\n')[0],
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
          clearInterval(retentionTimer)
          await writer.close()
          await release()
        },
        health: () => writer.health(problem),
      }
    },
    async migrate(o, engine) {
      // While the sink runs in this process, this is its worker and session.
      const { worker, release } = acquireChdb(pathOf(o, engine), module)
      try {
        await worker.open()
        return await migrateTables(runner(worker), target(o), retentionPlan(engine.sites))
      } finally {
        await release()
      }
    },
  })
}

export default createChdbSink()
