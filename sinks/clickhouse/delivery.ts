// Batching, retries, spooling and dead letters for one table (spec/clickhouse-schema.md "Writing";
// research/scale-out.md §3.4). Shared by the `clickhouse` and `chdb` sinks, which only differ in how
// a batch is inserted.
//
// A lane is a buffer of JSON lines plus one delivery loop:
//
//   add() ─► lines ─(batchRows or flushIntervalMs)─► sealed batches in memory ─► insert ─► done
//                                                          │  failure          ▲
//                                                          ▼                   │ replay, oldest first
//                                                        spool on disk ────────┘
//
// - One loop per lane, so one insert in flight per table and no two steps ever race on the queue.
// - Order is kept: while the spool holds anything, new batches go behind it, on disk.
// - A batch keeps its identity (`id`) from sealing to delivery, through the spool and any restart;
//   inserters send it as insert_deduplication_token where the server supports one.
// - Transient failures are retried forever with capped exponential backoff; malformed batches go to
//   the dead-letter file, counted; nothing else is ever dropped, except when the spool is full and the
//   memory allowance is spent too, which is counted in rowsFailed and logged.
// - An insert that finds its database or table missing (a server that was down or empty when the
//   engine started, so the start-up migration could not run) makes the lane ask the inserter to
//   create them, at most once per attempt, and retry that insert at once.

import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { type Static, type TObject, Type } from '@sinclair/typebox'
import type { CounterRow } from '../../core/drop-counters.ts'
import type { AnalyticsEvent } from '../../core/event.ts'
import type { Logger } from '../../core/logger.ts'
import { ConfigError, type EngineServices } from '../../core/plugin.ts'
import { DurabilityError, type SinkHealth, type SinkStats } from '../../core/sink.ts'
import {
  DeadLetterFile,
  deadLetterBatch,
  Spool,
  SpoolBudget,
  SpoolCorruptError,
  type SpoolEntry,
  spoolProblemOf,
} from '../spool/spool.ts'
import { counterLine, eventLine, sessionLine } from './encode.ts'
import { classify, type Failure } from './errors.ts'

/** A sealed batch: JSONEachRow bytes and their stable identity. */
export interface Batch {
  id: string
  rows: number
  payload: Uint8Array
}

/** How a sink puts one batch into one table. Throws on failure; `classify` (errors.ts) reads the error. */
export interface Inserter {
  insert(table: string, batch: Batch): Promise<void>
  /**
   * Creates the database and tables (the sink's own migration) and returns what it did. Lanes call it
   * when an insert fails with UNKNOWN_DATABASE or UNKNOWN_TABLE, then retry that insert once; both
   * lanes may call at the same time. Absent: such a failure waits for an operator's `migrate`.
   */
  createMissing?(): Promise<string[]>
}

/** UNKNOWN_TABLE, UNKNOWN_DATABASE: nothing was written, and the migration creates what is missing. */
const MISSING_CODES = new Set([60, 81])

export interface LaneOptions {
  /** The table name, for the inserter, logs and dead letters. */
  table: string
  batchRows: number
  flushIntervalMs: number
  retryInitialMs: number
  retryMaxMs: number
  spool: Spool
  deadLetters: DeadLetterFile
  inserter: Inserter
  stats: SinkStats
  logger: Logger
  /** The sink's name, for logs. */
  sink: string
  /**
   * `ack: durable`: every row goes through the spool, fsynced before `sync()` resolves (group
   * commit); records of one batch share its id, so a retry, or a replay after a crash, sends the
   * identical batch with the identical token.
   */
  durable?: boolean
}

export interface LaneHealth {
  queuedRows: number
  /** The last failure, while it has not been followed by a success. */
  failure: Failure | undefined
  /** The spool cannot take more (full, or a disk error). */
  spoolProblem: string | undefined
  spooledRows: number
  droppedRows: number
  /** Spooled rows are the normal path (`ack: durable`), not a backlog. */
  durable: boolean
}

const encoder = new TextEncoder()
/** Sealed batches kept in memory while the server keeps up; more go to the spool (a slow server). */
const MEMORY_BATCHES = 3

