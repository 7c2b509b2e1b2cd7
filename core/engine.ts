// The engine: sets up the configured plugins and sinks once, compiles the pipeline, serves HTTP, and
// shuts down in order (stop accepting, drain, close plugins in reverse, flush the sinks last).

import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import type { DropMode, ResolvedComponent, ResolvedConfig } from './config.ts'
import { ConfigErrors } from './config.ts'
import { DropCounters } from './drop-counters.ts'
import { eventFromRequest } from './event.ts'
import { buildHttpApp, type HttpHost, listenApp, ReadDeadlines, withRoutableUrl } from './http.ts'
import { createLogger, type Logger } from './logger.ts'
import { Histogram, Metrics } from './metrics.ts'
import type { ConfigIssue } from './options.ts'
import { Pipeline, PLUGIN_ERROR, type Step } from './pipeline.ts'
import {
  ConfigError,
  type Drop,
  type EngineServices,
  type Ingest,
  type PluginContext,
  type PluginDefinition,
  type PluginInstance,
  type Route,
  type RunResult,
  STAGES,
  type WorkerIdentity,
  workerPath,
} from './plugin.ts'
import { type Listener, youngCollector } from './runtime/index.ts'
import { type SinkDefinition, type SinkInstance, SinkStats } from './sink.ts'
import { SiteRefresher } from './site-sources.ts'
import { createSiteTable, type SiteConfig } from './sites.ts'
import { isLoopbackListener } from './trust.ts'
import { type LinkDeps, WorkerLink } from './workers/link.ts'
import type { WorkerRun } from './workers/supervisor.ts'
import { YoungCollections } from './young-collections.ts'

/** `server.youngCollectionMs` when the config does not set it (core/young-collections.ts). */
const YOUNG_COLLECTION_MS = 100

/**
 * Bun's `maxRequestBodySize`, at least. A body over `server.bodyLimit` is refused by the engine's
 * reader (413 with CORS and its reason) when Bun lets it through, and Bun then discards the unread
 * rest: 20 concurrent 30 MB uploads refused this way left the RSS at 20 MB, and the connection
 * served its next request. Only declared lengths past this cap get Bun's bare 413.
 */
const RUNTIME_BODY_CAP = 16 * 1024 * 1024

export interface EngineSink {
  name: string
  definition: SinkDefinition
  options: unknown
  instance: SinkInstance
  stats: SinkStats
}

export interface EnginePlugin {
  name: string
  definition: PluginDefinition
  instance: PluginInstance
  /** `report`: the plugin's drops only tag the event (`would_drop`). */
  mode: DropMode
}

export interface Engine {
  readonly config: ResolvedConfig
  readonly services: EngineServices
  readonly plugins: readonly EnginePlugin[]
  readonly sinks: readonly EngineSink[]
  readonly routes: readonly { plugin: string; route: Route }[]
  readonly pipeline: Pipeline
  /** What dialects' routes get: tools (benchmarks, replays) use it to make events the same way. */
  readonly ingest: Ingest
  readonly metrics: Metrics
  readonly logger: Logger
  /** Handles a request without a socket (tests, tools); `peerIp` stands for the TCP peer. */
  handle(request: Request, peerIp?: string): Promise<Response>
  /** Reloads the sites' source now (tests, tools); resolves when the new set is in use or the load failed. */
  refreshSites(): Promise<void>
  /** Starts listening; returns the bound address. */
  listen(): Promise<{ port: number; hostname: string }>
  health(): { status: number; body: unknown }
  /** Runs each sink's `migrate`; failures are reported, not thrown (a sink whose server is down spools). */
  migrate(): Promise<string[]>
  /**
   * Applies a reloaded config (SIGHUP): sites and shields are swapped at once and plugins re-read
   * their files. Returns what could not change without a restart (plugins, sinks, server settings).
   */
  reload(next: ResolvedConfig): Promise<string[]>
  /** Stops accepting, drains, closes plugins, flushes and closes sinks. Safe to call twice. */
  shutdown(): Promise<void>
}

const COUNTERS_INTERVAL_MS = 10_000

export interface EngineOptions {
  logger?: Logger
  /** A tool's engine (explain, replay): see EngineServices.transient. */
  transient?: boolean
  /** One of `serve --workers N`'s processes (core/workers/supervisor.ts); default: the only one. */
  workerRun?: WorkerRun
}

function makeContext(definition: PluginDefinition): PluginContext {
  const drops = new Map<string, Drop>()
  for (const reason of Object.keys(definition.drops ?? {})) {
    drops.set(reason, Object.freeze({ kind: 'drop', reason, plugin: definition.name }) as Drop)
  }
  return {
    drop(reason) {
      const drop = drops.get(reason)
      // An undeclared reason is a plugin bug: the throw becomes a counted plugin_error.
      if (!drop) throw new Error(`${definition.name} returned an undeclared drop reason "${reason}"`)
      return drop
    },
  }
}

