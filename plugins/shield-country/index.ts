// Implements spec/plausible-dialect.md §7: the site's country blocklist (`site_country_blocklist`).
//
// Runs after geoip, which leaves `country_code` '' when the country is unknown. Plausible offers
// `ZZ` as the rule for unknown countries (Plausible.Shield.CountryRule) but its geolocation turns
// ZZ into nil and skips the check, so the rule never fires upstream; here `ZZ` blocks events whose
// country is unknown, as the site config documents. Codes compare upper-cased, like upstream.

import { Type } from '@sinclair/typebox'
import { ConfigError, definePlugin } from '../../core/plugin.ts'

const NO_RULES: readonly string[] = Object.freeze([])
const UNKNOWN_COUNTRY = 'ZZ'
const EMPTY_SET: ReadonlySet<string> = new Set()

/** ISO alpha-2 and the two-character pseudo codes geo databases use (`A1`, `T1`, `ZZ`). */
function isCountryCode(code: string): boolean {
  return /^[A-Za-z][A-Za-z0-9]$/.test(code)
}

export default definePlugin({
  name: 'shield-country',
  stage: 'shield',
  summary: "Drops events from countries on the site's country blocklist; `ZZ` stands for an unknown country.",
  drops: {
    site_country_blocklist:
      "the event's country (ZZ when unknown) is in the site's shields.country or in this plugin's countries",
  },
  options: Type.Object(
    {
      countries: Type.Array(Type.String({ minLength: 2, maxLength: 2 }), {
        default: [],
        description: "Country codes blocked for every site, on top of each site's shields.country; ZZ = unknown.",
        examples: [['CN', 'ZZ']],
      }),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    options.countries.forEach((code, i) => {
      if (!isCountryCode(code)) throw new ConfigError(`countries[${i}]`, `not a country code: ${JSON.stringify(code)}`)
    })
    let strict = true
    const compiled = new WeakMap<readonly string[], ReadonlySet<string>>()
    const rulesFor = (list: readonly string[], domain: string): ReadonlySet<string> => {
      let rules = compiled.get(list)
      if (!rules) {
        const codes = new Set<string>()
        for (const code of [...options.countries, ...list]) {
          if (isCountryCode(code)) codes.add(code.toUpperCase())
          else if (strict)
            throw new ConfigError(
              '',
              `site ${domain}: shields.country[${list.indexOf(code)}] is not a country code: ${JSON.stringify(code)}`,
            )
          else
            engine.logger.throttled(`shield-country:${domain}:${code}`, 'warn', 'Ignoring an invalid country rule.', {
              domain,
              code,
            })
        }
        rules = codes.size === 0 ? EMPTY_SET : codes
        compiled.set(list, rules)
      }
      return rules
    }
    for (const site of engine.sites.list()) rulesFor(site.shields.country, site.domain)
    strict = false
    return {
      run(event, ctx) {
        const site = event.site
        const rules = rulesFor(site?.shields?.country ?? NO_RULES, site?.domain ?? '')
        if (rules.size === 0) return undefined
        const raw = event.country_code
        // '' is the model's unknown; two NULs are how the column stores it, should a plugin copy that.
        const code = raw === '' || raw === '\0\0' ? UNKNOWN_COUNTRY : raw
        if (rules.has(code) || rules.has(code.toUpperCase())) return ctx.drop('site_country_blocklist')
        return undefined
      },
    }
  },
})
