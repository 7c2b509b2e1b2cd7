// The Lynkow dialect from a real browser: a small page of our own on `lynkow.example` sends the
// seed's payloads (seeds/004_a84ef18e8bb230e0.txt) by `navigator.sendBeacon` (text/plain, no
// preflight, answer invisible) and by `fetch` with `application/json` (a CORS preflight first, so
// a missing CORS answer loses the event). Rows follow spec/lynkow-dialect.md.

import { afterAll, beforeAll, expect, test } from 'bun:test'
import type { Browser } from 'playwright-core'
import {
  collapseSessions,
  has,
  hasChromium,
  html,
  launchBrowser,
  meta,
  named,
  openScenario,
  type PageServer,
  type Scenario,
  startPageServer,
  warnSkip,
} from './harness.ts'

const ready = hasChromium && has('lynkow')
if (!hasChromium) warnSkip('lynkow.test.ts', 'no Chromium at /usr/bin/chromium (apt-get install chromium)')
else if (!has('lynkow')) warnSkip('lynkow.test.ts', 'the lynkow dialect is not in plugins/registry.ts yet')

const TIMEOUT = 15_000
const SITE_ID = 2

type FetchResult = { status: number; body: string } | { error: string }

declare global {
  interface Window {
    lynkowBeacon(payload: unknown): boolean
    lynkowFetch(payload: unknown): Promise<FetchResult>
  }
}

let browser: Browser
let pages: PageServer

/** Our own small client: the two ways the seed shows to send an event. */
const CLIENT = `
const endpoint = document.documentElement.dataset.endpoint
window.lynkowBeacon = (payload) => navigator.sendBeacon(endpoint, JSON.stringify(payload))
window.lynkowFetch = async (payload) => {
  try {
    const response = await fetch(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(payload),
    })
    return { status: response.status, body: await response.text() }
  } catch (error) {
    return { error: String(error) }
  }
}`

beforeAll(async () => {
  if (!ready) return
  browser = await launchBrowser()
  pages = await startPageServer({
    '/pricing': (ctx) =>
      html(
        'Pricing',
        `<h1>Pricing</h1><p>Lynkow test page; the collector is ${ctx.engine}/public/${SITE_ID}/analytics/collect.</p>
<script>document.documentElement.dataset.endpoint = ${JSON.stringify(`${ctx.engine}/public/${SITE_ID}/analytics/collect`)}</script>
<script>${CLIENT}</script>`,
      ),
  })
})

afterAll(async () => {
  await browser?.close()
  await pages?.stop()
})

async function scenario(name: string, body: (s: Scenario) => Promise<void>): Promise<void> {
  const s = await openScenario(browser, pages, `lynkow-${name}`)
  try {
    await s.page.goto(pages.url('lynkow.example', '/pricing'))
    await body(s)
    await s.screenshot()
  } finally {
    await s.close()
  }
  expect(s.problems).toEqual([])
}

const RECEIVED = { status: 202, body: JSON.stringify({ message: 'Event received' }) }

