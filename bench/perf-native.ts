// Where the engine's main thread spends its time, native code included (`bun bench/perf-native.ts`).
// bench/profile.ts sees only samples taken while JavaScript runs; this one samples the whole thread
// with perf(1) while wrk replays the corpus, and names the JIT-compiled code: the engine runs with
// JavaScriptCore's JITDump on, and the dump becomes a /tmp/perf-<pid>.map that perf reads. Each sample
// goes to the nearest JavaScript function on its stack (or "(no JS frame)": Bun's HTTP server, the
// event loop, the collector), split by where the sampled instruction was: compiled JavaScript, Bun's
// native code, the kernel, libc. Bun's npm binary has no symbols, so native code has no names; JS
// callers are what can be told apart.
//
// `--long-turns MS` keeps only the samples taken during event-loop turns longer than MS (recorded by
// bench/long-turns.ts), the turns that set the latency tail; use it with a paced `--rate`.
//
//   bun bench/perf-native.ts [--seconds 5] [--warmup 10] [--rate 0] [--long-turns 0] [--top 30]
//                            [--config bench/cases/engine-stdout.yaml]
//
// Needs perf (Debian: linux-perf) and wrk, and the right to trace the process (root, or
// kernel.perf_event_paranoid ≤ 1).

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { corpusLines, generateCorpus } from './corpus.ts'
import { jitDumpRanges } from './jitdump.ts'
import { engineCommand, flag, freshStateEnv, replayCorpus, waitReady } from './load.ts'

const root = resolve(import.meta.dir, '..')
const seconds = Number(flag('seconds', '5'))
const warmup = Number(flag('warmup', '10'))
const rate = Number(flag('rate', '0'))
const longTurnMs = Number(flag('long-turns', '0'))
const top = Number(flag('top', '30'))
const config = resolve(root, flag('config', 'bench/cases/engine-stdout.yaml'))
const port = 18400 + Math.floor(Math.random() * 500)
/** perf's sampling rate; not a round 5,000, so that sampling does not run in step with the 1 ms timers. */
const SAMPLE_HZ = 4999
const sampleMs = 1000 / SAMPLE_HZ

for (const tool of ['perf', 'wrk']) {
  if (!Bun.which(tool)) {
    console.error(`${tool} is not installed (apt-get install -y ${tool === 'perf' ? 'linux-perf' : 'wrk'})`)
    process.exit(2)
  }
}

type Where = 'js' | 'native' | 'kernel' | 'libc'
const WHERE: Where[] = ['js', 'native', 'kernel', 'libc']

/** `tid time: event` then one `addr symbol (dso)` line per frame, leaf first. */
function* samples(script: string, tid: string): Generator<{ time: number; frames: string[] }> {
  for (const block of script.split('\n\n')) {
    const lines = block.split('\n').filter((l) => l.trim() !== '')
    const head = lines[0]?.trim().split(/\s+/)
    if (!head || head[0] !== tid) continue
    yield { time: Number.parseFloat(head[1]!) * 1000, frames: lines.slice(1).map((l) => l.trim()) }
  }
}

function whereOf(frame: string): Where {
  if (frame.includes('[kernel')) return 'kernel'
  if (frame.includes('libc.so')) return 'libc'
  // Compiled JavaScript, named from the JITDump or not.
  if (frame.includes('JSC-') || frame.includes('[JIT]')) return 'js'
  return 'native'
}

