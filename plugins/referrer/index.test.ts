// Behaviour of the referrer plugin against spec/plausible-dialect.md §8 (Referrer, referrer_source,
// Data tables, UTM, Acquisition channel) and Plausible's source and acquisition tests.

import { describe, expect, test } from 'bun:test'
import type { AnalyticsEvent } from '../../core/event.ts'
import { contextFor, makeEvent, runPlugin, setupPlugin } from '../../core/testing.ts'
import plugin from './index.ts'

const instance = await setupPlugin(plugin, {})
const ctx = contextFor(plugin)

/** Runs the default instance on one event of the page `https://example.com/`. */
function enrich(fields: Partial<AnalyticsEvent>): AnalyticsEvent {
  const event = makeEvent({ url: 'https://example.com/', hostname: 'example.com', ...fields })
  expect(instance.run?.(event, ctx)).toBeUndefined()
  return event
}

const fromReferrer = (referrerUrl: string, query = '') => enrich({ referrerUrl, query })
const fromQuery = (query: string) => enrich({ query })

describe('referrer', () => {
  test('stores the host without www. and the path without trailing slashes, no query or fragment', () => {
    expect(fromReferrer('https://www.indiehackers.com/page?q=1#h').referrer).toBe('indiehackers.com/page')
    expect(fromReferrer('https://indiehackers.com/a/b//').referrer).toBe('indiehackers.com/a/b')
    expect(fromReferrer('https://indiehackers.com/').referrer).toBe('indiehackers.com')
    expect(fromReferrer('http://indiehackers.com').referrer).toBe('indiehackers.com')
  })

  test('keeps android-app referrers with their scheme', () => {
    expect(fromReferrer('android-app://some.app').referrer).toBe('android-app://some.app')
    expect(fromReferrer('android-app://www.some.app/x/').referrer).toBe('android-app://some.app/x')
  })

  test('drops userinfo and port, keeps the case of the host, accepts an upper-case scheme', () => {
    expect(fromReferrer('HTTPS://user:pw@www.Other.COM:8443/A/').referrer).toBe('Other.COM/A')
  })

  test.each([
    ['ftp scheme', 'ftp://other.com/file'],
    ['javascript scheme', 'javascript:alert(1)'],
    ['no scheme', 'other.com/page'],
    ['relative path', '/page'],
    ['empty host', 'https:///page'],
    ['localhost', 'http://localhost:3000/'],
    ['the page host', 'https://example.com/other'],
    ['the page host with www.', 'https://www.example.com/other'],
    ['empty string', ''],
  ])('is not stored for %s, which gives no source either', (_, referrerUrl) => {
    const event = fromReferrer(referrerUrl)
    expect(event.referrer).toBe('')
    expect(event.referrer_source).toBe('')
  })

  test('compares hosts after removing one www. from each side', () => {
    const event = enrich({ hostname: 'example.com', referrerUrl: 'https://www.www.example.com/' })
    expect(event.referrer).toBe('www.example.com')
    expect(enrich({ hostname: 'www.example.com', referrerUrl: 'https://www.www.example.com/' }).referrer).toBe('')
  })

  test('counts a subdomain of the page host as external', () => {
    const event = fromReferrer('https://blog.example.com/post/')
    expect(event.referrer).toBe('blog.example.com/post')
    expect(event.referrer_source).toBe('blog.example.com')
  })

  test('treats any referrer as external when the page has no host', () => {
    const event = enrich({ hostname: '(none)', url: 'about:config', referrerUrl: 'https://other.com/x' })
    expect(event.referrer).toBe('other.com/x')
  })
})

