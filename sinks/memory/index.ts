// The memory sink: keeps rows in memory, for tests of the engine and of users' own plugins.

import { Type } from '@sinclair/typebox'
import type { CounterRow } from '../../core/drop-counters.ts'
import { eventRow, type JsonRow, sessionRow } from '../../core/rows.ts'
import { defineSink, type SinkInstance } from '../../core/sink.ts'

export interface MemorySinkInstance extends SinkInstance {
  /** events_v2 rows in the order they were accepted. */
  readonly events: JsonRow[]
  /** sessions_v2 rows in the order they were written. */
  readonly sessions: JsonRow[]
  /** ingest_counters rows as the engine handed them over (not summed). */
  readonly counters: CounterRow[]
  clear(): void
}

export default defineSink({
  name: 'memory',
  summary: 'Keeps rows in memory (for tests); bounded near maxRows, the oldest trimmed in chunks.',
  options: Type.Object(
    {
      maxRows: Type.Integer({ minimum: 1, default: 100000, description: 'Rows kept per table before the oldest go.' }),
    },
    { additionalProperties: false },
  ),
  setup(options, _engine, stats): MemorySinkInstance {
    const events: JsonRow[] = []
    const sessions: JsonRow[] = []
    const counters: CounterRow[] = []
    const push = (list: JsonRow[], row: JsonRow) => {
      list.push(row)
      // Trim in chunks: shifting one row per write would be O(n) each.
      if (list.length > options.maxRows * 1.25) list.splice(0, list.length - options.maxRows)
      stats.rowsWritten++
    }
    return {
      events,
      sessions,
      counters,
      clear() {
        events.length = 0
        sessions.length = 0
        counters.length = 0
      },
      writeCounters(rows) {
        counters.push(...rows)
      },
      write(event) {
        push(events, eventRow(event))
        for (const s of event.sessionRows) push(sessions, sessionRow(s))
      },
      flush: async () => {},
      // A test sink: rows are "kept" as soon as they are written, so ack: durable can be tested with it.
      sync: async () => {},
      close: async () => {},
      health: () => ({ state: 'ok', queuedRows: 0 }),
    }
  },
})
