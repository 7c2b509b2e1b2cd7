// The `replay` command as an operator runs it: a real process on real files and pipes, its rows read
// back from the stdout sink, compared with what the same requests produce over real HTTP.

import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { AnalyticsEvent } from '../../core/event.ts'
import { ReplayOptionsSchema } from '../../core/replay/index.ts'
import { parseAccessLogLine, unescapeNginx } from '../../core/replay/records.ts'
import { eventFromRow, sessionFromRow } from '../../core/replay/rows.ts'
import { startTestEngine, TEST_UA, type TestEngine } from '../../core/testing.ts'
import { sortedExpectedEvents, sortedExpectedSessions } from '../clickhouse/fixtures.ts'

const root = resolve(import.meta.dir, '../..')
const cli = join(root, 'core/cli.ts')

const PLUGINS = ['plausible', 'client-ip', 'user-agent', 'user-id', 'bots', 'referrer', 'props', 'sessions']
const FIREFOX = 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0'
const BOT = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'

type Row = Record<string, unknown>

function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

/** A config file for the CLI: the test pipeline, the stdout sink, the given state folder. */
function configFile(stateDir: string, plugins = PLUGINS.join(', ')): string {
  const path = join(tempDir('replay-config-'), 'analytics.yaml')
  writeFileSync(
    path,
    `sites: [{ id: 7, domain: example.com }]
stateDir: ${stateDir}
plugins: [${plugins}]
sinks: [{ stdout: { flushIntervalMs: 20 } }]
`,
  )
  return path
}

interface Run {
  stdout: string
  stderr: string
  code: number
  summary: Record<string, unknown>
}

