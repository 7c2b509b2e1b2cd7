// Delivery to one webhook destination: batching, up to `concurrency` requests in flight, retries with
// capped exponential backoff and jitter, the on-disk spool of the ClickHouse sinks (../spool/spool.ts)
// and its dead-letter file.
//
//   add() ─► items ─(batchSize or flushIntervalMs)─► sealed batches ─► POST (≤ concurrency) ─► done
//                                                         │ failure            ▲
//                                                         ▼                    │ replay, oldest first,
//                                                       spool on disk ─────────┘ one at a time
//
// - A batch keeps its id from sealing to delivery, through the spool and restarts; it is sent as the
//   `Idempotency-Key` header on every attempt, so a receiver that saw a timed-out attempt can dedupe.
// - While the spool holds anything, or the destination is failing, new batches go to the spool. The
//   backlog replays one batch at a time: a destination that just came back gets one request, not a
//   burst, and order within the backlog is kept. With concurrency > 1 batches may arrive out of order.
// - 2xx delivers. 408, 425, 429, 5xx, timeouts and network errors are retried forever (429/503 honour
//   Retry-After up to retryMaxMs). Any other answer (3xx, 4xx) refuses the batch for good: it goes to
//   the dead-letter file, counted, and the queue moves on.

import { randomUUID } from 'node:crypto'
import type { Logger } from '../../core/logger.ts'
import type { SinkHealth, SinkStats } from '../../core/sink.ts'
import {
  type DeadLetterFile,
  deadLetterBatch,
  type Spool,
  SpoolCorruptError,
  type SpoolEntry,
  spoolProblemOf,
} from '../spool/spool.ts'

export interface Batch {
  id: string
  rows: number
  payload: Uint8Array
}

export interface DispatchOptions {
  url: string
  /** Scheme, host and port of the URL: what logs and health may show (the path may hold a secret). */
  origin: string
  headers: Record<string, string>
  contentType: string
  /** How items become one request body. */
  encode(items: string[]): string
  batchSize: number
  flushIntervalMs: number
  timeoutMs: number
  concurrency: number
  retryInitialMs: number
  retryMaxMs: number
  spool: Spool
  deadLetters: DeadLetterFile
  stats: SinkStats
  logger: Logger
  sink: string
}

/** Why an attempt failed: `refused` is final (dead letter), `transient` is retried. */
interface Failure {
  kind: 'refused' | 'transient'
  /** A short sentence for logs and health: a status or an error code, never the body or the URL. */
  summary: string
  /** For the dead-letter file: the status and the start of the answer. */
  message: string
  /** Retry-After in milliseconds, when the destination sent one. */
  retryAfterMs?: number
}

const RETRIED_STATUSES = new Set([408, 425, 429])
const encoder = new TextEncoder()

/** Seal numbers of batches not yet delivered, spooled, dead-lettered or dropped. */
type Unsettled = Set<number>

export class Dispatcher {
  private items: string[] = []
  private timer: ReturnType<typeof setTimeout> | undefined
  /** Sealed batches waiting in memory, oldest first, with their seal number. */
  private readonly memory: { seq: number; batch: Batch }[] = []
  private memoryRows = 0
  private inFlight = 0
  /** A spooled batch is being sent (the backlog replays one at a time). */
  private replaying = false
  /** Memory batches are being moved to the spool. */
  private spilling = false
  private failure: Failure | undefined
  private retryDelay = 0
  private retryAt = 0
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  private spoolProblem: string | undefined
  private droppedRows = 0
  private closing = false
  private sealed = 0
  private readonly unsettled: Unsettled = new Set()
  private waiters: { target: number; resolve: () => void }[] = []
  private readonly memoryLimitRows: number

  constructor(private readonly o: DispatchOptions) {
    this.memoryLimitRows = Math.max(o.batchSize * 5, 50_000)
    // A backlog left by a previous run replays at once.
    queueMicrotask(() => this.pump())
  }

