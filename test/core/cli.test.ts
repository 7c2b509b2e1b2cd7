// The command line as a user runs it: a real process, real signals, stdout and stderr read back.

import { describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const root = resolve(import.meta.dir, '../..')
const cli = join(root, 'core/cli.ts')

function configFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cli-'))
  const path = join(dir, 'analytics.yaml')
  writeFileSync(path, text)
  return path
}

async function run(args: string[], cwd = root) {
  const proc = Bun.spawn([process.execPath, cli, ...args], { cwd, stdout: 'pipe', stderr: 'pipe' })
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  return { stdout, stderr, code }
}

const dialect = join(root, 'test/fixtures/test-dialect.ts')

describe('check', () => {
  test('prints the resolved pipeline stage by stage and exits 0', async () => {
    const file = configFile(`sites: [{ id: 1, domain: example.com }]
plugins:
  - ${dialect}
  - ${join(root, 'test/fixtures/trace-enrich.ts')}
  - ${join(root, 'test/fixtures/trace-identify.ts')}
sinks: [stdout]
`)
    const { stdout, code } = await run(['check', '--config', file])
    expect(code).toBe(0)
    expect(stdout).toContain(`config: ${file}`)
    expect(stdout).toContain('sites: example.com (1)')
    expect(stdout).toMatch(/parse\s+test-dialect \(POST \/t\/event\)/)
    expect(stdout).toMatch(/identify\s+trace-identify/)
    expect(stdout).toMatch(/enrich\s+trace-enrich/)
    expect(stdout).toMatch(/sinks\s+stdout/)
    expect(stdout.trim().endsWith('config OK')).toBe(true)
  })

  test('a bad config exits non-zero with every path and no stack trace', async () => {
    const file = configFile(`server: { port: eighty }
sinks: [{ stdout: { batchRows: 0 } }]
plugins: [{ ${join(root, 'test/fixtures/bad-setup.ts')}: {} }]
`)
    const { stderr, code } = await run(['check', '--config', file])
    expect(code).toBe(1)
    expect(stderr).toContain('server.port: expected integer')
    expect(stderr).toContain('sinks[0].stdout.batchRows: expected integer to be greater or equal to 1')
    expect(stderr).toMatch(/plugins\[0\]\[".*bad-setup.ts"\]\.database: expected required property/)
    expect(stderr).not.toMatch(/\n\s+at /)
  })

  test('serve with a bad config exits 2 before listening', async () => {
    const file = configFile('sites: [{ id: 0, domain: a.com }]\n')
    const { stderr, code } = await run(['--config', file])
    expect(code).toBe(2)
    expect(stderr).toContain('sites[0].id: expected integer to be greater or equal to 1')
  })

  test('unknown arguments are refused with the usage', async () => {
    const { stderr, code } = await run(['--bogus'])
    expect(code).toBe(2)
    expect(stderr).toContain('unknown argument: --bogus')
    expect(stderr).toContain('Usage:')
  })
})

test('schema prints a JSON Schema that names every built-in plugin and sink', async () => {
  const { stdout, code } = await run(['schema'])
  expect(code).toBe(0)
  const schema = JSON.parse(stdout)
  expect(schema.$schema).toContain('json-schema.org')
  expect(schema.properties.server.properties.bodyLimit.default).toBe(65536)
  const sinkForms = schema.properties.sinks.items.anyOf as { properties?: Record<string, unknown> }[]
  expect(sinkForms.some((f) => f.properties && 'stdout' in f.properties)).toBe(true)
})

