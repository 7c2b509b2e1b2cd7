// Faults (docs/reliability.md "Plugin faults", "Sink outages"): a plugin that throws costs only the
// event it threw on (dropped as plugin_error, counted, logged once per interval); a sink that hangs
// or refuses rows never stalls or fails the HTTP answers, and /health tells.

import { afterAll, describe, expect, test } from 'bun:test'
import type { TestEngine } from '../../core/testing.ts'
import {
  capturingLogger,
  checkLynkow,
  checkPlausible,
  controlCharacters,
  LYNKOW,
  PLAUSIBLE,
  rawPost,
  standardPlugins,
  startLoggedEngine,
  TEST_UA,
} from './harness.ts'

const THROWER = './test/reliability/fixtures/throw-on.ts'
const HANGING = './test/reliability/fixtures/hanging-sink.ts'

async function metricsOf(t: TestEngine): Promise<string> {
  return (await t.handle(new Request('http://localhost/metrics'))).text()
}
function counter(metrics: string, line: string): number {
  const found = metrics.split('\n').find((l) => l.startsWith(`${line} `))
  return found === undefined ? Number.NaN : Number(found.slice(line.length + 1))
}
const PLUGIN_ERRORS = 'analytics_events_dropped_total{reason="plugin_error",site="example.com"}'

describe('a plugin that throws', async () => {
  const t = await startLoggedEngine(
    {
      sites: [{ id: 1, domain: 'example.com', domains: ['example.org'] }],
      plugins: [...standardPlugins({ 'rate-limit': { perIp: { events: 0 } } }), THROWER],
    },
    capturingLogger().logger,
  )
  afterAll(() => t.close())
  const pageview = (path: string, d = 'example.com') =>
    JSON.stringify({ n: 'pageview', u: `https://example.com${path}`, d })

  test('drops only that event as plugin_error, counted; the request is answered as usual', async () => {
    const before = counter(await metricsOf(t), PLUGIN_ERRORS)
    const stored = t.events().length
    const p = await checkPlausible(await rawPost(t, PLAUSIBLE, pageview('/boom/error')))
    expect(p.status).toBe(202)
    expect(p.headers.get('x-plausible-dropped')).toBe('1')
    const l = await checkLynkow(await rawPost(t, LYNKOW, JSON.stringify({ event: 'pageview', path: '/boom/error' })))
    expect(JSON.parse(l.text)).toEqual({ message: 'Event not stored: a processing error (plugin_error)' })
    expect(counter(await metricsOf(t), PLUGIN_ERRORS)).toBe(before + 2)
    expect(t.events().length).toBe(stored)
    // The next request, and the other events, go on.
    expect(
      (await checkPlausible(await rawPost(t, PLAUSIBLE, pageview('/fine')))).headers.get('x-plausible-dropped'),
    ).toBeNull()
    expect(t.events().length).toBe(stored + 1)
  })

  test('a throw on one event of a multi-domain request costs that event only', async () => {
    const stored = t.events().length
    const p = await checkPlausible(await rawPost(t, PLAUSIBLE, pageview('/boom/org', 'example.com,example.org')))
    expect(p.headers.get('x-plausible-dropped')).toBe('1')
    expect(t.events().length).toBe(stored + 1)
    expect(t.events().at(-1)!.pathname).toBe('/boom/org')
    // Faults in concurrent requests do not reach their neighbours either.
    const answers = await Promise.all([
      rawPost(t, PLAUSIBLE, pageview('/boom/error', 'example.com,example.org')),
      rawPost(t, PLAUSIBLE, pageview('/fine', 'example.com,example.org')),
    ])
    expect((await checkPlausible(answers[0]!)).headers.get('x-plausible-dropped')).toBe('2')
    expect((await checkPlausible(answers[1]!)).headers.get('x-plausible-dropped')).toBeNull()
    expect(t.events().length).toBe(stored + 3)
  })

  test.each(['string', 'reject'])('a thrown %s is a plugin_error too', async (kind) => {
    const before = counter(await metricsOf(t), PLUGIN_ERRORS)
    const p = await checkPlausible(await rawPost(t, PLAUSIBLE, pageview(`/boom/${kind}`)))
    expect(p.headers.get('x-plausible-dropped')).toBe('1')
    expect(counter(await metricsOf(t), PLUGIN_ERRORS)).toBe(before + 1)
  })

  // Regression: describing a thrown value without a prototype, or an Error whose message is not a
  // string, made Pipeline.fault throw itself, and the request was answered 500.
  test.each(['nullproto', 'message'])('a thrown %s value is a plugin_error, not a 500', async (kind) => {
    const before = counter(await metricsOf(t), PLUGIN_ERRORS)
    const p = await checkPlausible(await rawPost(t, PLAUSIBLE, pageview(`/boom/${kind}`)))
    expect(p.headers.get('x-plausible-dropped')).toBe('1')
    expect(counter(await metricsOf(t), PLUGIN_ERRORS)).toBe(before + 1)
    const l = await checkLynkow(await rawPost(t, LYNKOW, JSON.stringify({ event: 'pageview', path: `/boom/${kind}` })))
    expect(JSON.parse(l.text).message).toBe('Event not stored: a processing error (plugin_error)')
  })

  test('the process keeps serving after a thousand faults', async () => {
    for (let i = 0; i < 1000; i++) {
      const res = await rawPost(
        t,
        i % 2 ? LYNKOW : PLAUSIBLE,
        i % 2 ? JSON.stringify({ event: 'pageview', path: '/boom/error' }) : pageview('/boom/error'),
      )
      expect(res.status).toBe(202)
      await res.arrayBuffer()
    }
    expect(
      (await checkPlausible(await rawPost(t, PLAUSIBLE, pageview('/after')))).headers.get('x-plausible-dropped'),
    ).toBeNull()
    expect((await t.handle(new Request('http://localhost/health'))).status).toBe(200)
  })
})

