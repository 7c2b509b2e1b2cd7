// Real clients end to end: Debian's Chromium (driven by playwright-core) loads pages from a small
// Bun.serve page server and sends events to a real engine listening on 127.0.0.1; the tests read the
// rows that reached the engine's memory sink.
//
//   const browser = await launchBrowser()           // once per file (beforeAll)
//   const pages = await startPageServer(routes)     // pages on http://<name>.example:<port>/...
//   const s = await openScenario(browser, pages, 'spa')
//   await s.page.goto(pages.url('tracker.example', '/spa'))
//   const rows = await s.waitForEvents((rows) => rows.length >= 2, 'two pageviews')
//   await s.close()                                 // screenshot, no-error check, engine shutdown
//
// The traps this works around are listed in /work/shared/research/plausible-tracker.md: a real UA
// set at launch (trap 2), `*.example` mapped to 127.0.0.1 so pages are not on localhost (trap 6),
// keepalive requests aborted by a navigation are not failures (trap 3), focus emulation (trap 4).

import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'
import { STANDARD_PLUGINS } from '../../core/defaults.ts'
import type { JsonRow } from '../../core/rows.ts'
import { startTestEngine, type TestEngine } from '../../core/testing.ts'
import { builtinPlugins } from '../../plugins/registry.ts'

export const REPO = resolve(import.meta.dir, '../..')
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium'
export const hasChromium = existsSync(CHROMIUM)
export const OUTPUT_DIR = join(REPO, 'test-output', 'browser')

/** The browser's own UA, set at launch: a per-context UA does not reach requests sent during unload (trap 2). */
export const DESKTOP_UA =
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36'
/** A second visitor's UA (set per context; used only where nothing is sent during unload). */
export const FIREFOX_UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:147.0) Gecko/20100101 Firefox/147.0'

/** Sites of every engine the suite starts. */
export const SITES = [
  { id: 1, domain: 'tracker.example' },
  { id: 2, domain: 'lynkow.example' },
]

/**
 * The standard plugins the engine runs: those already in the registry (plugins land one by one).
 * `BROWSER_TEST_PLUGINS=folders` loads instead every standard plugin that has a folder with an
 * index.ts, by path, to try plugins before they are registered.
 */
export const ACTIVE_PLUGINS: readonly string[] =
  process.env.BROWSER_TEST_PLUGINS === 'folders'
    ? STANDARD_PLUGINS.filter((name) => existsSync(join(REPO, 'plugins', name, 'index.ts')))
    : STANDARD_PLUGINS.filter((name) => name in builtinPlugins)

const pluginRefs = (): string[] =>
  process.env.BROWSER_TEST_PLUGINS === 'folders'
    ? ACTIVE_PLUGINS.map((name) => `./plugins/${name}/index.ts`)
    : [...ACTIVE_PLUGINS]

/** Whether the engine of this run has the plugin; assertions on the fields it fills depend on it. */
export const has = (plugin: string): boolean => ACTIVE_PLUGINS.includes(plugin)

/** Says loudly why a file skips (a skipped browser suite must not look like a passing one). */
export function warnSkip(file: string, reason: string): void {
  console.warn(`\n*** ${file}: browser tests SKIPPED: ${reason} ***\n`)
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
      `--user-agent=${DESKTOP_UA}`,
      // Pages on non-localhost names (the Lynkow dialect drops localhost origins; trap 6).
      '--host-resolver-rules=MAP *.example 127.0.0.1',
    ],
  })
}

// ---- the tracker bundle and the page server ----

let trackerBundle: Promise<string> | undefined

/** The official tracker with page-entry.ts, bundled once per process into a temporary folder. */
export function bundleTracker(): Promise<string> {
  trackerBundle ??= (async () => {
    const outdir = mkdtempSync(join(tmpdir(), 'browser-tracker-'))
    const result = await Bun.build({
      entrypoints: [join(import.meta.dir, 'page-entry.ts')],
      outdir,
      target: 'browser',
      format: 'esm',
      naming: 'tracker.js',
    })
    if (!result.success) throw new Error(`bundling the tracker failed:\n${result.logs.join('\n')}`)
    return readFileSync(join(outdir, 'tracker.js'), 'utf8')
  })()
  return trackerBundle
}

export interface PageContext {
  /** The page server's port (every `*.example` host reaches it). */
  port: number
  /** The engine's origin for the current scenario, `http://127.0.0.1:<port>`. */
  engine: string
  url(host: string, path: string): string
}

