// Built-in sinks by name, loaded lazily so a sink's client library loads only when a config names it.

import type { SinkDefinition } from '../core/sink.ts'

type Loader = () => Promise<{ default: SinkDefinition }>

export const builtinSinks: Record<string, Loader> = {
  stdout: () => import('./stdout/index.ts'),
  memory: () => import('./memory/index.ts'),
  clickhouse: () => import('./clickhouse/index.ts'),
  chdb: () => import('./chdb/index.ts'),
  file: () => import('./file/index.ts'),
  webhook: () => import('./webhook/index.ts'),
}
