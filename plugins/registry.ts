// Built-in plugins by name. The lazy import loads a plugin's code (and its libraries) only when a
// config names it. Adding a plugin is one line here; a user's own plugin is a path in the config.

import type { PluginDefinition } from '../core/plugin.ts'

type Loader = () => Promise<{ default: PluginDefinition }>

export const builtinPlugins: Record<string, Loader> = {
  plausible: () => import('./plausible/index.ts'),
  props: () => import('./props/index.ts'),
  lynkow: () => import('./lynkow/index.ts'),
  'client-ip': () => import('./client-ip/index.ts'),
  'user-agent': () => import('./user-agent/index.ts'),
  geoip: () => import('./geoip/index.ts'),
  'user-id': () => import('./user-id/index.ts'),
  bots: () => import('./bots/index.ts'),
  'ip-type': () => import('./ip-type/index.ts'),
  'spam-referrers': () => import('./spam-referrers/index.ts'),
  'shield-ip': () => import('./shield-ip/index.ts'),
  'shield-country': () => import('./shield-country/index.ts'),
  'shield-page': () => import('./shield-page/index.ts'),
  'shield-hostname': () => import('./shield-hostname/index.ts'),
  'rate-limit': () => import('./rate-limit/index.ts'),
  referrer: () => import('./referrer/index.ts'),
  redact: () => import('./redact/index.ts'),
  sessions: () => import('./sessions/index.ts'),
}
