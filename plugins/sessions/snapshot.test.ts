// The session snapshot (issue "scale out": "a session snapshot on SIGTERM restored at start"), over
// real HTTP: a visit that spans a restart stays one session, its rows collapse, the snapshot holds no
// address or user agent, is read once, and expired sessions are not brought back.

import { afterAll, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startTestEngine, TEST_UA } from '../../core/testing.ts'
import { restoreSnapshot, writeSnapshot } from './snapshot.ts'
import { MemorySessionStore } from './store.ts'

const stateDir = mkdtempSync(join(tmpdir(), 'sessions-snapshot-'))
afterAll(() => rmSync(stateDir, { recursive: true, force: true }))
const snapshotFile = join(stateDir, 'sessions', 'snapshot.ndjson')

const config = {
  server: { port: 0, host: '127.0.0.1', trustedProxies: ['loopback'] },
  sites: [{ id: 3, domain: 'example.com' }],
  stateDir,
  plugins: ['plausible', 'client-ip', 'user-agent', 'user-id', 'referrer', 'sessions'],
}

async function visit(path: string) {
  const t = await startTestEngine(config)
  const { port } = await t.engine.listen()
  const res = await fetch(`http://127.0.0.1:${port}/api/event`, {
    method: 'POST',
    headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA, 'x-forwarded-for': '198.51.100.77' },
    body: JSON.stringify({
      n: 'pageview',
      u: `https://example.com${path}`,
      d: 'example.com',
      r: 'https://news.ycombinator.com/',
    }),
  })
  expect(res.status).toBe(202)
  const rows = [...t.sessions()]
  // Shutdown, as on SIGTERM: the plugin writes its snapshot.
  await t.close()
  return rows
}

test('a visit across a restart stays one session whose rows collapse', async () => {
  const [first] = await visit('/before')
  expect(existsSync(snapshotFile)).toBe(true)
  const snapshot = readFileSync(snapshotFile, 'utf8')
  expect(snapshot).not.toContain('198.51.100.77')
  expect(snapshot).not.toContain('Chrome/')
  const [minus, plus] = await visit('/after')
  // The -1 row repeats the +1 row of the previous run exactly, so VersionedCollapsingMergeTree folds them.
  expect(minus).toEqual({ ...first!, sign: -1 })
  expect(plus).toMatchObject({
    session_id: first!.session_id,
    sign: 1,
    pageviews: 2,
    entry_page: '/before',
    exit_page: '/after',
    referrer_source: 'Hacker News',
  })
})

test('a snapshot is read once: a later start without a new one begins afresh', async () => {
  const store = new MemorySessionStore(1800, 1000)
  await visit('/one')
  expect(restoreSnapshot(snapshotFile, store, Date.now() / 1000, 1800).restored).toBe(1)
  expect(existsSync(snapshotFile)).toBe(false)
  expect(restoreSnapshot(snapshotFile, new MemorySessionStore(1800, 1000), Date.now() / 1000, 1800)).toEqual({
    restored: 0,
    skipped: 0,
  })
})

test('sessions idle past the timeout are neither saved nor restored', async () => {
  await visit('/old')
  const store = new MemorySessionStore(1800, 1000)
  const later = Date.now() / 1000 + 1801
  expect(restoreSnapshot(snapshotFile, store, later, 1800)).toEqual({ restored: 0, skipped: 1 })
  await visit('/again')
  const kept = new MemorySessionStore(1800, 1000)
  restoreSnapshot(snapshotFile, kept, Date.now() / 1000, 1800)
  expect(writeSnapshot(snapshotFile, kept, later, 1800)).toBe(0)
})

test("a tool's engine (explain, replay, check) neither takes the snapshot nor leaves one", async () => {
  await visit('/kept')
  const before = readFileSync(snapshotFile, 'utf8')
  const { resolveConfig } = await import('../../core/config.ts')
  const { createEngine } = await import('../../core/engine.ts')
  const tool = await createEngine(
    await resolveConfig({ ...config, sinks: ['memory'] }, { source: '(test)', baseDir: stateDir }),
    {
      transient: true,
    },
  )
  await tool.shutdown()
  expect(readFileSync(snapshotFile, 'utf8')).toBe(before)
})
