// Issue "operators' features" item 1, over real HTTP: `mode: report` tags instead of dropping, the
// would_drop counters, and the per-site, per-minute drop counts handed to sinks (ingest_counters).

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { ConfigErrors } from '../../core/config.ts'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'
import type { MemorySinkInstance } from '../../sinks/memory/index.ts'

const BOT_UA = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'
const SITES = [
  { id: 11, domain: 'shop.example', shields: { ip: ['203.0.113.7'] } },
  { id: 12, domain: 'blog.example' },
]

async function listening(plugins: unknown[]) {
  const t = await startTestEngine({
    server: { port: 0, host: '127.0.0.1', trustedProxies: ['loopback'] },
    sites: SITES,
    plugins,
  })
  const { port } = await t.engine.listen()
  const base = `http://127.0.0.1:${port}`
  const send = (domain: string, ua: string, ip = '198.51.100.20') =>
    fetch(`${base}/api/event`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'user-agent': ua, 'x-forwarded-for': ip },
      body: JSON.stringify({ n: 'pageview', u: `https://${domain}/page`, d: domain }),
    })
  return { t, base, send }
}

function prop(row: Record<string, unknown>, key: string): string | undefined {
  const keys = row['meta.key'] as string[]
  const values = row['meta.value'] as string[]
  const i = keys.indexOf(key)
  return i < 0 ? undefined : values[i]
}

describe('mode: report', () => {
  let ctx: Awaited<ReturnType<typeof listening>>
  beforeAll(async () => {
    ctx = await listening(['plausible', 'client-ip', 'user-agent', { bots: { mode: 'report' } }, 'shield-ip'])
  })
  afterAll(() => ctx.t.close())

  test('a bot is kept, answered as accepted, and its row carries would_drop', async () => {
    const res = await ctx.send('shop.example', BOT_UA)
    expect(res.status).toBe(202)
    expect(res.headers.get('x-plausible-dropped')).toBeNull()
    const rows = ctx.t.events().filter((r) => prop(r, 'would_drop') !== undefined)
    expect(rows).toHaveLength(1)
    expect(prop(rows[0]!, 'would_drop')).toBe('bot')
    expect(rows[0]!.site_id).toBe('11')
  })

  test('a plugin left in drop mode still drops, after the reporting one tagged', async () => {
    const before = ctx.t.events().length
    const res = await ctx.send('shop.example', BOT_UA, '203.0.113.7')
    expect(res.status).toBe(202)
    expect(res.headers.get('x-plausible-dropped')).toBe('1')
    expect(ctx.t.events().length).toBe(before)
  })

  test('a browser gets no tag', async () => {
    await ctx.send('blog.example', TEST_UA)
    const last = ctx.t.events().at(-1)!
    expect(last.site_id).toBe('12')
    expect(prop(last, 'would_drop')).toBeUndefined()
  })

  test('metrics count would_drop apart from dropped', async () => {
    const text = await (await fetch(`${ctx.base}/metrics`)).text()
    expect(text).toContain('analytics_events_would_drop_total{reason="bot",site="shop.example"} 2')
    expect(text).toContain('analytics_events_dropped_total{reason="bot",site="shop.example"} 0')
    expect(text).toContain('analytics_events_dropped_total{reason="site_ip_blocklist",site="shop.example"} 1')
  })
})

test('per-site drop counts by minute reach the sink at shutdown, dropped and would_drop apart', async () => {
  const { t, send } = await listening([
    'plausible',
    'client-ip',
    'user-agent',
    { bots: { mode: 'report' } },
    'shield-ip',
  ])
  const memory = t.engine.sinks.find((s) => s.name === 'memory')!.instance as MemorySinkInstance
  const before = Math.floor(Date.now() / 1000)
  await send('shop.example', BOT_UA) // would_drop bot
  await send('shop.example', TEST_UA, '203.0.113.7') // dropped site_ip_blocklist
  await send('shop.example', TEST_UA, '203.0.113.7')
  await send('unknown.example', TEST_UA) // dropped not_found, by the dialect, site 0
  await send('blog.example', TEST_UA) // accepted: no counter
  await t.close()
  const after = Math.floor(Date.now() / 1000)
  const summed = new Map<string, [number, number]>()
  for (const row of memory.counters) {
    expect(row.minute % 60).toBe(0)
    expect(row.minute).toBeGreaterThanOrEqual(before - (before % 60))
    expect(row.minute).toBeLessThanOrEqual(after)
    const key = `${row.site_id} ${row.reason}`
    const [d, w] = summed.get(key) ?? [0, 0]
    summed.set(key, [d + row.dropped, w + row.would_drop])
  }
  expect(Object.fromEntries(summed)).toEqual({
    '11 bot': [0, 1],
    '11 site_ip_blocklist': [2, 0],
    '0 not_found': [1, 0],
  })
})

describe('mode is checked with its path', () => {
  const resolveWith = async (plugins: unknown[]) => {
    try {
      await startTestEngine({ sites: SITES, plugins }).then((t) => t.close())
      return []
    } catch (error) {
      if (!(error instanceof ConfigErrors)) throw error
      return error.issues
    }
  }

  test('a dialect cannot report', async () => {
    const issues = await resolveWith([{ plausible: { mode: 'report' } }])
    expect(issues).toEqual([{ path: 'plugins[0].plausible.mode', message: expect.stringContaining('dialect') }])
  })

  test('a plugin that never drops has no mode', async () => {
    const issues = await resolveWith(['plausible', { referrer: { mode: 'report' } }])
    expect(issues).toEqual([
      { path: 'plugins[1].referrer.mode', message: 'this plugin never drops, so it has no mode' },
    ])
  })

  test('only drop and report', async () => {
    const issues = await resolveWith(['plausible', { bots: { mode: 'tag' } }])
    expect(issues).toEqual([{ path: 'plugins[1].bots.mode', message: 'expected drop or report' }])
  })

  test('mode: drop is the default and changes nothing', async () => {
    expect(await resolveWith(['plausible', { bots: { mode: 'drop' } }])).toEqual([])
  })
})
