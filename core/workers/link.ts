// One owner per visitor between the workers of `serve --workers N` (issue "Scale out", research/
// scale-out.md §3.2). The kernel spreads connections, not visitors, over the workers. So the worker
// that accepts a request parses it with its dialect, runs the parse and identify steps on its
// events (they keep no state; this is how the configured pipeline learns the client IP), and
// computes the owner of the first event's client IP (owner.ts; a request is one client). When
// another worker owns it, the events go to the owner over a persistent Unix socket (frames.ts); the
// owner runs the rest of the pipeline (sessions, rate limits, sinks, and the durable commit under
// `ack: durable`) and answers each event's verdict, from which the accepting worker's dialect
// answers the client as usual. The owner never forwards again.
//
// An owner that cannot be reached (restarting) is waited for up to HOLD_MS, then its requests are
// processed locally, counted: a session may split, no event is lost. An owner that stops gracefully
// answers what it took and says goodbye: what it did not answer was not processed and goes to its
// successor. An owner that dies (kill -9) may have stored events it never answered for: those
// requests are answered 503 (InterruptedError), as if they had been on the dead worker's own
// connections, and never sent again, so no event is stored twice.
//
// The same sockets carry /metrics requests, so the worker asked on the network can sum every
// worker's series into one view.

import { chmodSync, rmSync } from 'node:fs'
import type { AnalyticsEvent } from '../event.ts'
import type { Logger } from '../logger.ts'
import type { Drop, RunResult } from '../plugin.ts'
import { DurabilityError, InterruptedError } from '../sink.ts'
import type { SiteTable } from '../sites.ts'
import {
  decodeEvents,
  type EventsFrame,
  encodeEvents,
  FrameWriter,
  LineReader,
  type MetricsFrame,
  type ReplyFrame,
} from './frames.ts'
import { sumMetrics } from './metrics-sum.ts'
import { ownerOf } from './owner.ts'
import { socketPath, type WorkerRun } from './supervisor.ts'

/** How long collecting another worker's metrics may take before its share is left out. */
const METRICS_TIMEOUT_MS = 2_000
/** How often a worker tries to reach an owner that is away. */
const RETRY_CONNECT_MS = 25
/**
 * How long requests wait for an owner that is away (restarting: about 0.3–1 s here) before the
 * worker that accepted them processes them itself.
 */
const HOLD_MS = 3_000

export interface LinkCounters {
  /** Requests sent to their owner. */
  forwarded: number
  /** Requests processed here because their owner could not be reached. */
  fallback: number
  /** Requests other workers forwarded here. */
  received: number
  /** Forwarded requests whose owner died before answering (answered 503, never sent again). */
  interrupted: number
}

export interface LinkDeps {
  run: WorkerRun
  sites: SiteTable
  /** The first step after the identify stage (Pipeline.ownerStep). */
  ownerStep: number
  /** Steps before ownerStep on one event, counting nothing (Pipeline.runPrefix). */
  runPrefix(event: AnalyticsEvent): boolean | Promise<boolean>
  /** The rest of the pipeline and, under `ack: durable`, the commit. */
  processFrom(events: AnalyticsEvent[], starts?: readonly number[]): RunResult[] | Promise<RunResult[]>
  /** This worker's own /metrics text. */
  metricsText(): string
  logger: Logger
  counters: LinkCounters
}

type Pending =
  | {
      kind: 'events'
      events: AnalyticsEvent[]
      starts: number[]
      resolve(r: RunResult[] | PromiseLike<RunResult[]>): void
    }
  | { kind: 'metrics'; resolve(text: string | undefined): void }

interface ClientSocket {
  write(data: Uint8Array): number
  end(): void
}

/** This worker's connection to one owner. */
class OwnerConnection {
  private socket: ClientSocket | undefined
  private writer: FrameWriter | undefined
  private connecting = false
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  /** Since when the owner cannot be reached (undefined: it can, or nothing was tried yet). */
  private downSince: number | undefined
  private lastAttempt = 0
  private generation = 0
  private nextId = 1
  /**
   * Not answered, in id order, with their frames. `written`: handed to a connection, so the owner
   * may have processed it; the others are sent once a connection is up.
   */
  private readonly pending = new Map<number, { request: Pending; line: string; written: boolean }>()

