// The limit for this runtime: a bare Bun.serve that reads the body, parses the JSON and answers 202.
// Usage: bun bench/bare.ts PORT [MODE]
//
// MODE (bench/cpu.ts `bare-<mode>`) adds one thing the engine does, to price it alone:
//   routes   the handler on Bun.serve's native `routes` instead of `fetch`
//   then     the body read with request.text().then(...) into a Promise.withResolvers promise
//   shared   the answer's headers from one prebuilt Headers object
//   set      response.headers.set(...) on the answer after it is made
//   ip       server.requestIP(request) read
//   headers  request.headers read (content-length, content-type, authorization, user-agent, x-forwarded-for)
//   body     request.body read (null or not) before the text, as a check for a body
//   date     Date.now() and a Set add/delete per request (the engine's deadline bookkeeping)
//   signal   request.signal.aborted read once the body is in (the engine's check for a closed connection)
//   turn     the answer made at the end of the event-loop turn (setImmediate), as the engine's TurnBatch
//   all      all of the above together
//   ballast  none of them, but about 150 MB of small live objects (the engine's heap holds caches,
//            lists and sessions): does a large live heap make each request dearer?

const port = Number(process.argv[2] ?? 18000)
const mode = process.argv[3] ?? ''
const has = (m: string) => mode === m || mode === 'all'

// Kept alive for the process's life on the global object: a module-level binding that no function
// reads is collected once the module has run (a first version of this mode measured an empty heap:
// 30 MB RSS after a collection, against 310 MB with the ballast reachable).
const ballast: { id: number; name: string; next: unknown }[] = []
;(globalThis as { benchBallast?: unknown }).benchBallast = ballast
if (mode === 'ballast') {
  for (let i = 0; i < 2_000_000; i++) ballast.push({ id: i, name: `n${i}`, next: ballast[i - 1] })
}

const sharedHeaders = new Headers({ 'access-control-allow-origin': '*' })
const pending = new Set<object>()
let sink = 0

function readThen(request: Request): Promise<string> {
  const { promise, resolve, reject } = Promise.withResolvers<string>()
  request.text().then(resolve, reject)
  return promise
}

/** Waiters for the end of this event-loop turn, released together by one setImmediate. */
let waiting: (() => void)[] = []
const release = () => {
  const now = waiting
  waiting = []
  for (const w of now) w()
}
function nextTurn(): Promise<void> {
  if (waiting.length === 0) setImmediate(release)
  const { promise, resolve } = Promise.withResolvers<void>()
  waiting.push(resolve)
  return promise
}

async function handle(request: Request, server: { requestIP(r: Request): { address: string } | null }) {
  if (has('ip')) sink += server.requestIP(request)?.address.length ?? 0
  if (has('headers')) {
    const h = request.headers
    sink +=
      (h.get('content-length')?.length ?? 0) +
      (h.get('content-type')?.length ?? 0) +
      (h.get('authorization')?.length ?? 0) +
      (h.get('user-agent')?.length ?? 0) +
      (h.get('x-forwarded-for')?.length ?? 0)
  }
  if (has('body') && request.body === null) sink++
  const entry = has('date') ? { at: Date.now() } : undefined
  if (entry) pending.add(entry)
  try {
    JSON.parse(has('then') ? await readThen(request) : await request.text())
  } catch {
    return new Response('bad json', { status: 400 })
  }
  if (entry) pending.delete(entry)
  if (has('turn')) await nextTurn()
  if (has('signal') && request.signal.aborted) return new Response(null, { status: 499 })
  const response = has('shared')
    ? new Response('ok', { status: 202, headers: sharedHeaders })
    : has('set')
      ? new Response('ok', { status: 202 })
      : new Response('ok', { status: 202, headers: { 'access-control-allow-origin': '*' } })
  if (has('set')) response.headers.set('access-control-allow-origin', '*')
  return response
}

Bun.serve({
  port,
  hostname: '127.0.0.1',
  ...(has('routes') ? { routes: { '/api/event': { POST: handle } } } : {}),
  fetch: handle,
})
process.stderr.write(`bare Bun.serve listening on ${port}${mode ? ` (${mode}, ${ballast.length + sink})` : ''}\n`)

export {}