describe('referrer_source', () => {
  test.each([
    ['utm_source first', 'utm_source=one&source=two&ref=three', 'one'],
    ['then source', 'source=two&ref=three', 'two'],
    ['then ref', 'ref=three', 'three'],
  ])('takes the tagged source: %s', (_, query, expected) => {
    expect(fromReferrer('https://www.google.com/', query).referrer_source).toBe(expected)
  })

  test('an empty tag still wins over the referrer and blanks the source', () => {
    expect(fromReferrer('https://www.google.com/', 'utm_source=').referrer_source).toBe('')
    expect(fromReferrer('https://www.google.com/', 'ref').referrer_source).toBe('')
    expect(fromReferrer('https://www.google.com/', 'utm_source=&ref=x').referrer_source).toBe('')
  })

  test.each([
    ['google', 'Google'],
    ['GOOGLE', 'Google'],
    ['fb', 'Facebook'],
    ['fb-ads', 'Facebook'],
    ['facebook-ads', 'Facebook'],
    ['ig', 'Instagram'],
    ['yt', 'Youtube'],
    ['yt-ads', 'Youtube'],
    ['google_ads', 'Google'],
    ['adwords', 'Google'],
    ['Adwords', 'Google'],
    ['t.me', 'Telegram'],
    ['ya.ru', 'Yandex'],
    ['twitter', 'X (Twitter)'],
    ['x.com', 'X (Twitter)'],
    ['perplexity', 'Perplexity'],
    ['pplx.ai', 'Perplexity'],
    ['wikipedia', 'Wikipedia'],
    ['hacker news', 'Hacker News'],
    ['Newsletter-UK', 'Newsletter-UK'],
    ['my Campaign Source', 'my Campaign Source'],
  ])('maps the tag %p case-insensitively to %p (unmapped values keep their case)', (tag, expected) => {
    expect(fromQuery(`utm_source=${encodeURIComponent(tag)}`).referrer_source).toBe(expected)
  })

  test.each([
    // exact hosts of the custom source table win over the database
    ['https://gemini.google.com/app', 'Google Gemini'],
    ['https://t.me/somechannel', 'Telegram'],
    ['https://ya.ru/', 'Yandex'],
    ['https://x.com/someone', 'X (Twitter)'],
    ['https://pplx.ai/share', 'Perplexity'],
    ['https://perplexity.ai/search', 'Perplexity'],
    ['https://chatgpt.com/', 'ChatGPT'],
    ['https://en.m.wikipedia.org/wiki/X', 'Wikipedia'],
    ['https://bsky.app/profile/x', 'Bluesky'],
    ['https://go.bsky.app/x', 'Bluesky'],
    ['https://www.search.brave.com/search?q=x', 'Brave'],
    ['android-app://com.reddit.frontpage', 'Reddit'],
    // the referrer database, on the host and its parent domains
    ['https://www.google.com/search?q=x', 'Google'],
    ['https://google.co.uk/', 'Google'],
    ['https://mail.google.com/mail/u/0/', 'Gmail'],
    ['android-app://com.google.android.gm', 'Gmail'],
    ['https://m.facebook.com/', 'Facebook'],
    ['https://web.facebook.com/story', 'Facebook'],
    ['https://news.ycombinator.com/item?id=1', 'Hacker News'],
    ['https://duckduckgo.com/', 'DuckDuckGo'],
    ['https://zu.wikipedia.org/wiki/X', 'Wikipedia'],
    ['https://ukc-word-edit.officeapps.live.com/we', 'Microsoft 365'],
    // database names go through the alias table
    ['https://t.co/abc', 'X (Twitter)'],
    ['https://twitter.com/someone', 'X (Twitter)'],
    // the longest host + path entry wins
    ['https://www.google.fr/imgres?imgurl=x', 'Google Images'],
    ['https://images.google.de/', 'Google Images'],
    ['https://www.bing.com/images/search?q=x', 'Bing Images'],
    ['https://www.bing.com/search?q=x', 'Bing'],
    ['https://orange.fr/webmail/inbox', 'Orange Webmail'],
    ['https://orange.fr/webmailer', 'orange.fr'],
    // unknown hosts are stored without www.
    ['https://www.markosaric.com/', 'markosaric.com'],
    ['https://notwikipedia.org/', 'notwikipedia.org'],
    ['https://notofficeapps.live.com/', 'notofficeapps.live.com'],
    ['android-app://some.unknown.app', 'android-app://some.unknown.app'],
  ])('resolves the referrer %p to %p', (referrerUrl, expected) => {
    expect(fromReferrer(referrerUrl).referrer_source).toBe(expected)
  })

  test('is empty without a tag or a valid external referrer', () => {
    expect(fromQuery('').referrer_source).toBe('')
    expect(fromReferrer('https://example.com/').referrer_source).toBe('')
  })
})

