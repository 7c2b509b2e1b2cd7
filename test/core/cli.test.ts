// The command line as a user runs it: a real process, real signals, stdout and stderr read back.

import { describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
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
  async function start(file: string) {
    const proc = Bun.spawn([process.execPath, cli, 'serve', '--config', file, '--port', '0'], {
      cwd: root,
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const reader = proc.stderr.getReader()
    let log = ''
    while (!log.includes('"Listening."')) {
      const { done, value } = await reader.read()
      if (done) throw new Error(`engine exited before listening: ${log}`)
      log += new TextDecoder().decode(value)
    }
    const url = /"url":"(http:\/\/[^"]+)"/.exec(log)![1]!.replace('0.0.0.0', '127.0.0.1')
    reader.releaseLock()
    return { proc, url }
  }

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