export class Lane {
  private lines: string[] = []
  private timer: ReturnType<typeof setTimeout> | undefined
  /** Sealed batches not yet delivered nor spooled, oldest first. The head may be in flight. */
  private readonly memory: Batch[] = []
  private memoryRows = 0
  /** Whether the last attempt failed; cleared by the next success. */
  private failure: Failure | undefined
  private retryDelay = 0
  private retryAt = 0
  private spoolProblem: string | undefined
  private droppedRows = 0
  private closing = false
  private poke: (() => void) | undefined
  /** Batches sealed so far, and batches that left memory (delivered, spooled, dead-lettered, dropped). */
  private sealed = 0
  private settled = 0
  private waiters: { target: number; resolve: () => void }[] = []
  private readonly loop: Promise<void>
  private readonly memoryLimitRows: number
  // ---- ack: durable ----
  /** The batch the next committed rows join; closed (undefined) once due or being delivered. */
  private group: { id: string; rows: number; startedAt: number } | undefined
  /** The latest commit (append + fsync) and the one that will take the rows added since. */
  private lastCommit: Promise<void> = Promise.resolve()
  private pendingCommit: Promise<void> | undefined
  /** When the open group is due for delivery (the loop sleeps until then); 0 = none. */
  private dueAt = 0

  constructor(private readonly o: LaneOptions) {
    // While the spool cannot take batches, memory holds a few more before new ones are dropped.
    this.memoryLimitRows = Math.max(o.batchRows * 5, 50_000)
    this.loop = this.run()
  }

