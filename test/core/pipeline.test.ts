// The compiled pipeline: stage order, config order within a stage, drops as values, faults, async.

import { afterAll, describe, expect, test } from 'bun:test'
import { resolve } from 'node:path'
import { startTestEngine } from '../../core/testing.ts'

const root = resolve(import.meta.dir, '../..')

describe('order', async () => {
  const engine = await startTestEngine(
    {
      sites: [{ id: 7, domain: 'example.com' }],
      // Listed out of stage order on purpose; the same module twice keeps config order in its stage.
      plugins: [
        { './test/fixtures/trace-enrich.ts': { label: 'enrich-1' } },
        './test/fixtures/test-dialect.ts',
        './test/fixtures/trace-shield.ts',
        { './test/fixtures/trace-enrich.ts': { label: 'enrich-2' } },
        './test/fixtures/trace-identify.ts',
      ],
    },
    root,
  )
  afterAll(() => engine.close())

  test('stages run in the fixed table order, config order within a stage', async () => {
    const res = await engine.post('/t/event', { d: 'example.com' })
    expect(res.status).toBe(202)
    const row = engine.events()[0]!
    expect(row['meta.key']).toEqual(['trace'])
    expect(row['meta.value']).toEqual(['identify,shield,enrich-1,enrich-2'])
    expect(row.site_id).toBe('7')
  })

  test('the compiled steps are listed in that order', () => {
    expect(engine.engine.pipeline.steps.map((s) => `${s.stage}:${s.name}`)).toEqual([
      'identify:trace-identify',
      'shield:trace-shield',
      'enrich:trace-enrich',
      'enrich:trace-enrich',
    ])
  })
})

describe('drops and faults', async () => {
  const engine = await startTestEngine(
    {
      sites: [{ id: 1, domain: 'example.com' }],
      plugins: [
        './test/fixtures/test-dialect.ts',
        { './test/fixtures/drop-when.ts': { names: ['spam'], undeclaredFor: 'odd' } },
        './test/fixtures/throws.ts',
        './test/fixtures/trace-enrich.ts',
      ],
    },
    root,
  )
  afterAll(() => engine.close())
  const send = async (n: string, d = 'example.com') =>
    ((await (await engine.post('/t/event', { n, d })).json()) as { outcomes: string[] }).outcomes[0]
  /** The current value of one metric line (0 when absent), so each test measures its own change. */
  const metric = (line: string) => {
    const found = engine.engine.metrics
      .render()
      .split('\n')
      .find((l) => l.startsWith(`${line} `))
    return found ? Number(found.slice(line.length + 1)) : 0
  }
  const PLUGIN_ERRORS = 'analytics_events_dropped_total{reason="plugin_error",site="example.com"}'

  test('a drop stops the event, is returned as a value and counted by reason and site', async () => {
    const line = 'analytics_events_dropped_total{reason="blocked_name",site="example.com"}'
    const before = metric(line)
    expect(await send('spam')).toBe('blocked_name')
    expect(metric(line)).toBe(before + 1)
    expect(engine.events().some((r) => r.name === 'spam')).toBe(false)
  })

  test('a plugin that throws drops only that event, as plugin_error', async () => {
    const before = metric(PLUGIN_ERRORS)
    const rows = engine.events().length
    expect(await send('boom')).toBe('plugin_error')
    expect(await send('pageview')).toBe('ok')
    expect(metric(PLUGIN_ERRORS)).toBe(before + 1)
    expect(
      engine
        .events()
        .slice(rows)
        .map((r) => r.name),
    ).toEqual(['pageview'])
  })

  test('an undeclared drop reason is a fault, not a verdict', async () => {
    expect(await send('odd')).toBe('plugin_error')
  })

  test('drop counters exist from start for every declared reason and configured site', () => {
    const metrics = engine.engine.metrics.render()
    expect(metrics).toContain('analytics_events_dropped_total{reason="undeclared_test",site="example.com"} 0')
    expect(metrics).toContain('analytics_events_dropped_total{reason="not_found",site="other"}')
  })

  test('an unknown site is a drop counted under the shared label', async () => {
    const line = 'analytics_events_dropped_total{reason="not_found",site="other"}'
    const before = metric(line)
    expect(await send('pageview', 'unknown.example')).toBe('not_found')
    expect(metric(line)).toBe(before + 1)
  })

  test('accepted events are counted per site', async () => {
    const line = 'analytics_events_accepted_total{site="example.com"}'
    const before = metric(line)
    expect(await send('pageview')).toBe('ok')
    expect(metric(line)).toBe(before + 1)
  })
})

describe('async plugins', async () => {
  const engine = await startTestEngine(
    {
      sites: 'any',
      plugins: ['./test/fixtures/test-dialect.ts', './test/fixtures/async-step.ts', './test/fixtures/trace-enrich.ts'],
    },
    root,
  )
  afterAll(() => engine.close())

  test('steps after an async plugin still run, in order', async () => {
    const rows = engine.events().length
    const res = await engine.post('/t/event', { n: 'pageview', d: 'a.example' })
    expect(await res.json()).toMatchObject({ outcomes: ['ok'] })
    const row = engine.events()[rows]!
    expect(row['meta.key']).toEqual(['async', 'trace'])
    expect(row['meta.value']).toEqual(['yes', 'enrich'])
  })

  test('an async drop is a drop', async () => {
    const rows = engine.events().length
    const res = await engine.post('/t/event', { n: 'late-drop', d: 'a.example' })
    expect(await res.json()).toMatchObject({ outcomes: ['late'] })
    expect(engine.events()).toHaveLength(rows)
  })

  test('sites: any derives a stable id from the domain', async () => {
    await engine.post('/t/event', { n: 'pageview', d: 'a.example' })
    const ids = engine.events().map((r) => r.site_id)
    expect(new Set(ids).size).toBe(1)
    expect(Number(ids[0])).toBeGreaterThan(0)
    expect(Number.isSafeInteger(Number(ids[0]))).toBe(true)
  })
})
