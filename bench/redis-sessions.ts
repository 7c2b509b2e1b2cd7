// What the sessions' copy of record in Redis costs (issue "scale out": "Redis CPU cost per event ≤ 8 µs;
// memory per live session in the engine and in Redis"; research/scale-out.md §2.3, §4 item 15).
//
//   bun bench/redis-sessions.ts [--visitors 50000] [--events 200000] [--rate 50000] [--flush-ms 20]
//
// Starts a throwaway redis-server (test/redis/harness.ts), then runs the sessions plugin in-process:
// first every visitor's first pageview (a local miss: one MGET each, the miss path), then `events`
// later pageviews round-robin over the visitors (the hit path: memory, plus the write behind). The
// same events run once without Redis; the write-behind cost per event is
//
//   (Bun CPU with Redis − Bun CPU without) + redis-server CPU        (process.cpuUsage, /proc/<pid>/stat)
//
// for the default (pipelined SET PX; only writes delayed by an outage take the guard script) and for
// `guard: always`. Events are paced and visitors many enough that a session rarely changes twice
// within one flush, so nearly every event is one write (the ratio is printed). Exits non-zero with
// FAIL when the default costs more than 8 µs per event, which a per-event awaited round trip does
// (the `awaited` control line shows by how much), or when too few events were written to judge.

import { heapStats } from 'bun:jsc'
import { readFileSync } from 'node:fs'
import { AnalyticsEvent } from '../core/event.ts'
import type { PluginInstance } from '../core/plugin.ts'
import { contextFor, setupPlugin } from '../core/testing.ts'
import plugin from '../plugins/sessions/index.ts'
import { type RedisServer, startRedis } from '../test/redis/harness.ts'
import { flag } from './load.ts'

const visitors = Number(flag('visitors', '50000'))
const events = Number(flag('events', '200000'))
const flushMs = Number(flag('flush-ms', '20'))
/** Events per second offered on the hit path (§2.3's target load); a visitor recurs every visitors/rate s. */
const rate = Number(flag('rate', '50000'))
const LIMIT_US = 8
/** Events run between yields to the event loop (a server yields between requests). */
const CHUNK = 200

const redis = await startRedis()
if (!redis) {
  console.log('FAIL: redis-server not found (Debian package redis-server)')
  process.exit(1)
}
const ctx = contextFor(plugin)
const userIds = new BigUint64Array(visitors)
crypto.getRandomValues(userIds)

const ticks = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  // utime and stime are fields 14 and 15 of the line; 11 and 12 after the command.
  return Number(fields[11]) + Number(fields[12])
}
const HZ = 100
const cpuUs = () => {
  const u = process.cpuUsage()
  return u.user + u.system
}
const redisUs = (server: RedisServer) => (ticks(server.pid()!) * 1e6) / HZ
const yieldNow = () => new Promise<void>((resolve) => setImmediate(resolve))

function eventOf(v: number, n: number): AnalyticsEvent {
  const event = new AnalyticsEvent()
  event.name = 'pageview'
  event.site_id = 1 + (v % 3)
  event.user_id = userIds[v]! | 1n
  event.timestamp = 1_700_000_000 + Math.floor(n / 5000)
  event.hostname = 'example.com'
  event.pathname = `/posts/${(v * 7 + n) % 1000}`
  event.browser = ['Chrome', 'Firefox', 'Safari'][v % 3]!
  event.country_code = ['DE', 'US', 'FR', 'JP'][v % 4]!
  return event
}

/**
 * Runs events `from`..`to` (visitor = n mod visitors), a chunk at a time, awaiting only what is
 * async; paced at `perSecond` when given (idle time costs no CPU, so the measure stays per event).
 */
async function drive(instance: PluginInstance, from: number, to: number, perSecond = 0): Promise<void> {
  const started = performance.now()
  for (let start = from; start < to; start += CHUNK) {
    if (perSecond > 0) {
      const due = started + ((start - from) * 1000) / perSecond
      const wait = due - performance.now()
      if (wait > 1) await Bun.sleep(wait)
    }
    const pending: Promise<unknown>[] = []
    for (let n = start; n < Math.min(to, start + CHUNK); n++) {
      const result = instance.run!(eventOf(n % visitors, n), ctx)
      if (result instanceof Promise) pending.push(result)
    }
    if (pending.length > 0) await Promise.all(pending)
    await yieldNow()
  }
}

interface Run {
  bunUs: number
  redisUs: number
  missBunUs: number
  missRedisUs: number
  sets: number
  scripts: number
  mgets: number
  heapPerSession: number
  redisBytesPerSession: number
}