describe('serve', () => {
  /** `serve` of `file` on a free port, started by `launch` (the CLI itself unless given). */
  async function start(file: string, launch: string[] = [process.execPath, cli], env: Record<string, string> = {}) {
    const proc = Bun.spawn([...launch, 'serve', '--config', file, '--port', '0'], {
      cwd: root,
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...process.env, ...env },
    })
    const reader = proc.stderr.getReader()
    let log = ''
    while (!log.includes('"Listening."')) {
      const { done, value } = await reader.read()
      if (done) throw new Error(`engine exited before listening: ${log}`)
      log += new TextDecoder().decode(value)
    }
    const url = /"url":"(http:\/\/[^"]+)"/.exec(log)![1]!.replace('0.0.0.0', '127.0.0.1')
    /** Everything the engine wrote on stderr, once it has exited. */
    const stderr = async () => {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) return log
        log += new TextDecoder().decode(value)
      }
    }
    return { proc, url, stderr }
  }

  test('SIGHUP reloads sites; a bad new config is refused and the old one stays', async () => {
    const file = configFile(`server: { host: 127.0.0.1 }
sites: [{ id: 1, domain: a.example }]
plugins: [${dialect}]
sinks: [{ stdout: { flushIntervalMs: 50 } }]
`)
    const { proc, url, stderr: readStderr } = await start(file)
    const send = async (d: string) =>
      (
        (await (await fetch(`${url}/t/event`, { method: 'POST', body: JSON.stringify({ d }) })).json()) as {
          outcomes: string[]
        }
      ).outcomes[0]
    expect(await send('b.example')).toBe('not_found')
    writeFileSync(
      file,
      `server: { host: 127.0.0.1 }
sites: [{ id: 1, domain: a.example }, { id: 2, domain: b.example }]
plugins: [${dialect}]
sinks: [{ stdout: { flushIntervalMs: 50 } }]
`,
    )
    proc.kill('SIGHUP')
    let outcome = ''
    for (let i = 0; i < 50 && outcome !== 'ok'; i++) {
      await Bun.sleep(50)
      outcome = (await send('b.example')) ?? ''
    }
    expect(outcome).toBe('ok')
    writeFileSync(file, 'sites: [{ id: "x" }]\n')
    proc.kill('SIGHUP')
    await Bun.sleep(300)
    // Still running on the previous config.
    expect(await send('b.example')).toBe('ok')
    expect(await send('a.example')).toBe('ok')
    proc.kill('SIGTERM')
    const [stderr, code] = await Promise.all([readStderr(), proc.exited])
    expect(code).toBe(0)
    expect(stderr).toContain('Config reloaded.')
    expect(stderr).toContain('Config reload refused; the running config stays.')
    expect(stderr).toContain('sites[0].id: expected integer')
  })

  test("npm start has Bun's allocator give back the free blocks of pages in use at most every 30 s, unless the operator says otherwise", async () => {
    const { scripts } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: { start: string } }
    const file = configFile(`server: { host: 127.0.0.1 }
sites: any
plugins: [${dialect}]
sinks: [stdout]
`)
    // As npm and bun run start it: the script through sh, with node_modules/.bin first on the PATH.
    // MIMALLOC_VERBOSE has the allocator print the options it took on stderr.
    const launch = ['sh', '-c', `${scripts.start} "$@"`, 'start']
    const env = { PATH: `${join(root, 'node_modules/.bin')}:${process.env.PATH}`, MIMALLOC_VERBOSE: '1' }
    for (const [own, taken] of [
      ['', '30000'],
      ['2000', '2000'],
    ] as const) {
      const { proc, url, stderr } = await start(file, launch, { ...env, MIMALLOC_PURGE_HOLES_MIN_INTERVAL: own })
      expect((await fetch(`${url}/health`)).status).toBe(200)
      proc.kill('SIGTERM')
      const [log, code] = await Promise.all([stderr(), proc.exited])
      expect(code).toBe(0)
      expect(log).toContain(`option 'purge_holes_min_interval': ${taken}`)
      expect(log).not.toContain('MIMALLOC_PURGE_HOLES_MIN_INTERVAL is not set')
    }
    // Started directly, as a service manager might, the engine runs with Bun's own setting and says so.
    const { proc, stderr } = await start(file, [process.execPath, cli], { MIMALLOC_PURGE_HOLES_MIN_INTERVAL: '' })
    proc.kill('SIGTERM')
    const [log, code] = await Promise.all([stderr(), proc.exited])
    expect(code).toBe(0)
    expect(log).toContain('MIMALLOC_PURGE_HOLES_MIN_INTERVAL is not set')
  })

  test('an error no code catches is logged and counted, and the engine serves on and flushes', async () => {
    const file = configFile(`server: { host: 127.0.0.1 }
sites: [{ id: 1, domain: a.example }]
plugins: [${dialect}, ${join(root, 'test/fixtures/throw-later.ts')}]
sinks: [{ stdout: { flushIntervalMs: 50 } }]
`)
    const { proc, url, stderr: readStderr } = await start(file)
    const send = async (p: Record<string, string>) => {
      const res = await fetch(`${url}/t/event`, { method: 'POST', body: JSON.stringify({ d: 'a.example', p }) })
      return [res.status, ((await res.json()) as { outcomes: string[] }).outcomes[0]]
    }
    expect(await send({ boom: '1' })).toEqual([202, 'ok'])
    await Bun.sleep(100)
    expect(await send({ after: '1' })).toEqual([202, 'ok'])
    const metrics = await (await fetch(`${url}/metrics`)).text()
    expect(metrics).toContain('analytics_uncaught_errors_total 2')
    proc.kill('SIGTERM')
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), readStderr(), proc.exited])
    expect(code).toBe(0)
    expect(stderr).toContain('boom from a timer')
    expect(stderr).toContain('boom from a promise')
    expect(stderr.match(/Uncaught error; serving on\./g)?.length).toBe(2)
    // Both events reached the sink: the fault cost nothing accepted.
    expect(stdout.split('\n').filter((l) => l.includes('"_table":"events_v2"')).length).toBe(2)
  })

  test('a body that trickles in past the deadline gets 408', async () => {
    const file = configFile(`server: { host: 127.0.0.1, bodyTimeoutMs: 300 }
sites: any
plugins: [${dialect}]
sinks: [stdout]
`)
    const { proc, url } = await start(file)
    const { hostname, port } = new URL(url)
    let answer = ''
    const socket = await Bun.connect({
      hostname,
      port: Number(port),
      socket: {
        data(_s, chunk) {
          answer += new TextDecoder().decode(chunk)
        },
      },
    })
    socket.write('POST /t/event HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"d":')
    for (let i = 0; i < 10 && !answer; i++) {
      await Bun.sleep(100)
      socket.write(' ')
    }
    expect(answer).toStartWith('HTTP/1.1 408')
    socket.end()
    proc.kill('SIGTERM')
    expect(await proc.exited).toBe(0)
  })

  test('SIGTERM stops accepting, flushes the stdout sink and exits 0; a second signal does not cut the flush', async () => {
    // A long flush interval: rows leave only through the shutdown flush.
    const file = configFile(`server: { host: 127.0.0.1 }
sites: [{ id: 42, domain: example.com }]
plugins: [${dialect}]
sinks: [{ stdout: { flushIntervalMs: 600000, batchRows: 100000 } }]
`)
    const { proc, url } = await start(file)
    for (let i = 0; i < 25; i++) {
      const res = await fetch(`${url}/t/event`, {
        method: 'POST',
        body: JSON.stringify({ n: `e${i}`, d: 'example.com', p: { i: String(i) } }),
      })
      expect(res.status).toBe(202)
    }
    proc.kill('SIGTERM')
    proc.kill('SIGTERM')
    const [stdout, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
    expect(code).toBe(0)
    const rows = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(rows).toHaveLength(25)
    expect(rows.map((r) => r.name)).toEqual(Array.from({ length: 25 }, (_, i) => `e${i}`))
    for (const row of rows) {
      expect(row._table).toBe('events_v2')
      expect(row.site_id).toBe('42')
      expect(typeof row.user_id).toBe('string')
      expect(row.timestamp).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/)
    }
  })
})
