// The one module that knows the HTTP framework (style.md "The core knows no framework"). It mounts
// the routes dialects declare as plain data, answers CORS preflights for any origin, enforces the
// body limit itself (413), decompresses gzip/deflate bodies within the same limit, and serves
// /health and /metrics. Every stage runs outside Elysia's hooks: they would cost throughput.

import { gunzipSync, inflateSync } from 'node:zlib'
import { Elysia } from 'elysia'
import type { Logger } from './logger.ts'
import type { Metrics } from './metrics.ts'
import { ALLOW_ANY_ORIGIN, type Ingest, type IngestRequest, type Route } from './plugin.ts'
import { type Listener, runtimeName, type ServeOptions, serve } from './runtime/index.ts'
import { DurabilityError, InterruptedError } from './sink.ts'

export interface HttpHost {
  readonly routes: readonly Route[]
  readonly ingest: Ingest
  readonly metrics: Metrics
  readonly logger: Logger
  readonly bodyLimit: number
  readonly deadlines: ReadDeadlines
  /** Dialect routes run once per event-loop turn for every request whose body arrived (TurnBatch). */
  readonly batchRequests: boolean
  health(): { status: number; body: unknown }
  /** The /metrics text when it is more than this process's (the sum over `serve --workers`). */
  metricsText?(): Promise<string>
  /** Peer address for requests handed in without a socket (engine.handle in tests). */
  peerOf(request: Request): string | undefined
  /**
   * Whether the listener is bound to a loopback address, so that every peer is a process on this
   * machine (`IngestRequest.peerIsLocal`).
   */
  readonly peersAreLocal: boolean
  requestStarted(): void
  requestFinished(): void
}

const CORS_HEADERS = {
  ...ALLOW_ANY_ORIGIN,
  'access-control-allow-methods': 'POST, GET, OPTIONS',
  'access-control-max-age': '86400',
}

const DECODER = new TextDecoder('utf-8', { fatal: false, ignoreBOM: false })

/** Answers for bodies we refuse before any dialect sees them; plain text, no internals. */
function tooLarge(limit: number): Response {
  return new Response(`request body exceeds ${limit} bytes`, {
    status: 413,
    headers: { ...ALLOW_ANY_ORIGIN, 'content-type': 'text/plain; charset=utf-8', connection: 'close' },
  })
}

function timedOut(): Response {
  return new Response('request body did not arrive in time', {
    status: 408,
    headers: { ...ALLOW_ANY_ORIGIN, 'content-type': 'text/plain; charset=utf-8', connection: 'close' },
  })
}

const TIMEOUT = Symbol('timeout')

/**
 * A body read with a deadline. The sweeper settles a late one through the read's own resolve function
 * (with the 408 answer, or TIMEOUT for `race`), so no callback is made per read for it.
 */
interface PendingRead {
  startedAt: number
  answerLate: ((answer: Response) => void) | undefined
  markLate: ((late: typeof TIMEOUT) => void) | undefined
}

/**
 * Deadlines for body reads, checked by one shared sweeper instead of a timer per request (a
 * setTimeout per request measured about 9 µs of CPU each under load). A read past its deadline is
 * settled as TIMEOUT within a quarter of the deadline.
 */
export class ReadDeadlines {
  private readonly pending = new Set<PendingRead>()
  private sweeper: ReturnType<typeof setInterval> | undefined

  constructor(private readonly timeoutMs: number) {}

  /**
   * The common read: a plain body as text, or the answer refusing it (408 past the deadline, 400
   * when unreadable). One promise and two callbacks per request; Promise.race and finally cost
   * several more.
   */
  readText(request: Request): Promise<string | Response> {
    const { promise, resolve } = Promise.withResolvers<string | Response>()
    const entry: PendingRead = { startedAt: Date.now(), answerLate: resolve, markLate: undefined }
    this.watch(entry)
    request.text().then(
      (text) => {
        if (this.pending.delete(entry)) resolve(text)
      },
      () => {
        if (this.pending.delete(entry)) resolve(badBody())
      },
    )
    return promise
  }

  race<T>(work: Promise<T>): Promise<T | typeof TIMEOUT> {
    const { promise, resolve, reject } = Promise.withResolvers<T | typeof TIMEOUT>()
    const entry: PendingRead = { startedAt: Date.now(), answerLate: undefined, markLate: resolve }
    this.watch(entry)
    work.then(
      (value) => {
        if (this.pending.delete(entry)) resolve(value)
      },
      (error) => {
        if (this.pending.delete(entry)) reject(error)
      },
    )
    return promise
  }