describe('UTM tags', () => {
  test('stores utm_source with the source and ref fallbacks, as sent', () => {
    expect(fromQuery('utm_source=fb').utm_source).toBe('fb')
    expect(fromQuery('source=Newsletter').utm_source).toBe('Newsletter')
    expect(fromQuery('ref=producthunt').utm_source).toBe('producthunt')
    expect(fromReferrer('https://www.google.com/').utm_source).toBe('')
  })

  test('stores utm_medium, utm_campaign, utm_content and utm_term verbatim', () => {
    const event = fromQuery(
      'utm_medium=Email&utm_campaign=Spring%20Sale&utm_content=Hero+Button&utm_term=Running%2BShoes',
    )
    expect(event.utm_medium).toBe('Email')
    expect(event.utm_campaign).toBe('Spring Sale')
    expect(event.utm_content).toBe('Hero Button')
    expect(event.utm_term).toBe('Running+Shoes')
  })

  test('form-decodes: malformed escapes stay, the last repeated key wins, a bare key is empty', () => {
    expect(fromQuery('utm_campaign=50%zz+off%').utm_campaign).toBe('50%zz off%')
    expect(fromQuery('utm_campaign=%E2%82%AC%2').utm_campaign).toBe('€%2')
    expect(fromQuery('utm_campaign=first&utm_campaign=second').utm_campaign).toBe('second')
    expect(fromQuery('utm_campaign&utm_term=x').utm_campaign).toBe('')
    expect(fromQuery('utm%5Fcampaign=encoded-key').utm_campaign).toBe('encoded-key')
    expect(fromQuery('utm_campaign=a=b').utm_campaign).toBe('a=b')
  })

  test('leaves absent tags empty', () => {
    const event = fromQuery('foo=bar')
    expect([event.utm_source, event.utm_medium, event.utm_campaign, event.utm_content, event.utm_term]).toEqual([
      '',
      '',
      '',
      '',
      '',
    ])
  })
})

describe('click_id_param', () => {
  test.each([
    ['gclid=abc', 'gclid'],
    ['gbraid=abc', 'gbraid'],
    ['wbraid=abc', 'wbraid'],
    ['msclkid=abc', 'msclkid'],
    ['fbclid=abc', 'fbclid'],
    ['twclid=abc', 'twclid'],
    ['twclid=1&fbclid=1&msclkid=1&wbraid=1&gbraid=1&gclid=1', 'gclid'],
    ['twclid=1&msclkid=1&fbclid=1', 'msclkid'],
    ['gclid', 'gclid'],
    ['gclid=', 'gclid'],
    ['gclidx=1&utm_source=gclid', ''],
  ])('for %p is %p (first present in upstream order, by key presence)', (query, expected) => {
    expect(fromQuery(query).click_id_param).toBe(expected)
  })
})

describe('utm_medium inference (stored, as upstream maybe_infer_medium does)', () => {
  test('Google with gclid and no utm_medium stores (gclid)', () => {
    expect(fromReferrer('https://www.google.com/', 'gclid=x').utm_medium).toBe('(gclid)')
    expect(fromQuery('utm_source=google&gclid=x').utm_medium).toBe('(gclid)')
  })

  test('Bing with msclkid and no utm_medium stores (msclkid)', () => {
    expect(fromReferrer('https://www.bing.com/', 'msclkid=x').utm_medium).toBe('(msclkid)')
  })

  test.each([
    ['an explicit utm_medium', 'https://www.google.com/', 'gclid=x&utm_medium=cpc', 'cpc'],
    ['an empty utm_medium', 'https://www.google.com/', 'gclid=x&utm_medium=', ''],
    ['another source', 'https://duckduckgo.com/', 'gclid=x', ''],
    ['Google with msclkid', 'https://www.google.com/', 'msclkid=x', ''],
    ['Bing with gclid', 'https://www.bing.com/', 'gclid=x', ''],
    ['Bing whose first click id is gclid', 'https://www.bing.com/', 'msclkid=x&gclid=y', ''],
  ])('does not happen with %s', (_, referrerUrl, query, expected) => {
    expect(fromReferrer(referrerUrl, query).utm_medium).toBe(expected)
  })
})

