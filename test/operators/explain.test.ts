// `explain` as an operator runs it (issue "operators' features" item 1): a real process, a config
// file, a request file or stdin; each plugin's verdict, the rows, the answer; nothing written.

import { afterAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { withoutSecrets } from '../../core/explain.ts'
import { TEST_UA } from '../../core/testing.ts'

const root = resolve(import.meta.dir, '../..')
const cli = join(root, 'core/cli.ts')
const dir = mkdtempSync(join(tmpdir(), 'explain-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const BOT_UA = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'
const spool = join(dir, 'spool')
const config = join(dir, 'analytics.yaml')
writeFileSync(
  config,
  `sites:
  - { id: 5, domain: example.com, shields: { page: ["/admin/**"] } }
server: { trustedProxies: [loopback] }
stateDir: ${join(dir, 'state')}
plugins:
  - plausible
  - client-ip: { headers: [cf-connecting-ip, x-forwarded-for] }
  - user-agent
  - bots
  - shield-page: { mode: report }
  - referrer
  - sessions
sinks:
  # explain must never reach it: the folder must stay absent.
  - clickhouse: { url: "http://127.0.0.1:9", spoolDir: ${spool} }
`,
)

function requestFile(name: string, request: unknown): string {
  const path = join(dir, name)
  writeFileSync(path, JSON.stringify(request))
  return path
}

async function run(args: string[], stdin?: string) {
  const proc = Bun.spawn([process.execPath, cli, ...args], {
    cwd: dir,
    stdin: stdin === undefined ? 'ignore' : new Blob([stdin]),
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  return { stdout, stderr, code }
}

const pageview = (ua: string, path = '/pricing') => ({
  method: 'POST',
  path: '/api/event',
  headers: { 'content-type': 'text/plain', 'user-agent': ua, 'x-forwarded-for': '198.51.100.4' },
  body: { n: 'pageview', u: `https://example.com${path}`, d: 'example.com', r: 'https://news.ycombinator.com/' },
})

describe('explain', () => {
  test('a kept event: every plugin passes, the rows are printed, nothing is written', async () => {
    const { stdout, code, stderr } = await run([
      'explain',
      '--config',
      config,
      requestFile('ok.json', pageview(TEST_UA)),
    ])
    expect(stderr).not.toMatch(/\n\s+at /)
    expect(code).toBe(0)
    expect(stdout).toContain('route     POST /api/event (plausible)')
    // The client-IP header order as configured, and which address it chose.
    expect(stdout).toContain('client-ip {"headers":["cf-connecting-ip","x-forwarded-for"]}')
    expect(stdout).toContain('clientIp: 127.0.0.1 → 198.51.100.4')
    expect(stdout).toMatch(/classify\s+bots\s+pass/)
    expect(stdout).toContain('referrer_source: "" → Hacker News')
    const events = stdout.split('\n').filter((l) => l.trim().startsWith('events_v2'))
    expect(events).toHaveLength(1)
    const row = JSON.parse(events[0]!.trim().slice('events_v2'.length))
    expect(row).toMatchObject({ site_id: '5', pathname: '/pricing', referrer_source: 'Hacker News', browser: 'Chrome' })
    expect(stdout.split('\n').filter((l) => l.trim().startsWith('sessions_v2'))).toHaveLength(1)
    expect(stdout).toContain('response  202 "ok"')
    expect(existsSync(spool)).toBe(false)
  })

  test('a dropped event names the plugin and the reason, and the answer carries the header', async () => {
    const { stdout, code } = await run(['explain', '--config', config, requestFile('bot.json', pageview(BOT_UA))])
    expect(code).toBe(0)
    expect(stdout).toMatch(/classify\s+bots\s+DROP: bot/)
    expect(stdout).toContain('dropped (bot); no rows')
    expect(stdout).not.toMatch(/^\s+events_v2/m)
    expect(stdout).toContain('x-plausible-dropped: 1')
  })

  test('a plugin in mode: report says would drop, and the row carries would_drop', async () => {
    const { stdout } = await run(
      ['--json', 'explain', '-c', config, '-'],
      JSON.stringify(pageview(TEST_UA, '/admin/x')),
    )
    const report = JSON.parse(stdout)
    const shield = report.events[0].steps.find((s: { plugin: string }) => s.plugin === 'shield-page')
    expect(shield).toMatchObject({ verdict: 'would_drop', reason: 'site_page_blocklist' })
    expect(report.events[0].dropped).toBeUndefined()
    const row = report.events[0].rows.events_v2[0]
    expect(row['meta.key']).toEqual(['would_drop'])
    expect(row['meta.value']).toEqual(['site_page_blocklist'])
    expect(report.response.status).toBe(202)
  })

  test("the dialect's own drop (unknown site) and a path no route serves", async () => {
    const unknown = pageview(TEST_UA)
    unknown.body.d = 'other.example'
    unknown.body.u = 'https://other.example/'
    const { stdout } = await run(['explain', '--config', config, requestFile('unknown.json', unknown)])
    expect(stdout).toContain('dropped by the dialect plausible: not_found')
    const missing = await run(['explain', '--config', config, requestFile('missing.json', { path: '/nope' })])
    expect(missing.code).toBe(0)
    expect(missing.stdout).toContain('route     none')
    expect(missing.stdout).toContain('response  404')
  })

  test('a bad request file is a clear error, exit 2, no stack trace', async () => {
    const bad = await run(['explain', '--config', config, requestFile('bad.json', { method: 'POST' })])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toBe('explain: path: expected a path like /api/event\n')
    const missing = await run(['explain', '--config', config])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('explain needs one request file')
  })

  test('the state folder holds no raw address or user agent afterwards', async () => {
    await run(['explain', '--config', config, requestFile('again.json', pageview(TEST_UA))])
    const stateDir = join(dir, 'state')
    const files = existsSync(stateDir) ? readdirSync(stateDir, { recursive: true }).map(String) : []
    for (const f of files) {
      const path = join(stateDir, f)
      if (!existsSync(path) || !Bun.file(path).size) continue
      const text = await Bun.file(path)
        .text()
        .catch(() => '')
      expect(text).not.toContain('198.51.100.4')
      expect(text).not.toContain('Chrome/')
    }
  })
})

test('options are printed without secrets: credentials cut from URLs, secret-looking keys hidden', () => {
  expect(
    withoutSecrets({
      store: 'redis',
      redis: { url: 'redis://:s3cret@cache.internal:6379/2', keyPrefix: 'analytics:' },
      headers: { authorization: 'Bearer abc', 'x-site': 'shop' },
      password: 'hunter2',
      lists: ['https://example.com/spammers.txt'],
    }),
  ).toEqual({
    store: 'redis',
    redis: { url: 'redis://cache.internal:6379/2', keyPrefix: 'analytics:' },
    headers: { authorization: '(hidden)', 'x-site': 'shop' },
    password: '(hidden)',
    lists: ['https://example.com/spammers.txt'],
  })
})

test('a client-sent would_drop prop is removed when a plugin reports, so a verdict cannot be faked or hidden', async () => {
  // On a path shield-page reports: the engine's reason replaces the client's.
  const browser = pageview(TEST_UA, '/admin/y')
  ;(browser.body as Record<string, unknown>).p = { would_drop: 'nothing to see' }
  const kept = JSON.parse((await run(['--json', 'explain', '-c', config, '-'], JSON.stringify(browser))).stdout)
  expect(kept.events[0].rows.events_v2[0]['meta.value']).toEqual(['site_page_blocklist'])
  // Where nothing reports: no tag at all, whatever the client sent.
  const plain = pageview(TEST_UA, '/fine')
  ;(plain.body as Record<string, unknown>).p = { would_drop: 'nothing to see' }
  const clean = JSON.parse((await run(['--json', 'explain', '-c', config, '-'], JSON.stringify(plain))).stdout)
  expect(clean.events[0].rows.events_v2[0]['meta.key']).toEqual([])
})
