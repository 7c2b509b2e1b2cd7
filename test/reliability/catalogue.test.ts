// A catalogue of named hostile inputs, each sent to both dialects through the real engine and every
// standard plugin (docs/reliability.md "Bad input", "Oversized bodies"). The answer is checked
// against the dialect's documented ones, and the stored row where the input is accepted.

import { afterAll, describe, expect, test } from 'bun:test'
import { deflateSync, gzipSync } from 'node:zlib'
import type { JsonRow } from '../../core/rows.ts'
import {
  type Checked,
  checkLynkow,
  checkPlausible,
  clearRows,
  controlCharacters,
  LYNKOW,
  PLAUSIBLE,
  rawPost,
  standardEngine,
  TEST_UA,
} from './harness.ts'

// Plausible's own body limit, so the deep and wide bodies below reach the parsers.
const LIMIT = 1_000_000
const t = await standardEngine({
  server: { bodyLimit: LIMIT },
  // Many requests from one peer: keep the per-IP limit out of the way.
  plugins: { 'rate-limit': { perIp: { events: 0 } } },
})
afterAll(() => t.close())

const JSON_TYPE = { 'content-type': 'application/json' }
const TEXT_TYPE = { 'content-type': 'text/plain' }
const PAGEVIEW = { n: 'pageview', u: 'https://example.com/page', d: 'example.com' }
const LK_PAGEVIEW = { event: 'pageview', path: '/page' }

const UNREADABLE = { errors: { request: ['Unable to parse request body as json'] } }
const NO_FIELDS = {
  errors: { domain: ["can't be blank"], event_name: ["can't be blank"], url: ['is required'] },
}
const LK_NOT_OBJECT = { message: 'Event not stored: invalid body: body must be a JSON object' }
const LK_RECEIVED = { message: 'Event received' }

async function plausible(
  body: BodyInit | null,
  headers: Record<string, string> = JSON_TYPE,
  peerIp?: string,
): Promise<Checked> {
  return checkPlausible(await rawPost(t, PLAUSIBLE, body, headers, peerIp))
}
let visitors = 0
/** A client address not used before: a new visitor, so a new session whose attribution is this event's. */
const newVisitor = () => `192.0.2.${++visitors}`
async function lynkow(body: BodyInit | null, headers: Record<string, string> = JSON_TYPE): Promise<Checked> {
  return checkLynkow(await rawPost(t, LYNKOW, body, headers))
}
const json = (c: Checked) => JSON.parse(c.text) as unknown
const lastRow = (): JsonRow => t.events().at(-1)!
const bytes = (...parts: (string | number[])[]) =>
  new Uint8Array(parts.flatMap((p) => (typeof p === 'string' ? [...new TextEncoder().encode(p)] : p)))

