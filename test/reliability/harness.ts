// Shared set-up of the reliability suite (docs/reliability.md): the real engine with the standard
// plugins, checks every answer must pass whatever the input, and small request builders.

import { expect } from 'bun:test'
import { resolve } from 'node:path'
import { STANDARD_PLUGINS } from '../../core/defaults.ts'
import { createLogger, type Logger } from '../../core/logger.ts'
import { startTestEngine, TEST_UA, type TestEngine } from '../../core/testing.ts'
import { builtinPlugins } from '../../plugins/registry.ts'

export const ROOT = resolve(import.meta.dir, '../..')
export const PLAUSIBLE = '/api/event'
export const LYNKOW = '/public/1/analytics/collect'
export { TEST_UA }

/** A local spam list, so no test ever reaches for the network default. */
export const SPAM_LIST = resolve(import.meta.dir, 'fixtures/spammers.txt')

/**
 * The standard plugins, in their default order, as config entries. `overrides` gives options by
 * plugin name; spam-referrers always reads the local list.
 */
export function standardPlugins(overrides: Record<string, Record<string, unknown>> = {}): unknown[] {
  return STANDARD_PLUGINS.filter((name) => name in builtinPlugins).map((name) => {
    const options = name === 'spam-referrers' ? { lists: [SPAM_LIST], ...overrides[name] } : overrides[name]
    return options === undefined ? name : { [name]: options }
  })
}

/** The engine most tests use: one configured site (id 1, example.com) and every standard plugin. */
export function standardEngine(
  extra: { server?: Record<string, unknown>; sites?: unknown; plugins?: Record<string, Record<string, unknown>> } = {},
): Promise<TestEngine> {
  return startTestEngine(
    {
      server: { bodyLimit: 65536, ...extra.server },
      sites: extra.sites ?? [{ id: 1, domain: 'example.com' }],
      plugins: standardPlugins(extra.plugins),
    },
    ROOT,
  )
}

/** Lines a logger wrote, for tests that read the engine's logs (startTestEngine's logger is silent). */
export function capturingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = []
  return { logger: createLogger({ level: 'debug', write: (line) => lines.push(line) }), lines }
}

/** Like startTestEngine, with a logger of the caller's choice. */
export function startLoggedEngine(config: Record<string, unknown>, logger: Logger): Promise<TestEngine> {
  return startTestEngine(config, ROOT, { logger })
}

/** Clears the memory sink, so long runs measure the engine and not the rows a test keeps. */
export function clearRows(t: TestEngine): void {
  const memory = t.engine.sinks.find((s) => s.name === 'memory')!.instance as unknown as { clear(): void }
  memory.clear()
}

/** A raw POST: any body (bytes, stream), any headers (none added but a browser user agent). */
export function rawPost(
  t: TestEngine,
  path: string,
  body: BodyInit | null,
  headers: Record<string, string> = { 'content-type': 'application/json' },
  peerIp?: string,
): Promise<Response> {
  const init: RequestInit & { duplex?: string } = {
    method: 'POST',
    headers: { 'user-agent': TEST_UA, ...headers },
    body,
  }
  if (body instanceof ReadableStream) init.duplex = 'half'
  return t.handle(new Request(`http://localhost${path}`, init), peerIp)
}