  /** Buffers one JSON line; seals a batch at `batchRows`, else within `flushIntervalMs`. Never waits. */
  add(line: string): void {
    if (this.closing) {
      // The engine closes sinks last; a row arriving later is a bug upstream, counted rather than thrown.
      this.o.stats.rowsFailed++
      this.o.logger.throttled(`${this.o.sink}:${this.o.table}:closed`, 'error', 'Row written after the sink closed.', {
        sink: this.o.sink,
        table: this.o.table,
      })
      return
    }
    this.lines.push(line)
    if (this.o.durable) {
      // Rows nobody waits for (counters) still reach the disk within the interval.
      if (this.timer === undefined) {
        this.timer = setTimeout(() => {
          this.timer = undefined
          this.sync().catch(() => {})
        }, this.o.flushIntervalMs)
        this.timer.unref?.()
      }
      return
    }
    if (this.lines.length >= this.o.batchRows) this.seal()
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined
        this.seal()
      }, this.o.flushIntervalMs)
      this.timer.unref?.()
    }
  }

  /**
   * `ack: durable`: resolves once every row added so far is fsynced in the spool; rejects with a
   * DurabilityError when the spool refuses (the rows stay in memory and are tried again). Rows added
   * while a commit runs join the next one, so concurrent requests share one fsync.
   */
  sync(): Promise<void> {
    if (!this.o.durable) return this.flush()
    if (this.lines.length === 0) return this.lastCommit
    if (!this.pendingCommit) {
      const next = this.lastCommit
        .catch(() => {})
        .then(() => {
          this.pendingCommit = undefined
          return this.commit()
        })
      this.pendingCommit = next
      this.lastCommit = next
    }
    return this.pendingCommit
  }

  private async commit(): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    const lines = this.lines
    if (lines.length === 0) return
    this.lines = []
    const now = Date.now()
    const group = this.group
    // A commit joins the open batch only if the batch stays within batchRows: a replay after a crash
    // may insert the batch in flight twice (18.16), and `batchRows` is what bounds that damage.
    const open =
      group !== undefined &&
      group.rows + lines.length <= this.o.batchRows &&
      now < group.startedAt + this.o.flushIntervalMs
    const target = open ? group : { id: randomUUID(), rows: 0, startedAt: now }
    this.group = target
    target.rows += lines.length
    try {
      await this.o.spool.append({ id: target.id, rows: lines.length, payload: encoder.encode(lines.join('\n')) })
    } catch (error) {
      target.rows -= lines.length
      // Their requests are answered 503 "not stored": keeping the rows would store an event its
      // sender may send again, and a backlog larger than the spool's room could never be committed.
      this.droppedRows += lines.length
      this.o.stats.rowsFailed += lines.length
      const problem = this.spoolRefused(
        error,
        'Sink cannot make rows durable; answering 503 (not stored) until the spool takes them.',
      )
      throw new DurabilityError(`${this.o.table}: ${problem}`)
    }
    this.spoolProblem = undefined
    this.wake()
  }

  /** Seals what is buffered and resolves once every batch sealed so far is delivered or on disk. */
  async flush(): Promise<void> {
    if (this.o.durable) return this.sync()
    this.seal()
    const target = this.sealed
    if (this.settled >= target || this.stuck()) return
    await new Promise<void>((resolve) => {
      this.waiters.push({ target, resolve })
      this.wake()
    })
  }

  /** Delivers or spools everything, stops the loop. A spool backlog stays on disk for the next start. */
  async close(): Promise<void> {
    if (this.closing) return this.loop
    if (this.o.durable) await this.sync().catch(() => {})
    else this.seal()
    this.closing = true
    this.wake()
    await this.loop
    if (this.o.durable && this.lines.length > 0) {
      // The spool refused them to the end; their requests were answered 503.
      this.o.stats.rowsFailed += this.lines.length
      this.o.logger.error('Sink closed with rows the spool refused; they are lost (their requests got 503).', {
        sink: this.o.sink,
        table: this.o.table,
        rows: this.lines.length,
        reason: this.spoolProblem,
      })
      this.lines = []
    }
    if (this.memoryRows > 0) {
      // Only when the spool refused: nothing else can keep these rows.
      this.o.stats.rowsFailed += this.memoryRows
      this.o.logger.error('Sink closed with rows it could neither deliver nor spool; they are lost.', {
        sink: this.o.sink,
        table: this.o.table,
        rows: this.memoryRows,
        reason: this.spoolProblem,
      })
      this.memory.length = 0
      this.memoryRows = 0
    }
  }

  health(): LaneHealth {
    return {
      queuedRows: this.lines.length + this.memoryRows,
      failure: this.failure,
      spoolProblem: this.spoolProblem,
      spooledRows: this.o.spool.rows,
      droppedRows: this.droppedRows,
      durable: this.o.durable === true,
    }
  }

  private seal(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    if (this.lines.length === 0) return
    const rows = this.lines.length
    const batch: Batch = { id: randomUUID(), rows, payload: encoder.encode(this.lines.join('\n')) }
    this.lines = []
    this.sealed++
    if (this.spoolProblem !== undefined && this.memoryRows + rows > this.memoryLimitRows) {
      this.settle()
      this.droppedRows += rows
      this.o.stats.rowsFailed += rows
      this.o.logger.throttled(
        `${this.o.sink}:${this.o.table}:drop`,
        'error',
        'Dropping rows: the server is failing and the spool is full.',
        {
          sink: this.o.sink,
          table: this.o.table,
          rows,
          reason: this.spoolProblem,
        },
      )
      return
    }
    this.memory.push(batch)
    this.memoryRows += rows
    this.wake()
  }

  private wake(): void {
    const poke = this.poke
    this.poke = undefined
    poke?.()
  }

  /** Waits for a poke (new batch, flush, close) or, while failing, for the next retry time. */
  private sleep(): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      this.poke = () => {
        if (timer !== undefined) clearTimeout(timer)
        resolve()
      }
      const until = this.failure !== undefined ? this.retryAt : this.dueAt
      if (until > 0) {
        timer = setTimeout(
          () => {
            this.poke = undefined
            resolve()
          },
          Math.max(0, until - Date.now()),
        )
        // The server's lifetime is the engine's business; a retry alone must not keep a process alive.
        timer.unref?.()
      }
    })
  }

  private async run(): Promise<void> {
    for (;;) {
      try {
        const finished = this.o.durable ? await this.stepDurable() : await this.step()
        this.notify()
        if (finished) return
      } catch (error) {
        // A bug or a disk error in the loop itself: keep the loop alive and back off.
        this.o.logger.error('Sink delivery loop failed; retrying.', { sink: this.o.sink, table: this.o.table, error })
        this.fail(classify(error))
      }
      await this.sleep()
    }
  }

  /** Does all the work possible now. Returns true when closing is complete. */
  private async step(): Promise<boolean> {
    for (;;) {
      const waiting = this.failure !== undefined && Date.now() < this.retryAt
      // While anything waits on disk, or the server is failing or slow, new batches join the disk queue.
      // Closing with a healthy server and an empty spool delivers memory instead (spilled on failure).
      const backlog = this.o.spool.records > 0 || (!this.closing && this.memory.length > MEMORY_BATCHES)
      if (this.memory.length > 0 && (waiting || backlog)) await this.spill()
      if (waiting) return this.closing
      if (this.closing && this.o.spool.records > 0) return true
      // Records that share an id are one batch (written by ack: durable; a switch back to received
      // must not send them apart under one token, which a deduplicating server would half drop).
      const run = this.headRun()
      let batch: Batch | undefined
      if (run.length > 0) {
        batch = await this.readRun(run)
        if (!batch) continue
      } else {
        batch = this.memory[0]
        if (!batch) return this.closing
      }
      if ((await this.deliver(batch)) === 'retry') continue
      await this.remove(run, batch)
    }
  }

  /**
   * One delivery of a batch and its bookkeeping: the insert (after creating a missing database or
   * table once). `retry` when it failed for now (backoff set); `done` when the batch left: written,
   * or dead-lettered as malformed.
   */
  private async deliver(batch: Batch): Promise<'done' | 'retry'> {
    if (this.failure !== undefined) this.o.stats.retries++
    let started = performance.now()
    let failure = await this.attempt(batch)
    // Missing database or table: nothing was written, so create them and try this batch once more.
    if (failure?.code !== undefined && MISSING_CODES.has(failure.code) && (await this.createMissing(failure))) {
      this.o.stats.retries++
      started = performance.now()
      failure = await this.attempt(batch)
    }
    if (failure) {
      if (failure.kind !== 'malformed') {
        this.fail(failure)
        return 'retry'
      }
      await this.deadLetter(batch, failure)
      return 'done'
    }
    this.o.stats.rowsWritten += batch.rows
    this.o.stats.recordBatch((performance.now() - started) / 1000)
    if (this.failure !== undefined) {
      this.o.logger.info('Sink delivers again.', { sink: this.o.sink, table: this.o.table })
    }
    this.failure = undefined
    this.retryDelay = 0
    return 'done'
  }

  /**
   * `ack: durable`: delivers the spool's head batch (its records share one id) once the batch is
   * closed: full, older than flushIntervalMs, or closing. Returns true when closing is complete.
   */
  private async stepDurable(): Promise<boolean> {
    for (;;) {
      this.dueAt = 0
      if (this.failure !== undefined && Date.now() < this.retryAt) return this.closing
      let run = this.headRun()
      if (run.length === 0) return this.closing
      const group = this.group
      if (group !== undefined && group.id === run[0]!.id) {
        const due = group.startedAt + this.o.flushIntervalMs
        if (!this.closing && group.rows < this.o.batchRows && Date.now() < due) {
          this.dueAt = due
          return false
        }
        // Closed: later rows start another batch. A commit in flight may still add to this one.
        this.group = undefined
        await this.lastCommit.catch(() => {})
        run = this.headRun()
      }
      const batch = await this.readRun(run)
      if (!batch) continue
      if ((await this.deliver(batch)) === 'retry') continue
      await this.o.spool.ackBatch(run)
    }
  }

  /** The spool's oldest records that share the first one's id: one batch. */
  private headRun(): SpoolEntry[] {
    const run: SpoolEntry[] = []
    for (const entry of this.o.spool.entries()) {
      if (run.length > 0 && entry.id !== run[0]!.id) break
      run.push(entry)
    }
    return run
  }

  /**
   * The records of one batch as one payload, or undefined when none could be read. A record that
   * fails its checksum goes to the dead letters alone (and is acknowledged with the others).
   */
  private async readRun(run: SpoolEntry[]): Promise<Batch | undefined> {
    const parts: Uint8Array[] = []
    let rows = 0
    for (const entry of run) {
      try {
        parts.push(await this.o.spool.read(entry))
        rows += entry.rows
      } catch (error) {
        if (!(error instanceof SpoolCorruptError)) throw error
        const failure: Failure = { kind: 'malformed', code: undefined, summary: error.message, message: error.message }
        await this.deadLetter({ id: entry.id, rows: entry.rows, payload: new Uint8Array() }, failure)
      }
    }
    if (parts.length === 0) {
      await this.o.spool.ackBatch(run)
      return undefined
    }
    return { id: run[0]!.id, rows, payload: joinLines(parts) }
  }

  /** One insert; the failure, or undefined on success. */
  private async attempt(batch: Batch): Promise<Failure | undefined> {
    try {
      await this.o.inserter.insert(this.o.table, batch)
      return undefined
    } catch (error) {
      return classify(error)
    }
  }

  /** Runs the inserter's migration after `failure` (a missing database or table); true when it ran. */
  private async createMissing(failure: Failure): Promise<boolean> {
    if (!this.o.inserter.createMissing) return false
    try {
      const actions = await this.o.inserter.createMissing()
      this.o.logger.info('An insert found its database or table missing; the sink migrated and retries.', {
        sink: this.o.sink,
        table: this.o.table,
        error: failure.summary,
        actions,
      })
      return true
    } catch (error) {
      this.o.logger.throttled(
        `${this.o.sink}:${this.o.table}:create-missing`,
        'warn',
        'An insert found its database or table missing and the migration failed; retrying with backoff.',
        { sink: this.o.sink, table: this.o.table, error: failure.summary, migration: classify(error).summary },
      )
      return false
    }
  }

  private async remove(run: SpoolEntry[], batch: Batch): Promise<void> {
    if (run.length > 0) {
      await this.o.spool.ackBatch(run)
      return
    }
    this.memory.shift()
    this.memoryRows -= batch.rows
    // Nothing held in memory any more: whatever the spool refused has been delivered.
    if (this.memory.length === 0) this.spoolProblem = undefined
    this.settle()
  }

  private fail(failure: Failure): void {
    if (this.failure === undefined || this.failure.summary !== failure.summary) {
      this.o.logger.warn('Sink insert failed; retrying with backoff and spooling meanwhile.', {
        sink: this.o.sink,
        table: this.o.table,
        error: failure.summary,
        kind: failure.kind,
      })
    }
    this.failure = failure
    this.retryDelay = this.retryDelay === 0 ? this.o.retryInitialMs : Math.min(this.retryDelay * 2, this.o.retryMaxMs)
    // Jitter spreads the retries of many engines after a shared outage.
    this.retryAt = Date.now() + this.retryDelay * (0.8 + Math.random() * 0.4)
  }

  /** Records why the spool refused an append, logging `message` once per new reason; returns the reason. */
  private spoolRefused(error: unknown, message: string): string {
    const problem = spoolProblemOf(error)
    if (this.spoolProblem !== problem) {
      this.o.logger.error(message, { sink: this.o.sink, table: this.o.table, reason: problem, spool: this.o.spool.dir })
    }
    this.spoolProblem = problem
    return problem
  }

  /** Moves memory batches to the spool, oldest first, as far as the spool takes them. */
  private async spill(): Promise<void> {
    while (this.memory.length > 0) {
      const batch = this.memory[0]!
      try {
        await this.o.spool.append(batch)
      } catch (error) {
        this.spoolRefused(error, 'Sink cannot spool; holding rows in memory.')
        return
      }
      this.spoolProblem = undefined
      this.memory.shift()
      this.memoryRows -= batch.rows
      this.settle()
    }
  }

  private async deadLetter(batch: Batch, failure: Failure): Promise<void> {
    this.o.stats.deadLetters++
    this.o.stats.rowsFailed += batch.rows
    await deadLetterBatch(
      this.o.deadLetters,
      this.o.logger,
      'Server rejected a batch as malformed',
      {
        table: this.o.table,
        id: batch.id,
        rows: batch.rows,
        error: failure.message,
        summary: failure.summary,
        payload: batch.payload,
      },
      { sink: this.o.sink, table: this.o.table },
    )
  }

  /** Memory cannot drain: the server fails and the spool refuses. flush() must not wait for that. */
  private stuck(): boolean {
    return this.failure !== undefined && this.spoolProblem !== undefined
  }

  private settle(): void {
    this.settled++
    this.notify()
  }

  private notify(): void {
    if (this.waiters.length === 0) return
    const stuck = this.stuck()
    this.waiters = this.waiters.filter((w) => {
      if (this.settled >= w.target || stuck || this.closing) {
        w.resolve()
        return false
      }
      return true
    })
  }
}