test.skipIf(!ready)(
  "the seed's minimal example by sendBeacon and by fetch is a pageview of /pricing",
  () =>
    scenario('minimal', async (s) => {
      const minimal = { event: 'page_view', path: '/pricing' }
      expect(await s.page.evaluate((p) => window.lynkowBeacon(p), minimal)).toBe(true)
      await s.waitForEvents((r) => r.length === 1, 'the beacon event')
      // The fetch is preflighted (application/json): its answer is readable only if CORS is right.
      expect(await s.page.evaluate((p) => window.lynkowFetch(p), minimal)).toEqual(RECEIVED)
      const rows = await s.waitForEvents((r) => r.length === 2, 'the fetch event')
      for (const row of rows) {
        // No page_url: the host comes from the sending page's Origin.
        expect(row).toMatchObject({
          name: 'pageview',
          site_id: String(SITE_ID),
          pathname: '/pricing',
          hostname: 'lynkow.example',
        })
        expect(row['meta.key']).toEqual([])
      }
      // No visitor_id: derived from UA, IP, site and root domain, like Plausible's user_id.
      if (has('user-id')) {
        expect(rows[0]!.user_id).not.toBe('0')
        expect(rows[1]!.user_id).toBe(rows[0]!.user_id)
      }
      // No session_id: the engine's sessions continue one session for the same (derived) visitor.
      if (has('sessions') && has('user-id')) {
        expect(rows[1]!.session_id).toBe(rows[0]!.session_id)
        const final = collapseSessions(s.t.sessions())
        expect(final.size).toBe(1)
        expect([...final.values()][0]).toMatchObject({ pageviews: 2, events: 2, is_bounce: 0, entry_page: '/pricing' })
      }
      if (has('user-agent')) expect(rows[0]).toMatchObject({ browser: 'Chrome', operating_system: 'GNU/Linux' })
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'a full canonical session by fetch and sendBeacon: pageview, scroll, outbound click in one client session',
  () =>
    scenario('full', async (s) => {
      const base = {
        session_id: 'sess-7f3a9c',
        visitor_id: 'visitor-00000001',
        visitor_id_source: 'cookie',
        page_url: `${pages.url('lynkow.example', '/docs/start')}?utm_source=newsletter&utm_medium=email`,
        page_path: '/docs/start',
        page_title: 'Getting started',
        device_type: 'desktop',
        language: 'en-US',
        timezone: 'Europe/Paris',
      }
      const now = Date.now()
      const pageview = {
        ...base,
        event_type: 'pageview',
        event_time: new Date(now).toISOString(),
        page_referrer: 'https://www.google.com/search?q=lynkow',
        utm_campaign: 'spring',
        is_entry: true,
        screen_width: 1920,
        screen_height: 1080,
      }
      expect(await s.page.evaluate((p) => window.lynkowFetch(p), pageview)).toEqual(RECEIVED)
      // camelCase spellings and epoch milliseconds, by beacon.
      const scroll = {
        sessionId: base.session_id,
        visitorId: base.visitor_id,
        eventType: 'scroll',
        pagePath: '/docs/start',
        pageUrl: base.page_url,
        eventTime: now + 1000,
        scrollDepth: 40,
        maxScrollDepth: 75,
        engagedTime: 12000,
        timeOnPage: 15000,
        scrollBehavior: 'reading',
      }
      expect(await s.page.evaluate((p) => window.lynkowBeacon(p), scroll)).toBe(true)
      await s.waitForEvents((r) => r.length === 2, 'the scroll event')
      const click = {
        ...base,
        event_type: 'outbound-link',
        event_time: new Date(now + 2000).toISOString(),
        click_target_url: 'https://partner.example/welcome',
        click_element_tag: 'a',
        click_x: 120,
        click_y: 480,
      }
      expect(await s.page.evaluate((p) => window.lynkowFetch(p), click)).toEqual(RECEIVED)
      const rows = await s.waitForEvents((r) => r.length === 3, 'the outbound click')

      expect(rows.map((r) => r.name)).toEqual(['pageview', 'scroll', 'outbound_link'])
      for (const row of rows) {
        expect(row).toMatchObject({ site_id: String(SITE_ID), hostname: 'lynkow.example', pathname: '/docs/start' })
      }
      const [pv, sc, out] = rows
      expect(meta(pv!)).toMatchObject({
        is_entry: 'true',
        language: 'en-US',
        page_title: 'Getting started',
        screen_width: '1920',
        timezone: 'Europe/Paris',
        visitor_id_source: 'cookie',
      })
      // The deepest scroll and the engaged time fill the columns; the others stay as props.
      expect(sc).toMatchObject({ scroll_depth: 75, engagement_time: 12000 })
      expect(meta(sc!)).toMatchObject({ scroll_depth: '40', time_on_page: '15000', scroll_behavior: 'reading' })
      expect(meta(out!)).toMatchObject({ click_target_url: 'https://partner.example/welcome', click_x: '120' })
      // The raw ids are never stored, only their keyed hashes; one client session, one visitor.
      for (const row of rows) {
        expect(row.user_id).not.toBe('0')
        expect(row.user_id).toBe(pv!.user_id)
        expect(row.session_id).toBe(pv!.session_id)
        expect(JSON.stringify(row)).not.toContain('visitor-00000001')
        expect(JSON.stringify(row)).not.toContain('sess-7f3a9c')
      }
      expect(pv).toMatchObject({ utm_campaign: 'spring' })
      if (has('referrer')) {
        expect(pv).toMatchObject({
          referrer: 'google.com/search',
          utm_source: 'newsletter',
          utm_medium: 'email',
          referrer_source: 'newsletter',
        })
      }
      if (has('sessions')) {
        const final = collapseSessions(s.t.sessions())
        expect(final.size).toBe(1)
        const session = [...final.values()][0]!
        expect(session).toMatchObject({ session_id: pv!.session_id, pageviews: 1, events: 3, is_bounce: 0 })
        expect(session).toMatchObject({ entry_page: '/docs/start', exit_page: '/docs/start' })
      }
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'an invalid body is answered 202 with a message naming the field, and stores nothing',
  () =>
    scenario('invalid', async (s) => {
      const result = await s.page.evaluate((p) => window.lynkowFetch(p), { event: 'teleport', path: '/pricing' })
      expect(result).toMatchObject({ status: 202 })
      const message = (JSON.parse((result as { body: string }).body) as { message: string }).message
      expect(message).not.toBe('Event received')
      expect(message).toContain('event_type')
      // A valid event afterwards proves the engine is reached; the invalid one left no row.
      expect(await s.page.evaluate(() => window.lynkowFetch({ event: 'pageView', path: '/after' }))).toEqual(RECEIVED)
      const rows = await s.waitForEvents((r) => r.length >= 1, 'the valid event')
      expect(rows.map((r) => `${r.name} ${r.pathname}`)).toEqual(['pageview /after'])
      expect(named(rows, 'teleport')).toEqual([])
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'two visitor ids from the same browser are two visitors',
  () =>
    scenario('visitors', async (s) => {
      const send = (visitor: string, session: string) =>
        s.page.evaluate((p) => window.lynkowFetch(p), {
          visitor_id: visitor,
          session_id: session,
          event_type: 'pageview',
          page_path: '/pricing',
          event_time: new Date().toISOString(),
        })
      expect(await send('visitor-aaaaaaaa', 'session-a')).toEqual(RECEIVED)
      expect(await send('visitor-bbbbbbbb', 'session-b')).toEqual(RECEIVED)
      const rows = await s.waitForEvents((r) => r.length === 2, 'two pageviews')
      expect(rows[0]!.user_id).not.toBe(rows[1]!.user_id)
      expect(rows[0]!.session_id).not.toBe(rows[1]!.session_id)
      if (has('sessions')) expect(collapseSessions(s.t.sessions()).size).toBe(2)
    }),
  TIMEOUT,
)