  constructor(
    private readonly link: WorkerLink,
    private readonly owner: number,
  ) {}

  /**
   * Whether a request may be sent: false once the owner has been unreachable for longer than
   * HOLD_MS (then each call tries to reach it again, at most every RETRY_CONNECT_MS).
   */
  usable(): boolean {
    if (this.socket !== undefined || this.downSince === undefined) return true
    const now = Date.now()
    if (now - this.downSince < HOLD_MS) return true
    if (now - this.lastAttempt >= RETRY_CONNECT_MS) this.connect()
    return false
  }

  send(encode: (id: number) => string, request: Pending): void {
    const id = this.nextId++
    const line = encode(id)
    const written = this.writer !== undefined
    this.pending.set(id, { request, line, written })
    if (written) this.writer!.send(line)
    else this.connect()
  }

  private connect(): void {
    if (this.connecting || this.retryTimer !== undefined) return
    this.connecting = true
    this.lastAttempt = Date.now()
    // The handlers' socket object may differ from the one connect resolves with: a connection is
    // told apart by its number.
    const generation = ++this.generation
    const reader = new LineReader()
    Bun.connect({
      unix: socketPath(this.link.deps.run.runDir, this.owner),
      socket: {
        data: (_socket, chunk) => reader.push(chunk, (frame) => this.reply(frame as ReplyFrame)),
        drain: () => this.writer?.drain(),
        close: () => this.lost(generation),
        error: () => this.lost(generation),
      },
    }).then(
      (socket) => {
        this.connecting = false
        this.downSince = undefined
        this.socket = socket
        this.writer = new FrameWriter(socket)
        for (const entry of this.pending.values()) {
          if (entry.written) continue
          entry.written = true
          this.writer.send(entry.line)
        }
      },
      () => {
        this.connecting = false
        this.unreachable()
      },
    )
  }

  private reply(frame: ReplyFrame): void {
    if (frame.b === 1) {
      this.goodbye()
      return
    }
    const entry = this.pending.get(frame.i)
    if (!entry) return
    this.pending.delete(frame.i)
    const pending = entry.request
    if (pending.kind === 'metrics') pending.resolve(frame.t)
    else if (frame.o) pending.resolve(frame.o.map(toOutcome))
    else if (frame.e === 'durable')
      pending.resolve(Promise.reject(new DurabilityError('the owning worker could not keep the events on disk')))
    else pending.resolve(Promise.reject(new Error('the owning worker failed on the events')))
  }

  /**
   * The owner is stopping: what it has not answered it did not process, so it goes to the successor.
   * This connection takes nothing more.
   */
  private goodbye(): void {
    for (const entry of this.pending.values()) entry.written = false
    const socket = this.socket
    this.generation++
    this.socket = undefined
    this.writer = undefined
    socket?.end()
    this.unreachable()
  }

  /**
   * The connection closed without a goodbye (the owner died): requests it may have processed are
   * answered as interrupted, never sent again; the rest wait for the successor.
   */
  private lost(generation: number): void {
    if (generation !== this.generation || this.socket === undefined) return
    this.socket = undefined
    this.writer = undefined
    for (const [id, entry] of this.pending) {
      if (!entry.written) continue
      this.pending.delete(id)
      const request = entry.request
      if (request.kind === 'metrics') request.resolve(undefined)
      else {
        this.link.deps.counters.interrupted++
        request.resolve(Promise.reject(new InterruptedError('the owning worker stopped before answering')))
      }
    }
    this.unreachable()
  }