/** JSONEachRow payloads joined by newlines into one. */
function joinLines(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!
  let size = parts.length - 1
  for (const p of parts) size += p.length
  const out = new Uint8Array(size)
  let offset = 0
  parts.forEach((p, i) => {
    if (i > 0) out[offset++] = 10
    out.set(p, offset)
    offset += p.length
  })
  return out
}

/**
 * The sink's health from its lanes: `failing` when rows cannot be kept (spool full or broken) or
 * `problem` says so, `degraded` while inserts fail or a spool backlog replays, `ok` otherwise.
 */
export function summarizeHealth(
  lanes: readonly { table: string; lane: Lane }[],
  budget: SpoolBudget,
  problem?: { state: 'degraded' | 'failing'; detail: string },
): SinkHealth {
  let queuedRows = 0
  let failing = problem?.state === 'failing'
  let degraded = problem !== undefined
  const parts: string[] = problem ? [problem.detail] : []
  for (const { table, lane } of lanes) {
    const h = lane.health()
    queuedRows += h.queuedRows
    if (h.spoolProblem) {
      failing = true
      parts.push(`${table}: ${h.spoolProblem}, ${h.queuedRows} rows held in memory, ${h.droppedRows} dropped`)
    }
    if (h.failure) {
      degraded = true
      const hint = h.failure.kind === 'schema' ? ' (run the migrate command)' : ''
      parts.push(`${table}: inserts failing: ${h.failure.summary}${hint}; retrying`)
    }
    if (h.spooledRows > 0 && !h.durable) {
      degraded = true
      parts.push(`${table}: ${h.spooledRows} rows spooled`)
    }
  }
  return {
    state: failing ? 'failing' : degraded ? 'degraded' : 'ok',
    ...(parts.length > 0 ? { detail: parts.join('; ') } : {}),
    queuedRows,
    spoolBytes: budget.usedBytes,
    spoolLimitBytes: budget.limitBytes,
  }
}

