// Reading an MMDB file into the geo columns (spec/plausible-dialect.md §8, geolocation).

import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { Reader, type Response } from 'maxmind'
import { ConfigError } from '../../core/plugin.ts'

/**
 * The record shapes we read: MaxMind GeoIP2/GeoLite2 City and Country (and DB-IP's, which copy them),
 * and ip-location-db's flat `{ country_code }`.
 */
export interface GeoRecord {
  country?: { iso_code?: string }
  country_code?: string
  subdivisions?: { iso_code?: string }[]
  city?: { geoname_id?: number }
}

/** The four columns a lookup fills. */
export interface Geo {
  readonly country_code: string
  readonly subdivision1_code: string
  readonly subdivision2_code: string
  readonly city_geoname_id: number
}

export const UNKNOWN_GEO: Geo = Object.freeze({
  country_code: '',
  subdivision1_code: '',
  subdivision2_code: '',
  city_geoname_id: 0,
})

/** Plausible's "no country" codes: worldwide, disputed territory, Tor exit node. */
const UNKNOWN_COUNTRIES = new Set(['ZZ', 'XX', 'T1'])

/** The country database shipped through npm (`@ip-location-db/geo-whois-asn-country-mmdb`), IPv4 and IPv6. */
export function defaultDatabasePath(): string {
  const require = createRequire(import.meta.url)
  const pkg = require.resolve('@ip-location-db/geo-whois-asn-country-mmdb/package.json')
  return join(dirname(pkg), 'geo-whois-asn-country.mmdb')
}

/**
 * Decoded records by their offset in the file, for the reader's decoder. A country database has a
 * few hundred distinct records, so nearly every lookup then decodes nothing; a city database has
 * more, hence the bound (cleared whole when full, like a generation).
 */
class RecordCache {
  private readonly records = new Map<string | number, unknown>()
  constructor(private readonly limit: number) {}
  get(offset: string | number): unknown {
    return this.records.get(offset)
  }
  set(offset: string | number, record: unknown): void {
    if (this.records.size >= this.limit) this.records.clear()
    this.records.set(offset, record)
  }
}

const RECORD_CACHE_LIMIT = 5_000

/** Loads a whole MMDB file (plain or gzipped) into memory; lookups are then synchronous. */
export function openDatabase(path: string): Reader<Response> {
  if (!existsSync(path)) throw new ConfigError('database', `file not found: ${path}`)
  let bytes: Buffer
  try {
    bytes = readFileSync(path)
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = gunzipSync(bytes)
    return new Reader<Response>(bytes, { cache: new RecordCache(RECORD_CACHE_LIMIT) })
  } catch (error) {
    throw new ConfigError('database', `not a readable MaxMind database: ${path} (${(error as Error).message})`)
  }
}

function isCountryCode(code: string): boolean {
  if (code.length !== 2) return false
  const a = code.charCodeAt(0)
  const b = code.charCodeAt(1)
  return a >= 65 && a <= 90 && b >= 65 && b <= 90
}

/**
 * The columns for one record. The `country` record is read, never `registered_country` (where the
 * network is registered, not where the client is). Subdivisions and city count only with a country.
 */
export function geoOf(found: unknown, overrides: ReadonlyMap<number, number> | undefined): Geo {
  if (found === null || typeof found !== 'object') return UNKNOWN_GEO
  // The file's record shape is only known at run time; every field read below is checked.
  const record = found as GeoRecord
  const raw = record.country?.iso_code ?? record.country_code
  if (typeof raw !== 'string') return UNKNOWN_GEO
  const country = raw.toUpperCase()
  if (!isCountryCode(country) || UNKNOWN_COUNTRIES.has(country)) return UNKNOWN_GEO
  const subdivisions = record.subdivisions
  const first = subdivisions?.[0]?.iso_code
  const second = subdivisions?.[1]?.iso_code
  let city = record.city?.geoname_id
  if (typeof city !== 'number' || !Number.isInteger(city) || city < 0) city = 0
  if (overrides !== undefined && city !== 0) city = overrides.get(city) ?? city
  return Object.freeze({
    country_code: country,
    subdivision1_code: typeof first === 'string' && first !== '' ? `${country}-${first}` : '',
    subdivision2_code: typeof second === 'string' && second !== '' ? `${country}-${second}` : '',
    city_geoname_id: city,
  })
}
