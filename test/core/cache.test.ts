// core/cache.ts: bounded caches also forget on the clock, so an engine left without traffic gives
// their memory back (issue #6), while entries in use stay.

import { expect, test } from 'bun:test'
import { resolve } from 'node:path'
import { ageCaches, BoundedCache } from '../../core/cache.ts'
import { runScript } from '../../core/testing.ts'

test('an idle cache is empty after two turns of the clock; an entry used in between stays', () => {
  const cache = new BoundedCache<number>(1000)
  cache.set('idle', 1)
  cache.set('used', 2)
  ageCaches()
  expect(cache.size).toBe(2)
  // A hit after a turn brings the entry forward, as a hit after a turn by size does.
  expect(cache.get('used')).toBe(2)
  ageCaches()
  expect(cache.get('idle')).toBeUndefined()
  expect(cache.get('used')).toBe(2)
  ageCaches()
  ageCaches()
  expect(cache.size).toBe(0)
})

test('turns of the clock among turns by size keep a busy cache bounded and its answers right', () => {
  const cache = new BoundedCache<number>(100)
  let hits = 0
  for (let i = 0; i < 1000; i++) {
    cache.set(`k${i}`, i)
    if (i % 97 === 0) ageCaches()
    for (const k of [i, i - 1, i - 50]) {
      const v = cache.get(`k${k}`)
      if (v !== undefined) {
        expect(v).toBe(k)
        hits++
      }
    }
    expect(cache.size).toBeLessThanOrEqual(100)
  }
  // The newest key is always found, older ones mostly.
  expect(hits).toBeGreaterThan(2000)
})

test('the ageing timer does not keep the process alive', async () => {
  const script = `
    import { BoundedCache } from ${JSON.stringify(resolve(import.meta.dir, '../../core/cache.ts'))}
    new BoundedCache(10).set('a', 1)
    console.log('ran')
  `
  const { stdout, code, ms } = await runScript(script)
  expect(stdout).toBe('ran\n')
  expect(code).toBe(0)
  expect(ms).toBeLessThan(8_000)
})