function summaryOf(stderr: string): Record<string, unknown> {
  const line = stderr
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{"replay":') && !l.startsWith('{"replay":"progress"'))
  return line ? JSON.parse(line) : {}
}

async function replay(args: string[], stdin?: string, env: Record<string, string> = {}): Promise<Run> {
  const proc = Bun.spawn([process.execPath, cli, 'replay', ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdin: stdin === undefined ? 'ignore' : new Blob([stdin]),
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  return { stdout, stderr, code, summary: summaryOf(stderr) }
}

function rowsOf(stdout: string): { events: Row[]; sessions: Row[] } {
  const events: Row[] = []
  const sessions: Row[] = []
  for (const line of stdout.split('\n')) {
    if (line === '') continue
    const { _table, ...row } = JSON.parse(line)
    ;(_table === 'events_v2' ? events : sessions).push(row)
  }
  return { events, sessions }
}

/** Session ids are random per process: compare which rows share a session, not the numbers. */
function withSessionOrdinals(events: Row[], sessions: Row[]): { events: Row[]; sessions: Row[] } {
  const ordinals = new Map<unknown, number>()
  const ordinal = (id: unknown) => {
    if (!ordinals.has(id)) ordinals.set(id, ordinals.size)
    return ordinals.get(id)
  }
  return {
    events: events.map((r) => ({ ...r, session_id: ordinal(r.session_id) })),
    sessions: sessions.map((r) => ({ ...r, session_id: ordinal(r.session_id) })),
  }
}

interface Sent {
  ip: string
  ua: string
  body: string
}

const body = (b: Record<string, unknown>) => JSON.stringify(b)

/** Three visitors, one bot, one unknown site, one broken body: every outcome a request can have. */
const TRAFFIC: Sent[] = [
  {
    ip: '203.0.113.1',
    ua: TEST_UA,
    body: body({
      n: 'pageview',
      u: 'https://example.com/?utm_source=news',
      d: 'example.com',
      r: 'https://www.google.com/',
    }),
  },
  { ip: '203.0.113.1', ua: TEST_UA, body: body({ n: 'pageview', u: 'https://example.com/pricing', d: 'example.com' }) },
  {
    ip: '203.0.113.1',
    ua: TEST_UA,
    body: body({ n: 'Signup', u: 'https://example.com/pricing', d: 'example.com', p: { plan: 'pro', seats: 3 } }),
  },
  {
    ip: '198.51.100.7',
    ua: FIREFOX,
    body: body({ n: 'pageview', u: 'https://example.com/blog/über "quotes"', d: 'example.com', w: 1400 }),
  },
  { ip: '198.51.100.9', ua: BOT, body: body({ n: 'pageview', u: 'https://example.com/', d: 'example.com' }) },
  { ip: '198.51.100.8', ua: FIREFOX, body: body({ n: 'pageview', u: 'https://nope.test/', d: 'nope.test' }) },
  { ip: '198.51.100.8', ua: FIREFOX, body: '{"n":"pageview",' },
  {
    ip: '203.0.113.1',
    ua: TEST_UA,
    body: body({ n: 'engagement', u: 'https://example.com/pricing', d: 'example.com', sd: 50, e: 1200 }),
  },
  { ip: '203.0.113.2', ua: FIREFOX, body: body({ n: 'pageview', u: 'https://example.com/', d: 'example.com' }) },
]
// Which of TRAFFIC the pipeline keeps (the rest: bot, not_found, 400).
const KEPT = [0, 1, 2, 3, 7, 8]

const TEST_CONFIG = (stateDir: string) => ({
  server: { port: 0, host: '127.0.0.1' },
  sites: [{ id: 7, domain: 'example.com' }],
  stateDir,
  plugins: PLUGINS,
})

describe('options', () => {
  test('bad flags are refused with the flag named, exit 2, no stack trace', async () => {
    const cases: [string[], string][] = [
      [[], 'replay: name an input (- = stdin)'],
      [['--chunk-size', 'ten', 'x'], 'replay --chunk-size: expected integer'],
      [['--status', '502,abc', 'x'], 'replay --status: expected integer'],
      [['--format', 'csv', 'x'], 'replay --format: expected ndjson or access-log'],
    ]
    for (const [args, message] of cases) {
      const proc = Bun.spawn([process.execPath, cli, 'replay', ...args], { cwd: root, stdout: 'pipe', stderr: 'pipe' })
      const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited])
      expect(code).toBe(2)
      expect(stderr).toStartWith(message)
      expect(stderr).not.toMatch(/\n\s+at /)
    }
    const missing = await replay(['--config', configFile(tempDir('replay-state-')), '/nonexistent/file.ndjson'])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('replay: cannot read /nonexistent/file.ndjson')
  })

  test('every option has a description and a row in docs/operators/replay.md', () => {
    const doc = readFileSync(join(root, 'docs/operators/replay.md'), 'utf8')
    const flags: Record<string, string> = {
      inputs: 'INPUT...',
      format: '`--format`',
      chunkSize: '`--chunk-size N`',
      status: '`--status LIST`',
      progressIntervalMs: '`--progress-interval-ms N`',
    }
    for (const [key, schema] of Object.entries(ReplayOptionsSchema.properties)) {
      expect((schema as { description?: string }).description, key).toBeTruthy()
      expect(doc, key).toContain(flags[key]!)
    }
  })
})

describe('NDJSON request records', () => {
  let stateDir: string
  let live: { events: Row[]; sessions: Row[] }
  let records: string
  let first: Run

  beforeAll(async () => {
    stateDir = tempDir('replay-state-')
    // The live side: the same pipeline over real HTTP, sharing the state folder (its daily salt).
    const engine: TestEngine = await startTestEngine(TEST_CONFIG(stateDir))
    const { port } = await engine.engine.listen()
    const times: number[] = []
    for (const sent of TRAFFIC) {
      times.push(Date.now())
      const res = await fetch(`http://127.0.0.1:${port}/api/event`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': sent.ua, 'x-forwarded-for': sent.ip },
        body: sent.body,
      })
      await res.text()
    }
    live = { events: [...engine.events()], sessions: [...engine.sessions()] }
    await engine.close()
    expect(live.events).toHaveLength(KEPT.length)
    // Each kept request gets the second its live row has; the others the time they were sent.
    KEPT.forEach((i, k) => {
      times[i] = Date.parse(`${(live.events[k]!.timestamp as string).replace(' ', 'T')}Z`) + 123
    })
    records = TRAFFIC.map((sent, i) =>
      JSON.stringify({
        method: 'POST',
        path: '/api/event',
        headers: { 'Content-Type': 'application/json', 'User-Agent': sent.ua, 'X-Forwarded-For': sent.ip },
        body: sent.body,
        receivedAt: times[i],
      }),
    ).join('\n')
    first = await replay(['--config', configFile(stateDir), '-'], `${records}\n`)
  })

  test('give the rows the same requests give over HTTP', () => {
    expect(first.code).toBe(0)
    const replayed = rowsOf(first.stdout)
    expect(withSessionOrdinals(replayed.events, replayed.sessions)).toEqual(
      withSessionOrdinals(live.events, live.sessions),
    )
    expect(first.summary).toMatchObject({
      replay: 'done',
      lines: TRAFFIC.length,
      accepted: KEPT.length,
      dropped: 2,
      refused: 1,
      duplicates: 0,
      invalid: 0,
      drops: { bot: 1, not_found: 1 },
    })
  })

  test('the same input again writes nothing', async () => {
    const again = await replay(['--config', configFile(stateDir), '-'], `${records}\n`)
    expect(again.code).toBe(0)
    expect(again.stdout).toBe('')
    expect(again.summary).toMatchObject({ accepted: 0, dropped: 0, refused: 0, duplicates: TRAFFIC.length })
  })

  test('the ledger holds keyed hashes only, nothing of the requests', () => {
    const folder = join(stateDir, 'replay')
    expect(readdirSync(folder).sort()).toEqual(['key', 'ledger'])
    const ledger = readFileSync(join(folder, 'ledger'), 'utf8')
    expect(ledger.trim().split('\n')).toHaveLength(TRAFFIC.length)
    expect(ledger).toMatch(/^([0-9a-f]{32}\n)+$/)
  })

  test("the stdout sink's rows replayed into another sink come out byte for byte", async () => {
    const other = tempDir('replay-rows-')
    const file = join(other, 'rows.ndjson')
    writeFileSync(file, first.stdout)
    const rows = await replay(['--config', configFile(other), file])
    expect(rows.code).toBe(0)
    expect(rows.stdout).toBe(first.stdout)
    expect(rows.summary).toMatchObject({ accepted: KEPT.length, invalid: 0 })
    // Rows are not run through the plugins again: the ids stay as they were.
    const twice = await replay(['--config', configFile(other), file])
    expect(twice.stdout).toBe('')
    expect(twice.summary).toMatchObject({ duplicates: KEPT.length })
  })

  test("the stdout sink's rows replayed into chdb read back column by column", async () => {
    const state = tempDir('replay-chdb-')
    const file = join(state, 'rows.ndjson')
    writeFileSync(file, first.stdout)
    const config = join(state, 'analytics.yaml')
    writeFileSync(
      config,
      `stateDir: ${state}\nsites: [{ id: 7, domain: example.com }]\nsinks: [{ chdb: { path: ${join(state, 'db')}, database: replayed, flushIntervalMs: 20 } }]\n`,
    )
    const run = await replay(['--config', config, file])
    expect(run.code).toBe(0)
    expect(run.summary).toMatchObject({ accepted: KEPT.length, invalid: 0 })
    // The expected rows: the printed ones, as events again, in the order the fixtures' selects read.
    const events: AnalyticsEvent[] = []
    for (const line of first.stdout.trim().split('\n')) {
      const { _table, ...row } = JSON.parse(line)
      if (_table === 'events_v2') {
        const event = eventFromRow(row) as AnalyticsEvent
        event.sessionRows = []
        events.push(event)
      } else events.at(-1)!.sessionRows.push(sessionFromRow(row) as AnalyticsEvent['sessionRows'][number])
    }
    const reader = Bun.spawn(
      [process.execPath, join(root, 'test/fixtures/chdb-read.ts'), join(state, 'db'), 'replayed'],
      {
        cwd: root,
        stdout: 'pipe',
        stderr: 'inherit',
      },
    )
    const read = JSON.parse(await new Response(reader.stdout).text())
    expect(await reader.exited).toBe(0)
    // Compared as sets: the selects order by the ids as read, which need not be the fixtures' order.
    const sorted = (rows: object[]) =>
      rows.map((r) => JSON.stringify(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1)))).sort()
    expect(sorted(read.events)).toEqual(sorted(sortedExpectedEvents(events)))
    expect(sorted(read.sessions)).toEqual(sorted(sortedExpectedSessions(events)))
  }, 60_000)
})