export interface WriterOptions {
  sink: string
  /** Folder of the spool; one sub-folder per table. */
  spoolDir: string
  spoolLimitBytes: number
  deadLetterFile: string
  eventsTable: string
  sessionsTable: string
  /** Empty = no counters lane. */
  countersTable: string
  batchRows: number
  flushIntervalMs: number
  retryMaxMs: number
  inserter: Inserter
  stats: SinkStats
  logger: Logger
  /** `ack: durable`: every row is fsynced in the spool before `sync()` resolves. */
  durable: boolean
}

/** A ClickHouse identifier: what database and table names may be. */
export const IDENTIFIER = '^[A-Za-z_][A-Za-z0-9_]*$'

/** The options the ClickHouse-shaped sinks (`clickhouse`, `chdb`) share; each spreads them into its schema. */
export const deliveryOptions = {
  eventsTable: Type.String({ default: 'events_v2', pattern: IDENTIFIER, description: 'Table of events.' }),
  sessionsTable: Type.String({ default: 'sessions_v2', pattern: IDENTIFIER, description: 'Table of sessions.' }),
  countersTable: Type.String({
    default: 'ingest_counters',
    pattern: '^([A-Za-z_][A-Za-z0-9_]*)?$',
    description: 'Table of drops per minute, site and reason (SummingMergeTree); empty = do not keep them.',
  }),
  batchRows: Type.Integer({
    minimum: 1,
    maximum: 1_000_000,
    default: 10_000,
    description: 'Rows per insert; a batch is written when it is full or flushIntervalMs after its first row.',
  }),
  flushIntervalMs: Type.Integer({
    minimum: 10,
    default: 1000,
    description: 'Longest time a row waits in memory before its batch is written.',
  }),
  retryMaxMs: Type.Integer({
    minimum: 10,
    default: 30_000,
    description: 'Cap of the exponential backoff between retries of a failed insert (they go on forever).',
  }),
  spoolLimitMb: Type.Integer({
    minimum: 1,
    default: 1024,
    description: 'Disk the spool may use (MiB); past it, rows wait in memory, then are dropped and counted.',
  }),
  deadLetterFile: Type.String({
    default: '',
    description: 'File of batches rejected as malformed (JSON lines); empty = <spoolDir>/dead-letters.ndjson.',
  }),
}