export type PageRoute = (ctx: PageContext, request: Request) => Response | string

export interface PageServer extends PageContext {
  /** Points the pages at the engine of the next scenario. */
  setEngine(origin: string): void
  stop(): Promise<void>
}

/** Serves `routes` (by path; a string is HTML) on 127.0.0.1, addressed as `http://<host>.example:<port>`. */
export async function startPageServer(routes: Record<string, PageRoute>): Promise<PageServer> {
  const tracker = await bundleTracker()
  const ctx: PageContext = { port: 0, engine: '', url: (host, path) => `http://${host}:${ctx.port}${path}` }
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    fetch(request) {
      const path = new URL(request.url).pathname
      if (path === '/assets/tracker.js') {
        return new Response(tracker, { headers: { 'content-type': 'text/javascript; charset=utf-8' } })
      }
      if (path === '/favicon.ico') return new Response(null, { status: 204 })
      const route = routes[path]
      if (!route) return new Response('not found', { status: 404 })
      const out = route(ctx, request)
      return typeof out === 'string'
        ? new Response(out, { headers: { 'content-type': 'text/html; charset=utf-8' } })
        : out
    },
  })
  ctx.port = server.port ?? 0
  return Object.assign(ctx, {
    setEngine(origin: string) {
      ctx.engine = origin
    },
    stop: () => server.stop(true),
  })
}

/** An HTML document; `head` and `body` are inserted as they are. */
export function html(title: string, body: string, head = ''): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title>${head}
<style>body{font:16px/1.5 system-ui,sans-serif;margin:2rem;max-width:48rem}a,button{font-size:1rem}</style>
</head><body>${body}</body></html>`
}

/** A page that runs the official tracker (page-entry.ts) with these init options. */
export function trackerPage(
  ctx: PageContext,
  title: string,
  body: string,
  options: { hashBasedRouting?: boolean; customProperties?: Record<string, string> } = {},
): string {
  const config = { domain: 'tracker.example', endpoint: `${ctx.engine}/api/event`, ...options }
  const head = `<script>window.__trackerConfig = ${JSON.stringify(config)}</script>
<script type="module" src="/assets/tracker.js"></script>`
  return html(title, `<h1>${title}</h1>${body}`, head)
}

// ---- scenarios: one engine, one browser context, problems collected ----

/** A fresh engine with the active plugins, the two test sites and the memory sink, listening on 127.0.0.1. */
export async function startEngine(): Promise<{ t: TestEngine; origin: string }> {
  const t = await startTestEngine(
    { server: { port: 0, host: '127.0.0.1' }, sites: SITES, plugins: pluginRefs(), sinks: [] },
    REPO,
  )
  const { port } = await t.engine.listen()
  return { t, origin: `http://127.0.0.1:${port}` }
}

export interface ScenarioOptions {
  /** A per-context UA (a second visitor). Requests sent during unload keep the launch UA (trap 2). */
  userAgent?: string
}

export interface Scenario {
  t: TestEngine
  engine: string
  context: BrowserContext
  page: Page
  /**
   * What went wrong in the browser: console errors and warnings, page errors, failed requests to the
   * engine, engine answers >= 400. Empty when all is well.
   */
  problems: string[]
  /** Every console line, for failure messages. */
  consoleLines: string[]
  /** Polls the sink's events until `done(rows)` holds; fails with the rows seen after `timeoutMs`. */
  waitForEvents(done: (rows: JsonRow[]) => boolean, what: string, timeoutMs?: number): Promise<JsonRow[]>
  /** Saves a screenshot of the page to test-output/browser/<name>.png. */
  screenshot(name?: string): Promise<string>
  /** Closes the context (its pages send their leave events), waits a moment, stops the engine. */
  close(): Promise<void>
}

