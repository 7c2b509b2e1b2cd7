// The `webhook` sink (issue #12 §5 "Exports"): POSTs events to one HTTP destination, filtered by event
// name and site, shaped by an optional payload template, batched, retried with backoff, spooled to
// disk while the destination is down (the spool and dead letters of the ClickHouse sinks). Several
// destinations are several `webhook` entries: each has its own queue, spool and in-flight limit, so
// a slow one never slows another (the engine's write() only buffers).

import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { type Static, Type } from '@sinclair/typebox'
import type { AnalyticsEvent } from '../../core/event.ts'
import { ConfigError } from '../../core/plugin.ts'
import { eventRow } from '../../core/rows.ts'
import { defineSink } from '../../core/sink.ts'
import { compileWildcard, type Matcher } from '../../core/wildcard.ts'
import { DeadLetterFile, Spool, SpoolBudget } from '../spool/spool.ts'
import { Dispatcher } from './dispatch.ts'
import { compileTemplate, type Template } from './template.ts'

const options = Type.Object(
  {
    url: Type.String({
      pattern: '^https?://',
      description: 'The destination (http or https). Logs and health show only its scheme, host and port.',
    }),
    events: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'Event names to send; `*` matches any run of characters (`Signup*`). Empty = every event.',
    }),
    sites: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'Sites to send, by id or by one of their domains. Empty = every site.',
    }),
    template: Type.Optional(
      Type.Unknown({
        description:
          'JSON payload per event with {{field}} placeholders (row columns, domain, time, unix_time, props, props.<key>); absent = the events_v2 row.',
      }),
    ),
    body: Type.Union([Type.Literal('array'), Type.Literal('ndjson'), Type.Literal('object')], {
      default: 'array',
      description:
        'Request body: a JSON array of payloads, NDJSON (one per line), or `object`: one payload per request, unwrapped.',
    }),
    headers: Type.Record(Type.String({ pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$" }), Type.String(), {
      default: {},
      description: 'Extra request headers (e.g. Authorization). Never logged.',
    }),
    batchSize: Type.Integer({
      minimum: 1,
      maximum: 10_000,
      default: 100,
      description: 'Payloads per request; a batch is sent when full or flushIntervalMs after its first payload.',
    }),
    flushIntervalMs: Type.Integer({
      minimum: 10,
      default: 1000,
      description: 'Longest time a payload waits in memory before its batch is sent.',
    }),
    timeoutMs: Type.Integer({
      minimum: 100,
      default: 10_000,
      description: 'A request without a complete answer after this long counts as failed and is retried.',
    }),
    concurrency: Type.Integer({
      minimum: 1,
      maximum: 64,
      default: 4,
      description: 'Requests in flight to this destination at most (a backlog replays one at a time).',
    }),
    retryMaxMs: Type.Integer({
      minimum: 10,
      default: 30_000,
      description:
        'Cap of the exponential backoff between retries (they go on forever; Retry-After is honoured up to it).',
    }),
    spoolDir: Type.String({
      default: '',
      description: 'Folder of the on-disk spool; empty = <stateDir>/spool/webhook-<hash of url>.',
    }),
    spoolLimitMb: Type.Integer({
      minimum: 1,
      default: 256,
      description: 'Disk the spool may use (MiB); past it, payloads wait in memory, then are dropped and counted.',
    }),
    deadLetterFile: Type.String({
      default: '',
      description:
        'File of batches the destination refused (3xx, 4xx but 408/425/429); empty = <spoolDir>/dead-letters.ndjson.',
    }),
  },
  { additionalProperties: false },
)

type Options = Static<typeof options>

/** `*` anywhere, no separator: event names are flat. */
function nameFilter(patterns: string[]): (name: string) => boolean {
  if (patterns.length === 0) return () => true
  const matchers: Matcher[] = patterns.map((p) => compileWildcard(p, 'plausible', '\u0000'))
  return (name) => matchers.some((m) => m(name))
}

