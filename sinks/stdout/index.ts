// The stdout sink (issue "Engine foundation" §5): one JSON object per row per line on stdout, the
// columns of spec/clickhouse-schema.md plus `_table`. Lines are batched and written off the request
// path; logs go to stderr, so stdout stays machine-readable.

import { Type } from '@sinclair/typebox'
import type { AnalyticsEvent } from '../../core/event.ts'
import { JsonLines } from '../../core/row-lines.ts'
import { EVENTS_TABLE, SESSIONS_TABLE } from '../../core/rows.ts'
import { defineSink } from '../../core/sink.ts'

/**
 * Where lines go; tests swap it. A chunk is whole lines of UTF-8; the sink reuses its memory once
 * the promise settles, so a writer that keeps it must copy it.
 */
export interface LineWriter {
  write(chunk: Uint8Array): Promise<void>
}

function stdoutWriter(): LineWriter {
  return {
    write: (chunk) =>
      new Promise<void>((done, fail) => {
        process.stdout.write(chunk, (error) => (error ? fail(error) : done()))
      }),
  }
}

/** `_table` first, so a reader can route a line before parsing the rest. */
const EVENTS_OPEN = new TextEncoder().encode(`{"_table":"${EVENTS_TABLE}",`)
const SESSIONS_OPEN = new TextEncoder().encode(`{"_table":"${SESSIONS_TABLE}",`)

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
  const lines = new JsonLines()
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
    if (lines.lines === 0) return
    const batch = lines.take()
    const started = performance.now()
    inFlight = writeSlices(batch.bytes, batch.ends).then((ok) => {
      lines.recycle(batch.bytes)
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
  const writeSlices = async (bytes: Uint8Array, ends: number[]): Promise<boolean> => {
    let ok = true
    for (let first = 0; first < ends.length; first += SLICE_LINES) {
      const last = Math.min(first + SLICE_LINES, ends.length) - 1
      const count = last - first + 1
      try {
        await writer.write(bytes.subarray(first === 0 ? 0 : ends[first - 1], ends[last]))
        stats.rowsWritten += count
        failing = false
      } catch {
        stats.rowsFailed += count
        failing = true
        ok = false
      }
    }
    return ok
  }

  const schedule = () => {
    if (lines.lines >= options.batchRows) void flush()
    else if (!timer) {
      timer = setTimeout(() => {
        timer = undefined
        void flush()
      }, options.flushIntervalMs)
    }
  }

  return {
    write(event: AnalyticsEvent) {
      if (events) lines.event(event, EVENTS_OPEN)
      if (sessions) for (const s of event.sessionRows) lines.session(s, SESSIONS_OPEN)
      schedule()
    },
    flush,
    close: flush,
    health: () => ({
      state: failing ? ('degraded' as const) : ('ok' as const),
      queuedRows: lines.lines,
      ...(failing ? { detail: 'writing to stdout failed; rows were lost' } : {}),
    }),
  }
}
