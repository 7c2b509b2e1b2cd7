// Built-in plugins by name. The lazy import loads a plugin's code (and its libraries) only when a
// config names it. Adding a plugin is one line here; a user's own plugin is a path in the config.

import type { PluginDefinition } from '../core/plugin.ts'

type Loader = () => Promise<{ default: PluginDefinition }>

export const builtinPlugins: Record<string, Loader> = {
  sessions: () => import('./sessions/index.ts'),
}