test('a stream of faults is logged once per interval, as one escaped line with the detail cut', async () => {
  // An engine of its own: the log throttle is per engine, and this test must see its first line.
  const { logger, lines } = capturingLogger()
  const t = await startLoggedEngine(
    { sites: [{ id: 1, domain: 'example.com' }], plugins: [...standardPlugins(), THROWER] },
    logger,
  )
  try {
    // The fixture quotes the user agent in its message: a terminal escape must not reach the log raw.
    const headers = { 'content-type': 'text/plain', 'user-agent': `${TEST_UA} \u001b[2J\u001b]0;title\u0007` }
    const body = JSON.stringify({ n: 'pageview', u: 'https://example.com/boom/error', d: 'example.com' })
    for (let i = 0; i < 50; i++) {
      const res = await rawPost(t, PLAUSIBLE, body, headers, `203.0.113.${i}`)
      expect(res.headers.get('x-plausible-dropped')).toBe('1')
    }
    const logged = lines.filter((l) => l.includes('A plugin threw on an event'))
    expect(logged).toHaveLength(1)
    const entry = JSON.parse(logged[0]!)
    expect(entry).toMatchObject({ level: 'error', plugin: 'throw-on', error: 'Error' })
    expect(entry.detail.length).toBeLessThanOrEqual(200)
    expect(entry.detail).toContain('\u001b[2J')
    for (const line of lines) {
      expect(line.endsWith('\n')).toBe(true)
      expect(controlCharacters(line.slice(0, -1))).toEqual([])
    }
  } finally {
    await t.close()
  }
})

describe('a sink that hangs', async () => {
  const t = await startLoggedEngine(
    {
      sites: [{ id: 1, domain: 'example.com' }],
      plugins: standardPlugins({ 'rate-limit': { perIp: { events: 0 } } }),
      sinks: [{ [HANGING]: { maxBuffered: 50 } }],
    },
    capturingLogger().logger,
  )
  afterAll(() => t.close())
  const body = JSON.stringify({ n: 'pageview', u: 'https://example.com/', d: 'example.com' })

  test('requests keep being answered fast, other sinks keep getting rows, /health turns 503', async () => {
    const health = async () => {
      const res = await t.handle(new Request('http://localhost/health'))
      return {
        status: res.status,
        body: (await res.json()) as { status: string; sinks: Record<string, { state: string }> },
      }
    }
    expect((await health()).status).toBe(200)
    const stored = t.events().length
    const slowest: number[] = []
    const start = performance.now()
    for (let i = 0; i < 500; i++) {
      const sent = performance.now()
      const res = await rawPost(
        t,
        i % 2 ? LYNKOW : PLAUSIBLE,
        i % 2 ? JSON.stringify({ event: 'pageview', path: '/' }) : body,
        { 'content-type': 'text/plain' },
        `203.0.113.${i % 200}`,
      )
      expect(res.status).toBe(202)
      await res.arrayBuffer()
      slowest.push(performance.now() - sent)
    }
    const total = performance.now() - start
    slowest.sort((a, b) => b - a)
    // No answer waits on the sink: 500 requests in well under the time one flush would take (never).
    expect(total).toBeLessThan(5000)
    expect(slowest[4]!).toBeLessThan(100)
    // The memory sink, side by side, got every row.
    expect(t.events().length).toBe(stored + 500)
    const h = await health()
    expect(h.status).toBe(503)
    expect(h.body.status).toBe('failing')
    expect(h.body.sinks.hanging!.state).toBe('failing')
    expect(h.body.sinks.memory!.state).toBe('ok')
    // Metrics still answer, and tell.
    const metrics = await metricsOf(t)
    expect(metrics).toContain('analytics_sink_rows_failed_total')
  })
})

describe('a sink whose write throws', async () => {
  const t = await startLoggedEngine(
    {
      sites: [{ id: 1, domain: 'example.com' }],
      plugins: standardPlugins(),
      sinks: [{ [HANGING]: { throwOnWrite: true } }],
    },
    capturingLogger().logger,
  )
  afterAll(() => t.close())

  test('the request is still answered and the other sinks still get the row', async () => {
    const stored = t.events().length
    const p = await checkPlausible(
      await rawPost(t, PLAUSIBLE, JSON.stringify({ n: 'pageview', u: 'https://example.com/', d: 'example.com' })),
    )
    expect(p.status).toBe(202)
    expect(p.headers.get('x-plausible-dropped')).toBeNull()
    const l = await checkLynkow(await rawPost(t, LYNKOW, JSON.stringify({ event: 'pageview', path: '/' })))
    expect(JSON.parse(l.text).message).toBe('Event received')
    expect(t.events().length).toBe(stored + 2)
  })
})

test('shutdown with a hung flush still ends once the sink closes', async () => {
  const t = await startLoggedEngine(
    {
      sites: [{ id: 1, domain: 'example.com' }],
      plugins: standardPlugins(),
      sinks: [{ [HANGING]: {} }],
    },
    capturingLogger().logger,
  )
  await rawPost(t, PLAUSIBLE, JSON.stringify({ n: 'pageview', u: 'https://example.com/', d: 'example.com' }))
  const result = await Promise.race([t.close().then(() => 'closed'), Bun.sleep(3000).then(() => 'hung')])
  expect(result).toBe('closed')
  // After shutdown, /health says so.
  expect((await t.handle(new Request('http://localhost/health'))).status).toBe(503)
})
