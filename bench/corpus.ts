// A realistic request corpus for the benchmark, generated from a fixed seed so every run replays the
// same traffic: ~2,000 user agents with a Zipf-like repeat rate, ~100,000 client IPs, several sites,
// page views with referrers and UTM tags, custom events with props, engagement after page views,
// and about 5% bots and spam referrers.

/** A small, fast, seedable PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface CorpusRequest {
  path: string
  ip: string
  ua: string
  body: string
}

export const SITES = ['shop.example', 'blog.example', 'docs.example', 'news.example', 'app.example']
export const SPAM_HOSTS = ['spam-seo.example', 'free-traffic.example', 'buttons-for-site.example']

const BROWSERS = [
  (v: number) =>
    `Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${v}.0.${v * 37}.${v % 90} Safari/537.36`,
  (v: number) =>
    `Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_${v % 8}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/${(v % 6) + 13}.${v % 4} Safari/605.1.15`,
  (v: number) => `Mozilla/5.0 (X11; Linux x86_64; rv:${v}.0) Gecko/20100101 Firefox/${v}.0`,
  (v: number) =>
    `Mozilla/5.0 (iPhone; CPU iPhone OS ${(v % 6) + 12}_${v % 5} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/${(v % 6) + 12}.${v % 5} Mobile/15E148 Safari/604.1`,
  (v: number) =>
    `Mozilla/5.0 (Linux; Android ${(v % 7) + 8}; SM-G${900 + (v % 99)}F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${v}.0.${v * 41}.${v % 70} Mobile Safari/537.36`,
  (v: number) =>
    `Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${v}.0.0.0 Safari/537.36 Edg/${v}.0.${v * 13}.${v % 50}`,
  (v: number) =>
    `Mozilla/5.0 (iPad; CPU OS ${(v % 5) + 13}_${v % 3} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/${(v % 5) + 13}.0 Mobile/15E148 Safari/604.1`,
]
const BOTS = [
  'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
  'Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)',
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36',
  'curl/8.4.0',
  'python-requests/2.31.0',
]
const REFERRERS = [
  'https://www.google.com/',
  'https://www.bing.com/search?q=x',
  'https://t.co/abc',
  'https://www.facebook.com/',
  'https://news.ycombinator.com/item?id=1',
  'https://duckduckgo.com/',
  'https://github.com/some/repo',
  '',
  '',
  '',
]
const PATHS = [
  '/',
  '/pricing',
  '/blog/how-we-built-it',
  '/docs/getting-started',
  '/about',
  '/products/42',
  '/cart',
  '/signup',
]
const EVENTS = ['Signup', 'Purchase', 'Outbound Link: Click', 'File Download', 'Search']

/** Zipf-like pick over n items: low indexes come back far more often. */
function zipf(random: () => number, n: number): number {
  return Math.min(n - 1, Math.floor(n ** random() - 1))
}

export function generateCorpus(size = 200_000, seed = 42): CorpusRequest[] {
  const out: CorpusRequest[] = []
  for (const r of corpusStream(seed)) {
    if (out.length === size) break
    out.push(r)
  }
  return out
}

/**
 * The corpus one request at a time, endless: `generateCorpus(n, seed)` is its first n requests. With
 * `site`, every request is for that site (the random draws stay the same), so a bench can give a
 * visitor more requests of its own site without holding the corpus (bench/memory.ts).
 */
export function* corpusStream(seed = 42, site?: string): Generator<CorpusRequest, never> {
  const random = rng(seed)
  const uas = Array.from({ length: 2000 }, (_, i) => BROWSERS[i % BROWSERS.length]!(60 + (i % 61)))
  const pick = <T>(list: readonly T[]) => list[Math.floor(random() * list.length)]!
  for (;;) {
    const ipN = Math.floor(random() * 100_000)
    const ip = `10.${(ipN >> 16) & 255}.${(ipN >> 8) & 255}.${ipN & 255}`
    const drawn = SITES[zipf(random, SITES.length)]!
    const host = site ?? drawn
    const roll = random()
    if (roll < 0.03) {
      yield {
        path: '/api/event',
        ip,
        ua: pick(BOTS),
        body: JSON.stringify({ n: 'pageview', u: `https://${host}/`, d: host, r: null }),
      }
      continue
    }
    const ua = uas[zipf(random, uas.length)]!
    const path = pick(PATHS)
    if (roll < 0.05) {
      const body = { n: 'pageview', u: `https://${host}${path}`, d: host, r: `https://${pick(SPAM_HOSTS)}/` }
      yield { path: '/api/event', ip, ua, body: JSON.stringify(body) }
      continue
    }
    const utm =
      random() < 0.2 ? `?utm_source=newsletter&utm_medium=email&utm_campaign=c${Math.floor(random() * 20)}` : ''
    const page = `https://${host}${path}${utm}`
    yield {
      path: '/api/event',
      ip,
      ua,
      body: JSON.stringify({ n: 'pageview', v: 36, u: page, d: host, r: pick(REFERRERS) || null }),
    }
    if (random() < 0.3) {
      const props = { plan: pick(['free', 'pro', 'team']), seats: Math.floor(random() * 50), trial: random() < 0.5 }
      yield {
        path: '/api/event',
        ip,
        ua,
        body: JSON.stringify({ n: pick(EVENTS), v: 36, u: page, d: host, r: null, p: props }),
      }
    }
    if (random() < 0.6) {
      const body = {
        n: 'engagement',
        sd: Math.floor(random() * 100),
        d: host,
        u: page,
        e: Math.floor(random() * 60_000),
        v: 36,
      }
      yield { path: '/api/event', ip, ua, body: JSON.stringify(body) }
    }
  }
}

/** The corpus as wrk reads it: one request per line, `ip \t ua \t body`. */
export function corpusLines(corpus: CorpusRequest[]): string {
  return `${corpus.map((r) => `${r.ip}\t${r.ua}\t${r.body}`).join('\n')}\n`
}
