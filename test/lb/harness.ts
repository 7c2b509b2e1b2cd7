// What the load-balancer and network-namespace tests share: engine processes whose rows are read
// from their standard output (so a test knows which engine stored which event), requests sent from a
// chosen source address on a fresh connection each, and the user id a visitor must get.
//
//   const engine = await startEngine(config, dir, { port })        // `bun core/cli.ts serve`
//   const { status } = await post(url, body, { localAddress: '127.0.0.7' })
//   engine.rows()                                                   // events_v2 rows so far

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Subprocess } from 'bun'
import { stringify } from 'yaml'
import { rootDomainOf } from '../../plugins/user-id/index.ts'
import { dayName } from '../../plugins/user-id/salts.ts'
import { sipHash24, sipKey } from '../../plugins/user-id/siphash.ts'

export const root = resolve(import.meta.dir, '../..')
const cli = join(root, 'core/cli.ts')

/** A desktop Chrome: not a bot. */
export const UA =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'

/** An events_v2 row as the stdout sink prints it (the columns the tests read). */
export interface Row {
  timestamp: string
  user_id: string
  session_id: string
  'meta.key': string[]
  'meta.value': string[]
}

/** A prop of a row (`p` of the request). */
export function prop(row: Row, key: string): string | undefined {
  const i = row['meta.key'].indexOf(key)
  return i < 0 ? undefined : row['meta.value'][i]
}

export interface EngineProcess {
  readonly name: string
  readonly port: number
  readonly proc: Subprocess
  /** events_v2 rows printed so far. */
  rows(): Row[]
  /** Everything the engine logged so far (JSON lines). */
  log(): string
  /** SIGTERM, then the exit code (SIGKILL after 20 s). */
  stop(): Promise<number>
}

const running = new Set<Subprocess>()

/** Kills the engines a failed test left running (by their handles). */
export function killEngines(): void {
  for (const proc of running) proc.kill('SIGKILL')
  running.clear()
}

export interface EngineStart {
  name: string
  port: number
  /** Words before `bun`, e.g. `['ip', 'netns', 'exec', 'm1']`. */
  prefix?: string[]
  /** Extra `bun` flags before the script, e.g. `['--preload', file]`. */
  bunFlags?: string[]
  env?: Record<string, string>
}

/**
 * Writes `config` as YAML in a new folder under `dir` and runs `bun core/cli.ts serve` on `port`
 * (with the stdout sink in the config, standard output carries the rows). Resolves once it listens.
 */
export async function startEngine(
  config: Record<string, unknown>,
  dir: string,
  o: EngineStart,
): Promise<EngineProcess> {
  const file = join(mkdtempSync(join(dir, `${o.name}-`)), 'analytics.yaml')
  writeFileSync(file, stringify(config))
  const proc = Bun.spawn(
    [
      ...(o.prefix ?? []),
      process.execPath,
      ...(o.bunFlags ?? []),
      cli,
      'serve',
      '--config',
      file,
      '--port',
      String(o.port),
    ],
    { cwd: root, stdout: 'pipe', stderr: 'pipe', env: { ...process.env, ...o.env } },
  )
  running.add(proc)
  void proc.exited.then(() => running.delete(proc))
  let log = ''
  const rows: Row[] = []
  let listening: () => void = () => {}
  const listened = new Promise<void>((r) => {
    listening = r
  })
  // Both pipes are read to the end, always: a full pipe would stall the engine.
  const readAll = async (stream: ReadableStream<Uint8Array>, line: (text: string) => void) => {
    const decoder = new TextDecoder()
    let pending = ''
    const reader = stream.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return
      pending += decoder.decode(value, { stream: true })
      let nl = pending.indexOf('\n')
      while (nl >= 0) {
        line(pending.slice(0, nl))
        pending = pending.slice(nl + 1)
        nl = pending.indexOf('\n')
      }
    }
  }
  const drained = Promise.all([
    readAll(proc.stdout, (text) => {
      const row = JSON.parse(text) as Row & { _table?: string }
      if (row._table === undefined || row._table === 'events_v2') rows.push(row)
    }),
    readAll(proc.stderr, (text) => {
      log += `${text}\n`
      if (text.includes('"msg":"Listening."')) listening()
    }),
  ])
  await Promise.race([
    listened,
    proc.exited.then((code) => {
      throw new Error(`${o.name} exited with ${code} before listening:\n${log}`)
    }),
    Bun.sleep(20_000).then(() => {
      throw new Error(`${o.name} did not listen within 20 s:\n${log}`)
    }),
  ])
  return {
    name: o.name,
    port: o.port,
    proc,
    rows: () => rows,
    log: () => log,
    async stop() {
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000)
      const code = await proc.exited
      clearTimeout(timer)
      await drained
      return code
    },
  }
}

