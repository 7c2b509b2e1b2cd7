// Implements spec/plausible-dialect.md §7: the site's IP blocklist (`site_ip_blocklist`).
//
// Plausible blocks exact addresses only (its rules refuse a netmask other than /32 or /128); CIDR
// ranges are our extension. The address compared is `clientIp`, as set by the client-ip plugin.

import { Type } from '@sinclair/typebox'
import { ConfigError, definePlugin } from '../../core/plugin.ts'
import { compileIpRules, type IpRuleSet } from './addresses.ts'

const NO_RULES: readonly string[] = Object.freeze([])

export default definePlugin({
  name: 'shield-ip',
  stage: 'shield',
  summary: "Drops events whose client IP is on the site's IP blocklist (addresses or CIDR ranges).",
  drops: {
    site_ip_blocklist:
      "the client IP equals an address, or lies in a range, of the site's shields.ip or this plugin's addresses",
  },
  options: Type.Object(
    {
      addresses: Type.Array(Type.String({ minLength: 1 }), {
        default: [],
        description: "Addresses and CIDR ranges blocked for every site, on top of each site's shields.ip.",
        examples: [['203.0.113.7', '198.51.100.0/24', '2001:db8::/32']],
      }),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    options.addresses.forEach((rule, i) => {
      compileIpRules([rule], () => {
        throw new ConfigError(`addresses[${i}]`, `not an IP address or CIDR range: ${JSON.stringify(rule)}`)
      })
    })
    // A configured site's bad rule stops start-up; one on a site made later (a reload, a test) is
    // skipped and logged, since run() must not throw.
    let strict = true
    const compiled = new WeakMap<readonly string[], IpRuleSet>()
    const rulesFor = (list: readonly string[], domain: string): IpRuleSet => {
      let rules = compiled.get(list)
      if (!rules) {
        rules = compileIpRules([...options.addresses, ...list], (rule) => {
          const where = `site ${domain}: shields.ip[${list.indexOf(rule)}]`
          if (strict) throw new ConfigError('', `${where} is not an IP address or CIDR range: ${JSON.stringify(rule)}`)
          engine.logger.throttled(`shield-ip:${domain}:${rule}`, 'warn', 'Ignoring an invalid IP rule.', {
            domain,
            rule,
          })
        })
        compiled.set(list, rules)
      }
      return rules
    }
    for (const site of engine.sites.list()) rulesFor(site.shields.ip, site.domain)
    strict = false
    return {
      run(event, ctx) {
        const site = event.site
        const rules = rulesFor(site?.shields?.ip ?? NO_RULES, site?.domain ?? '')
        if (rules.empty) return undefined
        return rules.matches(event.clientIp) ? ctx.drop('site_ip_blocklist') : undefined
      },
    }
  },
})
