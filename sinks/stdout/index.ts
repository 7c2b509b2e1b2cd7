// The stdout sink (issue "Engine foundation" §5): one JSON object per row per line on stdout, the
// columns of spec/clickhouse-schema.md plus `_table`. Lines are batched and written off the request
// path; logs go to stderr, so stdout stays machine-readable.

import { Type } from '@sinclair/typebox'
import { EVENTS_TABLE, eventRow, type JsonRow, SESSIONS_TABLE, sessionRow } from '../../core/rows.ts'
import { defineSink } from '../../core/sink.ts'

/** Where lines go; tests and the benchmark swap it (e.g. for /dev/null). */
export interface LineWriter {
  write(chunk: string): Promise<void>
}

function stdoutWriter(): LineWriter {
  return {
    write: (chunk) =>
      new Promise<void>((done, fail) => {
        process.stdout.write(chunk, (error) => (error ? fail(error) : done()))
      }),
  }
}

const EVENTS_PREFIX = `{"_table":"${EVENTS_TABLE}",`
const SESSIONS_PREFIX = `{"_table":"${SESSIONS_TABLE}",`

/** `_table` first, so a reader can route a line before parsing the rest; spliced in, not spread. */
function line(prefix: string, row: JsonRow): string {
  return `${prefix}${JSON.stringify(row).slice(1)}\n`
}

export default defineSink({
  name: 'stdout',
  summary: 'Writes every row as one JSON line on stdout (events_v2 and sessions_v2, tagged by _table).',
  options: Type.Object(
    {
      batchRows: Type.Integer({ minimum: 1, default: 1000, description: 'Write once this many rows are waiting.' }),
      flushIntervalMs: Type.Integer({
        minimum: 1,
        default: 200,
        description: 'Write waiting rows at least this often (milliseconds).',
      }),
      tables: Type.Array(Type.Union([Type.Literal(EVENTS_TABLE), Type.Literal(SESSIONS_TABLE)]), {
        default: [EVENTS_TABLE, SESSIONS_TABLE],
        description: 'Which tables to print.',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options, _engine, stats) {
    return createLineSink(options, stats, stdoutWriter())
  },
})

export interface LineSinkOptions {
  batchRows: number
  flushIntervalMs: number
  tables: string[]
}

/** Lines per write: about half a megabyte, a millisecond or so of the event loop. */
const SLICE_LINES = 500

/** The stdout sink's machinery over any line writer. */
export function createLineSink(
  options: LineSinkOptions,
  stats: { rowsWritten: number; rowsFailed: number; recordBatch(seconds: number): void },
  writer: LineWriter,
) {
  const events = options.tables.includes(EVENTS_TABLE)
  const sessions = options.tables.includes(SESSIONS_TABLE)
  let lines: string[] = []
  let inFlight: Promise<void> | undefined
  let failing = false
  let timer: ReturnType<typeof setTimeout> | undefined

  const flush = async (): Promise<void> => {
    if (timer) {
      clearTimeout(timer)
      timer = undefined
    }
    // One write in flight: a second flush waits for the first, then writes what came meanwhile.
    while (inFlight) await inFlight
    if (lines.length === 0) return
    const batch = lines
    lines = []
    const started = performance.now()
    inFlight = writeSlices(batch).then((ok) => {
      if (ok) stats.recordBatch((performance.now() - started) / 1000)
    })
    try {
      await inFlight
    } finally {
      inFlight = undefined
    }
  }

  /**
   * Writes a batch a slice at a time: joining and writing 10,000 lines at once held the event loop
   * for 15-40 ms (measured), which every request arriving meanwhile waited out; between slices
   * requests are served.
   */
  const writeSlices = async (batch: string[]): Promise<boolean> => {
    let ok = true
    for (let start = 0; start < batch.length; start += SLICE_LINES) {
      const slice = batch.length <= SLICE_LINES ? batch : batch.slice(start, start + SLICE_LINES)
      try {
        await writer.write(slice.join(''))
        stats.rowsWritten += slice.length
        failing = false
      } catch {
        stats.rowsFailed += slice.length
        failing = true
        ok = false
      }
    }
    return ok
  }

  const schedule = () => {
    if (lines.length >= options.batchRows) void flush()
    else if (!timer) {
      timer = setTimeout(() => {
        timer = undefined
        void flush()
      }, options.flushIntervalMs)
    }
  }

  return {
    write(event: Parameters<typeof eventRow>[0]) {
      if (events) lines.push(line(EVENTS_PREFIX, eventRow(event)))
      if (sessions) for (const s of event.sessionRows) lines.push(line(SESSIONS_PREFIX, sessionRow(s)))
      schedule()
    },
    flush,
    close: flush,
    health: () => ({
      state: failing ? ('degraded' as const) : ('ok' as const),
      queuedRows: lines.length,
      ...(failing ? { detail: 'writing to stdout failed; rows were lost' } : {}),
    }),
  }
}