  private watch(entry: PendingRead): void {
    this.pending.add(entry)
    if (!this.sweeper) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(25, Math.floor(this.timeoutMs / 4)))
      ;(this.sweeper as { unref?: () => void }).unref?.()
    }
  }

  private sweep(): void {
    if (this.pending.size === 0) {
      clearInterval(this.sweeper)
      this.sweeper = undefined
      return
    }
    const cutoff = Date.now() - this.timeoutMs
    for (const entry of this.pending) {
      if (entry.startedAt <= cutoff) {
        this.pending.delete(entry)
        if (entry.answerLate) entry.answerLate(timedOut())
        else entry.markLate?.(TIMEOUT)
      }
    }
  }

  stop(): void {
    clearInterval(this.sweeper)
    this.sweeper = undefined
  }
}

function unsupportedEncoding(): Response {
  return new Response('unsupported content-encoding (use gzip, deflate or none)', {
    status: 415,
    headers: { ...ALLOW_ANY_ORIGIN, 'content-type': 'text/plain; charset=utf-8' },
  })
}

function badBody(): Response {
  return new Response('request body could not be read', {
    status: 400,
    headers: { ...ALLOW_ANY_ORIGIN, 'content-type': 'text/plain; charset=utf-8' },
  })
}

/**
 * Reads at most `limit` bytes of the body (the declared length is checked first, so an oversized
 * body is refused without reading it), then decompresses within the same limit. Gives the text, or
 * the Response that refuses the body.
 */
export function readBody(
  request: Request,
  limit: number,
  deadlines: ReadDeadlines,
): string | Response | Promise<string | Response> {
  const declared = request.headers.get('content-length')
  if (declared !== null && Number(declared) > limit) return tooLarge(limit)
  const encoding = request.headers.get('content-encoding')
  const plain = encoding === null || encoding === '' || encoding === 'identity'
  // The common case: a declared length within the limit, no encoding. The runtime decodes the text
  // natively; the declared length bounds it (Bun also refuses bodies over maxRequestBodySize). It
  // comes before `request.body`: in Bun that getter makes a ReadableStream, 3-5 µs of CPU per
  // request in a bare Bun.serve (bench/bare.ts body), and text() reads an empty body as ''.
  if (plain && declared !== null) return deadlines.readText(request)
  if (request.body === null) return ''
  return readOtherBody(request, limit, deadlines, plain ? null : encoding)
}

/** Bodies without a declared length, or compressed: read within the limit, then decompressed. */
async function readOtherBody(
  request: Request,
  limit: number,
  deadlines: ReadDeadlines,
  encoding: string | null,
): Promise<string | Response> {
  const declared = request.headers.get('content-length')
  let bytes: Uint8Array
  try {
    // A client that trickles its body is cut off at the deadline instead of holding a request open.
    const read = await deadlines.race(
      declared !== null ? request.arrayBuffer().then((b) => new Uint8Array(b)) : readCapped(request.body!, limit),
    )
    if (read === TIMEOUT) {
      request.body?.cancel().catch(() => {})
      return timedOut()
    }
    if (!read || read.byteLength > limit) return tooLarge(limit)
    bytes = read
  } catch {
    return badBody()
  }
  if (encoding !== null) {
    const e = encoding.trim().toLowerCase()
    if (e !== 'gzip' && e !== 'x-gzip' && e !== 'deflate') return unsupportedEncoding()
    try {
      // maxOutputLength makes a decompression bomb fail early instead of filling memory.
      bytes =
        e === 'deflate' ? inflateSync(bytes, { maxOutputLength: limit }) : gunzipSync(bytes, { maxOutputLength: limit })
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError) {
        return tooLarge(limit)
      }
      return badBody()
    }
  }
  return bytes.byteLength === 0 ? '' : DECODER.decode(bytes)
}

async function readCapped(stream: ReadableStream<Uint8Array>, limit: number): Promise<Uint8Array | undefined> {
  const reader = stream.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > limit) {
      await reader.cancel().catch(() => {})
      return undefined
    }
    chunks.push(value)
  }
  if (chunks.length === 1) return chunks[0]
  const out = new Uint8Array(size)
  let offset = 0
  for (const c of chunks) {
    out.set(c, offset)
    offset += c.byteLength
  }
  return out
}

