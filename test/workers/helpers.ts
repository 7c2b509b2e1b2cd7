// What the workers tests share: tracker requests on fresh connections, a seq-tagged stream of them,
// the visitors' traffic, the
// summed /metrics, the sessions check on ClickHouse, and the worker processes of a supervisor.

import { readFileSync } from 'node:fs'
import type { ClickHouseServer } from '../clickhouse/harness.ts'
import { CHROME_UA, type EngineProcess, FIREFOX_UA, metric, SAFARI_IPHONE_UA } from '../clickhouse/traffic.ts'

const CONCURRENCY = 48
const UAS = [CHROME_UA, FIREFOX_UA, SAFARI_IPHONE_UA]

/** Visitor v's address: 10.x.y.z, one per visitor. */
export const ipOf = (v: number) => `10.${(v >> 16) & 255}.${(v >> 8) & 255}.${v & 255}`

/**
 * Requests with a unique `seq` prop from `parallel` loops, each on a fresh connection, about `rate`
 * a second in all, until `stop()`: the seqs answered 202 and the failed requests by status (0 =
 * connection reset or refused).
 */
export function streamSeqs(port: number, rate: number, parallel = CONCURRENCY) {
  const accepted = new Set<number>()
  const failures = new Map<number, number>()
  /** Each failed request: its seq, when it was sent and ended (epoch ms), and how it failed. */
  const failed: { seq: number; sentAt: number; endedAt: number; how: string }[] = []
  let next = 0
  let streaming = true
  const pause = (parallel * 1000) / rate
  const done = Promise.all(
    Array.from({ length: parallel }, async () => {
      while (streaming) {
        const seq = next++
        const began = Date.now()
        let how = ''
        const status = await send(
          port,
          seq % 5000,
          { n: 'pageview', u: `https://example.com/s/${seq}`, d: 'example.com', p: { seq: String(seq) } },
          (failure) => {
            how = failure
          },
        )
        if (status === 202) accepted.add(seq)
        else {
          failures.set(status, (failures.get(status) ?? 0) + 1)
          failed.push({ seq, sentAt: began, endedAt: Date.now(), how: how || `HTTP ${status}` })
        }
        const wait = pause - (Date.now() - began)
        if (wait > 0) await Bun.sleep(wait)
      }
    }),
  )
  return {
    accepted,
    failures,
    failed,
    sent: () => next,
    async stop() {
      streaming = false
      await done
    },
  }
}

/**
 * One tracker request on a new TCP connection (`Connection: close`), written by hand: a fetch per
 * fresh connection costs the client several times more CPU than the engine spends on the request.
 * Resolves with the status, or 0 when the connection failed; `onFailure` then hears how (refused,
 * reset, closed without an answer, or a partial answer).
 */
export function send(
  port: number,
  visitor: number,
  body: Record<string, unknown>,
  onFailure?: (how: string) => void,
): Promise<number> {
  const payload = JSON.stringify(body)
  const request =
    `POST /api/event HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/plain\r\n` +
    `user-agent: ${UAS[visitor % UAS.length]}\r\nx-forwarded-for: ${ipOf(visitor)}\r\nconnection: close\r\n` +
    `content-length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`
  return new Promise((resolve) => {
    let answer = ''
    const failed = (how: string) => {
      onFailure?.(how)
      resolve(0)
    }
    const done = (error?: Error) => {
      const status = /^HTTP\/1\.1 (\d{3})/.exec(answer)
      if (status) resolve(Number(status[1]))
      else failed(`${error ? `reset (${codeOf(error)})` : 'closed'} after ${answer.length} bytes of answer`)
    }
    Bun.connect({
      hostname: '127.0.0.1',
      port,
      socket: {
        open: (socket) => {
          socket.write(request)
        },
        data: (_socket, chunk) => {
          answer += chunk.toString()
        },
        close: (_socket, error) => done(error),
        error: (_socket, error) => done(error),
        connectError: (_socket, error) => failed(`connect: ${codeOf(error)}`),
      },
    }).catch((error: Error) => failed(`connect: ${codeOf(error)}`))
  })
}

/** A socket error's code (ECONNRESET, …), or its message when it has none. */
const codeOf = (error: Error): string => (error as Error & { code?: string }).code ?? error.message

/** Every visitor's four requests, in order per visitor, `CONCURRENCY` visitors at a time; the statuses seen. */
export async function visit(base: string, visitors: number): Promise<Map<number, number>> {
  const port = Number(new URL(base).port)
  const statuses = new Map<number, number>()
  let next = 0
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let v = next++; v < visitors; v = next++) {
        const page = `https://example.com/v/${v}`
        for (const body of [
          { n: 'pageview', u: page, d: 'example.com' },
          { n: 'Signup', u: page, d: 'example.com', p: { step: '1' } },
          { n: 'Signup', u: page, d: 'example.com', p: { step: '2' } },
          { n: 'pageview', u: `${page}/done`, d: 'example.com' },
        ]) {
          const status = await send(port, v, body)
          statuses.set(status, (statuses.get(status) ?? 0) + 1)
        }
      }
    }),
  )
  return statuses
}

/** A series' value in a /metrics text (the whole series name with labels). */
export function series(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1))
}

/** The worker processes of a supervisor. */
export function workerPids(supervisor: number): number[] {
  return readFileSync(`/proc/${supervisor}/task/${supervisor}/children`, 'utf8').split(' ').filter(Boolean).map(Number)
}

/** sessions_v2 FINAL and events_v2 of a database: sessions, sessions without 4 events, sessions beyond one per user, events. */
export async function sessionCheck(ch: ClickHouseServer, database: string) {
  const [row] = await ch.rows<{ sessions: string; notFour: string; extra: string }>(
    `SELECT toString(count()) AS sessions, toString(countIf(events != 4)) AS notFour,
            toString(uniqExact(session_id) - uniqExact(user_id)) AS extra
     FROM ${database}.sessions_v2 FINAL`,
  )
  const [events] = await ch.rows<{ n: string }>(`SELECT toString(count()) AS n FROM ${database}.events_v2`)
  return {
    sessions: Number(row!.sessions),
    notFour: Number(row!.notFour),
    extra: Number(row!.extra),
    events: Number(events!.n),
  }
}

/** Until every worker's rows are in ClickHouse (nothing queued, nothing spooled), over the summed /metrics. */
export async function drained(engine: EngineProcess, workers = 2): Promise<void> {
  const deadline = Date.now() + 30_000
  for (;;) {
    const text = await engine.metrics()
    if (
      series(text, 'analytics_workers_reporting') === workers &&
      metric(text, 'analytics_sink_queued_rows', 'clickhouse') === 0 &&
      metric(text, 'analytics_sink_spool_bytes', 'clickhouse') === 0
    )
      return
    if (Date.now() > deadline) throw new Error('the sinks did not drain within 30 s')
    await Bun.sleep(100)
  }
}
