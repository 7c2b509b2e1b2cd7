// NDJSON → Parquet through the embedded ClickHouse (chdb), which writes Parquet natively. The column
// types are those of spec/clickhouse-schema.md, so a reader gets UInt64 ids, DateTime, FixedString,
// Nullable(Decimal64(3)) and arrays, not strings. DateTime is read as UTC: core/rows.ts writes UTC text.

import { EVENTS_TABLE } from '../../core/rows.ts'
import { acquireChdb, type ChdbWorker } from '../chdb/protocol.ts'
import { type Column, EVENT_COLUMNS, ident, literal, SESSION_COLUMNS } from '../clickhouse/schema.ts'

/** The `file()` structure of a table's rows. */
export function structureOf(table: string): string {
  const columns: readonly Column[] = table === EVENTS_TABLE ? EVENT_COLUMNS : SESSION_COLUMNS
  return columns.map((c) => `${ident(c.name)} ${c.type === 'DateTime' ? "DateTime('UTC')" : c.type}`).join(', ')
}

export interface ParquetWriter {
  /** Writes `target` (Parquet) from `source` (NDJSON rows of `table`); rejects when chdb fails. */
  convert(table: string, source: string, target: string): Promise<void>
  close(): Promise<void>
}

/**
 * The converter on the shared chdb worker for `path` (chdb allows one data folder per process: the
 * `chdb` sink with the same folder shares this worker). Opened on first use, and again after a failure.
 */
export function parquetWriter(path: string, module = 'chdb'): ParquetWriter {
  let held: { worker: ChdbWorker; release(): Promise<void> } | undefined
  return {
    async convert(table, source, target) {
      held ??= acquireChdb(path, module)
      if (held.worker.version === undefined) await held.worker.open()
      const structure = literal(structureOf(table))
      await held.worker.call({
        op: 'exec',
        sql:
          `INSERT INTO FUNCTION file(${literal(target)}, 'Parquet', ${structure}) ` +
          `SELECT * FROM file(${literal(source)}, 'JSONEachRow', ${structure}) ` +
          // In the query, not SET: the session may be the chdb sink's too.
          'SETTINGS input_format_skip_unknown_fields = 0, engine_file_truncate_on_insert = 1',
      })
    },
    async close() {
      await held?.release()
      held = undefined
    },
  }
}
