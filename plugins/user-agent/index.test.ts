// Behaviour of user-agent from spec/plausible-dialect.md §8: Plausible's (Device Detector's) names,
// its renames, `major.minor` versions and device classes, on real user agents.

import { describe, expect, test } from 'bun:test'
import { BoundedCache } from '../../core/cache.ts'
import { contextFor, makeEvent, runPlugin, setupPlugin } from '../../core/testing.ts'
import plugin from './index.ts'
import { majorMinor } from './names.ts'

type Row = [ua: string, browser: string, browserVersion: string, os: string, osVersion: string, screen: string]

// Expected values: Plausible's own test (the first row), and Device Detector's answers with
// Plausible's renames (spec §8) for the rest.
// biome-ignore format: one user agent and its five expected fields per row read as a table
const REAL_AGENTS: Row[] = [
  [
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_13_6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Safari/537.36',
    'Chrome', '70.0', 'Mac', '10.13', 'Desktop',
  ],
  [
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    'Chrome', '124.0', 'Windows', '10', 'Desktop',
  ],
  [
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80',
    'Microsoft Edge', '124.0', 'Windows', '10', 'Desktop',
  ],
  [
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0',
    'Firefox', '125.0', 'Windows', '10', 'Desktop',
  ],
  [
    'Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko',
    'Internet Explorer', '11.0', 'Windows', '7', 'Desktop',
  ],
  [
    'Mozilla/5.0 (Windows NT 6.3; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36 OPR/95.0.0.0',
    'Opera', '95.0', 'Windows', '8.1', 'Desktop',
  ],
  [
    'Mozilla/5.0 (Windows NT 5.1; rv:52.0) Gecko/20100101 Firefox/52.0',
    'Firefox', '52.0', 'Windows', 'XP', 'Desktop',
  ],
  [
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15',
    'Safari', '17.4', 'Mac', '10.15', 'Desktop',
  ],
  [
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Vivaldi/6.7.3329.21',
    'Vivaldi', '6.7', 'Mac', '10.15', 'Desktop',
  ],
  [
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    'Chrome', '124.0', 'GNU/Linux', '', 'Desktop',
  ],
  [
    'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0',
    'Firefox', '125.0', 'Ubuntu', '', 'Desktop',
  ],
  [
    'Mozilla/5.0 (X11; FreeBSD amd64; rv:109.0) Gecko/20100101 Firefox/115.0',
    'Firefox', '115.0', 'FreeBSD', '', 'Desktop',
  ],
  [
    'Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    'Chrome', '124.0', 'Chrome OS', '14541.0', 'Desktop',
  ],
  [
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1',
    'Safari', '17.4', 'iOS', '17.4', 'Mobile',
  ],
  [
    'Mozilla/5.0 (iPad; CPU OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1',
    'Safari', '17.4', 'iPadOS', '17.4', 'Tablet',
  ],
  [
    'Mozilla/5.0 (iPod touch; CPU iPhone OS 15_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.6 Mobile/15E148 Safari/604.1',
    'Safari', '15.6', 'iOS', '15.7', 'Mobile',
  ],
  [
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1',
    'Chrome', '124.0', 'iOS', '17.4', 'Mobile',
  ],
  [
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15',
    'Firefox', '125.0', 'iOS', '17.4', 'Mobile',
  ],
  [
    'Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36',
    'Chrome', '124.0', 'Android', '14', 'Mobile',
  ],
  [
    'Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    'Chrome', '124.0', 'Android', '13', 'Tablet',
  ],
  [
    'Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0',
    'Firefox', '125.0', 'Android', '14', 'Mobile',
  ],
  [
    'Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36',
    'Samsung Browser', '24.0', 'Android', '14', 'Mobile',
  ],
  [
    'Mozilla/5.0 (Linux; Android 12; M2101K6G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 YaBrowser/24.4.3.82.00 SA/3 Mobile Safari/537.36',
    'Yandex Browser', '24.4', 'Android', '12', 'Mobile',
  ],
  [
    'Mozilla/5.0 (Linux; U; Android 10; en-US; RMX2020 Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.108 UCBrowser/13.4.0.1306 Mobile Safari/537.36',
    'UC Browser', '13.4', 'Android', '10', 'Mobile',
  ],
  [
    'Opera/9.80 (Android; Opera Mini/36.2.2254/119.132; U; id) Presto/2.12.423 Version/12.16',
    'Opera', '36.2', 'Android', '', 'Mobile',
  ],
  [
    'Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile DuckDuckGo/5 Safari/537.36',
    'DuckDuckGo Privacy Browser', '5', 'Android', '14', 'Mobile',
  ],
  [
    'Mozilla/5.0 (Linux; U; Android 4.0.3; de-de; Galaxy S II Build/GRJ22) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30',
    'Android Browser', '4.0', 'Android', '4.0', 'Mobile',
  ],
  [
    'Mozilla/5.0 (Linux; Android 10; HarmonyOS; ALN-AL00; HMSCore 6.13.0.302) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.88 HuaweiBrowser/14.0.5.302 Mobile Safari/537.36',
    'Huawei Browser', '14.0', 'HarmonyOS', '', 'Mobile',
  ],
  // Chrome WebView: Mobile App, keeping its version.
  [
    'Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230901.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/118.0.0.0 Mobile Safari/537.36',
    'Mobile App', '118.0', 'Android', '13', 'Mobile',
  ],
  // In-app browsers: Mobile App without a version.
  [
    'Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230901.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/118.0.0.0 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/440.0.0.33.116;]',
    'Mobile App', '', 'Android', '13', 'Mobile',
  ],
  [
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 326.0.3.30.91 (iPhone14,5; iOS 17_4; en_US; en; scale=3.00; 1170x2532; 584948123)',
    'Mobile App', '', 'iOS', '17.4', 'Mobile',
  ],
  [
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/310.0.621847448 Mobile/15E148 Safari/604.1',
    'Mobile App', '', 'iOS', '17.4', 'Mobile',
  ],
  [
    'Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36',
    'Samsung Browser', '4.0', 'Tizen', '6.0', 'Desktop',
  ],
  // Headless Chrome is named here; the bots plugin drops it.
  [
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/85.0.4183.83 Safari/537.36',
    'Headless Chrome', '85.0', 'GNU/Linux', '', 'Desktop',
  ],
]

