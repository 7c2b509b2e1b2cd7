// The acquisition channel rules (spec/plausible-dialect.md §8, Acquisition channel).
//
// Inputs are lower-cased; the first matching rule wins, in upstream's order. The two patterns upstream
// writes as regular expressions are spelled out as string tests: they are anchored, single-line PCRE
// patterns (`.` never crosses a newline, `$` also matches before a final newline), which a JavaScript
// RegExp would read differently on input containing line breaks.

import type { Category } from './sources.ts'

export interface ChannelInput {
  /** `referrer_source`, lower-cased. */
  source: string
  /** The category of `source`, if it has one. */
  category: Category | undefined
  utmMedium: string
  utmCampaign: string
  utmSource: string
  /** Whether the lower-cased `utm_source` is a paid tag (`fb-ads`, `adwords`, …). */
  paidTag: boolean
  clickIdParam: string
}

const DISPLAY_MEDIA = new Set(['display', 'banner', 'expandable', 'interstitial', 'cpm'])
const SOCIAL_MEDIA = new Set(['social', 'social-network', 'social-media', 'sm', 'social network', 'social media'])
const REFERRAL_MEDIA = new Set(['referral', 'app', 'link'])
const EMAIL_TAGS = ['email', 'e-mail', 'e_mail', 'e mail', 'newsletter']

/** `s` without one final newline, or undefined when another newline remains (no single-line match). */
function singleLine(s: string): string | undefined {
  const body = s.endsWith('\n') ? s.slice(0, -1) : s
  return body.includes('\n') ? undefined : body
}

/** `^(.*cp.*|ppc|retargeting|paid.*)$` */
export function isPaidMedium(medium: string): boolean {
  const m = singleLine(medium)
  if (m === undefined) return false
  return m.includes('cp') || m === 'ppc' || m === 'retargeting' || m.startsWith('paid')
}

/** `^(.*(([^a-df-z]|^)shop|shopping).*)$`: `shopping` anywhere, or `shop` at the start or after a character that is not a letter other than `e`. */
export function isShoppingCampaign(campaign: string): boolean {
  const c = campaign.endsWith('\n') ? campaign.slice(0, -1) : campaign
  const newline = c.indexOf('\n')
  if (newline >= 0) {
    // The one newline the pattern can cross is the character class right before `shop`.
    return c.indexOf('\n', newline + 1) < 0 && c.startsWith('shop', newline + 1)
  }
  if (c.includes('shopping')) return true
  for (let i = c.indexOf('shop'); i >= 0; i = c.indexOf('shop', i + 1)) {
    if (i === 0) return true
    const before = c.charCodeAt(i - 1)
    const excluded = (before >= 97 && before <= 100) || (before >= 102 && before <= 122) // a-d, f-z
    if (!excluded) return true
  }
  return false
}

function containsAny(s: string, needles: readonly string[]): boolean {
  for (const n of needles) if (s.includes(n)) return true
  return false
}

/** The channel name for one set of lower-cased attribution values. */
export function acquisitionChannel(i: ChannelInput): string {
  const { category, utmMedium: medium } = i
  const paidMedium = isPaidMedium(medium)
  const shoppingCampaign = isShoppingCampaign(i.utmCampaign)
  if (i.utmCampaign.includes('cross-network')) return 'Cross-network'
  if ((category === 'shopping' || shoppingCampaign) && paidMedium) return 'Paid Shopping'
  if (
    (category === 'search' && (paidMedium || i.paidTag)) ||
    (i.source === 'google' && i.clickIdParam === 'gclid') ||
    (i.source === 'bing' && i.clickIdParam === 'msclkid')
  ) {
    return 'Paid Search'
  }
  if (category === 'social' && (paidMedium || i.paidTag)) return 'Paid Social'
  if (category === 'video' && (paidMedium || i.paidTag)) return 'Paid Video'
  if (DISPLAY_MEDIA.has(medium)) return 'Display'
  if (paidMedium) return 'Paid Other'
  if (category === 'shopping' || shoppingCampaign) return 'Organic Shopping'
  if (category === 'social' || SOCIAL_MEDIA.has(medium)) return 'Organic Social'
  if (category === 'video' || medium.includes('video')) return 'Organic Video'
  if (category === 'ai') return 'AI Assistants'
  if (category === 'search') return 'Organic Search'
  if (category === 'email' || containsAny(i.utmSource, EMAIL_TAGS) || containsAny(medium, EMAIL_TAGS)) return 'Email'
  if (medium === 'affiliate') return 'Affiliates'
  if (medium === 'audio') return 'Audio'
  if (i.utmSource === 'sms' || medium === 'sms') return 'SMS'
  if (
    medium.endsWith('push') ||
    medium.includes('mobile') ||
    medium.includes('notification') ||
    i.source === 'firebase'
  ) {
    return 'Mobile Push Notifications'
  }
  if (REFERRAL_MEDIA.has(medium) || i.source !== '') return 'Referral'
  return 'Direct'
}
