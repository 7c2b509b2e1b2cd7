// End to end over HTTP: tracker-shaped Plausible and Lynkow requests through the standard plugins into
// the `clickhouse` sink (a real ClickHouse 18.16) and the `chdb` sink (ClickHouse 26.x, embedded) at
// once. The rows each server returns (sessions read with FINAL) must equal, column by column after
// type normalisation, the rows the memory sink kept for the same events; a few rules of
// spec/clickhouse-schema.md and the dialect specs are checked on the stored rows themselves. Then
// the engine's /metrics and /health: insert latency, dead letters, spool depth, and 503 when the spool
// is over its limit.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { JsonRow } from '../../core/rows.ts'
import { startTestEngine, type TestEngine } from '../../core/testing.ts'
import { acquireChdb } from '../../sinks/chdb/protocol.ts'
import { capsFor, createTableSQL, EVENT_COLUMNS, SESSION_COLUMNS } from '../../sinks/clickhouse/schema.ts'
import { normalizeRead, selectList } from './fixtures.ts'
import { type ClickHouseServer, clickhouseBinary, freePort, startClickHouse, warnIfNoClickHouse } from './harness.ts'
import {
  CHROME_UA,
  FIREFOX_UA,
  lynkowRequest,
  metric,
  plausibleRequest,
  root,
  SAFARI_IPHONE_UA,
  scratchDir,
  standardPlugins,
  streamRequest,
} from './traffic.ts'

warnIfNoClickHouse()

const maxmind = resolve(root, '../shared/data/maxmind-test/GeoLite2-City-Test.mmdb')
const haveMaxmind = existsSync(maxmind)
if (!haveMaxmind) console.warn('e2e.test.ts: ../shared/data/maxmind-test is missing; geo columns stay empty')
const plugins = standardPlugins(haveMaxmind ? { geoip: { database: maxmind } } : {})
const NUL2 = '\u0000\u0000'

/** A core/rows.ts row (the memory sink's) in the form `selectList` reads back: epoch seconds, thousandths. */
function normalizeMemoryRow(row: JsonRow): Record<string, unknown> {
  const out: Record<string, unknown> = { ...row }
  for (const key of ['timestamp', 'start']) {
    if (typeof out[key] === 'string') out[key] = Date.parse(`${(out[key] as string).replace(' ', 'T')}Z`) / 1000
  }
  for (const key of ['revenue_reporting_amount', 'revenue_source_amount']) {
    const value = out[key]
    if (typeof value === 'string') {
      const [whole = '0', fraction = ''] = value.replace('-', '').split('.')
      const thousandths = BigInt(whole) * 1000n + BigInt(fraction.padEnd(3, '0'))
      out[key] = String(value.startsWith('-') ? -thousandths : thousandths)
    }
  }
  return out
}

/** The memory sink's session rows as FINAL shows them: each session's last `+1` state. */
function finalStates(rows: JsonRow[]): JsonRow[] {
  const last = new Map<string, JsonRow>()
  for (const row of rows) if (row.sign === 1) last.set(String(row.session_id), row)
  return [...last.values()]
}

/** Both sides in one order: rows have no natural key (two events can share a second), so sort by content. */
const canonical = (rows: Record<string, unknown>[]) => rows.map((r) => JSON.stringify(r, Object.keys(r).sort())).sort()

/** Compares row lists one by one, so that a failure names the first differing row rather than a huge diff. */
function expectSameRows(actual: Record<string, unknown>[], expected: Record<string, unknown>[]): void {
  const a = canonical(actual)
  const e = canonical(expected)
  expect(a.length).toBe(e.length)
  for (let i = 0; i < e.length; i++) expect(JSON.parse(a[i]!)).toEqual(JSON.parse(e[i]!))
}

const eventsSql = (table: string) => `SELECT ${selectList(EVENT_COLUMNS)} FROM ${table}`
const sessionsSql = (table: string) => `SELECT ${selectList(SESSION_COLUMNS)} FROM ${table} FINAL`

