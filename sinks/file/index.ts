// The `file` sink (issue #12 §5 "Exports"): the rows of events_v2 and sessions_v2 as files, NDJSON or
// Parquet (written by the embedded ClickHouse, chdb), one file per table per rotation, rotated by size
// and by age. Files are written under a temporary `.partial` name and renamed when complete, so a
// reader (a sync job, a warehouse loader) never sees half a file. See writer.ts for the file life.

import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { isAbsolute, join } from 'node:path'
import { Type } from '@sinclair/typebox'
import { ConfigError } from '../../core/plugin.ts'
import { EVENTS_TABLE, eventRow, SESSIONS_TABLE, sessionRow } from '../../core/rows.ts'
import { defineSink } from '../../core/sink.ts'
import { type ParquetWriter, parquetWriter } from './parquet.ts'
import { PARTIAL, TableFile } from './writer.ts'

const PLACEHOLDERS = ['table', 'date', 'hour', 'start'] as const

const options = Type.Object(
  {
    folder: Type.String({ default: '', description: 'Folder of the files; empty = <stateDir>/exports.' }),
    pattern: Type.String({
      default: '{table}/{date}/{table}-{start}',
      minLength: 1,
      description:
        'File path inside folder, without extension: {table}, {date} (YYYY-MM-DD), {hour} (HH), {start} (YYYYMMDDThhmmssZ), UTC at opening.',
    }),
    format: Type.Union([Type.Literal('ndjson'), Type.Literal('parquet')], {
      default: 'ndjson',
      description:
        'ndjson: one row per line, as core/rows.ts makes it; parquet: typed columns of the ClickHouse schema.',
    }),
    tables: Type.Array(Type.Union([Type.Literal(EVENTS_TABLE), Type.Literal(SESSIONS_TABLE)]), {
      default: [EVENTS_TABLE, SESSIONS_TABLE],
      description: 'Which tables to export, each to its own files.',
    }),
    rotateBytes: Type.Integer({
      minimum: 1024,
      default: 64 * 1024 * 1024,
      description:
        'Start a new file once the current one holds this many bytes (of NDJSON; Parquet comes out smaller).',
    }),
    rotateSeconds: Type.Integer({
      minimum: 1,
      default: 3600,
      description: 'Start a new file once the current one is this old (from its first row).',
    }),
    flushIntervalMs: Type.Integer({
      minimum: 10,
      default: 1000,
      description: 'Rows are appended and fsync-ed at least this often.',
    }),
    chdbPath: Type.String({
      default: '',
      description:
        'Parquet only: folder of the embedded engine; empty = <stateDir>/chdb. Use the chdb sink`s path when both run (one chdb folder per process).',
    }),
  },
  { additionalProperties: false },
)

