// Finding the dialect route of a request without the HTTP server, as its router would: tools that
// run requests through the engine (`explain`, `replay`) must pick the same route and parameters.

import type { Route } from './plugin.ts'

export interface RouteMatch {
  plugin: string
  route: Route
  params: Record<string, string>
}

/** The engine's routes split into segments once, for many lookups. */
export class RouteTable {
  private readonly routes: { plugin: string; route: Route; segments: string[] }[]

  constructor(routes: readonly { plugin: string; route: Route }[]) {
    this.routes = routes.map((r) => ({ plugin: r.plugin, route: r.route, segments: r.route.path.split('/') }))
  }

  /**
   * The route serving `method path` (a query is ignored) and its `:param` values: a parameter must
   * be a non-empty, well-escaped segment, as for the router.
   */
  find(method: string, path: string): RouteMatch | undefined {
    const segments = path.split('?', 1)[0]!.split('/')
    for (const r of this.routes) {
      if (r.route.method !== method || r.segments.length !== segments.length) continue
      const params: Record<string, string> = {}
      let ok = true
      for (let i = 0; i < segments.length && ok; i++) {
        const want = r.segments[i]!
        if (want.startsWith(':')) {
          try {
            params[want.slice(1)] = decodeURIComponent(segments[i]!)
          } catch {
            ok = false
          }
          ok &&= segments[i] !== ''
        } else ok = want === segments[i]
      }
      if (ok) return { plugin: r.plugin, route: r.route, params }
    }
    return undefined
  }
}
