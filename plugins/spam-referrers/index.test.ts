import { afterEach, describe, expect, test } from 'bun:test'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AnalyticsEvent } from '../../core/event.ts'
import { createLogger } from '../../core/logger.ts'
import { ConfigError } from '../../core/plugin.ts'
import { contextFor, makeEvent, runPlugin, setupPlugin, testServices } from '../../core/testing.ts'
import { parseHostList, referrerHost } from './hosts.ts'
import plugin from './index.ts'
import { copyFileName, SpamLists } from './lists.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'spam-referrers-test-'))
}

function listFile(content: string): string {
  const path = join(tempDir(), 'spammers.txt')
  writeFileSync(path, content)
  return path
}

/** A local list server; `body` and `status` can change between requests. */
function listServer(initial: { body: string; status?: number; delayMs?: number }) {
  const state = { ...initial, hits: 0, aborted: 0 }
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    async fetch(request) {
      state.hits++
      request.signal.addEventListener('abort', () => state.aborted++)
      if (state.delayMs) await Bun.sleep(state.delayMs)
      return new Response(state.body, { status: state.status ?? 200 })
    },
  })
  cleanups.push(() => server.stop(true))
  return { url: `http://127.0.0.1:${server.port}/spammers.txt`, state }
}

/** A URL on which nothing listens. */
async function deadUrl(): Promise<string> {
  const server = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: () => new Response('') })
  const url = `http://127.0.0.1:${server.port}/spammers.txt`
  await server.stop(true)
  return url
}

function capturedLogger() {
  const lines: { level: string; msg: string; [key: string]: unknown }[] = []
  return { lines, logger: createLogger({ level: 'debug', write: (line) => lines.push(JSON.parse(line)) }) }
}

async function until(condition: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await Bun.sleep(10)
  }
}

/** A set-up instance; `check` returns the drop reason for a referrer. */
async function spamFilter(options: object, services = testServices()) {
  const instance = await setupPlugin(plugin, options, services)
  cleanups.push(() => instance.close?.())
  const ctx = contextFor(plugin)
  const check = (referrerUrl: string) =>
    (instance.run!(makeEvent({ referrerUrl }) as AnalyticsEvent, ctx) as { reason: string } | undefined)?.reason
  return { check, services }
}

test('lets an event through when its referrer host is on no list', async () => {
  const result = await runPlugin(
    plugin,
    { lists: [listFile('spam.example\n')] },
    { referrerUrl: 'https://news.example/a' },
  )
  expect(result.dropped).toBeUndefined()
})

test('drops spam_referrer when the referrer host is on a file list', async () => {
  const result = await runPlugin(
    plugin,
    { lists: [listFile('spam.example\n')] },
    { referrerUrl: 'https://spam.example/a' },
  )
  expect(result.dropped).toBe('spam_referrer')
})

describe('host matching: exact host after one www. strip', () => {
  const list = 'spam.example\nwww.listed-with-www.example\n\n  padded.example  \n# a comment\nSHOUT.example\n'
  test.each<[string, boolean]>([
    ['https://spam.example/page?x=1', true],
    ['https://www.spam.example/', true],
    ['http://spam.example:8080', true],
    ['https://SPAM.Example/x', true],
    ['https://user:pw@spam.example/', true],
    ['//spam.example/x', true],
    ['android-app://spam.example', true],
    ['  https://spam.example  ', true],
    ['https://spam.example./x', true],
    ['https://listed-with-www.example/', true],
    ['https://padded.example/', true],
    ['https://shout.example/', true],
    ['https://sub.spam.example/', false], // a subdomain of a listed host is not listed
    ['https://www.www.spam.example/', false], // only one www. is removed
    ['https://spam.example.evil/', false],
    ['https://notspam.example/', false],
    ['spam.example/path', false], // no authority, no host (as URI.parse)
    ['', false],
    ['not a url at all', false],
    ['https://[::1]/', false],
    ['https:', false],
  ])('%p → dropped %p', async (referrerUrl, dropped) => {
    const result = await runPlugin(plugin, { lists: [listFile(list)] }, { referrerUrl })
    expect(result.dropped).toBe(dropped ? 'spam_referrer' : undefined)
  })
})

