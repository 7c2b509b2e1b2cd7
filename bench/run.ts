// The benchmark (`npm run bench`): the engine beside a bare server of the same runtime, in the same
// run, alternating, with load from a separate process (Debian's wrk) replaying a fixed-seed corpus.
// Reports requests/s (median of the rounds), p50/p99 latency at half of each variant's peak, peak RSS,
// and the ratio engine / bare. A full run rewrites the generated part of bench/results.md (between its
// markers); a run with --only writes bench/out/results-partial.md.
//
// Each server is loaded for `--warmup` seconds before it is measured: the engine's JIT compiler is
// still busy for about ten seconds under load (its compiler threads took 16-18% of the process's
// CPU samples between 2.5 and 10.5 s in a perf profile, and main-thread CPU per request fell until
// about 15 s), while a bare server has almost nothing to compile. A server runs for days, so its
// steady state is what is compared.
//
// `engine-clickhouse` writes to a real clickhouse-server (started by test/clickhouse/harness.ts on
// free ports with a temporary folder, on the same cores as wrk and the engine); it is skipped, with a
// message, when no server binary is installed. bench/sink-keepup.ts checks whether that sink keeps up.
//
//   bun bench/run.ts [--rounds 3] [--seconds 10] [--warmup 10] [--connections 64] [--only bare-bun,engine-bun]

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { type ClickHouseServer, clickhouseBinary, startClickHouse } from '../test/clickhouse/harness.ts'
import { corpusLines, generateCorpus } from './corpus.ts'
import { benchConfig, freshStateEnv, waitReady } from './load.ts'

const root = resolve(import.meta.dir, '..')
const out = join(root, 'bench/out')
const bun = process.execPath
const deno = join(root, 'node_modules/.bin/deno')

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback
}
const rounds = Number(flag('rounds', '3'))
const seconds = Number(flag('seconds', '10'))
const connections = Number(flag('connections', '64'))
const warmup = Number(flag('warmup', '10'))
const only = flag('only', '')
/** The part of bench/results.md a full run rewrites; everything around it is kept. */
const GENERATED_START = '<!-- npm run bench: generated from here -->'
const GENERATED_END = '<!-- npm run bench: generated up to here -->'

interface Variant {
  name: string
  /** The variant this one is compared with (a bare server, or the one-process engine). */
  baseline?: string
  /** Measure latency at the baseline's fixed load, not at half of this variant's own peak. */
  fixedLoadOfBaseline?: boolean
  command: (port: number) => string[]
  ready: 'post' | 'health'
  available: () => boolean
  /** Why the variant is skipped when `available` says no. */
  missing?: string
  description: string
}

/**
 * The bench config with the embedded ClickHouse sink (chdb) in place of stdout and `ack` set, so
 * `ack: durable` (202 after the group commit's fsync) is measured against `ack: received` with the
 * same sink.
 */
function chdbConfig(ack: 'received' | 'durable'): string {
  return benchConfig(`engine-chdb-${ack}`, { chdb: { batchRows: 10000, flushIntervalMs: 1000 } }, ack)
}

/**
 * The real clickhouse-server (test/clickhouse/harness.ts) the `engine-clickhouse` variant writes to,
 * started once when that variant runs; each run gets a database of its own (`bench_<port>`, made by
 * `serve`'s migration and dropped afterwards), so no run inserts into another's tables.
 */
let clickhouse: ClickHouseServer | undefined

/** The bench config with the `clickhouse` sink to that server, in database `bench_<port>`. */
function clickhouseConfig(port: number): string {
  if (!clickhouse) throw new Error('clickhouse-server was not started')
  return benchConfig(
    'engine-clickhouse',
    {
      clickhouse: { url: clickhouse.url, database: `bench_${port}`, batchRows: 10000, flushIntervalMs: 1000 },
    },
    'received',
  )
}

const stdoutCase = join(root, 'bench/cases/engine-stdout.yaml')

/** `serve` of the engine on `runtime` (Bun, or `deno run -A`) with `config`, on `port`. */
function serveCommand(runtime: string[], config: string, port: number, extra: string[] = []): string[] {
  return [...runtime, join(root, 'core/cli.ts'), 'serve', '--config', config, '--port', String(port), ...extra]
}

