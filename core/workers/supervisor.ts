// `serve --workers N` (issue "Scale out", research/scale-out.md §1.5, §3.2): the command-line process
// becomes a small supervisor with no HTTP listener of its own. It starts N worker processes of the
// same entry, each serving the same host:port with reusePort and its own internal Unix socket; it
// restarts a worker that dies, forwards SIGTERM/SIGINT (and waits for the workers' flushes), SIGHUP
// (reload), and restarts the workers one at a time on SIGUSR2 (a rolling restart).

import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import type { Logger } from '../logger.ts'
import type { WorkerIdentity } from '../plugin.ts'

/** The environment variables the supervisor hands each worker (read by core/cli.ts only). */
export const WORKER_ENV = 'ANALYTICS_WORKER'
export const RUN_DIR_ENV = 'ANALYTICS_RUN_DIR'
export const AFFINITY_ENV = 'ANALYTICS_AFFINITY'

/** A worker restarted this soon after it started counts as crash-looping: its next start waits longer. */
const QUICK_DEATH_MS = 5_000
const MAX_BACKOFF_MS = 5_000

/**
 * The worker command's runtime flags and script as this process was started, from
 * /proc/self/cmdline: Bun resolves symlinks in `process.argv[1]`, so a deploy that points a `current`
 * symlink at a new release would otherwise restart workers on the old release, and runtime flags
 * (`--preload`) would be lost. Falls back to `[script]` where /proc is missing or unclear.
 */
export function invokedScript(
  script: string,
  cmdline: string[] | undefined = readCmdline(),
  same: (a: string, b: string) => boolean = samePath,
): string[] {
  if (!cmdline) return [script]
  const at = cmdline.findIndex((arg, i) => i > 0 && same(arg, script))
  return at > 0 ? cmdline.slice(1, at + 1) : [script]
}

function readCmdline(): string[] | undefined {
  try {
    return readFileSync('/proc/self/cmdline', 'utf8')
      .split('\0')
      .filter((a) => a !== '')
  } catch {
    return undefined
  }
}

function samePath(a: string, b: string): boolean {
  try {
    return realpathSync(a) === realpathSync(b)
  } catch {
    return false
  }
}

/**
 * Whether this network namespace resets, rather than hands to another listener, the connections still
 * queued on a closing reusePort listener (`net.ipv4.tcp_migrate_req` = 0): then a rolling restart
 * fails a few requests under load. False when the setting is 1 or absent (not Linux, kernel < 5.14).
 */
export function migrateReqOff(file = '/proc/sys/net/ipv4/tcp_migrate_req'): boolean {
  try {
    return readFileSync(file, 'utf8').trim() === '0'
  } catch {
    return false
  }
}

/** `workers` from the config or `--workers`: a count, `auto` = one per core. */
export function workerCount(workers: number | 'auto'): number {
  return workers === 'auto' ? Math.max(1, availableParallelism()) : workers
}

/** This process's place among the workers when the supervisor started it; undefined otherwise. */
export function workerFromEnv(env: Record<string, string | undefined> = process.env): WorkerRun | undefined {
  const value = env[WORKER_ENV]
  const runDir = env[RUN_DIR_ENV]
  if (!value || !runDir) return undefined
  const match = /^(\d+)\/(\d+)$/.exec(value)
  if (!match) return undefined
  const index = Number(match[1])
  const count = Number(match[2])
  if (index >= count) return undefined
  return { identity: { index, count }, runDir, affinity: env[AFFINITY_ENV] !== '0' }
}

export interface WorkerRun {
  identity: WorkerIdentity
  /** The supervisor's private folder holding the workers' sockets. */
  runDir: string
  /** Whether requests are routed to the owner of their client IP. */
  affinity: boolean
}

/** The internal socket of worker `index`. */
export function socketPath(runDir: string, index: number): string {
  return join(runDir, `worker-${index}.sock`)
}

/** What a worker tells its supervisor over the IPC channel. */
export type WorkerMessage = { type: 'ready' }

export interface SupervisorOptions {
  /** The worker command: this runtime, the CLI and its arguments (a `--port` is appended). */
  command: string[]
  count: number
  affinity: boolean
  host: string
  port: number
  logger: Logger
}

interface Slot {
  index: number
  proc: Subprocess | undefined
  startedAt: number
  /** Resolves when the current process says it listens. */
  ready: Promise<void>
  markReady: () => void
  backoffMs: number
  /** Set while the slot is being replaced on purpose (rolling restart): its exit is not a crash. */
  replacing: boolean
  /** Whether any process of this slot ever listened: one that dies before, at the first start, stops all. */
  everReady: boolean
}

/** A port nobody listens on for `host` (port 0 in the config): every worker must bind the same one. */
async function pickPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, host, () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/**
 * Runs the supervisor until SIGTERM/SIGINT; resolves with the exit code (0 when every worker stopped
 * cleanly). Logs `Listening.` with the URL once every worker listens.
 */