describe('malformed bodies', () => {
  test('an empty body', async () => {
    expect(json(await plausible('', TEXT_TYPE))).toEqual(UNREADABLE)
    expect(json(await plausible('', JSON_TYPE))).toEqual(UNREADABLE)
    expect(json(await lynkow(''))).toEqual(LK_NOT_OBJECT)
    expect(json(await lynkow(null))).toEqual(LK_NOT_OBJECT)
  })

  test.each(['null', '[]', '[1,2]', '"text"', '42', 'true'])('top level %s', async (body) => {
    // application/json: valid JSON that is no object leaves every field missing (spec §1).
    expect(json(await plausible(body, JSON_TYPE))).toEqual(NO_FIELDS)
    // text/plain: the body must decode to an object.
    expect(json(await plausible(body, TEXT_TYPE))).toEqual(UNREADABLE)
    expect(json(await lynkow(body))).toEqual(LK_NOT_OBJECT)
  })

  test.each(['{', '{"n":"pageview",', '{"n":"pagev', '{"n":}', "{'n':'pageview'}", '{"n":"pageview"}}', 'NaN'])(
    'truncated or invalid JSON %s',
    async (body) => {
      expect(json(await plausible(body, JSON_TYPE))).toEqual(UNREADABLE)
      expect(json(await plausible(body, TEXT_TYPE))).toEqual(UNREADABLE)
      expect(json(await lynkow(body))).toEqual(LK_NOT_OBJECT)
    },
  )

  test('a UTF-8 byte-order mark before the JSON is tolerated', async () => {
    const bom = [0xef, 0xbb, 0xbf]
    expect((await plausible(bytes(bom, JSON.stringify(PAGEVIEW)), TEXT_TYPE)).status).toBe(202)
    expect(json(await lynkow(bytes(bom, JSON.stringify(LK_PAGEVIEW))))).toEqual(LK_RECEIVED)
  })

  test('invalid UTF-8 bytes become U+FFFD, never a fault', async () => {
    clearRows(t)
    const bad = [0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xf0, 0x28, 0x8c, 0xbc]
    const p = await plausible(
      bytes('{"n":"pageview","u":"https://example.com/', bad, '","d":"example.com"}'),
      TEXT_TYPE,
    )
    expect(p.text).toBe('ok')
    expect(lastRow().pathname as string).toContain('\ufffd')
    expect(json(await lynkow(bytes('{"event":"pageview","path":"/', bad, '"}')))).toEqual(LK_RECEIVED)
    expect(lastRow().pathname as string).toContain('\ufffd')
    // Invalid bytes where JSON syntax is expected are plain invalid JSON.
    expect(json(await plausible(bytes([0xff, 0xfe]), TEXT_TYPE))).toEqual(UNREADABLE)
  })

  test('lone surrogates, escaped and as raw (CESU-8) bytes', async () => {
    clearRows(t)
    // Escaped: valid JSON; the string is kept as sent (see docs/reliability.md, not guaranteed).
    const escaped = '{"n":"\\ud800x","u":"https://example.com/\\udfff","d":"example.com","p":{"k":"\\ud83d"}}'
    expect((await plausible(escaped, TEXT_TYPE)).text).toBe('ok')
    expect(json(await lynkow('{"event":"pageview","path":"/\\ud800","page_title":"\\udc00"}'))).toEqual(LK_RECEIVED)
    // Raw: the UTF-8 encoding of a surrogate is invalid UTF-8, so it becomes U+FFFD.
    const raw = await plausible(bytes('{"n":"a', [0xed, 0xa0, 0x80], '","u":"https://example.com/","d":"example.com"}'))
    expect(raw.text).toBe('ok')
    expect(lastRow().name as string).toContain('\ufffd')
  })

  test('NUL bytes, escaped and raw', async () => {
    clearRows(t)
    expect((await plausible('{"n":"a\\u0000b","u":"https://example.com/\\u0000","d":"example.com"}')).text).toBe('ok')
    expect(lastRow().name).toBe('a\u0000b')
    expect(json(await lynkow('{"event":"pageview","path":"/\\u0000","copied_text":"\\u0000"}'))).toEqual(LK_RECEIVED)
    // A raw control character inside a JSON string is invalid JSON.
    expect(json(await plausible('{"n":"a\u0000b","u":"https://example.com/","d":"example.com"}'))).toEqual(UNREADABLE)
    expect(json(await lynkow('{"event":"pageview","path":"/\u0000"}'))).toEqual(LK_NOT_OBJECT)
    expect(json(await plausible('\u0000'.repeat(1000), TEXT_TYPE))).toEqual(UNREADABLE)
  })

  test('10^5-deep nesting, at the top and inside a field', async () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000)
    expect(json(await plausible(deep, JSON_TYPE))).toEqual(NO_FIELDS)
    expect(json(await plausible(deep, TEXT_TYPE))).toEqual(UNREADABLE)
    expect(json(await lynkow(deep))).toEqual(LK_NOT_OBJECT)
    const object = `${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`
    expect(json(await lynkow(object))).toEqual({
      message: 'Event not stored: invalid body: event_type is required; page_path is required',
    })
    // Inside a prop: the nested value is dropped (§4.1), the event stored.
    clearRows(t)
    const inProps = `{"n":"pageview","u":"https://example.com/","d":"example.com","p":{"k":"v","deep":${deep}}}`
    expect((await plausible(inProps, TEXT_TYPE)).text).toBe('ok')
    expect(lastRow()['meta.key']).toEqual(['k'])
    expect(json(await lynkow(`{"event":"pageview","path":"/","x":${deep}}`))).toEqual(LK_RECEIVED)
  })

  // Regression: the second parse that keeps number text (core/json.ts) overflowed the stack on deep
  // nesting, and a valid body was answered as unparsable.
  test('10^4-deep nesting beside a float prop is still a readable body', async () => {
    const deep = '['.repeat(10_000) + ']'.repeat(10_000)
    const body = `{"n":"pageview","u":"https://example.com/","d":"example.com","p":{"price":2.0,"deep":${deep}}}`
    clearRows(t)
    expect((await plausible(body, TEXT_TYPE)).text).toBe('ok')
    expect(lastRow()['meta.key']).toEqual(['price'])
    expect(lastRow()['meta.value']).toEqual(['2.0'])
  })

  test('10^5 keys, at the top and in the props', async () => {
    const keys = Array.from({ length: 100_000 }, (_, i) => `"${i.toString(36)}":0`).join(',')
    const top = `{${keys},"n":"pageview","u":"https://example.com/","d":"example.com","event":"pageview","path":"/"}`
    expect(top.length).toBeLessThan(LIMIT)
    expect((await plausible(top)).text).toBe('ok')
    expect(json(await lynkow(top))).toEqual(LK_RECEIVED)
    clearRows(t)
    expect((await plausible(`{"n":"pageview","u":"https://example.com/","d":"example.com","p":{${keys}}}`)).text).toBe(
      'ok',
    )
    // At most 30 props are kept, the greatest keys in byte order (§4.4).
    expect(lastRow()['meta.key']).toHaveLength(30)
  })

  test('duplicate keys: the last one counts, as in JSON.parse and upstream', async () => {
    clearRows(t)
    const p = '{"n":"first","n":"pageview","u":"https://example.com/a","u":"https://example.com/b","d":"example.com"}'
    expect((await plausible(p)).text).toBe('ok')
    expect(lastRow()).toMatchObject({ name: 'pageview', pathname: '/b' })
    expect(json(await lynkow('{"event":"click","event":"pageview","path":"/a","path":"/b"}'))).toEqual(LK_RECEIVED)
    expect(lastRow()).toMatchObject({ name: 'pageview', pathname: '/b' })
  })
})