describe('bare Plausible bodies', () => {
  test('take their time, address and user agent from the envelope keys', async () => {
    const stateDir = tempDir('replay-state-')
    const input = [
      {
        n: 'pageview',
        u: 'https://example.com/a',
        d: 'example.com',
        receivedAt: '2026-01-05T10:00:00.250Z',
        ip: '203.0.113.5',
        userAgent: FIREFOX,
      },
      {
        n: 'pageview',
        u: 'https://example.com/b',
        d: 'example.com',
        receivedAt: '2026-01-05 10:00:30',
        ip: '203.0.113.5',
        userAgent: FIREFOX,
      },
      {
        n: 'pageview',
        u: 'https://example.com/c',
        d: 'example.com',
        receivedAt: 1767607260000,
        ip: '203.0.113.5',
        userAgent: FIREFOX,
        id: 'x-1',
      },
    ]
      .map((r) => JSON.stringify(r))
      .join('\n')
    const run = await replay(['--config', configFile(stateDir), '-'], input)
    expect(run.code).toBe(0)
    const { events, sessions } = rowsOf(run.stdout)
    expect(events.map((e) => [e.timestamp, e.pathname, e.browser])).toEqual([
      ['2026-01-05 10:00:00', '/a', 'Firefox'],
      ['2026-01-05 10:00:30', '/b', 'Firefox'],
      ['2026-01-05 10:01:00', '/c', 'Firefox'],
    ])
    // One visitor, one session: the times are the records', not the replay's.
    expect(new Set(events.map((e) => e.session_id)).size).toBe(1)
    expect(sessions.at(-1)).toMatchObject({ pageviews: 3, duration: 60, start: '2026-01-05 10:00:00' })
    // An explicit id decides alone: the same id with other content is a duplicate.
    const changed = JSON.stringify({ n: 'pageview', u: 'https://example.com/z', d: 'example.com', id: 'x-1' })
    const again = await replay(['--config', configFile(stateDir), '-'], changed)
    expect(again.stdout).toBe('')
    expect(again.summary).toMatchObject({ duplicates: 1 })
  })
})

