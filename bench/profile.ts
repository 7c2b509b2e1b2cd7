// Where a request's CPU goes (`bun bench/profile.ts`): the engine under wrk load with Bun's sampling
// profiler on, then every sample attributed to one component and printed as µs per request. A
// sample goes to the deepest plugin or sink frame on its stack (libraries and core helpers count for
// the plugin that called them), else to the deepest core module, else to "native" (Bun's HTTP
// server, the event loop and whatever else runs with no JavaScript on the stack). Samples taken
// while the engine starts or stops are left out. The profiler slows the engine down, so read the
// shares; the µs are sampled time per request under the profiler, not the cost without it.
//
//   bun bench/profile.ts [--seconds 8] [--warmup 10] [--config bench/cases/engine-stdout.yaml] [--top 25] [--keep DIR]

import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { corpusLines, generateCorpus } from './corpus.ts'
import { engineCommand, flag, freshStateEnv, replayCorpus, waitReady } from './load.ts'

const root = resolve(import.meta.dir, '..')
const out = join(root, 'bench/out')
const seconds = Number(flag('seconds', '8'))
const warmup = Number(flag('warmup', '10'))
const config = resolve(root, flag('config', 'bench/cases/engine-stdout.yaml'))
const top = Number(flag('top', '25'))
const keep = flag('keep', '')
/** Components to break down by their hottest leaf frames (comma-separated, e.g. `plugin referrer`). */
const detail = flag('detail', '')
  .split(',')
  .filter((d) => d !== '')
const intervalUs = 200

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}
interface ProfileNode {
  id: number
  callFrame: CallFrame
  children?: number[]
}
interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  /** Microseconds from the previous sample (the first: from the profile's start). */
  timeDeltas: number[]
}

/** The component a frame belongs to, or undefined for frames that only pass through. */
function componentOf(frame: CallFrame): { kind: 'extension' | 'core'; name: string } | undefined {
  const url = frame.url.replace(/^file:\/\//, '')
  if (!url.startsWith(root)) return undefined
  const rel = url.slice(root.length + 1)
  const m = /^(plugins|sinks)\/([^/]+)\//.exec(rel)
  if (m) {
    if (m[1] === 'sinks') {
      // A sink's write runs on the request; its flush runs off it: report them apart.
      const onRequest = frame.functionName === 'write' || frame.functionName === 'line'
      return { kind: 'extension', name: `sink ${m[2]}${onRequest ? ' (write)' : ' (flush)'}` }
    }
    return { kind: 'extension', name: `plugin ${m[2]}` }
  }
  if (rel.startsWith('core/rows.ts')) return undefined
  if (rel.startsWith('core/')) return { kind: 'core', name: rel }
  return undefined
}

const startup = /^(createEngine|main|loadConfig|restoreSnapshot|shutdown|close|writeSnapshot)$/

interface Attribution {
  counts: Map<string, number>
  /** component → `function file:line` of the sampled leaf → samples. */
  leaves: Map<string, Map<string, number>>
}

/** `window`: microseconds since the profile started, [from, to). */
function attribute(profile: Profile, window: { from: number; to: number }): Attribution {
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const n of profile.nodes) {
    byId.set(n.id, n)
    for (const c of n.children ?? []) parent.set(c, n.id)
  }
  const memo = new Map<number, string>()
  const label = (id: number): string => {
    const known = memo.get(id)
    if (known !== undefined) return known
    let extension: string | undefined
    let core: string | undefined
    let leaf = ''
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const frame = byId.get(cur)!.callFrame
      if (startup.test(frame.functionName) && frame.url.includes(root)) {
        memo.set(id, '(start-up and shut-down)')
        return '(start-up and shut-down)'
      }
      if (cur === id) leaf = frame.functionName || '(anonymous)'
      const c = componentOf(frame)
      if (c?.kind === 'extension') extension ??= c.name
      else if (c?.kind === 'core') core ??= c.name
    }
    const name = extension ?? core ?? (leaf === '(root)' || leaf === '(program)' ? 'native' : `native: ${leaf}`)
    memo.set(id, name)
    return name
  }
  const counts = new Map<string, number>()
  const leaves = new Map<string, Map<string, number>>()
  let at = 0
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0
    if (at < window.from || at >= window.to) continue
    const s = profile.samples[i]!
    const name = label(s)
    counts.set(name, (counts.get(name) ?? 0) + 1)
    if (!detail.includes(name)) continue
    const f = byId.get(s)!.callFrame
    const where = `${f.functionName || '(anonymous)'} ${f.url.replace(/^file:\/\//, '').replace(`${root}/`, '')}:${f.lineNumber + 1}`
    const inner = leaves.get(name) ?? new Map<string, number>()
    inner.set(where, (inner.get(where) ?? 0) + 1)
    leaves.set(name, inner)
  }
  return { counts, leaves }
}

mkdirSync(out, { recursive: true })
writeFileSync(join(out, 'corpus.tsv'), corpusLines(generateCorpus()))
const dir = keep ? resolve(keep) : mkdtempSync(join(tmpdir(), 'engine-profile-'))
mkdirSync(dir, { recursive: true })
const port = 18900 + Math.floor(Math.random() * 90)
const proc = Bun.spawn(
  engineCommand(config, port, ['--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-interval=${intervalUs}`]),
  { cwd: root, stdout: 'ignore', stderr: 'ignore', env: freshStateEnv() },
)
// The profile starts with the process: the window is timed from the spawn.
const spawned = performance.now()
let requests = 0
let window = { from: 0, to: 0 }
try {
  await waitReady(port, 'health')
  if (warmup > 0) await replayCorpus(port, { seconds: warmup, seed: 1, connections: 64 })
  const from = performance.now()
  requests = await replayCorpus(port, { seconds, seed: 2, connections: 64 })
  window = { from: (from - spawned) * 1000, to: (performance.now() - spawned) * 1000 }
} finally {
  proc.kill('SIGTERM')
  await proc.exited
}
const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))
if (!file) throw new Error(`no profile written in ${dir}`)
const { counts, leaves } = attribute(JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile, window)
if (!keep) rmSync(dir, { recursive: true, force: true })

const offLoad = counts.get('(start-up and shut-down)') ?? 0
counts.delete('(start-up and shut-down)')
const sampled = [...counts.values()].reduce((a, b) => a + b, 0)
console.log(
  `${requests} requests in ${seconds} s after ${warmup} s of warm-up; ${sampled} samples of ${intervalUs} µs in that window`,
)
console.log('| component | share | µs/request (sampled) |')
console.log('|---|---|---|')
for (const [name, n] of [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`| ${name} | ${((100 * n) / sampled).toFixed(1)}% | ${((n * intervalUs) / requests).toFixed(2)} |`)
}
console.log(`| total | 100% | ${((sampled * intervalUs) / requests).toFixed(2)} |`)
if (offLoad > 0) console.log(`(left out: ${offLoad} samples of start-up or shut-down code in the window)`)
for (const [name, inner] of leaves) {
  console.log(`\n${name}, by sampled leaf:`)
  for (const [where, n] of [...inner.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    console.log(`  ${((n * intervalUs) / requests).toFixed(2)} µs  ${where}`)
  }
}
