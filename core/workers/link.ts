// One owner per visitor between the workers of `serve --workers N` (issue "Scale out", research/
// scale-out.md §3.2). The kernel spreads connections, not visitors, over the workers; so a worker
// that accepts a request learns its client IP exactly as the configured pipeline does (it runs the
// parse and identify steps, which keep no state, on the request's first event), computes the owner
// of that IP (owner.ts) and, when another worker owns it, forwards the whole request over the
// owner's internal Unix socket and relays the owner's answer unchanged. The owner processes it as
// if it had accepted it (the socket peer and arrival time travel with it) and never forwards again.
// An owner that cannot be reached (restarting) costs a local processing, counted: a session may
// split, no event is lost.
//
// Each worker also answers GET /metrics on its internal socket, so the worker asked on the network
// can sum every worker's series into one view.

import { chmodSync, rmSync } from 'node:fs'
import type { AnalyticsEvent } from '../event.ts'
import type { Logger } from '../logger.ts'
import type { Drop, Ingest, IngestRequest, Route, RunResult } from '../plugin.ts'
import { sumMetrics } from './metrics-sum.ts'
import { ownerOf } from './owner.ts'
import { socketPath, type WorkerRun } from './supervisor.ts'

/** The forwarded request's socket peer and arrival time (ms), as `<peer> <receivedAt>`. */
const META_HEADER = 'x-analytics-forwarded'
/** Headers that describe the hop or the body's old encoding, not the request: not forwarded. */
const HOP_HEADERS = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-encoding',
  'host',
  'te',
  'upgrade',
  META_HEADER,
])
const RELAY_SKIP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date'])
/** How long collecting another worker's metrics may take before its share is left out. */
const METRICS_TIMEOUT_MS = 2_000

/** Thrown through the dialect when another worker owns the request's client IP. */
class NotOwner {
  constructor(readonly owner: number) {}
}

export interface LinkCounters {
  /** Requests sent to their owner. */
  forwarded: number
  /** Requests processed here because their owner could not be reached. */
  fallback: number
  /** Requests other workers forwarded here. */
  received: number
}

export interface LinkDeps {
  run: WorkerRun
  /** The engine's ingest (durable when configured). */
  ingest: Ingest
  /** Steps before the pipeline's owner step, on one event, counting nothing. */
  runPrefix(event: AnalyticsEvent): boolean | Promise<boolean>
  /** `ingest.process` for events whose first one went through runPrefix. */
  processAfterPrefix(events: AnalyticsEvent[]): RunResult[] | Promise<RunResult[]>
  logger: Logger
  counters: LinkCounters
}

/**
 * The ingest a network request's dialect gets: the first `process` call finds the owner; until
 * then drops the dialect records wait, since a forwarded request is counted by its owner.
 */
class OwnerProbe implements Ingest {
  private decided = false
  private waitingDrops: [AnalyticsEvent, Drop][] | undefined

  constructor(
    private readonly link: WorkerLink,
    private readonly base: Ingest,
  ) {}

  newEvent(req: IngestRequest, dialect: string): AnalyticsEvent {
    return this.base.newEvent(req, dialect)
  }

  recordDrop(event: AnalyticsEvent, drop: Drop): void {
    if (this.decided) this.base.recordDrop(event, drop)
    else if (this.waitingDrops === undefined) this.waitingDrops = [[event, drop]]
    else this.waitingDrops.push([event, drop])
  }

  process(events: AnalyticsEvent[]): RunResult[] | Promise<RunResult[]> {
    if (this.decided || events.length === 0) {
      this.settle()
      return this.base.process(events)
    }
    const ran = this.link.deps.runPrefix(events[0]!)
    if (ran instanceof Promise) return ran.then((done) => this.route(events, done))
    return this.route(events, ran)
  }

  private route(events: AnalyticsEvent[], prefixDone: boolean): RunResult[] | Promise<RunResult[]> {
    const owner = ownerOf(events[0]!.clientIp, this.link.count)
    if (owner !== this.link.index) throw new NotOwner(owner)
    this.settle()
    return prefixDone ? this.link.deps.processAfterPrefix(events) : this.base.process(events)
  }

  /** This worker processes the request: the drops recorded so far count here. */
  settle(): void {
    this.decided = true
    const waiting = this.waitingDrops
    if (waiting === undefined) return
    this.waitingDrops = undefined
    for (const [event, drop] of waiting) this.base.recordDrop(event, drop)
  }
}

export class WorkerLink {
  readonly index: number
  readonly count: number
  private readonly received = new WeakMap<Request, { peer: string; receivedAt: number }>()
  private server: { stop(closeActive?: boolean): Promise<void> | void } | undefined