/** Strips the IPv4-mapped prefix so `::ffff:1.2.3.4` and `1.2.3.4` are one client. */
export function normalisePeer(address: string | undefined): string {
  if (!address) return ''
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
}

/**
 * A dialect route's handler, given the request, its path parameters, and the TCP peer: its address,
 * or the server to ask for it when a plugin first needs it (SocketRequest).
 */
type IngestHandler = (
  request: Request,
  params: Record<string, string>,
  peer: string | undefined | BunServer,
) => Promise<Response>

/**
 * The peer of a request read from a socket, asked of the server on first read only: Bun asks the
 * kernel on every `requestIP` call and makes an object of the answer, about 2.4 µs of CPU a request
 * (user and system time alike, measured with ten calls per request in a bare Bun.serve). Behind a
 * local proxy that sends the client's address it is never read (core/trust.ts). Private fields, so
 * that an event holding it (`AnalyticsEvent.peerSource`) never shows the request when printed.
 */
class SocketPeer {
  readonly #request: Request
  readonly #server: BunServer
  #ip: string | undefined = undefined

  constructor(request: Request, server: BunServer) {
    this.#request = request
    this.#server = server
  }

  get peerIp(): string {
    if (this.#ip === undefined) this.#ip = normalisePeer(this.#server.requestIP(this.#request)?.address)
    return this.#ip
  }
}

/** A request read from a socket; its peer is read when first asked for (SocketPeer). */
class SocketRequest implements IngestRequest {
  readonly peerLookup: SocketPeer

  constructor(
    readonly request: Request,
    readonly body: string,
    readonly params: Record<string, string>,
    readonly receivedAt: number,
    readonly peerIsLocal: boolean,
    server: BunServer,
  ) {
    this.peerLookup = new SocketPeer(request, server)
  }

  get peerIp(): string {
    return this.peerLookup.peerIp
  }
}

/** The status nginx logs for a client that went away before its answer; nobody reads this one. */
function clientClosed(): Response {
  return new Response(null, { status: 499 })
}

function internalError(): Response {
  return new Response('{"error":"internal error"}', { status: 500, headers: { 'content-type': 'application/json' } })
}

/**
 * Requests run per turn at most. Without a cap, wrk's paced connections (answered together, so
 * sending together again) arrived in bursts of ~50 that each waited for the whole burst: at 6,000
 * req/s the median answer took 1.8-2.0 ms, against 1.25-1.45 ms with slices of 16 (p99 6.1-7.3 →
 * 4.9-6.9 ms); CPU per request under full load did not measurably change.
 */
const TURN_SLICE = 16

/**
 * A request waiting for its turn. Once `ran` has settled, `answer` holds what its dialect answered,
 * or `failed` and `error` say that it threw. The requests of one turn share one `ran` promise, so
 * waiting makes no promise and no callbacks per request.
 */
export class TurnTicket {
  answer: Response | Promise<Response> | undefined = undefined
  failed = false
  error: unknown = undefined

  constructor(
    readonly route: Route,
    readonly req: IngestRequest,
    readonly ran: Promise<void>,
  ) {}

  /** The dialect's answer, or its error thrown; for once `ran` has settled. */
  result(): Response | Promise<Response> {
    if (this.failed) throw this.error
    if (this.answer === undefined) throw new Error('the turn of this request has not run yet')
    return this.answer
  }
}

/** Up to TURN_SLICE requests that run in the same turn. */
interface Slice {
  tickets: TurnTicket[]
  ran: Promise<void>
  done: () => void
}

/**
 * Requests whose body has arrived wait here until the end of the event-loop turn, then go through
 * their dialect, the pipeline and the sinks one after another. Run back to back, that code and its
 * data stay in the CPU's caches; run one request at a time between the HTTP server's own work
 * (sockets, parsing, the kernel's TCP), the same work cost about twice the CPU (docs/performance.md,
 * "Batching by event-loop turn"). The wait is one turn: a lone request is not held back.
 */
export class TurnBatch {
  /** Waiting requests in arrival order; the first slice runs at the end of this turn, each next one a turn later. */
  private readonly slices: Slice[] = []
  private readonly flush = () => this.runNext()

  constructor(
    private readonly ingest: Ingest,
    /** Told of each request whose connection Bun closed before its turn. */
    private readonly onAborted: (route: Route) => void,
  ) {}

