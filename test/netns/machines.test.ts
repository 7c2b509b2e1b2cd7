// Two machines sharing Redis (issue "scale out", research/scale-out.md §4 items 3, 11 and 13): two
// network namespaces made by this test, one engine process in each (`ip netns exec … bun core/cli.ts
// serve`), Redis in the root namespace on a bridge the test made. Clients in the root namespace reach
// each machine over its own front link and name the visitor in X-Forwarded-For, as a load balancer
// would; a partition takes the machine's back link (to Redis) down and leaves the front link up.
//
// Every engine runs with test/netns/fake-clock.ts preloaded: one file moves both machines' clocks
// together (to just before 00:00 UTC, then a day at a time), without a hook in the engine.
//
// ANALYTICS_PARTITION_SECONDS sets the partition's length (default 20; the is 120).

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { dayName } from '../../plugins/user-id/salts.ts'
import {
  type EngineProcess,
  expectedUserId,
  inParallel,
  killEngines,
  post,
  prop,
  type Row,
  root,
  scratchDir,
  startEngine,
  until,
} from '../lb/harness.ts'
import { type RedisServer, redisBinary, startRedis } from '../redis/harness.ts'
import { createNetwork, type Machine, type Network, netnsUnavailable } from './network.ts'

const why = netnsUnavailable() ?? (redisBinary ? undefined : 'redis-server not found (package redis-server)')
if (why !== undefined) {
  console.warn(`\n*** network namespaces cannot be used (${why}): the two-machine tests are SKIPPED. ***\n`)
}

const DAY_MS = 86_400_000
const PORT = 8000
const LIMIT = 1000
const PARTITION_MS = Number(process.env.ANALYTICS_PARTITION_SECONDS ?? 20) * 1000
const FAKE_CLOCK = join(root, 'test/netns/fake-clock.ts')