/** `20260102T030405Z` */
function compact(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace(/[-:]/g, '')}Z`
}

function checkPattern(pattern: string): void {
  for (const match of pattern.matchAll(/\{([^}]*)\}/g)) {
    if (!(PLACEHOLDERS as readonly string[]).includes(match[1]!)) {
      throw new ConfigError(
        'pattern',
        `unknown placeholder {${match[1]}} (known: ${PLACEHOLDERS.map((p) => `{${p}}`).join(', ')})`,
      )
    }
  }
  const literal = pattern.replace(/\{(table|date|hour|start)\}/g, '')
  if (isAbsolute(pattern) || pattern.split('/').some((segment) => segment === '..' || segment === '')) {
    throw new ConfigError('pattern', 'must be a relative path inside folder (no leading /, no .., no empty segment)')
  }
  // chdb's file() reads * ? { } as globs: keep them out of names Parquet conversion must address.
  if (/[*?{}\\'\n]/.test(literal)) throw new ConfigError('pattern', 'must not contain * ? { } \\ quotes or newlines')
}

/** Every `.partial` file under `folder` (relative paths): staging files a previous run left. */
async function leftovers(folder: string): Promise<string[]> {
  const names = await readdir(folder, { recursive: true }).catch(() => [] as string[])
  return names.filter((n) => n.endsWith(PARTIAL))
}

/**
 * The sink definition; `module` is the chdb package the Parquet conversion loads (tests name a missing
 * one to see rows survive a chdb that cannot load).
 */
export function createFileSink(module = 'chdb') {
  return defineSink({
    name: 'file',
    summary: 'Writes rows to NDJSON or Parquet files, rotated by size and age, published complete by rename.',
    options,
    async setup(o, engine, stats) {
      checkPattern(o.pattern)
      if (o.tables.length > 1 && !o.pattern.includes('{table}')) {
        throw new ConfigError('pattern', 'must contain {table} when more than one table is exported')
      }
      const folder = engine.perWorker(o.folder ? engine.resolvePath(o.folder) : join(engine.stateDir, 'exports'))
      if (/[*?{}\\'\n]/.test(folder)) throw new ConfigError('folder', 'must not contain * ? { } \\ quotes or newlines')
      const extension = o.format === 'parquet' ? 'parquet' : 'ndjson'
      const left = await leftovers(folder)
      const parquet: ParquetWriter | undefined =
        o.format === 'parquet' || left.some((name) => name.endsWith(`.parquet${PARTIAL}`))
          ? parquetWriter(
              engine.perWorker(o.chdbPath ? engine.resolvePath(o.chdbPath) : join(engine.stateDir, 'chdb')),
              module,
            )
          : undefined
      const taken = new Set<string>()
      const nextPath = (table: string): string => {
        const now = new Date()
        const iso = now.toISOString()
        const base = join(
          folder,
          o.pattern.replace(/\{(table|date|hour|start)\}/g, (_, key: string) =>
            key === 'table'
              ? table
              : key === 'date'
                ? iso.slice(0, 10)
                : key === 'hour'
                  ? iso.slice(11, 13)
                  : compact(now),
          ),
        )
        // Two files in one second, or a restart within it: a counter keeps names unique.
        for (let n = 0; ; n++) {
          const path = `${base}${n === 0 ? '' : `-${n}`}.${extension}`
          if (!taken.has(path) && !existsSync(path) && !existsSync(path + PARTIAL)) {
            taken.add(path)
            return path
          }
        }
      }
      const files = new Map<string, TableFile>(
        o.tables.map((table) => [
          table,
          new TableFile({
            table,
            rotateBytes: o.rotateBytes,
            rotateSeconds: o.rotateSeconds,
            nextPath,
            parquet,
            stats,
            logger: engine.logger,
          }),
        ]),
      )
      // A previous run killed before it could publish: its staging files are complete up to the last line.
      if (left.length > 0) {
        engine.logger.info('Publishing export files a previous run left unfinished.', {
          sink: 'file',
          files: left.length,
        })
        const any = files.values().next().value as TableFile | undefined
        for (const name of left) {
          // The name says the table (the pattern holds {table} when two tables share a folder).
          const table = [EVENTS_TABLE, SESSIONS_TABLE].find((t) => name.includes(t)) ?? o.tables[0]!
          await (files.get(table) ?? any)?.recover(join(folder, name), table)
        }
      }
      const events = files.get(EVENTS_TABLE)
      const sessions = files.get(SESSIONS_TABLE)
      const all = [...files.values()]
      const flushAll = () => Promise.all(all.map((f) => f.flush())).then(() => {})
      const timer = setInterval(() => flushAll().catch(() => {}), o.flushIntervalMs)
      timer.unref?.()
      let closed = false
      return {
        write(event) {
          if (closed) {
            stats.rowsFailed++
            return
          }
          events?.add(JSON.stringify(eventRow(event)))
          if (sessions) for (const s of event.sessionRows) sessions.add(JSON.stringify(sessionRow(s)))
        },
        flush: flushAll,
        async close() {
          closed = true
          clearInterval(timer)
          // Every file is finished and published: nothing stays half-written at shutdown.
          await Promise.all(all.map((f) => f.rotate()))
          await parquet?.close()
          // Rows the disk refused to the end: counted and said, not silently gone.
          const unwritten = all.reduce((n, f) => n + f.queuedRows, 0)
          if (unwritten > 0) {
            stats.rowsFailed += unwritten
            engine.logger.error('File sink closed with rows the disk refused; they are lost.', {
              sink: 'file',
              rows: unwritten,
            })
          }
        },
        health() {
          const problems = all.filter((f) => f.problem !== undefined)
          const dropped = all.reduce((n, f) => n + f.droppedRows, 0)
          const queuedRows = all.reduce((n, f) => n + f.queuedRows, 0)
          const failing = dropped > 0 || problems.some((f) => f.problem!.startsWith('writing'))
          const state = failing ? 'failing' : problems.length > 0 ? 'degraded' : 'ok'
          const parts = problems.map((f) => f.problem!)
          if (dropped > 0) parts.push(`${dropped} rows dropped`)
          return { state, queuedRows, ...(parts.length > 0 ? { detail: parts.join('; ') } : {}) }
        },
      }
    },
  })
}

export default createFileSink()
