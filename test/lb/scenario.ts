// The load-balancer proof (issue "scale out": "documented and tested configs for HAProxy and nginx
// that hash the client IP the same way the engine resolves it"), run against a real HAProxy and a
// real nginx started from the shipped configs (examples/lb) in front of three real engine processes.
//
// Clients are 60 distinct source addresses (127.0.0.10–69: on Linux every 127/8 address is local),
// each request on a fresh connection. Which engine stored a request is read from that engine's rows
// (stdout sink); the client address an engine resolved is read back from the stored user id, which
// is the SipHash of (UA, client IP, domain) under the salt the engines share (store: file).

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { freePort } from '../clickhouse/harness.ts'
import {
  type Backend,
  type Balancer,
  haproxyBinary,
  haproxyConfig,
  nginxBinary,
  nginxConfig,
  startHaproxy,
  startNginx,
  warnIfMissing,
} from './balancers.ts'
import {
  type EngineProcess,
  expectedUserId,
  fileSalt,
  inParallel,
  killEngines,
  pageview,
  post,
  prop,
  type Row,
  scratchDir,
  startEngine,
  until,
} from './harness.ts'

const SOURCES = Array.from({ length: 60 }, (_, i) => `127.0.0.${10 + i}`)
/** The CDN's address in the behind-a-CDN test; visitors are named in CF-Connecting-IP. */
const CDN = '127.0.0.2'
const CDN_VISITORS = Array.from({ length: 60 }, (_, i) => `198.51.100.${1 + i}`)
/** Headers a client might send to pass for someone else; the load balancer must drop them all. */
const FORGED = {
  'x-forwarded-for': '203.0.113.9',
  'x-plausible-ip': '203.0.113.8',
  'b-forwarded-for': '203.0.113.7',
  forwarded: 'for=203.0.113.6',
}

type Kind = 'haproxy' | 'nginx'