/** The requests of the scenario: what a few visitors' browsers send, plus some that must be dropped. */
function scenario(base: string): { request: Request; dropped: boolean }[] {
  const now = Date.now()
  const a = { ip: '2.125.160.216', ua: CHROME_UA }
  const b = { ip: '81.2.69.142', ua: FIREFOX_UA }
  const c = { ip: '216.160.83.56', ua: SAFARI_IPHONE_UA }
  const p = (body: Record<string, unknown>, who: { ip: string; ua: string }, dropped = false) => ({
    request: plausibleRequest(base, body, who),
    dropped,
  })
  const lynkowVisit = {
    visitor_id: 'visitor-0000e2e1',
    session_id: 'sess-e2e-1',
    page_url: 'https://example.com/docs/start?utm_source=newsletter&utm_medium=email&utm_campaign=spring',
    page_path: '/docs/start',
    page_title: 'Getting started',
    language: 'en-US',
  }
  return [
    // Visitor A: a pageview from Hacker News with UTM tags, a custom event with props, engagement,
    // a second page, a purchase with revenue.
    p(
      {
        n: 'pageview',
        u: 'https://example.com/pricing?utm_source=hn&utm_medium=social&utm_campaign=launch&utm_content=banner&utm_term=analytics',
        d: 'example.com',
        r: 'https://news.ycombinator.com/item?id=42',
        w: 1440,
      },
      a,
    ),
    p(
      { n: 'Signup', u: 'https://example.com/pricing', d: 'example.com', p: { plan: 'pro', seats: 3, Trial: true } },
      a,
    ),
    p({ n: 'engagement', u: 'https://example.com/pricing', d: 'example.com', sd: 80, e: 12_000 }, a),
    p({ n: 'pageview', u: 'https://example.com/docs/intro', d: 'example.com', r: 'https://example.com/pricing' }, a),
    p(
      {
        n: 'Purchase',
        u: 'https://example.com/checkout',
        d: 'example.com',
        revenue: { amount: '49.90', currency: 'EUR' },
        p: { sku: 'pro-yearly' },
      },
      a,
    ),
    // Visitor B: a Google Ads click on a second site.
    p(
      {
        n: 'pageview',
        u: 'https://shop.example/product/7?gclid=abc123',
        d: 'shop.example',
        r: 'https://www.google.com/',
      },
      b,
    ),
    p(
      { n: 'Add to cart', u: 'https://shop.example/product/7', d: 'shop.example', p: { product: '7', price: 19.5 } },
      b,
    ),
    // Visitor C: a phone from a newsletter, then a 404 (which gets the `path` prop).
    p(
      {
        n: 'pageview',
        u: 'https://example.com/blog/caf%C3%A9?utm_source=Newsletter&utm_medium=email',
        d: 'example.com',
        r: 'https://mail.example.net/',
      },
      c,
    ),
    p({ n: '404', u: 'https://example.com/blog/missing', d: 'example.com' }, c),
    // Dropped: a crawler, referrer spam, a domain that is no site.
    p(
      { n: 'pageview', u: 'https://example.com/', d: 'example.com' },
      { ip: '2001:db8::bad', ua: 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)' },
      true,
    ),
    p({ n: 'pageview', u: 'https://example.com/', d: 'example.com', r: 'https://spam-seo.example/win' }, c, true),
    p({ n: 'pageview', u: 'https://unknown.example/', d: 'unknown.example' }, c, true),
    // Lynkow: a client session by fetch (pageview, scroll with engagement, outbound click) and the
    // seed's minimal example.
    {
      request: lynkowRequest(base, 1, {
        ...lynkowVisit,
        event_type: 'pageview',
        event_time: new Date(now).toISOString(),
        page_referrer: 'https://www.google.com/search?q=analytics',
        screen_width: 1920,
      }),
      dropped: false,
    },
    {
      request: lynkowRequest(base, 1, {
        sessionId: lynkowVisit.session_id,
        visitorId: lynkowVisit.visitor_id,
        eventType: 'scroll',
        pagePath: '/docs/start',
        pageUrl: lynkowVisit.page_url,
        eventTime: now + 1000,
        maxScrollDepth: 75,
        engagedTime: 9000,
      }),
      dropped: false,
    },
    {
      request: lynkowRequest(base, 1, {
        ...lynkowVisit,
        event_type: 'outbound-link',
        event_time: new Date(now + 2000).toISOString(),
        click_target_url: 'https://partner.example/welcome',
      }),
      dropped: false,
    },
    {
      request: lynkowRequest(base, 2, { event: 'page_view', path: '/pricing' }, { origin: 'https://shop.example' }),
      dropped: false,
    },
  ]
}

