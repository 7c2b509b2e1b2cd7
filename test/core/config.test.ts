// Config loading: shapes, substitution, environments, and every error path with its location.

import { describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { ConfigErrors, loadConfig, resolveConfig } from '../../core/config.ts'
import { createEngine } from '../../core/engine.ts'
import { silentLogger } from '../../core/logger.ts'

const root = resolve(import.meta.dir, '../..')

function tempFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'))
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

async function issuesOf(promise: Promise<unknown>): Promise<string[]> {
  try {
    await promise
  } catch (error) {
    if (error instanceof ConfigErrors) return error.issues.map((i) => `${i.path}: ${i.message}`)
    throw error
  }
  throw new Error('expected a config error')
}

const resolveRaw = (raw: unknown, extra: Record<string, unknown> = {}) =>
  resolveConfig(raw, { source: '(test)', baseDir: root, vars: {}, ...extra })

describe('valid configs', () => {
  test('YAML with defaults applied', async () => {
    const file = tempFile(
      'analytics.yaml',
      `server: { port: 9000 }
sites:
  - { id: 1, domain: example.com, shields: { ip: [203.0.113.7], country: [CN], page: ["/admin/**"] } }
plugins:
  - ${join(root, 'test/fixtures/test-dialect.ts')}
sinks:
  - stdout: { batchRows: 10 }
`,
    )
    const config = await loadConfig({ file, vars: {} })
    expect(config.server).toEqual({
      port: 9000,
      host: '0.0.0.0',
      trustedProxies: ['loopback', 'private'],
      bodyLimit: 65536,
      bodyTimeoutMs: 10000,
      idleTimeoutSeconds: 10,
      shutdownTimeoutMs: 10000,
      workers: 1,
    })
    expect(config.sites).toEqual([
      { id: 1, domain: 'example.com', shields: { ip: ['203.0.113.7'], country: ['CN'], page: ['/admin/**'] } },
    ])
    expect(config.plugins.map((p) => p.name)).toEqual(['test-dialect'])
    expect(config.sinks[0]!.options).toEqual({
      batchRows: 10,
      flushIntervalMs: 200,
      tables: ['events_v2', 'sessions_v2'],
    })
  })

  test('JSON works the same as YAML', async () => {
    const file = tempFile('analytics.json', JSON.stringify({ sites: 'any', sinks: ['stdout'] }))
    const config = await loadConfig({ file, vars: {} })
    expect(config.sites).toBe('any')
    expect(config.sinks.map((s) => s.name)).toEqual(['stdout'])
  })

  test('a typed TS config with defineConfig', async () => {
    const file = tempFile(
      'analytics.config.ts',
      `import { defineConfig } from '${join(root, 'core/config.ts')}'
export default defineConfig({ server: { port: 8123 }, sites: 'any', sinks: ['stdout'] })
`,
    )
    const config = await loadConfig({ file, vars: {} })
    expect(config.server.port).toBe(8123)
  })

  test('no file: ./analytics.yaml is used when present', async () => {
    const file = tempFile('analytics.yaml', 'server: { port: 7777 }\n')
    const config = await loadConfig({ cwd: join(file, '..'), vars: {} })
    expect(config.source).toBe(file)
    expect(config.server.port).toBe(7777)
  })

  test('no file and no analytics.yaml: embedded defaults with both dialects and the stdout sink', async () => {
    const config = await loadConfig({ cwd: mkdtempSync(join(tmpdir(), 'empty-')), vars: {} })
    expect(config.source).toBe('(embedded defaults)')
    expect(config.sites).toBe('any')
    expect(config.sinks.map((s) => s.name)).toEqual(['stdout'])
  })

  test('${VAR} and ${VAR:-default} are substituted in any string', async () => {
    const config = await resolveRaw(
      { server: { host: '${HOST}' }, sites: [{ id: 1, domain: '${DOMAIN:-fallback.example}' }] },
      { vars: { HOST: '127.0.0.1' } },
    )
    expect(config.server.host).toBe('127.0.0.1')
    expect(config.sites).toEqual([{ id: 1, domain: 'fallback.example' }])
  })

  test('an environment replaces the keys it sets and keeps the rest', async () => {
    const raw = {
      server: { port: 8001 },
      sinks: ['stdout'],
      environments: { test: { sinks: ['memory'] }, production: { sinks: [{ stdout: { batchRows: '${MISSING}' } }] } },
    }
    const config = await resolveRaw(raw, { env: 'test' })
    expect(config.env).toBe('test')
    expect(config.server.port).toBe(8001)
    expect(config.sinks.map((s) => s.name)).toEqual(['memory'])
    // The production environment's missing variable is no error while it is not chosen.
    const plain = await resolveRaw(raw)
    expect(plain.sinks.map((s) => s.name)).toEqual(['stdout'])
  })

  test('ANALYTICS_ENV chooses the environment when --env is absent', async () => {
    const previous = process.env.ANALYTICS_ENV
    process.env.ANALYTICS_ENV = 'test'
    try {
      const config = await resolveRaw({ environments: { test: { sinks: ['memory'] } } })
      expect(config.sinks.map((s) => s.name)).toEqual(['memory'])
    } finally {
      if (previous === undefined) delete process.env.ANALYTICS_ENV
      else process.env.ANALYTICS_ENV = previous
    }
  })

  test('CLI overrides of port and host win', async () => {
    const config = await resolveRaw({ server: { port: 1 } }, { port: 4321, host: '127.0.0.1' })
    expect(config.server.port).toBe(4321)
    expect(config.server.host).toBe('127.0.0.1')
  })
})

describe('config errors carry the path of the bad value', () => {
  test.each([
    [{ server: { port: 'eighty' } }, 'server.port: expected integer'],
    [{ server: { port: 70000 } }, 'server.port: expected integer to be less or equal to 65535'],
    [{ server: { bodyLimit: 0 } }, 'server.bodyLimit: expected integer to be greater or equal to 1'],
    [{ server: { colour: 'red' } }, 'server.colour: unknown option'],
    [{ sites: [{ id: 1 }] }, 'sites[0].domain: expected required property'],
    [{ sites: [{ id: 'one', domain: 'a.com' }] }, 'sites[0].id: expected integer'],
    [{ sites: [{ id: 1, domain: 'a.com', shields: { ip: [5] } }] }, 'sites[0].shields.ip[0]: expected string'],
    [{ sites: [{ id: 1, domain: 'a.com', shields: { asn: [] } }] }, 'sites[0].shields.asn: unknown option'],
    [{ sites: 'all' }, "sites: expected 'any'"],
    [{ sites: 5 }, 'sites: expected `any`, a list of sites, or a source ({ file }, { sql, database } or { url })'],
    [{ sites: { file: 'x.yaml', refresh: 5 } }, 'sites.refresh: unknown option'],
    [{ retention: { days: 0 } }, 'retention.days: expected integer to be greater or equal to 1'],
    [{ sites: [{ id: 1, domain: 'a.com', retention: { days: 'x' } }] }, 'sites[0].retention.days: expected integer'],
    [{ plugins: [null] }, 'plugins[0]: expected a name, or a mapping of one name (or ./path) to its options'],
    [{ sinks: [{ a: 1, b: 2 }] }, 'sinks[0]: expected object to have no more than 1 properties'],
    [{ plugins: ['no-such-plugin'] }, 'plugins[0]: unknown plugin "no-such-plugin"'],
    [{ sinks: ['kafka'] }, 'sinks[0]: unknown sink "kafka"'],
    [{ sinks: [] }, 'sinks: at least one sink is needed'],
    [{ plugins: ['./test/fixtures/missing.ts'] }, 'plugins[0]: file not found: ./test/fixtures/missing.ts'],
    [{ plugins: ['./test/fixtures/not-a-plugin.ts'] }, 'plugins[0]: ./test/fixtures/not-a-plugin.ts does not export'],
    [
      { plugins: [{ './test/fixtures/test-dialect.ts': { path: 5 } }] },
      'plugins[0]["./test/fixtures/test-dialect.ts"].path: expected string',
    ],
    [
      { sinks: [{ stdout: { batchRows: -1 } }] },
      'sinks[0].stdout.batchRows: expected integer to be greater or equal to 1',
    ],
    [{ sinks: [{ stdout: { colour: 1 } }] }, 'sinks[0].stdout.colour: unknown option'],
    [{ unknownKey: 1 }, 'unknownKey: unknown option'],
    [{ server: { host: '${NOPE}' } }, 'server.host: environment variable NOPE is not set and has no default'],
  ])('%j → %s', async (raw, expected) => {
    const issues = await issuesOf(resolveRaw(raw))
    expect(issues.some((i) => i.startsWith(expected))).toBe(true)
  })

  test('every error is reported at once, not only the first', async () => {
    const issues = await issuesOf(resolveRaw({ server: { port: 'x', bodyLimit: 0 }, sinks: ['kafka'] }))
    expect(issues.length).toBeGreaterThanOrEqual(2)
  })

  test('duplicate site ids and domains', async () => {
    const issues = await issuesOf(
      resolveRaw({
        sites: [
          { id: 1, domain: 'a.com' },
          { id: 1, domain: 'b.com', domains: ['a.com'] },
        ],
      }),
    )
    expect(issues).toContain('sites[1].id: duplicate id 1 (also sites[0])')
    expect(issues).toContain('sites[1].domain: domain a.com already belongs to sites[0]')
  })

  test('an unknown environment', async () => {
    const issues = await issuesOf(resolveRaw({ environments: { production: {} } }, { env: 'staging' }))
    expect(issues).toEqual(['environments.staging: unknown environment (known: production)'])
  })

  test('a YAML syntax error names its line and column', async () => {
    const file = tempFile('analytics.yaml', 'server:\n  port: [8000\n')
    const issues = await issuesOf(loadConfig({ file, vars: {} }))
    expect(issues[0]).toMatch(/^line \d+, column \d+: /)
  })

  test('duplicate YAML keys are an error, not a silent override', async () => {
    const file = tempFile('analytics.yaml', 'server: { port: 1 }\nserver: { port: 2 }\n')
    const issues = await issuesOf(loadConfig({ file, vars: {} }))
    expect(issues[0]).toContain('Map keys must be unique')
  })

  test('a missing config file', async () => {
    const issues = await issuesOf(loadConfig({ file: '/nonexistent/analytics.yaml', vars: {} }))
    expect(issues).toEqual(['(file): file not found: /nonexistent/analytics.yaml'])
  })

  test('invalid JSON', async () => {
    const file = tempFile('analytics.json', '{ "server": ')
    const issues = await issuesOf(loadConfig({ file, vars: {} }))
    expect(issues[0]).toStartWith('(file): invalid JSON')
  })

  test('a top level that is not a mapping', async () => {
    const issues = await issuesOf(resolveRaw([1, 2]))
    expect(issues[0]).toStartWith('(root): expected a mapping')
  })

  test("a plugin's setup error is prefixed with the plugin's place", async () => {
    const config = await resolveRaw({ plugins: [{ './test/fixtures/bad-setup.ts': { database: './x.mmdb' } }] })
    const issues = await issuesOf(createEngine(config, { logger: silentLogger }))
    expect(issues).toEqual(['plugins[0]["./test/fixtures/bad-setup.ts"].database: file not found: ./x.mmdb'])
  })

  test('two dialects claiming one route', async () => {
    const config = await resolveRaw({ plugins: ['./test/fixtures/test-dialect.ts', './test/fixtures/test-dialect.ts'] })
    const issues = await issuesOf(createEngine(config, { logger: silentLogger }))
    expect(issues).toEqual(['plugins[1]: route POST /t/event is already served by test-dialect'])
  })
})

describe('trusted-sender keys (sites[].keys)', () => {
  test('come from the environment through ${VAR}', async () => {
    const config = await resolveConfig(
      { sites: [{ id: 1, domain: 'a.example', keys: ['${SHOP_KEY}'] }] },
      { source: '(test)', baseDir: root, env: undefined, vars: { SHOP_KEY: 'from-the-environment-0123' } },
    )
    expect(config.sites).toEqual([{ id: 1, domain: 'a.example', keys: ['from-the-environment-0123'] }])
  })

  test.each([
    ['too short', 'short-key-123'],
    ['with a blank', 'a key with blanks in it'],
  ])('a key %s is refused at its path, and the message does not repeat it', async (_, key) => {
    const issues = await issuesOf(
      resolveConfig(
        { sites: [{ id: 1, domain: 'a.example', keys: ['${SHOP_KEY}'] }] },
        { source: '(test)', baseDir: root, env: undefined, vars: { SHOP_KEY: key } },
      ),
    )
    expect(issues.length).toBeGreaterThan(0)
    for (const issue of issues) {
      expect(issue).toStartWith('sites[0].keys[0]: ')
      expect(issue).not.toContain(key)
    }
  })
})

describe('ack', () => {
  const issuesOf = async (raw: Record<string, unknown>) => {
    try {
      const config = await resolveConfig(raw, { source: '(test)', baseDir: process.cwd() })
      const engine = await createEngine(
        { ...config, stateDir: mkdtempSync(join(tmpdir(), 'ack-')) },
        { logger: silentLogger },
      )
      await engine.shutdown()
      return []
    } catch (error) {
      if (!(error instanceof ConfigErrors)) throw error
      return error.issues
    }
  }

  test('received by default; durable with sinks that keep rows on disk', async () => {
    expect((await resolveConfig({}, { source: '(test)', baseDir: process.cwd() })).ack).toBe('received')
    expect(await issuesOf({ ack: 'durable', sinks: ['memory'] })).toEqual([])
  })

  test('only received or durable', async () => {
    expect(await issuesOf({ ack: 'sometimes' })).toEqual([{ path: 'ack', message: 'expected received or durable' }])
  })

  test('durable refuses a sink that cannot keep rows on disk, with its path', async () => {
    expect(await issuesOf({ ack: 'durable', sinks: ['memory', 'stdout'] })).toEqual([
      {
        path: 'sinks[1]',
        message: 'ack: durable needs every sink to keep events on disk before the answer; stdout cannot',
      },
    ])
  })
})
