// The embedded defaults: what runs with no config file at all (design.md "The config file"): both
// dialects, every standard plugin in its conventional order, any site accepted, the stdout sink.

import { builtinPlugins } from '../plugins/registry.ts'
import type { RawConfig } from './config.ts'

/**
 * The standard plugins in the order the defaults run them. Within a stage this order matters:
 * `user-id` needs the client IP and user agent; `sessions` needs the referrer's attribution.
 */
export const STANDARD_PLUGINS = [
  'plausible',
  'lynkow',
  'client-ip',
  'user-agent',
  'geoip',
  'user-id',
  'bots',
  'ip-type',
  'spam-referrers',
  // First in its stage: Plausible throttles before any other verdict, so events dropped later still count.
  'rate-limit',
  'shield-ip',
  'shield-country',
  'shield-page',
  'shield-hostname',
  'referrer',
  'props',
  // After referrer (the stored referrer is redacted) and before sessions (session rows inherit it).
  'redact',
  'sessions',
]

export function embeddedDefaults(): RawConfig {
  return {
    server: { port: Number(process.env.PORT ?? 8000) },
    sites: 'any',
    plugins: STANDARD_PLUGINS.filter((name) => name in builtinPlugins),
    sinks: ['stdout'],
  } as RawConfig
}