/** The shared options, as configs spell them. */
export type DeliveryConfig = Static<TObject<typeof deliveryOptions>>

/** WriterOptions from a sink's options: the dead-letter file defaults to one beside the spool. */
export function writerOptions(
  sink: string,
  o: DeliveryConfig,
  spoolDir: string,
  engine: Pick<EngineServices, 'resolvePath' | 'logger' | 'ack'>,
  inserter: Inserter,
  stats: SinkStats,
): WriterOptions {
  return {
    sink,
    spoolDir,
    spoolLimitBytes: o.spoolLimitMb * 1024 * 1024,
    deadLetterFile: o.deadLetterFile ? engine.resolvePath(o.deadLetterFile) : `${spoolDir}/dead-letters.ndjson`,
    eventsTable: o.eventsTable,
    sessionsTable: o.sessionsTable,
    countersTable: o.countersTable,
    batchRows: o.batchRows,
    flushIntervalMs: o.flushIntervalMs,
    retryMaxMs: o.retryMaxMs,
    inserter,
    stats,
    logger: engine.logger,
    durable: engine.ack === 'durable',
  }
}

/** The lanes of a ClickHouse-shaped sink (events, sessions, drop counters), fed from events. */
export interface TableWriter {
  write(event: AnalyticsEvent): void
  /** Absent when the sink keeps no counters. */
  writeCounters?(rows: readonly CounterRow[]): void
  /** `ack: durable`: every row written so far is on disk (fsynced) when this resolves. */
  sync(): Promise<void>
  flush(): Promise<void>
  close(): Promise<void>
  health(problem?: { state: 'degraded' | 'failing'; detail: string }): SinkHealth
}

