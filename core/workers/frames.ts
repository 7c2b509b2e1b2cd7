// The wire between workers (core/workers/link.ts): newline-delimited JSON frames on a Unix socket,
// written in one batch per event-loop turn (research/scale-out.md §2.3 measured about 2.8 µs per
// event this way, against hundreds for an HTTP request per forward). Events travel as positional
// arrays of their fields; a request's headers travel once for all its events.

import { AnalyticsEvent } from '../event.ts'
import type { SiteTable } from '../sites.ts'

/**
 * Fields that do not travel: the headers go once per request, the site by its domain, session rows
 * are made later, and the peer's address travels read (`peerAddress`), not as the socket to read it from.
 */
const LOCAL_FIELDS = new Set(['headers', 'site', 'sessionRows', 'peerSource'])
const TEMPLATE = new AnalyticsEvent()
const FIELDS = Object.keys(TEMPLATE).filter((k) => !LOCAL_FIELDS.has(k)) as (keyof AnalyticsEvent)[]
const BIGINTS = new Set(FIELDS.filter((k) => typeof TEMPLATE[k] === 'bigint'))
/** Each field's value in a new event: fields still at it do not travel (most of an event's are). */
const DEFAULTS = FIELDS.map((k) => TEMPLATE[k])
const PROPS = FIELDS.indexOf('props')

/** A request's events, from the accepting worker to the owner. */
export interface EventsFrame {
  /** Request id, unique per connection. */
  i: number
  /** Header names and values, alternating. */
  h: string[]
  /** The step each event starts at (0, or the pipeline's ownerStep when its prefix ran). */
  s: number[]
  /** Each event: its site's domain ('' when none), then pairs of a field's index in FIELDS and its value, for the fields not at their default. */
  e: unknown[][]
}

/** A request for the owner's metrics text. */
export interface MetricsFrame {
  i: number
  m: 1
}

/**
 * The owner's answer: outcomes (0 = accepted, [reason, plugin] = dropped), an error, or metrics.
 * Or its goodbye (`b`, no request id): it is stopping, and every request it has not answered was
 * not processed and may go to its successor.
 */
export interface ReplyFrame {
  i: number
  b?: 1
  o?: (0 | [string, string])[]
  /** `durable`: the events could not be made durable (503); `failed`: anything else (500). */
  e?: 'durable' | 'failed'
  t?: string
}

export function encodeEvents(id: number, events: readonly AnalyticsEvent[], starts: number[]): string {
  const headers: string[] = []
  events[0]!.headers.forEach((value, name) => {
    headers.push(name, value)
  })
  const rows: unknown[][] = new Array(events.length)
  for (let n = 0; n < events.length; n++) {
    const event = events[n]!
    // Read here, where the request's socket is: the owner has none to ask.
    event.peerIp
    const row: unknown[] = [event.site?.domain ?? '']
    for (let f = 0; f < FIELDS.length; f++) {
      const key = FIELDS[f]!
      const value = event[key]
      if (value === DEFAULTS[f] || (f === PROPS && isEmpty(value as object))) continue
      row.push(f, typeof value === 'bigint' ? String(value) : value)
    }
    rows[n] = row
  }
  return `${JSON.stringify({ i: id, h: headers, s: starts, e: rows } satisfies EventsFrame)}\n`
}

export function decodeEvents(frame: EventsFrame, sites: SiteTable): AnalyticsEvent[] {
  const pairs: [string, string][] = new Array(frame.h.length >> 1)
  for (let k = 0; k + 1 < frame.h.length; k += 2) pairs[k >> 1] = [frame.h[k]!, frame.h[k + 1]!]
  const headers = new Headers(pairs)
  return frame.e.map((row) => {
    const event = new AnalyticsEvent()
    const target = event as unknown as Record<string, unknown>
    for (let k = 1; k + 1 < row.length; k += 2) {
      const key = FIELDS[row[k] as number]!
      target[key] = BIGINTS.has(key) ? BigInt(row[k + 1] as string) : row[k + 1]
    }
    event.headers = headers
    const domain = row[0] as string
    if (domain !== '') event.site = sites.byDomain(domain)
    return event
  })
}

function isEmpty(object: object): boolean {
  for (const _ in object) return false
  return true
}

/** Splits a byte stream into frames (one JSON text per line). */
export class LineReader {
  private readonly decoder = new TextDecoder()
  private rest = ''

  push(chunk: Uint8Array, onFrame: (frame: unknown) => void): void {
    const text = this.rest + this.decoder.decode(chunk, { stream: true })
    let start = 0
    for (;;) {
      const end = text.indexOf('\n', start)
      if (end < 0) break
      let frame: unknown
      try {
        frame = JSON.parse(text.slice(start, end))
      } catch {
        // Only workers of this run can connect, so this is a bug, not an attack: skip the line; its
        // sender, never answered, processes its request itself when the connection closes.
        frame = undefined
      }
      if (frame !== undefined) onFrame(frame)
      start = end + 1
    }
    this.rest = text.slice(start)
  }
}

interface WritableSocket {
  write(data: Uint8Array): number
}

const ENCODER = new TextEncoder()

/**
 * Writes frames to a socket, gathered per event-loop turn into one write; what the socket does not
 * take at once waits for its drain.
 */
export class FrameWriter {
  private lines: string[] = []
  private blocked: Uint8Array | undefined
  private scheduled = false

  constructor(private readonly socket: WritableSocket) {}

  send(line: string): void {
    this.lines.push(line)
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(() => this.flush())
  }

  /** The socket can take more (its drain event). */
  drain(): void {
    this.flush()
  }

  private flush(): void {
    this.scheduled = false
    let bytes = this.blocked
    if (this.lines.length > 0) {
      const more = ENCODER.encode(this.lines.join(''))
      this.lines = []
      bytes = bytes === undefined ? more : concat(bytes, more)
    }
    if (bytes === undefined) return
    const written = this.socket.write(bytes)
    this.blocked = written >= bytes.byteLength ? undefined : bytes.subarray(Math.max(0, written))
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength)
  out.set(a, 0)
  out.set(b, a.byteLength)
  return out
}
