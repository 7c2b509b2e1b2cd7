// Does the `clickhouse` sink keep up with the engine at its peak? (`npm run bench:keepup`, issue #6:
// "keeps up with the engine at its peak for 60 s without the spool growing.")
//
// Starts a real clickhouse-server (test/clickhouse/harness.ts: free ports, a temporary folder) and
// the engine with the bench config (bench/cases/engine-stdout.yaml) and the clickhouse sink in place
// of stdout, warms it up, then replays the corpus with wrk for `--seconds` at full load (or paced at
// `--rate` requests/s) while reading /metrics every second: the sink's queue in memory, its spool on
// disk, rows written, retries and failures, and the CPU time of the engine and of ClickHouse. After
// the load it times how long the queue and spool take to empty, then checks that ClickHouse holds
// exactly what the engine accepted, and prints a verdict line `keeps up: yes|no (reason)`.
//
// wrk, the engine and ClickHouse share the machine's cores, as they do in bench/run.ts. The engine's
// log goes to bench/out/sink-keepup-engine.log. Exits 1 when the sink does not keep up.
//
//   bun bench/sink-keepup.ts [--seconds 60] [--warmup 10] [--rate 0] [--connections 64]
//                            [--sink '{"batchRows":10000}']   (options merged into the sink's)

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { startClickHouse } from '../test/clickhouse/harness.ts'
import { corpusLines, generateCorpus } from './corpus.ts'
import { benchConfig, flag, replayCorpus, START_ENV, waitReady } from './load.ts'

const root = resolve(import.meta.dir, '..')
const out = join(root, 'bench/out')
const seconds = Number(flag('seconds', '60'))
const warmup = Number(flag('warmup', '10'))
const rate = Number(flag('rate', '0'))
// wrk paces each connection by a delay between its requests: rate = connections × 1000 / delay.
const delayMs = 10
const connections = rate > 0 ? Math.max(1, Math.round((rate * delayMs) / 1000)) : Number(flag('connections', '64'))
const sinkOptions = {
  batchRows: 10000,
  flushIntervalMs: 1000,
  ...(JSON.parse(flag('sink', '{}')) as Record<string, unknown>),
}
const database = 'keepup'

/** The sink's and the engine's counters from one /metrics scrape. */
interface Sample {
  /** Seconds since the measured load started. */
  t: number
  queued: number
  spoolBytes: number
  written: number
  failed: number
  retries: number
  deadLetters: number
  accepted: number
  /** Time spent in successful inserts so far (seconds, all tables) and their number. */
  insertSeconds: number
  inserts: number
  /** CPU seconds of the engine and of clickhouse-server so far, and the machine's jiffies. */
  engineCpu: number
  clickhouseCpu: number
  machine: { busy: number; total: number }
}

function metricValue(text: string, name: string): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

/** The processes whose CPU time each sample records. */
const pids: { engine?: number; clickhouse?: number } = {}

async function scrape(port: number, t: number): Promise<Sample | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })
    const text = await res.text()
    return {
      t,
      queued: metricValue(text, 'analytics_sink_queued_rows'),
      spoolBytes: metricValue(text, 'analytics_sink_spool_bytes'),
      written: metricValue(text, 'analytics_sink_rows_written_total'),
      failed: metricValue(text, 'analytics_sink_rows_failed_total'),
      retries: metricValue(text, 'analytics_sink_retries_total'),
      deadLetters: metricValue(text, 'analytics_sink_dead_letters_total'),
      accepted: metricValue(text, 'analytics_events_accepted_total'),
      insertSeconds: metricValue(text, 'analytics_sink_batch_duration_seconds_sum'),
      inserts: metricValue(text, 'analytics_sink_batch_duration_seconds_count'),
      engineCpu: cpuSeconds(pids.engine),
      clickhouseCpu: cpuSeconds(pids.clickhouse),
      machine: machineTicks(),
    }
  } catch {
    return undefined
  }
}

