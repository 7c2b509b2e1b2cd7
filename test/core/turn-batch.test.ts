// core/http.ts TurnBatch: requests whose body arrived in one event-loop turn go through their
// dialect together at its end, in arrival order; one failing request fails alone; a request whose
// connection was closed meanwhile is not handed to its dialect.

import { expect, test } from 'bun:test'
import { TurnBatch } from '../../core/http.ts'
import type { Ingest, IngestRequest, Route } from '../../core/plugin.ts'

const ingest = {} as Ingest

function request(n: number, signal?: AbortSignal): IngestRequest {
  return {
    request: new Request('http://localhost/t', { method: 'POST', signal }),
    body: String(n),
    params: {},
    peerIp: '127.0.0.1',
    receivedAt: Date.now(),
  }
}

/** A route that records the bodies it handles and the turn (flush) each ran in. */
function recordingRoute(runs: { body: string; flush: number }[], flushOf: () => number): Route {
  return {
    method: 'POST',
    path: '/t',
    handle: (req) => {
      if (req.body === 'throw') throw new Error('dialect failed')
      runs.push({ body: req.body, flush: flushOf() })
      return new Response(req.body, { status: 202 })
    },
  }
}

test('requests of one turn run together after it, in arrival order; the next turn runs apart', async () => {
  const runs: { body: string; flush: number }[] = []
  let flush = 0
  const route = recordingRoute(runs, () => flush)
  const batch = new TurnBatch(ingest, () => {})
  const first = [1, 2, 3].map((n) => batch.handle(route, request(n)))
  // Nothing ran while the turn was still going.
  expect(runs).toHaveLength(0)
  const answers = await Promise.all(first)
  expect(await Promise.all(answers.map((a) => a.text()))).toEqual(['1', '2', '3'])
  flush = 1
  await batch.handle(route, request(4))
  expect(runs).toEqual([
    { body: '1', flush: 0 },
    { body: '2', flush: 0 },
    { body: '3', flush: 0 },
    { body: '4', flush: 1 },
  ])
})

test('a dialect that throws fails its own request only', async () => {
  const runs: { body: string; flush: number }[] = []
  const route = recordingRoute(runs, () => 0)
  const batch = new TurnBatch(ingest, () => {})
  const bad: IngestRequest = { ...request(0), body: 'throw' }
  const results = await Promise.allSettled([
    batch.handle(route, request(1)),
    batch.handle(route, bad),
    batch.handle(route, request(2)),
  ])
  expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
  expect(runs.map((r) => r.body)).toEqual(['1', '2'])
})

test('a request whose connection closed before its turn is not handed to its dialect', async () => {
  const runs: { body: string; flush: number }[] = []
  const route = recordingRoute(runs, () => 0)
  const aborted: string[] = []
  const batch = new TurnBatch(ingest, (r) => aborted.push(r.path))
  const closed = new AbortController()
  const answers = [batch.handle(route, request(1)), batch.handle(route, request(2, closed.signal))]
  closed.abort()
  const [kept, dropped] = await Promise.all(answers)
  expect(kept!.status).toBe(202)
  expect(dropped!.status).toBe(499)
  expect(runs.map((r) => r.body)).toEqual(['1'])
  expect(aborted).toEqual(['/t'])
})

test('a turn runs at most 16 requests; the rest follow in the next turns, in order', async () => {
  const runs: { body: string; flush: number }[] = []
  let turns = 0
  let counting = true
  // Queued before the batch's first flush, this runs first in every turn and counts it.
  const tick = () => {
    turns++
    if (counting) setImmediate(tick)
  }
  setImmediate(tick)
  const route = recordingRoute(runs, () => turns)
  const batch = new TurnBatch(ingest, () => {})
  await Promise.all(Array.from({ length: 40 }, (_, n) => batch.handle(route, request(n))))
  counting = false
  expect(runs.map((r) => Number(r.body))).toEqual(Array.from({ length: 40 }, (_, n) => n))
  const perTurn = new Map<number, number>()
  for (const r of runs) perTurn.set(r.flush, (perTurn.get(r.flush) ?? 0) + 1)
  expect([...perTurn.values()]).toEqual([16, 16, 8])
  expect([...perTurn.keys()]).toEqual([1, 2, 3])
})
