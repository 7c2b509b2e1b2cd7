// Where the idle engine's RSS comes from (`bun bench/memory-idle.ts`): starts the engine of a bench
// config listening on a free port, waits a moment, and prints the memory breakdown before and after
// a full GC as one JSON line. `--without <plugin>` removes a plugin from the config (repeatable),
// `--sink memory` swaps the stdout sink for the memory sink, `--bare` starts no engine (Bun alone),
// `--elysia` only a bare Elysia app, so each component's share is the difference of two runs.
//
//   bun bench/memory-idle.ts [--config bench/cases/engine-stdout.yaml] [--without geoip] [--sink memory]

import { heapStats } from 'bun:jsc'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { flag } from './load.ts'

const root = resolve(import.meta.dir, '..')
const args = process.argv.slice(2)
const without = args.flatMap((a, i) => (a === '--without' && args[i + 1] ? [args[i + 1]!] : []))
const mb = (bytes: number) => Math.round(bytes / 2 ** 20)
const status = (key: string) =>
  Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024

const snapshot = () => {
  const m = process.memoryUsage()
  const h = heapStats()
  return {
    rss: mb(m.rss),
    hwm: Math.round(status('VmHWM')),
    anon: Math.round(status('RssAnon')),
    file: Math.round(status('RssFile')),
    heapSize: mb(h.heapSize),
    heapCapacity: mb(h.heapCapacity),
    extraMemory: mb(h.extraMemorySize),
    external: mb(m.external),
    arrayBuffers: mb(m.arrayBuffers),
  }
}

let stop: () => Promise<void> = async () => {}
if (args.includes('--bare')) {
  // nothing: Bun itself
} else if (args.includes('--elysia')) {
  const { Elysia } = await import('elysia')
  const app = new Elysia().post('/api/event', () => 'ok').listen({ port: 0, hostname: '127.0.0.1' })
  stop = async () => void app.stop()
} else {
  const { parse } = await import('yaml')
  const { resolveConfig } = await import('../core/config.ts')
  const { createEngine } = await import('../core/engine.ts')
  const { silentLogger } = await import('../core/logger.ts')
  const configPath = resolve(root, flag('config', 'bench/cases/engine-stdout.yaml'))
  const raw = parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>
  raw.plugins = (raw.plugins as unknown[]).filter((p) => {
    const name = typeof p === 'string' ? p : Object.keys(p as object)[0]!
    return !without.includes(name)
  })
  if (flag('sink', '') === 'memory') raw.sinks = [{ memory: { maxRows: 1000 } }]
  const stateDir = mkdtempSync(join(tmpdir(), 'bench-memory-idle-'))
  raw.stateDir = stateDir
  const config = await resolveConfig(raw, { source: configPath, baseDir: resolve(configPath, '..'), vars: {} })
  const engine = await createEngine(config, { logger: silentLogger })
  await engine.listen()
  stop = async () => {
    await engine.shutdown()
    rmSync(stateDir, { recursive: true, force: true })
  }
}
await Bun.sleep(500)
const before = snapshot()
Bun.gc(true)
await Bun.sleep(200)
const after = snapshot()
console.log(JSON.stringify({ args: args.join(' '), before, after }))
await stop()
process.exit(0)
