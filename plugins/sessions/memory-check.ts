// Measures the memory of idle sessions (design goal: a million idle sessions within a few hundred MB).
//
//   bun plugins/sessions/memory-check.ts [sessions] [distinct pages]
//
// Starts that many sessions through the plugin, one pageview each, and reports the heap growth per
// session after a full GC. Pages cycle through `distinct pages` paths (default: every session its
// own path, the worst case for sharing); attributions cycle through 1,000 combinations.

import { heapStats } from 'bun:jsc'
import { AnalyticsEvent } from '../../core/event.ts'
import { contextFor, setupPlugin } from '../../core/testing.ts'
import plugin from './index.ts'

export interface MemoryReport {
  sessions: number
  heapBytesPerSession: number
  heapMB: number
  rssMB: number
  nsPerEvent: number
  /** Heap and RSS growth left once every session has expired (two timeouts of event time later). */
  heapMBAfterExpiry: number
  rssMBAfterExpiry: number
}

export async function measureSessions(count: number, distinctPages = count): Promise<MemoryReport> {
  const instance = await setupPlugin(plugin, { maxSessions: count, snapshot: false })
  const ctx = contextFor(plugin)
  const browsers = ['Chrome', 'Firefox', 'Safari', 'Edge', 'Opera']
  const countries = ['DE', 'US', 'FR', 'GB', 'EE', 'JP', 'BR', 'IN']
  const sources = ['', 'Google', 'Bing', 'Facebook', 'Newsletter']
  const settle = () => {
    Bun.gc(true)
    return { heap: heapStats().heapSize, rss: process.memoryUsage().rss }
  }
  const ids = new BigUint64Array(count)
  crypto.getRandomValues(ids)
  const before = settle()
  const started = performance.now()
  for (let i = 0; i < count; i++) {
    // A fresh event per session, as the engine makes one per request; only the session keeps anything.
    const event = new AnalyticsEvent()
    event.name = 'pageview'
    event.site_id = 1 + (i % 3)
    event.user_id = ids[i]! | 1n
    event.timestamp = 1_700_000_000 + Math.floor(i / 1000)
    event.hostname = 'example.com'
    event.pathname = `/posts/${i % distinctPages}`
    event.browser = browsers[i % 5]!
    event.browser_version = `${100 + (i % 8)}.0`
    event.country_code = countries[i % 8]!
    event.referrer_source = sources[Math.floor(i / 7) % 5]!
    event.city_geoname_id = i % 25
    await instance.run?.(event, ctx)
  }
  const elapsed = performance.now() - started
  const after = settle()
  // Two timeouts of event time later, one visitor's event turns the generations twice: every
  // session of the run is forgotten, and the memory should go back to the start.
  const lastTime = 1_700_000_000 + Math.floor(count / 1000)
  for (const later of [lastTime + 1801, lastTime + 3602]) {
    const event = new AnalyticsEvent()
    event.name = 'pageview'
    event.site_id = 1
    event.user_id = 1n
    event.timestamp = later
    await instance.run?.(event, ctx)
  }
  await Bun.sleep(200)
  const expired = settle()
  const report: MemoryReport = {
    sessions: count,
    heapBytesPerSession: Math.round((after.heap - before.heap) / count),
    heapMB: Math.round((after.heap - before.heap) / 1e6),
    rssMB: Math.round((after.rss - before.rss) / 1e6),
    nsPerEvent: Math.round((elapsed * 1e6) / count),
    heapMBAfterExpiry: Math.round((expired.heap - before.heap) / 1e6),
    rssMBAfterExpiry: Math.round((expired.rss - before.rss) / 1e6),
  }
  // Keeps the sessions reachable until measured.
  await instance.close?.()
  return report
}

if (import.meta.main) {
  const count = Number(process.argv[2] ?? 1_000_000)
  const pages = Number(process.argv[3] ?? count)
  console.log(JSON.stringify(await measureSessions(count, pages)))
}