/**
 * Opens the spools (replaying what a previous run left) and starts one lane per table. A spool folder
 * that cannot be opened is a configuration error: without it "nothing lost" cannot hold.
 */
export async function openTableWriter(o: WriterOptions): Promise<TableWriter> {
  const budget = new SpoolBudget(o.spoolLimitBytes)
  const tables = [o.eventsTable, o.sessionsTable]
  if (o.countersTable) tables.push(o.countersTable)
  let spools: Spool[]
  try {
    spools = await Promise.all(tables.map((t) => Spool.open(join(o.spoolDir, t), budget, { logger: o.logger })))
  } catch (error) {
    throw new ConfigError('spoolDir', `cannot open the spool folder ${o.spoolDir}: ${(error as Error).message}`)
  }
  let deadLetters: DeadLetterFile
  try {
    deadLetters = new DeadLetterFile(o.deadLetterFile)
  } catch (error) {
    throw new ConfigError('deadLetterFile', `cannot create ${o.deadLetterFile}: ${(error as Error).message}`)
  }
  const lanes = tables.map((table, i) => ({
    table,
    lane: new Lane({
      table,
      batchRows: o.batchRows,
      flushIntervalMs: o.flushIntervalMs,
      retryInitialMs: Math.min(100, o.retryMaxMs),
      retryMaxMs: o.retryMaxMs,
      spool: spools[i]!,
      deadLetters,
      inserter: o.inserter,
      stats: o.stats,
      logger: o.logger,
      sink: o.sink,
      durable: o.durable,
    }),
  }))
  const spooled = spools.reduce((n, s) => n + s.rows, 0)
  if (spooled > 0) {
    o.logger.info('Replaying rows spooled by a previous run.', { sink: o.sink, rows: spooled, spool: o.spoolDir })
  }
  const [events, sessions, counters] = [lanes[0]!.lane, lanes[1]!.lane, lanes[2]?.lane]
  return {
    write(event) {
      events.add(eventLine(event))
      // The -1/+1 rows of a session update, in the order the sessions plugin made them.
      for (const row of event.sessionRows) sessions.add(sessionLine(row))
    },
    writeCounters: counters
      ? (rows) => {
          for (const row of rows) counters.add(counterLine(row))
        }
      : undefined,
    async flush() {
      await Promise.all(lanes.map((l) => l.lane.flush()))
    },
    async sync() {
      await Promise.all(lanes.map((l) => l.lane.sync()))
    },
    async close() {
      await Promise.all(lanes.map((l) => l.lane.close()))
      await Promise.all(spools.map((s) => s.close()))
    },
    health: (problem) => summarizeHealth(lanes, budget, problem),
  }
}
