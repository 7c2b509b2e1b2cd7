// The official Plausible tracker (@plausible-analytics/tracker from npm) in headless Chromium, sending
// to a real engine: the rows that reach the sink for each thing a visitor does. What the tracker
// sends is in /work/shared/research/plausible-tracker.md; the rows follow spec/plausible-dialect.md.
//
// Each test starts its own engine: every page of this browser has the same UA and IP, so with one
// engine all tests would be one visitor and one session.

import { afterAll, beforeAll, expect, test } from 'bun:test'
import { join } from 'node:path'
import type { Browser } from 'playwright-core'
import type { JsonRow } from '../../core/rows.ts'
import {
  collapseSessions,
  FIREFOX_UA,
  has,
  hasChromium,
  html,
  launchBrowser,
  meta,
  named,
  OUTPUT_DIR,
  openScenario,
  type PageServer,
  type Scenario,
  startPageServer,
  trackerPage,
  warnSkip,
} from './harness.ts'

const ready = hasChromium && has('plausible')
if (!hasChromium) warnSkip('plausible-tracker.test.ts', 'no Chromium at /usr/bin/chromium (apt-get install chromium)')
else if (!has('plausible'))
  warnSkip('plausible-tracker.test.ts', 'the plausible dialect is not in plugins/registry.ts yet')

const TIMEOUT = 15_000
// Sessions are per user: without the user-id plugin every event has user 0 and no session continues.
const sessionsOn = has('sessions') && has('user-id')
const UTM = '?utm_source=newsletter&utm_medium=email&utm_campaign=launch'

let browser: Browser
let pages: PageServer

beforeAll(async () => {
  if (!ready) return
  browser = await launchBrowser()
  pages = await startPageServer({
    // The referring article sets `unsafe-url`, so the full referrer URL reaches the tracker's `r`.
    '/ref/article': (ctx) =>
      html(
        'News article',
        `<h1>News article</h1><p>Read about the <a id="go" href="${ctx.url('tracker.example', `/landing${UTM}`)}">launch</a>.</p>`,
        '<meta name="referrer" content="unsafe-url">',
      ),
    '/landing': (ctx) => trackerPage(ctx, 'Landing', '<p>Welcome from the newsletter.</p>'),
    '/spa': (ctx) =>
      trackerPage(
        ctx,
        'SPA',
        `<nav><button id="settings" onclick="history.pushState({}, '', '/spa/settings'); document.querySelector('h1').textContent = 'Settings'">Settings</button></nav>`,
      ),
    '/app': (ctx) =>
      trackerPage(ctx, 'Hash app', '<nav><a id="orders" href="#/orders/42">Order 42</a></nav>', {
        hashBasedRouting: true,
      }),
    '/props': (ctx) =>
      trackerPage(ctx, 'Props', '<p>A page with custom properties.</p>', { customProperties: { author: 'ada' } }),
    '/links': (ctx) =>
      trackerPage(
        ctx,
        'Links',
        `<ul><li><a id="download" href="/files/report.pdf?v=2" download>Report (PDF)</a></li>
<li><a id="outbound" href="${ctx.url('partner.example', '/welcome?from=links')}">Our partner</a></li></ul>`,
      ),
    '/tagged': (ctx) =>
      trackerPage(
        ctx,
        'Tagged',
        `<p><a id="tagged" class="plausible-event-name=Tagged+Click plausible-event-color=red" href="#x">A tagged link</a></p>
<form id="signup" action="/welcome" method="get"><input name="email" type="email" value="ada@example.com" required>
<button id="submit">Sign up</button></form>`,
      ),
    '/files/report.pdf': () =>
      new Response('%PDF-1.4\n% a test file\n', {
        headers: { 'content-type': 'application/pdf', 'content-disposition': 'attachment; filename="report.pdf"' },
      }),
    '/welcome': () => html('Partner', '<h1>Partner site</h1><p>No tracker here.</p>'),
    '/long': (ctx) =>
      trackerPage(
        ctx,
        'Long read',
        '<div id="article" style="height:4000px;background:linear-gradient(#fff,#cde)">A long article.</div><p id="end">The end.</p>',
      ),
    '/visitors/a': (ctx) => trackerPage(ctx, 'Visitor A', '<p>First visitor.</p>'),
    '/visitors/b': (ctx) => trackerPage(ctx, 'Visitor B', '<p>Second visitor.</p>'),
  })
})