// Needs user-id to pick the salt by the event's day when that day is before the salts in force
// (docs/operators/replay.md "Daily salts"): yesterday → the previous salt (withPrevious); older → a
// salt for that day made in memory for this process only, never written to the salt folder.
test('replayed events older than yesterday get per-day ids that no live id matches', async () => {
  const stateDir = tempDir('replay-state-')
  const engine = await startTestEngine(TEST_CONFIG(stateDir))
  await engine.post('/api/event', { n: 'pageview', u: 'https://example.com/', d: 'example.com' })
  const liveId = engine.events()[0]!.user_id
  await engine.close()
  const day = (n: number) => Date.now() - n * 86_400_000
  const input = [5, 4]
    .map((n) =>
      JSON.stringify({
        n: 'pageview',
        u: 'https://example.com/',
        d: 'example.com',
        receivedAt: day(n),
        ip: '127.0.0.1',
        userAgent: TEST_UA,
      }),
    )
    .join('\n')
  const run = await replay(['--config', configFile(stateDir), '-'], input)
  const ids = rowsOf(run.stdout).events.map((e) => e.user_id)
  expect(ids).toHaveLength(2)
  expect(ids[0]).not.toBe(ids[1])
  expect(ids).not.toContain(liveId)
  expect(readdirSync(join(stateDir, 'salts')).filter((f) => f.startsWith('salt-'))).toHaveLength(1)
})

describe('malformed lines', () => {
  test('are counted and listed by line number, never quoted, and the run goes on', async () => {
    const stateDir = tempDir('replay-state-')
    const good = (path: string) =>
      JSON.stringify({
        n: 'pageview',
        u: `https://example.com${path}`,
        d: 'example.com',
        userAgent: TEST_UA,
        ip: '203.0.113.3',
      })
    const lines = [
      good('/1'),
      '{"n":"pageview","u":"https://example.com/secret-203.0.113.77',
      '',
      '[1,2,3]',
      good('/2'),
      '{"_table":"sessions_v2","session_id":"1"}',
      '{"method":"PUT","path":"/api/event","body":"x"}',
      '{"n":"pageview","receivedAt":"yesterday at noon 203.0.113.78"}',
      '{"_table":"events_v2","timestamp":"2026-01-01 00:00:00","name":"pageview"}',
      good('/3'),
    ]
    const file = join(tempDir('replay-input-'), 'mixed.ndjson')
    writeFileSync(file, lines.join('\n'))
    const run = await replay(['--config', configFile(stateDir), file])
    expect(run.code).toBe(1)
    expect(rowsOf(run.stdout).events.map((e) => e.pathname)).toEqual(['/1', '/2', '/3'])
    expect(run.summary).toMatchObject({ replay: 'done_with_invalid_lines', lines: 10, accepted: 3, invalid: 6 })
    const listed = (run.summary.invalidLines as { line: string; reason: string }[]).map((l) => l.line)
    expect(listed).toEqual([2, 4, 6, 7, 8, 9].map((n) => `${file}:${n}`))
    expect(run.stderr).not.toContain('203.0.113.77')
    expect(run.stderr).not.toContain('203.0.113.78')
    expect(run.stderr).not.toContain('secret')
  })
})

