// The `replay` command (docs/operators/replay.md): feeds recorded requests (NDJSON records, bare
// Plausible bodies, an nginx access log) through the configured pipeline exactly as live traffic,
// and rows the stdout sink printed straight to the configured sinks. Idempotent by record: every
// record gets an id, and ids go into a ledger under the state folder once the sinks have flushed
// what the record produced, in chunks.

import { createReadStream, statSync } from 'node:fs'
import type { Readable } from 'node:stream'
import { type Static, Type } from '@sinclair/typebox'
import type { Engine } from '../engine.ts'
import type { AnalyticsEvent } from '../event.ts'
import { resolveOptions } from '../options.ts'
import type { Drop, Ingest, IngestRequest, RunResult } from '../plugin.ts'
import { RouteTable } from '../routes.ts'
import { Ledger } from './ledger.ts'
import { type ProgressWriter, type ReplayCounts, startProgress } from './progress.ts'
import { type ParsedLine, parseAccessLogLine, parseNdjsonLine, type RequestRecord } from './records.ts'
import { canonicalRows, eventFromRow, sessionFromRow } from './rows.ts'

/** The command's options (its flags: `--chunk-size` is `chunkSize`); the CLI validates against it. */
export const ReplayOptionsSchema = Type.Object(
  {
    inputs: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      description: 'Files read in the order given; `-` is standard input.',
    }),
    format: Type.Union([Type.Literal('ndjson'), Type.Literal('access-log')], {
      default: 'ndjson',
      errorMessage: 'expected ndjson or access-log',
      description:
        '`ndjson`: request records, bare Plausible bodies and stdout-sink rows, mixed freely; `access-log`: the analytics_replay nginx format.',
    }),
    chunkSize: Type.Integer({
      minimum: 1,
      default: 1000,
      description:
        'Records per checkpoint: the sinks flush, then the chunk’s ids go into the ledger. Also the most records a SIGKILL can make write twice.',
    }),
    status: Type.Optional(
      Type.Array(Type.Integer({ minimum: 100, maximum: 599 }), {
        minItems: 1,
        description:
          'Access log only: replay only the lines nginx answered with one of these statuses (e.g. 502, 504).',
      }),
    ),
    progressIntervalMs: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'Progress every this many milliseconds. Default: 250 on a terminal, 1000 otherwise.',
      }),
    ),
  },
  { additionalProperties: false },
)

export type ReplayOptions = Static<typeof ReplayOptionsSchema>

const FLAGS: Record<string, string> = {
  inputs: 'INPUT',
  format: '--format',
  chunkSize: '--chunk-size',
  status: '--status',
  progressIntervalMs: '--progress-interval-ms',
}

/** Validates the gathered flags; the error names the flag (`--chunk-size: expected integer …`). */
export function resolveReplayOptions(raw: Record<string, unknown>): ReplayOptions | { error: string } {
  const resolved = resolveOptions<ReplayOptions>(ReplayOptionsSchema, raw, '')
  if (resolved.ok) return resolved.value
  const issue = resolved.issues[0]!
  const key = /^[A-Za-z]+/.exec(issue.path)?.[0] ?? ''
  if (key === 'inputs' && Array.isArray(raw.inputs) && raw.inputs.length === 0) {
    return { error: 'replay: name an input (- = stdin)' }
  }
  return { error: `replay ${FLAGS[key] ?? key}: ${issue.message}` }
}

export interface ReplayIo {
  stdin: Readable
  stderr: ProgressWriter
}

/** Exit codes, as documented. */
export const EXIT = { done: 0, invalidLines: 1, usage: 2, interrupted: 3, sinkFailed: 4 } as const

// A line longer than this is not a record (the body limit is 64 KiB by default); it is counted invalid.
const MAX_LINE_BYTES = 4 * 1024 * 1024
// Invalid lines listed in the summary; past it only counted.
const MAX_LISTED_INVALID = 1000

interface Line {
  text: string | undefined
  bytes: number
}