export async function createEngine(config: ResolvedConfig, options: EngineOptions = {}): Promise<Engine> {
  const logger = options.logger ?? createLogger({ level: config.logLevel })
  mkdirSync(config.stateDir, { recursive: true })
  const closeHooks: (() => void | Promise<void>)[] = []
  const sites = createSiteTable(config.sites, config.retentionDays)
  const worker: WorkerIdentity = options.workerRun?.identity ?? { index: 0, count: 1 }
  const metrics = new Metrics()
  const services: EngineServices = {
    sites,
    server: config.server,
    ack: config.ack,
    transient: options.transient === true,
    logger,
    baseDir: config.baseDir,
    stateDir: config.stateDir,
    resolvePath: (p) => resolve(config.baseDir, p),
    onClose: (fn) => closeHooks.push(fn),
    worker,
    perWorker: (path) => workerPath(path, worker),
    metric: (name, type, help, read) => metrics.addSeries(name, type, help, read),
  }

  const issues: ConfigIssue[] = []
  const plugins: EnginePlugin[] = []
  const sinks: EngineSink[] = []
  const releaseAll = async () => {
    for (const p of [...plugins].reverse()) await Promise.resolve(p.instance.close?.()).catch(() => {})
    for (const s of sinks) await s.instance.close().catch(() => {})
  }

  const setupIssue = (component: ResolvedComponent<unknown>, error: unknown) => {
    if (error instanceof ConfigError) {
      issues.push({ path: error.path ? `${component.path}.${error.path}` : component.path, message: error.message })
    } else issues.push({ path: component.path, message: `setup failed: ${(error as Error).message}` })
  }

  for (const component of config.plugins) {
    try {
      const instance = await component.definition.setup(component.options as never, services)
      plugins.push({ name: component.name, definition: component.definition, instance, mode: component.mode })
    } catch (error) {
      setupIssue(component, error)
    }
  }
  const sinkCounts = new Map<string, number>()
  for (const component of config.sinks) {
    const stats = new SinkStats()
    // Two sinks of one kind (two webhook destinations) need distinct names in /health and /metrics.
    const count = (sinkCounts.get(component.name) ?? 0) + 1
    sinkCounts.set(component.name, count)
    try {
      const instance = await component.definition.setup(component.options as never, services, stats)
      sinks.push({
        name: count === 1 ? component.name : `${component.name}#${count}`,
        definition: component.definition,
        options: component.options,
        instance,
        stats,
      })
    } catch (error) {
      setupIssue(component, error)
    }
  }

  // Routes: two dialects claiming the same method and path is a config error, not a silent override.
  const routes: { plugin: string; route: Route }[] = []
  const claimed = new Map<string, string>()
  config.plugins.forEach((component, i) => {
    const plugin = plugins.find((p) => p.definition === component.definition && p.name === component.name)
    for (const route of plugin?.instance.routes ?? []) {
      const key = `${route.method} ${route.path}`
      const owner = claimed.get(key)
      if (owner) issues.push({ path: `plugins[${i}]`, message: `route ${key} is already served by ${owner}` })
      else {
        claimed.set(key, component.name)
        routes.push({ plugin: component.name, route })
      }
    }
  })

  // Set-up succeeded for every sink when there is no issue yet, so the two lists align.
  if (config.ack === 'durable' && issues.length === 0) {
    sinks.forEach((sink, i) => {
      if (sink.instance.sync) return
      issues.push({
        path: `sinks[${i}]`,
        message: `ack: durable needs every sink to keep events on disk before the answer; ${config.sinks[i]!.name} cannot`,
      })
    })
  }
  if (issues.length) {
    await releaseAll()
    throw new ConfigErrors(config.source, issues)
  }

  const steps: Step[] = []
  for (const stage of STAGES) {
    for (const p of plugins) {
      if (p.definition.stage !== stage || !p.instance.run) continue
      steps.push({
        name: p.name,
        stage,
        run: p.instance.run.bind(p.instance),
        method: p.instance.run,
        instance: p.instance,
        ctx: makeContext(p.definition),
        async: p.definition.async === true,
        report: p.mode === 'report',
      })
    }
  }

  // Every site's drop series exist from the moment the site does (start, reload, refreshed source).
  const declareSiteLabels = () => {
    for (const label of [...sites.list().map((s) => s.label), 'other']) {
      for (const p of plugins)
        for (const reason of Object.keys(p.definition.drops ?? {})) metrics.declareDrop(reason, label)
      metrics.declareDrop(PLUGIN_ERROR, label)
    }
  }
  declareSiteLabels()
  // Sites from a source are reloaded in the background; requests always see one whole set.
  let currentConfig = config
  const startRefresher = (c: ResolvedConfig) => {
    if (!c.sitesSource) return undefined
    const r = new SiteRefresher(
      c.sitesSource,
      Array.isArray(c.sites) ? c.sites.length : 0,
      (next: SiteConfig[]) => {
        sites.replace(next, currentConfig.retentionDays ?? null)
        declareSiteLabels()
      },
      logger,
    )
    r.start()
    return r
  }
  let refresher = startRefresher(config)
  closeHooks.push(() => refresher?.stop())
  metrics.siteSource = () => refresher?.status()
  for (const s of sinks) {
    metrics.sinks.push({
      name: s.name,
      stats: s.stats,
      health: () => s.instance.health(),
      batchSeconds: new Histogram(),
    })
  }

  // Per-site drop counts are kept only when a sink stores them, and handed over every ten seconds.
  const counterSinks = sinks.filter((s) => s.instance.writeCounters)
  const counters = counterSinks.length > 0 ? new DropCounters() : undefined
  const handOverCounters = () => {
    const rows = counters?.take() ?? []
    if (rows.length === 0) return
    for (const s of counterSinks) {
      try {
        s.instance.writeCounters?.(rows)
      } catch (error) {
        logger.throttled(`sink_counters:${s.name}`, 'error', 'A sink refused the drop counters.', {
          sink: s.name,
          error: (error as Error).message?.slice(0, 200),
        })
      }
    }
  }
  const countersTimer = counters ? setInterval(handOverCounters, COUNTERS_INTERVAL_MS) : undefined
  countersTimer?.unref?.()

  const pipeline = new Pipeline(
    steps,
    sinks.map((s) => ({ name: s.name, instance: s.instance })),
    metrics,
    logger,
    counters,
  )

  // ack: durable: the answer waits for the sinks' group commit of everything written so far.
  const durableSinks = config.ack === 'durable' ? sinks.map((s) => s.instance) : []
  const durably = async (outcomes: RunResult[] | Promise<RunResult[]>): Promise<RunResult[]> => {
    const settled = await outcomes
    await Promise.all(durableSinks.map((s) => s.sync?.()))
    return settled
  }
  // The pipeline from each event's `starts` step (from the first without), then, under
  // `ack: durable`, the commit; chosen once here so a request pays no branch for it.
  const processFrom: LinkDeps['processFrom'] =
    durableSinks.length > 0
      ? (events, starts) => durably(pipeline.process(events, starts))
      : (events, starts) => pipeline.process(events, starts)
  // serve --workers N: events go to the worker owning their client IP (core/workers/link.ts).
  const link =
    options.workerRun && worker.count > 1
      ? new WorkerLink({
          run: options.workerRun,
          sites,
          ownerStep: pipeline.ownerStep,
          runPrefix: (event) => pipeline.runPrefix(event),
          processFrom,
          metricsText: () => metrics.render(),
          logger,
          counters: { forwarded: 0, fallback: 0, received: 0, interrupted: 0 },
        })
      : undefined
  if (link) metrics.workerLink = link.deps.counters
  const ingest: Ingest = {
    newEvent: eventFromRequest,
    process: link ? (events) => link.process(events) : (events) => processFrom(events),
    recordDrop: (event, drop) => pipeline.recordDrop(event, drop),
  }

  const health = () => {
    const states: Record<string, unknown> = {}
    let worst: 'ok' | 'degraded' | 'failing' = 'ok'
    for (const s of sinks) {
      const h = s.instance.health()
      states[s.name] = h
      if (h.state === 'failing') worst = 'failing'
      else if (h.state === 'degraded' && worst === 'ok') worst = 'degraded'
    }
    const status = stopping ? 'stopping' : worst
    // A stale site set is shown, not failed on: events for the sites in use are still accepted.
    const siteSource = refresher?.status()
    return {
      status: worst === 'failing' || stopping ? 503 : 200,
      body: { status, sinks: states, ...(siteSource ? { sites: siteSource } : {}) },
    }
  }

  let inFlight = 0
  let drained: (() => void) | undefined
  const young = new YoungCollections()
  metrics.addSeries(
    'analytics_young_collections_total',
    'counter',
    'Young-generation collections run on the clock while requests arrive (server.youngCollectionMs).',
    () => young.collections,
  )
  metrics.addSeries(
    'analytics_young_collection_seconds_total',
    'counter',
    'Seconds spent in those collections (the event loop waits meanwhile).',
    () => young.seconds,
  )
  const handedPeers = new WeakMap<Request, string>()
  const deadlines = new ReadDeadlines(config.server.bodyTimeoutMs)
  const host: HttpHost = {
    routes: routes.map((r) => r.route),
    ingest,
    metrics,
    logger,
    bodyLimit: config.server.bodyLimit,
    deadlines,
    batchRequests: config.server.batchRequests ?? true,
    health,
    peerOf: (request) => handedPeers.get(request),
    peersAreLocal: isLoopbackListener(config.server.host ?? '0.0.0.0'),
    requestStarted: () => {
      inFlight++
      young.noteRequest()
    },
    requestFinished: () => {
      inFlight--
      if (inFlight === 0 && drained) drained()
    },
  }
  if (link) host.metricsText = () => link.metrics()
  const app = buildHttpApp(host)

  let stopping = false
  let listener: Listener | undefined
  let shutdownPromise: Promise<void> | undefined

  const shutdown = async () => {
    stopping = true
    // Stop accepting; in-flight requests finish.
    await Promise.all([listener?.stop().catch(() => {}), link?.stop().catch(() => {})])
    if (inFlight > 0) {
      await new Promise<void>((done) => {
        drained = done
        setTimeout(done, config.server.shutdownTimeoutMs).unref?.()
      })
    }
    link?.closeOutgoing()
    for (const p of [...plugins].reverse()) {
      try {
        await p.instance.close?.()
      } catch (error) {
        logger.error('A plugin failed to close.', { plugin: p.name, error: (error as Error).message })
      }
    }
    for (const fn of closeHooks.reverse()) {
      try {
        await fn()
      } catch (error) {
        logger.error('A shutdown hook failed.', { error: (error as Error).message })
      }
    }
    deadlines.stop()
    young.stop()
    clearInterval(countersTimer)
    handOverCounters()
    // Sinks last, so everything accepted during the drain is flushed or spooled.
    for (const s of sinks) {
      try {
        await s.instance.close()
      } catch (error) {
        logger.error('A sink failed to close; its rows may be in its spool.', {
          sink: s.name,
          error: (error as Error).message,
        })
      }
    }
  }

  return {
    config,
    services,
    plugins,
    sinks,
    routes,
    pipeline,
    ingest,
    metrics,
    logger,
    handle(request, peerIp = '127.0.0.1') {
      const routable = withRoutableUrl(request)
      handedPeers.set(routable, peerIp)
      return app.handle(routable)
    },
    async listen() {
      listener = await listenApp(app, {
        port: config.server.port,
        hostname: config.server.host,
        // readBody enforces the limit. Bun's own refusal of a body over its limit is a bare 413 (no
        // CORS header, no text), so Bun's limit sits far above: see RUNTIME_BODY_CAP.
        maxRequestBodySize: Math.max(config.server.bodyLimit + 1, RUNTIME_BODY_CAP),
        idleTimeoutSeconds: config.server.idleTimeoutSeconds,
        fetch: (request, peer) => {
          const routable = withRoutableUrl(request)
          handedPeers.set(routable, peer)
          return app.handle(routable)
        },
      })
      link?.listen()
      const everyMs = config.server.youngCollectionMs ?? YOUNG_COLLECTION_MS
      const collect = everyMs > 0 ? await youngCollector() : undefined
      if (collect && !stopping) young.start(collect, everyMs)
      return { port: listener.port, hostname: listener.hostname }
    },
    health,
    refreshSites: () => refresher?.refresh() ?? Promise.resolve(),
    async migrate() {
      const lines: string[] = []
      for (const s of sinks) {
        if (!s.definition.migrate) continue
        try {
          for (const line of await s.definition.migrate(s.options as never, services)) lines.push(`${s.name}: ${line}`)
        } catch (error) {
          const message = `${s.name}: migration failed: ${(error as Error).message}`
          logger.warn('A sink could not migrate its storage; it will retry and spool meanwhile.', {
            sink: s.name,
            error: (error as Error).message,
          })
          lines.push(message)
        }
      }
      return lines
    },
    async reload(next) {
      const ignored: string[] = []
      const shape = (c: ResolvedConfig) =>
        JSON.stringify({
          plugins: c.plugins.map((p) => [p.name, p.mode, p.options]),
          sinks: c.sinks.map((s) => [s.name, s.options]),
        })
      if (shape(next) !== shape(config)) ignored.push('plugins and sinks (their list or options changed)')
      if (JSON.stringify(next.server) !== JSON.stringify(config.server)) ignored.push('server settings')
      currentConfig = next
      refresher?.stop()
      sites.replace(next.sites, next.retentionDays ?? null)
      declareSiteLabels()
      // The new config's source (loaded by loadConfig just now) takes over the refreshes.
      refresher = startRefresher(next)
      for (const p of plugins) {
        try {
          await p.instance.reload?.()
        } catch (error) {
          logger.error('A plugin failed to reload; it keeps what it had.', {
            plugin: p.name,
            error: (error as Error).message,
          })
        }
      }
      return ignored
    },
    shutdown() {
      shutdownPromise ??= shutdown()
      return shutdownPromise
    },
  }
}