  /** Buffers one encoded item; seals at batchSize, else within flushIntervalMs. Never waits. */
  add(item: string): void {
    if (this.closing) {
      this.o.stats.rowsFailed++
      this.o.logger.throttled(`${this.o.sink}:closed`, 'error', 'Row written after the sink closed.', {
        sink: this.o.sink,
      })
      return
    }
    this.items.push(item)
    if (this.items.length >= this.o.batchSize) this.seal()
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined
        this.seal()
      }, this.o.flushIntervalMs)
      this.timer.unref?.()
    }
  }

  /** Seals what is buffered; resolves once every batch sealed so far is delivered or on disk. */
  async flush(): Promise<void> {
    this.seal()
    const target = this.sealed
    if (this.settledUpTo(target) || this.stuck()) return
    await new Promise<void>((resolve) => this.waiters.push({ target, resolve }))
  }

  /**
   * Delivers what memory holds when the destination is healthy, else spools it; waits for requests in
   * flight (each bounded by timeoutMs). A spool backlog stays on disk for the next start.
   */
  async close(): Promise<void> {
    this.seal()
    this.closing = true
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer)
    this.pump()
    await new Promise<void>((resolve) => {
      const check = () => {
        if (
          this.inFlight === 0 &&
          !this.replaying &&
          !this.spilling &&
          (this.memory.length === 0 || this.cannotDrain())
        ) {
          resolve()
        } else setTimeout(check, 10)
      }
      check()
    })
    if (this.memoryRows > 0) {
      this.o.stats.rowsFailed += this.memoryRows
      this.o.logger.error('Sink closed with rows it could neither deliver nor spool; they are lost.', {
        sink: this.o.sink,
        destination: this.o.origin,
        rows: this.memoryRows,
        reason: this.spoolProblem,
      })
      for (const m of this.memory) this.settle(m.seq)
      this.memory.length = 0
      this.memoryRows = 0
    }
    this.notify()
  }

  health(): SinkHealth {
    const parts: string[] = []
    const spooled = this.o.spool.rows
    if (this.spoolProblem) {
      parts.push(`${this.spoolProblem}: ${this.memoryRows} rows held in memory, ${this.droppedRows} dropped`)
    }
    if (this.failure) parts.push(`${this.o.origin}: ${this.failure.summary}; retrying`)
    if (spooled > 0) parts.push(`${spooled} rows spooled`)
    const state =
      this.spoolProblem || this.droppedRows > 0 ? 'failing' : this.failure || spooled > 0 ? 'degraded' : 'ok'
    return {
      state,
      ...(parts.length > 0 ? { detail: parts.join('; ') } : {}),
      queuedRows: this.items.length + this.memoryRows,
      spoolBytes: this.o.spool.bytes,
    }
  }

  private seal(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    if (this.items.length === 0) return
    const rows = this.items.length
    const batch: Batch = { id: randomUUID(), rows, payload: encoder.encode(this.o.encode(this.items)) }
    this.items = []
    const seq = ++this.sealed
    if (this.spoolProblem !== undefined && this.memoryRows + rows > this.memoryLimitRows) {
      this.droppedRows += rows
      this.o.stats.rowsFailed += rows
      this.o.logger.throttled(
        `${this.o.sink}:drop`,
        'error',
        'Dropping rows: the destination is failing and the spool is full.',
        { sink: this.o.sink, destination: this.o.origin, rows, reason: this.spoolProblem },
      )
      this.notify()
      return
    }
    this.unsettled.add(seq)
    this.memory.push({ seq, batch })
    this.memoryRows += rows
    this.pump()
  }

  /** Starts whatever work is possible now; called after every change of state. */
  private pump(): void {
    const waiting = this.failure !== undefined && Date.now() < this.retryAt
    const backlog = this.o.spool.records > 0
    // A failing destination or a backlog: new batches queue on disk, behind the backlog. A spool that
    // refused is tried again only once something changed (a delivery freed room, a retry came due).
    const spill = this.memory.length > 0 && (waiting || backlog || (this.closing && this.failure !== undefined))
    if (spill && !this.spilling && this.spoolProblem === undefined) {
      void this.spill()
      return
    }
    if (this.spilling) return
    if (waiting) {
      if (!this.closing) this.armRetry()
      return
    }
    if (backlog) {
      if (!this.replaying && !this.closing && this.inFlight === 0) void this.replay()
      return
    }
    while (this.memory.length > 0 && this.inFlight < this.o.concurrency) {
      // While a failure is unresolved, one probe at a time.
      if (this.failure !== undefined && this.inFlight > 0) return
      const next = this.memory.shift()!
      this.memoryRows -= next.batch.rows
      void this.sendFromMemory(next)
    }
  }

  private armRetry(): void {
    if (this.retryTimer !== undefined) return
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = undefined
        this.pump()
      },
      Math.max(0, this.retryAt - Date.now()),
    )
    // A retry alone must not keep the process alive; the engine's lifetime decides.
    this.retryTimer.unref?.()
  }

  private async sendFromMemory(entry: { seq: number; batch: Batch }): Promise<void> {
    this.inFlight++
    const retry = this.failure !== undefined
    const failure = await this.attempt(entry.batch, retry)
    this.inFlight--
    try {
      if (!failure) this.succeeded(entry.batch)
      else if (failure.kind === 'refused') await this.deadLetter(entry.batch, failure)
      else {
        this.fail(failure)
        // Back to the head of memory: the next pump spools it (the destination is now failing).
        this.memory.unshift(entry)
        this.memoryRows += entry.batch.rows
        return
      }
      this.settle(entry.seq)
    } finally {
      this.pump()
    }
  }

  private async replay(): Promise<void> {
    this.replaying = true
    try {
      const entry = this.o.spool.peek()
      if (!entry) return
      const batch = await this.readSpooled(entry)
      if (!batch) return
      const failure = await this.attempt(batch, this.failure !== undefined)
      if (!failure) {
        this.succeeded(batch)
        await this.o.spool.ack(entry)
      } else if (failure.kind === 'refused') {
        await this.deadLetter(batch, failure)
        await this.o.spool.ack(entry)
      } else this.fail(failure)
    } catch (error) {
      // A disk error under the spool: back off like a failed request rather than spin.
      this.fail({ kind: 'transient', summary: `spool read failed: ${String(error)}`, message: String(error) })
    } finally {
      this.replaying = false
      this.pump()
    }
  }

  /** Moves memory batches to the spool, oldest first, as far as the spool takes them. */
  private async spill(): Promise<void> {
    this.spilling = true
    try {
      while (this.memory.length > 0) {
        const head = this.memory[0]!
        try {
          await this.o.spool.append(head.batch)
        } catch (error) {
          const problem = spoolProblemOf(error)
          if (this.spoolProblem !== problem) {
            this.o.logger.error('Sink cannot spool; holding rows in memory.', {
              sink: this.o.sink,
              destination: this.o.origin,
              reason: problem,
              spool: this.o.spool.dir,
            })
          }
          this.spoolProblem = problem
          this.notify()
          return
        }
        this.spoolProblem = undefined
        this.memory.shift()
        this.memoryRows -= head.batch.rows
        this.settle(head.seq)
      }
    } finally {
      this.spilling = false
      this.pump()
    }
  }

  private async attempt(batch: Batch, retry: boolean): Promise<Failure | undefined> {
    if (retry) this.o.stats.retries++
    const started = performance.now()
    let response: Response
    try {
      response = await fetch(this.o.url, {
        method: 'POST',
        headers: {
          ...this.o.headers,
          'content-type': this.o.contentType,
          'idempotency-key': batch.id,
          'user-agent': 'analytics-ingest-webhook',
        },
        body: batch.payload as Uint8Array<ArrayBuffer>,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.o.timeoutMs),
      })
    } catch (error) {
      const e = error as { name?: string; code?: string }
      const summary =
        e.name === 'TimeoutError' ? `no answer within ${this.o.timeoutMs} ms` : `request failed: ${e.code ?? e.name}`
      return { kind: 'transient', summary, message: summary }
    }
    // The answer's body is only read for the dead-letter file; it may echo the payload, never logged.
    const text = await response.text().catch(() => '')
    if (response.ok) {
      this.o.stats.recordBatch((performance.now() - started) / 1000)
      return undefined
    }
    const status = response.status
    const summary = `HTTP ${status}`
    const message = `HTTP ${status}: ${text.slice(0, 500)}`
    if (status >= 500 || RETRIED_STATUSES.has(status)) {
      const retryAfterMs = retryAfter(response.headers.get('retry-after'))
      return { kind: 'transient', summary, message, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) }
    }
    return { kind: 'refused', summary, message }
  }

  private succeeded(batch: Batch): void {
    this.o.stats.rowsWritten += batch.rows
    // A delivery frees spool room or drains what memory held: let the next pump try the spool again.
    this.spoolProblem = undefined
    if (this.failure !== undefined) {
      this.o.logger.info('Webhook destination accepts again.', { sink: this.o.sink, destination: this.o.origin })
    }
    this.failure = undefined
    this.retryDelay = 0
  }

  private fail(failure: Failure): void {
    if (this.failure?.summary !== failure.summary) {
      this.o.logger.warn('Webhook delivery failed; retrying with backoff and spooling meanwhile.', {
        sink: this.o.sink,
        destination: this.o.origin,
        error: failure.summary,
      })
    }
    this.failure = failure
    this.retryDelay = this.retryDelay === 0 ? this.o.retryInitialMs : Math.min(this.retryDelay * 2, this.o.retryMaxMs)
    // Jitter spreads the retries of many engines after a shared outage.
    let delay = this.retryDelay * (0.8 + Math.random() * 0.4)
    if (failure.retryAfterMs !== undefined) delay = Math.min(Math.max(delay, failure.retryAfterMs), this.o.retryMaxMs)
    this.retryAt = Math.max(this.retryAt, Date.now() + delay)
  }

  private async readSpooled(entry: SpoolEntry): Promise<Batch | undefined> {
    try {
      return { id: entry.id, rows: entry.rows, payload: await this.o.spool.read(entry) }
    } catch (error) {
      if (!(error instanceof SpoolCorruptError)) throw error
      const failure: Failure = { kind: 'refused', summary: error.message, message: error.message }
      await this.deadLetter({ id: entry.id, rows: entry.rows, payload: new Uint8Array() }, failure)
      await this.o.spool.ack(entry)
      return undefined
    }
  }

  private async deadLetter(batch: Batch, failure: Failure): Promise<void> {
    this.o.stats.deadLetters++
    this.o.stats.rowsFailed += batch.rows
    await deadLetterBatch(
      this.o.deadLetters,
      this.o.logger,
      'Webhook destination refused a batch',
      {
        table: this.o.sink,
        id: batch.id,
        rows: batch.rows,
        error: failure.message,
        summary: failure.summary,
        payload: batch.payload,
      },
      { sink: this.o.sink, destination: this.o.origin },
    )
  }

  /** Memory cannot drain: the destination fails and the spool refuses. flush() must not wait for that. */
  private stuck(): boolean {
    return this.failure !== undefined && this.spoolProblem !== undefined
  }

  /** At close: memory can go neither to the destination (failing, or behind a backlog) nor to disk. */
  private cannotDrain(): boolean {
    return this.spoolProblem !== undefined && (this.failure !== undefined || this.o.spool.records > 0)
  }

  private settledUpTo(target: number): boolean {
    for (const seq of this.unsettled) if (seq <= target) return false
    return true
  }

  private settle(seq: number): void {
    this.unsettled.delete(seq)
    this.notify()
  }

  private notify(): void {
    if (this.waiters.length === 0) return
    const stuck = this.stuck()
    this.waiters = this.waiters.filter((w) => {
      if (stuck || this.settledUpTo(w.target)) {
        w.resolve()
        return false
      }
      return true
    })
  }
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date. */
function retryAfter(value: string | null): number | undefined {
  if (!value) return undefined
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now())
}