export function balancerSuite(kind: Kind): void {
  warnIfMissing(kind)
  const binary = kind === 'haproxy' ? haproxyBinary : nginxBinary

  describe.skipIf(!binary)(`${kind} (examples/lb) in front of three engines`, () => {
    const scratch = scratchDir(`lb-${kind}-`)
    const salts = join(scratch.path, 'salts')
    const backends: Backend[] = []
    const engines: EngineProcess[] = []
    /** Every engine process ever started (a restarted engine's earlier rows stay readable). */
    const everyEngine: { index: number; engine: EngineProcess }[] = []
    const balancers: Balancer[] = []
    /** seq → the visitor (client address) that sent it. */
    const sentBy = new Map<number, string>()
    let nextSeq = 0

    const engineConfig = (name: string) => ({
      // The load balancer connects from 127.0.0.1; the clients' 127.0.0.x addresses are not trusted.
      server: { host: '127.0.0.1', trustedProxies: ['127.0.0.1'], shutdownTimeoutMs: 3000 },
      sites: [{ id: 1, domain: 'example.com' }],
      stateDir: join(scratch.path, `state-${name}`),
      log: { level: 'info' },
      plugins: [
        'plausible',
        { 'client-ip': { headers: ['x-forwarded-for'] } },
        'user-agent',
        // One machine: the engines share the salts through one folder.
        { 'user-id': { store: 'file', directory: salts } },
        'sessions',
      ],
      sinks: [{ stdout: { flushIntervalMs: 20, tables: ['events_v2'] } }],
    })

    const startBackend = async (index: number) => {
      const backend = backends[index]!
      const engine = await startEngine(engineConfig(backend.name), scratch.path, backend)
      engines[index] = engine
      everyEngine.push({ index, engine })
    }

    const start = async (file: string, cdn?: string): Promise<Balancer> => {
      const port = await freePort()
      const dir = scratchDir(`lb-${kind}-conf-`)
      const text = (kind === 'haproxy' ? haproxyConfig : nginxConfig)(file, port, backends, dir.path, cdn)
      const balancer = await (kind === 'haproxy' ? startHaproxy : startNginx)(text, port, dir.path)
      balancers.push(balancer)
      return balancer
    }

    beforeAll(async () => {
      for (let i = 0; i < 3; i++) backends.push({ name: `engine${i + 1}`, port: await freePort() })
      await Promise.all(backends.map((_, i) => startBackend(i)))
    }, 30_000)

    afterAll(async () => {
      for (const balancer of balancers) await balancer.stop()
      await Promise.all(engines.map((e) => e?.stop()))
      killEngines()
      scratch.remove()
    })

    /**
     * Every visitor sends `perVisitor` pageviews through `url`, each on a fresh connection; every one
     * must be answered 202. Resolves with visitor → the engines that stored its events.
     */
    async function round(
      url: string,
      visitors: string[],
      send: (visitor: string) => { localAddress: string; headers: Record<string, string> },
      perVisitor = 3,
    ): Promise<Map<string, Set<number>>> {
      const seqs: number[] = []
      const statuses: number[] = []
      await inParallel(visitors.length * perVisitor, 10, async (i) => {
        const visitor = visitors[i % visitors.length]!
        const seq = nextSeq++
        sentBy.set(seq, visitor)
        seqs.push(seq)
        const { status } = await post(url, pageview(seq), send(visitor))
        statuses.push(status)
      })
      expect(statuses.filter((s) => s !== 202)).toEqual([])
      const wanted = new Set(seqs)
      const storedBy = () => {
        const found = new Map<number, number[]>()
        for (const { index, engine } of everyEngine) {
          for (const row of engine.rows()) {
            const seq = Number(prop(row, 'seq'))
            if (wanted.has(seq)) found.set(seq, [...(found.get(seq) ?? []), index])
          }
        }
        return found
      }
      await until(() => storedBy().size === wanted.size, 10_000, 'every accepted event stored')
      const byVisitor = new Map<string, Set<number>>()
      for (const [seq, where] of storedBy()) {
        expect(where.length).toBe(1) // stored once
        const visitor = sentBy.get(seq)!
        byVisitor.set(visitor, new Set([...(byVisitor.get(visitor) ?? []), where[0]!]))
      }
      return byVisitor
    }

    /** The one engine of each visitor; fails when a visitor's events reached two. */
    function owners(byVisitor: Map<string, Set<number>>): Map<string, number> {
      const split = [...byVisitor].filter(([, set]) => set.size !== 1).map(([v, set]) => `${v}: ${[...set]}`)
      expect(split).toEqual([])
      return new Map([...byVisitor].map(([v, set]) => [v, [...set][0]!]))
    }

    /** Each stored row's user id is the one of the visitor that sent it: the engine resolved its address. */
    function expectResolvedAddresses(visitors: string[]): void {
      const wanted = new Set(visitors)
      const rows: Row[] = everyEngine.flatMap(({ engine }) => engine.rows())
      let checked = 0
      for (const row of rows) {
        const visitor = sentBy.get(Number(prop(row, 'seq')))
        if (visitor === undefined || !wanted.has(visitor)) continue
        const day = Date.parse(`${row.timestamp.replace(' ', 'T')}Z`)
        expect(row.user_id).toBe(expectedUserId(fileSalt(salts, day), visitor))
        checked++
      }
      expect(checked).toBeGreaterThan(0)
    }

    const direct = (visitor: string) => ({ localAddress: visitor, headers: FORGED })

    test('each client address always reaches one engine, every engine gets a share, and the engine resolves that address; stopping an engine moves only its visitors, and they come back when it returns', async () => {
      const balancer = await start(kind === 'haproxy' ? 'haproxy.cfg' : 'nginx.conf')

      const first = owners(await round(balancer.url, SOURCES, direct))
      const share = [0, 1, 2].map((i) => [...first.values()].filter((e) => e === i).length)
      console.info(`${kind}: visitors per engine ${share.join(' / ')}`)
      for (const n of share) expect(n).toBeGreaterThan(0)
      expectResolvedAddresses(SOURCES)
      // One session per visitor, although every request came on a new connection.
      for (const visitor of SOURCES) {
        const sessions = new Set(
          everyEngine
            .flatMap(({ engine }) => engine.rows())
            .filter((r) => sentBy.get(Number(prop(r, 'seq'))) === visitor)
            .map((r) => r.session_id),
        )
        expect(sessions.size).toBe(1)
      }

      // Stop the engine of the first visitor; send at once, before any health check noticed.
      const victim = first.get(SOURCES[0]!)!
      expect(await engines[victim]!.stop()).toBe(0)
      const moved = SOURCES.filter((v) => first.get(v) === victim)
      const stayed = SOURCES.filter((v) => first.get(v) !== victim)
      const during = await round(balancer.url, SOURCES, direct, 1)
      for (const v of stayed) expect([...during.get(v)!]).toEqual([first.get(v)!])

      // The load balancer takes it out: HAProxy's /health check, nginx's failed connection.
      const down = kind === 'haproxy' ? `${backends[victim]!.name} is DOWN` : 'upstream server temporarily disabled'
      await until(() => balancer.log().includes(down), 10_000, `${kind} says "${down}"`)
      const after = owners(await round(balancer.url, SOURCES, direct))
      for (const v of stayed) expect(after.get(v)).toBe(first.get(v)!)
      for (const v of moved) expect(after.get(v)).not.toBe(victim)
      expectResolvedAddresses(SOURCES)

      // Back on the same address: the ring is the same, so its visitors return to it.
      await startBackend(victim)
      await until(
        async () => {
          const probe = await round(balancer.url, [SOURCES[0]!], direct, 1)
          return probe.get(SOURCES[0]!)!.has(victim)
        },
        15_000,
        `${kind} sends the first visitor to the restarted engine again`,
      )
      const back = owners(await round(balancer.url, SOURCES, direct))
      expect(back).toEqual(first)
    }, 90_000)

    test('behind a CDN: the CDN-named visitor is hashed and resolved, forged headers are not, and a client that bypasses the CDN is refused', async () => {
      const balancer = await start(kind === 'haproxy' ? 'haproxy-behind-cdn.cfg' : 'nginx-behind-cdn.conf', CDN)
      const viaCdn = (visitor: string) => ({
        localAddress: CDN,
        headers: { ...FORGED, 'cf-connecting-ip': visitor },
      })
      const first = owners(await round(balancer.url, CDN_VISITORS, viaCdn))
      const share = [0, 1, 2].map((i) => [...first.values()].filter((e) => e === i).length)
      console.info(`${kind} behind a CDN: visitors per engine ${share.join(' / ')}`)
      for (const n of share) expect(n).toBeGreaterThan(0)
      expectResolvedAddresses(CDN_VISITORS)
      // Not through the CDN: refused, whatever the request says.
      const bypass = await post(balancer.url, pageview(nextSeq++), {
        localAddress: '127.0.0.3',
        headers: { 'cf-connecting-ip': '198.51.100.1' },
      })
      expect(bypass.status).toBe(403)
    }, 60_000)

    test('an engine believes no client that bypasses the load balancer', async () => {
      const seq = nextSeq++
      sentBy.set(seq, '127.0.0.5')
      const engine = engines[0]!
      const answer = await post(`http://127.0.0.1:${engine.port}`, pageview(seq), {
        localAddress: '127.0.0.5',
        headers: FORGED,
      })
      expect(answer.status).toBe(202)
      await until(() => engine.rows().some((r) => prop(r, 'seq') === String(seq)), 5_000, 'the event stored')
      expectResolvedAddresses(['127.0.0.5'])
    })
  })
}
