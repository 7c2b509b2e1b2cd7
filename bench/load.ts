// What the benchmarks share to drive a server: the bench config with another sink, waiting until it
// answers, and wrk replaying the corpus (bench/out/corpus.tsv, written by the caller) against its
// Plausible route.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { BUN_ALLOCATOR_SETTING } from '../core/runtime/index.ts'

const root = resolve(import.meta.dir, '..')
const out = join(root, 'bench/out')

/**
 * The bench config (bench/cases/engine-stdout.yaml) with `sink` in place of stdout and `ack` set,
 * written to bench/out/<name>.yaml with the spam list's path made absolute. Its state folder (spool,
 * database) is bench/out/state-<name>, emptied first. Returns the file.
 */
export function benchConfig(name: string, sink: Record<string, unknown>, ack: 'received' | 'durable'): string {
  const config = parseYaml(readFileSync(join(root, 'bench/cases/engine-stdout.yaml'), 'utf8')) as {
    plugins: unknown[]
    sinks: unknown[]
    ack?: string
    stateDir?: string
  }
  config.plugins = config.plugins.map((p) =>
    typeof p === 'object' && p !== null && 'spam-referrers' in p
      ? { 'spam-referrers': { lists: [join(root, 'bench/cases/spammers.txt')] } }
      : p,
  )
  config.sinks = [sink]
  config.ack = ack
  config.stateDir = join(out, `state-${name}`)
  rmSync(config.stateDir, { recursive: true, force: true })
  mkdirSync(out, { recursive: true })
  const file = join(out, `${name}.yaml`)
  writeFileSync(file, stringifyYaml(config))
  return file
}

/**
 * Resolves once the server on `port` answers below 500: `health` asks /health (the engine), `post`
 * sends an empty event (a bare server has no /health). Throws after 20 s, or when `proc` has exited.
 */
export async function waitReady(port: number, how: 'post' | 'health', proc?: Bun.Subprocess): Promise<void> {
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline) {
    if (proc && proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}`)
    try {
      const res =
        how === 'health'
          ? await fetch(`http://127.0.0.1:${port}/health`)
          : await fetch(`http://127.0.0.1:${port}/api/event`, { method: 'POST', body: '{}' })
      if (res.status < 500) return
    } catch {
      // not up yet
    }
    await Bun.sleep(100)
  }
  throw new Error('server did not become ready')
}

/**
 * wrk (one thread) replaying the corpus for `seconds` from `seed`, paced by `delayMs` per request
 * and connection when given; returns the requests it sent.
 */
export async function replayCorpus(
  port: number,
  o: { seconds: number; seed: number; connections: number; delayMs?: number },
): Promise<number> {
  const proc = Bun.spawn(
    [
      'wrk',
      '-t1',
      `-c${o.connections}`,
      `-d${o.seconds}s`,
      '-s',
      join(root, 'bench/replay.lua'),
      `http://127.0.0.1:${port}/api/event`,
      '--',
      join(root, 'bench/out/corpus.tsv'),
      String(o.seed),
      ...(o.delayMs !== undefined ? [String(o.delayMs)] : []),
    ],
    { cwd: root, stdout: 'pipe', stderr: 'pipe' },
  )
  const text = await new Response(proc.stdout).text()
  await proc.exited
  return Number(/(\d+) requests in/.exec(text)?.[1] ?? 0)
}

/**
 * What `npm start` sets in the engine's environment (BUN_ALLOCATOR_SETTING). Every server a bench
 * starts gets it, the bare ones too (they allocate too little for it to matter), so the bench
 * measures the engine as users start it.
 */
export const START_ENV: Record<string, string> = {
  [BUN_ALLOCATOR_SETTING.name]: process.env[BUN_ALLOCATOR_SETTING.name] || BUN_ALLOCATOR_SETTING.value,
}

/**
 * The environment for a server under test: the bench configs keep their state in `${BENCH_STATE}`,
 * emptied here before each start. Otherwise each run would restore the sessions the previous runs
 * saved at shutdown (a 60 MB snapshot of 170,000 sessions had piled up), and measure them too.
 */
export function freshStateEnv(): Record<string, string | undefined> {
  const dir = join(root, 'bench/out/state')
  rmSync(dir, { recursive: true, force: true })
  return { ...process.env, ...START_ENV, BENCH_STATE: dir }
}

/**
 * For the benches that run the engine in their own process (stages, rows, path, memory): the
 * allocator setting of `npm start` can only come from the environment this process started with,
 * so say so when it is missing rather than measure another engine than the one users run.
 */
export function warnUnlessStartEnv(): void {
  for (const [name, value] of Object.entries(START_ENV)) {
    if (!process.env[name]) {
      process.stderr.write(
        `note: ${name} is not set; npm start sets ${name}=${value}. Run this as \`${name}=${value} bun ${process.argv[1] ?? ''}\` to measure the engine as it starts.\n`,
      )
    }
  }
}

/** The command that serves the engine of this checkout with `config` on `port`; `flags` go to the runtime. */
export function engineCommand(config: string, port: number, flags: readonly string[] = []): string[] {
  return [process.execPath, ...flags, join(root, 'core/cli.ts'), 'serve', '--config', config, '--port', String(port)]
}

/** The value after `--name` on the command line, or `fallback`. */
export function flag(name: string, fallback: string, args: readonly string[] = process.argv): string {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && args[i + 1] ? args[i + 1]! : fallback
}
