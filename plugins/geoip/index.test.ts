// Behaviour of geoip from spec/plausible-dialect.md §8 (geolocation) and §6 (anonymous_vpn_ip),
// on MaxMind's public test databases (known answers in their README) and the shipped database.

import { describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { ConfigError } from '../../core/plugin.ts'
import { contextFor, makeEvent, runPlugin, setupPlugin } from '../../core/testing.ts'
import { geoOf, UNKNOWN_GEO } from './database.ts'
import plugin from './index.ts'

const DATA = resolve(import.meta.dir, '../../../shared/data/maxmind-test')
const HAS_DATA = existsSync(join(DATA, 'GeoLite2-City-Test.mmdb'))
if (!HAS_DATA) console.warn(`geoip tests on MaxMind's test databases are SKIPPED: ${DATA} is missing`)
const CITY = join(DATA, 'GeoLite2-City-Test.mmdb')
const COUNTRY = join(DATA, 'GeoLite2-Country-Test.mmdb')

async function geo(clientIp: string, options: unknown, headers: Record<string, string> = {}, peerIp = '127.0.0.1') {
  const { event } = await runPlugin(plugin, options, { clientIp, peerIp, headers: new Headers(headers) })
  return [event.country_code, event.subdivision1_code, event.subdivision2_code, event.city_geoname_id]
}

describe.skipIf(!HAS_DATA)('a MaxMind City database', () => {
  test.each([
    ['81.2.69.142', ['GB', 'GB-ENG', '', 2643743]],
    // The country record, not registered_country (FR).
    ['2.125.160.216', ['GB', 'GB-ENG', 'GB-WBK', 2655045]],
    ['216.160.83.56', ['US', 'US-WA', '', 5803556]],
    ['2001:218:1:1:1:1:1:1', ['JP', '', '', 0]],
    ['::ffff:81.2.69.142', ['GB', 'GB-ENG', '', 2643743]],
  ])('%s', async (ip, expected) => {
    expect(await geo(ip, { database: CITY })).toEqual(expected)
  })

  test.each([['127.0.0.1'], ['10.0.0.1'], [''], ['not-an-ip'], ['999.1.1.1'], ['::1']])(
    'an address it does not know (%p) is unknown',
    async (ip) => {
      expect(await geo(ip, { database: CITY })).toEqual(['', '', '', 0])
    },
  )

  test('anonymous_vpn_ip from a trusted proxy: country A1 and no lookup', async () => {
    const headers = { 'x-plausible-ip-type': 'anonymous_vpn_ip' }
    expect(await geo('81.2.69.142', { database: CITY }, headers)).toEqual(['A1', '', '', 0])
  })

  test('anonymous_vpn_ip from an untrusted peer is ignored', async () => {
    const headers = { 'x-plausible-ip-type': 'anonymous_vpn_ip' }
    expect(await geo('81.2.69.142', { database: CITY }, headers, '198.51.100.20')).toEqual([
      'GB',
      'GB-ENG',
      '',
      2643743,
    ])
  })

  test('anonymous_vpn_ip for a trusted sender is about the backend: the visitor address is looked up', async () => {
    const { event } = await runPlugin(
      plugin,
      { database: CITY },
      {
        clientIp: '81.2.69.142',
        peerIp: '127.0.0.1',
        headers: new Headers({ 'x-plausible-ip-type': 'anonymous_vpn_ip' }),
        trustedSender: true,
      },
    )
    expect(event.country_code).toBe('GB')
  })

  test('repeated lookups of one address agree (cache)', async () => {
    const instance = await setupPlugin(plugin, { database: CITY })
    const ctx = contextFor(plugin)
    for (let i = 0; i < 3; i++) {
      const event = makeEvent({ clientIp: '2.125.160.216' })
      instance.run?.(event, ctx)
      expect(event.subdivision2_code).toBe('GB-WBK')
    }
  })
})

describe.skipIf(!HAS_DATA)('a MaxMind Country database', () => {
  test('gives the country only', async () => {
    expect(await geo('81.2.69.142', { database: COUNTRY })).toEqual(['GB', '', '', 0])
  })

  test('a gzipped copy reads the same', async () => {
    const gz = join(mkdtempSync(join(tmpdir(), 'geoip-')), 'country.mmdb.gz')
    writeFileSync(gz, Bun.gzipSync(await Bun.file(COUNTRY).bytes()))
    expect(await geo('81.2.69.142', { database: gz })).toEqual(['GB', '', '', 0])
  })
})

describe('the shipped country database (default)', () => {
  test('finds a well-known public address', async () => {
    expect(await geo('8.8.8.8', {})).toEqual(['US', '', '', 0])
  })

  test('knows no private address', async () => {
    expect(await geo('192.168.1.1', {})).toEqual(['', '', '', 0])
  })
})

describe('the database option', () => {
  test('a missing file is a ConfigError on database', async () => {
    const error = await setupPlugin(plugin, { database: '/nonexistent/GeoLite2-City.mmdb' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).path).toBe('database')
    expect((error as ConfigError).message).toBe('file not found: /nonexistent/GeoLite2-City.mmdb')
  })

  test('a file that is no MMDB is a ConfigError on database', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'geoip-')), 'junk.mmdb')
    writeFileSync(path, 'not a database')
    const error = await setupPlugin(plugin, { database: path }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).path).toBe('database')
  })
})

