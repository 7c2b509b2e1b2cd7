// The `referrer` plugin: referrer, source, UTM tags, click id and channel (spec/plausible-dialect.md §8).
//
// Follows Plausible's `put_source_info` and `maybe_infer_medium` steps and its acquisition rules, on the
// event's own values; the sessions plugin later replaces them with the session's frozen attribution.

import { Type } from '@sinclair/typebox'
import { BoundedCache } from '../../core/cache.ts'
import type { AnalyticsEvent } from '../../core/event.ts'
import { definePlugin } from '../../core/plugin.ts'
import { acquisitionChannel } from './channel.ts'
import { readTrackingParams, TrackingParams } from './query.ts'
import { loadSourceTables, SourceResolver } from './sources.ts'
import { type SplitUri, splitUri } from './url.ts'

const CategoryName = Type.Union(
  [
    Type.Literal('search'),
    Type.Literal('social'),
    Type.Literal('video'),
    Type.Literal('shopping'),
    Type.Literal('email'),
    Type.Literal('ai'),
  ],
  { description: 'A source category used by the channel rules (`ai` = AI Assistants).' },
)

export default definePlugin({
  name: 'referrer',
  stage: 'enrich',
  summary:
    'Fills referrer, referrer_source, the UTM tags, click_id_param and acquisition_channel from the page query and the referrer.',
  drops: {},
  options: Type.Object(
    {
      customSources: Type.Record(Type.String(), Type.String(), {
        default: {},
        description:
          'Extra source names, keyed by exact referrer host (without `www.`) or by tag value, matched case-insensitively; they override the shipped tables.',
        examples: [{ 'news.example.com': 'Example News', exnews: 'Example News' }],
      }),
      sourceCategories: Type.Record(Type.String(), CategoryName, {
        default: {},
        description:
          'Extra source categories for the channel rules, keyed by source name (case-insensitive); they override the shipped list.',
        examples: [{ 'example news': 'social' }],
      }),
      cacheSize: Type.Integer({
        minimum: 0,
        default: 10_000,
        description:
          'Referrer hosts whose resolved source is kept in memory, and as many combinations of page host, referrer and page query with their results (oldest dropped first); 0 disables both.',
      }),
    },
    { additionalProperties: false },
  ),
  setup(options) {
    const tables = loadSourceTables({
      customSources: options.customSources,
      sourceCategories: options.sourceCategories,
    })
    const resolver = new SourceResolver(tables, options.cacheSize)
    // Scratch objects reused by every event: `run` is synchronous, so no two events share them at once.
    const params = new TrackingParams()
    const uri: SplitUri = { scheme: '', host: '', path: '' }
    // The fields below depend on the page host, the referrer and the page query alone (when no
    // dialect preset a UTM value), and browsers send a cross-site referrer as its origin only: the
    // same few combinations come again and again. A hit costs one lookup instead of the query scan,
    // the URL split, the source lookup and the channel rules.
    const outcomes = new BoundedCache<Outcome>(options.cacheSize)
    const useOutcomes = options.cacheSize > 0

    return {
      run(event) {
        let key: string | undefined
        if (
          useOutcomes &&
          event.utm_source === '' &&
          event.utm_medium === '' &&
          event.utm_campaign === '' &&
          event.utm_content === '' &&
          event.utm_term === '' &&
          event.hostname.length + event.referrerUrl.length + event.query.length <= MAX_OUTCOME_KEY
        ) {
          // Length-prefixed, so that no two combinations make the same key.
          key = `${event.hostname.length}:${event.hostname}${event.referrerUrl.length}:${event.referrerUrl}${event.query}`
          const known = outcomes.get(key)
          if (known !== undefined) {
            applyOutcome(event, known)
            return undefined
          }
        }
        readTrackingParams(event.query, params)
        // A dialect may send UTM values in its body (Lynkow): a non-empty one set before us wins over
        // the page query.
        const tagged = event.utm_source !== '' ? event.utm_source : (params.utmSource ?? params.source ?? params.ref)
        const presetMedium = event.utm_medium !== '' ? event.utm_medium : undefined

        let external = false
        if (event.referrerUrl !== '') {
          splitUri(event.referrerUrl, uri)
          external = isExternalReferrer(uri, event.hostname)
        }
        const androidApp = external && uri.scheme === 'android-app'
        event.referrer = external ? formatReferrer(uri, androidApp) : ''

        // A tag present in the query wins over the referrer, even when empty.
        let source = ''
        if (tagged !== undefined) source = resolver.tagged(tagged)
        else if (external) source = resolver.fromReferrer(androidApp, uri.host, uri.path)
        event.referrer_source = source

        const clickId = params.clickIdParam()
        // Upstream's maybe_infer_medium: only an absent utm_medium (not an empty one) is inferred, and the
        // inferred value is stored, not just used for the channel.
        let medium = presetMedium ?? params.utmMedium
        if (medium === undefined) {
          if (source === 'Google' && clickId === 'gclid') medium = '(gclid)'
          else if (source === 'Bing' && clickId === 'msclkid') medium = '(msclkid)'
        }
        event.utm_source = tagged ?? ''
        event.utm_medium = medium ?? ''
        if (event.utm_campaign === '') event.utm_campaign = params.utmCampaign ?? ''
        if (event.utm_content === '') event.utm_content = params.utmContent ?? ''
        if (event.utm_term === '') event.utm_term = params.utmTerm ?? ''
        event.click_id_param = clickId

        const sourceLower = source.toLowerCase()
        const utmSourceLower = event.utm_source.toLowerCase()
        event.acquisition_channel = acquisitionChannel({
          source: sourceLower,
          category: tables.categories.get(sourceLower),
          utmMedium: event.utm_medium.toLowerCase(),
          utmCampaign: event.utm_campaign.toLowerCase(),
          utmSource: utmSourceLower,
          paidTag: tables.paidSources.has(utmSourceLower),
          clickIdParam: clickId,
        })
        // A click id is new on every ad click, so its query never comes again: not worth an entry.
        if (key !== undefined && clickId === '') outcomes.set(key, outcomeOf(event))
        return undefined
      },
    }
  },
})