export async function runSupervisor(options: SupervisorOptions): Promise<number> {
  const { logger, count } = options
  if (typeof (globalThis as { Bun?: unknown }).Bun === 'undefined') {
    logger.error('serve --workers needs Bun (it spawns worker processes with Bun.spawn); run one process per port.')
    return 2
  }
  // Host configuration is the operator's: the supervisor only says what to set (docs/scale-out.md).
  if (count > 1 && migrateReqOff())
    logger.warn(
      'net.ipv4.tcp_migrate_req is 0: a rolling restart (SIGUSR2) resets the connections queued on the stopping worker; set sysctl net.ipv4.tcp_migrate_req=1 for zero failed requests.',
    )
  // The sockets live in a private folder (0700 by mkdtemp) made per run: nothing else may connect.
  const runDir = mkdtempSync(join(tmpdir(), 'analytics-run-'))
  const port = options.port === 0 ? await pickPort(options.host) : options.port
  let stopping = false
  const slots: Slot[] = []

  const newSlot = (index: number): Slot => {
    const slot = {
      index,
      proc: undefined,
      startedAt: 0,
      backoffMs: 0,
      replacing: false,
      everReady: false,
    } as Slot
    slot.ready = new Promise<void>((done) => {
      slot.markReady = done
    })
    return slot
  }

  const spawnWorker = (slot: Slot): Subprocess => {
    slot.ready = new Promise<void>((done) => {
      slot.markReady = done
    })
    slot.startedAt = Date.now()
    // Only the first start of worker 0 migrates the sinks' tables; a restart finds them made and
    // listens sooner.
    const migrate = slot.index === 0 && !slot.everReady ? [] : ['--no-migrate']
    const proc = Bun.spawn([...options.command, '--port', String(port), ...migrate], {
      env: {
        ...process.env,
        [WORKER_ENV]: `${slot.index}/${count}`,
        [RUN_DIR_ENV]: runDir,
        [AFFINITY_ENV]: options.affinity ? '1' : '0',
      },
      stdin: 'ignore',
      stdout: 'inherit',
      stderr: 'inherit',
      ipc(message: WorkerMessage) {
        if (message?.type !== 'ready') return
        slot.everReady = true
        slot.markReady()
      },
    })
    slot.proc = proc
    void proc.exited.then((code) => onExit(slot, proc, code))
    return proc
  }

  const onExit = (slot: Slot, proc: Subprocess, code: number) => {
    if (slot.proc !== proc) return
    slot.proc = undefined
    if (stopping || slot.replacing) return
    if (!slot.everReady) {
      // It never started (a plugin's file missing, the port taken): restarting would fail the same way.
      logger.error('A worker could not start; stopping.', { worker: slot.index, exitCode: code })
      void stopAll('SIGTERM', code === 0 ? 2 : code)
      return
    }
    const lived = Date.now() - slot.startedAt
    // A worker that keeps dying right after start is restarted ever more slowly (100 ms doubling up
    // to 5 s), so a broken disk does not spin the CPU; the first death is restarted at once.
    const delay = slot.backoffMs
    slot.backoffMs = lived < QUICK_DEATH_MS ? Math.min(MAX_BACKOFF_MS, Math.max(100, slot.backoffMs * 2)) : 0
    logger.error('A worker died; restarting it.', {
      worker: slot.index,
      pid: proc.pid,
      exitCode: code,
      signal: proc.signalCode ?? undefined,
      restartInMs: delay,
    })
    setTimeout(() => {
      if (!stopping && !slot.proc) spawnWorker(slot)
    }, delay)
  }

  for (let i = 0; i < count; i++) slots.push(newSlot(i))

  const { promise: stopped, resolve: finish } = Promise.withResolvers<number>()
  const stopAll = async (signal: 'SIGTERM' | 'SIGINT', exitCode = 0) => {
    if (stopping) {
      logger.info('Shutdown already in progress; waiting for the workers.', { signal })
      return
    }
    stopping = true
    if (exitCode === 0) logger.info('Shutting down: stopping the workers.', { signal })
    const codes = await Promise.all(
      slots.map(async (slot) => {
        const proc = slot.proc
        if (!proc) return 0
        proc.kill('SIGTERM')
        return proc.exited
      }),
    )
    rmSync(runDir, { recursive: true, force: true })
    const failed = codes.filter((c) => c !== 0).length
    if (failed > 0) logger.error('Some workers did not stop cleanly.', { codes })
    else logger.info('Stopped.')
    finish(exitCode !== 0 ? exitCode : failed > 0 ? 1 : 0)
  }
  process.on('SIGTERM', () => void stopAll('SIGTERM'))
  process.on('SIGINT', () => void stopAll('SIGINT'))
  process.on('SIGHUP', () => {
    logger.info('Reloading the config in every worker.')
    for (const slot of slots) slot.proc?.kill('SIGHUP')
  })
  let rolling: Promise<void> = Promise.resolve()
  process.on('SIGUSR2', () => {
    rolling = rolling.then(() => rollingRestart())
  })

  /**
   * One worker at a time: it stops (no new connections, in-flight requests finish, sinks flush, the
   * sessions' snapshot is written, its spool lock released), then its replacement starts on the same
   * state and listens before the next one stops. The others serve the port meanwhile.
   */
  const rollingRestart = async () => {
    logger.info('Rolling restart of the workers.')
    for (const slot of slots) {
      if (stopping) return
      const old = slot.proc
      slot.replacing = true
      if (old) {
        old.kill('SIGTERM')
        const code = await old.exited
        if (code !== 0)
          logger.warn('A worker did not stop cleanly during the rolling restart.', { worker: slot.index, code })
      }
      slot.replacing = false
      if (stopping) return
      spawnWorker(slot)
      await slot.ready
      logger.info('Worker restarted.', { worker: slot.index, pid: slot.proc?.pid })
    }
    logger.info('Rolling restart done.')
  }

  // Worker 0 first: it migrates the sinks' tables; the others then find them made.
  spawnWorker(slots[0]!)
  const firstUp = await Promise.race([slots[0]!.ready.then(() => true), stopped.then(() => false)])
  if (firstUp) {
    for (const slot of slots.slice(1)) spawnWorker(slot)
    const allUp = await Promise.race([
      Promise.all(slots.map((s) => s.ready)).then(() => true),
      stopped.then(() => false),
    ])
    if (allUp) {
      logger.info('Listening.', {
        url: `http://${options.host}:${port}`,
        workers: count,
        affinity: options.affinity,
        pids: slots.map((s) => s.proc?.pid),
      })
    }
  }
  return stopped
}
