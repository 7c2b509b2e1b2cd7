// Property-based fuzzing of both dialects through the real engine and every standard plugin
// (docs/reliability.md "Bad input"). Whatever the body, the answer is one the dialect documents,
// never a 5xx, never a stack trace or a path; the limits hold exactly at their edges; and the heap
// does not grow over a long run. A failure prints fast-check's seed: replay with FUZZ_SEED=<seed>.

import { afterAll, describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import {
  checkLynkow,
  checkPlausible,
  clearRows,
  heapAfterGc,
  LYNKOW,
  PLAUSIBLE,
  rawPost,
  standardEngine,
} from './harness.ts'

const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED)
const runs = (numRuns: number) => ({ numRuns, seed })

const t = await standardEngine({
  sites: [
    { id: 1, domain: 'example.com', domains: ['example.org'] },
    { id: 2, domain: 'strict.example', strict: true },
  ],
  // Every fuzzed request comes from one peer: the per-IP limit would turn the long runs into 429s.
  plugins: { 'rate-limit': { perIp: { events: 0 } } },
})
afterAll(() => t.close())

const STRICT = '/public/2/analytics/collect'

/** Content types a client may send; `null` sends none. */
const contentType = fc.constantFrom<string | null>(
  'application/json',
  'text/plain',
  'text/plain;charset=UTF-8',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/xml',
  'application/vnd.api+json',
  '',
  null,
)

/** JSON values of every shape, including the awkward ones. */
const anyJson = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.constantFrom(
    null,
    true,
    false,
    0,
    -0,
    -1,
    1.5,
    2 ** 53,
    Number.MAX_VALUE,
    '',
    ' ',
    '\u0000',
    '\ud800',
    'javascript:alert(1)',
    'data:text/html,x',
    '__proto__',
    [],
    {},
    { __proto__: null },
  ),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
)

const PLAUSIBLE_KEYS = [
  'n',
  'name',
  'u',
  'url',
  'd',
  'domain',
  'r',
  'referrer',
  'h',
  'hashMode',
  'm',
  'meta',
  'p',
  'props',
  'i',
  'interactive',
  'v',
  'sd',
  'e',
  '$',
  'revenue',
  '__proto__',
  'constructor',
]

/** A Plausible body: usually valid keys with values of any type, around a valid core. */
const plausibleBody = fc.oneof(
  fc.dictionary(fc.constantFrom(...PLAUSIBLE_KEYS), anyJson, { maxKeys: 14 }),
  fc.record(
    {
      n: fc.oneof(fc.constant('pageview'), fc.constant('engagement'), anyJson),
      u: fc.oneof(fc.webUrl(), anyJson),
      d: fc.oneof(fc.constantFrom('example.com', 'example.org', 'example.com,example.org', 'unknown.example'), anyJson),
      r: fc.oneof(fc.webUrl(), anyJson),
      p: fc.oneof(fc.dictionary(fc.string({ maxLength: 10 }), anyJson, { maxKeys: 40 }), anyJson),
      sd: anyJson,
      e: anyJson,
      h: anyJson,
      i: anyJson,
      revenue: anyJson,
    },
    { requiredKeys: ['n', 'u', 'd'] },
  ),
)

/** Every Lynkow key spelling the dialect reads, plus unknown ones. */
const LYNKOW_KEYS = [
  'session_id',
  'sessionId',
  'visitor_id',
  'visitorId',
  'cookie_visitor_id',
  'visitor_id_source',
  'event_type',
  'eventType',
  'event',
  'page_url',
  'pageUrl',
  'url',
  'page_path',
  'pagePath',
  'path',
  'event_time',
  'eventTime',
  'page_title',
  'title',
  'page_referrer',
  'referrer',
  'scroll_depth',
  'max_scroll_depth',
  'time_on_page',
  'engaged_time',
  'lcp',
  'fid',
  'cls',
  'ttfb',
  'inp',
  'utm_source',
  'utm_medium',
  'traffic_source',
  'device_type',
  'browser',
  'os',
  'screen_width',
  'language',
  'is_entry',
  'visible',
  'click_x',
  'click_element_text',
  'click_count',
  'copied_text',
  'error_message',
  'scroll_behavior',
  'form_completion_rate',
  'unknown_key',
  '__proto__',
]