/** The nearest compiled JavaScript function (or regular expression) on the stack. */
function ownerOf(frames: string[]): string {
  for (const f of frames) {
    const m = /JSC-(?:FTL|DFG|Baseline|YarrJIT)[^:]*: (.+?) \(/.exec(f)
    if (m) return m[1]!.replace(/#\w+$/, '') || '(anonymous)'
  }
  return '(no JS frame)'
}

const out = join(root, 'bench/out')
if (!existsSync(join(out, 'corpus.tsv'))) writeFileSync(join(out, 'corpus.tsv'), corpusLines(generateCorpus()))
const work = mkdtempSync(join(tmpdir(), 'perf-native-'))
const turnsFile = join(work, 'long-turns.txt')
const proc = Bun.spawn(
  engineCommand(config, port, longTurnMs > 0 ? ['--preload', join(root, 'bench/long-turns.ts')] : []),
  {
    cwd: root,
    stdout: 'ignore',
    stderr: 'ignore',
    env: {
      ...freshStateEnv(),
      BUN_JSC_useJITDump: '1',
      BUN_JSC_jitDumpDirectory: work,
      LONG_TURNS_FILE: turnsFile,
      LONG_TURN_MS: String(longTurnMs),
    },
  },
)
const mapFile = `/tmp/perf-${proc.pid}.map`
try {
  await waitReady(port, 'health', proc)
  if (warmup > 0) await replayCorpus(port, { seconds: warmup, seed: 1, connections: 64 })
  if (longTurnMs > 0) proc.kill('SIGUSR1')
  // Paced: each of rate/100 connections waits 10 ms between its requests (and for each answer), so
  // the rate reached is somewhat below `rate`.
  const paced = rate > 0 ? { connections: Math.max(1, Math.round(rate / 100)), delayMs: 10 } : { connections: 64 }
  const load = replayCorpus(port, { seconds: seconds + 2, seed: 2, ...paced })
  await Bun.sleep(1000)
  const data = join(work, 'perf.data')
  const perf = Bun.spawn(
    [
      'perf',
      'record',
      '-q',
      '-o',
      data,
      '--clockid',
      'monotonic',
      '-F',
      String(SAMPLE_HZ),
      '-e',
      'cpu-clock',
      '-g',
      '-p',
      String(proc.pid),
      '--',
      'sleep',
      String(seconds),
    ],
    { stdout: 'ignore', stderr: 'inherit' },
  )
  if ((await perf.exited) !== 0) throw new Error('perf record failed (is perf allowed to trace this process?)')
  const requests = await load
  proc.kill('SIGTERM')
  await proc.exited

  const dump = readdirSync(work).find((f) => f.startsWith('jit-') && f.endsWith('.dump'))
  if (!dump) throw new Error('the engine wrote no JITDump (BUN_JSC_useJITDump)')
  const ranges = jitDumpRanges(readFileSync(join(work, dump)))
  writeFileSync(
    mapFile,
    ranges.map((r) => `${r.start.toString(16)} ${(r.end - r.start).toString(16)} ${r.name}\n`).join(''),
  )
  const script = Bun.spawnSync(['perf', 'script', '-i', data, '-F', 'tid,time,ip,sym,dso'], {
    stdout: 'pipe',
    stderr: 'ignore',
  }).stdout.toString()

  const main = [...samples(script, String(proc.pid))]
  const all = main.length
  const first = main[0]?.time ?? 0
  const last = main[all - 1]?.time ?? 0
  // Only the turns perf saw from start to end.
  const turns = (longTurnMs > 0 ? readTurns(turnsFile) : []).filter(([from, to]) => from >= first && to <= last)
  const inTurn = (t: number) => turns.some(([from, to]) => from <= t && t <= to)
  const byOwner = new Map<string, Record<Where, number>>()
  let total = 0
  for (const s of main) {
    if (longTurnMs > 0 && !inTurn(s.time)) continue
    total++
    const owner = ownerOf(s.frames)
    const counts = byOwner.get(owner) ?? { js: 0, native: 0, kernel: 0, libc: 0 }
    counts[whereOf(s.frames[0] ?? '')]++
    byOwner.set(owner, counts)
  }

  const perRequest = requests > 0 ? (all * sampleMs * 1000) / ((requests * seconds) / (seconds + 2)) : 0
  const turnMs = turns.reduce((n, [from, to]) => n + to - from, 0)
  console.log(
    `${(requests / (seconds + 2)).toFixed(0)} requests/s (${rate > 0 ? `paced for ${rate}` : 'full speed'}); ` +
      `${all} main-thread samples of ${(sampleMs * 1000).toFixed(0)} µs in ${seconds} s, about ${perRequest.toFixed(1)} µs on the CPU per request` +
      (longTurnMs > 0
        ? `; ${turns.length} turns over ${longTurnMs} ms (${turnMs.toFixed(0)} ms), on the CPU for about ` +
          `${((total * sampleMs * 100) / Math.max(turnMs, 1)).toFixed(0)}% of them (${total} samples)`
        : ''),
  )
  console.log('| nearest JavaScript function | share | in compiled JS | in Bun (native) | in the kernel | in libc |')
  console.log('|---|---|---|---|---|---|')
  const sorted = [...byOwner].sort((a, b) => sampleCount(b[1]) - sampleCount(a[1]))
  for (const [owner, c] of sorted.slice(0, top)) {
    const cells = WHERE.map((w) => `${((100 * c[w]) / total).toFixed(1)}%`)
    console.log(`| ${owner} | ${((100 * sampleCount(c)) / total).toFixed(1)}% | ${cells.join(' | ')} |`)
  }
} finally {
  if (proc.exitCode === null) proc.kill('SIGKILL')
  rmSync(work, { recursive: true, force: true })
  rmSync(mapFile, { force: true })
}

function sampleCount(c: Record<Where, number>): number {
  return c.js + c.native + c.kernel + c.libc
}

function readTurns(file: string): [number, number][] {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(' ').map(Number) as [number, number])
}
