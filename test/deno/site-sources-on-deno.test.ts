// Site sources under Deno (issue #12 item 4): a file source works; a sql source, which needs Bun's
// built-in PostgreSQL client, is a clear config error at start-up rather than a crash.

import { describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const root = resolve(import.meta.dir, '../..')
const deno = join(root, 'node_modules/.bin/deno')
const hasDeno = existsSync(deno)
if (!hasDeno) console.warn(`\n*** Deno not found at ${deno}: the site-source-on-Deno tests are SKIPPED. ***\n`)

async function check(config: string, files: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'deno-sites-'))
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  writeFileSync(join(dir, 'analytics.yaml'), config)
  const proc = Bun.spawn(
    [deno, 'run', '--allow-all', join(root, 'core/cli.ts'), 'check', '--config', 'analytics.yaml'],
    {
      cwd: dir,
      stdout: 'pipe',
      stderr: 'pipe',
    },
  )
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  return { stdout, stderr, code }
}

describe.skipIf(!hasDeno)('site sources on Deno', () => {
  test('a sql source is a config error naming the missing client, without the password', async () => {
    const { stderr, code } = await check(
      'sites: { sql: "SELECT id, domain FROM sites", database: "postgres://u:pw-secret@127.0.0.1:1/db" }\nsinks: [stdout]\n',
    )
    expect(code).toBe(1)
    expect(stderr).toContain('sites.sql: a sql source needs Bun’s built-in PostgreSQL client (Bun.SQL)')
    expect(stderr).not.toContain('pw-secret')
    expect(stderr).not.toMatch(/\n\s+at /)
  }, 30_000)

  test('a file source loads, with its retention', async () => {
    const { stdout, code } = await check('sites: { file: sites.yaml }\nretention: { days: 30 }\nsinks: [stdout]\n', {
      'sites.yaml': '- { id: 1, domain: a.example }\n',
    })
    expect(code).toBe(0)
    expect(stdout).toContain('sites: from file sites.yaml, refreshed every 60 s: a.example (1)')
    expect(stdout).toContain('retention: default 30 days; a.example (1): 30 days')
  }, 30_000)
})
