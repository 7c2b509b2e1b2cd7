// Helpers for a plugin's own tests: run one plugin on one event, no server, no config file.
//
//   const result = await runPlugin(plugin, { lists: [fixture('spammers.txt')] }, { referrerUrl: 'https://spam.example/a' })
//   expect(result.dropped).toBe('spam_referrer')

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { TSchema } from '@sinclair/typebox'
import { AnalyticsEvent } from './event.ts'
import { silentLogger } from './logger.ts'
import { resolveOptions } from './options.ts'
import type { Drop, EngineServices, PluginContext, PluginDefinition, PluginInstance, ServerSettings } from './plugin.ts'
import { createSiteTable, type SiteConfig } from './sites.ts'

export interface TestEngineOptions {
  sites?: SiteConfig[] | 'any'
  server?: Partial<ServerSettings>
  baseDir?: string
  stateDir?: string
}

/** Engine services for tests: a site table, a silent logger, a fresh temporary state folder. */
export function testServices(options: TestEngineOptions = {}): EngineServices & { closeAll(): Promise<void> } {
  const baseDir = options.baseDir ?? process.cwd()
  const closers: (() => void | Promise<void>)[] = []
  // Made on first use only: most plugin tests never touch it, and thousands of empty folders add up.
  let stateDir = options.stateDir
  return {
    sites: createSiteTable(options.sites ?? 'any'),
    server: {
      port: 0,
      host: '127.0.0.1',
      trustedProxies: ['loopback', 'private'],
      bodyLimit: 65536,
      bodyTimeoutMs: 10000,
      idleTimeoutSeconds: 10,
      ...options.server,
    },
    ack: 'received',
    transient: false,
    logger: silentLogger,
    baseDir,
    get stateDir() {
      stateDir ??= mkdtempSync(join(tmpdir(), 'analytics-test-'))
      return stateDir
    },
    resolvePath: (p) => resolve(baseDir, p),
    onClose: (fn) => closers.push(fn),
    worker: { index: 0, count: 1 },
    perWorker: (p) => p,
    metric: () => {},
    async closeAll() {
      for (const fn of closers.reverse()) await fn()
    },
  }
}

/** Makes an event with the given fields set (the rest keep their defaults). */
export function makeEvent(fields: Partial<AnalyticsEvent> = {}): AnalyticsEvent {
  return Object.assign(new AnalyticsEvent(), fields)
}

/** The context a plugin instance gets: `drop` accepts only declared reasons, like the pipeline's. */
export function contextFor(definition: PluginDefinition): PluginContext {
  const declared = definition.drops ?? {}
  const cache = new Map<string, Drop>()
  return {
    drop(reason) {
      if (!(reason in declared)) throw new Error(`${definition.name} returned an undeclared drop reason: ${reason}`)
      let drop = cache.get(reason)
      if (!drop) {
        drop = Object.freeze({ kind: 'drop', reason, plugin: definition.name }) as Drop
        cache.set(reason, drop)
      }
      return drop
    },
  }
}

/** Validates options like the engine does and calls `setup`; throws on invalid options. */
export async function setupPlugin<S extends TSchema>(
  definition: PluginDefinition<S>,
  options: unknown = {},
  services: EngineServices = testServices(),
): Promise<PluginInstance> {
  const resolved = resolveOptions(definition.options, options, definition.name)
  if (!resolved.ok) throw new Error(resolved.issues.map((i) => `${i.path}: ${i.message}`).join('\n'))
  return definition.setup(resolved.value as never, services)
}

export interface RunOutcome {
  event: AnalyticsEvent
  /** The drop reason, or undefined when the event went on. */
  dropped: string | undefined
}

/** Sets up `definition` with `options` and runs it on an event made from `fields`. */
export async function runPlugin<S extends TSchema>(
  definition: PluginDefinition<S>,
  options: unknown,
  fields: Partial<AnalyticsEvent> | AnalyticsEvent = {},
  services?: EngineServices,
): Promise<RunOutcome> {
  const instance = await setupPlugin(definition, options, services)
  const event = fields instanceof AnalyticsEvent ? fields : makeEvent(fields)
  const result = await instance.run?.(event, contextFor(definition))
  await instance.close?.()
  return { event, dropped: result?.reason }
}

export interface TestEngine {
  engine: import('./engine.ts').Engine
  /** Sends a request through the engine as if from `peerIp` (default 127.0.0.1). */
  handle(request: Request, peerIp?: string): Promise<Response>
  /** POSTs a JSON body to `path` (a string body is sent as is). */
  post(path: string, body: unknown, init?: { headers?: Record<string, string>; peerIp?: string }): Promise<Response>
  /** events_v2 rows that reached the memory sink. */
  events(): import('./rows.ts').JsonRow[]
  /** sessions_v2 rows that reached the memory sink. */
  sessions(): import('./rows.ts').JsonRow[]
  close(): Promise<void>
}

/**
 * An engine built from a plain config object, with a memory sink added so tests can read the rows.
 * Relative paths resolve against `baseDir` (default: the working directory); state goes to a fresh
 * temporary folder unless the config names one.
 */
export async function startTestEngine(
  config: Record<string, unknown>,
  baseDir = process.cwd(),
  options: { logger?: import('./logger.ts').Logger } = {},
): Promise<TestEngine> {
  const { resolveConfig } = await import('./config.ts')
  const { createEngine } = await import('./engine.ts')
  const sinks = [...((config.sinks as unknown[] | undefined) ?? []), 'memory']
  const ownState = config.stateDir === undefined ? mkdtempSync(join(tmpdir(), 'analytics-state-')) : undefined
  const raw = { stateDir: ownState, ...config, sinks }
  const resolved = await resolveConfig(raw, { source: '(test)', baseDir, env: undefined, vars: process.env })
  const engine = await createEngine(resolved, { logger: options.logger ?? silentLogger })
  const memory = engine.sinks.find((s) => s.name === 'memory')!
    .instance as import('../sinks/memory/index.ts').MemorySinkInstance
  const handle = (request: Request, peerIp?: string) => engine.handle(request, peerIp)
  return {
    engine,
    handle,
    post(path, body, init = {}) {
      const headers = { 'content-type': 'application/json', 'user-agent': TEST_UA, ...init.headers }
      const text = typeof body === 'string' ? body : JSON.stringify(body)
      return handle(new Request(`http://localhost${path}`, { method: 'POST', headers, body: text }), init.peerIp)
    },
    events: () => memory.events,
    sessions: () => memory.sessions,
    async close() {
      await engine.shutdown()
      if (ownState) rmSync(ownState, { recursive: true, force: true })
    },
  }
}

/** A desktop Chrome user agent, so test events are not taken for bots. */
export const TEST_UA =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'

/**
 * Runs `script` in a child Bun process (killed after 10 s) and tells what it printed, its exit code
 * and how long it ran: a module whose timers are not unref'd keeps the child alive past its last line.
 */
export async function runScript(script: string): Promise<{ stdout: string; code: number; ms: number }> {
  const started = performance.now()
  const child = Bun.spawn([process.execPath, '-e', script], { stdout: 'pipe', stderr: 'pipe' })
  const timer = setTimeout(() => child.kill(), 10_000)
  const code = await child.exited
  clearTimeout(timer)
  return { stdout: await new Response(child.stdout).text(), code, ms: performance.now() - started }
}
