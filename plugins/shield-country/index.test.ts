import { expect, test } from 'bun:test'
import { ConfigError } from '../../core/plugin.ts'
import { runPlugin, setupPlugin, testServices } from '../../core/testing.ts'
import plugin from './index.ts'

/** Runs shield-country for one event of a configured site with the given country rules. */
async function verdict(options: object, country: string[], country_code: string) {
  const services = testServices({ sites: [{ id: 1, domain: 'example.com', shields: { country } }] })
  const site = services.sites.byDomain('example.com')
  return (await runPlugin(plugin, options, { site, country_code }, services)).dropped
}

test('lets an event through when its country is not blocked', async () => {
  expect(await verdict({}, ['CN'], 'DE')).toBeUndefined()
})

test("drops site_country_blocklist when the event's country is on the site's list", async () => {
  expect(await verdict({}, ['CN'], 'CN')).toBe('site_country_blocklist')
})

test('drops site_country_blocklist when the country is unknown and the list has ZZ', async () => {
  expect(await verdict({}, ['ZZ'], '')).toBe('site_country_blocklist')
})

test('drops site_country_blocklist for an engine-wide country, also for sites derived under sites: any', async () => {
  const services = testServices({ sites: 'any' })
  const site = services.sites.byDomain('other.example')
  const result = await runPlugin(plugin, { countries: ['RU'] }, { site, country_code: 'RU' }, services)
  expect(result.dropped).toBe('site_country_blocklist')
})

test.each<[string[], string, boolean]>([
  [['ZZ'], 'DE', false],
  [['CN'], '', false],
  [['cn'], 'CN', true],
  [['CN'], 'cn', true],
  [['A1'], 'A1', true],
  [['ZZ'], '\0\0', true],
  [[], 'CN', false],
])('rules %p, country %p → blocked %p', async (rules, code, blocked) => {
  expect(await verdict({}, rules, code)).toBe(blocked ? 'site_country_blocklist' : undefined)
})

test('never throws on an event without a site', async () => {
  expect((await runPlugin(plugin, {}, { country_code: 'CN' })).dropped).toBeUndefined()
})

test('rejects an invalid engine-wide country code as a config error naming its place', async () => {
  const attempt = setupPlugin(plugin, { countries: ['DE', '1x'] })
  await expect(attempt).rejects.toThrow(ConfigError)
  await expect(attempt).rejects.toMatchObject({ path: 'countries[1]' })
})

test("rejects an invalid code in a configured site's shields at start", async () => {
  const services = testServices({ sites: [{ id: 1, domain: 'example.com', shields: { country: ['Germany'] } }] })
  await expect(setupPlugin(plugin, {}, services)).rejects.toThrow('site example.com: shields.country[0]')
})