  /**
   * The owner cannot be reached. It is being restarted by the supervisor, so requests wait for it
   * (their visitors' sessions continue there) up to HOLD_MS from the first failure; after that
   * they, and the ones that follow, are processed by this worker until the owner is back.
   */
  private unreachable(): void {
    const now = Date.now()
    this.downSince ??= now
    // A metrics view does not wait: the owner's share is left out.
    for (const [id, { request }] of this.pending) {
      if (request.kind !== 'metrics') continue
      this.pending.delete(id)
      request.resolve(undefined)
    }
    if (now - this.downSince >= HOLD_MS) {
      const waiting = [...this.pending.values()]
      this.pending.clear()
      for (const { request } of waiting) {
        if (request.kind === 'events') request.resolve(this.link.fallback(this.owner, request.events, request.starts))
      }
    }
    if (this.pending.size > 0 || now - this.downSince < HOLD_MS) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined
        if (this.pending.size > 0) this.connect()
      }, RETRY_CONNECT_MS)
    }
  }

  close(): void {
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    this.downSince = 0
    this.unreachable()
    this.socket?.end()
  }
}

const dropCache = new Map<string, Drop>()
function toOutcome(o: 0 | [string, string]): RunResult {
  if (o === 0) return undefined
  const key = `${o[0]}\u0000${o[1]}`
  let drop = dropCache.get(key)
  if (!drop) {
    drop = Object.freeze({ kind: 'drop', reason: o[0], plugin: o[1] }) as Drop
    dropCache.set(key, drop)
  }
  return drop
}

export class WorkerLink {
  readonly index: number
  readonly count: number
  private readonly owners: (OwnerConnection | undefined)[]
  private server: { stop(closeActive?: boolean): void } | undefined
  private readonly accepted = new Set<{ end(): void; data: { writer: FrameWriter } }>()
  private inFlight = 0
  private idle: (() => void) | undefined
  private closing = false

  constructor(readonly deps: LinkDeps) {
    this.index = deps.run.identity.index
    this.count = deps.run.identity.count
    this.owners = Array.from({ length: this.count }, (_, i) =>
      i === this.index ? undefined : new OwnerConnection(this, i),
    )
  }

  /**
   * `Ingest.process` of a worker: the identify steps here, then the rest here when this worker owns
   * the client IP, else at the owner.
   */
  process(events: AnalyticsEvent[]): RunResult[] | Promise<RunResult[]> {
    if (events.length === 0) return []
    const starts: number[] = new Array(events.length)
    for (let n = 0; n < events.length; n++) {
      const ran = this.deps.runPrefix(events[n]!)
      if (ran instanceof Promise) return this.processAsync(events, starts, n, ran)
      starts[n] = ran ? this.deps.ownerStep : 0
    }
    return this.dispatch(events, starts)
  }

  private async processAsync(
    events: AnalyticsEvent[],
    starts: number[],
    index: number,
    pending: Promise<boolean>,
  ): Promise<RunResult[]> {
    starts[index] = (await pending) ? this.deps.ownerStep : 0
    for (let n = index + 1; n < events.length; n++) {
      starts[n] = (await this.deps.runPrefix(events[n]!)) ? this.deps.ownerStep : 0
    }
    return this.dispatch(events, starts)
  }

  private dispatch(events: AnalyticsEvent[], starts: number[]): RunResult[] | Promise<RunResult[]> {
    const owner = this.deps.run.affinity ? ownerOf(events[0]!.clientIp, this.count) : this.index
    const connection = this.owners[owner]
    if (connection === undefined) return this.deps.processFrom(events, starts)
    if (!connection.usable()) return this.fallback(owner, events, starts)
    this.deps.counters.forwarded++
    return new Promise<RunResult[]>((resolve) => {
      connection.send((id) => encodeEvents(id, events, starts), { kind: 'events', events, starts, resolve })
    })
  }

  /** Processes here what the owner could not take (counted: the visitor's session may split). */
  fallback(owner: number, events: AnalyticsEvent[], starts: number[]): RunResult[] | Promise<RunResult[]> {
    this.deps.counters.fallback++
    this.deps.logger.throttled(
      `forward:${owner}`,
      'warn',
      'A worker could not reach the owner of a request and processed it itself.',
      { owner },
      10_000,
    )
    return this.deps.processFrom(events, starts)
  }

