// The runtime adapters (issue "Runs on Deno as well as Bun"): serving and the client's socket
// address are the only things the engine needs from the runtime; everything else uses web APIs and
// `node:` modules that Bun and Deno both provide. On Bun the engine serves through Bun.serve itself
// (core/http.ts listenApp): the dialect routes on Bun's native router straight to their handlers,
// the rest through a fetch handler; other runtimes get a fetch handler through the adapter here.

export interface ServeOptions {
  port: number
  hostname: string
  /** The runtime may refuse larger bodies itself; the engine enforces the exact limit anyway. */
  maxRequestBodySize: number
  /** The engine's handler, given the TCP peer's address ('' when unknown). */
  fetch(request: Request, peer: string): Response | Promise<Response>
}

export interface Listener {
  readonly port: number
  readonly hostname: string
  /** Stops accepting new connections and lets in-flight requests finish. */
  stop(): Promise<void>
}

export type RuntimeName = 'bun' | 'deno' | 'node'

/**
 * The setting of Bun's allocator that `npm start` makes (package.json `start`; docs/performance.md,
 * "Bun's allocator"): free blocks inside pages in use given back at most every 30 s, not every
 * 100 ms. Read from the environment when the process starts, so only the launcher can set it.
 */
export const BUN_ALLOCATOR_SETTING = { name: 'MIMALLOC_PURGE_HOLES_MIN_INTERVAL', value: '30000' } as const

export function runtimeName(): RuntimeName {
  if (typeof (globalThis as { Bun?: unknown }).Bun !== 'undefined') return 'bun'
  if (typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined') return 'deno'
  return 'node'
}

/**
 * A synchronous collection of the young generation, where the runtime offers one: Bun's `bun:jsc`
 * `edenGC`. Elsewhere undefined (the runtime collects on its own schedule).
 */
export async function youngCollector(): Promise<(() => void) | undefined> {
  if (runtimeName() !== 'bun') return undefined
  // Named at run time so that another runtime never tries to resolve the `bun:` scheme.
  const specifier = ['bun', 'jsc'].join(':')
  const jsc = (await import(specifier)) as typeof import('bun:jsc')
  return () => {
    jsc.edenGC()
  }
}

export async function serve(options: ServeOptions): Promise<Listener> {
  const runtime = runtimeName()
  if (runtime === 'deno') return (await import('./deno.ts')).serve(options)
  throw new Error('serving needs Bun or Deno; run with `bun core/cli.ts` or `deno run -A core/cli.ts`')
}
