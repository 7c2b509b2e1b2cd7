// Implements spec/plausible-dialect.md §2 (body fields, aliases, validation messages), the request
// part of §4 (props) and §5 (engagement fields): a request's fields become one validated value
// shared by every domain's event, or the field errors of a 400.

import { jsonInteger, jsonIntegerText, RawNumber } from '../../core/json.ts'
import { exceedsBytes, graphemesEnd, isBlank, trimWhitespace } from '../../core/text.ts'
// The props plugin is the module dialects call for Plausible's custom-property rules (its README).
import { decodeProps, PROPS_TOO_LONG, PROPS_TOO_LONG_MESSAGE, sanitiseProps } from '../props/index.ts'
import type { Params } from './body.ts'
import { pathnameOf, sanitiseHost, splitUrl, type UrlParts } from './url.ts'

export const MESSAGES = {
  unreadable: 'Unable to parse request body as json',
  required: 'is required',
  invalidUrl: 'must be a valid url',
  scheme: 'scheme is not allowed',
  blank: "can't be blank",
  invalid: 'is invalid',
  nameTooLong: 'should be at most 120 character(s)',
  engagement: "engagement event requires a valid integer value for at least one of 'sd' or 'e' fields",
  props: PROPS_TOO_LONG_MESSAGE,
} as const

export type ErrorField = 'domain' | 'event_name' | 'hash_mode' | 'props' | 'request' | 'url'
export type FieldErrors = Partial<Record<ErrorField, string[]>>

/** Events Plausible always counts as interactive, whatever `i` says. */
export const SYSTEM_EVENTS: ReadonlySet<string> = new Set([
  'pageview',
  'engagement',
  'Outbound Link: Click',
  'Cloaked Link: Click',
  'File Download',
  '404',
  'WP Form Completions',
  'Form: Submission',
])

const MAX_URL_BYTES = 2000
const MAX_REFERRER_CHARS = 2000
const MAX_NAME_CHARS = 120
export const SCROLL_DEPTH_MISSING = 255
export const ENGAGEMENT_TIME_MISSING = 0
// 30 days in ms: an old tracker sent absurd engagement times.
const ENGAGEMENT_TIME_LIMIT = 2_592_000_000
// Decimal-amount bound that still fits ClickHouse's Decimal64(3).
const MAX_REVENUE = 1e15

/** The validated fields of one request; `errors` set means the request gets a 400 and no event. */
export class PlausibleRequest {
  errors: FieldErrors | undefined = undefined
  name = ''
  url = ''
  hostname = '(none)'
  pathname = '/'
  query = ''
  referrer = ''
  hashMode = false
  interactive = true
  /** One per domain of `d`, already trimmed and without `www.`; '' for an empty part. */
  domains: string[] = []
  props: Record<string, string> = {}
  scrollDepth = 0
  engagementTime = 0
  revenueAmount = ''
  revenueCurrency = ''
}

/** The `request` error of an unreadable body. */
export function unreadableBody(): FieldErrors {
  return { request: [MESSAGES.unreadable] }
}

/** Elixir's `a || b`: `null`, `false` and absence fall through to the next alias. */
function or(a: unknown, b: unknown): unknown {
  return a === undefined || a === null || a === false ? b : a
}

function addError(request: PlausibleRequest, field: ErrorField, message: string): void {
  if (request.errors === undefined) request.errors = {}
  const errors = request.errors
  const list = errors[field]
  if (list) list.push(message)
  else errors[field] = [message]
}

/** Elixir's `Integer.parse/1` consuming the whole string (ASCII digits, optional sign). */
const INTEGER_TEXT = /^[+-]?[0-9]+$/
const CURRENCY = /^[A-Z]{3}$/
const DECIMAL_PREFIX = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/

function integerField(value: unknown): number | undefined {
  if (typeof value === 'string') return INTEGER_TEXT.test(value) ? Number(value) : undefined
  return jsonInteger(value)
}

/** §5 `sd`: 0..100 as is, above 100 → 100, anything else → 255 ("missing"). */
export function scrollDepthOf(value: unknown): number {
  const n = integerField(value)
  if (n === undefined || n < 0) return SCROLL_DEPTH_MISSING
  return n > 100 ? 100 : n + 0
}

/** §5 `e`: 0 ≤ e < 30 days in ms as is, anything else → 0 ("missing"). */
export function engagementTimeOf(value: unknown): number {
  const n = integerField(value)
  if (n === undefined || n < 0 || n >= ENGAGEMENT_TIME_LIMIT) return ENGAGEMENT_TIME_MISSING
  return n + 0
}

/** A revenue amount as decimal text with at most 3 fractional digits, or undefined when unusable. */
function revenueAmountOf(value: unknown): string | undefined {
  let amount: number
  if (typeof value === 'number') amount = value
  else if (value instanceof RawNumber) amount = value.value
  else if (typeof value === 'string') {
    // Like Decimal.parse upstream: a leading decimal number counts, the rest is ignored ("1831d").
    const match = DECIMAL_PREFIX.exec(value)
    if (match === null) return undefined
    amount = Number(match[0])
  } else return undefined
  if (!Number.isFinite(amount) || Math.abs(amount) >= MAX_REVENUE) return undefined
  const text = (Math.round(amount * 1000) / 1000).toFixed(3)
  let end = text.length
  while (text.charCodeAt(end - 1) === 0x30) end--
  if (text.charCodeAt(end - 1) === 0x2e) end--
  return text.slice(0, end)
}

