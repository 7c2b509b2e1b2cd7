// Sites from a file or an HTTP URL (issue #12 item 4): loaded at start, refreshed on the interval and on
// reload, swapped whole; a failed refresh keeps the last good set; secrets never reach a log line.

import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigErrors, loadConfig, resolveConfig } from '../../core/config.ts'
import { createLogger } from '../../core/logger.ts'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'

const pageview = (domain: string) =>
  new Request('http://localhost/api/event', {
    method: 'POST',
    headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA },
    body: JSON.stringify({ n: 'pageview', u: `https://${domain}/`, d: domain }),
  })

async function issuesOf(raw: unknown, baseDir = process.cwd()): Promise<string[]> {
  try {
    await resolveConfig(raw, { source: '(test)', baseDir, vars: {} })
  } catch (error) {
    if (error instanceof ConfigErrors) return error.issues.map((i) => `${i.path}: ${i.message}`)
    throw error
  }
  throw new Error('expected a config error')
}

describe('a file source', () => {
  const dir = mkdtempSync(join(tmpdir(), 'site-file-'))

  test('loads at start, refreshes on the interval, keeps the last good set when the file breaks', async () => {
    writeFileSync(join(dir, 'sites.yaml'), '- { id: 1, domain: one.example }\n')
    const t = await startTestEngine({ sites: { file: 'sites.yaml', refreshSeconds: 1 }, plugins: ['plausible'] }, dir)
    try {
      expect((await t.handle(pageview('one.example'))).headers.get('x-plausible-dropped')).toBeNull()
      expect((await t.handle(pageview('two.example'))).headers.get('x-plausible-dropped')).toBe('1')

      writeFileSync(join(dir, 'sites.yaml'), '- { id: 1, domain: one.example }\n- { id: 2, domain: two.example }\n')
      await Bun.sleep(1600) // one interval, and the load
      expect(t.engine.services.sites.list().map((s) => s.domain)).toEqual(['one.example', 'two.example'])
      expect((await t.handle(pageview('two.example'))).headers.get('x-plausible-dropped')).toBeNull()

      writeFileSync(join(dir, 'sites.yaml'), '- { id: 1, domain: one.example }\n- { id: "two", domain: two.example }\n')
      await t.engine.refreshSites()
      expect(t.engine.services.sites.list()).toHaveLength(2)
      const health = t.engine.health()
      expect(health.status).toBe(200)
      const sites = (health.body as { sites: { stale: boolean; lastError: string; source: string } }).sites
      expect(sites.stale).toBe(true)
      expect(sites.source).toBe('file sites.yaml')
      expect(sites.lastError).toContain('sites[1].id')
    } finally {
      await t.close()
    }
  })

  test('a missing file or a bad row stops start-up with the path', async () => {
    expect(await issuesOf({ sites: { file: 'nope.yaml' } }, dir)).toEqual([
      expect.stringMatching(/^sites: cannot read: .*\(from file nope\.yaml\)$/),
    ])
    writeFileSync(join(dir, 'bad.json'), JSON.stringify([{ id: 1, domain: 'a.example', colour: 'red' }]))
    expect(await issuesOf({ sites: { file: 'bad.json' } }, dir)).toEqual([
      'sites[0].colour: unknown option (from file bad.json)',
    ])
  })

  test('a source takes exactly one of file, sql, url, and its own options only', async () => {
    expect(await issuesOf({ sites: { file: 'a.yaml', url: 'https://x.example/' } })).toEqual([
      'sites: expected exactly one of file, sql (with database) or url',
    ])
    expect(await issuesOf({ sites: { url: 'https://x.example/', database: 'postgres://h/db' } })).toEqual([
      'sites.database: only a sql source takes a database',
    ])
    expect(await issuesOf({ sites: { sql: 'SELECT 1' } })).toEqual([
      'sites.database: a sql source needs a database URL',
    ])
    expect(await issuesOf({ sites: { url: 'ftp://x.example/' } })).toEqual(['sites.url: expected an http(s) URL'])
    expect(await issuesOf({ sites: { file: 'a.yaml', refreshSeconds: -1 } })).toEqual([
      expect.stringMatching(/^sites\.refreshSeconds: /),
    ])
  })

  test('SIGHUP (reload) reads the source again and swaps its set', async () => {
    const file = join(dir, 'analytics.yaml')
    writeFileSync(file, 'sites: { file: reload.yaml, refreshSeconds: 0 }\nplugins: [plausible]\nsinks: [memory]\n')
    writeFileSync(join(dir, 'reload.yaml'), '- { id: 1, domain: one.example }\n')
    const t = await startTestEngine(
      { sites: { file: 'reload.yaml', refreshSeconds: 0 }, plugins: ['plausible'], sinks: [] },
      dir,
    )
    try {
      writeFileSync(join(dir, 'reload.yaml'), '- { id: 1, domain: one.example }\n- { id: 3, domain: three.example }\n')
      await t.engine.reload(await loadConfig({ file, vars: {} }))
      expect(t.engine.services.sites.list().map((s) => s.id)).toEqual([1, 3])
      expect((await t.handle(pageview('three.example'))).headers.get('x-plausible-dropped')).toBeNull()
    } finally {
      await t.close()
    }
  })
})