export interface Answer {
  status: number
  /** The `x-plausible-dropped` header (how many events of the request were dropped), if any. */
  dropped: string | undefined
}

/**
 * POSTs a Plausible event to `url` on a connection of its own (no keep-alive, no pool), from
 * `localAddress` when given: on Linux every 127.x.y.z address is local, so each one is a client.
 */
export function post(
  url: string,
  body: Record<string, unknown>,
  o: { localAddress?: string; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Answer> {
  const target = new URL('/api/event', url)
  const payload = JSON.stringify(body)
  return new Promise((resolvePromise, reject) => {
    const req = request(
      {
        host: target.hostname,
        port: Number(target.port),
        path: target.pathname,
        method: 'POST',
        agent: false,
        localAddress: o.localAddress,
        timeout: o.timeoutMs ?? 10_000,
        headers: {
          'content-type': 'text/plain',
          'user-agent': UA,
          connection: 'close',
          'content-length': String(Buffer.byteLength(payload)),
          ...o.headers,
        },
      },
      (res) => {
        res.resume()
        res.on('end', () => {
          const dropped = res.headers['x-plausible-dropped']
          resolvePromise({ status: res.statusCode ?? 0, dropped: typeof dropped === 'string' ? dropped : undefined })
        })
      },
    )
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${o.timeoutMs ?? 10_000} ms`)))
    req.on('error', reject)
    req.end(payload)
  })
}

/** A pageview of example.com carrying `seq` (and any other props) as props. */
export function pageview(seq: number, props: Record<string, string> = {}): Record<string, unknown> {
  return { n: 'pageview', u: `https://example.com/p/${seq}`, d: 'example.com', p: { seq: String(seq), ...props } }
}

/** Runs `task(i)` for i in [0, count), `parallel` at a time. */
export async function inParallel(count: number, parallel: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(parallel, count) }, async () => {
      while (next < count) await task(next++)
    }),
  )
}

/** Waits until `check()` is true, polling; throws `what` after `ms`. */
export async function until(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`)
    await Bun.sleep(25)
  }
}

/**
 * The user id the user-id plugin gives (UA, client IP, example.com) under a 16-byte salt: what an
 * engine must store when it resolved `ip` as the client address.
 */
export function expectedUserId(salt: Uint8Array, ip: string, ua = UA, domain = 'example.com'): string {
  const bytes = new TextEncoder().encode(ua + ip + domain + rootDomainOf(domain))
  return sipHash24(sipKey(salt), bytes, bytes.length).toString()
}

/** The salt of the UTC day of `ms` in a `store: file` folder. */
export function fileSalt(directory: string, ms = Date.now()): Uint8Array {
  const file = join(directory, `salt-${dayName(Math.floor(ms / 86_400_000))}`)
  if (!existsSync(file)) throw new Error(`no salt file ${file}`)
  return new Uint8Array(readFileSync(file))
}

/** A temporary folder for configs and state; `remove()` in afterAll. */
export function scratchDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix))
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) }
}