describe('records', () => {
  test.each([['ZZ'], ['XX'], ['T1']])('country %s counts as unknown', (code) => {
    expect(geoOf({ country: { iso_code: code }, city: { geoname_id: 1 } }, undefined)).toEqual(UNKNOWN_GEO)
  })

  test('registered_country alone gives no country', () => {
    expect(geoOf({ registered_country: { iso_code: 'FR' } }, undefined)).toEqual(UNKNOWN_GEO)
  })

  test("ip-location-db's flat record", () => {
    expect(geoOf({ country_code: 'SE' }, undefined)).toEqual({ ...UNKNOWN_GEO, country_code: 'SE' })
  })

  test('city districts map to their city with cityOverrides', async () => {
    const { CITY_OVERRIDES } = await import('./city-overrides.ts')
    const soho = { country: { iso_code: 'GB' }, city: { geoname_id: 6545173 } }
    expect(geoOf(soho, CITY_OVERRIDES).city_geoname_id).toBe(2643743)
    expect(geoOf(soho, undefined).city_geoname_id).toBe(6545173)
  })

  test.each([[null], ['text'], [{ country: 'GB' }], [{ country: { iso_code: 'GBR' } }], [{ country_code: 7 }]])(
    'an odd record (%#) is unknown',
    (record) => {
      expect(geoOf(record, undefined)).toEqual(UNKNOWN_GEO)
    },
  )
})

describe.skipIf(!HAS_DATA)('reload', () => {
  test('re-reads the database file', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'geoip-')), 'db.mmdb')
    writeFileSync(path, await Bun.file(COUNTRY).bytes())
    const instance = await setupPlugin(plugin, { database: path })
    const ctx = contextFor(plugin)
    const lookup = () => {
      const event = makeEvent({ clientIp: '2.125.160.216' })
      instance.run?.(event, ctx)
      return event.subdivision2_code
    }
    expect(lookup()).toBe('')
    writeFileSync(path, await Bun.file(CITY).bytes())
    await instance.reload?.()
    expect(lookup()).toBe('GB-WBK')
  })

  test('a file that went bad throws and the old database stays', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'geoip-')), 'db.mmdb')
    writeFileSync(path, await Bun.file(CITY).bytes())
    const instance = await setupPlugin(plugin, { database: path })
    writeFileSync(path, 'broken')
    expect(() => instance.reload?.()).toThrow(ConfigError)
    const event = makeEvent({ clientIp: '81.2.69.142' })
    instance.run?.(event, contextFor(plugin))
    expect(event.country_code).toBe('GB')
  })
})
