// HAProxy and nginx started by a test from the configs we ship (examples/lb), on a free port with a
// temporary folder for the config, pid and logs. Only what must differ on a test machine is
// rewritten: the listening address, the engines' addresses, the CDN's ranges and the file paths.
// Every rewrite must match, so a shipped config cannot drift away from what is tested.

import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import { root } from './harness.ts'

export const haproxyBinary = ['/usr/sbin/haproxy', '/usr/bin/haproxy'].find((p) => existsSync(p))
export const nginxBinary = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p))

/** Says loudly that a load balancer's tests are skipped. */
export function warnIfMissing(name: 'haproxy' | 'nginx'): void {
  const found = name === 'haproxy' ? haproxyBinary : nginxBinary
  if (found) return
  const pkg = name === 'haproxy' ? 'haproxy' : 'nginx-light'
  console.warn(`\n*** ${name} not found: its load-balancer tests are SKIPPED. Install the ${pkg} package. ***\n`)
}

export interface Backend {
  name: string
  port: number
}

export interface Balancer {
  readonly url: string
  /** What the balancer logged so far (HAProxy: state changes; nginx: its error log). */
  log(): string
  stop(): Promise<void>
}

/** Replaces every match of `pattern`; throws when there is none (the shipped file changed). */
function rewrite(text: string, pattern: RegExp, by: string, what: string): string {
  const matches = text.match(new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`))
  if (!matches || matches.length === 0) throw new Error(`the shipped config has no ${what} (${pattern})`)
  return text.replace(new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`), by)
}

/** The shipped HAProxy config with the test's addresses. */
export function haproxyConfig(file: string, port: number, backends: Backend[], dir: string, cdn?: string): string {
  let text = readFileSync(join(root, 'examples/lb', file), 'utf8')
  text = rewrite(text, /^ {4}bind :80$/m, `    bind 127.0.0.1:${port}`, 'bind :80')
  const servers = backends.map((b) => `    server ${b.name} 127.0.0.1:${b.port}`).join('\n')
  text = rewrite(text, /^ {4}server engine1 .*\n {4}server engine2 .*$/m, servers, 'server lines')
  if (cdn !== undefined) {
    const ranges = join(dir, 'cdn-ranges.lst')
    writeFileSync(ranges, `${cdn}\n`)
    text = rewrite(text, /\/etc\/haproxy\/cdn-ranges\.lst/, ranges, 'CDN ranges file')
  }
  return text
}

/** The shipped nginx config with the test's addresses and file paths. */
export function nginxConfig(file: string, port: number, backends: Backend[], dir: string, cdn?: string): string {
  let text = readFileSync(join(root, 'examples/lb', file), 'utf8')
  text = rewrite(text, /^ {8}listen 80;$/m, `        listen 127.0.0.1:${port};`, 'listen 80')
  text = rewrite(text, /\/run\/nginx-analytics\.pid/, join(dir, 'nginx.pid'), 'pid path')
  text = rewrite(text, /\/var\/log\/nginx\/analytics-error\.log/, join(dir, 'error.log'), 'error_log path')
  const servers = backends.map((b) => `        server 127.0.0.1:${b.port} max_fails=1 fail_timeout=5s;`).join('\n')
  text = rewrite(
    text,
    /^ {8}server 10\.0\.0\.11:8000 max_fails=1 fail_timeout=5s;\n {8}server 10\.0\.0\.12:8000 max_fails=1 fail_timeout=5s;$/m,
    servers,
    'upstream servers',
  )
  if (cdn !== undefined) text = rewrite(text, /173\.245\.48\.0\/20/, `${cdn}/32`, 'CDN range')
  // Temporary files of a test instance stay in its folder (workers run as nobody).
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((t) => `    ${t}_temp_path ${join(dir, t)};`)
    .join('\n')
  return rewrite(text, /^http \{$/m, `http {\n${temps}`, 'http block')
}

async function waitForPort(port: number, proc: Subprocess, log: () => string): Promise<void> {
  const deadline = Date.now() + 10_000
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`the load balancer exited with ${proc.exitCode}:\n${log()}`)
    try {
      const socket = await Bun.connect({ hostname: '127.0.0.1', port, socket: { data() {} } })
      socket.end()
      return
    } catch {
      if (Date.now() > deadline) throw new Error(`the load balancer did not listen on ${port}:\n${log()}`)
      await Bun.sleep(50)
    }
  }
}

function collect(proc: Subprocess<'ignore', 'pipe', 'pipe'>): () => string {
  let text = ''
  const read = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder()
    const reader = stream.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return
      text += decoder.decode(value, { stream: true })
    }
  }
  void read(proc.stdout)
  void read(proc.stderr)
  return () => text
}

export async function startHaproxy(config: string, port: number, dir: string): Promise<Balancer> {
  const file = join(dir, 'haproxy.cfg')
  writeFileSync(file, config)
  // -db: foreground, logs (`log stdout`) on standard output.
  const proc = Bun.spawn([haproxyBinary!, '-db', '-f', file], { stdout: 'pipe', stderr: 'pipe', stdin: 'ignore' })
  const log = collect(proc)
  await waitForPort(port, proc, log)
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    async stop() {
      proc.kill('SIGTERM')
      await proc.exited
    },
  }
}

export async function startNginx(config: string, port: number, dir: string): Promise<Balancer> {
  const file = join(dir, 'nginx.conf')
  writeFileSync(file, config)
  const proc = Bun.spawn([nginxBinary!, '-c', file, '-p', dir, '-g', 'daemon off;'], {
    stdout: 'pipe',
    stderr: 'pipe',
    stdin: 'ignore',
  })
  const output = collect(proc)
  const errorLog = join(dir, 'error.log')
  const log = () => output() + (existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : '')
  await waitForPort(port, proc, log)
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    async stop() {
      // SIGTERM: fast shutdown of the master and its workers.
      proc.kill('SIGTERM')
      await proc.exited
    },
  }
}