describe('prototype keys never pollute', () => {
  afterAll(() => {
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect(Object.prototype).not.toHaveProperty('polluted')
  })

  test('in JSON: __proto__, constructor and prototype are ordinary prop keys at most', async () => {
    clearRows(t)
    const body =
      '{"n":"pageview","u":"https://example.com/","d":"example.com","__proto__":{"polluted":"top"},' +
      '"p":{"__proto__":"x","constructor":"c","prototype":"p","nested":{"__proto__":{"polluted":"deep"}}}}'
    expect((await plausible(body)).text).toBe('ok')
    expect(lastRow()['meta.key']).toEqual(['__proto__', 'constructor', 'prototype'])
    expect(lastRow()['meta.value']).toEqual(['x', 'c', 'p'])
    const lk = '{"event":"pageview","path":"/","__proto__":{"polluted":"lk","page_title":"t"},"constructor":{"x":1}}'
    expect(json(await lynkow(lk))).toEqual(LK_RECEIVED)
    expect(lastRow()['meta.key']).not.toContain('polluted')
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  test('in form bodies: bracket keys cannot reach a prototype', async () => {
    clearRows(t)
    const form =
      'n=pageview&u=https://example.com/&d=example.com&__proto__[polluted]=1&constructor[prototype][polluted]=1' +
      '&p[__proto__]=x&p[constructor][prototype][polluted]=1&p[toString]=y'
    const res = await plausible(form, { 'content-type': 'application/x-www-form-urlencoded' })
    expect(res.text).toBe('ok')
    expect(lastRow()['meta.key']).toEqual(['__proto__', 'toString'])
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  test('in multipart bodies', async () => {
    const part = (name: string, value: string) =>
      `--b\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`
    const body = `${part('n', 'pageview')}${part('u', 'https://example.com/')}${part('__proto__[polluted]', '1')}${part('p[__proto__][polluted]', '1')}--b--\r\n`
    const res = await plausible(body, { 'content-type': 'multipart/form-data; boundary=b' })
    expect(res.text).toBe('ok')
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })
})

describe('numbers at the edges', () => {
  test('1e400 is a JSON error only in the Plausible fields that are read (documented deviation)', async () => {
    expect(json(await plausible('{"n":1e400,"u":"https://example.com/","d":"example.com"}'))).toEqual(UNREADABLE)
    expect(
      json(await plausible('{"n":"pageview","u":"https://example.com/","d":"example.com","p":{"a":1e400}}')),
    ).toEqual(UNREADABLE)
    expect((await plausible('{"n":"pageview","u":"https://example.com/","d":"example.com","v":1e400}')).text).toBe('ok')
    expect(json(await lynkow('{"event":"pageview","path":"/","scroll_depth":1e400}'))).toEqual({
      message: 'Event not stored: invalid body: scroll_depth must be a number',
    })
    expect(json(await lynkow('{"event":"pageview","path":"/","unknown":1e400}'))).toEqual(LK_RECEIVED)
  })

  test('-0, 2^64 and 1e308 in props keep their meaning', async () => {
    clearRows(t)
    const body =
      '{"n":"pageview","u":"https://example.com/","d":"example.com","p":{"a":-0,"b":18446744073709551616,"c":1e308,"d":-0.0}}'
    expect((await plausible(body)).text).toBe('ok')
    expect(lastRow()['meta.value']).toEqual(['0', '18446744073709551616', '1.0e308', '-0.0'])
  })

  test('huge and negative numbers in Lynkow fields are range errors or clamped times', async () => {
    expect(json(await lynkow('{"event":"pageview","path":"/","click_count":18446744073709551616}'))).toEqual({
      message: 'Event not stored: invalid body: click_count must be between 0 and 1000000',
    })
    expect(json(await lynkow('{"event":"pageview","path":"/","lcp":-0}'))).toEqual(LK_RECEIVED)
    clearRows(t)
    const before = Math.floor(Date.now() / 1000)
    expect(json(await lynkow('{"event":"pageview","path":"/","event_time":18446744073709551616}'))).toMatchObject({
      message: expect.any(String),
    })
    for (const time of ['-1', '0', '"99999-01-01"', '"2026-13-45T99:99"', '1e300']) {
      const res = await lynkow(`{"event":"pageview","path":"/","event_time":${time}}`)
      const message = (json(res) as { message: string }).message
      if (message === 'Event received') {
        const row = lastRow()
        // A stored time is the client's within the bounds, or the arrival time.
        expect(Date.parse(`${row.timestamp as string}Z`) / 1000).toBeGreaterThanOrEqual(before - 72 * 3600)
      } else expect(message).toContain('event_time must be an ISO-8601 date-time or epoch milliseconds')
    }
  })
})

describe('oversized and encoded bodies', () => {
  test('a body over the limit gets 413, by declared length and when streamed without one', async () => {
    for (const path of [PLAUSIBLE, LYNKOW]) {
      const declared = await rawPost(t, path, 'x'.repeat(LIMIT + 1), TEXT_TYPE)
      expect(declared.status).toBe(413)
      expect(await declared.text()).toBe(`request body exceeds ${LIMIT} bytes`)
      let sent = 0
      const stream = new ReadableStream<Uint8Array>({
        pull(controller) {
          sent += 65536
          if (sent > 20 * LIMIT) controller.close()
          else controller.enqueue(new Uint8Array(65536).fill(0x20))
        },
      })
      const streamed = await rawPost(t, path, stream, TEXT_TYPE)
      expect(streamed.status).toBe(413)
      // The engine stopped reading soon after the limit.
      expect(sent).toBeLessThan(2 * LIMIT)
    }
  })

  test('a body exactly at the limit is read', async () => {
    const head = JSON.stringify({ ...PAGEVIEW, pad: '' })
    const body = JSON.stringify({ ...PAGEVIEW, pad: 'x'.repeat(LIMIT - head.length) })
    expect(body.length).toBe(LIMIT)
    expect((await plausible(body)).text).toBe('ok')
  })

  test('gzip and deflate bodies are read; a decompression bomb gets 413', async () => {
    expect(
      (await plausible(gzipSync(JSON.stringify(PAGEVIEW)), { ...TEXT_TYPE, 'content-encoding': 'gzip' })).text,
    ).toBe('ok')
    expect(
      json(await lynkow(deflateSync(JSON.stringify(LK_PAGEVIEW)), { ...JSON_TYPE, 'content-encoding': 'deflate' })),
    ).toEqual(LK_RECEIVED)
    // 100 MB of spaces compress to about 100 KB.
    const bomb = gzipSync(Buffer.alloc(100_000_000, 0x20))
    expect(bomb.byteLength).toBeLessThan(LIMIT)
    for (const path of [PLAUSIBLE, LYNKOW]) {
      const res = await rawPost(t, path, bomb, { ...TEXT_TYPE, 'content-encoding': 'gzip' })
      expect(res.status).toBe(413)
    }
    // A gzip bomb inside a gzip: the outer layer is within the limit, the inner is only bytes.
    const nested = gzipSync(gzipSync(Buffer.alloc(50_000_000, 0x20)))
    expect((await plausible(nested, { ...TEXT_TYPE, 'content-encoding': 'gzip' })).status).toBe(400)
  })

  test('corrupt compressed bodies get 400, unknown encodings 415', async () => {
    expect((await plausible(bytes([0x1f, 0x8b, 1, 2, 3]), { ...TEXT_TYPE, 'content-encoding': 'gzip' })).text).toBe(
      'request body could not be read',
    )
    const truncated = gzipSync(JSON.stringify(PAGEVIEW)).subarray(0, 20)
    expect((await lynkow(truncated, { ...JSON_TYPE, 'content-encoding': 'gzip' })).status).toBe(400)
    for (const encoding of ['br', 'zstd', 'gzip, gzip', 'compress']) {
      expect((await plausible(JSON.stringify(PAGEVIEW), { ...TEXT_TYPE, 'content-encoding': encoding })).status).toBe(
        415,
      )
      expect((await lynkow(JSON.stringify(LK_PAGEVIEW), { ...JSON_TYPE, 'content-encoding': encoding })).status).toBe(
        415,
      )
    }
  })
})

describe('content types', () => {
  test('missing: Plausible reads no body (400 on the fields), Lynkow reads JSON', async () => {
    expect(json(await plausible(JSON.stringify(PAGEVIEW), {}))).toEqual(NO_FIELDS)
    expect(json(await lynkow(JSON.stringify(LK_PAGEVIEW), {}))).toEqual(LK_RECEIVED)
  })

  test.each([
    'application/xml',
    'text/html',
    'image/png',
    'application/octet-stream',
    'text/plain; charset=latin1',
    'application/json; charset=utf-16',
    'garbage',
    ';;;',
    'multipart/form-data',
  ])('wrong content type %s: a documented answer', async (type) => {
    const p = await plausible(JSON.stringify(PAGEVIEW), { 'content-type': type })
    expect([202, 400]).toContain(p.status)
    expect(json(await lynkow(JSON.stringify(LK_PAGEVIEW), { 'content-type': type }))).toEqual(LK_RECEIVED)
  })

  test('other methods on the routes are not found, never a fault', async () => {
    for (const method of ['GET', 'PUT', 'DELETE', 'PATCH']) {
      for (const path of [PLAUSIBLE, LYNKOW]) {
        const res = await t.handle(
          new Request(`http://localhost${path}`, { method, body: method === 'GET' ? null : '{}' }),
        )
        expect(res.status).toBe(404)
      }
    }
  })
})

describe('hostile URLs and hosts', () => {
  test('javascript: and data: URLs', async () => {
    clearRows(t)
    expect(json(await plausible(JSON.stringify({ ...PAGEVIEW, u: 'data:text/html,<script>x</script>' })))).toEqual({
      errors: { url: ['scheme is not allowed'] },
    })
    expect(json(await plausible(JSON.stringify({ ...PAGEVIEW, u: 'DATA:text/html,x' })))).toEqual({
      errors: { url: ['scheme is not allowed'] },
    })
    expect((await plausible(JSON.stringify({ ...PAGEVIEW, u: 'javascript:alert(1)' }))).text).toBe('ok')
    expect(lastRow()).toMatchObject({ hostname: '(none)', pathname: 'alert(1)' })
    // Lynkow: no host, so the page_path is needed.
    expect(json(await lynkow(JSON.stringify({ event: 'pageview', page_url: 'javascript:alert(1)' })))).toEqual({
      message: 'Event not stored: invalid body: page_path is required',
    })
    expect(json(await lynkow(JSON.stringify({ event: 'pageview', page_url: 'data:text/html,x', path: '/' })))).toEqual(
      LK_RECEIVED,
    )
    expect(lastRow().hostname).toBe('example.com')
    // As referrers they are never valid external referrers.
    for (const r of ['javascript:alert(1)', 'data:text/html,x']) {
      expect((await plausible(JSON.stringify({ ...PAGEVIEW, r }), JSON_TYPE, newVisitor())).text).toBe('ok')
      expect(lastRow()).toMatchObject({ referrer: '', referrer_source: '' })
    }
  })

  test.each([
    ['https://xn--bcher-kva.example/a', 'xn--bcher-kva.example'],
    ['https://bücher.example/a', 'bücher.example'],
    ['https://[::1]:8080/a', '::1'],
    ['https://127.0.0.1/a', '127.0.0.1'],
    ['https://[::ffff:127.0.0.1]/a', '::ffff:127.0.0.1'],
    ['https://0x7f.1/a', '0x7f.1'],
    ['https://user:pass@www.example.com:99999/a', 'example.com'],
  ])('page host %s', async (u, host) => {
    clearRows(t)
    expect((await plausible(JSON.stringify({ ...PAGEVIEW, u }))).text).toBe('ok')
    expect(lastRow()).toMatchObject({ hostname: host, site_id: '1' })
    expect(json(await lynkow(JSON.stringify({ event: 'pageview', page_url: u })))).toEqual(LK_RECEIVED)
    expect(typeof lastRow().hostname).toBe('string')
  })

  test.each([
    ['https://xn--bcher-kva.example/x', 'xn--bcher-kva.example/x', 'xn--bcher-kva.example'],
    ['https://www.bücher.example/x/', 'bücher.example/x', 'bücher.example'],
    ['http://[::1]:8080/x', '::1/x', '::1'],
    ['http://10.0.0.1/x?q#f', '10.0.0.1/x', '10.0.0.1'],
  ])('IDN and IP-literal referrer %s is stored as written', async (r, referrer, source) => {
    clearRows(t)
    expect((await plausible(JSON.stringify({ ...PAGEVIEW, r }), JSON_TYPE, newVisitor())).text).toBe('ok')
    expect(lastRow()).toMatchObject({ referrer, referrer_source: source })
  })

  test('localhost origins are refused by Lynkow in every spelling', async () => {
    for (const origin of [
      'http://localhost',
      'http://LOCALHOST:3000',
      'http://a.localhost',
      'http://127.0.0.1',
      'http://127.9.9.9:80',
      'http://[::1]:8080',
    ]) {
      const res = await lynkow(JSON.stringify(LK_PAGEVIEW), { ...JSON_TYPE, origin })
      expect((json(res) as { message: string }).message, origin).toBe(
        'Event not stored: localhost origin (the site does not allow localhost)',
      )
    }
  })
})

describe('hostile headers', () => {
  test('a 10 KB user agent is parsed within its cap and is no bot', async () => {
    clearRows(t)
    for (const ua of ['A'.repeat(10_240), `${TEST_UA} ${'x'.repeat(10_240)}`, `(${'('.repeat(10_000)}`]) {
      const p = await checkPlausible(
        await rawPost(t, PLAUSIBLE, JSON.stringify(PAGEVIEW), { ...JSON_TYPE, 'user-agent': ua }),
      )
      expect(p.headers.get('x-plausible-dropped')).toBeNull()
      const l = await checkLynkow(
        await rawPost(t, LYNKOW, JSON.stringify(LK_PAGEVIEW), { ...JSON_TYPE, 'user-agent': ua }),
      )
      expect(json(l)).toEqual(LK_RECEIVED)
    }
  })

  test('CR/LF and ANSI escapes in the body and headers are never echoed into answer headers', async () => {
    const injected = 'X-Injected'
    const nasty = `\u001b[31mred\u001b[0m\r\n${injected}: 1\r\n\r\n<script>`
    const check = (c: Checked) => {
      for (const [name, value] of c.headers) {
        expect(controlCharacters(`${name}: ${value}`)).toEqual([])
        expect(`${name}: ${value}`).not.toContain(injected)
      }
      expect(c.text).not.toContain(injected)
    }
    const ua = `${TEST_UA} \u001b[2J\u001b]0;title\u0007`
    check(
      await plausible(JSON.stringify({ ...PAGEVIEW, r: nasty, n: nasty, p: { [nasty]: nasty } }), {
        ...JSON_TYPE,
        'user-agent': ua,
      }),
    )
    check(
      await plausible(JSON.stringify({ ...PAGEVIEW, u: `https://example.com/${nasty}` }), {
        ...JSON_TYPE,
        referer: ua,
      }),
    )
    check(
      await lynkow(JSON.stringify({ ...LK_PAGEVIEW, page_referrer: nasty, page_title: nasty, error_message: nasty }), {
        ...JSON_TYPE,
        'user-agent': ua,
        origin: ua,
      }),
    )
    // A strict site lists the failed fields: it names them, it does not quote the values.
    check(await lynkow(JSON.stringify({ event: nasty, path: nasty }), { ...JSON_TYPE, 'user-agent': ua }))
    // A preflight echoes asked headers only when they are plain header names.
    const preflight = await t.handle(
      new Request(`http://localhost${LYNKOW}`, {
        method: 'OPTIONS',
        headers: { 'access-control-request-headers': `content-type, ${injected}: 1 \u001b[0m` },
      }),
    )
    expect(preflight.status).toBe(204)
    expect(preflight.headers.get('access-control-allow-headers')).toBe('content-type')
  })
})

test('Object.prototype is untouched after the whole catalogue', () => {
  expect(Object.keys(Object.prototype)).toEqual([])
  expect(({} as Record<string, unknown>).polluted).toBeUndefined()
})
