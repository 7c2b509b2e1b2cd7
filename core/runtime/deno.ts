// Serving on Deno: Deno.serve, with the peer address from the handler's info. Deno has no body
// size option; the engine's own reader enforces the limit (it reads at most limit + 1 bytes).

import type { Listener, ServeOptions } from './index.ts'

interface DenoServer {
  addr: { hostname: string; port: number }
  shutdown(): Promise<void>
}
interface DenoApi {
  serve(
    options: { port: number; hostname: string; onListen?: () => void },
    handler: (request: Request, info: { remoteAddr: { hostname: string } }) => Response | Promise<Response>,
  ): DenoServer
}

export function serve(options: ServeOptions): Listener {
  const deno = (globalThis as unknown as { Deno: DenoApi }).Deno
  const handler = options.fetch
  const server = deno.serve({ port: options.port, hostname: options.hostname, onListen: () => {} }, (request, info) =>
    handler(request, info.remoteAddr.hostname),
  )
  return {
    port: server.addr.port,
    hostname: server.addr.hostname,
    stop: () => server.shutdown(),
  }
}