/** Lines of a stream, without their `\n`/`\r\n`; a too-long line comes as `text: undefined`. */
async function* readLines(stream: Readable, stopped: () => boolean): AsyncGenerator<Line> {
  let parts: Buffer[] = []
  let size = 0
  let tooLong = false
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let start = 0
      for (;;) {
        const nl = chunk.indexOf(10, start)
        if (nl < 0) break
        const piece = chunk.subarray(start, nl)
        const bytes = size + piece.length + 1
        if (tooLong || bytes > MAX_LINE_BYTES) yield { text: undefined, bytes }
        else yield { text: lineText(parts.length ? Buffer.concat([...parts, piece]) : piece), bytes }
        parts = []
        size = 0
        tooLong = false
        start = nl + 1
        if (stopped()) return
      }
      const rest = chunk.subarray(start)
      size += rest.length
      if (size > MAX_LINE_BYTES) {
        tooLong = true
        parts = []
      } else if (rest.length) parts.push(Buffer.from(rest))
    }
  } catch (error) {
    // Destroyed by a stop request: the cut-off line is left for the next run.
    if (stopped()) return
    throw error
  }
  // A last line without its newline is a line, unless the read was cut short.
  if (!stopped() && (size > 0 || tooLong)) {
    yield tooLong ? { text: undefined, bytes: size } : { text: lineText(Buffer.concat(parts)), bytes: size }
  }
}

function lineText(bytes: Buffer): string {
  const text = bytes.toString('utf8')
  return text.endsWith('\r') ? text.slice(0, -1) : text
}

/** A record's identity: everything the route would see, headers in name order. */
function canonicalRequest(r: RequestRecord): string {
  const headers = [...r.headers].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1))
  return JSON.stringify([
    r.method,
    r.path ?? '(plausible)',
    headers,
    r.body,
    r.timeGiven ? r.receivedAt : null,
    r.peerIp,
  ])
}