  /** Queues a request; its answer is on the ticket once `ticket.ran` settles. */
  enqueue(route: Route, req: IngestRequest): TurnTicket {
    let slice = this.slices[this.slices.length - 1]
    if (slice === undefined || slice.tickets.length >= TURN_SLICE) {
      if (this.slices.length === 0) setImmediate(this.flush)
      const { promise, resolve } = Promise.withResolvers<void>()
      slice = { tickets: [], ran: promise, done: resolve }
      this.slices.push(slice)
    }
    const ticket = new TurnTicket(route, req, slice.ran)
    slice.tickets.push(ticket)
    return ticket
  }

  /** A request's answer once its turn has run (the HTTP path uses `enqueue` itself). */
  async handle(route: Route, req: IngestRequest): Promise<Response> {
    const ticket = this.enqueue(route, req)
    await ticket.ran
    return ticket.result()
  }

  private runNext(): void {
    const slice = this.slices.shift()
    if (slice === undefined) return
    // The next slice waits one more turn, behind which the answers of this one go out.
    if (this.slices.length > 0) setImmediate(this.flush)
    for (const t of slice.tickets) {
      try {
        // Bun has closed this connection unanswered (a request pipelined behind it): the client saw
        // nothing, so its events are not taken either, and a retry cannot make a duplicate.
        if (t.req.request.signal.aborted) {
          this.onAborted(t.route)
          t.answer = clientClosed()
          continue
        }
        t.answer = t.route.handle(t.req, this.ingest)
      } catch (error) {
        t.failed = true
        t.error = error
      }
    }
    slice.done()
  }
}

/** The request path of a dialect route, the same whichever router found it. */
function ingestHandler(host: HttpHost, route: Route, turn: TurnBatch | undefined): IngestHandler {
  const label = route.path
  return async (request, params, peer) => {
    host.requestStarted()
    try {
      const receivedAt = Date.now()
      const read = readBody(request, host.bodyLimit, host.deadlines)
      const body = typeof read === 'string' ? read : read instanceof Response ? read : await read
      if (typeof body !== 'string') {
        host.metrics.request(label, body.status)
        return body
      }
      const req: IngestRequest =
        typeof peer === 'object'
          ? new SocketRequest(request, body, params ?? {}, receivedAt, host.peersAreLocal, peer)
          : { request, body, params: params ?? {}, peerIp: normalisePeer(peer), receivedAt }
      let response: Response
      let allowsAnyOrigin = route.answersAllowAnyOrigin === true
      try {
        if (turn) {
          const ticket = turn.enqueue(route, req)
          await ticket.ran
          const answer = ticket.result()
          response = answer instanceof Promise ? await answer : answer
        } else {
          // A dialect answers synchronously unless an async plugin ran: await only a promise.
          const handled = route.handle(req, host.ingest)
          response = handled instanceof Promise ? await handled : handled
        }
      } catch (error) {
        response = failedResponse(host, label, error)
        allowsAnyOrigin = false
      }
      if (!allowsAnyOrigin) response.headers.set('access-control-allow-origin', '*')
      host.metrics.request(label, response.status)
      return response
    } finally {
      host.requestFinished()
    }
  }
}

type BunServer = { requestIP(r: Request): { address: string } | null }
type NativeRoutes = Record<
  string,
  Record<string, (request: Request & { params: Record<string, string> }, server: BunServer) => Promise<Response>>
>

/**
 * The dialect routes as Bun.serve `routes`, served without Elysia: its composed per-request handler
 * took about a fifth of the samples in a CPU profile of the engine under load, and the direct path
 * needs no context object. Everything else (other methods on these paths, trailing slashes, /health,
 * /metrics, preflights, 404s) falls through to Elysia, which has the same routes mounted.
 */
const nativeRoutes = new WeakMap<object, NativeRoutes>()

/**
 * The answer when a dialect's route throws: 503 when the event could not be made durable (the only
 * 5xx a client should see: the spool disk is full or failing), else a logged 500 without details.
 */
function failedResponse(host: HttpHost, label: string, error: unknown): Response {
  if (error instanceof DurabilityError) {
    return new Response(JSON.stringify({ error: 'not stored: the server cannot keep events on disk; retry later' }), {
      status: 503,
      headers: { 'content-type': 'application/json', 'retry-after': '5' },
    })
  }
  if (error instanceof InterruptedError) {
    return new Response(
      JSON.stringify({ error: 'interrupted: the worker holding this request stopped before answering' }),
      {
        status: 503,
        headers: { 'content-type': 'application/json', 'retry-after': '1' },
      },
    )
  }
  host.logger.throttled(`route:${label}`, 'error', 'A dialect failed on a request.', {
    route: label,
    error: (error as Error).name,
    detail: String((error as Error).message).slice(0, 200),
  })
  return internalError()
}

export function buildHttpApp(host: HttpHost) {
  const app = new Elysia({ normalize: false })
  const native: NativeRoutes = {}
  const turn = host.batchRequests
    ? new TurnBatch(host.ingest, (route) =>
        host.logger.throttled(
          'http:aborted',
          'warn',
          'A connection closed before its request was processed; its events were not taken. Bun closes a connection that pipelines HTTP/1.1 requests while an answer waits: if clients pipeline, set server.batchRequests: false.',
          { route: route.path },
        ),
      )
    : undefined

  for (const route of host.routes) {
    const handle = ingestHandler(host, route, turn)
    const handler = ({
      request,
      params,
      server,
    }: {
      request: Request
      params: Record<string, string>
      server: BunServer | null
    }): Promise<Response> => handle(request, params, host.peerOf(request) ?? server?.requestIP(request)?.address)
    if (route.method === 'POST') app.post(route.path, handler as never, { parse: 'none' })
    else app.get(route.path, handler as never)
    native[route.path] ??= {}
    native[route.path]![route.method] = (request, server) => handle(request, request.params, server)
  }
  nativeRoutes.set(app, native)

  app.options('/*', ({ request }) => {
    const asked = request.headers.get('access-control-request-headers')
    return new Response(null, {
      status: 204,
      headers: {
        ...CORS_HEADERS,
        // Echo what the browser asks for (content-type for JSON bodies); values are header names only.
        'access-control-allow-headers': asked && /^[\w\-, ]{1,500}$/.test(asked) ? asked : 'content-type',
      },
    })
  })

  app.get('/health', () => {
    const { status, body } = host.health()
    host.metrics.request('/health', status)
    return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } })
  })

  app.get('/metrics', async () => {
    host.metrics.request('/metrics', 200)
    const text = host.metricsText ? await host.metricsText() : host.metrics.render()
    return new Response(text, { headers: { 'content-type': 'text/plain; version=0.0.4' } })
  })

  app.onError(({ code, error }) => {
    if (code === 'NOT_FOUND') {
      host.metrics.request('(unmatched)', 404)
      return new Response('not found', { status: 404, headers: { 'content-type': 'text/plain; charset=utf-8' } })
    }
    host.logger.throttled(`http:${String(code)}`, 'error', 'The HTTP layer failed on a request.', {
      code: String(code),
      detail: String((error as Error)?.message ?? '').slice(0, 200),
    })
    host.metrics.request('(error)', 500)
    return internalError()
  })

  return app
}