/** What an answer may never contain: stack frames, source paths, error class names, internals. */
const LEAKS: [string, RegExp][] = [
  ['a stack frame', /\bat \S+ \(|\n\s*at |^\s*at /m],
  ['a source position', /\.(?:ts|js|mjs|tsx):\d+/],
  ['a file path', /(?:\/work\/|\/home\/|\/tmp\/|node_modules|file:\/\/\/|[A-Z]:\\)/],
  ['an error name', /\b(?:Error|TypeError|RangeError|SyntaxError|ReferenceError):/],
  ['an internal error', /internal error/i],
]

/** Fails when a response body shows an internal detail. */
export function expectNoLeak(body: string, context = ''): void {
  for (const [what, pattern] of LEAKS) {
    if (pattern.test(body))
      throw new Error(`answer shows ${what}${context ? ` (${context})` : ''}: ${body.slice(0, 300)}`)
  }
}

/** Answers the core itself gives before a dialect sees the body (limits, encodings). */
const CORE_ANSWERS: Record<number, RegExp> = {
  400: /^request body could not be read$/,
  408: /^request body did not arrive in time$/,
  413: /^request body exceeds \d+ bytes$/,
  415: /^unsupported content-encoding/,
}

export interface Checked {
  status: number
  text: string
  headers: Headers
}

/**
 * Reads an answer of POST /api/event and checks it is one Plausible documents: `202 ok` (with
 * `x-plausible-dropped` a positive count when present) or `400 {"errors": {field: [message]}}`,
 * or one of the core's plain-text refusals; never a 5xx and never an internal detail.
 */
export async function checkPlausible(res: Response, context = ''): Promise<Checked> {
  const text = await res.text()
  const where = `${context} → ${res.status} ${text.slice(0, 200)}`
  expectNoLeak(text, context)
  expect(res.status, where).toBeLessThan(500)
  expect(res.headers.get('access-control-allow-origin'), where).toBe('*')
  if (res.status === 202) {
    expect(text, where).toBe('ok')
    const dropped = res.headers.get('x-plausible-dropped')
    if (dropped !== null) expect(dropped, where).toMatch(/^[1-9]\d*$/)
  } else if (res.status === 400 && text.startsWith('{')) {
    const body = JSON.parse(text) as { errors: Record<string, unknown> }
    expect(Object.keys(body), where).toEqual(['errors'])
    const fields = Object.keys(body.errors)
    expect(fields.length, where).toBeGreaterThan(0)
    for (const field of fields) {
      expect(['domain', 'event_name', 'hash_mode', 'props', 'request', 'url'], where).toContain(field)
      const messages = body.errors[field] as unknown[]
      expect(Array.isArray(messages) && messages.length > 0, where).toBe(true)
      for (const m of messages) expect(typeof m, where).toBe('string')
    }
  } else {
    expect(Object.keys(CORE_ANSWERS).map(Number), where).toContain(res.status)
    expect(text, where).toMatch(CORE_ANSWERS[res.status]!)
  }
  return { status: res.status, text, headers: res.headers }
}

/**
 * Reads an answer of the Lynkow route and checks it is one docs/lynkow.md documents: JSON with a
 * `message` (202, 429 with Retry-After) or `errors` (422), or one of the core's refusals.
 */
export async function checkLynkow(res: Response, context = ''): Promise<Checked> {
  const text = await res.text()
  const where = `${context} → ${res.status} ${text.slice(0, 200)}`
  expectNoLeak(text, context)
  expect(res.status, where).toBeLessThan(500)
  expect(res.headers.get('access-control-allow-origin'), where).toBe('*')
  if (res.status === 202 || res.status === 422 || res.status === 429) {
    expect(res.headers.get('content-type'), where).toContain('application/json')
    const body = JSON.parse(text) as Record<string, unknown>
    if (res.status === 422) {
      expect(Object.keys(body), where).toEqual(['errors'])
      const errors = body.errors as { field: unknown; rule: unknown; message: unknown }[]
      expect(errors.length, where).toBeGreaterThan(0)
      for (const e of errors) {
        expect(typeof e.field, where).toBe('string')
        expect(typeof e.rule, where).toBe('string')
        expect(typeof e.message, where).toBe('string')
      }
    } else {
      expect(Object.keys(body), where).toEqual(['message'])
      expect(typeof body.message, where).toBe('string')
      expect(body.message as string, where).toMatch(/^Event (received|not stored)/)
    }
    if (res.status === 429) expect(res.headers.get('retry-after'), where).toMatch(/^\d+$/)
  } else {
    expect(Object.keys(CORE_ANSWERS).map(Number), where).toContain(res.status)
    expect(text, where).toMatch(CORE_ANSWERS[res.status]!)
  }
  return { status: res.status, text, headers: res.headers }
}

/** The control characters (C0, DEL) in `text`, as code points; empty when there are none. */
export function controlCharacters(text: string): number[] {
  const found: number[] = []
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) found.push(c)
  }
  return found
}

/** Heap in use after a full collection, in bytes. */
export function heapAfterGc(): number {
  Bun.gc(true)
  Bun.gc(true)
  return process.memoryUsage().heapUsed
}

/**
 * Milliseconds of CPU this process spends on `fn`. CPU time, not wall time: the budgets tell linear
 * from quadratic work, and on a shared machine wall time also counts the time other processes held
 * the cores.
 */
export async function timed(fn: () => unknown): Promise<number> {
  const start = process.cpuUsage()
  await fn()
  const spent = process.cpuUsage(start)
  return (spent.user + spent.system) / 1000
}