describe.skipIf(why !== undefined)('two machines (network namespaces) sharing Redis', () => {
  let net: Network
  let redis: RedisServer
  const scratch = scratchDir('netns-')
  const clockFile = join(scratch.path, 'clock')
  const engines: EngineProcess[] = []
  let offset = 0
  let nextSeq = 0

  /** Moves every machine's clock to real time + `ms` (they read the file every 20 ms). */
  const setClock = async (ms: number) => {
    offset = ms
    writeFileSync(clockFile, String(ms))
    await Bun.sleep(100)
  }
  const fakeNow = () => Date.now() + offset

  beforeAll(async () => {
    writeFileSync(clockFile, '0')
    net = createNetwork(2)
    redis = (await startRedis({ host: net.hostIp }))!
  }, 30_000)

  afterAll(async () => {
    try {
      await Promise.all(engines.map((e) => e.stop()))
    } finally {
      killEngines()
      await redis?.destroy()
      net?.destroy()
      scratch.remove()
    }
  }, 30_000)

  const config = (m: Machine) => ({
    // Clients come over the front links (the root namespace's ends, 10.213.R.128/25), as from a
    // load balancer that names the visitor in X-Forwarded-For.
    server: { host: '0.0.0.0', trustedProxies: [`${net.subnet}.128/25`], shutdownTimeoutMs: 3000 },
    sites: [
      { id: 1, domain: 'example.com' },
      { id: 2, domain: 'limited.example' },
      { id: 3, domain: 'partition.example' },
    ],
    stateDir: join(scratch.path, `state-m${m.index + 1}`),
    log: { level: 'info' },
    plugins: [
      'plausible',
      { 'client-ip': { headers: ['x-forwarded-for'] } },
      'user-agent',
      { 'user-id': { store: 'redis', redis: { url: redis.url, refreshSeconds: 1, timeoutMs: 500 } } },
      {
        'rate-limit': {
          perSite: { events: 0 },
          // A day-long window: the test never straddles a boundary (the clock moves only later).
          sites: {
            'limited.example': { events: LIMIT, windowSeconds: 86_400 },
            'partition.example': { events: LIMIT, windowSeconds: 86_400 },
          },
          perIp: { events: 0 },
          shared: { redis: redis.url, syncMs: 20, timeoutMs: 200 },
        },
      },
      'sessions',
    ],
    sinks: [{ stdout: { flushIntervalMs: 20, tables: ['events_v2'] } }],
  })

  const start = async (m: Machine) => {
    const engine = await startEngine(config(m), scratch.path, {
      name: `m${m.index + 1}`,
      port: PORT,
      prefix: m.exec,
      bunFlags: ['--preload', FAKE_CLOCK],
      env: { ANALYTICS_TEST_CLOCK_FILE: clockFile },
    })
    engines[m.index] = engine
    return engine
  }

  const urlOf = (m: Machine) => `http://${m.frontIp}:${PORT}`

  interface Sent {
    seq: number
    status: number
    dropped: string | undefined
    ms: number
  }

  /** One event of `domain` from visitor `ip` to machine `m`. */
  async function send(m: Machine, ip: string, domain = 'example.com'): Promise<Sent> {
    const seq = nextSeq++
    const started = performance.now()
    const body = { n: 'pageview', u: `https://${domain}/p/${seq}`, d: domain, p: { seq: String(seq) } }
    const answer = await post(urlOf(m), body, { headers: { 'x-forwarded-for': ip } })
    return { seq, ...answer, ms: performance.now() - started }
  }

  /** The stored row of `seq` on machine `m` (waits for the sink's flush). */
  async function rowOf(m: Machine, seq: number): Promise<Row> {
    const engine = engines[m.index]!
    const find = () => engine.rows().find((r) => prop(r, 'seq') === String(seq))
    await until(() => find() !== undefined, 5_000, `row of seq ${seq} on m${m.index + 1}`)
    return find()!
  }

  async function saltOf(day: number): Promise<Uint8Array> {
    const hex = await redis.client.send('GET', [`analytics:salt:${dayName(day)}`])
    if (typeof hex !== 'string') throw new Error(`no salt for ${dayName(day)} in Redis`)
    return new Uint8Array(Buffer.from(hex, 'hex'))
  }

  /** Throttled events counted in an engine's /metrics. */
  async function throttled(m: Machine): Promise<number> {
    const text = await (await fetch(`${urlOf(m)}/metrics`)).text()
    return text
      .split('\n')
      .filter((l) => l.startsWith('analytics_events_dropped_total{reason="throttle"'))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
  }

  const rateKey = (site: number) => `analytics:ratelimit:${site}:${DAY_MS}:${Math.floor(fakeNow() / DAY_MS)}`

  test('salts agree: machines started 5 s apart give one visitor one user id', async () => {
    const [a, b] = net.machines as [Machine, Machine]
    await start(a)
    const first = await send(a, '198.51.100.200')
    await Bun.sleep(5_000)
    await start(b)
    const second = await send(b, '198.51.100.200')
    expect([first.status, second.status]).toEqual([202, 202])
    const [ra, rb] = [await rowOf(a, first.seq), await rowOf(b, second.seq)]
    expect(ra.user_id).toBe(rb.user_id)
    expect(ra.user_id).toBe(expectedUserId(await saltOf(Math.floor(fakeNow() / DAY_MS)), '198.51.100.200'))
  }, 40_000)

  test('a site limit of 1,000 over both machines holds within 5 %; the excess is counted as throttle', async () => {
    const machines = net.machines
    const before = (await Promise.all(machines.map(throttled))).reduce((a, b) => a + b, 0)
    const total = 3 * LIMIT
    const perSecond = 2000
    let accepted = 0
    let dropped = 0
    const statuses = new Set<number>()
    const startedAt = performance.now()
    await inParallel(total, 8, async (i) => {
      const due = startedAt + (i * 1000) / perSecond
      if (due > performance.now()) await Bun.sleep(due - performance.now())
      const sent = await send(machines[i % 2]!, `198.51.100.${i % 200}`, 'limited.example')
      statuses.add(sent.status)
      // `x-plausible-dropped: 1` names no reason; /metrics below does.
      if (sent.dropped === undefined) accepted++
      else dropped++
    })
    console.info(`rate limit over two machines: ${accepted} accepted of ${total} (limit ${LIMIT})`)
    expect([...statuses]).toEqual([202])
    expect(accepted).toBeGreaterThanOrEqual(LIMIT)
    expect(accepted).toBeLessThanOrEqual(LIMIT * 1.05)
    expect(dropped).toBe(total - accepted)
    const after = (await Promise.all(machines.map(throttled))).reduce((a, b) => a + b, 0)
    expect(after - before).toBe(total - accepted)
    // Redis holds exactly what the machines accepted.
    await until(
      async () => Number(await redis.client.send('GET', [rateKey(2)])) === accepted,
      5_000,
      'the shared count equals the accepted events',
    )
  }, 30_000)

  test(
    `partition: a machine cut off from Redis for ${PARTITION_MS / 1000} s keeps answering 202 from memory, and everything resumes after`,
    async () => {
      const [a, b] = net.machines as [Machine, Machine]
      const visitor = '198.51.100.201'
      const opening = await send(b, visitor)
      const session = (await rowOf(b, opening.seq)).session_id

      net.cut(b)
      const cutAt = Date.now()
      const toB: Sent[] = []
      const toA: Sent[] = []
      let salts: [Sent, Sent] | undefined
      while (Date.now() - cutAt < PARTITION_MS) {
        const tick = Date.now()
        const [pageview, limitedB, limitedA] = await Promise.all([
          send(b, visitor),
          send(b, '198.51.100.77', 'partition.example'),
          send(a, '198.51.100.78', 'partition.example'),
        ])
        toB.push(pageview, limitedB)
        toA.push(limitedA)
        // Midway: one visitor to both machines; B hashes with the salt it holds in memory.
        if (salts === undefined && Date.now() - cutAt > PARTITION_MS / 2) {
          salts = await Promise.all([send(a, '198.51.100.202'), send(b, '198.51.100.202')])
        }
        await Bun.sleep(Math.max(0, 200 - (Date.now() - tick)))
      }
      const logOfB = engines[b.index]!.log()
      net.heal(b)
      const healedAt = Date.now()

      // B answered everything, at once, without Redis: no 5xx, nothing dropped (the limit fails open).
      const all = [...toB, ...toA, ...salts!]
      expect(all.filter((s) => s.status !== 202 || s.dropped !== undefined)).toEqual([])
      const latencies = toB.map((s) => s.ms).sort((x, y) => x - y)
      const p99 = latencies[Math.floor(latencies.length * 0.99)]!
      console.info(
        `partition of ${PARTITION_MS / 1000} s: ${toB.length} requests to the cut-off machine, p50 ${latencies[latencies.length >> 1]!.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms`,
      )
      expect(p99).toBeLessThan(250)
      // It knew it was cut off, and said so. (Salts need no round trip while yesterday's, today's and
      // tomorrow's are known: the salt store sends nothing, so it has nothing to say.)
      expect(logOfB).toContain('Redis is not reachable for rate limits')
      // Salts from memory: the same id on both sides of the partition.
      expect((await rowOf(a, salts![0].seq)).user_id).toBe((await rowOf(b, salts![1].seq)).user_id)

      // After healing: shared again, and every event accepted on either side is in the shared count once.
      await until(
        () => engines[b.index]!.log().includes('Redis answers again; rate limits are shared.'),
        60_000 + PARTITION_MS,
        'm2 shares its rate counts again',
      )
      console.info(
        `partition healed: m2 synced with Redis again after ${((Date.now() - healedAt) / 1000).toFixed(1)} s`,
      )
      // partition.example: half of what went to B, all of what went to A.
      const limited = toB.length / 2 + toA.length
      let shared = 0
      await until(
        async () => {
          shared = Number(await redis.client.send('GET', [rateKey(3)]))
          return shared === limited
        },
        10_000,
        `the shared count of partition.example equals its ${limited} accepted events (it is ${shared})`,
      ).catch((error) => {
        throw new Error(`${(error as Error).message}: Redis holds ${shared}`)
      })

      // The visitor's session went on through the partition, on its machine.
      const closing = await send(b, visitor)
      expect((await rowOf(b, closing.seq)).session_id).toBe(session)
      // Exact counts: every event B accepted is in its sink once.
      const seqs = engines[b.index]!.rows().map((r) => Number(prop(r, 'seq')))
      for (const s of toB) expect(seqs.filter((q) => q === s.seq).length).toBe(1)
      expect(engines[b.index]!.rows().filter((r) => r.session_id === session).length).toBe(toB.length / 2 + 2)
    },
    180_000 + 3 * PARTITION_MS,
  )

  test('midnight: both machines switch salts at 00:00 UTC, a session across midnight continues, and 48 h later no older salt exists', async () => {
    const [a, b] = net.machines as [Machine, Machine]
    const midnight = Math.ceil(Date.now() / DAY_MS) * DAY_MS
    const day = midnight / DAY_MS - 1
    await setClock(midnight - 4_000 - Date.now())
    await Bun.sleep(1_200) // a salt refresh at the new time

    // A visitor whose session spans midnight, on each machine.
    const spanning = '198.51.100.203'
    const opened = await Promise.all([send(a, spanning), send(b, spanning)])

    // Fresh visitors, each to both machines at once, every 100 ms from 2.5 s before to 2.5 s after.
    const visitors: { ip: string; sent: [Sent, Sent] }[] = []
    while (fakeNow() < midnight + 2_500) {
      const ip = `198.51.100.${10 + visitors.length}`
      visitors.push({ ip, sent: await Promise.all([send(a, ip), send(b, ip)]) })
      await Bun.sleep(100)
    }
    const continued = await Promise.all([send(a, spanning), send(b, spanning)])

    const [old, fresh] = [await saltOf(day), await saltOf(day + 1)]
    for (const m of [a, b]) {
      let lastOld = 0
      let firstNew = Number.POSITIVE_INFINITY
      for (const { ip, sent } of visitors) {
        const row = await rowOf(m, sent[m.index]!.seq)
        const at = Date.parse(`${row.timestamp.replace(' ', 'T')}Z`)
        expect(row.user_id).toBe(expectedUserId(at < midnight ? old : fresh, ip))
        if (at < midnight) lastOld = Math.max(lastOld, at)
        else firstNew = Math.min(firstNew, at)
      }
      // Old salt until the last second before 00:00, the new one from the first second after.
      expect(midnight - lastOld).toBeLessThanOrEqual(1_000)
      expect(firstNew - midnight).toBeLessThan(1_000)
      const before = await rowOf(m, opened[m.index]!.seq)
      const after = await rowOf(m, continued[m.index]!.seq)
      expect(after.session_id).toBe(before.session_id)
      expect(after.user_id).toBe(before.user_id)
      expect(before.user_id).toBe(expectedUserId(old, spanning))
    }

    // Two more days, a day at a time (each machine reads tomorrow's salt a day ahead).
    for (const days of [1, 2]) {
      await setClock(midnight + days * DAY_MS + 3_000 - Date.now())
      await Bun.sleep(2_500)
      const probe = `198.51.100.${100 + days}`
      const [sa, sb] = await Promise.all([send(a, probe), send(b, probe)])
      const want = expectedUserId(await saltOf(day + 1 + days), probe)
      expect((await rowOf(a, sa.seq)).user_id).toBe(want)
      expect((await rowOf(b, sb.seq)).user_id).toBe(want)
    }

    // At +48 h: every salt key expires 48 h after its day began, so none older is left. Redis's own
    // clock did not move with the engines', so "left at the engines' time" is read from EXPIRETIME.
    const now = fakeNow()
    const keys: string[] = []
    let cursor = '0'
    do {
      const [next, batch] = (await redis.client.send('SCAN', [
        cursor,
        'MATCH',
        'analytics:salt:*',
        'COUNT',
        '1000',
      ])) as [string, string[]]
      cursor = next
      keys.push(...batch)
    } while (cursor !== '0')
    expect(keys.length).toBeGreaterThan(0)
    const left: string[] = []
    for (const key of keys) {
      const began = Date.parse(`${key.slice('analytics:salt:'.length)}T00:00:00Z`)
      const expiresAt = Number(await redis.client.send('EXPIRETIME', [key])) * 1000
      expect(expiresAt).toBe(began + 2 * DAY_MS)
      if (expiresAt > now) {
        left.push(key)
        expect(now - began).toBeLessThan(2 * DAY_MS)
      }
    }
    // Yesterday's, today's and tomorrow's at the engines' time (day + 3), nothing before.
    expect(left.sort()).toEqual([2, 3, 4].map((d) => `analytics:salt:${dayName(day + d)}`))
    // …and nothing on any disk: no salt files on either machine, no Redis snapshot.
    for (const m of [a, b]) {
      const dir = join(scratch.path, `state-m${m.index + 1}`, 'salts')
      expect(existsSync(dir) ? readdirSync(dir) : []).toEqual([])
      expect(engines[m.index]!.log()).not.toContain('No shared salt for the day')
    }
    expect(redis.files()).toEqual([])
  }, 60_000)
})