const variants: Variant[] = [
  {
    name: 'bare-bun',
    command: (port) => [bun, join(root, 'bench/bare.ts'), String(port)],
    ready: 'post',
    available: () => true,
    description: 'Bun.serve: read the body, JSON.parse, 202',
  },
  {
    name: 'engine-bun',
    baseline: 'bare-bun',
    command: (port) => serveCommand([bun], stdoutCase, port),
    ready: 'health',
    available: () => true,
    description: 'engine on Bun, full pipeline, stdout sink to /dev/null',
  },
  {
    name: 'engine-bun-2-workers',
    baseline: 'engine-bun',
    fixedLoadOfBaseline: true,
    command: (port) => serveCommand([bun], stdoutCase, port, ['--workers', '2']),
    ready: 'health',
    available: () => true,
    description: 'engine on Bun, --workers 2 (one owner per client IP), same config',
  },
  {
    name: 'engine-chdb-received',
    baseline: 'engine-bun',
    fixedLoadOfBaseline: true,
    command: (port) => serveCommand([bun], chdbConfig('received'), port),
    ready: 'health',
    available: () => true,
    description: 'engine on Bun, chdb sink (embedded ClickHouse), ack: received',
  },
  {
    name: 'engine-chdb-durable',
    baseline: 'engine-chdb-received',
    fixedLoadOfBaseline: true,
    command: (port) => serveCommand([bun], chdbConfig('durable'), port),
    ready: 'health',
    available: () => true,
    description: 'the same with ack: durable (202 after the group commit is fsynced in the spool)',
  },
  {
    name: 'engine-clickhouse',
    baseline: 'engine-bun',
    fixedLoadOfBaseline: true,
    command: (port) => serveCommand([bun], clickhouseConfig(port), port),
    ready: 'health',
    available: () => clickhouseBinary !== undefined,
    missing: 'no clickhouse-server binary (install clickhouse-server or set CLICKHOUSE_SERVER_BIN)',
    description: 'engine on Bun, clickhouse sink to a local clickhouse-server on the same cores, ack: received',
  },
  {
    name: 'bare-deno',
    command: (port) => [deno, 'run', '-A', join(root, 'bench/bare-deno.ts'), String(port)],
    ready: 'post',
    available: () => existsSync(deno),
    description: 'Deno.serve: read the body, JSON.parse, 202',
  },
  {
    name: 'engine-deno',
    baseline: 'bare-deno',
    command: (port) => serveCommand([deno, 'run', '-A'], stdoutCase, port),
    ready: 'health',
    available: () => existsSync(deno),
    description: 'engine on Deno, full pipeline, stdout sink to /dev/null',
  },
]

interface WrkResult {
  rps: number
  p50: number
  p99: number
  non2xx: number
}

function parseDuration(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text)
  if (!m) return Number.NaN
  const v = Number(m[1])
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v
}

async function wrk(port: number, script: string, args: string[], duration: number, conns: number): Promise<WrkResult> {
  const proc = Bun.spawn(
    [
      'wrk',
      '-t1',
      `-c${conns}`,
      `-d${duration}s`,
      '--latency',
      '-s',
      script,
      `http://127.0.0.1:${port}/api/event`,
      '--',
      ...args,
    ],
    { cwd: root, stdout: 'pipe', stderr: 'pipe' },
  )
  const text = await new Response(proc.stdout).text()
  await proc.exited
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? 0)
  const p50 = parseDuration(/\s50%\s+(\S+)/.exec(text)?.[1] ?? '')
  const p99 = parseDuration(/\s99%\s+(\S+)/.exec(text)?.[1] ?? '')
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0)
  return { rps, p50, p99, non2xx }
}

/** Peak RSS in MB of a process and its children (the workers of `--workers`), added. */
function peakRss(pid: number): number {
  let mb = 0
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    mb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean)
    for (const child of children) mb += peakRss(Number(child))
  } catch {}
  return mb
}

async function runOnce(
  variant: Variant,
  port: number,
  load: (port: number) => Promise<WrkResult>,
): Promise<WrkResult & { rssMb: number }> {
  const proc = Bun.spawn(variant.command(port), { cwd: root, stdout: 'ignore', stderr: 'ignore', env: freshStateEnv() })
  try {
    await waitReady(port, variant.ready, proc)
    await wrk(port, join(root, 'bench/replay.lua'), [join(out, 'corpus.tsv'), '1'], warmup, connections)
    const result = await load(port)
    return { ...result, rssMb: peakRss(proc.pid) }
  } finally {
    proc.kill('SIGTERM')
    await Promise.race([proc.exited, Bun.sleep(15_000)])
    if (proc.exitCode === null) proc.kill('SIGKILL')
    await clickhouse?.query(`DROP DATABASE IF EXISTS bench_${port}`).catch(() => {})
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : Number.NaN
}

function machine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU'
  let kernel = ''
  try {
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()
  } catch {}
  return `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${kernel}, Bun ${Bun.version}`
}