describe('a url source', () => {
  let sites: unknown = [{ id: 1, domain: 'one.example' }]
  let status = 200
  const seen: { auth: string | null; token: string | null }[] = []
  const server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch(request) {
      const url = new URL(request.url)
      seen.push({ auth: request.headers.get('authorization'), token: url.searchParams.get('token') })
      if (request.headers.get('authorization') !== 'Bearer header-secret') return new Response('no', { status: 401 })
      return status === 200 ? Response.json(sites) : new Response('down', { status })
    },
  })
  afterAll(() => server.stop(true))
  const url = `http://127.0.0.1:${server.port}/sites.json?token=query-secret`

  test('sends its headers, refreshes, keeps the last good set on an error answer, never logs a secret', async () => {
    const lines: string[] = []
    const t = await startTestEngine(
      {
        sites: { url, headers: { authorization: 'Bearer header-secret' }, refreshSeconds: 0 },
        plugins: ['plausible'],
      },
      process.cwd(),
      { logger: createLogger({ level: 'debug', write: (l) => lines.push(l) }) },
    )
    try {
      expect(seen.at(-1)).toEqual({ auth: 'Bearer header-secret', token: 'query-secret' })
      expect((t.engine.health().body as { sites: { source: string } }).sites.source).toBe(
        `url http://127.0.0.1:${server.port}/sites.json`,
      )
      sites = [
        { id: 1, domain: 'one.example' },
        { id: 2, domain: 'two.example', retention: { days: 30 } },
      ]
      await t.engine.refreshSites()
      expect(t.engine.services.sites.byDomain('two.example')?.retentionDays).toBe(30)

      status = 503
      await t.engine.refreshSites()
      expect(t.engine.services.sites.list()).toHaveLength(2)
      const health = (t.engine.health().body as { sites: { stale: boolean; lastError: string } }).sites
      expect(health).toMatchObject({ stale: true })
      expect(health.lastError).toContain('HTTP 503')
      const logged = lines.join('')
      expect(logged).toContain('Site refresh failed')
      expect(logged).not.toContain('query-secret')
      expect(logged).not.toContain('header-secret')
      expect(JSON.stringify(t.engine.health().body)).not.toContain('secret')
    } finally {
      status = 200
      await t.close()
    }
  })

  test('a URL that refuses at start is a config error without its secrets', async () => {
    const issues = await issuesOf({ sites: { url } })
    expect(issues).toEqual([`sites: HTTP 401 (from url http://127.0.0.1:${server.port}/sites.json)`])
  })
})

describe('check', () => {
  test('prints where the sites come from and the retention of each site', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'site-check-'))
    writeFileSync(
      join(dir, 'sites.yaml'),
      '- { id: 1, domain: one.example }\n- { id: 2, domain: two.example, retention: { days: 30 } }\n',
    )
    const file = join(dir, 'analytics.yaml')
    writeFileSync(
      file,
      'sites: { file: sites.yaml }\nretention: { days: 400 }\nplugins: [plausible]\nsinks: [stdout]\n',
    )
    const cli = join(import.meta.dir, '../../core/cli.ts')
    const proc = Bun.spawn([process.execPath, cli, 'check', '--config', file], { stdout: 'pipe', stderr: 'pipe' })
    const [stdout, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
    expect(code).toBe(0)
    expect(stdout).toContain(
      'sites: from file sites.yaml, refreshed every 60 s: one.example (1), two.example (2)\n' +
        'retention: default 400 days; one.example (1): 400 days; two.example (2): 30 days\n',
    )

    writeFileSync(file, 'sites: [{ id: 1, domain: one.example }]\nsinks: [stdout]\n')
    const plain = Bun.spawn([process.execPath, cli, 'check', '--config', file], { stdout: 'pipe' })
    expect(await new Response(plain.stdout).text()).toContain('retention: forever (rows are never deleted)\n')
  })
})

test('a source URL is shown without credentials, query, or path segments long enough to be tokens', async () => {
  const { redactUrl } = await import('../../core/site-sources.ts')
  expect(
    redactUrl('https://admin:pw@sites.example/v1/agency/8f14e45fceea167a5a36dedd4bea2543/sites.json?token=x'),
  ).toBe('https://sites.example/v1/agency/…/sites.json')
  expect(redactUrl('postgres://user:pw@db.internal:5432/analytics')).toBe('postgres://db.internal:5432/analytics')
})
