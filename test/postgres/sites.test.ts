// Sites from a PostgreSQL query (issue #12 item 4) against a real PostgreSQL started for this file:
// start-up loads the set, refreshes swap it, a bad row or a dead server keeps the last good set, and a
// set changed under load loses no request.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { ConfigErrors, resolveConfig } from '../../core/config.ts'
import { createLogger } from '../../core/logger.ts'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'
import { type PostgresServer, postgresBin, startPostgres, warnIfNoPostgres } from './harness.ts'

warnIfNoPostgres()

const QUERY = 'SELECT id, domain, domains, tracking, retention_days AS retention FROM sites WHERE active ORDER BY id'

describe.skipIf(!postgresBin)('sites from PostgreSQL', () => {
  let pg: PostgresServer
  beforeAll(async () => {
    pg = (await startPostgres())!
    await pg.sql`CREATE TABLE sites (id bigint PRIMARY KEY, domain text, domains text[], tracking boolean,
      retention_days int, active boolean NOT NULL DEFAULT true)`
  }, 60_000)
  afterAll(async () => {
    await pg?.destroy()
  })

  const reset = async (rows: [number, string][]) => {
    await pg.sql`DELETE FROM sites`
    for (const [id, domain] of rows) await pg.sql`INSERT INTO sites (id, domain) VALUES (${id}, ${domain})`
  }

  const pageview = (domain: string) => JSON.stringify({ n: 'pageview', u: `https://${domain}/page`, d: domain })

  test('start-up loads the rows: NULLs are absent keys, bigint ids are numbers, an integer retention is days', async () => {
    await reset([[1, 'one.example']])
    await pg.sql`INSERT INTO sites (id, domain, domains, tracking, retention_days)
      VALUES (9007199254740991, 'big.example', ARRAY['www.big.example'], false, 30)`
    const config = await resolveConfig(
      { sites: { sql: QUERY, database: pg.url }, sinks: ['memory'] },
      { source: '(test)', baseDir: process.cwd(), vars: {} },
    )
    expect(config.sites).toEqual([
      { id: 1, domain: 'one.example' },
      {
        id: 9007199254740991,
        domain: 'big.example',
        domains: ['www.big.example'],
        tracking: false,
        retention: { days: 30 },
      },
    ])
    expect(config.sitesSource?.describe).toBe(`sql on postgres://127.0.0.1:${pg.port}/postgres`)
  })

  test('a bad row fails start-up with its path; a database that does not answer too, without its password', async () => {
    await reset([[1, 'one.example']])
    await pg.sql`INSERT INTO sites (id, domain) VALUES (2, '')`
    const issues = async (raw: unknown) => {
      try {
        await resolveConfig(raw, { source: '(test)', baseDir: process.cwd(), vars: {} })
      } catch (error) {
        if (error instanceof ConfigErrors) return error.issues.map((i) => `${i.path}: ${i.message}`)
        throw error
      }
      throw new Error('expected a config error')
    }
    const bad = await issues({ sites: { sql: QUERY, database: pg.url } })
    expect(bad).toHaveLength(1)
    expect(bad[0]).toStartWith('sites[1].domain: ')
    expect(bad[0]).toContain(`(from sql on postgres://127.0.0.1:${pg.port}/postgres)`)

    const dead = await issues({
      sites: { sql: QUERY, database: 'postgres://admin:s3cret-pw@127.0.0.1:1/db', timeoutMs: 2000 },
    })
    expect(dead).toHaveLength(1)
    expect(dead[0]).toStartWith('sites: ')
    expect(dead[0]).not.toContain('s3cret-pw')
  })

  test('a refresh swaps the set; a failed one keeps the last good set, logs without secrets and shows stale', async () => {
    await reset([
      [1, 'one.example'],
      [2, 'two.example'],
    ])
    const lines: string[] = []
    const secretUrl = pg.url.replace('postgres@', 'postgres:hunter2-secret@')
    const t = await startTestEngine(
      { sites: { sql: QUERY, database: secretUrl, refreshSeconds: 0 }, plugins: ['plausible'] },
      process.cwd(),
      { logger: createLogger({ level: 'debug', write: (l) => lines.push(l) }) },
    )
    try {
      const send = (domain: string) =>
        t.handle(
          new Request('http://localhost/api/event', {
            method: 'POST',
            headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA },
            body: pageview(domain),
          }),
        )
      expect((await send('two.example')).headers.get('x-plausible-dropped')).toBeNull()
      expect((await send('three.example')).headers.get('x-plausible-dropped')).toBe('1')

      await pg.sql`INSERT INTO sites (id, domain) VALUES (3, 'three.example')`
      await pg.sql`UPDATE sites SET active = false WHERE id = 2`
      await t.engine.refreshSites()
      expect(t.engine.services.sites.list().map((s) => s.domain)).toEqual(['one.example', 'three.example'])
      expect((await send('three.example')).headers.get('x-plausible-dropped')).toBeNull()
      expect((await send('two.example')).headers.get('x-plausible-dropped')).toBe('1')
      // The new site's drop series exist from the refresh on.
      const metrics = await (await t.handle(new Request('http://localhost/metrics'))).text()
      expect(metrics).toContain('analytics_events_dropped_total{reason="not_found",site="three.example"} 0')

      // A bad row: the whole refresh fails, the set in use stays.
      await pg.sql`INSERT INTO sites (id, domain) VALUES (4, 'one.example')`
      await t.engine.refreshSites()
      expect(t.engine.services.sites.list().map((s) => s.domain)).toEqual(['one.example', 'three.example'])
      const health = t.engine.health().body as { sites: Record<string, unknown> }
      expect(health.sites.stale).toBe(true)
      expect(health.sites.sites).toBe(2)
      expect(String(health.sites.lastError)).toContain(
        'sites[2].domain: domain one.example already belongs to sites[0]',
      )
      const stale = await (await t.handle(new Request('http://localhost/metrics'))).text()
      expect(stale).toContain('analytics_sites_stale 1')
      expect(stale).toContain('analytics_sites_refresh_failures_total 1')
      expect((await send('three.example')).headers.get('x-plausible-dropped')).toBeNull()

      // Fixed: the next refresh is good again.
      await pg.sql`DELETE FROM sites WHERE id = 4`
      await t.engine.refreshSites()
      expect((t.engine.health().body as { sites: { stale: boolean } }).sites.stale).toBe(false)

      const logged = lines.join('')
      expect(logged).toContain('Site refresh failed')
      expect(logged).not.toContain('hunter2-secret')
    } finally {
      await t.close()
    }
  })

  test('the set changed under load: no request fails, added and removed sites are counted exactly', async () => {
    await reset([
      [1, 'stays.example'],
      [2, 'leaves.example'],
    ])
    // Refreshes every second on their own, besides the ones the test asks for.
    const t = await startTestEngine({
      server: { port: 0, host: '127.0.0.1' },
      sites: { sql: QUERY, database: pg.url, refreshSeconds: 1 },
      plugins: ['plausible'],
    })
    const { port } = await t.engine.listen()
    const domains = ['stays.example', 'leaves.example', 'arrives.example']
    interface Sent {
      domain: string
      start: number
      status: number
      dropped: boolean
    }
    const sent: Sent[] = []
    let stop = false
    const worker = async () => {
      let i = 0
      while (!stop) {
        const domain = domains[i++ % domains.length]!
        const start = performance.now()
        let status = 0
        let dropped = false
        try {
          const res = await fetch(`http://127.0.0.1:${port}/api/event`, {
            method: 'POST',
            headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA },
            body: pageview(domain),
          })
          status = res.status
          dropped = res.headers.get('x-plausible-dropped') === '1'
          await res.arrayBuffer()
        } catch {
          status = -1
        }
        sent.push({ domain, start, status, dropped })
      }
    }
    try {
      const began = performance.now()
      const workers = Array.from({ length: 4 }, worker)
      await Bun.sleep(1000)
      await pg.sql`INSERT INTO sites (id, domain) VALUES (3, 'arrives.example')`
      await pg.sql`DELETE FROM sites WHERE id = 2`
      // A refresh already running may have read the old rows: the second one surely reads the new.
      await t.engine.refreshSites()
      await t.engine.refreshSites()
      const swapped = performance.now()
      await Bun.sleep(1500)
      stop = true
      await Promise.all(workers)
      const seconds = (performance.now() - began) / 1000

      expect(sent.filter((s) => s.status !== 202)).toEqual([])
      const after = sent.filter((s) => s.start > swapped)
      expect(after.length).toBeGreaterThan(100)
      expect(after.filter((s) => s.domain === 'arrives.example' && s.dropped)).toEqual([])
      expect(after.filter((s) => s.domain === 'leaves.example' && !s.dropped)).toEqual([])
      expect(after.filter((s) => s.domain === 'stays.example' && s.dropped)).toEqual([])

      // Every answer matches what was stored and counted, one for one.
      const rows = t.events()
      const idOf: Record<string, number> = { 'stays.example': 1, 'leaves.example': 2, 'arrives.example': 3 }
      for (const domain of domains) {
        const accepted = sent.filter((s) => s.domain === domain && !s.dropped).length
        expect(rows.filter((r) => Number(r.site_id) === idOf[domain]).length).toBe(accepted)
      }
      const dropped = sent.filter((s) => s.dropped).length
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
      expect(metrics).toContain(`analytics_events_dropped_total{reason="not_found",site="other"} ${dropped}`)
      console.log(
        `sites under load: ${sent.length} requests in ${seconds.toFixed(1)} s (${Math.round(sent.length / seconds)}/s), ` +
          `${dropped} not_found, ${(t.engine.health().body as { sites: { refreshes: number } }).sites.refreshes} refreshes, 0 failed`,
      )
    } finally {
      stop = true
      await t.close()
    }
  }, 30_000)
})
