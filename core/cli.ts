#!/usr/bin/env bun
// The command line: `serve` (default), `check`, `schema`, `migrate`, `replay`. A config error stops start-up
// with every bad value's path and exit code 2, never a stack trace.

import { readFileSync } from 'node:fs'
import { ConfigErrors, type LoadOptions, loadConfig, type ResolvedComponent, type ResolvedConfig } from './config.ts'
import { createEngine, type Engine } from './engine.ts'
import { explain, formatExplain, parseExplainInput } from './explain.ts'
import { createLogger, type Logger } from './logger.ts'
import { STAGES } from './plugin.ts'
import { type ReplayOptions, resolveReplayOptions, runReplay } from './replay/index.ts'
import { BUN_ALLOCATOR_SETTING, runtimeName } from './runtime/index.ts'
import { configJsonSchema } from './schema.ts'
import type { SinkDefinition } from './sink.ts'
import { invokedScript, runSupervisor, type WorkerMessage, workerCount, workerFromEnv } from './workers/supervisor.ts'

const USAGE = `Usage: analytics-ingest [command] [options]

Commands:
  serve     Run the engine (default).
  check     Validate the config, print the resolved pipeline stage by stage; exit 1 on error.
  schema    Print the JSON Schema of the config file (for editors).
  migrate   Create or upgrade the sinks' databases and tables, then exit.
  explain REQUEST.json
            Run one request through the configured pipeline and print each plugin's verdict, what it
            changed, the rows the sinks would get and the answer; writes nothing. REQUEST.json is
            {"method", "path", "headers", "body", "peer"}; - reads it from stdin.
  replay    Feed recorded requests or stdout-sink rows through the config's pipeline and sinks:
            replay [--format ndjson|access-log] INPUT... (- = stdin). See docs/operators/replay.md.

Options:
  --config, -c FILE   Config file (YAML, JSON or TS). Default: ./analytics.yaml if present, else embedded defaults.
  --env, -e NAME      Apply the named environment (default: $ANALYTICS_ENV).
  --port, -p N        Override server.port.
  --host ADDRESS      Override server.host.
  --workers N|auto    serve: N processes on the port, supervised (server.workers; auto = one per core).
                      SIGUSR2 to the supervisor restarts the workers one at a time.
  --no-migrate        serve, replay: do not create or upgrade tables at start.
  --json              explain: print the report as JSON.
  --format NAME       replay: ndjson (default) or access-log.
  --chunk-size N      replay: records per checkpoint (sinks flushed, then ids recorded). Default 1000.
  --status LIST       replay, access-log: only lines nginx answered with these statuses (e.g. 502,504).
  --progress-interval-ms N   replay: progress every N ms (default 250 on a terminal, else 1000).
  --help, -h          This text.
`

const COMMANDS = ['serve', 'check', 'schema', 'migrate', 'explain', 'replay', 'help'] as const

interface Args {
  command: (typeof COMMANDS)[number]
  load: LoadOptions
  migrate: boolean
  json: boolean
  /** Arguments after the command that are not options (explain's request file, replay's inputs). */
  positionals: string[]
  replay: ReplayOptions | undefined
}

