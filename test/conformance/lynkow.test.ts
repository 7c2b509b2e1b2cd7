// A realistic Lynkow visit over HTTP through the full default pipeline (spec/lynkow-dialect.md and
// the seed's field table): pageview, scroll, click, form start and submit, Core Web Vitals, exit.
// Checks the answers, the events_v2 rows, the sessions_v2 rows, and that no raw client id is stored.

import { afterAll, expect, test } from 'bun:test'
import { resolve } from 'node:path'
import { STANDARD_PLUGINS } from '../../core/defaults.ts'
import type { JsonRow } from '../../core/rows.ts'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'
import { builtinPlugins } from '../../plugins/registry.ts'

const root = resolve(import.meta.dir, '../..')
const plugins = STANDARD_PLUGINS.filter((name) => name in builtinPlugins).map((name) =>
  name === 'spam-referrers' ? { 'spam-referrers': { lists: [resolve(root, 'test/fixtures/spammers.txt')] } } : name,
)
const t = await startTestEngine({ sites: [{ id: 2, domain: 'lynkow.example' }], plugins }, root)
afterAll(() => t.close())

const VISITOR = 'visitor-0001-abcdef'
const SESSION = 'session-abc-123456'

async function collect(body: Record<string, unknown>, contentType = 'application/json') {
  const res = await t.handle(
    new Request('http://localhost/public/2/analytics/collect', {
      method: 'POST',
      headers: {
        'content-type': contentType,
        'user-agent': TEST_UA,
        origin: 'https://lynkow.example',
        'x-forwarded-for': '198.51.100.23',
      },
      body: JSON.stringify(body),
    }),
  )
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

const base = (eventType: string, extra: Record<string, unknown> = {}) => ({
  session_id: SESSION,
  visitor_id: VISITOR,
  event_type: eventType,
  page_url: 'https://lynkow.example/pricing?utm_source=newsletter&utm_medium=email',
  page_path: '/pricing',
  event_time: new Date().toISOString(),
  ...extra,
})

const props = (row: JsonRow) =>
  Object.fromEntries((row['meta.key'] as string[]).map((k, i) => [k, (row['meta.value'] as string[])[i]]))

test('a realistic visit is recorded event by event, in one session', async () => {
  const visit: Record<string, unknown>[] = [
    base('pageview', { page_title: 'Pricing', page_referrer: 'https://www.google.com/', language: 'fr-FR' }),
    base('scroll', { scroll_depth: 60, scroll_behavior: 'reading' }),
    base('click', { click_x: 120, click_y: 340, click_element_tag: 'button', click_element_text: 'Start trial' }),
    base('form_start', { form_id: 'signup' }),
    base('form_submit', { form_id: 'signup', form_completion_rate: 1 }),
    base('cwv', { lcp: 1234.5, cls: 0.05, inp: 80 }),
    base('exit', { time_on_page: 45000, is_exit: true }),
  ]
  const firstRow = t.events().length
  const firstSessionRow = t.sessions().length
  // sendBeacon's text/plain for one of them, as browsers send it.
  for (const [i, body] of visit.entries()) {
    const answer = await collect(body, i === 6 ? 'text/plain;charset=UTF-8' : 'application/json')
    expect(answer).toEqual({ status: 202, body: { message: 'Event received' } })
  }

  const rows = t.events().slice(firstRow)
  expect(rows.map((r) => r.name)).toEqual(['pageview', 'scroll', 'click', 'form_start', 'form_submit', 'cwv', 'exit'])
  for (const row of rows) {
    expect(row.site_id).toBe('2')
    expect(row.hostname).toBe('lynkow.example')
    expect(row.pathname).toBe('/pricing')
    // One client session, one visitor: the same keyed hashes on every row.
    expect(row.session_id).toBe(rows[0]!.session_id)
    expect(row.user_id).toBe(rows[0]!.user_id)
    // Attribution from the first event, frozen for the session.
    expect(row.referrer_source).toBe('newsletter')
    expect(row.utm_medium).toBe('email')
    expect(row.browser).toBe('Chrome')
  }
  expect(rows[0]!.referrer).toBe('google.com')
  expect(rows[1]!.scroll_depth).toBe(60)
  expect(rows[6]!.engagement_time).toBe(45000)
  expect(props(rows[2]!)).toMatchObject({ click_x: '120', click_y: '340', click_element_tag: 'button' })
  expect(props(rows[3]!)).toMatchObject({ form_id: 'signup' })
  expect(props(rows[4]!)).toMatchObject({ form_id: 'signup', form_completion_rate: '1' })
  expect(props(rows[5]!)).toMatchObject({ lcp: '1234.5', cls: '0.05', inp: '80' })

  // sessions_v2: one +1 row, then a -1/+1 pair per later event; the final state counts them all.
  const sessions = t.sessions().slice(firstSessionRow)
  expect(sessions.map((s) => s.sign)).toEqual([1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1])
  const final = sessions.at(-1)!
  expect(final).toMatchObject({
    session_id: rows[0]!.session_id,
    pageviews: 1,
    events: 7,
    entry_page: '/pricing',
    exit_page: '/pricing',
    hostname: 'lynkow.example',
    // A click and a form are interactions: not a bounce.
    is_bounce: 0,
  })

  // The raw client ids are never stored.
  const stored = JSON.stringify([rows, sessions])
  expect(stored).not.toContain(VISITOR)
  expect(stored).not.toContain(SESSION)
})

test("the seed's own minimal example is a pageview of /pricing", async () => {
  const before = t.events().length
  const answer = await collect({ event: 'page_view', path: '/pricing' })
  expect(answer).toEqual({ status: 202, body: { message: 'Event received' } })
  const row = t.events()[before]!
  expect([row.name, row.pathname]).toEqual(['pageview', '/pricing'])
})
