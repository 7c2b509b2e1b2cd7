// The plugin contract (design.md "The plugin contract"). A plugin is a plain object made with
// `definePlugin`; the core validates its options against its TypeBox schema, calls `setup` once at
// start and compiles the returned `run` functions into a flat pipeline (core/pipeline.ts).

import type { Static, TSchema } from '@sinclair/typebox'
import type { AnalyticsEvent } from './event.ts'
import type { Logger } from './logger.ts'
import type { SiteTable } from './sites.ts'

/** The fixed stage table. Config order decides the order within a stage. */
export const STAGES = ['parse', 'identify', 'classify', 'shield', 'enrich', 'sink'] as const
export type Stage = (typeof STAGES)[number]

/** A verdict: the event is not stored. Returned by `ctx.drop(reason)`, never thrown. */
export interface Drop {
  readonly kind: 'drop'
  readonly reason: string
  /** The plugin instance that dropped the event (`bots`, `shield-ip`, …). */
  readonly plugin: string
}

/** What a plugin's `run` may return: a drop, or nothing to let the event go on. */
export type RunResult = Drop | undefined

/** Handed to `run`; one per plugin instance, made at start (no per-event allocation). */
export interface PluginContext {
  /** The drop value for a reason the plugin declared in `drops`. */
  drop(reason: string): Drop
}

/** A request as the core hands it to a dialect's route, body already read within the limit. */
export interface IngestRequest {
  readonly request: Request
  /** The body decoded as UTF-8 ('' when empty). Gzip and deflate bodies arrive decompressed. */
  readonly body: string
  /** Route parameters (`:siteId`). */
  readonly params: Record<string, string>
  /** The TCP peer address, without port or brackets; on a socket it is asked for when first read. */
  readonly peerIp: string
  /** True when the listener is bound to a loopback address: the peer is a process on this machine. */
  readonly peerIsLocal?: boolean
  /** What reads `peerIp` when first asked (a socket's peer); events keep it instead of the address. */
  readonly peerLookup?: { readonly peerIp: string }
  /** Milliseconds since the epoch. */
  readonly receivedAt: number
}

/** What a dialect's route uses to push events through the compiled pipeline. */
export interface Ingest {
  /** A new event with the request context filled (peer, headers, user agent, timestamp). */
  newEvent(req: IngestRequest, dialect: string): AnalyticsEvent
  /**
   * Runs every event through the pipeline and hands the kept ones to the sinks. Returns one outcome
   * per event, in order: `undefined` = accepted, else the drop. Synchronous unless an async plugin ran.
   */
  process(events: AnalyticsEvent[]): RunResult[] | Promise<RunResult[]>
  /** Counts a drop decided by the dialect itself (unknown site, …) before the pipeline. */
  recordDrop(event: AnalyticsEvent, drop: Drop): void
}

/** The CORS header of every ingest answer: trackers post from any site. */
export const ALLOW_ANY_ORIGIN: Readonly<Record<string, string>> = Object.freeze({ 'access-control-allow-origin': '*' })

export interface Route {
  method: 'POST' | 'GET'
  /** Path with `:param` segments, e.g. `/public/:siteId/analytics/collect`. */
  path: string
  handle(req: IngestRequest, ingest: Ingest): Response | Promise<Response>
  /**
   * True when every answer of `handle` already carries ALLOW_ANY_ORIGIN, so the HTTP layer adds
   * nothing. Otherwise it sets the header on each answer, which made Bun build the answer's Headers
   * object: about 0.5 µs a request, measured in a Bun.serve handler.
   */
  readonly answersAllowAnyOrigin?: boolean
}

/** What a plugin's `setup` returns. */
export interface PluginInstance {
  /** Called once per event on the plugin's stage. Sync unless the definition says `async: true`. */
  run?(event: AnalyticsEvent, ctx: PluginContext): RunResult | Promise<RunResult>
  /** Dialects (stage `parse`) declare their HTTP routes here. */
  routes?: Route[]
  /** Released on shutdown, in reverse order of setup. */
  close?(): void | Promise<void>
  /**
   * Config reload (SIGHUP): re-read what the plugin loaded from files (lists, databases). Sites and
   * their shields are swapped by the core; a plugin's own options change only with a restart.
   */
  reload?(): void | Promise<void>
}