/** Spawns a replay reading stdin that the test feeds, and reads its stdout as it comes. */
function feedable(args: string[]) {
  const proc = Bun.spawn([process.execPath, cli, 'replay', ...args, '-'], {
    cwd: root,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  let stdout = ''
  const reading = (async () => {
    const decoder = new TextDecoder()
    const reader = proc.stdout.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      stdout += decoder.decode(value, { stream: true })
    }
  })()
  const stderr = new Response(proc.stderr).text()
  return {
    proc,
    stdout: () => stdout,
    async waitForRows(n: number) {
      for (
        let i = 0;
        i < 500 && stdout.split('\n').filter((l) => l.startsWith('{"_table":"events_v2"')).length < n;
        i++
      ) {
        await Bun.sleep(20)
      }
    },
    async done() {
      const code = await proc.exited
      await reading
      const err = await stderr
      return { code, stdout, stderr: err, summary: summaryOf(err) }
    },
  }
}

function numberedRecords(n: number): string[] {
  const start = Date.UTC(2026, 0, 10, 8, 0, 0)
  return Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      n: 'pageview',
      u: `https://example.com/p/${i}`,
      d: 'example.com',
      receivedAt: start + i * 1000,
      ip: `198.51.100.${i % 200}`,
      userAgent: TEST_UA,
    }),
  )
}

const pathsOf = (stdout: string) => rowsOf(stdout).events.map((e) => e.pathname as string)

describe('an interrupted run', () => {
  test('stopped by SIGTERM, then resumed: every event exactly once', async () => {
    const stateDir = tempDir('replay-state-')
    const all = numberedRecords(400)
    const config = configFile(stateDir)
    const run = feedable(['--config', config, '--chunk-size', '50'])
    run.proc.stdin.write(`${all.slice(0, 150).join('\n')}\n`)
    run.proc.stdin.flush()
    await run.waitForRows(150)
    // A second replay on the same state folder refuses while the first holds the ledger.
    const rival = await replay(['--config', config, '-'], all[0])
    expect(rival.code).toBe(2)
    expect(rival.stderr).toContain('another replay')
    run.proc.kill('SIGTERM')
    const stopped = await run.done()
    expect(stopped.code).toBe(3)
    expect(stopped.summary).toMatchObject({ replay: 'interrupted', accepted: 150 })

    const file = join(tempDir('replay-input-'), 'all.ndjson')
    writeFileSync(file, `${all.join('\n')}\n`)
    const resumed = await replay(['--config', config, file])
    expect(resumed.code).toBe(0)
    expect(resumed.summary).toMatchObject({ duplicates: 150, accepted: 250 })
    const paths = [...pathsOf(stopped.stdout), ...pathsOf(resumed.stdout)]
    expect(paths).toEqual(all.map((_, i) => `/p/${i}`))
  })

  test('killed with SIGKILL, then resumed: every event at least once, at most one chunk twice', async () => {
    const stateDir = tempDir('replay-state-')
    const all = numberedRecords(400)
    const config = configFile(stateDir)
    const chunk = 40
    const run = feedable(['--config', config, '--chunk-size', String(chunk)])
    run.proc.stdin.write(`${all.slice(0, 130).join('\n')}\n`)
    run.proc.stdin.flush()
    await run.waitForRows(130)
    run.proc.kill('SIGKILL')
    await run.proc.exited
    const killedPaths = pathsOf(run.stdout().slice(0, run.stdout().lastIndexOf('\n') + 1))

    const file = join(tempDir('replay-input-'), 'all.ndjson')
    writeFileSync(file, `${all.join('\n')}\n`)
    const resumed = await replay(['--config', config, file])
    expect(resumed.code).toBe(0)
    const paths = [...killedPaths, ...pathsOf(resumed.stdout)]
    const counts = new Map<string, number>()
    for (const p of paths) counts.set(p, (counts.get(p) ?? 0) + 1)
    for (let i = 0; i < all.length; i++) expect(counts.get(`/p/${i}`) ?? 0).toBeGreaterThanOrEqual(1)
    const twice = [...counts.values()].filter((n) => n > 1).length
    // 130 fed, checkpoints at 40, 80, 120: only the 10 after the last checkpoint can come twice.
    expect(twice).toBeLessThanOrEqual(chunk)
    expect(resumed.summary.duplicates).toBeGreaterThanOrEqual(120)
  })
})

