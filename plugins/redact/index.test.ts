import { expect, test } from 'bun:test'
import { runPlugin } from '../../core/testing.ts'
import plugin from './index.ts'
import { createRedactor } from './redactor.ts'

const redact = createRedactor({ emails: true, tokens: true, minTokenLength: 32, queryKeys: ['token', 'email'] })

test.each([
  ['/users/jane.doe@example.com/settings', '/users/[email]/settings'],
  ['/users/jane.doe%40example.co.uk', '/users/[email]'],
  ['write to a+b@mail.example.org now', 'write to [email] now'],
  ['/reset/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc_def-123', '/reset/[token]'],
  ['/s/4f9c2b7e1d8a6f3b0c5e9a7d2b4f6e8a', '/s/[token]'],
  ['https://a.example/p?token=abc&x=1', 'https://a.example/p?token=[redacted]&x=1'],
  ['https://a.example/p?x=1&EMAIL=j%40x.io#top', 'https://a.example/p?x=1&EMAIL=[redacted]#top'],
  ['/blog/how-we-built-a-very-long-readable-slug-for-seo', '/blog/how-we-built-a-very-long-readable-slug-for-seo'],
  ['/products/000000000000000000000000000000000000', '/products/000000000000000000000000000000000000'],
  ['/short/abc123', '/short/abc123'],
  ['', ''],
])('%s → %s', (input, expected) => {
  expect(redact(input)).toBe(expected)
})

test('redacts every client-controlled stored field', async () => {
  const { event, dropped } = await runPlugin(
    plugin,
    {},
    {
      pathname: '/u/a@b.example',
      referrer: 'mail.example/inbox/jo@b.example',
      utm_source: 'newsletter',
      utm_content: 'x@y.example',
      props: { url: 'https://s.example/?token=s3cr3t', note: 'plain' },
    },
  )
  expect(dropped).toBeUndefined()
  expect(event.pathname).toBe('/u/[email]')
  expect(event.referrer).toBe('mail.example/inbox/[email]')
  expect(event.utm_source).toBe('newsletter')
  expect(event.utm_content).toBe('[email]')
  expect(event.props).toEqual({ url: 'https://s.example/?token=[redacted]', note: 'plain' })
})

test('options turn rules off', async () => {
  const { event } = await runPlugin(
    plugin,
    { emails: false, tokens: false, queryKeys: [] },
    {
      pathname: '/u/a@b.example/4f9c2b7e1d8a6f3b0c5e9a7d2b4f6e8a',
    },
  )
  expect(event.pathname).toBe('/u/a@b.example/4f9c2b7e1d8a6f3b0c5e9a7d2b4f6e8a')
})

test('worst-case inputs stay linear (ReDoS budget)', () => {
  const inputs = [
    `${'a'.repeat(100_000)}@`,
    `${'a.'.repeat(50_000)}@x`,
    `a@${'b.'.repeat(50_000)}`,
    `eyJ${'a'.repeat(100_000)}.`,
    `?token=${'x'.repeat(100_000)}`,
    `${'a@'.repeat(50_000)}`,
  ]
  for (const input of inputs) {
    const started = performance.now()
    redact(input)
    expect(performance.now() - started).toBeLessThan(250)
  }
})
