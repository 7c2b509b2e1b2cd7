// The bots plugin: spec/plausible-dialect.md §8 (known bots, crawlers and headless browsers → `bot`).

import { Type } from '@sinclair/typebox'
import { createIsbotFromList, list as isbotList } from 'isbot'
import { BoundedCache } from '../../core/cache.ts'
import { ConfigError, definePlugin } from '../../core/plugin.ts'

/**
 * User agents that name nothing. isbot also flags user agents by their *shape* (a single word, a bare
 * `Mozilla/5.0`, a long run without spaces, empty parentheses…); Plausible recognises bots only by
 * known names and stores such strings, and server-side senders rely on that (spec §8). Every isbot
 * pattern that matches one of these probes is such a shape rule and is left out. Deriving the set
 * from probes, not from pattern text, keeps it right when isbot rewords its patterns.
 */
const NAMELESS_PROBES = [
  'Mozilla',
  'Mozilla/5.0',
  'Mozilla/5.0 ()',
  'Mozilla/5.0 (compatible)',
  'Mozilla/5.0 Gecko',
  'unknown UA',
  'a'.repeat(64),
  '1',
  'foo/bar',
  '(',
  ';',
  'a; b;',
]

/** isbot's patterns minus its shape rules (see NAMELESS_PROBES). */
export function namedBotPatterns(): string[] {
  return isbotList.filter((source) => {
    const pattern = new RegExp(source, 'i')
    return !NAMELESS_PROBES.some((probe) => pattern.test(probe))
  })
}

export default definePlugin({
  name: 'bots',
  stage: 'classify',
  summary: 'Drops events from known bots, crawlers and headless browsers; an empty or unknown user agent is no bot.',
  drops: { bot: 'the user agent names a known bot or crawler, or is headless Chrome' },
  options: Type.Object(
    {
      patterns: Type.Array(Type.String(), {
        default: [],
        description: 'Extra regular expressions (case-insensitive) whose match marks a user agent as a bot.',
        examples: [['^MyMonitor/', 'internal-healthcheck']],
      }),
      maxLength: Type.Integer({
        minimum: 64,
        maximum: 8192,
        default: 512,
        description: 'Characters of the user agent that are checked and used as cache key.',
      }),
      cacheSize: Type.Integer({
        minimum: 0,
        default: 20_000,
        description: 'Distinct user agents whose verdict is kept (0 = no cache).',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options) {
    options.patterns.forEach((source, i) => {
      try {
        new RegExp(source, 'i')
      } catch (error) {
        throw new ConfigError(`patterns[${i}]`, `not a regular expression: ${(error as Error).message}`)
      }
    })
    const isBot = createIsbotFromList([...namedBotPatterns(), ...options.patterns])
    const maxLength = options.maxLength
    const useCache = options.cacheSize > 0
    const cache = new BoundedCache<boolean>(options.cacheSize)

    return {
      run(event, ctx) {
        // A trusted sender (a backend with a site key) vouches for its visitor; the user agent it
        // forwards may well be its own HTTP client's, which names no visitor and must not drop the event.
        if (event.trustedSender) return undefined
        const raw = event.userAgent
        // A missing user agent is not a bot: upstream stores it (spec §8).
        if (raw === '') return undefined
        const ua = raw.length > maxLength ? raw.slice(0, maxLength) : raw
        let bot = useCache ? cache.get(ua) : undefined
        if (bot === undefined) {
          // isbot already knows `HeadlessChrome`; the explicit test keeps that drop independent of its list.
          bot = ua.includes('HeadlessChrome') || isBot(ua)
          if (useCache) cache.set(ua, bot)
        }
        return bot ? ctx.drop('bot') : undefined
      },
      close() {
        cache.clear()
      },
    }
  },
})