describe.skipIf(!clickhouseBinary)('HTTP to events_v2 and sessions_v2 (ClickHouse 18.16 and chdb)', () => {
  let ch: ClickHouseServer
  let t: TestEngine
  const scratch = scratchDir('e2e-')
  const chdbPath = join(scratch.path, 'chdb')

  beforeAll(async () => {
    ch = (await startClickHouse())!
    t = await startTestEngine(
      {
        server: { trustedProxies: ['loopback'] },
        sites: [
          { id: 1, domain: 'example.com' },
          { id: 2, domain: 'shop.example' },
        ],
        stateDir: join(scratch.path, 'state'),
        plugins,
        sinks: [
          { clickhouse: { url: ch.url, database: 'e2e', batchRows: 5000, flushIntervalMs: 100, compression: 'gzip' } },
          { chdb: { path: chdbPath, database: 'e2e', batchRows: 5000, flushIntervalMs: 100 } },
        ],
      },
      root,
    )
    // As `serve` does before listening.
    const lines = await t.engine.migrate()
    expect(lines).toContain('clickhouse: created table e2e.events_v2')
    // chdb creates its tables when it starts: the folder is its own.
    expect(lines).toContain('chdb: table e2e.events_v2 is up to date')
  }, 60_000)

  afterAll(async () => {
    await t?.close()
    await ch?.destroy()
    scratch.remove()
  })

  test('rows stored by both servers equal the memory sink rows, column by column', async () => {
    for (const { request, dropped } of scenario('http://localhost')) {
      const response = await t.handle(request)
      expect(response.status).toBe(202)
      const plausibleDropped = response.headers.get('x-plausible-dropped') !== null
      const lynkowText = request.url.includes('/collect') ? await response.text() : ''
      expect(plausibleDropped || (lynkowText !== '' && !lynkowText.includes('Event received'))).toBe(dropped)
    }
    // A steady stream on top: enough rows for several batches per table.
    for (let seq = 0; seq < 200; seq++)
      expect((await t.handle(streamRequest('http://localhost', seq))).status).toBe(202)

    const memory = t.engine.sinks.find((s) => s.name === 'memory')!
    const total = memory.stats.rowsWritten
    expect(t.events().length).toBe(200 + 13)
    for (const s of t.engine.sinks) await s.instance.flush()
    const deadline = Date.now() + 20_000
    const written = () => t.engine.sinks.filter((s) => s.name !== 'memory').map((s) => s.stats.rowsWritten)
    while (written().some((n) => n < total) && Date.now() < deadline) await Bun.sleep(20)
    expect(written()).toEqual([total, total])

    const expectedEvents = t.events().map(normalizeMemoryRow)
    const expectedSessions = finalStates(t.sessions()).map(normalizeMemoryRow)

    const chEvents = normalizeRead(await ch.rows(eventsSql('e2e.events_v2')))
    const chSessions = await ch.rows(sessionsSql('e2e.sessions_v2'))
    expectSameRows(chEvents, expectedEvents)
    expectSameRows(chSessions, expectedSessions)

    const { worker, release } = acquireChdb(chdbPath, 'chdb')
    try {
      const select = (sql: string) => worker.call({ op: 'select', sql }) as Promise<Record<string, unknown>[]>
      expectSameRows(normalizeRead(await select(eventsSql('e2e.events_v2'))), expectedEvents)
      expectSameRows(await select(sessionsSql('e2e.sessions_v2')), expectedSessions)
    } finally {
      await release()
    }

    // What the specs say, read from ClickHouse itself.
    const rows = chEvents as Record<string, unknown>[]
    const find = (name: string, path: string) => rows.find((r) => r.name === name && r.pathname === path)!
    const landing = find('pageview', '/pricing')
    expect(landing).toMatchObject({
      site_id: '1',
      hostname: 'example.com',
      referrer: 'news.ycombinator.com/item',
      // Plausible's rule: utm_source, when present, is the source.
      referrer_source: 'hn',
      utm_source: 'hn',
      utm_medium: 'social',
      utm_campaign: 'launch',
      utm_content: 'banner',
      utm_term: 'analytics',
      browser: 'Chrome',
      operating_system: 'Windows',
      screen_size: 'Desktop',
    })
    if (haveMaxmind) {
      expect(landing).toMatchObject({ country_code: 'GB', subdivision1_code: 'GB-ENG', subdivision2_code: 'GB-WBK' })
      expect(landing.city_geoname_id).toBe(2_655_045)
    }
    // Props: keys sorted by bytes, values as text; engagement carries scroll depth and time.
    expect(find('Signup', '/pricing')).toMatchObject({
      'meta.key': ['Trial', 'plan', 'seats'],
      'meta.value': ['true', 'pro', '3'],
    })
    expect(find('engagement', '/pricing')).toMatchObject({ scroll_depth: 80, engagement_time: 12_000 })
    // Every event of a visit carries its session's id, user and attribution.
    const visit = rows.filter((r) => r.session_id === landing.session_id)
    expect(visit.map((r) => r.name).sort()).toEqual(['Purchase', 'Signup', 'engagement', 'pageview', 'pageview'])
    for (const r of visit)
      expect(r).toMatchObject({ user_id: landing.user_id, referrer_source: 'hn', utm_campaign: 'launch' })
    expect(find('Purchase', '/checkout')).toMatchObject({
      revenue_source_amount: '49900',
      revenue_source_currency: 'EUR',
      revenue_reporting_amount: null,
    })
    expect(find('pageview', '/product/7')).toMatchObject({ site_id: '2', click_id_param: 'gclid' })
    expect(find('404', '/blog/missing')).toMatchObject({ 'meta.key': ['path'], 'meta.value': ['/blog/missing'] })
    expect(find('pageview', '/blog/café')).toMatchObject({
      browser: 'Safari',
      screen_size: 'Mobile',
      utm_source: 'Newsletter',
    })
    const unknownCountry = rows.find((r) => r.name === 'outbound_link')!
    expect(unknownCountry).toMatchObject({
      pathname: '/docs/start',
      country_code: haveMaxmind ? NUL2 : unknownCountry.country_code,
    })
    // Sessions (FINAL): visitor A's visit as one row with its counters.
    const session = chSessions.find((s) => s.session_id === landing.session_id)!
    expect(session).toMatchObject({
      sign: 1,
      pageviews: 2,
      events: 4,
      is_bounce: 0,
      entry_page: '/pricing',
      exit_page: '/docs/intro',
      referrer_source: 'hn',
      utm_campaign: 'launch',
    })

    // /metrics: rows, insert latency, no retries, nothing spooled or dead-lettered, both sinks up.
    const text = await (await t.handle(new Request('http://localhost/metrics'))).text()
    for (const sink of ['clickhouse', 'chdb']) {
      expect(metric(text, 'analytics_sink_rows_written_total', sink)).toBe(total)
      expect(metric(text, 'analytics_sink_batch_duration_seconds_count', sink)).toBeGreaterThanOrEqual(2)
      expect(metric(text, 'analytics_sink_batch_duration_seconds_sum', sink)).toBeGreaterThan(0)
      expect(metric(text, 'analytics_sink_retries_total', sink)).toBe(0)
      expect(metric(text, 'analytics_sink_dead_letters_total', sink)).toBe(0)
      expect(metric(text, 'analytics_sink_spool_bytes', sink)).toBe(0)
      expect(metric(text, 'analytics_sink_up', sink)).toBe(1)
    }
    const health = await t.handle(new Request('http://localhost/health'))
    expect(health.status).toBe(200)
    expect(((await health.json()) as { status: string }).status).toBe('ok')
  }, 60_000)

  test('a table whose column cannot hold the rows: batches dead-lettered, counted in /metrics', async () => {
    // An operator's table with a narrower country column than the spec's: every events batch is refused.
    const caps = capsFor('18.16.1')
    await ch.query('CREATE DATABASE drift')
    await ch.query(
      createTableSQL(
        {
          database: 'drift',
          eventsTable: 'events_v2',
          sessionsTable: 'sessions_v2',
          countersTable: 'ingest_counters',
          cluster: '',
        },
        'events',
        caps,
      ).replace('`country_code` FixedString(2)', '`country_code` FixedString(1)'),
      { allow_experimental_low_cardinality_type: 1 },
    )
    const deadLetterFile = join(scratch.path, 'drift-dead.ndjson')
    const drift = await startTestEngine(
      {
        sites: [{ id: 1, domain: 'example.com' }],
        stateDir: join(scratch.path, 'state-drift'),
        plugins,
        sinks: [{ clickhouse: { url: ch.url, database: 'drift', flushIntervalMs: 50, deadLetterFile } }],
      },
      root,
    )
    try {
      const lines = await drift.engine.migrate()
      expect(lines).toContain(
        'clickhouse: column drift.events_v2.country_code has type FixedString(1), expected FixedString(2): left unchanged',
      )
      for (let seq = 0; seq < 20; seq++)
        expect((await drift.handle(streamRequest('http://localhost', seq))).status).toBe(202)
      const sink = drift.engine.sinks.find((s) => s.name === 'clickhouse')!
      await sink.instance.flush()
      const deadline = Date.now() + 10_000
      while (sink.stats.rowsFailed < 20 && Date.now() < deadline) await Bun.sleep(20)
      const text = await (await drift.handle(new Request('http://localhost/metrics'))).text()
      expect(metric(text, 'analytics_sink_dead_letters_total', 'clickhouse')).toBeGreaterThanOrEqual(1)
      expect(metric(text, 'analytics_sink_rows_failed_total', 'clickhouse')).toBe(20)
      // The sessions went through; their inserts were timed.
      expect(metric(text, 'analytics_sink_rows_written_total', 'clickhouse')).toBe(drift.sessions().length)
      expect(metric(text, 'analytics_sink_batch_duration_seconds_count', 'clickhouse')).toBeGreaterThanOrEqual(1)
      const dead = readFileSync(deadLetterFile, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l))
      expect(dead.reduce((n, d) => n + d.rows, 0)).toBe(20)
      expect(dead[0]).toMatchObject({ table: 'events_v2' })
    } finally {
      await drift.close()
    }
  }, 30_000)
})