async function main() {
  if (Bun.spawnSync(['sh', '-c', 'command -v wrk']).exitCode !== 0) {
    console.error('wrk is not installed (apt-get install -y wrk); the benchmark needs it as its load generator.')
    process.exit(2)
  }
  mkdirSync(out, { recursive: true })
  writeFileSync(join(out, 'corpus.tsv'), corpusLines(generateCorpus()))
  const unknown = only ? only.split(',').filter((name) => !variants.some((v) => v.name === name)) : []
  if (unknown.length > 0) {
    // Running nothing would overwrite bench/results.md with an empty table.
    console.error(`unknown variant(s) ${unknown.join(', ')}; known: ${variants.map((v) => v.name).join(', ')}`)
    process.exit(2)
  }
  const wanted = variants.filter((v) => !only || only.split(',').includes(v.name))
  for (const v of wanted) if (!v.available()) console.error(`SKIPPED ${v.name}: ${v.missing ?? 'not available here'}`)
  const chosen = wanted.filter((v) => v.available())
  if (chosen.some((v) => v.name === 'engine-clickhouse')) clickhouse = await startClickHouse()
  const peaks = new Map<string, (WrkResult & { rssMb: number })[]>()
  let port = 18100
  for (let round = 1; round <= rounds; round++) {
    for (const v of chosen) {
      const r = await runOnce(v, port++, (p) =>
        wrk(p, join(root, 'bench/replay.lua'), [join(out, 'corpus.tsv'), String(round)], seconds, connections),
      )
      console.error(
        `round ${round} ${v.name}: ${r.rps.toFixed(0)} req/s, p99 ${r.p99.toFixed(2)} ms, non-2xx ${r.non2xx}, RSS ${r.rssMb.toFixed(0)} MB`,
      )
      peaks.set(v.name, [...(peaks.get(v.name) ?? []), r])
    }
  }
  // Latency at a fixed offered load: half of the variant's median peak, paced by wrk's delay().
  const fixed = new Map<string, WrkResult & { rssMb: number; rate: number }>()
  const halfPeak = (name: string) => Math.floor(median((peaks.get(name) ?? []).map((r) => r.rps)) / 2)
  for (const v of chosen) {
    // A variant compared at its baseline's load shows what it changes for the same traffic.
    const rate = v.fixedLoadOfBaseline && peaks.has(v.baseline!) ? halfPeak(v.baseline!) : halfPeak(v.name)
    const delayMs = 10
    const conns = Math.max(1, Math.round((rate * delayMs) / 1000))
    const r = await runOnce(v, port++, (p) =>
      wrk(p, join(root, 'bench/replay.lua'), [join(out, 'corpus.tsv'), '9', String(delayMs)], seconds, conns),
    )
    fixed.set(v.name, { ...r, rate })
    console.error(
      `fixed load ${v.name}: offered ~${rate}/s, got ${r.rps.toFixed(0)}/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`,
    )
  }

  const rows = chosen.map((v) => {
    const runs = peaks.get(v.name)!
    const rps = median(runs.map((r) => r.rps))
    const base = v.baseline ? median((peaks.get(v.baseline) ?? []).map((r) => r.rps)) : Number.NaN
    const f = fixed.get(v.name)!
    return {
      variant: v.name,
      rps: rps.toFixed(0),
      ratio: v.baseline && base ? `${(rps / base).toFixed(2)}×` : '1.00× (baseline)',
      fixed: `${f.rate}/s`,
      p50: f.p50.toFixed(2),
      p99: f.p99.toFixed(2),
      rss: Math.max(...runs.map((r) => r.rssMb), f.rssMb).toFixed(0),
      what: v.description,
    }
  })
  const table = [
    '| variant | req/s (median) | vs baseline | offered load | p50 ms | p99 ms | peak RSS MB | what |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) => `| ${r.variant} | ${r.rps} | ${r.ratio} | ${r.fixed} | ${r.p50} | ${r.p99} | ${r.rss} | ${r.what} |`,
    ),
  ].join('\n')
  const report = `Run on ${new Date().toISOString().slice(0, 10)}: ${machine()}. Load: wrk 1 thread, ${connections} connections,
${seconds} s per run after a ${warmup} s warm-up at full load, ${rounds} rounds alternating the variants; the corpus is
bench/corpus.ts with seed 42 (200,000 requests: ~2,000 user agents, ~100,000 client IPs, 5 sites,
page views, custom events with props, engagement, ~5% bots and spam). wrk and the server share the
machine's cores, so absolute numbers are low and noisy: compare the ratios. Latency is measured at a
fixed offered load of half the variant's own median peak; engine-bun-2-workers is compared with
engine-bun (its ratio is 2 workers / 1 process) at engine-bun's load.

${table}

Reproduce: \`npm run bench\` (needs \`wrk\`: \`apt-get install -y wrk\`).
`
  console.log(table)
  await clickhouse?.destroy()
  // A run of some variants only (--only) goes to bench/out; a full run replaces the generated part of
  // bench/results.md and keeps the measurements and notes written around it.
  if (only !== '') {
    writeFileSync(join(out, 'results-partial.md'), report)
    console.log('(a run with --only: written to bench/out/results-partial.md, bench/results.md unchanged)')
    return
  }
  const file = join(root, 'bench/results.md')
  const previous = existsSync(file) ? readFileSync(file, 'utf8') : ''
  const start = previous.indexOf(GENERATED_START)
  const end = previous.indexOf(GENERATED_END)
  const generated = `${GENERATED_START}\n${report}${GENERATED_END}`
  writeFileSync(
    file,
    start >= 0 && end > start
      ? previous.slice(0, start) + generated + previous.slice(end + GENERATED_END.length)
      : `# Benchmark results\n\n${generated}\n${previous.replace(/^# Benchmark results\n+/, '')}`,
  )
}

await main()
