// The geoip plugin: spec/plausible-dialect.md §8 (geolocation) and §6 (`anonymous_vpn_ip` → `A1`).

import { Type } from '@sinclair/typebox'
import { BoundedCache } from '../../core/cache.ts'
import { normalizeIp } from '../../core/ip.ts'
import { definePlugin } from '../../core/plugin.ts'
import { compileRanges, compileTrust, peerTrusted } from '../../core/trust.ts'
import { CITY_OVERRIDES } from './city-overrides.ts'
import { defaultDatabasePath, type Geo, geoOf, openDatabase, UNKNOWN_GEO } from './database.ts'

const IP_TYPE_HEADER = 'x-plausible-ip-type'

/**
 * Addresses that are nobody's location (RFC 6890 special-purpose: private, loopback, link-local,
 * shared CGNAT, "this network", unspecified). They are never looked up: some free databases place
 * them in a country (the shipped one has 192.168.1.1 in AU), which would misfile local traffic.
 */
const NOT_LOCATED = ['loopback', 'private', '0.0.0.0/8', '100.64.0.0/10', '::/128']
/** The "anonymous proxy" code MaxMind used to give such addresses; Plausible stores it for VPN users. */
const ANONYMOUS_VPN: Geo = Object.freeze({
  country_code: 'A1',
  subdivision1_code: '',
  subdivision2_code: '',
  city_geoname_id: 0,
})

export default definePlugin({
  name: 'geoip',
  stage: 'identify',
  summary:
    'Fills country, subdivisions and city from an MMDB file (MaxMind City/Country, or the shipped country database).',
  options: Type.Object(
    {
      database: Type.Optional(
        Type.String({
          description:
            'Path of an MMDB file (plain or gzipped): MaxMind/DB-IP City or Country, or ip-location-db. Default: the country database shipped with the engine.',
          examples: ['./GeoLite2-City.mmdb'],
        }),
      ),
      cityOverrides: Type.Boolean({
        default: true,
        description: "Map city districts to their city (Plausible's table: Soho → London, …).",
      }),
      trustedProxies: Type.Optional(
        Type.Array(Type.String(), {
          description:
            'Socket peers whose `x-plausible-ip-type: anonymous_vpn_ip` is believed: CIDR ranges, single addresses, `loopback`, `private`. Default: `server.trustedProxies`.',
          examples: [['loopback', '10.0.0.0/8']],
        }),
      ),
      cacheSize: Type.Integer({
        minimum: 0,
        default: 20_000,
        description: 'Distinct client addresses whose lookup is kept (0 = no cache).',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    const path = options.database === undefined ? defaultDatabasePath() : engine.resolvePath(options.database)
    let reader = openDatabase(path)
    const overrides = options.cityOverrides ? CITY_OVERRIDES : undefined
    // Only a trusted proxy may say an address is a VPN's (see ip-type for why).
    const trust = compileTrust(options.trustedProxies ?? engine.server.trustedProxies, 'trustedProxies')
    const useCache = options.cacheSize > 0
    const cache = new BoundedCache<Geo>(options.cacheSize)
    const scratch = new Uint16Array(8)
    const notLocated = compileRanges(NOT_LOCATED, 'database')

    // The reader hands out one object per record (RecordCache): its columns are worked out once.
    let geoOfRecord = new WeakMap<object, Geo>()
    const columnsOf = (record: unknown): Geo => {
      if (record === null || typeof record !== 'object') return geoOf(record, overrides)
      let geo = geoOfRecord.get(record)
      if (geo === undefined) {
        geo = geoOf(record, overrides)
        geoOfRecord.set(record, geo)
      }
      return geo
    }

    const lookup = (address: string): Geo => {
      // client-ip normalises already; this covers a config without it (raw `::ffff:` socket peers).
      const ip = normalizeIp(address, scratch)
      if (ip === '' || notLocated(ip)) return UNKNOWN_GEO
      try {
        return columnsOf(reader.get(ip))
      } catch {
        return UNKNOWN_GEO
      }
    }

    return {
      run(event) {
        let geo: Geo | undefined
        // For a trusted sender (a backend with a site key) the proxy classified the backend's own
        // address, not the visitor's: the forwarded visitor address is looked up instead.
        if (
          event.headers.get(IP_TYPE_HEADER) === 'anonymous_vpn_ip' &&
          !event.trustedSender &&
          peerTrusted(trust, event)
        ) {
          geo = ANONYMOUS_VPN
        } else {
          const address = event.clientIp
          geo = useCache ? cache.get(address) : undefined
          if (geo === undefined) {
            geo = lookup(address)
            if (useCache) cache.set(address, geo)
          }
        }
        event.country_code = geo.country_code
        event.subdivision1_code = geo.subdivision1_code
        event.subdivision2_code = geo.subdivision2_code
        event.city_geoname_id = geo.city_geoname_id
        return undefined
      },
      reload() {
        // A refreshed database file (a monthly GeoLite2 download, say) takes effect on SIGHUP. A file
        // that cannot be read throws here; the engine logs it and this instance keeps the old one.
        reader = openDatabase(path)
        geoOfRecord = new WeakMap()
        cache.clear()
      },
      close() {
        cache.clear()
      },
    }
  },
})
