// The user-agent plugin: spec/plausible-dialect.md §8 (user agent → browser, OS, device class).

import { Type } from '@sinclair/typebox'
import UAParser from 'ua-parser-js'
import { BoundedCache } from '../../core/cache.ts'
import { definePlugin } from '../../core/plugin.ts'
import { describeAgent, UNKNOWN_AGENT, type UserAgentInfo } from './names.ts'

export default definePlugin({
  name: 'user-agent',
  stage: 'identify',
  summary: "Fills browser, OS and device class from the user agent, with Plausible's names.",
  options: Type.Object(
    {
      maxLength: Type.Integer({
        minimum: 64,
        maximum: 8192,
        default: 512,
        description:
          'Characters of the user agent that are parsed and used as cache key; the rest is ignored, so a long user agent costs no more than a short one.',
      }),
      cacheSize: Type.Integer({
        minimum: 0,
        default: 20_000,
        description: 'Distinct user agents whose parse is kept (0 = no cache).',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options) {
    const maxLength = options.maxLength
    const cache = new BoundedCache<UserAgentInfo>(options.cacheSize)
    const useCache = options.cacheSize > 0
    // One parser reused for every miss; ua-parser-js keeps no state between `setUA` calls but the text.
    const parser = new UAParser()

    const parse = (ua: string): UserAgentInfo => {
      try {
        parser.setUA(ua)
        return describeAgent(parser.getResult(), ua)
      } catch {
        // A parser bug on odd input must not cost the event: it is stored without UA fields.
        return UNKNOWN_AGENT
      }
    }

    return {
      run(event) {
        const raw = event.userAgent
        if (raw === '') return undefined
        const ua = raw.length > maxLength ? raw.slice(0, maxLength) : raw
        let info = useCache ? cache.get(ua) : undefined
        if (info === undefined) {
          info = parse(ua)
          if (useCache) cache.set(ua, info)
        }
        // Only what the parse found is written: a dialect may have filled these fields from the
        // client's own report (Lynkow's `browser`/`os`/`device_type`), used when the parse finds nothing.
        if (info.browser !== '') {
          event.browser = info.browser
          event.browser_version = info.browser_version
        }
        if (info.operating_system !== '') {
          event.operating_system = info.operating_system
          event.operating_system_version = info.operating_system_version
        }
        if (info.screen_size !== '') event.screen_size = info.screen_size
        return undefined
      },
      close() {
        cache.clear()
      },
    }
  },
})