export function parseArgs(argv: string[]): Args | { error: string } {
  const args: Args = { command: 'serve', load: {}, migrate: true, json: false, positionals: [], replay: undefined }
  const replay: Record<string, unknown> = {}
  let commandSeen = false
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const [flag, inline] =
      a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    const value = () => {
      const v = inline ?? argv[++i]
      if (v === undefined || v === '') throw new Error(`${flag} needs a value`)
      return v
    }
    try {
      switch (flag) {
        case '--config':
        case '-c':
          args.load.file = value()
          break
        case '--env':
        case '-e':
          args.load.env = value()
          break
        case '--port':
        case '-p': {
          const v = value()
          const port = Number(v)
          if (!Number.isInteger(port) || port < 0 || port > 65535) return { error: `--port: not a port number: ${v}` }
          args.load.port = port
          break
        }
        case '--host':
          args.load.host = value()
          break
        case '--workers': {
          const v = value()
          const n = Number(v)
          if (v !== 'auto' && (!Number.isInteger(n) || n < 1 || n > 256)) {
            return { error: `--workers: expected 1 to 256 or auto: ${v}` }
          }
          args.load.workers = v === 'auto' ? 'auto' : n
          break
        }
        case '--no-migrate':
          args.migrate = false
          break
        case '--json':
          args.json = true
          break
        case '--help':
        case '-h':
          args.command = 'help'
          break
        // replay's options: gathered as given, validated against its schema below.
        case '--format':
          replay.format = value()
          break
        case '--chunk-size':
          replay.chunkSize = Number(value())
          break
        case '--progress-interval-ms':
          replay.progressIntervalMs = Number(value())
          break
        case '--status':
          replay.status = value()
            .split(',')
            .map((x) => Number(x.trim()))
          break
        default:
          if (!a.startsWith('-') && !commandSeen && (COMMANDS as readonly string[]).includes(a)) {
            args.command = a as Args['command']
            commandSeen = true
          } else if ((args.command === 'explain' || args.command === 'replay') && (a === '-' || !a.startsWith('-'))) {
            args.positionals.push(a)
          } else return { error: `unknown argument: ${a}` }
      }
    } catch (error) {
      return { error: (error as Error).message }
    }
  }
  if (args.command === 'explain' && args.positionals.length !== 1) {
    return { error: 'explain needs one request file (or - for stdin)' }
  }
  if (args.command === 'replay') {
    const resolved = resolveReplayOptions({ ...replay, inputs: args.positionals })
    if ('error' in resolved) return resolved
    args.replay = resolved
  }
  return args
}

/** The resolved pipeline, stage by stage, as `check` prints it. */
export function describePipeline(config: ResolvedConfig, engine?: Engine): string {
  const lines: string[] = []
  lines.push(`config: ${config.source}${config.env ? ` (environment: ${config.env})` : ''}`)
  const s = config.server
  lines.push(
    `server: ${s.host}:${s.port}, body limit ${s.bodyLimit} bytes, trusted proxies: ${s.trustedProxies.join(', ') || 'none'}`,
  )
  const source = config.sitesSource
  lines.push(
    `sites: ${source ? `from ${source.describe}${source.refreshSeconds > 0 ? `, refreshed every ${source.refreshSeconds} s` : ''}: ` : ''}${
      config.sites === 'any'
        ? 'any (site ids derived from the domain)'
        : config.sites.map((x) => `${x.domain} (${x.id})`).join(', ') || 'none'
    }`,
  )
  lines.push(`retention: ${describeRetentionPerSite(config)}`)
  lines.push(`state: ${config.stateDir}`)
  for (const stage of STAGES) {
    const names = config.plugins.filter((p) => p.definition.stage === stage)
    if (stage === 'parse') {
      const routes = engine?.routes ?? []
      lines.push(
        `${stage.padEnd(9)} ${
          names
            .map(
              (p) =>
                `${p.name}${routes
                  .filter((r) => r.plugin === p.name)
                  .map((r) => ` (${r.route.method} ${r.route.path})`)
                  .join('')}`,
            )
            .join(', ') || '(none: no routes, nothing can arrive)'
        }`,
      )
    } else lines.push(`${stage.padEnd(9)} ${names.map((p) => p.name).join(' → ') || '-'}`)
  }
  lines.push(`sinks     ${config.sinks.map((x) => x.name).join(', ')}`)
  return lines.join('\n')
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk as Uint8Array))
  return Buffer.concat(chunks).toString('utf8')
}

async function memorySinkComponent(): Promise<ResolvedComponent<SinkDefinition>> {
  const definition = (await import('../sinks/memory/index.ts')).default as SinkDefinition
  return { name: 'memory', path: 'sinks', definition, options: { maxRows: 1000 }, mode: 'drop' }
}

