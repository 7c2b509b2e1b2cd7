// Behaviour of bots from spec/plausible-dialect.md §8: known bots, crawlers and HeadlessChrome drop
// the event as `bot`; a missing, empty or unrecognised user agent does not.

import { describe, expect, test } from 'bun:test'
import { list as isbotList } from 'isbot'
import { ConfigError } from '../../core/plugin.ts'
import { runPlugin, setupPlugin } from '../../core/testing.ts'
import plugin, { namedBotPatterns } from './index.ts'

async function verdict(userAgent: string, options: unknown = {}) {
  return (await runPlugin(plugin, options, { userAgent })).dropped
}

describe('drops bot', () => {
  test.each([
    ['Googlebot', 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'],
    ['Bingbot', 'Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)'],
    ['a crawler', 'Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)'],
    ['a social preview fetcher', 'facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)'],
    [
      'an AI crawler',
      'Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)',
    ],
    ['curl', 'curl/8.4.0'],
    ['python-requests', 'python-requests/2.31.0'],
    [
      'HeadlessChrome',
      'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/85.0.4183.83 Safari/537.36',
    ],
  ])('drops bot when the user agent is %s', async (_name, ua) => {
    expect(await verdict(ua)).toBe('bot')
  })

  test('drops bot when an extra pattern matches', async () => {
    expect(await verdict('AcmeMonitor/3.1 (uptime)', { patterns: ['^acmemonitor/'] })).toBe('bot')
  })
})

describe('keeps', () => {
  test.each([
    ['an empty user agent', ''],
    ['Mozilla', 'Mozilla'],
    ['Mozilla/5.0', 'Mozilla/5.0'],
    ['unknown UA', 'unknown UA'],
    ['8 KB of a', 'a'.repeat(8192)],
    ['a single word', 'test'],
    ['digits', '12345'],
    [
      'Chrome on Windows',
      'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    ],
    [
      'Safari on iPhone',
      'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1',
    ],
    ['Firefox on Android', 'Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0'],
    [
      'an Android WebView',
      'Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230901.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/118.0.0.0 Mobile Safari/537.36',
    ],
  ])('%s', async (_name, ua) => {
    expect(await verdict(ua)).toBeUndefined()
  })
})

test('only shape rules are left out of isbot: every named pattern stays', () => {
  const named = namedBotPatterns()
  const left = isbotList.filter((p) => !named.includes(p))
  expect(left.length).toBeGreaterThan(0)
  expect(left.length).toBeLessThan(20)
  // A left-out rule names nothing: beyond `mozilla` and `compatible`, no word outside classes and escapes.
  for (const source of left) {
    const words = source
      .toLowerCase()
      .replace(/\[[^\]]*\]/g, '')
      .replace(/\\./g, '')
      .replace(/mozilla|compatible/g, '')
    expect(words).not.toMatch(/[a-z]{4}/)
  }
})

test('cached and uncached verdicts agree', async () => {
  for (const ua of ['curl/8.4.0', 'Mozilla', 'Googlebot/2.1']) {
    expect(await verdict(ua, { cacheSize: 0 })).toBe(await verdict(ua))
  }
})

test('a bad extra pattern is a ConfigError at its index', async () => {
  const error = await setupPlugin(plugin, { patterns: ['ok', '(unclosed'] }).catch((e: unknown) => e)
  expect(error).toBeInstanceOf(ConfigError)
  expect((error as ConfigError).path).toBe('patterns[1]')
})

test.each([['curl/8.4.0'], ['Googlebot/2.1 (+http://www.google.com/bot.html)'], ['HeadlessChrome/120.0']])(
  'keeps a trusted sender’s event whatever its user agent (%s)',
  async (userAgent) => {
    expect(
      (await runPlugin(plugin, { patterns: ['curl'] }, { userAgent, trustedSender: true })).dropped,
    ).toBeUndefined()
    expect((await runPlugin(plugin, {}, { userAgent })).dropped).toBe('bot')
  },
)