export async function runReplay(engine: Engine, options: ReplayOptions, io: ReplayIo): Promise<number> {
  const out = io.stderr
  const say = (text: string) => out.write(`${text}\n`)
  const startedAt = performance.now()
  const nowMs = Date.now()

  let bytesTotal: number | undefined = 0
  for (const input of options.inputs) {
    if (input === '-') {
      bytesTotal = undefined
      continue
    }
    try {
      const st = statSync(input)
      if (!st.isFile()) throw new Error('not a file')
      if (bytesTotal !== undefined) bytesTotal += st.size
    } catch {
      say(`replay: cannot read ${input}`)
      await engine.shutdown()
      return EXIT.usage
    }
  }

  let ledger: Ledger
  try {
    ledger = Ledger.open(`${engine.config.stateDir}/replay`)
  } catch (error) {
    say(`replay: ${(error as Error).message}`)
    await engine.shutdown()
    return EXIT.usage
  }

  const routes = new RouteTable(engine.routes)
  const plausible = engine.routes.find((r) => r.plugin === 'plausible' && r.route.method === 'POST')
  const bodyLimit = engine.config.server.bodyLimit
  const statuses = options.status === undefined ? undefined : new Set(options.status)

  const counts: ReplayCounts = {
    lines: 0,
    accepted: 0,
    dropped: 0,
    refused: 0,
    unrouted: 0,
    duplicates: 0,
    invalid: 0,
    filtered: 0,
  }
  const drops: Record<string, number> = {}
  const invalidLines: { line: string; reason: string }[] = []
  let bytesRead = 0

  const countDrop = (drop: Drop) => {
    counts.dropped++
    drops[drop.reason] = (drops[drop.reason] ?? 0) + 1
  }
  const tally = (outcomes: RunResult[]) => {
    for (const o of outcomes) {
      if (o === undefined) counts.accepted++
      else countDrop(o)
    }
  }
  // The engine's own ingest, counting outcomes on the way: the same path as a live request.
  const ingest: Ingest = {
    newEvent: (req, dialect) => engine.ingest.newEvent(req, dialect),
    process(events) {
      const outcomes = engine.ingest.process(events)
      if (Array.isArray(outcomes)) tally(outcomes)
      else
        return outcomes.then((settled) => {
          tally(settled)
          return settled
        })
      return outcomes
    },
    recordDrop(event, drop) {
      countDrop(drop)
      engine.ingest.recordDrop(event, drop)
    },
  }

  // Ids of this chunk, not yet in the ledger. Occurrences: how many records with the same content
  // came before in this run, so two identical records (two clicks in one second) stay two events.
  const pending = new Set<string>()
  const occurrences = new Map<string, number>()
  const idFor = (canonical: string, explicitId: string | undefined): string => {
    if (explicitId !== undefined) return ledger.idOf(`id\n${explicitId}`, 0)
    const base = ledger.idOf(canonical, 0)
    const n = occurrences.get(base) ?? 0
    occurrences.set(base, n + 1)
    return n === 0 ? base : ledger.idOf(canonical, n)
  }
  const seen = (id: string) => ledger.has(id) || pending.has(id)

  const failedRows = () => engine.sinks.reduce((n, s) => n + s.stats.rowsFailed, 0)
  let failedBefore = failedRows()
  let sinkLoss = false
  /** A replayed request the engine answered 5xx or failed on: not stored, so the run stops (exit 4). */
  let serverFailure = false
  /** Flushes the sinks; only then marks the chunk's records as replayed. */
  const checkpoint = async () => {
    if (sinkLoss) pending.clear()
    if (pending.size === 0) return
    await Promise.all(engine.sinks.map((s) => s.instance.flush()))
    const failed = failedRows()
    if (failed > failedBefore) {
      // Rows of this chunk may be lost: leave its records out of the ledger, so a rerun sends them.
      sinkLoss = true
      failedBefore = failed
      pending.clear()
      return
    }
    ledger.commit(pending)
    pending.clear()
  }

  /** Replays one request; returns why it is invalid when it cannot be made into a request at all. */
  const replayRequest = async (record: RequestRecord): Promise<string | undefined> => {
    const path = record.path ?? plausible?.route.path ?? '/api/event'
    let request: Request
    try {
      request = new Request(`http://localhost${path}`, {
        method: record.method,
        headers: record.headers as [string, string][],
        body: record.method === 'GET' ? undefined : record.body,
      })
    } catch {
      // No live request can carry these: a header value with a line break, a path that is no URL.
      return 'the path or a header value cannot be part of an HTTP request'
    }
    const id = idFor(canonicalRequest(record), record.explicitId)
    if (seen(id)) {
      counts.duplicates++
      return undefined
    }
    pending.add(id)
    const match = record.path === undefined && plausible === undefined ? undefined : routes.find(record.method, path)
    if (match === undefined) {
      counts.unrouted++
      return undefined
    }
    if (Buffer.byteLength(record.body) > bodyLimit) {
      counts.refused++
      return undefined
    }
    const req: IngestRequest = {
      request,
      body: record.body,
      params: match.params,
      peerIp: record.peerIp,
      receivedAt: record.receivedAt,
    }
    let status: number
    try {
      status = (await match.route.handle(req, ingest)).status
    } catch (error) {
      status = 500
      engine.logger.throttled('replay:route', 'error', 'A dialect failed on a replayed request.', {
        error: (error as Error).name,
      })
    }
    if (status >= 500) {
      // Not stored (a full spool under ack: durable, a dialect fault): a rerun must send it again.
      pending.delete(id)
      serverFailure = true
    }
    if (status >= 400) counts.refused++
    return undefined
  }

  // Rows printed by the stdout sink: an events_v2 row, then the sessions_v2 rows its event produced.
  let group: { event: AnalyticsEvent } | undefined
  const closeGroup = () => {
    if (group === undefined) return
    const { event } = group
    group = undefined
    const id = idFor(canonicalRows(event), undefined)
    if (seen(id)) {
      counts.duplicates++
      return
    }
    pending.add(id)
    for (const sink of engine.sinks) {
      try {
        sink.instance.write(event)
      } catch (error) {
        // The row is lost for this sink: the chunk must not be recorded, so a rerun sends it again.
        sinkLoss = true
        engine.logger.throttled(`replay:sink:${sink.name}`, 'error', 'A sink refused a replayed row.', {
          sink: sink.name,
          error: (error as Error).message?.slice(0, 200),
        })
      }
    }
    counts.accepted++
  }

  const invalid = (where: string, reason: string) => {
    counts.invalid++
    if (invalidLines.length < MAX_LISTED_INVALID) invalidLines.push({ line: where, reason })
  }

  const handle = async (parsed: ParsedLine | undefined, where: string) => {
    if (parsed === undefined) {
      counts.filtered++
      return
    }
    if (parsed.kind === 'row') {
      if (parsed.table === 'events_v2') {
        closeGroup()
        const event = eventFromRow(parsed.row)
        if (typeof event === 'string') return invalid(where, event)
        event.sessionRows = []
        group = { event }
      } else {
        if (group === undefined) return invalid(where, 'a sessions_v2 row without its events_v2 row before it')
        const session = sessionFromRow(parsed.row)
        if (typeof session === 'string') return invalid(where, session)
        group.event.sessionRows.push(session)
      }
      return
    }
    closeGroup()
    const problem = parsed.kind === 'invalid' ? parsed.reason : await replayRequest(parsed)
    if (problem !== undefined) invalid(where, problem)
  }

  // SIGTERM/SIGINT: stop reading, finish the record in hand, checkpoint, exit. A second signal waits.
  let stopRequested = false
  let current: Readable | undefined
  const onSignal = () => {
    if (stopRequested) return
    stopRequested = true
    current?.destroy()
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)

  const progress = startProgress(out, options.progressIntervalMs ?? (out.isTTY ? 250 : 1000), () => ({
    counts,
    bytesRead,
    bytesTotal,
    elapsedMs: performance.now() - startedAt,
  }))

  let failure: string | undefined
  try {
    for (const input of options.inputs) {
      if (stopRequested || sinkLoss || serverFailure) break
      const name = input === '-' ? 'stdin' : input
      const stream = input === '-' ? io.stdin : createReadStream(input)
      current = stream
      let lineNo = 0
      for await (const line of readLines(stream, () => stopRequested)) {
        lineNo++
        counts.lines++
        bytesRead += line.bytes
        const where = `${name}:${lineNo}`
        if (line.text === undefined) {
          closeGroup()
          invalid(where, `longer than ${MAX_LINE_BYTES} bytes`)
        } else if (line.text.trim() !== '') {
          await handle(
            options.format === 'ndjson'
              ? parseNdjsonLine(line.text, nowMs)
              : parseAccessLogLine(line.text, nowMs, { statuses }),
            where,
          )
        }
        if (pending.size >= options.chunkSize) await checkpoint()
        if (sinkLoss || serverFailure) break
      }
      if (input !== '-') stream.destroy()
    }
    // An unfinished row group at a stop may still miss session rows: it is left for the next run.
    if (!stopRequested && !sinkLoss && !serverFailure) closeGroup()
  } catch (error) {
    failure = (error as Error).message
  }
  try {
    // What was written before a stop or a read failure is recorded; a chunk a sink lost rows of is not.
    await checkpoint()
  } catch (error) {
    failure ??= (error as Error).message
  } finally {
    progress.stop()
    await engine.shutdown()
    ledger.close()
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
  }

  const status = failure
    ? 'failed'
    : sinkLoss || serverFailure
      ? 'sink_failed'
      : stopRequested
        ? 'interrupted'
        : counts.invalid
          ? 'done_with_invalid_lines'
          : 'done'
  const summary = {
    replay: status,
    ...counts,
    drops,
    elapsedMs: Math.round(performance.now() - startedAt),
    ledgerIds: ledger.size,
    invalidLines,
    ...(counts.invalid > invalidLines.length ? { invalidLinesNotListed: counts.invalid - invalidLines.length } : {}),
    ...(failure ? { error: failure } : {}),
  }
  if (out.isTTY) {
    say(
      `replay ${status.replaceAll('_', ' ')}: ${counts.accepted} accepted, ${counts.dropped} dropped, ${counts.refused} refused, ${counts.unrouted} unrouted, ${counts.duplicates} duplicates, ${counts.invalid} invalid`,
    )
    for (const { line, reason } of invalidLines) say(`  invalid ${line}: ${reason}`)
    if (summary.invalidLinesNotListed) say(`  … and ${summary.invalidLinesNotListed} more invalid lines`)
    if (stopRequested) say('Interrupted: run the same command again to resume.')
  } else out.write(`${JSON.stringify(summary)}\n`)

  if (failure) return EXIT.sinkFailed
  if (sinkLoss || serverFailure) return EXIT.sinkFailed
  if (stopRequested) return EXIT.interrupted
  return counts.invalid ? EXIT.invalidLines : EXIT.done
}