async function parse(userAgent: string, options: unknown = {}) {
  const { event } = await runPlugin(plugin, options, { userAgent })
  return [
    event.browser,
    event.browser_version,
    event.operating_system,
    event.operating_system_version,
    event.screen_size,
  ]
}

test.each(REAL_AGENTS)('%s', async (ua, browser, browserVersion, os, osVersion, screen) => {
  expect(await parse(ua)).toEqual([browser, browserVersion, os, osVersion, screen])
})

describe('device classes', () => {
  test.each([
    [
      'a console',
      'Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15',
      'Desktop',
    ],
    [
      'a wearable',
      'Mozilla/5.0 (Linux; Android 12; SM-R910) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Mobile Safari/537.36',
      'Mobile',
    ],
    [
      'a car browser',
      'Mozilla/5.0 (X11; GNU/Linux) AppleWebKit/537.36 (KHTML, like Gecko) Chromium/79.0.3945.130 Chrome/79.0.3945.130 Safari/537.36 Tesla/2024.14.6-1f7b0f5e0e',
      'Tablet',
    ],
    [
      'an Amazon tablet',
      'Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/124.2.5 like Chrome/124.0.6367.179 Safari/537.36',
      'Tablet',
    ],
    [
      'a Windows 8 touch device',
      'Mozilla/5.0 (Windows NT 6.2; Win64; x64; Trident/7.0; Touch; rv:11.0) like Gecko',
      'Tablet',
    ],
  ])('%s', async (_name, ua, screen) => {
    const [, , , , size] = await parse(ua)
    expect(size).toBe(screen)
  })
})

describe('what is not a parse', () => {
  test('an empty user agent leaves every field empty', async () => {
    expect(await parse('')).toEqual(['', '', '', '', ''])
  })

  test.each([['Mozilla'], ['unknown UA'], ['a'.repeat(8192)]])(
    'an unrecognised string (%#) gives empty fields',
    async (ua) => {
      expect(await parse(ua)).toEqual(['', '', '', '', ''])
    },
  )

  test("fields the parse does not find keep a dialect's values (Lynkow's client-sent browser/os)", async () => {
    const fields = { browser: 'Firefox', browser_version: '120.0', operating_system: 'Linux', screen_size: 'Desktop' }
    const { event } = await runPlugin(plugin, {}, { ...fields, userAgent: 'unknown UA' })
    expect([event.browser, event.browser_version, event.operating_system, event.screen_size]).toEqual([
      'Firefox',
      '120.0',
      'Linux',
      'Desktop',
    ])
  })

  test('a parse that finds the browser overrides the dialect', async () => {
    const ua = REAL_AGENTS[1]![0]
    const { event } = await runPlugin(plugin, {}, { userAgent: ua, browser: 'Firefox', browser_version: '1.0' })
    expect([event.browser, event.browser_version]).toEqual(['Chrome', '124.0'])
  })
})

describe('long user agents', () => {
  test('only the first maxLength characters count', async () => {
    const ua = REAL_AGENTS[0]![0]
    const padded = ua + ' Firefox/125.0'.repeat(100)
    expect(await parse(padded, { maxLength: ua.length })).toEqual(await parse(ua))
  })

  test('a 1 MB user agent costs about what a short one does', async () => {
    const instance = await setupPlugin(plugin, { cacheSize: 0 })
    const ctx = contextFor(plugin)
    const huge = `Mozilla/5.0 (${'x; '.repeat(350_000)})`
    const started = performance.now()
    for (let i = 0; i < 20; i++) instance.run?.(makeEvent({ userAgent: huge }), ctx)
    expect(performance.now() - started).toBeLessThan(200)
  })
})

test('the same user agent gives the same answer from the cache and without it', async () => {
  for (const [ua] of REAL_AGENTS.slice(0, 5)) {
    expect(await parse(ua, { cacheSize: 0 })).toEqual(await parse(ua))
  }
})

test.each([
  ['70.0.3538.110', '70.0'],
  ['11', '11'],
  ['17.4', '17.4'],
  ['', ''],
  [undefined, ''],
])('majorMinor(%p) = %p', (version, expected) => {
  expect(majorMinor(version)).toBe(expected)
})

test('options are validated', async () => {
  await expect(setupPlugin(plugin, { maxLength: 10 })).rejects.toThrow()
  await expect(setupPlugin(plugin, { cache: 1 })).rejects.toThrow()
})

test('BoundedCache never holds more than its capacity and keeps entries in use', () => {
  const cache = new BoundedCache<number>(100)
  for (let i = 0; i < 10_000; i++) {
    cache.set(`k${i}`, i)
    expect(cache.get('k0') ?? 0).toBe(0)
    expect(cache.size).toBeLessThanOrEqual(100)
  }
  expect(cache.get('k0')).toBe(0)
  expect(cache.get('k5000')).toBeUndefined()
})
