import { describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import type { Shields } from '../../core/sites.ts'
import { runPlugin, testServices } from '../../core/testing.ts'
import { compileWildcard, type WildcardMode } from '../../core/wildcard.ts'
import plugin from './index.ts'

/** Runs shield-page for one event of a configured site with the given page rules. */
async function verdict(options: object, page: string[], pathname: string) {
  const services = testServices({
    sites: [{ id: 1, domain: 'example.com', shields: { page } satisfies Partial<Shields> }],
  })
  const site = services.sites.byDomain('example.com')
  return (await runPlugin(plugin, options, { site, pathname }, services)).dropped
}

test('lets an event through when its pathname matches no page rule', async () => {
  expect(await verdict({}, ['/admin/**'], '/blog/post')).toBeUndefined()
})

test("drops site_page_blocklist when the pathname matches one of the site's page rules", async () => {
  expect(await verdict({}, ['/admin/**'], '/admin/users/1')).toBe('site_page_blocklist')
})

test('drops site_page_blocklist when the pathname matches an engine-wide path, also for sites without rules', async () => {
  const services = testServices({ sites: 'any' })
  const site = services.sites.byDomain('anything.example')
  const result = await runPlugin(plugin, { paths: ['/wp-login.php'] }, { site, pathname: '/wp-login.php' }, services)
  expect(result.dropped).toBe('site_page_blocklist')
})

test('lets everything through for a site without rules', async () => {
  expect(await verdict({}, [], '/admin')).toBeUndefined()
})

test('never throws on an event without a site', async () => {
  const result = await runPlugin(plugin, { paths: ['/x'] }, { pathname: '/x' })
  expect(result.dropped).toBe('site_page_blocklist')
  expect((await runPlugin(plugin, {}, { pathname: '' })).dropped).toBeUndefined()
})

// Cases from Plausible's test/plausible/shields/page_test.exs ("page pattern matching"), where `*`
// and `**` are the same rule, plus the segments mode, which is ours.
describe.each<[WildcardMode, string, string, boolean]>([
  ['plausible', '/test', '/test', true],
  ['plausible', '/test', '/test/hello', false],
  ['plausible', '/test', 'test', false],
  ['plausible', '/test/*', '/test', false],
  ['plausible', '/test/*', '/test/', true],
  ['plausible', '/test/*', '/test/hello', true],
  ['plausible', '/test/*', '/testing', false],
  ['plausible', '/test/*', '/test/a/b', true],
  ['plausible', '/test/**', '/test/a/b', true],
  ['plausible', '/blog/*/edit', '/blog/a/b/edit', true],
  ['plausible', '/*.php', '/wp/login.php', true],
  ['plausible', '/Admin', '/admin', false],
  ['plausible', '/a|b+[0-9]', '/a|b+[0-9]', true],
  ['plausible', '/a.c', '/abc', false],
  ['segments', '/test/*', '/test/hello', true],
  ['segments', '/test/*', '/test/', true],
  ['segments', '/test/*', '/test/a/b', false],
  ['segments', '/test/**', '/test/a/b', true],
  ['segments', '/blog/*/edit', '/blog/a/edit', true],
  ['segments', '/blog/*/edit', '/blog/a/b/edit', false],
  ['segments', '/blog/**/edit', '/blog/a/b/edit', true],
  ['segments', '/*/x/**', '/a/x/b/c', true],
  ['segments', '/*/x/**', '/a/b/x/c', false],
])('wildcards: %s, rule %s', (wildcards, rule, pathname, blocked) => {
  test(`${blocked ? 'blocks' : 'lets through'} ${pathname}`, async () => {
    expect(await verdict({ wildcards }, [rule], pathname)).toBe(blocked ? 'site_page_blocklist' : undefined)
  })
})

describe('wildcard matcher worst cases', () => {
  // Patterns whose regex translation backtracks catastrophically on a long non-matching input.
  const long = `/${'a'.repeat(200_000)}`
  test.each<[WildcardMode, string]>([
    ['plausible', '/*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b'],
    ['plausible', '/**a**a**a**a**a**a**a**a**b'],
    ['segments', '/*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b'],
    ['segments', '/**a*a**a*a**a*a**a*a**b'],
  ])('%s %s stays linear on 200,000 characters', (mode, pattern) => {
    const matcher = compileWildcard(pattern, mode, '/')
    const started = performance.now()
    expect(matcher(long)).toBe(false)
    expect(matcher(`${long}b`)).toBe(true)
    expect(performance.now() - started).toBeLessThan(500)
  })
})

describe('wildcard matcher agrees with the regex translation', () => {
  // The reference: Plausible's translation (escape, then `**` and `*` → `.*`), and for segments
  // `**` → `.*`, `*` → `[^/]*`. Only safe here because inputs are tiny.
  const reference = (pattern: string, mode: WildcardMode) => {
    const source = pattern
      .split(/(\*+)/)
      .map((part) => {
        if (!part.startsWith('*')) return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
        return mode === 'segments' && part.length === 1 ? '[^/]*' : '[\\s\\S]*'
      })
      .join('')
    return new RegExp(`^${source}$`)
  }
  test.each<WildcardMode>(['plausible', 'segments'])('%s', (mode) => {
    const pattern = fc.stringMatching(/^[ab/*.]{0,8}$/)
    const input = fc.stringMatching(/^[ab/.]{0,12}$/)
    fc.assert(
      fc.property(pattern, input, (p, s) => compileWildcard(p, mode, '/')(s) === reference(p, mode).test(s)),
      { numRuns: 5000 },
    )
  })
})