describe('a sink that loses rows', () => {
  test('stops the run without recording the chunk, so a rerun sends it', async () => {
    const stateDir = tempDir('replay-state-')
    const file = join(tempDir('replay-input-'), 'in.ndjson')
    const all = numberedRecords(3000)
    writeFileSync(file, `${all.join('\n')}\n`)
    const config = configFile(stateDir)
    const proc = Bun.spawn([process.execPath, cli, 'replay', '--config', config, '--chunk-size', '500', file], {
      cwd: root,
      stdout: 'pipe',
      stderr: 'pipe',
    })
    // The reader of stdout goes away after the first bytes: the stdout sink's writes fail.
    const reader = proc.stdout.getReader()
    await reader.read()
    await reader.cancel()
    const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited])
    expect(code).toBe(4)
    const lost = summaryOf(stderr)
    expect(lost.replay).toBe('sink_failed')
    expect(lost.ledgerIds as number).toBeLessThan(all.length)
    const rerun = await replay(['--config', config, file])
    expect(rerun.code).toBe(0)
    // Everything the ledger does not hold comes again; the ledger held only chunks stdout took whole.
    expect(pathsOf(rerun.stdout)).toEqual(
      all.slice(lost.ledgerIds as number).map((_, i) => `/p/${i + (lost.ledgerIds as number)}`),
    )
  })
})

describe('progress', () => {
  test('is one JSON line per interval on a pipe, then a summary', async () => {
    const stateDir = tempDir('replay-state-')
    const run = feedable(['--config', configFile(stateDir), '--progress-interval-ms', '50'])
    const all = numberedRecords(20)
    // After the first row the engine is up: the rest trickle in over about 0.8 s.
    run.proc.stdin.write(`${all[0]}\n`)
    run.proc.stdin.flush()
    await run.waitForRows(1)
    for (const line of all.slice(1)) {
      run.proc.stdin.write(`${line}\n`)
      run.proc.stdin.flush()
      await Bun.sleep(40)
    }
    run.proc.stdin.end()
    const done = await run.done()
    expect(done.code).toBe(0)
    const progress = done.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{"replay":"progress"'))
      .map((l) => JSON.parse(l))
    expect(progress.length).toBeGreaterThanOrEqual(2)
    for (const p of progress) {
      expect(Object.keys(p)).toEqual(
        expect.arrayContaining(['lines', 'accepted', 'dropped', 'duplicates', 'invalid', 'linesPerSecond']),
      )
    }
    // Counts only grow.
    for (let i = 1; i < progress.length; i++) expect(progress[i].lines).toBeGreaterThanOrEqual(progress[i - 1].lines)
    expect(done.summary).toMatchObject({ replay: 'done', lines: 20, accepted: 20 })
  })

  // `script` (util-linux) gives the process a pseudo-terminal.
  const script = Bun.which('script')
  if (!script) console.warn('script (util-linux) is not installed: the progress-bar-on-a-terminal test is SKIPPED')
  test.skipIf(!script)('is a bar redrawn in place on a terminal', async () => {
    const stateDir = tempDir('replay-state-')
    const file = join(tempDir('replay-input-'), 'in.ndjson')
    writeFileSync(file, numberedRecords(5).join('\n'))
    // `script` gives the process a pseudo-terminal; its stdout rows come through the same terminal.
    const command = [process.execPath, cli, 'replay', '--config', configFile(stateDir), file].join(' ')
    const proc = Bun.spawn(['script', '-qec', command, '/dev/null'], { cwd: root, stdout: 'pipe', stderr: 'pipe' })
    const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
    expect(code).toBe(0)
    expect(out).toContain('\r\x1b[2K[########################] 100%  5 lines  5 accepted')
    expect(out).toContain('replay done: 5 accepted, 0 dropped')
    expect(out).not.toContain('{"replay":')
  })
})

describe('access-log lines', () => {
  test('undo nginx escaping, as UTF-8', () => {
    expect(unescapeNginx('{\\x22n\\x22:\\x22\\xC3\\xBCber\\x22}')).toBe('{"n":"über"}')
    expect(unescapeNginx('a\\\\x5Cb')).toBe('a\\\\b')
    expect(unescapeNginx('\\xC3')).toBeUndefined()
  })

  test('parse the documented format; the filter picks statuses', () => {
    const line =
      '1767607200.123 203.0.113.9 502 "POST /api/event?x=1" "10.0.0.1, 203.0.113.9" "Mozilla/5.0 \\x22Test\\x22" "text/plain" "{\\x22n\\x22:\\x22pageview\\x22}"'
    expect(parseAccessLogLine(line, Date.now())).toEqual({
      kind: 'request',
      method: 'POST',
      path: '/api/event?x=1',
      headers: [
        ['x-forwarded-for', '10.0.0.1, 203.0.113.9'],
        ['user-agent', 'Mozilla/5.0 "Test"'],
        ['content-type', 'text/plain'],
      ],
      body: '{"n":"pageview"}',
      receivedAt: 1767607200123,
      timeGiven: true,
      peerIp: '203.0.113.9',
      explicitId: undefined,
    })
    expect(parseAccessLogLine(line, Date.now(), { statuses: new Set([202]) })).toBeUndefined()
    const iso = line.replace('1767607200.123', '2026-01-05T10:00:00+00:00').replace('"10.0.0.1, 203.0.113.9"', '"-"')
    expect(parseAccessLogLine(iso, Date.now())).toMatchObject({
      receivedAt: 1767607200000,
      headers: [
        ['user-agent', 'Mozilla/5.0 "Test"'],
        ['content-type', 'text/plain'],
      ],
    })
    expect(
      parseAccessLogLine('203.0.113.9 - - [05/Jan/2026:10:00:00 +0000] "POST /api/event HTTP/1.1" 202', 0),
    ).toEqual({
      kind: 'invalid',
      reason: 'does not match the analytics_replay log format',
    })
  })
})

// nginx in front of the engine, logging with the documented format: the log replayed gives the rows
// the engine made live; lines nginx answered 502 (engine down) are the backfill.
const nginx = Bun.which('nginx') ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : undefined)
if (!nginx) console.warn('nginx is not installed (apt-get install nginx-light): the access-log replay test is SKIPPED')