/** `forever`, or the global days and each site's: what the ClickHouse and chdb sinks apply on migrate. */
function describeRetentionPerSite(config: ResolvedConfig): string {
  const days = (d: number | undefined) => (d === undefined ? 'forever' : `${d} days`)
  const global = config.retentionDays
  const sites = config.sites === 'any' ? [] : config.sites
  if (global === undefined && sites.every((s) => s.retention === undefined)) return 'forever (rows are never deleted)'
  const perSite = sites.map((s) => `${s.domain} (${s.id}): ${days(s.retention?.days ?? global)}`)
  return [`default ${days(global)}`, ...perSite].join('; ')
}

function printConfigErrors(error: ConfigErrors): void {
  process.stderr.write(`Invalid config (${error.source}):\n`)
  for (const issue of error.issues) process.stderr.write(`  ${issue.path}: ${issue.message}\n`)
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv)
  if ('error' in args) {
    process.stderr.write(`${args.error}\n\n${USAGE}`)
    return 2
  }
  if (args.command === 'help') {
    process.stdout.write(USAGE)
    return 0
  }
  if (args.command === 'schema') {
    process.stdout.write(`${JSON.stringify(await configJsonSchema(), null, 2)}\n`)
    return 0
  }

  let config: ResolvedConfig
  let engine: Engine
  // Started by a supervisor (`serve --workers N`): this process is worker i of N.
  const workerRun = args.command === 'serve' ? workerFromEnv() : undefined
  try {
    config = await loadConfig(args.load)
    // explain writes nothing: the configured sinks are not even set up.
    if (args.command === 'explain') config = { ...config, sinks: [await memorySinkComponent()] }
    const workers = workerCount(config.server.workers)
    if (args.command === 'serve' && !workerRun && workers > 1) {
      const logger = createLogger({ level: config.logLevel })
      allocatorHint(logger)
      return runSupervisor({
        command: [process.execPath, ...invokedScript(process.argv[1] ?? import.meta.path), ...argv],
        count: workers,
        affinity: config.server.affinity ?? true,
        host: config.server.host,
        port: config.server.port,
        logger,
      })
    }
    engine = await createEngine(config, {
      workerRun,
      logger: createLogger({ level: args.command === 'serve' ? undefined : 'warn' }),
      // Only serve owns the server's state (the sessions' snapshot): check, migrate, explain and
      // replay must neither take it nor leave one.
      transient: args.command !== 'serve',
    })
  } catch (error) {
    if (error instanceof ConfigErrors) {
      printConfigErrors(error)
      return args.command === 'check' ? 1 : 2
    }
    process.stderr.write(`Cannot start: ${(error as Error).message}\n`)
    return 2
  }

  if (args.command === 'check') {
    process.stdout.write(`${describePipeline(config, engine)}\nconfig OK\n`)
    await engine.shutdown()
    return 0
  }
  if (args.command === 'explain') {
    try {
      const source = args.positionals[0]!
      const text = source === '-' ? await readStdin() : readFileSync(source, 'utf8')
      const report = await explain(engine, parseExplainInput(text))
      process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : formatExplain(report))
      return 0
    } catch (error) {
      process.stderr.write(`explain: ${(error as Error).message}\n`)
      return 2
    } finally {
      await engine.shutdown()
    }
  }
  if (args.replay) {
    // Like serve: a fresh database gets its tables before the first row arrives.
    if (args.migrate) await engine.migrate()
    return runReplay(engine, args.replay, {
      stdin: process.stdin,
      stderr: { isTTY: process.stderr.isTTY === true, write: (text) => process.stderr.write(text) },
    })
  }
  if (args.command === 'migrate') {
    const lines = await engine.migrate()
    for (const line of lines) process.stdout.write(`${line}\n`)
    await engine.shutdown()
    return lines.some((l) => l.includes('migration failed')) ? 1 : 0
  }

  // Signal handlers come first: a SIGTERM that arrives while migrating or just after "Listening." must
  // still flush. `bun run` forwards signals, so a signal sent to the process group arrives twice: the
  // second one must not cut the flush short. Shutdown runs once; later signals only log.
  let stopping = false
  const stopped = new Promise<number>((done) => {
    let signals = 0
    const onSignal = (signal: string) => {
      signals++
      if (signals > 1) {
        engine.logger.info('Shutdown already in progress; finishing the flush.', { signal })
        return
      }
      stopping = true
      engine.logger.info('Shutting down: no new requests, draining, flushing sinks.', { signal })
      engine.shutdown().then(
        () => {
          engine.logger.info('Stopped.')
          done(0)
        },
        (error) => {
          engine.logger.error('Shutdown failed.', { error: (error as Error).message })
          done(1)
        },
      )
    }
    process.on('SIGTERM', () => onSignal('SIGTERM'))
    process.on('SIGINT', () => onSignal('SIGINT'))
    // An error no code caught comes from outside any request (a library's socket without an error
    // listener, a timer in a custom plugin). Dying would lose the rows and sessions in memory and
    // stop ingest, so it is logged, counted, and the engine serves on; the fault stays visible.
    const uncaught = (kind: string) => (error: unknown) => {
      engine.metrics.uncaughtErrors++
      const e = error instanceof Error ? error : new Error(String(error))
      const stack = e.stack?.split('\n').slice(1, 9).join('\n')
      engine.logger.error('Uncaught error; serving on.', { kind, error: e.message.slice(0, 500), stack })
    }
    process.on('uncaughtException', uncaught('exception'))
    process.on('unhandledRejection', uncaught('rejection'))
    // A worker whose supervisor died (kill -9) stops as on SIGTERM instead of serving on alone.
    if (workerRun) process.on('disconnect', () => onSignal('supervisor gone'))
    // SIGHUP: reload sites, shields and plugins' files; a bad new config is refused and the old one stays.
    let reloading = Promise.resolve()
    process.on('SIGHUP', () => {
      reloading = reloading.then(async () => {
        try {
          const next = await loadConfig(args.load)
          const ignored = await engine.reload(next)
          engine.logger.info('Config reloaded.', { sites: next.sites === 'any' ? 'any' : next.sites.length })
          if (ignored.length) engine.logger.warn('Some changes need a restart and were not applied.', { ignored })
        } catch (error) {
          const issues = error instanceof ConfigErrors ? error.issues.map((i) => `${i.path}: ${i.message}`) : undefined
          engine.logger.error('Config reload refused; the running config stays.', {
            error: issues ? undefined : (error as Error).message,
            issues,
          })
        }
      })
    })
  })

  if (args.migrate) {
    for (const line of await engine.migrate()) engine.logger.info('Migration.', { detail: line })
  }
  if (stopping) return stopped
  let address: { port: number; hostname: string }
  try {
    address = await engine.listen()
  } catch (error) {
    engine.logger.error('Cannot listen.', { error: (error as Error).message })
    await engine.shutdown()
    return 2
  }
  if (workerRun) {
    // The supervisor logs `Listening.` once every worker does.
    engine.logger.info('Worker listening.', { worker: workerRun.identity.index, pid: process.pid })
    process.send?.({ type: 'ready' } satisfies WorkerMessage)
    return stopped
  }
  allocatorHint(engine.logger)
  engine.logger.info('Listening.', {
    url: `http://${address.hostname}:${address.port}`,
    config: config.source,
    env: config.env,
    pipeline: engine.pipeline.steps.map((s) => s.name),
    sinks: engine.sinks.map((s) => s.name),
  })
  return stopped
}

/**
 * Bun's allocator reads its options when the process starts, so the engine cannot set this one
 * itself; started some other way than `npm start` (systemd, a container, the `bin` entry) it says so.
 */
function allocatorHint(logger: Logger): void {
  const { name, value } = BUN_ALLOCATOR_SETTING
  if (runtimeName() !== 'bun' || process.env[name]) return
  logger.info(
    `${name} is not set: Bun's allocator gives free memory back up to every 100 ms, about a tenth more CPU per request under load. npm start sets ${value} (docs/performance.md).`,
  )
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error) => {
      process.stderr.write(`Fatal: ${(error as Error).message}\n`)
      process.exit(1)
    },
  )
}
