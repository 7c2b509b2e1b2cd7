// A throwaway PostgreSQL server for tests: its own data folder, a free port and a unix socket in a temp
// folder, started from Debian's `postgresql` binaries as an unprivileged user, stopped and removed after.
//
//   const pg = await startPostgres()   // undefined (and a loud warning) when no binary exists
//   await pg.sql`SELECT 1`             // Bun's SQL client, connected as the superuser
//   await pg.destroy()
//
// initdb refuses to run as root, so as root the server runs as the `postgres` user (the package creates it).

import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SQL, spawnSync } from 'bun'
import { freePort } from '../clickhouse/harness.ts'

/** The folder of initdb and pg_ctl; undefined when PostgreSQL is not installed. */
export const postgresBin: string | undefined = findBin()

function findBin(): string | undefined {
  const fromEnv = process.env.POSTGRES_BIN
  if (fromEnv && existsSync(join(fromEnv, 'initdb'))) return fromEnv
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return undefined
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a))
  return versions[0] ? join(root, versions[0], 'bin') : undefined
}

let warned = false
/** Says loudly, once per process, that PostgreSQL tests are skipped. */
export function warnIfNoPostgres(): void {
  if (postgresBin || warned) return
  warned = true
  console.warn(
    '\n*** PostgreSQL not found (/usr/lib/postgresql/*/bin/initdb): PostgreSQL tests are SKIPPED. ' +
      'Install the postgresql package or set POSTGRES_BIN. ***\n',
  )
}

export interface PostgresServer {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string
  readonly port: number
  /** A client for the test's own statements. */
  readonly sql: SQL
  destroy(): Promise<void>
}

function run(args: string[], asUser: string | undefined): void {
  const cmd = asUser ? ['runuser', '-u', asUser, '--', ...args] : args
  const result = spawnSync(cmd, { stdout: 'pipe', stderr: 'pipe' })
  if (result.exitCode !== 0) {
    throw new Error(`${args[0]} failed (${result.exitCode}): ${result.stderr.toString()}${result.stdout.toString()}`)
  }
}

export async function startPostgres(): Promise<PostgresServer | undefined> {
  if (!postgresBin) {
    warnIfNoPostgres()
    return undefined
  }
  const asUser = process.getuid?.() === 0 ? 'postgres' : undefined
  const dir = mkdtempSync(join(tmpdir(), 'pg-test-'))
  chmodSync(dir, 0o700)
  if (asUser) {
    const id = spawnSync(['id', '-u', asUser]).stdout.toString().trim()
    const gid = spawnSync(['id', '-g', asUser]).stdout.toString().trim()
    chownSync(dir, Number(id), Number(gid))
  }
  const data = join(dir, 'data')
  const port = await freePort()
  run([join(postgresBin, 'initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'], asUser)
  run(
    [
      join(postgresBin, 'pg_ctl'),
      '-D',
      data,
      '-l',
      join(dir, 'log'),
      '-w',
      '-o',
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
      'start',
    ],
    asUser,
  )
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  const sql = new SQL(url, { max: 2 })
  return {
    url,
    port,
    sql,
    async destroy() {
      await sql.close().catch(() => {})
      try {
        run([join(postgresBin!, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop'], asUser)
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    },
  }
}