  constructor(readonly deps: LinkDeps) {
    this.index = deps.run.identity.index
    this.count = deps.run.identity.count
  }

  /** A dialect's route as the network listener serves it: owned requests here, the others forwarded. */
  networkRoute(route: Route): Route {
    if (!this.deps.run.affinity || this.count <= 1) return route
    return {
      method: route.method,
      path: route.path,
      handle: (req, ingest) => {
        const probe = new OwnerProbe(this, ingest)
        let answer: Response | Promise<Response>
        try {
          answer = route.handle(req, probe)
        } catch (error) {
          if (error instanceof NotOwner) return this.forward(error.owner, req, route, ingest)
          throw error
        }
        if (!(answer instanceof Promise)) {
          probe.settle()
          return answer
        }
        return answer.then(
          (response) => {
            probe.settle()
            return response
          },
          (error) => {
            if (error instanceof NotOwner) return this.forward(error.owner, req, route, ingest)
            throw error
          },
        )
      },
    }
  }

  /** A dialect's route as the internal socket serves it: a forwarded request keeps its arrival time. */
  internalRoute(route: Route): Route {
    return {
      method: route.method,
      path: route.path,
      handle: (req, ingest) => {
        const meta = this.received.get(req.request)
        return route.handle(meta ? { ...req, receivedAt: meta.receivedAt } : req, ingest)
      },
    }
  }

  /** The socket peer a forwarded request came from (the internal app's `peerOf`). */
  peerOf(request: Request): string | undefined {
    return this.received.get(request)?.peer
  }

  private async forward(owner: number, req: IngestRequest, route: Route, ingest: Ingest): Promise<Response> {
    const source = req.request
    const headers = new Headers()
    source.headers.forEach((value, name) => {
      if (!HOP_HEADERS.has(name)) headers.append(name, value)
    })
    headers.set(META_HEADER, `${req.peerIp} ${req.receivedAt}`)
    const url = source.url
    const pathStart = url.indexOf('/', url.indexOf('//') + 2)
    try {
      const answer = await fetch(`http://worker${pathStart < 0 ? '/' : url.slice(pathStart)}`, {
        method: source.method,
        headers,
        body: source.method === 'GET' || source.method === 'HEAD' ? undefined : req.body,
        unix: socketPath(this.deps.run.runDir, owner),
      } as RequestInit)
      const body = await answer.arrayBuffer()
      const relayed = new Headers()
      answer.headers.forEach((value, name) => {
        if (!RELAY_SKIP.has(name)) relayed.append(name, value)
      })
      this.deps.counters.forwarded++
      return new Response(body, { status: answer.status, headers: relayed })
    } catch (error) {
      // The owner is restarting (or gone): the event is processed here rather than lost.
      this.deps.counters.fallback++
      this.deps.logger.throttled(
        `forward:${owner}`,
        'warn',
        'A worker could not reach the owner of a request; processed it itself.',
        {
          owner,
          error: (error as Error).message?.slice(0, 200),
        },
        10_000,
      )
      return route.handle(req, ingest)
    }
  }

  /**
   * Listens on this worker's internal socket (mode 0600, in the supervisor's private folder): forwarded
   * requests and metrics requests from the other workers go to `handle`.
   */
  listen(handle: (request: Request) => Response | Promise<Response>): void {
    const path = socketPath(this.deps.run.runDir, this.index)
    // A socket file left by this index's previous process (killed) would refuse the bind.
    rmSync(path, { force: true })
    this.server = Bun.serve({
      unix: path,
      development: false,
      fetch: (request) => {
        const meta = request.headers.get(META_HEADER)
        if (meta !== null) {
          const space = meta.lastIndexOf(' ')
          this.received.set(request, { peer: meta.slice(0, space), receivedAt: Number(meta.slice(space + 1)) })
          this.deps.counters.received++
        }
        return handle(request)
      },
    })
    chmodSync(path, 0o600)
  }

  async stop(): Promise<void> {
    await this.server?.stop(false)
    this.server = undefined
  }

  /** Every worker's metrics summed (this one's `local` text plus what the others answer). */
  async metrics(local: string): Promise<string> {
    const texts = [local]
    const others = await Promise.all(
      Array.from({ length: this.count }, (_, i) => i)
        .filter((i) => i !== this.index)
        .map(async (i) => {
          try {
            const answer = await fetch('http://worker/metrics', {
              unix: socketPath(this.deps.run.runDir, i),
              signal: AbortSignal.timeout(METRICS_TIMEOUT_MS),
            } as RequestInit)
            return answer.ok ? await answer.text() : undefined
          } catch {
            return undefined
          }
        }),
    )
    for (const text of others) if (text !== undefined) texts.push(text)
    return sumMetrics(texts, this.count)
  }
}
