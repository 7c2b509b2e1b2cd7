import { afterAll, expect, test } from 'bun:test'
import { resolve } from 'node:path'
import { runPlugin, startTestEngine } from '../../core/testing.ts'
import plugin from './tag-hostnames.ts'

test('tags an event whose hostname is listed, case-insensitively', async () => {
  const result = await runPlugin(
    plugin,
    { hostnames: ['Staging.Example.com'], prop: 'env', value: 'staging' },
    {
      hostname: 'staging.example.com',
    },
  )
  expect(result.dropped).toBeUndefined()
  expect(result.event.props).toEqual({ env: 'staging' })
})

test('leaves other hostnames alone', async () => {
  const result = await runPlugin(plugin, { hostnames: ['staging.example.com'] }, { hostname: 'example.com' })
  expect(result.dropped).toBeUndefined()
  expect(result.event.props).toEqual({})
})

test('drops other hostnames when onlyTagged is on', async () => {
  const result = await runPlugin(
    plugin,
    { hostnames: ['staging.example.com'], onlyTagged: true },
    {
      hostname: 'example.com',
    },
  )
  expect(result.dropped).toBe('untagged_hostname')
})

test('rejects an empty hostname list', async () => {
  await expect(runPlugin(plugin, { hostnames: [] }, {})).rejects.toThrow('tag-hostnames.hostnames')
})

const engine = await startTestEngine(
  {
    sites: [{ id: 1, domain: 'example.com' }],
    plugins: [
      './test/fixtures/test-dialect.ts',
      { './examples/plugins/tag-hostnames.ts': { hostnames: ['example.com'], prop: 'env', value: 'prod' } },
    ],
  },
  resolve(import.meta.dir, '../..'),
)
afterAll(() => engine.close())

test('runs as a custom plugin named by path in a config', async () => {
  const res = await engine.post('/t/event', { n: 'pageview', d: 'example.com', h: 'example.com' })
  expect(res.status).toBe(202)
  expect(await res.json()).toMatchObject({ outcomes: ['ok'] })
  const other = await engine.post('/t/event', { n: 'pageview', d: 'example.com', h: 'other.example.org' })
  expect(await other.json()).toMatchObject({ outcomes: ['ok'] })
  expect(engine.events().map((r) => [r.hostname, r['meta.key'], r['meta.value']])).toEqual([
    ['example.com', ['env'], ['prod']],
    ['other.example.org', [], []],
  ])
})
