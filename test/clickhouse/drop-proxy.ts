// A test-only TCP proxy in front of a ClickHouse HTTP port that loses the answers of some inserts
// (issue #11 "a lost insert response"; research/scale-out.md §4 items 6 and 7): every request reaches
// the server, and for one INSERT in `every` the server commits and answers, but the client's
// connection is cut instead of the answer being passed on. The client cannot tell whether its batch
// was stored, and must retry it.
//
//   const proxy = await dropProxy(ch.httpPort, { every: 5 })
//   // point the sink at http://127.0.0.1:${proxy.port}
//   proxy.drops        // what was lost: the table and the request body of each
//   await proxy.close()
//
// The client sends one request at a time per connection (HTTP/1.1 without pipelining), so a request
// is the client bytes between two answers; the server answers an INSERT only after reading all of
// its body, so the bytes are complete when the answer starts.

import { createServer, type Socket, connect as tcpConnect } from 'node:net'

export interface DroppedInsert {
  /** The table as the query names it (`db`.`table`, quotes removed). */
  table: string
  /** The request body (JSONEachRow lines), de-chunked. */
  body: string
  /** The start of the answer that was lost (its status line). */
  answer: string
}

export interface DropProxy {
  readonly port: number
  /** INSERT requests seen. */
  inserts(): number
  /** The inserts whose answers were lost, in order. */
  readonly drops: readonly DroppedInsert[]
  close(): Promise<void>
}

export interface DropOptions {
  /** One INSERT in `every` loses its answer (the 5th, 10th, …). */
  every: number
  /**
   * How long the doomed connection stays open, silent, after the server answered: 0 = cut at once
   * (a reset); more = a connection that hangs until it breaks, as a client's timeout would end it.
   */
  holdMs?: number
  /**
   * Holds the doomed connection, silent, until the returned promise settles (either way), then cuts
   * it: the test decides what happens in the network's silence. Takes the place of `holdMs`.
   */
  hold?: (drop: DroppedInsert) => Promise<unknown>
  /** Counter shared by several proxies, so that "one in five" counts the inserts to all of them. */
  counter?: { n: number }
}

/** The request line, headers and de-chunked body of one raw HTTP/1.1 request. */
function parseRequest(raw: Buffer): { target: string; body: string } | undefined {
  const end = raw.indexOf('\r\n\r\n')
  if (end < 0) return undefined
  const head = raw.subarray(0, end).toString('latin1')
  const target = head.split('\r\n', 1)[0]?.split(' ')[1] ?? ''
  let body = raw.subarray(end + 4)
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    const parts: Buffer[] = []
    let at = 0
    for (;;) {
      const lineEnd = body.indexOf('\r\n', at)
      if (lineEnd < 0) break
      const size = Number.parseInt(body.subarray(at, lineEnd).toString('latin1'), 16)
      if (!(size > 0)) break
      parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size))
      at = lineEnd + 2 + size + 2
    }
    body = Buffer.concat(parts)
  }
  return { target, body: body.toString('utf8') }
}

/** The table of an INSERT request (the query is in the URL), or undefined for anything else. */
function insertTable(target: string): string | undefined {
  const query = new URLSearchParams(target.split('?')[1] ?? '').get('query') ?? ''
  const match = /^\s*INSERT\s+INTO\s+(\S+)/i.exec(query)
  return match ? match[1]!.replace(/`/g, '') : undefined
}

export function dropProxy(targetPort: number, options: DropOptions): Promise<DropProxy> {
  const counter = options.counter ?? { n: 0 }
  let inserts = 0
  const drops: DroppedInsert[] = []
  const sockets = new Set<Socket>()
  const timers = new Set<ReturnType<typeof setTimeout>>()
  const server = createServer((client) => {
    const upstream = tcpConnect(targetPort, '127.0.0.1')
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
    }
    let request: Buffer[] = []
    let answering = false
    let doomed = false
    client.on('data', (chunk: Buffer) => {
      // Bytes after an answer began belong to the next request on this kept-alive connection.
      if (answering) {
        request = []
        answering = false
      }
      request.push(chunk)
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (!answering) {
        answering = true
        const parsed = parseRequest(Buffer.concat(request))
        const table = parsed && insertTable(parsed.target)
        if (parsed && table !== undefined) {
          inserts++
          counter.n++
          if (counter.n % options.every === 0) {
            // The server has committed and begun to answer; the client never hears of it.
            doomed = true
            const drop = { table, body: parsed.body, answer: chunk.toString('latin1', 0, Math.min(chunk.length, 300)) }
            drops.push(drop)
            client.pause()
            upstream.pause()
            const cut = () => {
              client.destroy()
              upstream.destroy()
            }
            if (options.hold) void options.hold(drop).then(cut, cut)
            else if (options.holdMs) {
              const timer = setTimeout(() => {
                timers.delete(timer)
                cut()
              }, options.holdMs)
              timers.add(timer)
            } else cut()
          }
        }
      }
      if (!doomed) client.write(chunk)
    })
    // A doomed connection stays silent until it is cut, even when the server closes its side after
    // each answer (keep_alive_timeout 0): passing that on, the client would retry at once.
    upstream.on('end', () => {
      if (!doomed) client.end()
    })
    upstream.on('error', () => {
      if (!doomed) client.destroy()
    })
    client.on('error', () => upstream.destroy())
    client.on('close', () => upstream.destroy())
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      resolve({
        port: typeof address === 'object' && address ? address.port : 0,
        inserts: () => inserts,
        drops,
        // close() alone would wait for the connections a still running engine keeps open.
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r())
            for (const timer of timers) clearTimeout(timer)
            for (const socket of sockets) socket.destroy()
          }),
      })
    })
  })
}

/** The `seq` props of the event rows in a JSONEachRow body (rows without one are skipped). */
export function seqsOf(body: string): number[] {
  const seqs: number[] = []
  for (const line of body.split('\n')) {
    if (line === '') continue
    const row = JSON.parse(line) as { 'meta.key'?: string[]; 'meta.value'?: string[] }
    const at = row['meta.key']?.indexOf('seq') ?? -1
    if (at >= 0) seqs.push(Number(row['meta.value']![at]))
  }
  return seqs
}

/** Rows in a JSONEachRow body. */
export function rowsOf(body: string): number {
  return body.split('\n').filter((l) => l !== '').length
}
