// `explain`: one request through the configured pipeline, step by step, with nothing written (issue
// "operators' features" item 1). Operators see which plugin kept or dropped an event, what each one
// changed, and the rows the sinks would get; the engine's own sinks are never called.

import type { Engine } from './engine.ts'
import { type AnalyticsEvent, eventFromRequest } from './event.ts'
import { describeThrown, PLUGIN_ERROR, WOULD_DROP_PROP } from './pipeline.ts'
import type { Drop, Ingest, IngestRequest, RunResult, Stage } from './plugin.ts'
import { RouteTable } from './routes.ts'
import { eventRow, type JsonRow, sessionRow } from './rows.ts'
import { withoutCredentials } from './urls.ts'

/** The request file: `{"method", "path", "headers", "body"}`; `peer` stands for the TCP peer. */
export interface ExplainInput {
  method?: string
  path: string
  headers?: Record<string, string>
  /** A string is sent as is; anything else as JSON. */
  body?: unknown
  peer?: string
  /** Milliseconds since the epoch; default now. */
  receivedAt?: number
}

export interface StepTrace {
  plugin: string
  stage: Stage
  verdict: 'pass' | 'drop' | 'would_drop' | 'error'
  reason?: string
  /** Fields this step changed: `[before, after]`, as text. */
  changes: Record<string, [string, string]>
}

export interface EventTrace {
  site: string
  /** `undefined` = kept. */
  dropped?: { reason: string; plugin: string }
  steps: StepTrace[]
  rows: { events_v2: JsonRow[]; sessions_v2: JsonRow[] }
}

export interface ExplainReport {
  request: { method: string; path: string; peer: string }
  /** The dialect and route that took the request; absent when no route matches (404). */
  route?: { plugin: string; method: string; path: string }
  /** Each plugin's options as configured (the client-ip header order among them). */
  plugins: { name: string; stage: Stage; mode: string; options: unknown }[]
  events: EventTrace[]
  response: { status: number; headers: Record<string, string>; body: string }
}

/** Parses and checks a request file's JSON; throws an Error naming the bad field. */
export function parseExplainInput(text: string): ExplainInput {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new Error(`the request is not JSON: ${(error as Error).message}`)
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error('the request must be an object: {"method", "path", "headers", "body"}')
  }
  const input = value as Record<string, unknown>
  if (typeof input.path !== 'string' || !input.path.startsWith('/'))
    throw new Error('path: expected a path like /api/event')
  if (input.method !== undefined && typeof input.method !== 'string') throw new Error('method: expected a string')
  if (input.peer !== undefined && typeof input.peer !== 'string') throw new Error('peer: expected an IP address')
  if (input.receivedAt !== undefined && typeof input.receivedAt !== 'number') {
    throw new Error('receivedAt: expected milliseconds since the epoch')
  }
  if (input.headers !== undefined) {
    if (!input.headers || typeof input.headers !== 'object' || Array.isArray(input.headers)) {
      throw new Error('headers: expected an object of header names to values')
    }
    for (const [name, v] of Object.entries(input.headers)) {
      if (typeof v !== 'string') throw new Error(`headers.${name}: expected a string`)
    }
  }
  return input as unknown as ExplainInput
}

