// Every built-in plugin and sink keeps the house rules (style.md "Habits"): folder = name = registry
// key; a test and a README beside it; the README's YAML example validates; the README's "Drop reasons"
// section lists exactly the declared reasons; every option has a description.

import { describe, expect, test } from 'bun:test'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { TSchema } from '@sinclair/typebox'
import { parse } from 'yaml'
import { resolveConfig } from '../../core/config.ts'
import { builtinPlugins } from '../../plugins/registry.ts'
import { builtinSinks } from '../../sinks/registry.ts'

const root = resolve(import.meta.dir, '../..')

function folders(dir: string): string[] {
  return readdirSync(join(root, dir)).filter((f) => statSync(join(root, dir, f)).isDirectory())
}

function yamlBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/```ya?ml\n([\s\S]*?)```/g)].map((m) => m[1]!)
}

function dropSection(markdown: string): string[] | undefined {
  const match = /^#+ Drop reasons\s*$([\s\S]*?)(?=^#+ |(?![\s\S]))/im.exec(markdown)
  if (!match) return undefined
  // A reason is listed as a list item or a table row that starts with it in backticks.
  return [...new Set([...match[1]!.matchAll(/^(?:[-*]|\|)\s*`([a-z][a-z0-9_]*)`/gm)].map((m) => m[1]!))].sort()
}

function undocumentedOptions(schema: TSchema, path = ''): string[] {
  const props = (schema as { properties?: Record<string, TSchema> }).properties ?? {}
  return Object.entries(props).flatMap(([key, value]) => (value.description ? [] : [`${path}${key}`]))
}

for (const [kind, registry] of [
  ['plugins', builtinPlugins],
  ['sinks', builtinSinks],
] as const) {
  describe(kind, () => {
    test('every folder is registered under its own name, and every registered name has a folder', () => {
      const dirs = folders(kind).filter((d) => existsSync(join(root, kind, d, 'index.ts')))
      expect(dirs.sort()).toEqual(Object.keys(registry).sort())
    })

    for (const name of Object.keys(registry)) {
      describe(name, () => {
        test('its definition carries its folder name; a test and a README sit beside it', async () => {
          const definition = (await registry[name]!()).default
          expect(definition.name).toBe(name)
          const files = readdirSync(join(root, kind, name))
          expect(files).toContain('README.md')
          expect(files.some((f) => f.endsWith('.test.ts'))).toBe(true)
        })

        test('every option has a description', async () => {
          const definition = (await registry[name]!()).default
          expect(undocumentedOptions(definition.options)).toEqual([])
        })

        test("the README's YAML example validates", async () => {
          const readme = readFileSync(join(root, kind, name, 'README.md'), 'utf8')
          const blocks = yamlBlocks(readme).filter((b) => b.includes(name))
          expect(blocks.length).toBeGreaterThan(0)
          for (const block of blocks) {
            const raw = parse(block) as Record<string, unknown>
            // A block may show only the plugins or sinks list; the rest comes from defaults.
            await resolveConfig(raw, { source: `${kind}/${name}/README.md`, baseDir: join(root, kind, name), vars: {} })
          }
        })

        if (kind === 'plugins') {
          test('the README lists exactly the declared drop reasons', async () => {
            const definition = (await builtinPlugins[name]!()).default
            const declared = Object.keys(definition.drops ?? {}).sort()
            const readme = readFileSync(join(root, kind, name, 'README.md'), 'utf8')
            const listed = dropSection(readme)
            if (declared.length === 0) expect(listed ?? []).toEqual([])
            else expect(listed).toEqual(declared)
          })
        }
      })
    }
  })
}
