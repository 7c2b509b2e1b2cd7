// A throwaway ClickHouse server for tests: its own config, users, data folder and free ports, started
// from the installed binary (Debian clickhouse-server 18.16 here), stopped and removed afterwards.
//
//   const ch = await startClickHouse()        // undefined (and a loud warning) when no binary exists
//   await ch.query('SELECT 1')
//   await ch.kill(); await ch.start()         // a crash and a restart on the same ports and data
//   await ch.destroy()
//
// Tests use `describe.skipIf(!clickhouseBinary)` so a machine without ClickHouse skips them visibly.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Subprocess, spawn } from 'bun'

/** How to run the server: `[binary]` or `[binary, 'server']`; undefined when none is installed. */
export const clickhouseBinary: string[] | undefined = findBinary()

function findBinary(): string[] | undefined {
  const fromEnv = process.env.CLICKHOUSE_SERVER_BIN
  if (fromEnv && existsSync(fromEnv)) return [fromEnv]
  for (const path of ['/usr/sbin/clickhouse-server', '/usr/bin/clickhouse-server']) if (existsSync(path)) return [path]
  const single = Bun.which('clickhouse')
  if (single) return [single, 'server']
  return undefined
}

/** Servers still running; killed when the process exits (a script; bun test runs no 'exit' handlers, so tests destroy in afterAll). */
const live = new Set<Subprocess>()
process.on('exit', () => {
  for (const proc of live) proc.kill('SIGKILL')
})

let warned = false
/** Says loudly, once per process, that ClickHouse tests are skipped. Call it at the top of a test file. */
export function warnIfNoClickHouse(): void {
  if (clickhouseBinary || warned) return
  warned = true
  console.warn(
    '\n*** ClickHouse server binary not found (clickhouse-server or clickhouse): ClickHouse tests are SKIPPED. ' +
      'Install the clickhouse-server package or set CLICKHOUSE_SERVER_BIN. ***\n',
  )
}

/** A port nobody listens on right now (the kernel's choice; a race with other processes is unlikely). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

export interface ClickHouseServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly httpPort: number
  readonly tcpPort: number
  /** The temporary folder with config, users and data. */
  readonly dir: string
  /** Whether the process runs. */
  readonly running: boolean
  /** The server's process id while it runs (bench/sink-keepup.ts reads its CPU time). */
  readonly pid: number | undefined
  /** Runs SQL over HTTP and returns the body; throws with the server's message on an error status. */
  query(sql: string, settings?: Record<string, string | number>): Promise<string>
  /** Runs a SELECT and parses JSONEachRow. */
  rows<T = Record<string, unknown>>(sql: string): Promise<T[]>
  /** Starts the server again on the same ports and data (after stop or kill). */
  start(): Promise<void>
  /** SIGTERM, and waits for the exit (ClickHouse 18.16 takes ~2 s). */
  stop(): Promise<void>
  /** SIGKILL: a crash. */
  kill(): Promise<void>
  /** Stops the server and deletes its folder. */
  destroy(): Promise<void>
}

export interface StartOptions {
  /** Extra XML inside <yandex> of config.xml (remote_servers, macros, …). */
  extraConfig?: string
  /** Server time zone; UTC unless a test checks time zone independence. */
  timezone?: string
  /** Fixed ports (a cluster's config names every member's ports before they start); free ones otherwise. */
  httpPort?: number
  tcpPort?: number
  /** Extra XML inside the default profile of users.xml (settings the distributed DDL worker also uses). */
  profileSettings?: string
}