test('rejects a list file that does not exist as a config error naming its place', async () => {
  const attempt = setupPlugin(plugin, { lists: [listFile('a.example'), '/nonexistent/spammers.txt'] })
  await expect(attempt).rejects.toThrow(ConfigError)
  await expect(attempt).rejects.toMatchObject({ path: 'lists[1]' })
})

test('resolves relative file paths against the config folder', async () => {
  const dir = tempDir()
  writeFileSync(join(dir, 'mine.txt'), 'relative.example\n')
  const { check } = await spamFilter({ lists: ['./mine.txt'] }, testServices({ baseDir: dir }))
  expect(check('https://relative.example/')).toBe('spam_referrer')
})

describe('URL lists', () => {
  test('setup does not wait for the download; the list applies once it arrives and its copy is saved', async () => {
    const { url } = listServer({ body: 'remote.example\n', delayMs: 300 })
    const started = performance.now()
    const { check, services } = await spamFilter({ lists: [url] })
    expect(performance.now() - started).toBeLessThan(250)
    expect(check('https://remote.example/')).toBeUndefined()
    await until(() => check('https://remote.example/') === 'spam_referrer')
    const copy = join(services.stateDir, 'spam-referrers', copyFileName(url))
    await until(() => existsSync(copy))
    expect(readFileSync(copy, 'utf8')).toBe('remote.example\n')
  })

  test('an offline start uses the copy on disk, logs it, and keeps it when the download fails', async () => {
    const url = await deadUrl()
    const stateDir = tempDir()
    const copy = join(stateDir, 'spam-referrers', copyFileName(url))
    mkdirSync(join(stateDir, 'spam-referrers'))
    writeFileSync(copy, 'cached.example\n')
    // Saved two weeks ago: due for a refresh at start.
    const old = new Date(Date.now() - 14 * 24 * 3600_000)
    utimesSync(copy, old, old)
    const { lines, logger } = capturedLogger()
    const { check } = await spamFilter({ lists: [url] }, { ...testServices({ stateDir }), logger })
    expect(check('https://cached.example/')).toBe('spam_referrer')
    expect(lines.some((l) => l.level === 'info' && l.msg.includes('copy on disk') && l.hosts === 1)).toBe(true)
    await until(() => lines.some((l) => l.level === 'warn' && l.msg.includes('Could not refresh')))
    expect(check('https://cached.example/')).toBe('spam_referrer')
    expect(readFileSync(copy, 'utf8')).toBe('cached.example\n')
  })

  test('an offline start without a copy starts empty and says so', async () => {
    const { lines, logger } = capturedLogger()
    const { check } = await spamFilter({ lists: [await deadUrl()] }, { ...testServices(), logger })
    expect(check('https://anything.example/')).toBeUndefined()
    expect(lines.some((l) => l.level === 'warn' && l.msg.includes('No copy'))).toBe(true)
  })

  test('registers its stop with the engine: closing aborts a download in flight, quietly', async () => {
    const { url, state } = listServer({ body: 'x.example\n', delayMs: 2_000 })
    const { lines, logger } = capturedLogger()
    const services = { ...testServices(), logger }
    await setupPlugin(plugin, { lists: [url] }, services)
    await until(() => state.hits === 1)
    await services.closeAll()
    await until(() => state.aborted === 1)
    expect(lines.filter((l) => l.msg.includes('Could not refresh'))).toHaveLength(0)
  })

  test('a copy saved within refreshHours is not fetched again at start', async () => {
    const { url, state } = listServer({ body: 'fresh.example\n' })
    const stateDir = tempDir()
    mkdirSync(join(stateDir, 'spam-referrers'))
    writeFileSync(join(stateDir, 'spam-referrers', copyFileName(url)), 'fresh.example\n')
    const { check } = await spamFilter({ lists: [url] }, testServices({ stateDir }))
    await Bun.sleep(100)
    expect(state.hits).toBe(0)
    expect(check('https://fresh.example/')).toBe('spam_referrer')
  })
})