/** Reads request fields. */
export function readRequest(p: Params): PlausibleRequest {
  const request = new PlausibleRequest()

  // url (`u`, `url`)
  const rawUrl = or(p.u, p.url)
  let parts: UrlParts | undefined
  if (rawUrl === undefined || rawUrl === null) addError(request, 'url', MESSAGES.required)
  else if (typeof rawUrl !== 'string' || exceedsBytes(rawUrl, MAX_URL_BYTES)) {
    addError(request, 'url', MESSAGES.invalidUrl)
  } else {
    const split = splitUrl(rawUrl)
    if (split.scheme === 'data') addError(request, 'url', MESSAGES.scheme)
    else {
      parts = split
      request.url = rawUrl
    }
  }
  // A host that is empty once `www.` is gone counts as none (upstream would 400 on `hostname`).
  const host = parts?.host === undefined ? '' : sanitiseHost(parts.host)
  if (host !== '') request.hostname = host

  // event name (`n`, `name`): a string, or an integer as its decimal text
  const rawName = or(p.n, p.name)
  let name: string | undefined
  if (typeof rawName === 'string') name = isBlank(rawName) ? undefined : rawName
  else if (rawName !== undefined && rawName !== null) {
    name = jsonIntegerText(rawName)
    if (name === undefined) addError(request, 'event_name', MESSAGES.invalid)
  }
  if (name !== undefined) {
    request.name = name
    if (graphemesEnd(name, MAX_NAME_CHARS) < name.length) addError(request, 'event_name', MESSAGES.nameTooLong)
  } else if (request.errors?.event_name === undefined) addError(request, 'event_name', MESSAGES.blank)

  // hash mode (`h`, `hashMode`): an integer or integer text; only 1 turns it on
  const rawHash = or(p.h, p.hashMode)
  let hash = 0
  if (typeof rawHash === 'string') {
    // Blank text is an empty value to the cast, not an invalid one.
    if (!isBlank(rawHash)) {
      if (INTEGER_TEXT.test(rawHash)) hash = Number(rawHash)
      else addError(request, 'hash_mode', MESSAGES.invalid)
    }
  } else if (rawHash !== undefined && rawHash !== null) {
    const value = jsonInteger(rawHash)
    if (value === undefined) addError(request, 'hash_mode', MESSAGES.invalid)
    else hash = value
  }
  request.hashMode = hash === 1

  // referrer (`r`, `referrer`): kept only as a string, never validated
  const rawReferrer = or(p.r, p.referrer)
  if (typeof rawReferrer === 'string')
    request.referrer = rawReferrer.slice(0, graphemesEnd(rawReferrer, MAX_REFERRER_CHARS))

  if (parts !== undefined) {
    request.pathname = pathnameOf(parts, request.hashMode)
    request.query = parts.query
  }

  // props (`m`, `meta`, `p`, `props`)
  const props = sanitiseProps(or(or(or(p.m, p.meta), p.p), p.props), name ?? '', request.pathname)
  if (props === PROPS_TOO_LONG) addError(request, 'props', MESSAGES.props)
  else request.props = props

  if (name === 'engagement') {
    const sd = scrollDepthOf(p.sd)
    const e = engagementTimeOf(p.e)
    if (sd === SCROLL_DEPTH_MISSING && e === ENGAGEMENT_TIME_MISSING) {
      addError(request, 'event_name', MESSAGES.engagement)
    } else {
      request.scrollDepth = sd
      request.engagementTime = e
    }
  }

  // revenue (`revenue`, `$`; upstream's order): optional, never an error
  const revenue = decodeProps(or(p.revenue, p.$))
  if (revenue !== undefined) {
    const currency = revenue.currency
    const amount = typeof currency === 'string' && CURRENCY.test(currency) ? revenueAmountOf(revenue.amount) : undefined
    if (amount !== undefined) {
      request.revenueAmount = amount
      request.revenueCurrency = currency as string
    }
  }

  // interactive (`i`, `interactive`). Deviation: `i: false` counts even though upstream reads
  // `i || interactive` and so ignores it; system events stay interactive.
  const interactive = p.i === false ? false : or(p.i, p.interactive)
  request.interactive = interactive !== false || (name !== undefined && SYSTEM_EVENTS.has(name))

  // domain (`d`, `domain`): a comma-separated list, else the URL host
  const rawDomain = or(p.d, p.domain)
  if (typeof rawDomain === 'string') {
    const trimmed = trimWhitespace(rawDomain)
    if (trimmed === '') addError(request, 'domain', MESSAGES.blank)
    else request.domains = trimmed.indexOf(',') === -1 ? [sanitiseHost(trimmed)] : trimmed.split(',').map(sanitiseHost)
  } else if (host === '') addError(request, 'domain', MESSAGES.blank)
  else request.domains = [host]

  return request
}
