// A plain TCP relay: listens on an address the test made (a bridge) and passes bytes to a server that
// listens on loopback only, so a namespace "machine" can reach it. Half-closes are passed on (pipe):
// a request the client finished and closed still reaches the server, as it would over a real link.

import { connect, createServer, type Socket } from 'node:net'

export interface Relay {
  readonly port: number
  stop(): Promise<void>
}

export async function startRelay(host: string, targetPort: number): Promise<Relay> {
  const open = new Set<Socket>()
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = connect({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true })
    open.add(client)
    open.add(upstream)
    client.pipe(upstream)
    upstream.pipe(client)
    const done = () => {
      open.delete(client)
      open.delete(upstream)
    }
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
    client.on('close', done)
    upstream.on('close', done)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, () => resolve())
  })
  const address = server.address()
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy()
        server.close(() => resolve())
      }),
  }
}
