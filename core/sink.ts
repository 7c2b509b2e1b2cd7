// The sink contract (design.md "sink"). Sinks receive every accepted event, turn it into rows at once
// (core/rows.ts) and write them in batches off the request path.

import type { Static, TSchema } from '@sinclair/typebox'
import type { CounterRow } from './drop-counters.ts'
import type { AnalyticsEvent } from './event.ts'
import type { EngineServices } from './plugin.ts'

export interface SinkHealth {
  /** `ok`; `degraded` while retrying or spooling; `failing` when the sink can no longer keep rows. */
  state: 'ok' | 'degraded' | 'failing'
  /** A sentence for operators; never personal data. */
  detail?: string
  /** Rows waiting in memory. */
  queuedRows?: number
  /** Bytes spooled on disk, and the spool's limit. */
  spoolBytes?: number
  spoolLimitBytes?: number
}

/** Counters the core exports as metrics for each sink. Sinks update them; the core reads them. */
export class SinkStats {
  rowsWritten = 0
  rowsFailed = 0
  batches = 0
  retries = 0
  deadLetters = 0
  /** Seconds each batch took, as a list to fold into a histogram on scrape. */
  readonly batchSeconds: number[] = []
  recordBatch(seconds: number): void {
    this.batches++
    if (this.batchSeconds.length < 10_000) this.batchSeconds.push(seconds)
  }
}

export interface SinkInstance {
  /**
   * Takes an accepted event (its row and its session rows). Must return at once: buffer, never wait.
   * The event and its rows are read-only here, and nothing changes them after this call (several
   * sinks get the same objects; core/row-lines.ts compares a row with the one written before it).
   */
  write(event: AnalyticsEvent): void
  /** Writes (or spools) everything buffered so far. */
  flush(): Promise<void>
  /** Flushes and releases the sink; nothing accepted may be lost. */
  close(): Promise<void>
  health(): SinkHealth
  /**
   * Per-site drop counts (`ingest_counters`), handed over about every ten seconds and at shutdown
   * before `close`. Optional: only sinks that can store them implement it; drops never reach `write`.
   */
  writeCounters?(rows: readonly CounterRow[]): void
  /**
   * `ack: durable`: resolves once every event written so far is on disk (fsynced), so that a crash
   * loses nothing answered 202; rejects with a DurabilityError when it cannot be (the spool is full
   * or failing), which the engine answers with 503. A sink without it cannot serve `ack: durable`.
   */
  sync?(): Promise<void>
}

export interface SinkDefinition<S extends TSchema = TSchema> {
  name: string
  summary: string
  options: S
  setup(options: Static<S>, engine: EngineServices, stats: SinkStats): SinkInstance | Promise<SinkInstance>
  /**
   * Creates or upgrades the sink's storage idempotently (the `migrate` command, and `serve` at start
   * unless told not to). Returns one line per action for the operator.
   */
  migrate?(options: Static<S>, engine: EngineServices): Promise<string[]>
}

export function defineSink<S extends TSchema>(definition: SinkDefinition<S>): SinkDefinition<S> {
  return definition
}

/** An event could not be made durable (`ack: durable`: the spool is full or failing); answered 503. */
export class DurabilityError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'DurabilityError'
  }
}

/**
 * The process holding a request's events stopped abruptly (a worker of `serve --workers` killed)
 * before answering: they may or may not be stored. Sending them again could store them twice, so the
 * request is answered 503 like a request cut by the kill itself.
 */
export class InterruptedError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'InterruptedError'
  }
}