describe('acquisition_channel: every rule, each case hitting it and no earlier one', () => {
  test.each([
    ['Cross-network', 'utm_campaign=Cross-Network-Q3&utm_medium=cpc&utm_source=google', ''],
    ['Paid Shopping', 'utm_source=shopify&utm_medium=paid', ''],
    ['Paid Shopping', 'utm_campaign=summer-shop&utm_medium=ppc', ''],
    ['Paid Shopping', 'utm_campaign=shopping&utm_medium=paid', ''],
    ['Paid Search', 'utm_medium=paid', 'https://duckduckgo.com/'],
    ['Paid Search', 'utm_source=google_ads', ''],
    ['Paid Search', 'utm_source=Adwords', ''],
    ['Paid Search', 'gclid=1', 'https://www.google.com/'],
    ['Paid Search', 'msclkid=1', 'https://www.bing.com/'],
    ['Paid Social', 'utm_medium=paid', 'https://www.tiktok.com/'],
    ['Paid Social', 'utm_source=fb-ads', ''],
    ['Paid Social', 'utm_source=Reddit-ads', ''],
    ['Paid Social', 'utm_source=twitter-ads', ''],
    ['Paid Video', 'utm_medium=paid', 'https://www.youtube.com/'],
    ['Paid Video', 'utm_source=yt-ads', ''],
    ['Display', 'utm_medium=banner', ''],
    ['Display', 'utm_medium=display', 'https://www.google.com/'],
    ['Paid Other', 'utm_medium=cpc', ''],
    ['Paid Other', 'utm_medium=retargeting', ''],
    ['Organic Shopping', '', 'https://walmart.com/'],
    ['Organic Shopping', 'utm_source=walmart', ''],
    ['Organic Shopping', 'utm_campaign=shop', ''],
    ['Organic Shopping', 'utm_campaign=e-shop', ''],
    ['Organic Shopping', '', 'https://temu.com/'],
    ['Organic Social', '', 'https://www.facebook.com/'],
    ['Organic Social', 'utm_source=twitter', ''],
    ['Organic Social', 'utm_medium=social', ''],
    ['Organic Social', '', 'https://news.ycombinator.com/'],
    ['Organic Social', 'utm_source=ig', ''],
    ['Organic Social', '', 'https://t.me/x'],
    ['Organic Video', '', 'https://vimeo.com/'],
    ['Organic Video', 'utm_source=yt', ''],
    ['Organic Video', 'utm_medium=video', ''],
    ['AI Assistants', '', 'https://chatgpt.com/'],
    ['AI Assistants', '', 'https://claude.ai/chat'],
    ['AI Assistants', '', 'https://gemini.google.com/'],
    ['AI Assistants', 'utm_source=perplexity', ''],
    ['Organic Search', '', 'https://duckduckgo.com/'],
    ['Organic Search', 'gclid=1', 'https://duckduckgo.com/'],
    ['Organic Search', 'msclkid=1', 'https://duckduckgo.com/'],
    ['Organic Search', '', 'https://www.google.co.uk/'],
    ['Organic Search', '', 'https://search.brave.com/'],
    ['Organic Search', '', 'https://www.ecosia.org/'],
    ['Email', '', 'https://mail.google.com/'],
    ['Email', 'utm_source=Newsletter-UK', ''],
    ['Email', 'utm_medium=e-mail', ''],
    ['Affiliates', 'utm_medium=affiliate', ''],
    ['Audio', 'utm_medium=audio', ''],
    ['SMS', 'utm_source=sms', ''],
    ['SMS', 'utm_medium=SMS', ''],
    ['Mobile Push Notifications', 'utm_medium=app-push', ''],
    ['Mobile Push Notifications', 'utm_medium=example-mobile', ''],
    ['Mobile Push Notifications', 'utm_medium=notification', ''],
    ['Mobile Push Notifications', 'utm_source=firebase', ''],
    ['Referral', 'utm_medium=referral', ''],
    ['Referral', 'utm_medium=link', ''],
    ['Referral', '', 'https://othersite.com/'],
    ['Referral', '', 'https://en.wikipedia.org/'],
    ['Referral', 'utm_source=linktree', ''],
    ['Direct', '', ''],
    ['Direct', 'utm_campaign=workshop', ''],
    ['Direct', 'utm_medium=sppc', ''],
  ])('%s for query %p and referrer %p', (expected, query, referrerUrl) => {
    expect(fromReferrer(referrerUrl, query).acquisition_channel).toBe(expected)
  })

  test('reads the patterns as anchored single-line matches', () => {
    // `$` may stand before one final newline; `.` never crosses one.
    expect(fromQuery('utm_medium=cpc%0A').acquisition_channel).toBe('Paid Other')
    expect(fromQuery('utm_medium=cpc%0Ax').acquisition_channel).toBe('Direct')
    expect(fromQuery('utm_campaign=x%0Ashop').acquisition_channel).toBe('Organic Shopping')
    expect(fromQuery('utm_campaign=x%0Ashop%0Ay').acquisition_channel).toBe('Direct')
  })
})