/** Longest page host, referrer and page query together whose outcome is kept (long URLs make large entries). */
const MAX_OUTCOME_KEY = 1024

/** What `run` writes, kept per page host, referrer and page query. */
interface Outcome {
  readonly referrer: string
  readonly referrer_source: string
  readonly utm_source: string
  readonly utm_medium: string
  readonly utm_campaign: string
  readonly utm_content: string
  readonly utm_term: string
  readonly click_id_param: string
  readonly acquisition_channel: string
}

function outcomeOf(event: AnalyticsEvent): Outcome {
  return Object.freeze({
    referrer: event.referrer,
    referrer_source: event.referrer_source,
    utm_source: event.utm_source,
    utm_medium: event.utm_medium,
    utm_campaign: event.utm_campaign,
    utm_content: event.utm_content,
    utm_term: event.utm_term,
    click_id_param: event.click_id_param,
    acquisition_channel: event.acquisition_channel,
  })
}

function applyOutcome(event: AnalyticsEvent, o: Outcome): void {
  event.referrer = o.referrer
  event.referrer_source = o.referrer_source
  event.utm_source = o.utm_source
  event.utm_medium = o.utm_medium
  event.utm_campaign = o.utm_campaign
  event.utm_content = o.utm_content
  event.utm_term = o.utm_term
  event.click_id_param = o.click_id_param
  event.acquisition_channel = o.acquisition_channel
}

/**
 * A referrer counts when its scheme is http, https or android-app, it has a host other than
 * `localhost`, and that host differs from the page host once one `www.` is removed from each
 * (a subdomain of the page host is external).
 */
function isExternalReferrer(uri: SplitUri, pageHost: string): boolean {
  const { scheme, host } = uri
  if (scheme !== 'http' && scheme !== 'https' && scheme !== 'android-app') return false
  if (host === '' || host === 'localhost') return false
  if (pageHost === '(none)') return true
  const h = host.trim()
  return h.startsWith('www.') ? h.length - 4 !== pageHost.length || !h.endsWith(pageHost) : h !== pageHost
}

/** Host without one `www.` (with `android-app://` kept) + path without trailing slashes. */
function formatReferrer(uri: SplitUri, androidApp: boolean): string {
  const host = uri.host.startsWith('www.') ? uri.host.slice(4) : uri.host
  let end = uri.path.length
  while (end > 0 && uri.path.charCodeAt(end - 1) === 47) end--
  const path = end === uri.path.length ? uri.path : uri.path.slice(0, end)
  return (androidApp ? 'android-app://' : '') + host + path
}