/** Runs the request through the engine's routes and steps without any sink; never throws for bad input. */
export async function explain(engine: Engine, input: ExplainInput): Promise<ExplainReport> {
  const method = (input.method ?? 'POST').toUpperCase()
  const path = input.path.split('?')[0]!
  const peer = input.peer ?? '127.0.0.1'
  // Set-up succeeded for every configured plugin, so the two lists align.
  const plugins = engine.plugins.map((p, i) => ({
    name: p.name,
    stage: p.definition.stage,
    mode: p.mode,
    options: withoutSecrets(engine.config.plugins[i]?.options),
  }))
  const report: ExplainReport = {
    request: { method, path: input.path, peer },
    plugins,
    events: [],
    response: { status: 404, headers: {}, body: '' },
  }
  const found = new RouteTable(engine.routes).find(method, path)
  if (!found) {
    report.response.body = `no route for ${method} ${path} (routes: ${engine.routes.map((r) => `${r.route.method} ${r.route.path}`).join(', ')})`
    return report
  }
  report.route = { plugin: found.plugin, method: found.route.method, path: found.route.path }

  const headers = new Headers(input.headers ?? {})
  const body = input.body === undefined ? '' : typeof input.body === 'string' ? input.body : JSON.stringify(input.body)
  if (!headers.has('content-type') && input.body !== undefined && typeof input.body !== 'string') {
    headers.set('content-type', 'application/json')
  }
  const request = new Request(`http://localhost${input.path}`, {
    method,
    headers,
    body: method === 'GET' ? undefined : body,
  })
  const req: IngestRequest = {
    request,
    body,
    params: found.params,
    peerIp: peer,
    receivedAt: input.receivedAt ?? Date.now(),
  }
  const ingest: Ingest = {
    newEvent: eventFromRequest,
    recordDrop(event, drop) {
      report.events.push({
        site: event.domain || '(none)',
        dropped: { reason: drop.reason, plugin: drop.plugin },
        steps: [],
        rows: { events_v2: [], sessions_v2: [] },
      })
    },
    async process(events) {
      const outcomes: RunResult[] = []
      for (const event of events) {
        const trace = await traceEvent(engine, event)
        report.events.push(trace)
        outcomes.push(trace.dropped ? dropOf(trace.dropped) : undefined)
      }
      return outcomes
    },
  }
  let response: Response
  try {
    response = await found.route.handle(req, ingest)
  } catch (error) {
    const { name, detail } = describeThrown(error)
    response = new Response(`the dialect failed: ${name}: ${detail}`, { status: 500 })
  }
  report.response = {
    status: response.status,
    headers: Object.fromEntries(response.headers),
    body: await response.text(),
  }
  return report
}

function dropOf(d: { reason: string; plugin: string }): Drop {
  return { kind: 'drop', reason: d.reason, plugin: d.plugin }
}

/** The pipeline's semantics (drops, report mode, faults as plugin_error), one step at a time. */
async function traceEvent(engine: Engine, event: AnalyticsEvent): Promise<EventTrace> {
  const trace: EventTrace = {
    site: event.site ? `${event.site.domain} (${event.site.id})` : event.domain,
    steps: [],
    rows: { events_v2: [], sessions_v2: [] },
  }
  if (engine.pipeline.steps.some((s) => s.report)) delete event.props[WOULD_DROP_PROP]
  for (const step of engine.pipeline.steps) {
    const before = snapshot(event)
    const entry: StepTrace = { plugin: step.name, stage: step.stage, verdict: 'pass', changes: {} }
    trace.steps.push(entry)
    let result: RunResult
    try {
      result = await step.run(event, step.ctx)
    } catch (error) {
      const { name, detail } = describeThrown(error)
      entry.verdict = 'error'
      entry.reason = `${PLUGIN_ERROR}: ${name}: ${detail}`
      trace.dropped = { reason: PLUGIN_ERROR, plugin: step.name }
      entry.changes = diff(before, snapshot(event))
      return trace
    }
    if (result && step.report) {
      if (event.props[WOULD_DROP_PROP] === undefined) event.props[WOULD_DROP_PROP] = result.reason
      entry.verdict = 'would_drop'
      entry.reason = result.reason
    } else if (result) {
      entry.verdict = 'drop'
      entry.reason = result.reason
      entry.changes = diff(before, snapshot(event))
      trace.dropped = { reason: result.reason, plugin: step.name }
      return trace
    }
    entry.changes = diff(before, snapshot(event))
  }
  trace.rows.events_v2.push(eventRow(event))
  for (const row of event.sessionRows) trace.rows.sessions_v2.push(sessionRow(row))
  return trace
}

