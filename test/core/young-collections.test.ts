// `server.youngCollectionMs` (core/young-collections.ts): while requests arrive the engine collects
// the young generation on a clock; an idle engine is left alone; 0 turns it off. Over real HTTP, with
// the counts read from /metrics as an operator would.

import { afterEach, describe, expect, test } from 'bun:test'
import { startTestEngine, TEST_UA, type TestEngine } from '../../core/testing.ts'
import { YoungCollections } from '../../core/young-collections.ts'

describe('the clock', () => {
  test('a tick collects only when a request came since the last collection', async () => {
    const young = new YoungCollections()
    let collected = 0
    young.start(() => {
      collected++
    }, 5)
    await Bun.sleep(40)
    expect(collected).toBe(0)
    young.noteRequest()
    young.noteRequest()
    await Bun.sleep(40)
    expect(collected).toBe(1)
    expect(young.collections).toBe(1)
    young.noteRequest()
    young.stop()
    await Bun.sleep(40)
    expect(collected).toBe(1)
  })
})

describe('over HTTP', () => {
  let t: TestEngine | undefined
  afterEach(async () => {
    await t?.close()
    t = undefined
  })

  async function serve(youngCollectionMs: number): Promise<string> {
    t = await startTestEngine({
      server: { port: 0, host: '127.0.0.1', youngCollectionMs },
      sites: [{ id: 1, domain: 'example.com' }],
      plugins: ['plausible'],
    })
    const { port } = await t.engine.listen()
    return `http://127.0.0.1:${port}`
  }

  async function sendFor(base: string, ms: number): Promise<void> {
    const until = Date.now() + ms
    while (Date.now() < until) {
      const res = await fetch(`${base}/api/event`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'user-agent': TEST_UA },
        body: JSON.stringify({ n: 'pageview', u: 'https://example.com/', d: 'example.com' }),
      })
      expect(res.status).toBe(202)
    }
  }

  async function counts(base: string): Promise<{ collections: number; seconds: number }> {
    const text = await (await fetch(`${base}/metrics`)).text()
    const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
    return {
      collections: read('analytics_young_collections_total'),
      seconds: read('analytics_young_collection_seconds_total'),
    }
  }

  test('collections run while requests arrive, and stop when they stop', async () => {
    const base = await serve(20)
    await sendFor(base, 300)
    const during = await counts(base)
    // 300 ms of traffic at one tick per 20 ms: about 15 ticks, each with requests since the last.
    expect(during.collections).toBeGreaterThanOrEqual(5)
    expect(during.seconds).toBeGreaterThan(0)
    // Idle: /metrics is not a request to the dialect, so nothing more is collected.
    await Bun.sleep(50)
    const settled = (await counts(base)).collections
    await Bun.sleep(200)
    expect((await counts(base)).collections).toBe(settled)
  })

  test('0 leaves collecting to the runtime', async () => {
    const base = await serve(0)
    await sendFor(base, 200)
    expect(await counts(base)).toEqual({ collections: 0, seconds: 0 })
  })
})
