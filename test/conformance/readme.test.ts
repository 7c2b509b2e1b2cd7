// The README's config reference is checked against the schema: its key table names exactly the
// top-level keys, the server keys it lists exist, and every YAML example in it validates.

import { expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parse } from 'yaml'
import { ConfigSchema, resolveConfig, ServerSchema } from '../../core/config.ts'

const root = resolve(import.meta.dir, '../..')
const readme = readFileSync(resolve(root, 'README.md'), 'utf8')

function section(heading: string): string {
  const start = readme.indexOf(heading)
  expect(start).toBeGreaterThanOrEqual(0)
  const rest = readme.slice(start + heading.length)
  const end = rest.search(/\n#{2,3} /)
  return end < 0 ? rest : rest.slice(0, end)
}

test('the key table names exactly the top-level config keys', () => {
  const table = section('## The config file')
  const keys = [...table.matchAll(/^\| `([a-zA-Z.]+)`\s*\|/gm)].map((m) => m[1]!.split('.')[0]!)
  expect(new Set(keys)).toEqual(new Set(Object.keys(ConfigSchema.properties)))
})

test('the server keys the README lists exist, and every server key is listed', () => {
  const row = /^\| `server`\s*\| (.*) \|$/m.exec(readme)![1]!
  // Values such as `loopback` sit in parentheses after their key.
  const listed = [...row.replace(/\([^)]*\)/g, '').matchAll(/`([a-zA-Z]+)`/g)].map((m) => m[1]!)
  expect(new Set(listed)).toEqual(new Set(Object.keys(ServerSchema.properties)))
})

test('every YAML config example in the README validates', async () => {
  const blocks = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!)
  expect(blocks.length).toBeGreaterThan(1)
  for (const block of blocks) {
    const raw = parse(block)
    for (const env of [undefined, ...Object.keys((raw as { environments?: object }).environments ?? {})]) {
      await resolveConfig(raw, {
        source: 'README.md',
        baseDir: root,
        env,
        vars: { CLICKHOUSE_URL: 'http://127.0.0.1:8123' },
      })
    }
  }
})