describe('options', () => {
  test('customSources map hosts and tags case-insensitively; a key ending in ads marks a paid tag', async () => {
    const options = {
      customSources: { 'News.Example.com': 'Example News', 'exnews-ads': 'Example News' },
      sourceCategories: { 'Example News': 'social' },
    }
    const byHost = await runPlugin(plugin, options, {
      hostname: 'example.org',
      referrerUrl: 'https://news.example.com/a',
    })
    expect(byHost.event.referrer_source).toBe('Example News')
    expect(byHost.event.acquisition_channel).toBe('Organic Social')
    const byTag = await runPlugin(plugin, options, { hostname: 'example.org', query: 'utm_source=EXNEWS-ADS' })
    expect(byTag.event.referrer_source).toBe('Example News')
    expect(byTag.event.acquisition_channel).toBe('Paid Social')
  })

  test.each([
    ['an unknown option', { lists: [] }],
    ['a negative cacheSize', { cacheSize: -1 }],
    ['an unknown category', { sourceCategories: { x: 'news' } }],
  ])('rejects %s', async (_, options) => {
    await expect(setupPlugin(plugin, options)).rejects.toThrow()
  })

  test('gives the same answers with the cache off or overflowing', async () => {
    const referrers = [
      'https://www.google.fr/imgres?x',
      'https://www.google.fr/search',
      'https://mail.google.com/',
      'https://unknown.example.net/',
      'https://www.google.fr/imgres?x',
      'https://mail.google.com/',
    ]
    const expected = referrers.map((r) => fromReferrer(r).referrer_source)
    for (const cacheSize of [0, 1, 2]) {
      const small = await setupPlugin(plugin, { cacheSize })
      const got = referrers.map((referrerUrl) => {
        const event = makeEvent({ hostname: 'example.com', referrerUrl })
        small.run?.(event, ctx)
        return event.referrer_source
      })
      expect(got).toEqual(expected)
    }
  })
})

describe('robustness', () => {
  test('keeps no state from one event to the next', () => {
    fromReferrer('android-app://com.google.android.gm', 'utm_medium=x&gclid=1')
    const next = fromQuery('')
    expect([
      next.referrer,
      next.referrer_source,
      next.utm_medium,
      next.click_id_param,
      next.acquisition_channel,
    ]).toEqual(['', '', '', '', 'Direct'])
  })

  test.each([
    ['http://[::1]:80/x', ''],
    ['https://[2001:db8::1]/p', ''],
    ['https://a@b@c.com:x/p', ''],
    ['https://%%%/', 'utm_source=%'],
    ['https://\u00e9xample.com/\ud800', 'utm_source=%E0%A4%A&utm_term=\ud800'],
    [`https://${'a'.repeat(5000)}.com/`, '&&&=&=x&utm_source'],
    ['https://other.com ', '==&utm_medium=%FF%FE'],
    ['   https://other.com', 'utm_campaign=%0A%0A%0A'],
  ])('never throws on odd input (%#)', (referrerUrl, query) => {
    expect(() => fromReferrer(referrerUrl, query)).not.toThrow()
  })

  test('splits odd authorities like upstream', () => {
    expect(fromReferrer('https://[2001:db8::1]:8080/p/').referrer).toBe('2001:db8::1/p')
    expect(fromReferrer('https://a@b@c.com:99/p').referrer).toBe('c.com/p')
    // Leading blanks leave no scheme. A trailing blank after the host is trimmed from the source name,
    // but upstream's database lookup sees the untrimmed host and so finds nothing.
    expect(fromReferrer('  https://other.com').referrer).toBe('')
    expect(fromReferrer('https://www.google.com ').referrer_source).toBe('google.com')
  })
})

