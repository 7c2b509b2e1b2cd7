// Per-site drop counts kept in ClickHouse (issue "operators' features" item 1): traffic over real HTTP
// with drops and a reporting plugin, into the `clickhouse` sink (a real 18.16) and the `chdb` sink at
// once; after shutdown both `ingest_counters` tables hold the same sums per site and reason.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { startTestEngine, TEST_UA, type TestEngine } from '../../core/testing.ts'
import { acquireChdb } from '../../sinks/chdb/protocol.ts'
import { type ClickHouseServer, clickhouseBinary, startClickHouse, warnIfNoClickHouse } from '../clickhouse/harness.ts'
import { scratchDir } from '../clickhouse/traffic.ts'

warnIfNoClickHouse()

const BOT_UA = 'Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)'
const SUMS =
  'SELECT toUInt64(site_id) AS site, reason, toUInt64(sum(dropped)) AS dropped, toUInt64(sum(would_drop)) AS would_drop, ' +
  'toUInt64(min(toUnixTimestamp(minute)) % 60) AS second FROM counters.ingest_counters GROUP BY site_id, reason ORDER BY site_id, reason FORMAT JSONEachRow'

describe.skipIf(!clickhouseBinary)('ingest_counters in ClickHouse 18.16 and chdb', () => {
  let ch: ClickHouseServer
  let t: TestEngine
  const scratch = scratchDir('counters-')
  const chdbPath = join(scratch.path, 'chdb')

  beforeAll(async () => {
    ch = (await startClickHouse())!
    t = await startTestEngine({
      server: { port: 0, host: '127.0.0.1', trustedProxies: ['loopback'] },
      sites: [
        { id: 21, domain: 'a.example', shields: { page: ['/admin/**'] } },
        { id: 22, domain: 'b.example' },
      ],
      stateDir: join(scratch.path, 'state'),
      plugins: ['plausible', 'client-ip', 'user-agent', { bots: { mode: 'report' } }, 'shield-page'],
      sinks: [
        { clickhouse: { url: ch.url, database: 'counters', flushIntervalMs: 50, compression: 'none' } },
        { chdb: { path: chdbPath, database: 'counters', flushIntervalMs: 50 } },
      ],
    })
    await t.engine.migrate()
  }, 60_000)

  afterAll(async () => {
    await ch?.destroy()
    scratch.remove()
  })

  test('drops and would-drops by site and reason, summed alike by both servers', async () => {
    const { port } = await t.engine.listen()
    const send = (domain: string, path: string, ua: string) =>
      fetch(`http://127.0.0.1:${port}/api/event`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'user-agent': ua },
        body: JSON.stringify({ n: 'pageview', u: `https://${domain}${path}`, d: domain }),
      })
    const plan: [string, string, string, number][] = [
      ['a.example', '/admin/users', TEST_UA, 3], // shield page: dropped
      ['a.example', '/', BOT_UA, 2], // bot: reported, kept
      ['b.example', '/', BOT_UA, 1],
      ['nobody.example', '/', TEST_UA, 4], // unknown site: not_found under site 0
      ['b.example', '/', TEST_UA, 5], // accepted: not counted
    ]
    for (const [domain, path, ua, times] of plan) {
      for (let i = 0; i < times; i++) expect((await send(domain, path, ua)).status).toBe(202)
    }
    // Shutdown hands the counters over and flushes every sink.
    await t.close()

    const expected = [
      { site: '0', reason: 'not_found', dropped: '4', would_drop: '0', second: '0' },
      { site: '21', reason: 'bot', dropped: '0', would_drop: '2', second: '0' },
      { site: '21', reason: 'site_page_blocklist', dropped: '3', would_drop: '0', second: '0' },
      { site: '22', reason: 'bot', dropped: '0', would_drop: '1', second: '0' },
    ]
    const fromServer = (await ch.query(SUMS))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(fromServer).toEqual(expected)
    const { worker, release } = acquireChdb(chdbPath, 'chdb')
    await worker.open()
    try {
      const rows = (await worker.call({ op: 'select', sql: SUMS.replace(' FORMAT JSONEachRow', '') })) as Record<
        string,
        unknown
      >[]
      expect(rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, String(v)])))).toEqual(expected)
    } finally {
      await release()
    }
  }, 60_000)
})