const lynkowBody = fc.oneof(
  fc.dictionary(fc.constantFrom(...LYNKOW_KEYS), anyJson, { maxKeys: 16 }),
  fc.record(
    {
      event_type: fc.oneof(fc.constantFrom('pageview', 'page_view', 'Page View', 'click', 'cwv'), anyJson),
      page_path: fc.oneof(fc.constant('/'), fc.string({ maxLength: 30 }), anyJson),
      page_url: fc.oneof(fc.webUrl(), anyJson),
      visitor_id: fc.oneof(fc.string({ minLength: 8, maxLength: 64 }), anyJson),
      session_id: fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), anyJson),
      event_time: fc.oneof(
        fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
        fc.integer(),
        anyJson,
      ),
      scroll_depth: anyJson,
      lcp: anyJson,
      is_entry: anyJson,
      copied_text: anyJson,
    },
    { requiredKeys: ['event_type'] },
  ),
)

/** Sends `body` (a value is JSON-encoded; a string or bytes go as they are). */
function send(path: string, body: unknown, type: string | null = 'application/json', peerIp?: string) {
  const headers: Record<string, string> = type === null ? {} : { 'content-type': type }
  const payload = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body)
  return rawPost(t, path, payload as BodyInit, headers, peerIp)
}

describe('Plausible POST /api/event under random input', () => {
  test('random JSON of every shape, with any content type, gets a documented answer', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 6 }), contentType, async (value, type) => {
        await checkPlausible(await send(PLAUSIBLE, value, type), JSON.stringify(value).slice(0, 100))
      }),
      runs(400),
    )
    clearRows(t)
  })

  test('wrong types in every field get a documented answer', async () => {
    await fc.assert(
      fc.asyncProperty(plausibleBody, fc.constantFrom('application/json', 'text/plain'), async (body, type) => {
        await checkPlausible(await send(PLAUSIBLE, body, type), JSON.stringify(body).slice(0, 200))
      }),
      runs(800),
    )
    clearRows(t)
  })

  test('random text and random bytes get a documented answer', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.uint8Array({ maxLength: 600 })),
        contentType,
        async (body, type) => {
          await checkPlausible(await send(PLAUSIBLE, body, type), String(body).slice(0, 100))
        },
      ),
      runs(400),
    )
  })

  test('form bodies with random keys and values get a documented answer', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 12 })), { maxLength: 12 }),
        async (pairs) => {
          const body = pairs
            .concat([
              ['n', 'pageview'],
              ['u', 'https://example.com/'],
            ])
            .map(([k, v]) => `${k}=${v}`)
            .join('&')
          await checkPlausible(await send(PLAUSIBLE, body, 'application/x-www-form-urlencoded'), body.slice(0, 100))
        },
      ),
      runs(300),
    )
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })
})

