// First-party paths (issue "operators' features" item 7), over real HTTP: each dialect serves every
// configured path the same way, the default paths stay when none is configured, and the client-IP
// header order is per config.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { ConfigErrors } from '../../core/config.ts'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'

const SITES = [{ id: 7, domain: 'example.com' }]

describe('configured paths', () => {
  let t: Awaited<ReturnType<typeof startTestEngine>>
  let base: string
  beforeAll(async () => {
    t = await startTestEngine({
      server: { port: 0, host: '127.0.0.1', trustedProxies: ['loopback'] },
      sites: SITES,
      plugins: [
        { plausible: { paths: ['/api/event', '/p/e'] } },
        { lynkow: { paths: ['/t/:siteId/c'] } },
        // Only the second header is read, so a spoofed first one changes nothing.
        { 'client-ip': { headers: ['x-forwarded-for'] } },
      ],
    })
    base = `http://127.0.0.1:${(await t.engine.listen()).port}`
  })
  afterAll(() => t.close())

  const plausible = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA, ...headers },
      body: JSON.stringify({ n: 'pageview', u: `https://example.com${path}`, d: 'example.com' }),
    })

  test('both Plausible paths answer as Plausible and store the event', async () => {
    for (const path of ['/api/event', '/p/e']) {
      const res = await plausible(path)
      expect(res.status).toBe(202)
      expect(await res.text()).toBe('ok')
    }
    expect(t.events().map((r) => r.pathname)).toEqual(['/api/event', '/p/e'])
  })

  test('each Plausible path has its batch route', async () => {
    const item = (path: string) => ({ n: 'pageview', u: `https://example.com${path}`, d: 'example.com' })
    const res = await fetch(`${base}/p/e/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': TEST_UA },
      body: JSON.stringify([item('/one'), item('/two')]),
    })
    expect(res.status).toBe(202)
    expect(await res.json()).toEqual({ accepted: 2, dropped: [], rejected: [] })
    expect(
      t
        .events()
        .slice(-2)
        .map((r) => r.pathname),
    ).toEqual(['/one', '/two'])
  })

  test('the Lynkow path takes its :siteId; its default path is gone when paths are set', async () => {
    const body = JSON.stringify({ event_type: 'page_view', page_path: '/docs' })
    const headers = { 'content-type': 'application/json', 'user-agent': TEST_UA, origin: 'https://example.com' }
    const custom = await fetch(`${base}/t/7/c`, { method: 'POST', headers, body })
    expect(custom.status).toBe(202)
    expect(t.events().at(-1)).toMatchObject({ site_id: '7', pathname: '/docs' })
    const old = await fetch(`${base}/public/7/analytics/collect`, { method: 'POST', headers, body })
    expect(old.status).toBe(404)
  })

  test('the header order is the configured one: cf-connecting-ip is not read', async () => {
    const before = t.events().length
    await plausible('/p/e', { 'cf-connecting-ip': '203.0.113.50', 'x-forwarded-for': '198.51.100.60' })
    await plausible('/p/e', { 'cf-connecting-ip': '203.0.113.51', 'x-forwarded-for': '198.51.100.60' })
    const [a, b] = t.events().slice(before)
    // Same x-forwarded-for, different cf-connecting-ip: one visitor.
    expect(a!.user_id).toBe(b!.user_id)
  })
})

describe('bad paths are config errors with their path', () => {
  const issuesOf = async (plugins: unknown[]) => {
    try {
      await (await startTestEngine({ sites: SITES, plugins })).close()
      return []
    } catch (error) {
      if (!(error instanceof ConfigErrors)) throw error
      return error.issues.map((i) => i.path)
    }
  }
  test('a Lynkow path without :siteId', async () => {
    expect(await issuesOf([{ lynkow: { paths: ['/collect'] } }])).toEqual(['plugins[0].lynkow.paths[0]'])
  })
  test('a Plausible path that is not a path, or none at all', async () => {
    expect(await issuesOf([{ plausible: { paths: ['api/event'] } }])).toEqual(['plugins[0].plausible.paths[0]'])
    expect(await issuesOf([{ plausible: { paths: [] } }])).toEqual(['plugins[0].plausible.paths'])
  })
  test('two dialects claiming one path', async () => {
    const issues = await issuesOf([{ plausible: { paths: ['/t/event'] } }, { './test/fixtures/test-dialect.ts': {} }])
    expect(issues).toEqual(['plugins[1]'])
  })
})