/** Starts an engine, points the pages at it and opens a browser context that records problems. */
export async function openScenario(
  browser: Browser,
  pages: PageServer,
  name: string,
  options: ScenarioOptions = {},
): Promise<Scenario> {
  const { t, origin } = await startEngine()
  pages.setEngine(origin)
  const context = await browser.newContext({ userAgent: options.userAgent, viewport: { width: 1280, height: 720 } })
  const problems: string[] = []
  const consoleLines: string[] = []
  context.on('console', (msg) => {
    const line = `[${msg.type()}] ${msg.text()}`
    consoleLines.push(line)
    if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console ${line}`)
  })
  context.on('weberror', (error) => problems.push(`page error: ${error.error().message}`))
  context.on('requestfailed', (request) => {
    if (!request.url().startsWith(origin)) return
    const error = request.failure()?.errorText ?? 'failed'
    // A keepalive request cut off by a navigation is reported as aborted although it was delivered
    // (trap 3); the rows say whether it arrived.
    if (error === 'net::ERR_ABORTED') return
    problems.push(`request failed: ${request.method()} ${request.url()}: ${error}`)
  })
  context.on('response', (response) => {
    if (response.url().startsWith(origin) && response.status() >= 400) {
      problems.push(`engine answered ${response.status()} to ${response.request().method()} ${response.url()}`)
    }
  })
  const page = await context.newPage()
  mkdirSync(OUTPUT_DIR, { recursive: true })

  return {
    t,
    engine: origin,
    context,
    page,
    problems,
    consoleLines,
    async waitForEvents(done, what, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const rows = t.events()
        if (done(rows)) return rows
        if (Date.now() > deadline) {
          throw new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; events so far:\n${describeRows(rows)}\n` +
              `problems: ${JSON.stringify(problems)}\nconsole:\n${consoleLines.join('\n')}`,
          )
        }
        await Bun.sleep(25)
      }
    },
    async screenshot(shot = name) {
      const path = join(OUTPUT_DIR, `${shot}.png`)
      await page.screenshot({ path })
      return path
    },
    async close() {
      await context.close().catch(() => {})
      // The leave-the-page engagement is a keepalive request: give it a moment to land before
      // the engine stops accepting (shutdown drains requests already in flight).
      await Bun.sleep(100)
      await t.close()
      // The rows beside the screenshots, for a person to look at.
      const dump = {
        plugins: ACTIVE_PLUGINS,
        events: t.events(),
        sessions: t.sessions(),
        problems,
        console: consoleLines,
      }
      writeFileSync(join(OUTPUT_DIR, `${name}.rows.json`), `${JSON.stringify(dump, null, 2)}\n`)
    },
  }
}

// ---- rows ----

/** One line per event row with the columns these tests look at. */
export function describeRows(rows: JsonRow[]): string {
  if (rows.length === 0) return '  (none)'
  return rows
    .map((r) => {
      const meta = (r['meta.key'] as string[]).map((k, i) => `${k}=${(r['meta.value'] as string[])[i]}`).join(',')
      return `  ${r.name} site=${r.site_id} host=${r.hostname} path=${r.pathname} user=${r.user_id} session=${r.session_id} sd=${r.scroll_depth} e=${r.engagement_time} meta={${meta}}`
    })
    .join('\n')
}

/** Rows named `name`, optionally on `pathname`. */
export function named(rows: JsonRow[], name: string, pathname?: string): JsonRow[] {
  return rows.filter((r) => r.name === name && (pathname === undefined || r.pathname === pathname))
}

/** The props of an event row as an object. */
export function meta(row: JsonRow): Record<string, string> {
  const keys = row['meta.key'] as string[]
  const values = row['meta.value'] as string[]
  return Object.fromEntries(keys.map((k, i) => [k, values[i]!]))
}

const withoutSign = (row: JsonRow): string => JSON.stringify({ ...row, sign: 0 })

/**
 * Collapses sessions_v2 rows the way the CollapsingMergeTree does, checking that each `-1` row
 * cancels an identical earlier `+1` row of its session. Returns the final state per session id.
 */
export function collapseSessions(rows: JsonRow[]): Map<string, JsonRow> {
  const live = new Map<string, JsonRow>()
  for (const row of rows) {
    const id = row.session_id as string
    if (row.sign === 1) {
      if (live.has(id)) throw new Error(`session ${id}: a +1 row while the previous state was not cancelled`)
      live.set(id, row)
    } else if (row.sign === -1) {
      const previous = live.get(id)
      if (!previous) throw new Error(`session ${id}: a -1 row without a live +1 row`)
      if (withoutSign(previous) !== withoutSign(row)) {
        throw new Error(
          `session ${id}: the -1 row differs from the state it cancels:\n${withoutSign(previous)}\n${withoutSign(row)}`,
        )
      }
      live.delete(id)
    } else {
      throw new Error(`session ${id}: sign ${row.sign}`)
    }
  }
  return live
}