describe('/health and /metrics while the spool fills', () => {
  test('spool over its limit: /health answers 503 and says why; /metrics shows the depth', async () => {
    const scratch = scratchDir('e2e-spool-')
    // Nobody listens on this port: every insert fails, every batch goes to the 1 MiB spool.
    const t = await startTestEngine(
      {
        sites: [{ id: 1, domain: 'example.com' }],
        stateDir: scratch.path,
        plugins,
        sinks: [
          {
            clickhouse: {
              url: `http://127.0.0.1:${await freePort()}`,
              batchRows: 10,
              flushIntervalMs: 10,
              retryMaxMs: 50,
              spoolLimitMb: 1,
            },
          },
        ],
      },
      root,
    )
    try {
      // Each event carries 20 props of 1,900 bytes (about 38 KB in events_v2 and as much in
      // sessions_v2's entry_meta); 1 MiB fills within a few dozen requests.
      const filler = 'lorem ipsum dolor sit amet '.repeat(70).slice(0, 1900)
      let status = 200
      let sent = 0
      const firstHealth = await t.handle(new Request('http://localhost/health'))
      expect(firstHealth.status).toBe(200)
      while (status !== 503 && sent < 200) {
        const props = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, `${filler}${sent}`]))
        const body = { n: 'pageview', u: `https://example.com/page/${sent}`, d: 'example.com', p: props }
        const response = await t.handle(plausibleRequest('http://localhost', body, { ip: `2001:db8::${sent + 1}` }))
        expect(response.status).toBe(202)
        sent++
        await Bun.sleep(15)
        status = (await t.handle(new Request('http://localhost/health'))).status
      }
      expect(status).toBe(503)
      const health = (await (await t.handle(new Request('http://localhost/health'))).json()) as {
        status: string
        sinks: Record<string, { state: string; detail: string; spoolBytes: number; spoolLimitBytes: number }>
      }
      expect(health.status).toBe('failing')
      expect(health.sinks.clickhouse).toMatchObject({ state: 'failing', spoolLimitBytes: 1024 * 1024 })
      expect(health.sinks.clickhouse!.detail).toContain('spool is full')
      const text = await (await t.handle(new Request('http://localhost/metrics'))).text()
      const spooled = metric(text, 'analytics_sink_spool_bytes', 'clickhouse')
      expect(spooled).toBeGreaterThan(900 * 1024)
      expect(spooled).toBeLessThanOrEqual(1024 * 1024)
      expect(metric(text, 'analytics_sink_retries_total', 'clickhouse')).toBeGreaterThan(0)
      expect(metric(text, 'analytics_sink_queued_rows', 'clickhouse')).toBeGreaterThan(0)
      expect(metric(text, 'analytics_sink_up', 'clickhouse')).toBe(0)
    } finally {
      await t.close()
      scratch.remove()
    }
  }, 30_000)
})
