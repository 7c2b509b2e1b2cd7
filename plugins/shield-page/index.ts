// Implements spec/plausible-dialect.md §7: the site's page blocklist (`site_page_blocklist`).

import { Type } from '@sinclair/typebox'
import { definePlugin } from '../../core/plugin.ts'
import { compileRuleSet, ruleSetCache } from '../../core/wildcard.ts'

const NO_RULES: readonly string[] = Object.freeze([])

export default definePlugin({
  name: 'shield-page',
  stage: 'shield',
  summary: "Drops events whose pathname matches one of the site's page rules (`*`/`**` wildcards).",
  drops: {
    site_page_blocklist: "the pathname matches a rule in the site's shields.page or in this plugin's paths",
  },
  options: Type.Object(
    {
      paths: Type.Array(Type.String({ minLength: 1 }), {
        default: [],
        description: "Path patterns blocked for every site, on top of each site's shields.page.",
        examples: [['/admin/**', '/preview/*']],
      }),
      wildcards: Type.Union([Type.Literal('plausible'), Type.Literal('segments')], {
        default: 'plausible',
        description:
          'plausible: `*` and `**` both match any characters, `/` included (as Plausible does); ' +
          'segments: `*` stays within one path segment and `**` crosses segments.',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    // Configured sites compile here; any other list once, on first use.
    const rulesFor = ruleSetCache((list) => compileRuleSet([...options.paths, ...list], options.wildcards, '/'))
    for (const site of engine.sites.list()) rulesFor(site.shields.page)
    return {
      run(event, ctx) {
        const rules = rulesFor(event.site?.shields?.page ?? NO_RULES)
        if (rules.empty) return undefined
        return rules.matches(event.pathname) ? ctx.drop('site_page_blocklist') : undefined
      },
    }
  },
})
