// CPU time per request (`bun bench/cpu.ts`): a steadier measure than requests/s on a shared machine.
// Starts the bare server and the engine (as bench/run.ts does), warms each up, then reads the
// server's user+system CPU time from /proc/<pid>/stat around a fixed wrk run and divides by the
// requests served. The load is paced (--rate requests/s, 0 for as fast as possible) so that both
// servers see the same traffic shape whatever else runs on the machine; other processes' load then
// changes how long a request waits much more than what it costs. Prints each run and the median.
//
// `--base DIR` adds a variant `base`: the engine of another checkout (e.g. `git worktree add` of the
// commit before a change), alternated with this one for a before/after on equal terms.
//
// `engine-2w` and `engine-2w-noaff` are the engine with `--workers 2`, with and without one owner per
// client IP (core/workers/link.ts): their difference is the cost of forwarding (the CPU of the
// supervisor and both workers is counted).
//
// Each server is warmed up for `--warmup` seconds first (10 by default): the engine's JIT compiler is
// busy for about that long under load (see bench/run.ts).
//
// `bare-<mode>` is bench/bare.ts with one engine feature added (its modes are listed there);
// `plausible-null` and `plausible-stdout` are the engine with only the plausible dialect, its stdout
// sink printing no table or both. `engine@FILE` is the engine with the config FILE (relative to the
// checkout), to compare two settings.
//
//   bun bench/cpu.ts [--seconds 6] [--warmup 10] [--rate 0] [--only bare,engine,engine-2w,engine-2w-noaff] [--rounds 3] [--base DIR]

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { corpusLines, generateCorpus } from './corpus.ts'
import { flag, freshStateEnv, replayCorpus, waitReady } from './load.ts'

const root = resolve(import.meta.dir, '..')
const out = join(root, 'bench/out')
const seconds = Number(flag('seconds', '6'))
const rate = Number(flag('rate', '0'))
const rounds = Number(flag('rounds', '3'))
const warmup = Number(flag('warmup', '10'))
// wrk paces each connection by a delay between its requests: rate = connections × 1000 / delay.
const delayMs = 10
const connections = rate > 0 ? Math.max(1, Math.round((rate * delayMs) / 1000)) : 64
const base = flag('base', '')
const only = flag('only', base ? 'base,engine' : 'bare,engine').split(',')
const config = resolve(root, flag('config', 'bench/cases/engine-stdout.yaml'))

const commands: Record<string, (port: number) => string[]> = {
  bare: (port) => [process.execPath, join(root, 'bench/bare.ts'), String(port)],
  // The engine with only the plausible dialect: with stdout printing nothing, and with stdout.
  'plausible-null': (port) => engineWith('bench/cases/plausible-null.yaml', port),
  'plausible-stdout': (port) => engineWith('bench/cases/plausible-stdout.yaml', port),
  engine: (port) => [process.execPath, join(root, 'core/cli.ts'), 'serve', '--config', config, '--port', String(port)],
  'engine-2w': (port) => [
    ...[process.execPath, join(root, 'core/cli.ts'), 'serve', '--config', config, '--port', String(port)],
    '--workers',
    '2',
  ],
  'engine-2w-noaff': (port) => [
    ...[process.execPath, join(root, 'core/cli.ts'), 'serve', '--config', noAffinity(), '--port', String(port)],
    '--workers',
    '2',
  ],
  base: (port) => [
    process.execPath,
    join(resolve(base), 'core/cli.ts'),
    'serve',
    '--config',
    config,
    '--port',
    String(port),
  ],
}

function engineWith(file: string, port: number): string[] {
  return [process.execPath, join(root, 'core/cli.ts'), 'serve', '--config', resolve(root, file), '--port', String(port)]
}

/** `bare-<mode>`: bench/bare.ts with one of the engine's features (see there). */
const commandFor = (name: string) =>
  commands[name] ??
  (name.startsWith('bare-')
    ? (port: number) => [process.execPath, join(root, 'bench/bare.ts'), String(port), name.slice(5)]
    : name.startsWith('engine@')
      ? (port: number) => engineWith(name.slice(7), port)
      : undefined)

/** The bench config with `server.affinity: false`, in bench/out (its `./` paths made absolute). */
function noAffinity(): string {
  const file = join(out, 'engine-no-affinity.yaml')
  const text = readFileSync(config, 'utf8')
    .replace(/^server: \{/m, 'server: { affinity: false,')
    .replaceAll('./', `${resolve(config, '..')}/`)
  writeFileSync(file, text)
  return file
}

/** utime + stime of a process and its descendants (workers), in seconds (ticks are 1/100 s on Linux). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  let seconds = (Number(fields[11]) + Number(fields[12])) / 100
  let children = ''
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
  } catch {}
  for (const child of children.split(' ').filter(Boolean)) seconds += cpuSeconds(Number(child))
  return seconds
}

mkdirSync(out, { recursive: true })
writeFileSync(join(out, 'corpus.tsv'), corpusLines(generateCorpus()))
const results = new Map<string, number[]>()
let port = 18600 + Math.floor(Math.random() * 300)
for (let round = 0; round < rounds; round++) {
  for (const name of only) {
    const proc = Bun.spawn(commandFor(name)!(port), {
      cwd: root,
      stdout: 'ignore',
      stderr: 'ignore',
      env: freshStateEnv(),
    })
    try {
      await waitReady(port, 'post')
      await replayCorpus(port, { seconds: warmup, seed: 1, connections, delayMs: rate > 0 ? delayMs : undefined })
      const before = cpuSeconds(proc.pid)
      const requests = await replayCorpus(port, {
        seconds,
        seed: 2,
        connections,
        delayMs: rate > 0 ? delayMs : undefined,
      })
      const spent = cpuSeconds(proc.pid) - before
      results.set(name, [...(results.get(name) ?? []), (spent * 1e6) / requests])
      console.log(
        `${name}: ${requests} requests, ${(requests / seconds).toFixed(0)} req/s, ${((spent * 1e6) / requests).toFixed(1)} µs CPU/request`,
      )
    } finally {
      proc.kill('SIGTERM')
      await proc.exited
      port++
    }
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!
for (const [name, values] of results) console.log(`${name}: median ${median(values).toFixed(1)} µs CPU/request`)