/**
 * Starts serving `app`. On Bun through Bun.serve: the dialect routes on Bun's native router straight
 * to their handlers, everything else through `options.fetch` (Elysia); elsewhere through the runtime
 * adapter with `options.fetch`.
 */
export async function listenApp(
  app: ReturnType<typeof buildHttpApp>,
  options: ServeOptions & { idleTimeoutSeconds: number },
): Promise<Listener> {
  if (runtimeName() !== 'bun') return serve(options)
  const fetch = options.fetch
  const server = Bun.serve({
    port: options.port,
    hostname: options.hostname,
    maxRequestBodySize: options.maxRequestBodySize,
    idleTimeout: options.idleTimeoutSeconds,
    // As Elysia's listen had it; development mode would answer a thrown error with a stack trace.
    reusePort: true,
    development: false,
    routes: nativeRoutes.get(app) as never,
    fetch: (request, bunServer) => fetch(request, bunServer.requestIP(request)?.address ?? ''),
  })
  return {
    port: server.port ?? options.port,
    hostname: server.hostname ?? options.hostname,
    stop: async () => {
      await server.stop(false)
    },
  }
}

/**
 * Elysia finds the path by searching for '/' from the 12th character of the URL, so a URL whose
 * host has fewer than four characters (`Host: x` is valid HTTP/1.1) would not route; such a
 * request is rebuilt on localhost. Bun's native router (listenApp on Bun) is not affected.
 */
export function withRoutableUrl(request: Request): Request {
  const url = request.url
  const pathStart = url.indexOf('/', url.indexOf('//') + 2)
  if (pathStart < 0 || pathStart >= 11) return request
  return new Request(`http://localhost${url.slice(pathStart)}`, request)
}