/** Starts a fresh server, or returns undefined (after a warning) when no binary is installed. */
export async function startClickHouse(options: StartOptions = {}): Promise<ClickHouseServer | undefined> {
  if (!clickhouseBinary) {
    warnIfNoClickHouse()
    return undefined
  }
  const binary = clickhouseBinary
  const dir = mkdtempSync(join(tmpdir(), 'clickhouse-test-'))
  const httpPort = options.httpPort ?? (await freePort())
  const tcpPort = options.tcpPort ?? (await freePort())
  for (const sub of ['data', 'tmp', 'user_files', 'format_schemas']) mkdirSync(join(dir, sub), { recursive: true })
  const configPath = join(dir, 'config.xml')
  writeFileSync(
    configPath,
    `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>${dir}/server.log</log><errorlog>${dir}/server.err.log</errorlog><size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>${httpPort}</http_port>
  <tcp_port>${tcpPort}</tcp_port>
  <path>${dir}/data/</path>
  <tmp_path>${dir}/tmp/</tmp_path>
  <user_files_path>${dir}/user_files/</user_files_path>
  <format_schema_path>${dir}/format_schemas/</format_schema_path>
  <users_config>${dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>${options.timezone ?? 'UTC'}</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>0</uncompressed_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
  ${options.extraConfig ?? ''}
</yandex>
`,
  )
  writeFileSync(
    join(dir, 'users.xml'),
    `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage>${options.profileSettings ?? ''}</default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`,
  )

  const url = `http://127.0.0.1:${httpPort}`
  let proc: Subprocess | undefined
  let alive = false
  /** Set while the harness itself stops the server, whose exit is then no news. */
  let stopping = false

  const query = async (sql: string, settings: Record<string, string | number> = {}): Promise<string> => {
    const params = new URLSearchParams(Object.entries(settings).map(([k, v]) => [k, String(v)]))
    // Connection: close, because the server waits for open keep-alive connections when it stops.
    const response = await fetch(`${url}/?${params}`, { method: 'POST', body: sql, headers: { connection: 'close' } })
    const text = await response.text()
    if (!response.ok) throw new Error(text.trim())
    return text
  }

  const start = async (): Promise<void> => {
    if (alive) return
    const started = spawn([...binary, `--config-file=${configPath}`], { cwd: dir, stdout: 'ignore', stderr: 'ignore' })
    proc = started
    alive = true
    live.add(started)
    stopping = false
    void started.exited.then(() => {
      live.delete(started)
      if (proc === started) alive = false
      // A server that dies on its own makes the next test fail far from the cause: say so with its log.
      if (!stopping && proc === started) reportUnexpectedExit(started, httpPort, dir)
    })
    const deadline = Date.now() + 30_000
    for (;;) {
      try {
        const response = await fetch(`${url}/ping`, { headers: { connection: 'close' } })
        if (response.ok) return
      } catch {
        // Not listening yet.
      }
      if (!alive) throw new Error(`clickhouse-server exited with ${started.exitCode}; see ${dir}/server.err.log`)
      if (Date.now() > deadline) throw new Error(`clickhouse-server did not answer /ping within 30 s; see ${dir}`)
      await Bun.sleep(50)
    }
  }

  const signal = async (sig: 'SIGTERM' | 'SIGKILL'): Promise<void> => {
    if (!proc || !alive) return
    stopping = true
    proc.kill(sig)
    await proc.exited
    alive = false
  }

  await start()
  return {
    url,
    httpPort,
    tcpPort,
    dir,
    get running() {
      return alive
    },
    get pid() {
      return alive ? proc?.pid : undefined
    },
    query,
    async rows<T>(sql: string): Promise<T[]> {
      const text = await query(`${sql} FORMAT JSONEachRow`)
      return text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as T)
    },
    start,
    stop: () => signal('SIGTERM'),
    kill: () => signal('SIGKILL'),
    async destroy() {
      await signal('SIGKILL')
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
    },
  }
}

/** Prints, on stderr, that a test server exited unasked, with the end of its error log. */
function reportUnexpectedExit(proc: Subprocess, httpPort: number, dir: string): void {
  let tail = '(no server.err.log)'
  try {
    tail = readFileSync(join(dir, 'server.err.log'), 'utf8').split('\n').slice(-30).join('\n')
  } catch {
    // The folder may already be gone.
  }
  console.error(
    `clickhouse-server on port ${httpPort} exited unasked (code ${proc.exitCode}, signal ${proc.signalCode}); ` +
      `the end of ${dir}/server.err.log:\n${tail}`,
  )
}
