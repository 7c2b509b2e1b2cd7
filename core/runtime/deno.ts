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

/** How long stop() waits for requests in flight before shutting the server down anyway. */
const DRAIN_LIMIT_MS = 10_000

export function serve(options: ServeOptions): Listener {
  const deno = (globalThis as unknown as { Deno: DenoApi }).Deno
  const handler = options.fetch
  let inFlight = 0
  let draining = false
  let drained: (() => void) | undefined
  const server = deno.serve(
    { port: options.port, hostname: options.hostname, onListen: () => {} },
    async (request, info) => {
      // Deno's shutdown() makes bodies still arriving unreadable, so the engine drains first; a request
      // that arrives meanwhile is refused plainly instead of being read half and lost.
      if (draining) {
        return new Response('shutting down', { status: 503, headers: { connection: 'close', 'retry-after': '1' } })
      }
      inFlight++
      try {
        return await handler(request, info.remoteAddr.hostname)
      } finally {
        inFlight--
        if (inFlight === 0) drained?.()
      }
    },
  )
  return {
    port: server.addr.port,
    hostname: server.addr.hostname,
    async stop() {
      draining = true
      if (inFlight > 0) {
        await new Promise<void>((done) => {
          drained = done
          setTimeout(done, DRAIN_LIMIT_MS)
        })
      }
      await server.shutdown()
    },
  }
}