afterAll(async () => {
  await browser?.close()
  await pages?.stop()
})

/** Runs `body` in a fresh scenario; always closes it; then requires a problem-free browser side. */
async function scenario(name: string, body: (s: Scenario) => Promise<void>, options = {}): Promise<void> {
  const s = await openScenario(browser, pages, `plausible-${name}`, options)
  try {
    await body(s)
  } finally {
    await s.close()
  }
  expect(s.problems).toEqual([])
}

const onTracker = (path: string) => pages.url('tracker.example', path)
const sessionsOf = (s: Scenario) => s.t.sessions().filter((r) => r.site_id === '1')

/** The single session of these rows, with its pairs checked; undefined when the sessions plugin is absent. */
function onlySession(s: Scenario): JsonRow | undefined {
  if (!sessionsOn) return undefined
  const final = collapseSessions(sessionsOf(s))
  expect(final.size).toBe(1)
  return [...final.values()][0]!
}

test.skipIf(!ready)(
  'a pageview after a link from another site carries the referrer and the UTM tags',
  () =>
    scenario('referrer-utm', async (s) => {
      await s.page.goto(pages.url('news.example', '/ref/article'))
      await s.page.click('#go')
      await s.page.waitForURL(/\/landing/)
      const rows = await s.waitForEvents((r) => named(r, 'pageview').length >= 1, 'the landing pageview')
      await s.screenshot()
      expect(rows).toHaveLength(1)
      const pv = rows[0]!
      expect(pv).toMatchObject({ name: 'pageview', site_id: '1', hostname: 'tracker.example', pathname: '/landing' })
      expect(pv['meta.key']).toEqual([])
      if (has('referrer')) {
        expect(pv).toMatchObject({
          // Host and path, no port, no query (spec §8 "Referrer").
          referrer: 'news.example/ref/article',
          // The tagged source wins over the referrer; unmapped values keep their case.
          referrer_source: 'newsletter',
          utm_source: 'newsletter',
          utm_medium: 'email',
          utm_campaign: 'launch',
          acquisition_channel: 'Email',
        })
      }
      if (has('user-agent')) expect(pv).toMatchObject({ browser: 'Chrome', operating_system: 'GNU/Linux' })
      const session = onlySession(s)
      if (session) {
        expect(session).toMatchObject({
          sign: 1,
          entry_page: '/landing',
          exit_page: '/landing',
          pageviews: 1,
          events: 1,
          is_bounce: 1,
          session_id: pv.session_id,
        })
        if (has('referrer')) expect(session).toMatchObject({ referrer_source: 'newsletter', utm_campaign: 'launch' })
      }
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'an SPA navigation (pushState) is a second pageview of the same session, not a bounce',
  () =>
    scenario('spa', async (s) => {
      await s.page.goto(onTracker('/spa'))
      await s.waitForEvents((r) => named(r, 'pageview', '/spa').length === 1, 'the first pageview')
      await s.page.click('#settings')
      const rows = await s.waitForEvents(
        (r) => named(r, 'pageview', '/spa/settings').length === 1 && named(r, 'engagement').length === 1,
        'the engagement of /spa and the pageview of /spa/settings',
      )
      await s.screenshot()
      // The engagement for the old page goes first, and names the old page.
      expect(rows.map((r) => `${r.name} ${r.pathname}`)).toEqual([
        'pageview /spa',
        'engagement /spa',
        'pageview /spa/settings',
      ])
      expect(named(rows, 'engagement')[0]!.scroll_depth).toBe(100)
      if (sessionsOn) {
        expect(new Set(rows.map((r) => r.session_id)).size).toBe(1)
        expect(rows[0]!.session_id).not.toBe('0')
        // +1 (first pageview), then -1/+1 for the second; the engagement writes none.
        expect(sessionsOf(s).map((r) => r.sign)).toEqual([1, -1, 1])
        expect(onlySession(s)).toMatchObject({
          pageviews: 2,
          events: 2,
          is_bounce: 0,
          entry_page: '/spa',
          exit_page: '/spa/settings',
          exit_page_hostname: 'tracker.example',
        })
      }
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'hash-based routing keeps the fragment in the pathname',
  () =>
    scenario('hash-routing', async (s) => {
      await s.page.goto(onTracker('/app#/home'))
      await s.waitForEvents((r) => named(r, 'pageview').length === 1, 'the first pageview')
      await s.page.click('#orders')
      const rows = await s.waitForEvents(
        (r) => named(r, 'pageview').length === 2 && named(r, 'engagement').length === 1,
        'the engagement and the second pageview',
      )
      await s.screenshot()
      expect(rows.map((r) => `${r.name} ${r.pathname}`)).toEqual([
        'pageview /app#/home',
        'engagement /app#/home',
        'pageview /app#/orders/42',
      ])
      const session = onlySession(s)
      if (session)
        expect(session).toMatchObject({ entry_page: '/app#/home', exit_page: '/app#/orders/42', pageviews: 2 })
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'a custom event carries its props and the page-wide custom properties',
  () =>
    scenario('custom-event', async (s) => {
      await s.page.goto(onTracker('/props'))
      await s.waitForEvents((r) => named(r, 'pageview').length === 1, 'the pageview')
      // `seats: 3` goes out as a JSON number, as the tracker sends whatever it is given.
      const result = await s.page.evaluate(() => window.__track('Signup', { plan: 'pro', seats: 3 }))
      expect(result).toEqual({ status: 202 })
      const rows = await s.waitForEvents((r) => named(r, 'Signup').length === 1, 'the Signup event')
      await s.screenshot()
      const [pv] = named(rows, 'pageview')
      const [signup] = named(rows, 'Signup')
      expect(meta(pv!)).toEqual({ author: 'ada' })
      expect(signup).toMatchObject({ pathname: '/props', 'meta.key': ['author', 'plan', 'seats'] })
      expect(meta(signup!)).toEqual({ author: 'ada', plan: 'pro', seats: '3' })
      expect(signup!.scroll_depth).toBe(0)
      const session = onlySession(s)
      if (session) {
        expect(signup!.session_id).toBe(pv!.session_id)
        // An interactive custom event ends the bounce (spec §9).
        expect(session).toMatchObject({ pageviews: 1, events: 2, is_bounce: 0, exit_page: '/props' })
        expect(session['entry_meta.key']).toEqual(['author'])
      }
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'a fragment without hash mode stays out of the pathname; non-interactive events keep the bounce',
  () =>
    scenario('fragment-interactive', async (s) => {
      // The tracker sends `u` with the fragment even without hash mode (no `h`).
      await s.page.goto(onTracker('/props#section-2'))
      await s.waitForEvents((r) => named(r, 'pageview').length === 1, 'the pageview')
      expect(await s.page.evaluate(() => window.__track('Autoplay', undefined, { interactive: false }))).toEqual({
        status: 202,
      })
      await s.waitForEvents((r) => named(r, 'Autoplay').length === 1, 'the non-interactive event')
      // `i: false` is honoured (a deviation from upstream, spec §2): the session is still a bounce.
      if (sessionsOn) expect(onlySession(s)).toMatchObject({ pageviews: 1, events: 2, is_bounce: 1 })
      const purchase = { revenue: { amount: 15.99, currency: 'USD' } }
      expect(await s.page.evaluate((o) => window.__track('Purchase', undefined, o), purchase)).toEqual({ status: 202 })
      // `404` is a system event: always interactive, and it gets a `path` prop (spec §4.3).
      expect(await s.page.evaluate(() => window.__track('404'))).toEqual({ status: 202 })
      const rows = await s.waitForEvents((r) => named(r, '404').length === 1, 'the 404 event')
      await s.screenshot()
      expect(rows.map((r) => `${r.name} ${r.pathname}`)).toEqual([
        'pageview /props',
        'Autoplay /props',
        'Purchase /props',
        '404 /props',
      ])
      expect(meta(named(rows, '404')[0]!)).toEqual({ author: 'ada', path: '/props' })
      const [bought] = named(rows, 'Purchase')
      expect(meta(bought!)).toEqual({ author: 'ada' })
      // Revenue is optional to support (spec §2); when stored, it is the amount and currency as sent.
      if (bought!.revenue_source_amount !== null) {
        expect(bought).toMatchObject({ revenue_source_amount: '15.99', revenue_source_currency: 'USD' })
      }
      if (sessionsOn) expect(onlySession(s)).toMatchObject({ pageviews: 1, events: 4, is_bounce: 0 })
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'a tagged link (with its empty revenue object) and a form submission are stored',
  () =>
    scenario('tagged-form', async (s) => {
      await s.page.goto(onTracker('/tagged'))
      await s.waitForEvents((r) => named(r, 'pageview').length === 1, 'the pageview')
      await s.screenshot()
      // The tracker sends `"$":{}` with a tagged link's event (research, "extra" cases).
      await s.page.click('#tagged')
      await s.waitForEvents((r) => named(r, 'Tagged Click').length === 1, 'the tagged click')
      await s.page.click('#submit')
      await s.page.waitForURL(/\/welcome/)
      const rows = await s.waitForEvents(
        (r) => named(r, 'Form: Submission').length === 1 && named(r, 'engagement').length === 1,
        'the form submission and the leave engagement',
      )
      expect(meta(named(rows, 'Tagged Click')[0]!)).toEqual({
        color: 'red',
        url: `http://tracker.example:${pages.port}/tagged#x`,
      })
      expect(named(rows, 'Tagged Click')[0]).toMatchObject({ pathname: '/tagged', revenue_source_amount: null })
      // `Form: Submission` gets the `path` prop like `404` (spec §4.3).
      expect(meta(named(rows, 'Form: Submission')[0]!)).toEqual({ path: '/tagged' })
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'file-download and outbound-link clicks carry their url props',
  () =>
    scenario('links', async (s) => {
      await s.page.goto(onTracker('/links'))
      await s.waitForEvents((r) => named(r, 'pageview').length === 1, 'the pageview')
      await s.screenshot()
      const download = s.page.waitForEvent('download')
      await s.page.click('#download')
      await download
      await s.waitForEvents((r) => named(r, 'File Download').length === 1, 'the File Download event')
      // The outbound link navigates away at once; keepalive carries the event past the unload.
      await s.page.click('#outbound')
      await s.page.waitForURL(/partner\.example/)
      const rows = await s.waitForEvents(
        (r) => named(r, 'Outbound Link: Click').length === 1 && named(r, 'engagement').length === 1,
        'the outbound click and the leave engagement',
      )
      await s.screenshot('plausible-links-after')
      // The download's query is stripped by the tracker; the outbound link keeps it; ports stay.
      expect(meta(named(rows, 'File Download')[0]!)).toEqual({
        url: `http://tracker.example:${pages.port}/files/report.pdf`,
      })
      expect(meta(named(rows, 'Outbound Link: Click')[0]!)).toEqual({
        url: `http://partner.example:${pages.port}/welcome?from=links`,
      })
      for (const row of rows) expect(row).toMatchObject({ hostname: 'tracker.example', pathname: '/links' })
      const session = onlySession(s)
      if (session) expect(session).toMatchObject({ pageviews: 1, events: 3, is_bounce: 0 })
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'leaving and closing the page send engagements with scroll depth and time, extending the session',
  () =>
    scenario('engagement', async (s) => {
      // A tab switch cannot be shown here: Playwright's own CDP session keeps focus emulation on, and
      // `Emulation.setFocusEmulationEnabled {enabled:false}` from a second session is a no-op (the
      // override is per session), so `document.hasFocus()` stays true and the tracker's blur path never
      // fires (trap 4). Leaving and closing the page fire `visibilitychange` → hidden as in a real browser.
      await s.page.goto(onTracker('/long'))
      await s.waitForEvents((r) => named(r, 'pageview').length === 1, 'the pageview')
      const sessionRows = () => s.t.sessions().length
      const afterFirstPageview = sessionRows()

      await s.page.evaluate(() => window.scrollTo(0, 1200))
      const expectedDepth = await s.page.evaluate(() => {
        const height = Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)
        return Math.round(((window.scrollY + window.innerHeight) / height) * 100)
      })
      await Bun.sleep(1200)
      await s.screenshot()
      await s.page.goto(pages.url('partner.example', '/welcome'))
      await s.waitForEvents((r) => named(r, 'engagement').length === 1, 'the engagement of leaving')
      const afterFirstEngagement = sessionRows()

      // Back (from the back-forward cache or reloaded, the tracker counts a pageview either way),
      // read to the end, close the tab.
      await s.page.goBack()
      await s.waitForEvents((r) => named(r, 'pageview').length === 2, 'the pageview after going back')
      const afterSecondPageview = sessionRows()
      await s.page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight))
      await Bun.sleep(700)
      await s.page.close()
      const rows = await s.waitForEvents((r) => named(r, 'engagement').length === 2, 'the engagement of closing')

      expect(rows.map((r) => `${r.name} ${r.pathname}`)).toEqual([
        'pageview /long',
        'engagement /long',
        'pageview /long',
        'engagement /long',
      ])
      const [first, second] = named(rows, 'engagement')
      expect(first!.scroll_depth).toBe(expectedDepth)
      expect(first!.engagement_time as number).toBeGreaterThanOrEqual(1000)
      expect(first!.engagement_time as number).toBeLessThan(10_000)
      expect(second!.scroll_depth).toBe(100)
      expect(second!.engagement_time as number).toBeGreaterThanOrEqual(500)
      expect(second!.engagement_time as number).toBeLessThan(10_000)
      if (sessionsOn) {
        expect(new Set(rows.map((r) => r.session_id)).size).toBe(1)
        // Engagements keep the session alive but write no session rows (spec §5); pageviews do.
        expect(afterFirstEngagement).toBe(afterFirstPageview)
        expect(sessionRows()).toBe(afterSecondPageview)
        expect(onlySession(s)).toMatchObject({ pageviews: 2, events: 2, is_bounce: 0, exit_page: '/long' })
      }
    }),
  TIMEOUT,
)

test.skipIf(!ready)(
  'a second browser context with another user agent is another visitor',
  () =>
    scenario('visitors', async (s) => {
      await s.page.goto(onTracker('/visitors/a'))
      await s.waitForEvents((r) => named(r, 'pageview').length === 1, 'visitor A')
      await s.screenshot('plausible-visitor-a')
      const other = await s.context.browser()!.newContext({ userAgent: FIREFOX_UA })
      let rows: JsonRow[]
      try {
        const page = await other.newPage()
        await page.goto(onTracker('/visitors/b'))
        rows = await s.waitForEvents((r) => named(r, 'pageview').length === 2, 'visitor B')
        await page.screenshot({ path: join(OUTPUT_DIR, 'plausible-visitor-b.png') })
      } finally {
        // Leaving B's page sends an engagement, and trap 2 says it may carry the launch UA (i.e. come
        // as visitor A): the rows were read before that.
        await other.close()
      }
      const a = named(rows, 'pageview', '/visitors/a')[0]!
      const b = named(rows, 'pageview', '/visitors/b')[0]!
      if (has('user-id')) {
        expect(a.user_id).not.toBe('0')
        expect(b.user_id).not.toBe('0')
        expect(b.user_id).not.toBe(a.user_id)
      }
      if (sessionsOn) expect(b.session_id).not.toBe(a.session_id)
      if (has('user-agent')) {
        expect(a).toMatchObject({ browser: 'Chrome', browser_version: '156.0' })
        expect(b).toMatchObject({ browser: 'Firefox', browser_version: '147.0', operating_system: 'Windows' })
      }
    }),
  TIMEOUT,
)