async function run(store: object | undefined, prefix: string): Promise<Run> {
  await redis!.client.send('FLUSHALL', [])
  await redis!.client.send('CONFIG', ['RESETSTAT'])
  Bun.gc(true)
  const heapBefore = heapStats().heapSize
  const memBefore = Number(/used_memory:(\d+)/.exec(String(await redis!.client.send('INFO', ['memory'])))![1])
  const instance = await setupPlugin(plugin, {
    snapshot: false,
    maxSessions: visitors * 2,
    ...(store ? { store: { ...store, keyPrefix: prefix, flushMs } } : {}),
  })
  let cpu0 = cpuUs()
  let r0 = redisUs(redis!)
  await drive(instance, 0, visitors)
  await Bun.sleep(flushMs * 3)
  const missBunUs = (cpuUs() - cpu0) / visitors
  const missRedisUs = (redisUs(redis!) - r0) / visitors
  Bun.gc(true)
  const heapPerSession = (heapStats().heapSize - heapBefore) / visitors
  const memAfter = Number(/used_memory:(\d+)/.exec(String(await redis!.client.send('INFO', ['memory'])))![1])
  const statsBefore = String(await redis!.client.send('INFO', ['commandstats']))
  cpu0 = cpuUs()
  r0 = redisUs(redis!)
  await drive(instance, visitors, visitors + events, rate)
  // The writes still marked go out here, inside the measurement.
  await instance.close?.()
  const bunUs = (cpuUs() - cpu0) / events
  const redisCpu = (redisUs(redis!) - r0) / events
  const stats = String(await redis!.client.send('INFO', ['commandstats']))
  const calls = (text: string, cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(text)?.[1] ?? 0)
  const delta = (cmd: string) => calls(stats, cmd) - calls(statsBefore, cmd)
  return {
    bunUs,
    redisUs: redisCpu,
    missBunUs,
    missRedisUs,
    sets: delta('set'),
    scripts: delta('evalsha') + delta('eval'),
    mgets: calls(statsBefore, 'mget'),
    heapPerSession,
    redisBytesPerSession: (memAfter - memBefore) / visitors,
  }
}

/** The control: one awaited SET per event, what the write-behind must never become. */
async function awaited(count: number): Promise<number> {
  const client = new Bun.RedisClient(redis!.url)
  const value = 'x'.repeat(400)
  const cpu0 = cpuUs()
  const r0 = redisUs(redis!)
  for (let i = 0; i < count; i++) await client.send('SET', [`awaited:${i % visitors}`, value, 'PX', '60000'])
  const us = (cpuUs() - cpu0 + redisUs(redis!) - r0) / count
  client.close()
  return us
}

const f = (x: number) => x.toFixed(2)
try {
  const none = await run(undefined, 'none:')
  const plain = await run({ redis: redis.url, guard: 'late' }, 'plain:')
  const guarded = await run({ redis: redis.url, guard: 'always' }, 'guard:')
  const control = await awaited(Math.min(events, 20_000))
  const cost = (r: Run) => r.bunUs - none.bunUs + r.redisUs
  console.log(`sessions in Redis: ${visitors} visitors, ${events} hit events at ${rate}/s, flush every ${flushMs} ms`)
  console.log(`  without Redis        Bun ${f(none.bunUs)} µs/event (the session logic alone)`)
  for (const [name, r] of [
    ['SET PX (default)', plain],
    ['guard: always', guarded],
  ] as const) {
    console.log(
      `  ${name.padEnd(20)} Bun ${f(r.bunUs)} (+${f(r.bunUs - none.bunUs)}) + Redis ${f(r.redisUs)} = ${f(cost(r))} µs/event written behind; ` +
        `${r.sets} SETs (${f(r.sets / events)} per event) in ${r.scripts} script calls`,
    )
    console.log(
      `  ${''.padEnd(20)} miss path: ${r.mgets} MGETs, Bun ${f(r.missBunUs - none.missBunUs)} + Redis ${f(r.missRedisUs)} µs per new visitor; ` +
        `memory per live session: engine heap ${r.heapPerSession.toFixed(0)} B, Redis ${r.redisBytesPerSession.toFixed(0)} B`,
    )
  }
  console.log(`  awaited SET per event (control)  ${f(control)} µs/event`)
  const verdict = cost(plain) <= LIMIT_US && plain.sets >= 0.9 * events
  console.log(
    verdict
      ? `PASS: the write-behind costs ${f(cost(plain))} µs per event (limit ${LIMIT_US})`
      : `FAIL: the write-behind costs ${f(cost(plain))} µs per event (limit ${LIMIT_US}), ${f(plain.sets / events)} writes per event (at least 0.9 needed for a fair measure)`,
  )
  process.exitCode = verdict ? 0 : 1
} finally {
  await redis.destroy()
}
