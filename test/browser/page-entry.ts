// The script of the Plausible test pages, bundled once per run by harness.ts (Bun.build, target
// browser) and served as an ES module. It runs the official tracker from npm exactly as a site would
// (`init` at load), with the options the page set in `window.__trackerConfig`, and exposes `track`
// to the test as a promise of the tracker's callback result.
//
// `captureOnLocalhost: true` is needed although the pages are served on `tracker.example`: under
// Playwright `navigator.webdriver` is true and the tracker would otherwise ignore every event
// (research/plausible-tracker.md, trap 1).

import { type CustomProperties, init, track } from '@plausible-analytics/tracker'

export interface PageTrackerConfig {
  domain: string
  endpoint: string
  hashBasedRouting?: boolean
  customProperties?: CustomProperties
}

/** What a `track` callback gave, made serialisable (an Error does not cross `page.evaluate`). */
export type TrackResult = { status: number } | { error: string } | { ignored: true }

/** The rest of `track`'s options a test may set. */
export interface TrackOptions {
  interactive?: boolean
  revenue?: { amount: number | string; currency: string }
}

declare global {
  interface Window {
    __trackerConfig: PageTrackerConfig
    __track: (name: string, props?: Record<string, unknown>, options?: TrackOptions) => Promise<TrackResult>
  }
}

const config = window.__trackerConfig
init({
  domain: config.domain,
  endpoint: config.endpoint,
  captureOnLocalhost: true,
  outboundLinks: true,
  fileDownloads: true,
  formSubmissions: true,
  hashBasedRouting: config.hashBasedRouting === true,
  customProperties: config.customProperties,
})

window.__track = (name, props, options = {}) =>
  new Promise((resolve) => {
    // The typings say string values; the tracker sends whatever it is given (`seats: 3` stays a number).
    track(name, {
      ...options,
      props: props as CustomProperties | undefined,
      callback: (result) => {
        if (result === undefined) resolve({ ignored: true })
        else if ('status' in result) resolve({ status: result.status })
        else resolve({ error: String(result.error) })
      },
    })
  })