describe.skipIf(!nginx)('an nginx access log', () => {
  let folder: string
  let proc: ReturnType<typeof Bun.spawn> | undefined
  let engine: TestEngine
  let nginxPort: number

  async function freePort(): Promise<number> {
    const server = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Response() })
    const port = server.port!
    server.stop(true)
    return port
  }

  beforeAll(async () => {
    folder = tempDir('replay-nginx-')
    mkdirSync(join(folder, 'tmp'))
    engine = await startTestEngine({ ...TEST_CONFIG(join(folder, 'state')) })
    const { port: enginePort } = await engine.engine.listen()
    nginxPort = await freePort()
    const deadPort = await freePort()
    const tmp = join(folder, 'tmp')
    writeFileSync(
      join(folder, 'nginx.conf'),
      `daemon off;
master_process off;
pid ${folder}/nginx.pid;
error_log ${folder}/error.log;
events {}
http {
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  access_log off;
  log_format analytics_replay '$msec $remote_addr $status "$request_method $request_uri" '
                              '"$http_x_forwarded_for" "$http_user_agent" "$content_type" "$request_body"';
  server {
    listen 127.0.0.1:${nginxPort};
    client_body_buffer_size 64k;
    location = /api/event {
      access_log ${folder}/access.log analytics_replay;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_pass http://127.0.0.1:${enginePort};
    }
    location = /down/api/event {
      access_log ${folder}/access.log analytics_replay;
      proxy_pass http://127.0.0.1:${deadPort}/api/event;
    }
  }
}
`,
    )
    proc = Bun.spawn([nginx!, '-p', folder, '-c', join(folder, 'nginx.conf')], { stdout: 'ignore', stderr: 'pipe' })
    for (let i = 0; i < 100; i++) {
      try {
        await fetch(`http://127.0.0.1:${nginxPort}/nothing`)
        break
      } catch {
        await Bun.sleep(50)
      }
    }
  })

  afterAll(async () => {
    proc?.kill('SIGTERM')
    await proc?.exited
    await engine?.close()
  })

  test('replays the lines as the engine saw them live, and the 502s as a backfill', async () => {
    // The same visitors as over HTTP, from real client addresses (nginx sees 127.0.0.1, which the
    // engine trusts; X-Forwarded-For carries the visitor).
    const send = (path: string, sent: Sent) =>
      fetch(`http://127.0.0.1:${nginxPort}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': sent.ua, 'x-forwarded-for': sent.ip },
        body: sent.body,
      }).then((r) => r.status)
    const statuses: number[] = []
    for (const sent of TRAFFIC) statuses.push(await send('/api/event', sent))
    expect(statuses).toEqual(TRAFFIC.map((_, i) => (i === 6 ? 400 : 202)))
    const outage = [
      {
        ip: '203.0.113.50',
        ua: FIREFOX,
        body: body({ n: 'pageview', u: 'https://example.com/while-down', d: 'example.com' }),
      },
      {
        ip: '203.0.113.50',
        ua: FIREFOX,
        body: body({ n: 'Outage click', u: 'https://example.com/while-down', d: 'example.com' }),
      },
    ]
    for (const sent of outage) expect(await send('/down/api/event', sent)).toBe(502)

    const log = join(folder, 'access.log')
    for (let i = 0; i < 50 && readFileSync(log, 'utf8').trim().split('\n').length < TRAFFIC.length + 2; i++)
      await Bun.sleep(20)
    // The outage lines name the path nginx was asked for; the engine's route is /api/event.
    writeFileSync(log, readFileSync(log, 'utf8').replaceAll('"POST /down/api/event', '"POST /api/event'))

    // A fresh state folder but the live engine's salts, so the same visitors get the same ids.
    const salts = join(folder, 'state', 'salts')
    const replayConfig = (state: string) =>
      configFile(state, PLUGINS.map((p) => (p === 'user-id' ? `{ user-id: { directory: ${salts} } }` : p)).join(', '))
    const liveRun = await replay([
      '--config',
      replayConfig(tempDir('replay-state-')),
      '--format',
      'access-log',
      '--status',
      '202,400',
      log,
    ])
    expect(liveRun.code).toBe(0)
    expect(liveRun.summary).toMatchObject({ accepted: KEPT.length, dropped: 2, refused: 1, filtered: 2, invalid: 0 })
    const replayed = rowsOf(liveRun.stdout)
    const live = { events: engine.events(), sessions: engine.sessions() }
    // nginx's clock ($msec) and the engine's may fall on either side of a second: times are
    // compared within one second, everything else exactly.
    const timeless = (rows: Row[]) => rows.map(({ timestamp, start, duration, ...rest }) => rest)
    const a = withSessionOrdinals(replayed.events, replayed.sessions)
    const b = withSessionOrdinals(live.events, live.sessions)
    expect(timeless(a.events)).toEqual(timeless(b.events))
    expect(timeless(a.sessions)).toEqual(timeless(b.sessions))
    const seconds = (t: unknown) => Date.parse(`${(t as string).replace(' ', 'T')}Z`) / 1000
    for (const [i, e] of a.events.entries()) {
      expect(Math.abs(seconds(e.timestamp) - seconds(b.events[i]!.timestamp))).toBeLessThanOrEqual(1)
    }

    const backfill = await replay([
      '--config',
      replayConfig(tempDir('replay-state-')),
      '--format',
      'access-log',
      '--status',
      '502',
      log,
    ])
    expect(backfill.code).toBe(0)
    expect(rowsOf(backfill.stdout).events.map((e) => [e.name, e.pathname, e.browser])).toEqual([
      ['pageview', '/while-down', 'Firefox'],
      ['Outage click', '/while-down', 'Firefox'],
    ])
    expect(backfill.summary).toMatchObject({ accepted: 2, filtered: TRAFFIC.length })
  })
})

test('a request the engine answers 5xx is not recorded: the run stops with exit 4 and a rerun sends it', async () => {
  const stateDir = tempDir('replay-state-')
  const dir = tempDir('replay-config-')
  // A dialect that fails on one path: what a full spool under ack: durable does to a request.
  const dialect = join(dir, 'flaky-dialect.ts')
  writeFileSync(
    dialect,
    `import { Type } from '@sinclair/typebox'
import { definePlugin } from '${join(import.meta.dir, '../../core/plugin.ts')}'
export default definePlugin({
  name: 'flaky', stage: 'parse', summary: 'fails on /fail', options: Type.Object({}),
  setup() {
    return { routes: [{ method: 'POST', path: '/:what', handle(req) {
      if (req.params.what === 'fail' && !process.env.FLAKY_FIXED) throw new Error('boom')
      return new Response('ok', { status: 202 })
    } }] }
  },
})
`,
  )
  const config = join(dir, 'analytics.yaml')
  writeFileSync(config, `stateDir: ${stateDir}\nplugins: [${dialect}]\nsinks: [memory]\n`)
  const record = (path: string) => JSON.stringify({ method: 'POST', path, headers: {}, body: '{}' })
  const input = [record('/ok'), record('/fail'), record('/later')].join('\n')
  const first = await replay(['--config', config, '-'], input)
  expect(first.code).toBe(4)
  expect(first.summary).toMatchObject({ replay: 'sink_failed', refused: 1 })
  // The rerun skips what was done and sends the failed record again.
  const second = await replay(['--config', config, '-'], input, { FLAKY_FIXED: '1' })
  expect(second.code).toBe(0)
  expect(second.summary).toMatchObject({ replay: 'done', duplicates: 1 })
})