test('UTM values a dialect set from its body win over the page query', async () => {
  const { event } = await runPlugin(
    plugin,
    {},
    {
      url: 'https://example.com/?utm_source=q&utm_medium=qm&utm_campaign=qc',
      query: 'utm_source=q&utm_medium=qm&utm_campaign=qc&utm_term=qt',
      hostname: 'example.com',
      utm_source: 'body',
      utm_medium: 'email',
      utm_content: 'bc',
    },
  )
  expect([event.utm_source, event.utm_medium, event.utm_campaign, event.utm_content, event.utm_term]).toEqual([
    'body',
    'email',
    'qc',
    'bc',
    'qt',
  ])
  expect(event.referrer_source).toBe('body')
  expect(event.acquisition_channel).toBe('Email')
})

describe('the kept results (cacheSize)', () => {
  const FIELDS = [
    'referrer',
    'referrer_source',
    'utm_source',
    'utm_medium',
    'utm_campaign',
    'utm_content',
    'utm_term',
    'click_id_param',
    'acquisition_channel',
  ] as const

  test('a combination seen before gets exactly what a fresh computation gives, presets and near-alike keys included', async () => {
    const cached = await setupPlugin(plugin, {})
    const fresh = await setupPlugin(plugin, { cacheSize: 0 })
    const cases: Partial<AnalyticsEvent>[] = [
      { hostname: 'example.com', referrerUrl: 'https://www.google.com/', query: '' },
      // Concatenated without lengths, these two pairs would make one key with different results.
      { hostname: 'example.com', referrerUrl: 'https://news.ycombinator.com/', query: 'utm_source=x' },
      { hostname: 'example.com', referrerUrl: 'https://news.ycombinator.com/utm_source=x', query: '' },
      { hostname: 'example.co', referrerUrl: 'mhttps://other.com/', query: '' },
      { hostname: 'example.com', referrerUrl: 'https://other.com/', query: '' },
      // The page host decides whether a referrer is external.
      { hostname: 'other.com', referrerUrl: 'https://other.com/', query: '' },
      { hostname: 'example.com', referrerUrl: '', query: 'utm_source=newsletter&utm_medium=email&utm_campaign=c1' },
      { hostname: 'example.com', referrerUrl: 'https://www.google.com/', query: 'gclid=abc' },
      { hostname: 'example.com', referrerUrl: 'https://www.bing.com/', query: 'msclkid=1&utm_term=t' },
      // Values a dialect set before the plugin (Lynkow's body UTM) win, whatever was kept.
      {
        hostname: 'example.com',
        referrerUrl: 'https://www.google.com/',
        query: '',
        utm_source: 'body',
        utm_medium: 'cpc',
      },
      { hostname: 'example.com', referrerUrl: '', query: 'utm_source=newsletter', utm_campaign: 'from-body' },
    ]
    for (let round = 0; round < 3; round++) {
      for (const fields of round === 1 ? [...cases].reverse() : cases) {
        const a = makeEvent({ url: `https://${fields.hostname}/`, ...fields })
        const b = makeEvent({ url: `https://${fields.hostname}/`, ...fields })
        cached.run?.(a, ctx)
        fresh.run?.(b, ctx)
        for (const field of FIELDS) expect(`${field}: ${a[field]}`).toBe(`${field}: ${b[field]}`)
      }
    }
  })
})
