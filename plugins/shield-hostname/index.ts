// Implements spec/plausible-dialect.md §7: the site's hostname allowlist (`site_hostname_allowlist`).
//
// Like Plausible (Plausible.Shields.hostname_allowed?/2) the allowlist applies only when there are
// rules: a site without any accepts every hostname. Two deviations, both because hostnames arrive
// with one `www.` removed (§3) and DNS names ignore case: the rule and the hostname are compared
// lower-cased, and a rule's own leading `www.` is removed too (upstream such a rule never matches).

import { Type } from '@sinclair/typebox'
import { definePlugin } from '../../core/plugin.ts'
import { compileRuleSet, ruleSetCache } from '../../core/wildcard.ts'

const NO_RULES: readonly string[] = Object.freeze([])

/** Lower-cased, one leading `www.` removed, as hostnames are compared. */
function normalizeHostname(hostname: string): string {
  const lower = hostname.trim().toLowerCase()
  return lower.startsWith('www.') ? lower.slice(4) : lower
}

export default definePlugin({
  name: 'shield-hostname',
  stage: 'shield',
  summary: "Drops events whose hostname matches none of the site's allowed hostname patterns, when it has any.",
  drops: {
    site_hostname_allowlist:
      "the site has hostname rules (shields.hostname or this plugin's hostnames) and the event's hostname matches none",
  },
  options: Type.Object(
    {
      hostnames: Type.Array(Type.String({ minLength: 1 }), {
        default: [],
        description:
          "Hostname patterns allowed for every site, added to each site's shields.hostname. When the combined " +
          'list is empty the allowlist is off; when not, events from other hostnames are dropped.',
        examples: [['example.com', '*.example.com']],
      }),
      wildcards: Type.Union([Type.Literal('plausible'), Type.Literal('segments')], {
        default: 'plausible',
        description:
          'plausible: `*` and `**` both match any characters, dots included (as Plausible does); ' +
          'segments: `*` stays within one label and `**` crosses labels.',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    const rulesFor = ruleSetCache((list) =>
      compileRuleSet([...options.hostnames, ...list].map(normalizeHostname), options.wildcards, '.'),
    )
    for (const site of engine.sites.list()) rulesFor(site.shields.hostname)
    return {
      run(event, ctx) {
        const rules = rulesFor(event.site?.shields?.hostname ?? NO_RULES)
        if (rules.empty) return undefined
        return rules.matches(normalizeHostname(event.hostname)) ? undefined : ctx.drop('site_hostname_allowlist')
      },
    }
  },
})
