// The HTTP layer, through engine.handle (no port) and through a real listening server.

import { afterAll, describe, expect, test } from 'bun:test'
import { resolve } from 'node:path'
import { gzipSync } from 'node:zlib'
import { startTestEngine } from '../../core/testing.ts'

const root = resolve(import.meta.dir, '../..')
const config = {
  server: { bodyLimit: 1024, port: 0, host: '127.0.0.1' },
  sites: [{ id: 1, domain: 'example.com' }],
  plugins: ['./test/fixtures/test-dialect.ts'],
}

describe('through engine.handle', async () => {
  const t = await startTestEngine(config, root)
  afterAll(() => t.close())
  const url = 'http://localhost/t/event'

  test('CORS preflight for any origin, with the asked headers', async () => {
    const res = await t.handle(
      new Request(url, {
        method: 'OPTIONS',
        headers: {
          origin: 'https://site.example',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type',
        },
      }),
    )
    expect(res.status).toBe(204)
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
    expect(res.headers.get('access-control-allow-methods')).toContain('POST')
    expect(res.headers.get('access-control-allow-headers')).toBe('content-type')
    expect(res.headers.get('access-control-max-age')).toBe('86400')
  })

  test('dialect answers carry Access-Control-Allow-Origin', async () => {
    const res = await t.post('/t/event', { d: 'example.com' }, { headers: { origin: 'https://site.example' } })
    expect(res.status).toBe(202)
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
  })

  test('a body over the limit by its declared length is refused with 413', async () => {
    const res = await t.post('/t/event', JSON.stringify({ d: 'example.com', pad: 'x'.repeat(2000) }))
    expect(res.status).toBe(413)
    expect(await res.text()).toBe('request body exceeds 1024 bytes')
  })

  test('a streamed body without length is cut at the limit with 413', async () => {
    let sent = 0
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        sent += 512
        if (sent > 1_000_000) controller.close()
        else controller.enqueue(new Uint8Array(512).fill(32))
      },
    })
    const res = await t.handle(new Request(url, { method: 'POST', body: stream, duplex: 'half' } as RequestInit))
    expect(res.status).toBe(413)
    // The engine stopped reading soon after the limit, not at the end of the stream.
    expect(sent).toBeLessThan(10_000)
  })

  test('a body exactly at the limit is read', async () => {
    const base = JSON.stringify({ d: 'example.com', pad: '' })
    const body = JSON.stringify({ d: 'example.com', pad: 'x'.repeat(1024 - base.length) })
    expect(body.length).toBe(1024)
    const res = await t.post('/t/event', body)
    expect(res.status).toBe(202)
  })

  test('gzip bodies are decompressed', async () => {
    const res = await t.handle(
      new Request(url, {
        method: 'POST',
        headers: { 'content-encoding': 'gzip', 'content-type': 'application/json' },
        body: gzipSync(JSON.stringify({ n: 'zipped', d: 'example.com' })),
      }),
    )
    expect(res.status).toBe(202)
    expect(t.events().some((r) => r.name === 'zipped')).toBe(true)
  })

  test('a decompression bomb is refused with 413 without inflating it all', async () => {
    const bomb = gzipSync(Buffer.alloc(50_000_000, 32))
    expect(bomb.length).toBeLessThan(1024 * 64)
    const res = await t.handle(
      new Request(url, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: bomb.subarray(0, 1000) }),
    )
    // Truncated or not, it never becomes more than the limit in memory.
    expect([400, 413]).toContain(res.status)
    const small = gzipSync(Buffer.alloc(100_000, 32))
    expect(small.length).toBeLessThan(1024)
    const res2 = await t.handle(
      new Request(url, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: small }),
    )
    expect(res2.status).toBe(413)
  })

  test('corrupt gzip gets 400, an unknown encoding 415', async () => {
    const corrupt = await t.handle(
      new Request(url, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: 'not gzip at all' }),
    )
    expect(corrupt.status).toBe(400)
    const br = await t.handle(new Request(url, { method: 'POST', headers: { 'content-encoding': 'br' }, body: 'x' }))
    expect(br.status).toBe(415)
  })

  test('unknown routes get a plain 404 without internals', async () => {
    const res = await t.handle(new Request('http://localhost/nope', { method: 'POST', body: '{}' }))
    expect(res.status).toBe(404)
    expect(await res.text()).toBe('not found')
  })

  test('/health answers 200 with the sink states', async () => {
    const res = await t.handle(new Request('http://localhost/health'))
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ status: 'ok', sinks: { memory: { state: 'ok', queuedRows: 0 } } })
  })

  test('/metrics is Prometheus text with requests by route and status', async () => {
    await t.post('/t/event', { d: 'example.com' })
    await t.post('/t/event', 'x'.repeat(2000))
    const res = await t.handle(new Request('http://localhost/metrics'))
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toContain('text/plain')
    const text = await res.text()
    expect(text).toContain('# TYPE analytics_http_requests_total counter')
    expect(text).toMatch(/analytics_http_requests_total\{route="\/t\/event",status="202"\} \d+/)
    expect(text).toMatch(/analytics_http_requests_total\{route="\/t\/event",status="413"\} \d+/)
    expect(text).toContain('analytics_sink_rows_written_total{sink="memory"}')
    expect(text).toContain('analytics_sink_batch_duration_seconds_count{sink="memory"}')
    // Every sample line is `name{labels} value` or `name value`.
    for (const line of text.trim().split('\n')) {
      if (!line.startsWith('#')) expect(line).toMatch(/^[a-z_]+(\{[^}]*\})? -?[\d.e+]+$/)
    }
  })
})

describe('through a real listening server', async () => {
  const t = await startTestEngine(config, root)
  const { port } = await t.engine.listen()
  afterAll(() => t.close())
  const base = `http://127.0.0.1:${port}`

  test('the peer address comes from the socket', async () => {
    const res = await fetch(`${base}/t/event`, { method: 'POST', body: JSON.stringify({ d: 'example.com' }) })
    expect(res.status).toBe(202)
    // No plugin here asked for the address before the dialect's answer did.
    expect(await res.json()).toEqual({ outcomes: ['ok'], peer: '127.0.0.1', client: '127.0.0.1', peerRead: false })
  })

  test('oversized bodies get 413 from the server too, from the engine: with CORS and the reason', async () => {
    // Bun's own refusal (past its maxRequestBodySize) would be a bare 413 that no page can read.
    for (const size of [5000, 1_000_000]) {
      const res = await fetch(`${base}/t/event`, { method: 'POST', body: 'x'.repeat(size) })
      expect(res.status).toBe(413)
      expect(res.headers.get('access-control-allow-origin')).toBe('*')
      expect(await res.text()).toMatch(/^request body exceeds \d+ bytes$/)
    }
  })

  test('preflight over the network', async () => {
    const res = await fetch(`${base}/t/event`, {
      method: 'OPTIONS',
      headers: { origin: 'https://a.example', 'access-control-request-method': 'POST' },
    })
    expect(res.status).toBe(204)
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
  })
})

test('health turns 503 while stopping', async () => {
  const t = await startTestEngine(config, root)
  await t.engine.listen()
  expect(t.engine.health().status).toBe(200)
  const stopping = t.engine.shutdown()
  expect(t.engine.health().status).toBe(503)
  await stopping
})