describe('Plausible limits, exactly at their edges', () => {
  const base = { n: 'pageview', u: 'https://example.com/', d: 'example.com' }
  const errorsOf = async (body: unknown) => {
    const { status, text } = await checkPlausible(await send(PLAUSIBLE, body))
    return status === 202 ? 'ok' : (JSON.parse(text) as { errors: Record<string, string[]> }).errors
  }
  // A character of 1 to 4 UTF-8 bytes, and a grapheme of several code points.
  const unit = fc.constantFrom('a', 'é', '€', '😀', '👩‍👩‍👧')

  test('event names: 120 characters (graphemes) pass, 121 fail', async () => {
    await fc.assert(
      fc.asyncProperty(unit, fc.constantFrom(119, 120, 121), async (c, count) => {
        const expected = count <= 120 ? 'ok' : { event_name: ['should be at most 120 character(s)'] }
        expect(await errorsOf({ ...base, n: c.repeat(count) })).toEqual(expected)
      }),
      runs(60),
    )
  })

  test('URLs: 2000 bytes pass, 2001 fail', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('a', 'é', '€'), fc.constantFrom(-1, 0, 1), async (c, delta) => {
        const head = 'https://example.com/'
        const bytes = Buffer.byteLength(c)
        // Pad with ASCII to land exactly on 2000 + delta bytes.
        const room = 2000 + delta - head.length
        const url = head + c.repeat(Math.floor(room / bytes)) + 'a'.repeat(room % bytes)
        expect(Buffer.byteLength(url)).toBe(2000 + delta)
        expect(await errorsOf({ ...base, u: url })).toEqual(delta <= 0 ? 'ok' : { url: ['must be a valid url'] })
      }),
      runs(30),
    )
  })

  test('props: keys of 300 bytes and values of 2000 bytes pass, one byte more fails', async () => {
    const tooLong = { props: ['keys should have at most 300 bytes and values 2000 bytes'] }
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('a', 'é', '€', '😀'),
        fc.constantFrom('key', 'value'),
        fc.constantFrom(-1, 0, 1),
        async (c, part, delta) => {
          const limit = part === 'key' ? 300 : 2000
          const bytes = Buffer.byteLength(c)
          const text = c.repeat(Math.floor((limit + delta) / bytes)) + 'a'.repeat((limit + delta) % bytes)
          expect(Buffer.byteLength(text)).toBe(limit + delta)
          const p = part === 'key' ? { [text]: 'v' } : { k: text }
          expect(await errorsOf({ ...base, p })).toEqual(delta <= 0 ? 'ok' : tooLong)
        },
      ),
      runs(40),
    )
  })

  test('props: at most 30 are kept, the greatest keys, and more is never an error', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 25, max: 40 }), async (count) => {
        clearRows(t)
        const p = Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${String(i).padStart(2, '0')}`, i]))
        expect(await errorsOf({ ...base, p })).toBe('ok')
        const row = t.events().at(-1)!
        const keys = row['meta.key'] as string[]
        expect(keys).toHaveLength(Math.min(count, 30))
        expect(keys.at(-1)).toBe(`k${String(count - 1).padStart(2, '0')}`)
      }),
      runs(16),
    )
  })
})

describe('Lynkow POST /public/:siteId/analytics/collect under random input', () => {
  test('random JSON of every shape, with any content type, gets a documented answer', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 6 }), contentType, fc.boolean(), async (value, type, strict) => {
        await checkLynkow(await send(strict ? STRICT : LYNKOW, value, type), JSON.stringify(value).slice(0, 100))
      }),
      runs(400),
    )
    clearRows(t)
  })

  test('wrong types in every field get a documented answer (lenient and strict sites)', async () => {
    await fc.assert(
      fc.asyncProperty(lynkowBody, fc.boolean(), async (body, strict) => {
        await checkLynkow(await send(strict ? STRICT : LYNKOW, body), JSON.stringify(body).slice(0, 200))
      }),
      runs(800),
    )
    clearRows(t)
  })

  test('random text and random bytes get a documented answer', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.uint8Array({ maxLength: 600 })),
        contentType,
        async (body, type) => {
          await checkLynkow(await send(LYNKOW, body, type), String(body).slice(0, 100))
        },
      ),
      runs(400),
    )
  })

  test('random site ids in the path get "unknown site" or no route, never a fault', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), async (id) => {
        const res = await send(`/public/${encodeURIComponent(id)}/analytics/collect`, { event: 'pageview', path: '/' })
        if (res.status === 404) return
        const { text } = await checkLynkow(res, id)
        if (id !== '1' && id !== '2') expect(JSON.parse(text).message).toBe('Event not stored: unknown site')
      }),
      runs(300),
    )
  })

  test('random Origin and Referer headers get a documented answer', async () => {
    const header = fc.oneof(
      fc.webUrl(),
      fc.string({ maxLength: 60 }).filter((s) => /^[\x20-\x7e]*$/.test(s)),
    )
    await fc.assert(
      fc.asyncProperty(header, header, async (origin, referer) => {
        const res = await rawPost(t, LYNKOW, JSON.stringify({ event: 'pageview', path: '/' }), {
          'content-type': 'application/json',
          origin,
          referer,
        })
        await checkLynkow(res, `${origin} ${referer}`)
      }),
      runs(200),
    )
    clearRows(t)
  })
})

describe('Lynkow limits, exactly at their edges', () => {
  const base = { event: 'pageview', path: '/' }
  const answer = async (body: Record<string, unknown>, path = LYNKOW) => {
    const { status, text } = await checkLynkow(await send(path, body))
    return { status, message: JSON.parse(text).message as string | undefined }
  }
  // The seed's limits reject one character more; our own caps cut instead (docs/lynkow.md, Fields).
  const rejecting: [string, number, number, string][] = [
    ['visitor_id', 8, 64, 'visitor_id must be 8 to 64 characters'],
    ['session_id', 1, 128, 'session_id must be 1 to 128 characters'],
    ['cookie_visitor_id', 0, 128, 'cookie_visitor_id must be at most 128 characters'],
    ['page_title', 0, 500, 'page_title must be at most 500 characters'],
  ]

  test.each(rejecting)(
    '%s: %i to %i characters pass, one more (or less) is rejected',
    async (field, min, max, message) => {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(min - 1, min, max, max + 1),
          fc.constantFrom('a', 'é', '7'),
          async (length, c) => {
            if (length < 0) return
            const { status, message: got } = await answer({ ...base, [field]: c.repeat(length) })
            expect(status).toBe(202)
            if (length >= min && length <= max && !(field === 'session_id' && length === 0)) {
              expect(got).toBe('Event received')
            } else expect(got).toContain(message)
          },
        ),
        runs(24),
      )
    },
  )

  test('page_path: 1024 characters pass, 1025 are rejected', async () => {
    for (const length of [1023, 1024, 1025]) {
      const { message } = await answer({ event: 'pageview', path: `/${'p'.repeat(length - 1)}` })
      if (length <= 1024) expect(message).toBe('Event received')
      else expect(message).toContain('page_path must be at most 1024 characters')
    }
  })

  test('page_url: 2048 characters pass, 2049 are rejected', async () => {
    const head = 'https://example.com/'
    for (const length of [2047, 2048, 2049]) {
      const { message } = await answer({ ...base, page_url: head + 'u'.repeat(length - head.length) })
      if (length <= 2048) expect(message).toBe('Event received')
      else expect(message).toContain('page_url must be at most 2048 characters')
    }
  })

  test('free text over its cap is cut, not rejected', async () => {
    const capped: [string, number][] = [
      ['page_referrer', 2000],
      ['utm_campaign', 2000],
      ['browser', 100],
      ['language', 100],
      ['referrer_domain', 255],
      ['click_element', 500],
      ['click_element_text', 500],
      ['copied_text', 2000],
      ['error_message', 2000],
      ['form_name', 255],
      ['file_extension', 100],
      ['click_target_url', 2048],
    ]
    for (const [field, cap] of capped) {
      for (const length of [cap, cap + 1, cap * 4]) {
        clearRows(t)
        const { message } = await answer({ ...base, [field]: 'x'.repeat(length) })
        expect(message, `${field} ${length}`).toBe('Event received')
        const row = t.events().at(-1)!
        const keys = row['meta.key'] as string[]
        const i = keys.indexOf(field)
        if (i >= 0) expect((row['meta.value'] as string[])[i]!.length, field).toBeLessThanOrEqual(cap)
      }
    }
  })

  test('numbers at their bounds pass, beyond them are rejected, as 422 on a strict site', async () => {
    const ranges: [string, number, number][] = [
      ['scroll_depth', 0, 100],
      ['time_on_page', 0, 2_592_000_000],
      ['lcp', 0, 3_600_000],
      ['cls', 0, 100],
      ['screen_width', 0, 100_000],
      ['click_count', 0, 1_000_000],
      ['click_x', 0, 10_000_000],
    ]
    for (const [field, min, max] of ranges) {
      for (const value of [min, max]) expect((await answer({ ...base, [field]: value })).message).toBe('Event received')
      for (const value of [min - 1, max + 1]) {
        expect((await answer({ ...base, [field]: value })).message).toContain(`${field} must be between`)
        const res = await send(STRICT, { ...base, [field]: value })
        const { status, text } = await checkLynkow(res)
        expect(status).toBe(422)
        expect(JSON.parse(text).errors[0]).toMatchObject({ field, rule: 'range' })
      }
    }
    clearRows(t)
  })
})

test('the heap stays flat over a long run of mixed hostile requests', async () => {
  const bodies = fc.sample(
    fc.oneof(
      plausibleBody.map((b) => [PLAUSIBLE, b] as const),
      lynkowBody.map((b) => [LYNKOW, b] as const),
      fc.uint8Array({ maxLength: 400 }).map((b) => [LYNKOW, b] as const),
    ),
    { numRuns: 500, seed },
  )
  const round = async () => {
    for (const [path, body] of bodies) {
      const res = await send(path, body)
      await res.arrayBuffer()
      expect(res.status).toBeLessThan(500)
    }
    clearRows(t)
  }
  // Warm up: caches, JIT, lazily built tables fill first.
  for (let i = 0; i < 3; i++) await round()
  const before = heapAfterGc()
  for (let i = 0; i < 8; i++) await round()
  const growth = heapAfterGc() - before
  // 4,000 requests; a leak of even 1 KB per request would show as 4 MB.
  expect(growth).toBeLessThan(4 * 1024 * 1024)
})