/** The event's fields as text, for diffs: the site by domain and id, props as JSON, session rows by count. */
function snapshot(event: AnalyticsEvent): Map<string, string> {
  const out = new Map<string, string>()
  for (const [key, value] of Object.entries(event)) {
    if (key === 'headers' || key === 'dialectData' || key === 'peerSource') continue
    // The two addresses are read through their getters (the stored fields hold them once known).
    if (key === 'peerAddress') out.set('peerIp', event.peerIp)
    else if (key === 'clientAddress') out.set('clientIp', event.clientIp)
    else if (key === 'site') out.set(key, event.site ? `${event.site.domain} (${event.site.id})` : '')
    else if (key === 'sessionRows') out.set(key, `${event.sessionRows.length} rows`)
    else if (typeof value === 'object') out.set(key, JSON.stringify(value))
    else out.set(key, String(value))
  }
  return out
}

function diff(before: Map<string, string>, after: Map<string, string>): Record<string, [string, string]> {
  const out: Record<string, [string, string]> = {}
  for (const [key, value] of after) {
    const was = before.get(key) ?? ''
    if (was !== value) out[key] = [was, value]
  }
  return out
}

const SECRET_KEY = /pass(word)?|secret|token|api_?key|^key$|authorization/i

/**
 * Options as printed: values of secret-looking keys hidden, credentials cut out of URLs (`${VAR}`
 * substitution has put the real ones in), so a report can be pasted into an issue.
 */
export function withoutSecrets(value: unknown, key = ''): unknown {
  if (typeof value === 'string') {
    if (key !== '' && SECRET_KEY.test(key) && value !== '') return '(hidden)'
    if (!value.includes('@') || !value.includes('://')) return value
    try {
      const url = new URL(value)
      return url.username === '' && url.password === '' ? value : withoutCredentials(value)
    } catch {
      return value
    }
  }
  if (Array.isArray(value)) return value.map((v) => withoutSecrets(v, key))
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withoutSecrets(v, k)]))
  }
  return value
}

/** The report as text for a terminal. */
export function formatExplain(report: ExplainReport): string {
  const lines: string[] = []
  const r = report.request
  lines.push(`request   ${r.method} ${r.path} from ${r.peer}`)
  lines.push(
    report.route ? `route     ${report.route.method} ${report.route.path} (${report.route.plugin})` : 'route     none',
  )
  lines.push('plugins')
  for (const p of report.plugins) {
    const mode = p.mode === 'report' ? ' [mode: report]' : ''
    lines.push(`  ${p.stage.padEnd(9)} ${p.name}${mode} ${JSON.stringify(p.options)}`)
  }
  report.events.forEach((e, i) => {
    lines.push(`event ${i + 1} of ${report.events.length}: site ${e.site}`)
    if (e.steps.length === 0 && e.dropped)
      lines.push(`  dropped by the dialect ${e.dropped.plugin}: ${e.dropped.reason}`)
    for (const s of e.steps) {
      const verdict =
        s.verdict === 'pass'
          ? 'pass'
          : s.verdict === 'would_drop'
            ? `would drop: ${s.reason}`
            : `${s.verdict.toUpperCase()}: ${s.reason}`
      lines.push(`  ${s.stage.padEnd(9)} ${s.plugin.padEnd(16)} ${verdict}`)
      for (const [field, [was, now]] of Object.entries(s.changes)) {
        lines.push(`      ${field}: ${short(was)} → ${short(now)}`)
      }
    }
    if (!e.dropped) {
      lines.push('  kept; rows the sinks would get:')
      for (const row of e.rows.events_v2) lines.push(`    events_v2   ${JSON.stringify(row)}`)
      for (const row of e.rows.sessions_v2) lines.push(`    sessions_v2 ${JSON.stringify(row)}`)
    } else lines.push(`  dropped (${e.dropped.reason}); no rows`)
  })
  const interesting = Object.entries(report.response.headers).filter(([k]) => k.startsWith('x-') || k === 'retry-after')
  lines.push(
    `response  ${report.response.status} ${JSON.stringify(report.response.body)}${interesting.map(([k, v]) => ` ${k}: ${v}`).join('')}`,
  )
  return `${lines.join('\n')}\n`
}

function short(text: string): string {
  const shown = text === '' ? '""' : text
  return shown.length > 120 ? `${shown.slice(0, 117)}...` : shown
}