  /** Listens on this worker's internal socket (mode 0600, in the supervisor's private folder). */
  listen(): void {
    const path = socketPath(this.deps.run.runDir, this.index)
    // A socket file left by this index's previous process (killed) would refuse the bind.
    rmSync(path, { force: true })
    this.server = Bun.listen<{ reader: LineReader; writer: FrameWriter }>({
      unix: path,
      socket: {
        open: (socket) => {
          socket.data = { reader: new LineReader(), writer: new FrameWriter(socket) }
          this.accepted.add(socket)
        },
        data: (socket, chunk) => {
          if (this.closing) return
          socket.data.reader.push(chunk, (frame) => this.serve(frame as EventsFrame | MetricsFrame, socket.data.writer))
        },
        drain: (socket) => socket.data.writer.drain(),
        close: (socket) => {
          this.accepted.delete(socket)
        },
        error: (socket) => {
          this.accepted.delete(socket)
        },
      },
    })
    chmodSync(path, 0o600)
  }

  private serve(frame: EventsFrame | MetricsFrame, writer: FrameWriter): void {
    if ('m' in frame) {
      writer.send(`${JSON.stringify({ i: frame.i, t: this.deps.metricsText() } satisfies ReplyFrame)}\n`)
      return
    }
    this.deps.counters.received++
    this.inFlight++
    const answer = (reply: ReplyFrame) => {
      writer.send(`${JSON.stringify(reply)}\n`)
      this.inFlight--
      if (this.inFlight === 0) this.idle?.()
    }
    const failed = (error: unknown) =>
      answer({ i: frame.i, e: error instanceof DurabilityError ? 'durable' : 'failed' })
    try {
      const outcomes = this.deps.processFrom(decodeEvents(frame, this.deps.sites), frame.s)
      if (Array.isArray(outcomes)) answer({ i: frame.i, o: outcomes.map(fromOutcome) })
      else outcomes.then((settled) => answer({ i: frame.i, o: settled.map(fromOutcome) }), failed)
    } catch (error) {
      failed(error)
    }
  }

  /**
   * Stops taking forwarded requests: no new connections, the ones being processed are answered,
   * then the connections close (requests sent after that are processed by their senders).
   */
  async stop(): Promise<void> {
    this.server?.stop(false)
    this.server = undefined
    if (this.inFlight > 0) {
      await new Promise<void>((done) => {
        this.idle = done
        setTimeout(done, 10_000).unref?.()
      })
    }
    // The answers are written on the next turn (FrameWriter); let them go before closing.
    await new Promise((done) => setImmediate(done))
    this.closing = true
    // Whatever arrives from now on is not processed; the goodbye tells the senders to send it to
    // this worker's successor.
    for (const socket of this.accepted) {
      socket.data.writer.send(`${JSON.stringify({ i: 0, b: 1 } satisfies ReplyFrame)}\n`)
    }
    await new Promise((done) => setImmediate(done))
    for (const socket of this.accepted) socket.end()
  }

  /**
   * Closes the connections to the owners, once this worker's own requests are answered (shutdown);
   * anything still waiting for an owner is processed here.
   */
  closeOutgoing(): void {
    for (const owner of this.owners) owner?.close()
  }

  /** Every worker's metrics summed (this one's `local` text plus what the others answer in time). */
  async metrics(): Promise<string> {
    const texts = [this.deps.metricsText()]
    const others = await Promise.all(
      this.owners.map((connection) => {
        if (!connection?.usable()) return undefined
        return new Promise<string | undefined>((resolve) => {
          const timer = setTimeout(() => resolve(undefined), METRICS_TIMEOUT_MS)
          connection.send((id) => `${JSON.stringify({ i: id, m: 1 } satisfies MetricsFrame)}\n`, {
            kind: 'metrics',
            resolve: (text) => {
              clearTimeout(timer)
              resolve(text)
            },
          })
        })
      }),
    )
    for (const text of others) if (text !== undefined) texts.push(text)
    return sumMetrics(texts, this.count)
  }
}

function fromOutcome(outcome: RunResult): 0 | [string, string] {
  return outcome === undefined || outcome === null ? 0 : [outcome.reason, outcome.plugin]
}