describe('refreshing', () => {
  function lists(url: string, copyDir: string, logger = capturedLogger().logger, refreshMs = 3_600_000) {
    const spam = new SpamLists({
      sources: [{ kind: 'url', name: url, location: url }],
      copyDir,
      refreshMs,
      fetchTimeoutMs: 1_000,
      logger,
      jitter: 0,
    })
    cleanups.push(() => spam.stop())
    return spam
  }

  test('a refresh replaces the list and its copy atomically', async () => {
    const server = listServer({ body: 'first.example\n' })
    const dir = tempDir()
    const spam = lists(server.url, dir)
    await spam.load()
    await spam.refreshAll()
    expect([...spam.hosts]).toEqual(['first.example'])
    server.state.body = 'second.example\nthird.example\n'
    await spam.refreshAll()
    expect([...spam.hosts].sort()).toEqual(['second.example', 'third.example'])
    expect(readdirSync(dir)).toEqual([copyFileName(server.url)]) // no temporary file left behind
  })

  test.each<[string, { body: string; status?: number }]>([
    ['a server error', { body: 'oops', status: 500 }],
    ['an empty list', { body: '\n\n' }],
    ['an HTML page', { body: '<!doctype html><html><body>Rate limited</body></html>' }],
  ])('keeps the last good list on %s and logs once', async (_name, failure) => {
    const server = listServer({ body: 'good.example\n' })
    const dir = tempDir()
    const { lines, logger } = capturedLogger()
    const spam = lists(server.url, dir, logger)
    await spam.load()
    await spam.refreshAll()
    Object.assign(server.state, failure)
    await spam.refreshAll()
    await spam.refreshAll()
    expect([...spam.hosts]).toEqual(['good.example'])
    expect(readFileSync(join(dir, copyFileName(server.url)), 'utf8')).toBe('good.example\n')
    expect(lines.filter((l) => l.msg.includes('Could not refresh'))).toHaveLength(1)
  })

  test('a download that hangs past the timeout fails without blocking anything', async () => {
    const server = listServer({ body: 'slow.example\n', delayMs: 5_000 })
    const { lines, logger } = capturedLogger()
    const spam = lists(server.url, tempDir(), logger)
    const started = performance.now()
    await spam.refreshAll()
    expect(performance.now() - started).toBeLessThan(3_000)
    expect(lines.filter((l) => l.msg.includes('Could not refresh'))).toHaveLength(1)
  })

  test('re-fetches on the interval', async () => {
    const server = listServer({ body: 'tick.example\n' })
    const spam = lists(server.url, tempDir(), undefined, 100)
    await spam.load()
    await spam.start()
    await until(() => server.state.hits >= 3)
  })
})

test('parses the Matomo spammers.txt format', () => {
  expect(parseHostList('a.example\r\n\r\nwww.b.example\n# c.example\nnot a host\n<html>\n')).toEqual([
    'a.example',
    'b.example',
  ])
  expect(referrerHost('https://www.Spam.example:8080/x?y')).toBe('spam.example')
})

describe('reload (SIGHUP)', () => {
  test('re-reads a changed file at once; a file that went missing keeps its hosts', async () => {
    const file = listFile('old-spam.example\n')
    const instance = await setupPlugin(plugin, { lists: [file] })
    cleanups.push(() => instance.close?.())
    const ctx = contextFor(plugin)
    const check = (referrerUrl: string) =>
      (instance.run!(makeEvent({ referrerUrl }), ctx) as { reason: string } | undefined)?.reason
    expect(check('https://new-spam.example/')).toBeUndefined()
    writeFileSync(file, 'new-spam.example\n')
    await instance.reload!()
    expect(check('https://new-spam.example/')).toBe('spam_referrer')
    expect(check('https://old-spam.example/')).toBeUndefined()
    rmSync(file)
    await instance.reload!()
    expect(check('https://new-spam.example/')).toBe('spam_referrer')
  })
})