/** utime + stime of a process, in seconds (ticks are 1/100 s on Linux); 0 once it is gone. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return 0
  }
}

/** Busy and total jiffies of the whole machine (/proc/stat), for its utilisation over a window. */
function machineTicks(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  const total = fields.reduce((a, b) => a + b, 0)
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0)
  return { busy: total - idle, total }
}

const loadAverage = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')

/** Least-squares slope of y over t (per second). */
function slope(points: { t: number; y: number }[]): number {
  const n = points.length
  if (n < 2) return 0
  const mt = points.reduce((a, p) => a + p.t, 0) / n
  const my = points.reduce((a, p) => a + p.y, 0) / n
  let num = 0
  let den = 0
  for (const p of points) {
    num += (p.t - mt) * (p.y - my)
    den += (p.t - mt) ** 2
  }
  return den === 0 ? 0 : num / den
}

/** Polls /metrics until the sink holds nothing (queue and spool empty); seconds it took, or undefined. */
async function drain(port: number, limitS: number): Promise<number | undefined> {
  const start = performance.now()
  while ((performance.now() - start) / 1000 < limitS) {
    const s = await scrape(port, 0)
    if (s && s.queued === 0 && s.spoolBytes === 0) return (performance.now() - start) / 1000
    await Bun.sleep(100)
  }
  return undefined
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits })
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`

async function main(): Promise<number> {
  if (Bun.spawnSync(['sh', '-c', 'command -v wrk']).exitCode !== 0) {
    console.error('wrk is not installed (apt-get install -y wrk); this benchmark needs it as its load generator.')
    return 2
  }
  const clickhouse = await startClickHouse()
  if (!clickhouse) {
    console.error(
      'SKIPPED: no clickhouse-server binary (install clickhouse-server or set CLICKHOUSE_SERVER_BIN); nothing measured.',
    )
    return 0
  }
  mkdirSync(out, { recursive: true })
  writeFileSync(join(out, 'corpus.tsv'), corpusLines(generateCorpus()))
  const config = benchConfig(
    'sink-keepup',
    { clickhouse: { url: clickhouse.url, database, ...sinkOptions } },
    'received',
  )
  const port = 18900 + Math.floor(Math.random() * 90)
  const log = join(out, 'sink-keepup-engine.log')
  const engine = Bun.spawn(
    [process.execPath, join(root, 'core/cli.ts'), 'serve', '--config', config, '--port', String(port)],
    {
      cwd: root,
      stdout: 'ignore',
      stderr: Bun.file(log),
      env: { ...process.env, ...START_ENV },
    },
  )
  try {
    await waitReady(port, 'health', engine)
    pids.engine = engine.pid
    pids.clickhouse = clickhouse.pid
    const mode =
      rate > 0
        ? `paced at ${rate} req/s (${connections} connections, ${delayMs} ms apart)`
        : `full load, ${connections} connections`
    console.log(`sink options ${JSON.stringify(sinkOptions)}; ${mode}; load average before: ${loadAverage()}`)
    if (warmup > 0) {
      await replayCorpus(port, { seconds: warmup, seed: 1, connections, delayMs: rate > 0 ? delayMs : undefined })
      const drained = await drain(port, 120)
      console.log(
        `warm-up ${warmup} s; its rows drained ${drained === undefined ? 'NOT within 120 s' : `${drained.toFixed(1)} s after`}`,
      )
    }

    // The measured load, with a scrape every second beside it.
    const samples: Sample[] = []
    const first = await scrape(port, 0)
    if (!first) throw new Error('no /metrics before the load')
    samples.push(first)
    const started = performance.now()
    let loading = true
    const load = replayCorpus(port, { seconds, seed: 2, connections, delayMs: rate > 0 ? delayMs : undefined }).finally(
      () => {
        loading = false
      },
    )
    const sampler = (async () => {
      for (let tick = 1; loading; tick++) {
        await Bun.sleep(Math.max(0, started + tick * 1000 - performance.now()))
        if (!loading) break
        const s = await scrape(port, (performance.now() - started) / 1000)
        if (s) samples.push(s)
      }
    })()
    const requests = await load
    await sampler
    const loadS = (performance.now() - started) / 1000
    const last = (await scrape(port, loadS)) ?? samples.at(-1)!
    const loadAvgAfter = loadAverage()
    const drained = await drain(port, 300)
    const afterDrain = await scrape(port, 0)

    // What ClickHouse holds against what the engine accepted.
    const [counts] = await clickhouse.rows<{ events: string; nonEngagement: string }>(
      `SELECT count() AS events, countIf(name != 'engagement') AS nonEngagement FROM ${database}.events_v2`,
    )
    const [sessions] = await clickhouse.rows<{ events: string; sessions: string }>(
      `SELECT sum(sign * events) AS events, sum(sign) AS sessions FROM ${database}.sessions_v2`,
    )
    const stored = Number(counts?.events ?? 0)
    const sessionEvents = Number(sessions?.events ?? 0)
    const accepted = afterDrain?.accepted ?? Number.NaN

    // Report. wrk takes a second or two to read the corpus before it sends anything, so rates are
    // taken over the samples during which the engine accepted events, not over the whole wait.
    const during = samples.filter((s) => s.t > 0)
    const active = samples.map((s, i) => (i > 0 && s.accepted > samples[i - 1]!.accepted ? i : -1)).filter((i) => i > 0)
    const from = samples[Math.max(0, (active[0] ?? 1) - 1)]!
    const to = samples[active.at(-1) ?? samples.length - 1]!
    const span = to.t - from.t || 1
    const window = during.filter((s) => s.t >= to.t - 30 && s.t <= to.t)
    const queueSlope = slope(window.map((s) => ({ t: s.t, y: s.queued })))
    const spoolSlope = slope(window.map((s) => ({ t: s.t, y: s.spoolBytes })))
    // The queue is a saw-tooth (a lane fills to batchRows, then empties in one insert), so a slope
    // over it depends on where the teeth fall: growth is the mean of the window's last third against
    // its first third.
    const third = Math.max(1, Math.floor(window.length / 3))
    const mean = (xs: Sample[]) => xs.reduce((a, s) => a + s.queued, 0) / (xs.length || 1)
    const queueGrowth = mean(window.slice(-third)) - mean(window.slice(0, third))
    const maxQueue = Math.max(...during.map((s) => s.queued))
    const maxSpool = Math.max(...during.map((s) => s.spoolBytes))
    const requestRate = requests / seconds
    const acceptedRate = (to.accepted - from.accepted) / span
    const writtenRate = (to.written - from.written) / span
    const cores = (a: number, b: number) => ((b - a) / span).toFixed(2)
    const machineBusy = (to.machine.busy - from.machine.busy) / (to.machine.total - from.machine.total || 1)
    console.log(
      `\nover ${span.toFixed(0)} s of load: ${fmt(requestRate)} requests/s (wrk), ${fmt(acceptedRate)} events accepted/s, ${fmt(writtenRate)} rows written/s to ClickHouse (events + sessions + counters)`,
    )
    console.log(
      `CPU: engine ${cores(from.engineCpu, to.engineCpu)} cores (${(((to.engineCpu - from.engineCpu) * 1e6) / (to.accepted - from.accepted || 1)).toFixed(0)} µs per accepted event), clickhouse-server ${cores(from.clickhouseCpu, to.clickhouseCpu)} cores, machine ${(machineBusy * 100).toFixed(0)}% busy of ${navigator.hardwareConcurrency} cores; load average ${loadAvgAfter}`,
    )
    const inserts = to.inserts - from.inserts
    const insertS = to.insertSeconds - from.insertSeconds
    // One insert in flight per table: the events lane alone carries about half the rows, so its share
    // of the wall time is what runs out first; the sum over the lanes is shown.
    console.log(
      `inserts: ${inserts} (${fmt((to.written - from.written) / (inserts || 1))} rows each on average), ${((insertS / (inserts || 1)) * 1000).toFixed(0)} ms each on average; the lanes spent ${((insertS / span) * 100).toFixed(0)}% of the wall time in inserts (summed over tables)`,
    )
    console.log(
      `queue (rows in memory): first ${fmt(from.queued)}, last ${fmt(to.queued)}, max ${fmt(maxQueue)}; last 30 s: slope ${fmt(queueSlope, 1)} rows/s, mean of the last third − the first third ${fmt(queueGrowth)} rows`,
    )
    console.log(
      `spool (disk): first ${mb(from.spoolBytes)}, last ${mb(to.spoolBytes)}, max ${mb(maxSpool)}; last 30 s trend ${fmt(spoolSlope / 1024, 1)} KB/s`,
    )
    console.log(
      `retries ${last.retries - first.retries} during the load; rows failed ${last.failed}, dead letters ${last.deadLetters} in all`,
    )
    // Every 5 s: the queue and spool then, and the rates over those 5 s.
    console.log('   t s    queued  spool MB  accepted/s  written/s')
    for (let i = 5; i < samples.length; i += 5) {
      const s = samples[i]!
      const p = samples[i - 5]!
      const per = (a: number, b: number) => fmt((b - a) / (s.t - p.t)).padStart(10)
      console.log(
        `${s.t.toFixed(0).padStart(6)}  ${fmt(s.queued).padStart(8)}  ${(s.spoolBytes / 2 ** 20).toFixed(1).padStart(8)}  ${per(p.accepted, s.accepted)} ${per(p.written, s.written)}`,
      )
    }
    console.log(
      `after the load: queue and spool empty ${drained === undefined ? 'NOT within 300 s' : `after ${drained.toFixed(1)} s`}`,
    )
    console.log(
      `ClickHouse: events_v2 ${fmt(stored)} rows, engine accepted ${fmt(accepted)}; sessions_v2 sum(sign × events) ${fmt(sessionEvents)} vs ${fmt(Number(counts?.nonEngagement ?? 0))} non-engagement events, ${fmt(Number(sessions?.sessions ?? 0))} sessions`,
    )

    // Verdict. The lane spills to the spool once more than three batches wait in memory, so a sink
    // that falls behind shows as spool bytes; a queue whose mean climbs by more than a batch over the
    // last 30 s is falling behind too.
    const batchRows = Number(sinkOptions.batchRows)
    const reasons: string[] = []
    if (maxSpool > 0 && spoolSlope > 0)
      reasons.push(`the spool grew to ${mb(maxSpool)} (${fmt(spoolSlope / 1024, 1)} KB/s over the last 30 s)`)
    else if (maxSpool > 0) reasons.push(`the spool was used (max ${mb(maxSpool)})`)
    if (queueGrowth > batchRows)
      reasons.push(`the queue's mean grew by ${fmt(queueGrowth)} rows (more than a batch) over the last 30 s`)
    if (drained === undefined) reasons.push('the queue did not empty within 300 s after the load')
    if (last.failed > 0 || last.deadLetters > 0)
      reasons.push(`${last.failed} rows failed, ${last.deadLetters} dead letters`)
    if (stored !== accepted) reasons.push(`ClickHouse holds ${stored} events, the engine accepted ${accepted}`)
    if (sessionEvents !== Number(counts?.nonEngagement ?? 0)) reasons.push('sessions_v2 does not add up to the events')
    const ok = reasons.length === 0
    console.log(
      `\nkeeps up: ${ok ? 'yes' : 'no'} (${
        ok
          ? `${fmt(writtenRate)} rows/s written at ${fmt(requestRate)} requests/s; queue max ${fmt(maxQueue)} rows with no growth, spool never used, emptied ${drained!.toFixed(1)} s after the load, every accepted event stored once`
          : reasons.join('; ')
      })`,
    )
    return ok ? 0 : 1
  } finally {
    engine.kill('SIGTERM')
    await Promise.race([engine.exited, Bun.sleep(15_000)])
    if (engine.exitCode === null) engine.kill('SIGKILL')
    await clickhouse.destroy()
  }
}

process.exit(await main())
