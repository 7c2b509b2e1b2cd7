import { describe, expect, test } from 'bun:test'
import { runPlugin, testServices } from '../../core/testing.ts'
import { compileWildcard } from '../../core/wildcard.ts'
import plugin from './index.ts'

/** Runs shield-hostname for one event of a configured site with the given hostname rules. */
async function verdict(options: object, hostname: string[], eventHostname: string) {
  const services = testServices({ sites: [{ id: 1, domain: 'example.com', shields: { hostname } }] })
  const site = services.sites.byDomain('example.com')
  return (await runPlugin(plugin, options, { site, hostname: eventHostname }, services)).dropped
}

test('lets an event through when its hostname matches an allowed pattern', async () => {
  expect(await verdict({}, ['blog.example.com'], 'blog.example.com')).toBeUndefined()
})

test('drops site_hostname_allowlist when the site has hostname rules and the hostname matches none', async () => {
  expect(await verdict({}, ['blog.example.com'], 'portal.example.com')).toBe('site_hostname_allowlist')
})

test('applies no allowlist to a site without hostname rules', async () => {
  expect(await verdict({}, [], 'anything.example')).toBeUndefined()
})

test('drops site_hostname_allowlist against engine-wide hostnames for every site, also those derived under sites: any', async () => {
  const services = testServices({ sites: 'any' })
  const site = services.sites.byDomain('other.example')
  const options = { hostnames: ['*.example.com'] }
  expect((await runPlugin(plugin, options, { site, hostname: 'other.example' }, services)).dropped).toBe(
    'site_hostname_allowlist',
  )
  expect((await runPlugin(plugin, options, { site, hostname: 'a.example.com' }, services)).dropped).toBeUndefined()
})

test('combines engine-wide hostnames with the site rules', async () => {
  const options = { hostnames: ['staging.example.com'] }
  expect(await verdict(options, ['example.com'], 'staging.example.com')).toBeUndefined()
  expect(await verdict(options, ['example.com'], 'example.com')).toBeUndefined()
  expect(await verdict(options, ['example.com'], 'evil.example')).toBe('site_hostname_allowlist')
})

test('drops an event without a host, (none), when the site has rules', async () => {
  expect(await verdict({}, ['example.com'], '(none)')).toBe('site_hostname_allowlist')
})

test('never throws on an event without a site', async () => {
  expect((await runPlugin(plugin, {}, { hostname: '' })).dropped).toBeUndefined()
})

// Cases from Plausible's test/plausible/shields/hostname_test.exs ("hostname pattern matching"),
// then our deviations (case, www.) and the segments mode.
describe.each<[string, string, string, boolean]>([
  ['plausible', 'test.example.com', 'test.example.com', true],
  ['plausible', 'test.example.com', 'subdmoain.example.com', false],
  ['plausible', 'test.example.com', 'test', false],
  ['plausible', '*.example.com', 'example.com', false],
  ['plausible', '*.example.com', 'example.com.pl', false],
  ['plausible', '*.example.com', 'subdomain.example.com', true],
  ['plausible', '*example.com', 'example.com', true],
  ['plausible', '*example.com', 'example.com.pl', false],
  ['plausible', '*example.com', 'subdomain.example.com', true],
  ['plausible', '*.example.com', 'a.b.example.com', true],
  ['plausible', 'Example.COM', 'example.com', true],
  ['plausible', 'example.com', 'EXAMPLE.com', true],
  ['plausible', 'www.example.com', 'example.com', true],
  ['segments', '*.example.com', 'a.example.com', true],
  ['segments', '*.example.com', 'a.b.example.com', false],
  ['segments', '**.example.com', 'a.b.example.com', true],
])('wildcards: %s, rule %s', (wildcards, rule, hostname, allowed) => {
  test(`${allowed ? 'allows' : 'drops'} ${hostname}`, async () => {
    expect(await verdict({ wildcards }, [rule], hostname)).toBe(allowed ? undefined : 'site_hostname_allowlist')
  })
})

test('the hostname matcher stays linear on a hostile 200,000-character hostname', () => {
  const hostile = `${'a.'.repeat(100_000)}x`
  const started = performance.now()
  for (const mode of ['plausible', 'segments'] as const) {
    expect(compileWildcard('*a*a*a*a*a*a*a*a*a*a*a*a*.b', mode, '.')(hostile)).toBe(false)
  }
  expect(performance.now() - started).toBeLessThan(500)
})