function siteFilter(entries: string[]): (event: AnalyticsEvent) => boolean {
  if (entries.length === 0) return () => true
  const wanted = new Set(entries.map((e) => e.toLowerCase()))
  return (event) => {
    if (wanted.has(String(event.site_id))) return true
    const domains = event.site?.domains ?? [event.domain]
    return domains.some((d) => wanted.has(d.toLowerCase()))
  }
}

function encoderFor(body: Options['body']): { contentType: string; encode(items: string[]): string } {
  if (body === 'ndjson') return { contentType: 'application/x-ndjson', encode: (items) => `${items.join('\n')}\n` }
  if (body === 'object') return { contentType: 'application/json', encode: (items) => items[0]! }
  return { contentType: 'application/json', encode: (items) => `[${items.join(',')}]` }
}

export default defineSink({
  name: 'webhook',
  summary:
    'POSTs events to one HTTP destination: filtered, templated, batched, retried with backoff, spooled while it is down.',
  options,
  async setup(o, engine, stats) {
    let url: URL
    try {
      url = new URL(o.url)
    } catch {
      throw new ConfigError('url', 'not a valid URL')
    }
    const template: Template | undefined =
      o.template === undefined ? undefined : compileTemplate(o.template, 'template')
    const wantedName = nameFilter(o.events)
    const wantedSite = siteFilter(o.sites)
    // The spool folder follows the destination and what is sent to it, so a restart with the same
    // config finds its backlog and two entries for one URL (other events, another template) do not
    // share one; two identical entries are refused by the spool's lock.
    const identity = JSON.stringify([o.url, o.events, o.sites, o.template ?? null, o.body])
    const hash = createHash('sha256').update(identity).digest('hex').slice(0, 12)
    const spoolDir = engine.perWorker(
      o.spoolDir ? engine.resolvePath(o.spoolDir) : join(engine.stateDir, 'spool', `webhook-${hash}`),
    )
    let spool: Spool
    try {
      spool = await Spool.open(spoolDir, new SpoolBudget(o.spoolLimitMb * 1024 * 1024), { logger: engine.logger })
    } catch (error) {
      throw new ConfigError('spoolDir', `cannot open the spool folder ${spoolDir}: ${(error as Error).message}`)
    }
    const deadLetterPath = o.deadLetterFile
      ? engine.resolvePath(o.deadLetterFile)
      : join(spoolDir, 'dead-letters.ndjson')
    let deadLetters: DeadLetterFile
    try {
      deadLetters = new DeadLetterFile(deadLetterPath)
    } catch (error) {
      throw new ConfigError('deadLetterFile', `cannot create ${deadLetterPath}: ${(error as Error).message}`)
    }
    if (spool.rows > 0) {
      engine.logger.info('Replaying webhook payloads spooled by a previous run.', {
        sink: 'webhook',
        destination: url.origin,
        rows: spool.rows,
      })
    }
    const { contentType, encode } = encoderFor(o.body)
    const dispatcher = new Dispatcher({
      url: o.url,
      origin: url.origin,
      headers: o.headers,
      contentType,
      encode,
      batchSize: o.body === 'object' ? 1 : o.batchSize,
      flushIntervalMs: o.flushIntervalMs,
      timeoutMs: o.timeoutMs,
      concurrency: o.concurrency,
      retryInitialMs: Math.min(100, o.retryMaxMs),
      retryMaxMs: o.retryMaxMs,
      spool,
      deadLetters,
      stats,
      logger: engine.logger,
      sink: 'webhook',
    })
    return {
      write(event) {
        if (!wantedName(event.name) || !wantedSite(event)) return
        const row = eventRow(event)
        dispatcher.add(JSON.stringify(template ? template({ row, event }) : row))
      },
      flush: () => dispatcher.flush(),
      async close() {
        await dispatcher.close()
        await spool.close()
      },
      health: () => ({ ...dispatcher.health(), spoolLimitBytes: o.spoolLimitMb * 1024 * 1024 }),
    }
  },
})
