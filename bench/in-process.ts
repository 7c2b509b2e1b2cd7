// What the in-process benchmarks (bench/stages.ts, bench/rows.ts) share: the bench engine without
// sockets, and the corpus through its dialect.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parse } from 'yaml'
import { resolveConfig } from '../core/config.ts'
import { createEngine } from '../core/engine.ts'
import { silentLogger } from '../core/logger.ts'
import type { Ingest, IngestRequest, Route } from '../core/plugin.ts'
import { generateCorpus } from './corpus.ts'
import { warnUnlessStartEnv } from './load.ts'

/**
 * The engine of `configPath`, its sinks replaced by one memory sink (the sink code under test writes
 * into memory, stdout stays quiet) and its state in a fresh temporary folder, so no sessions are
 * restored from an earlier run's snapshot. `close` shuts it down and removes the folder.
 */
export async function inProcessEngine(configPath: string) {
  warnUnlessStartEnv()
  const raw = parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>
  raw.sinks = [{ memory: { maxRows: 1000 } }]
  const stateDir = mkdtempSync(join(tmpdir(), 'bench-engine-'))
  raw.stateDir = stateDir
  const config = await resolveConfig(raw, { source: configPath, baseDir: resolve(configPath, '..'), vars: {} })
  const engine = await createEngine(config, { logger: silentLogger })
  const route = engine.routes.find((r) => r.route.path === '/api/event')!.route
  const close = async () => {
    await engine.shutdown()
    rmSync(stateDir, { recursive: true, force: true })
  }
  return { engine, route, close }
}

/**
 * The corpus as real Requests through a dialect's route in-process, `ingest` receiving what the
 * dialect makes of them (bench/stages.ts and bench/rows.ts capture the events there).
 */
export async function corpusThroughRoute(route: Route, ingest: Ingest, count: number, seed: number): Promise<void> {
  for (const r of generateCorpus(count, seed)) {
    const request = new Request('http://localhost/api/event', {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'user-agent': r.ua, 'x-forwarded-for': r.ip },
      body: r.body,
    })
    const req: IngestRequest = { request, body: r.body, params: {}, peerIp: '127.0.0.1', receivedAt: Date.now() }
    await route.handle(req, ingest)
  }
}