/** Services the engine hands every plugin's and sink's `setup`. */
export interface EngineServices {
  readonly sites: SiteTable
  readonly server: Readonly<ServerSettings>
  /**
   * What a 202 promises: `received` (in memory; a crash loses at most a flush interval) or `durable`
   * (fsynced to the sinks' spools first; sinks must implement `sync`).
   */
  readonly ack: AckMode
  readonly logger: Logger
  /**
   * A tool's engine (`explain`, `replay`) rather than the serving one: plugins must not take or
   * leave state meant for the server (the sessions' snapshot, say).
   */
  readonly transient: boolean
  /** The folder relative paths in options are resolved against (the config file's folder). */
  readonly baseDir: string
  /** A writable folder for caches and state that must survive restarts (lists, salts, spools). */
  readonly stateDir: string
  /** Resolves a path from the options against `baseDir`. */
  resolvePath(path: string): string
  /** Registers a shutdown hook that runs before sinks are flushed (timers, background refreshes). */
  onClose(fn: () => void | Promise<void>): void
  /**
   * Which of the `serve --workers N` processes this is (`{ index: 0, count: 1 }` for one process).
   * Limits meant for the whole machine are divided by `count` where no shared store counts them.
   */
  readonly worker: WorkerIdentity
  /**
   * The folder a worker keeps its own copy of `path` in (spools, snapshots, an embedded database):
   * `path` itself for one process and for worker 0 (so going from one process to N keeps replaying
   * the old folder), `<path>/worker-<i>` for the others. State shared by every worker (salts) uses
   * the plain path.
   */
  perWorker(path: string): string
  /**
   * Adds a series to /metrics, read when it is scraped (so counting costs the request path nothing
   * beyond the plugin's own `n++`). Name it `analytics_<plugin>_<what>`; with several workers the
   * series of every worker are summed.
   */
  metric(name: string, type: 'counter' | 'gauge', help: string, read: () => number): void
}

export interface WorkerIdentity {
  /** 0 … count - 1. */
  readonly index: number
  readonly count: number
}

/** The folder of worker `worker.index`'s own copy of `path` (EngineServices.perWorker). */
export function workerPath(path: string, worker: WorkerIdentity): string {
  return worker.count <= 1 || worker.index === 0 ? path : `${path.replace(/\/+$/, '')}/worker-${worker.index}`
}

export type AckMode = 'received' | 'durable'

export interface ServerSettings {
  port: number
  host: string
  /** CIDRs, single addresses, or the words `loopback` and `private`. */
  trustedProxies: string[]
  /** Bytes. */
  bodyLimit: number
  /** A request whose body has not fully arrived after this many milliseconds gets 408. */
  bodyTimeoutMs: number
  /** Connections idle this long are closed (slow or stalled clients). */
  idleTimeoutSeconds: number
}

export interface PluginDefinition<S extends TSchema = TSchema> {
  /** Kebab-case; equals the folder and the registry key for built-ins. */
  name: string
  stage: Stage
  /** One sentence for `check`, the schema and the README. */
  summary: string
  /** Drop reasons this plugin may return, with what each means. */
  drops?: Record<string, string>
  /** TypeBox schema of the plugin's options; defaults in it are applied before `setup`. */
  options: S
  /** Set when `run` may return a promise (a remote store, say). */
  async?: boolean
  setup(options: Static<S>, engine: EngineServices): PluginInstance | Promise<PluginInstance>
}

/** Declares a plugin; the identity function that gives `setup` its typed options. */
export function definePlugin<S extends TSchema>(definition: PluginDefinition<S>): PluginDefinition<S> {
  return definition
}

/**
 * Thrown from `setup` (or a sink's) for an option that is well-typed but wrong (a missing file, say).
 * `path` is relative to the plugin's options, e.g. `database`; the core prefixes the plugin's place.
 */
export class ConfigError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message)
    this.name = 'ConfigError'
  }
}
