// What the benchmarks share to drive a server: waiting until it answers, and wrk replaying the
// corpus (bench/out/corpus.tsv, written by the caller) against its Plausible route.

import { rmSync } from 'node:fs'
import { join, resolve } from 'node:path'

const root = resolve(import.meta.dir, '..')

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
 * The environment for a server under test: the bench configs keep their state in `${BENCH_STATE}`,
 * emptied here before each start. Otherwise each run would restore the sessions the previous runs
 * saved at shutdown (a 60 MB snapshot of 170,000 sessions had piled up), and measure them too.
 */
export function freshStateEnv(): Record<string, string | undefined> {
  const dir = join(root, 'bench/out/state')
  rmSync(dir, { recursive: true, force: true })
  return { ...process.env, BENCH_STATE: dir }
}
