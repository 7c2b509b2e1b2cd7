// The Lynkow body fields (seeds/004_a84ef18e8bb230e0.txt, the `collectAnalyticsValidator` table;
// spec/lynkow-dialect.md "Fields and aliases"): one table of every field with its rule, the alias
// map built from it once, and the straight-line reader that validates a parsed body against it.
//
// Limits: the seed gives some (visitor_id 8–64, page_url 2048, page_path 1024, page_title 500) and
// those reject the event. Where the seed gives none we add a cap so one event cannot store
// unbounded text: free text over our cap is cut (the event is still worth keeping), while ids, enums
// and numbers out of range are rejected (a cut id or an impossible number is wrong, not shorter).

import { redactText } from './redact.ts'
import { parseEventTime } from './time.ts'

/** One validation failure, as the 422 body lists it and the 202 message joins it. */
export interface Issue {
  /** The canonical field name (`visitor_id`), or `body`. */
  field: string
  /** The rule that failed: required, string, length, maxLength, enum, number, integer, range, boolean, date, json. */
  rule: string
  /** A sentence naming the field and the rule. */
  message: string
}

type Kind = 'id' | 'text' | 'enum' | 'number' | 'integer' | 'boolean' | 'time' | 'event'

interface FieldDef<N extends string = string> {
  readonly name: N
  readonly kind: Kind
  /** Length bounds for `id`/`text` (characters), value bounds for `number`/`integer`. */
  readonly min: number
  readonly max: number
  /** `text` over `max`: cut to `max` (our own cap) instead of rejected (the seed's limit). */
  readonly truncate: boolean
  /** Free text that may carry personal data: e-mails and tokens are masked (redact.ts). */
  readonly redact: boolean
  /** Allowed values of an `enum`, lower case. */
  readonly values: readonly string[]
}

const NONE: readonly string[] = []

function def<N extends string>(
  name: N,
  kind: Kind,
  min = 0,
  max = 0,
  extra: { truncate?: boolean; redact?: boolean; values?: readonly string[] } = {},
): FieldDef<N> {
  return {
    name,
    kind,
    min,
    max,
    truncate: extra.truncate ?? false,
    redact: extra.redact ?? false,
    values: extra.values ?? NONE,
  }
}
/** Text with the seed's own maximum: longer is an error. */
const limited = <N extends string>(name: N, max: number) => def(name, 'text', 0, max)
/** Text with our cap: longer is cut. */
const capped = <N extends string>(name: N, max: number, redact = false) =>
  def(name, 'text', 0, max, { truncate: true, redact })
const number = <N extends string>(name: N, min: number, max: number) => def(name, 'number', min, max)
const integer = <N extends string>(name: N, min: number, max: number) => def(name, 'integer', min, max)
const oneOf = <N extends string>(name: N, values: readonly string[]) => def(name, 'enum', 0, 0, { values })
const boolean = <N extends string>(name: N) => def(name, 'boolean')

/** 30 days in milliseconds: the longest duration kept (Plausible's bound for engagement time). */
export const MAX_DURATION_MS = 2_592_000_000
/** One hour in milliseconds: a Core Web Vital beyond it is a broken measurement. */
const MAX_VITAL_MS = 3_600_000
const MAX_PIXELS = 100_000
const MAX_COORDINATE = 10_000_000

/** The event types of the seed, canonical spelling. */
export const EVENT_TYPES = [
  'pageview',
  'scroll',
  'time_on_page',
  'cwv',
  'exit',
  'heartbeat',
  'click',
  'outbound_link',
  'file_download',
  'email_click',
  'phone_click',
  'rage_click',
  'dead_click',
  'copy',
  'form_start',
  'form_submit',
  'form_abandon',
  'form_field',
  'form_error',
  'heatmap_click',
] as const

// The seed's table, in its order (errors are reported in this order).
const TABLE = [
  def('session_id', 'id', 1, 128),
  def('visitor_id', 'id', 8, 64),
  def('cookie_visitor_id', 'id', 0, 128),
  oneOf('visitor_id_source', ['cookie', 'fingerprint', 'hybrid']),
  def('event_type', 'event', 0, 0, { values: EVENT_TYPES }),
  limited('page_url', 2048),
  limited('page_path', 1024),
  def('event_time', 'time'),
  limited('page_title', 500),
  // Plausible keeps the first 2000 characters of a referrer and never rejects it; so do we.
  capped('page_referrer', 2000),
  number('scroll_depth', 0, 100),
  number('time_on_page', 0, MAX_DURATION_MS),
  number('engaged_time', 0, MAX_DURATION_MS),
  number('lcp', 0, MAX_VITAL_MS),
  number('fid', 0, MAX_VITAL_MS),
  // Cumulative Layout Shift has no unit; real pages score below 10.
  number('cls', 0, 100),
  number('ttfb', 0, MAX_VITAL_MS),
  number('inp', 0, MAX_VITAL_MS),
  capped('utm_source', 2000),
  capped('utm_medium', 2000),
  capped('utm_campaign', 2000),
  capped('utm_term', 2000),
  capped('utm_content', 2000),
  oneOf('traffic_source', ['direct', 'organic', 'social', 'paid', 'referral', 'email', 'internal', 'ai']),
  oneOf('device_type', ['desktop', 'laptop', 'mobile', 'tablet']),
  capped('browser', 100),
  capped('browser_version', 100),
  capped('os', 100),
  capped('os_version', 100),
  integer('screen_width', 0, MAX_PIXELS),
  integer('screen_height', 0, MAX_PIXELS),
  capped('language', 100),
  capped('timezone', 100),
  capped('referrer_domain', 255),
  boolean('is_entry'),
  boolean('is_exit'),
  boolean('visible'),
  number('max_scroll_depth', 0, 100),
  number('click_x', 0, MAX_COORDINATE),
  number('click_y', 0, MAX_COORDINATE),
  capped('click_element', 500),
  capped('click_element_tag', 100),
  capped('click_element_id', 255),
  capped('click_element_class', 500),
  capped('click_element_text', 500, true),
  capped('click_target_url', 2048),
  integer('click_count', 0, 1_000_000),
  integer('viewport_width', 0, MAX_PIXELS),
  integer('viewport_height', 0, MAX_PIXELS),
  capped('file_name', 500),
  capped('file_extension', 100),
  capped('file_url', 2048),
  capped('copied_text', 2000, true),
  oneOf('scroll_behavior', ['reading', 'skimming', 'jumping']),
  capped('form_id', 255),
  capped('form_name', 255),
  capped('field_name', 255),
  capped('field_type', 100),
  number('field_time', 0, MAX_DURATION_MS),
  capped('error_message', 2000, true),
  number('form_completion_rate', 0, 100),
] as const

export type FieldName = (typeof TABLE)[number]['name']

/** Every field, in the seed's order. */
export const FIELDS: readonly FieldDef[] = TABLE
export const FIELD_COUNT = TABLE.length

/** The index of each field in `FIELDS` and in the values array `readFields` fills. */
export const F = Object.fromEntries(TABLE.map((f, i) => [f.name, i])) as Record<FieldName, number>

/** Short names from the seed's own examples (`{"event": "page_view", "path": "/pricing"}`). */
const SHORT_NAMES: Record<string, FieldName> = {
  event: 'event_type',
  path: 'page_path',
  url: 'page_url',
  title: 'page_title',
  referrer: 'page_referrer',
}

const camel = (snake: string) => snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())

/** Body key → field index: canonical names, their camelCase spellings, the short names. */
export const KEY_TO_FIELD: ReadonlyMap<string, number> = (() => {
  const map = new Map<string, number>()
  TABLE.forEach((f, i) => {
    map.set(f.name, i)
    map.set(camel(f.name), i)
  })
  for (const [short, name] of Object.entries(SHORT_NAMES)) map.set(short, F[name])
  return map
})()

/** Any spelling of an event type (`page_view`, `pageView`, `Page-View`) → its canonical name. */
const EVENT_BY_COMPACT: ReadonlyMap<string, string> = new Map(EVENT_TYPES.map((t) => [t.replaceAll('_', ''), t]))
const EVENT_SEPARATORS = /[-_\s]/g

/**
 * The canonical event type for a client's spelling: case, `-`, `_` and spaces are ignored, so
 * `page_view`, `pageView` and `page-view` are all `pageview`. Undefined for an unknown type.
 */
export function normaliseEventType(value: string): string | undefined {
  // Most clients send the canonical spelling; only the others pay for the rewrite.
  if (EVENT_BY_COMPACT.has(value)) return value
  if (value.length > 64) return undefined
  return EVENT_BY_COMPACT.get(value.replace(EVENT_SEPARATORS, '').toLowerCase())
}

/** A validated value: text for id/text/enum/event fields, a number, a boolean, or epoch ms for the time. */
export type FieldValue = string | number | boolean

const DECIMAL = /^-?\d{1,20}(?:\.\d{1,20})?$/

/**
 * Reads `body` into `values` (indexed by `F`): each known key is validated by its field's rule;
 * unknown keys are ignored. `null` counts as absent. When two spellings of one field are sent, the
 * canonical name wins, else the first in body order. Returns the issues, or undefined when none.
 */
export function readFields(body: Record<string, unknown>, values: (FieldValue | undefined)[]): Issue[] | undefined {
  // Raw values first, so alias precedence does not depend on validation.
  const raw: unknown[] = new Array(FIELD_COUNT)
  for (const key in body) {
    const index = KEY_TO_FIELD.get(key)
    if (index === undefined) continue
    const value = body[key]
    if (value === null || value === undefined) continue
    if (raw[index] === undefined || key === TABLE[index]!.name) raw[index] = value
  }
  let issues: Issue[] | undefined
  for (let i = 0; i < FIELD_COUNT; i++) {
    const value = raw[i]
    if (value === undefined) continue
    const result = validate(TABLE[i]!, value)
    if (typeof result !== 'object') values[i] = result
    else if (issues === undefined) issues = [result]
    else issues.push(result)
  }
  return issues
}

/** The validated value, or the issue. */
function validate(field: FieldDef, value: unknown): FieldValue | Issue {
  switch (field.kind) {
    case 'id': {
      const text = asText(value)
      if (text === undefined) return issue(field, 'string', 'must be a string')
      if (text.length < field.min || text.length > field.max) {
        return field.min === 0
          ? issue(field, 'maxLength', `must be at most ${field.max} characters`)
          : issue(field, 'length', `must be ${field.min} to ${field.max} characters`)
      }
      return text
    }
    case 'text': {
      let text = asText(value)
      if (text === undefined) return issue(field, 'string', 'must be a string')
      if (field.redact) text = redactText(text)
      if (text.length > field.max) {
        if (!field.truncate) return issue(field, 'maxLength', `must be at most ${field.max} characters`)
        text = cut(text, field.max)
      }
      return text
    }
    case 'enum': {
      if (typeof value !== 'string') return issue(field, 'enum', `must be one of: ${field.values.join(', ')}`)
      const lower = value.toLowerCase()
      return field.values.includes(lower) ? lower : issue(field, 'enum', `must be one of: ${field.values.join(', ')}`)
    }
    case 'event': {
      const type = typeof value === 'string' ? normaliseEventType(value) : undefined
      return type ?? issue(field, 'enum', `must be one of: ${field.values.join(', ')}`)
    }
    case 'number':
    case 'integer': {
      const n = asNumber(value)
      if (n === undefined) return issue(field, 'number', 'must be a number')
      if (field.kind === 'integer' && !Number.isInteger(n)) return issue(field, 'integer', 'must be an integer')
      if (n < field.min || n > field.max) return issue(field, 'range', `must be between ${field.min} and ${field.max}`)
      return n
    }
    case 'boolean':
      if (value === true || value === 'true') return true
      if (value === false || value === 'false') return false
      return issue(field, 'boolean', 'must be a boolean')
    case 'time': {
      const ms = parseEventTime(value)
      return Number.isNaN(ms) ? issue(field, 'date', 'must be an ISO-8601 date-time or epoch milliseconds') : ms
    }
  }
}

/** A string as is; a finite number as its decimal text (ids and names are often sent as numbers). */
function asText(value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return undefined
}

/** A finite JSON number, or a string that is a plain decimal number (`"12"`, `"0.5"`). */
function asNumber(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined
  if (typeof value === 'string' && DECIMAL.test(value)) return Number(value)
  return undefined
}

/** The first `max` characters, without leaving half of a surrogate pair at the end. */
function cut(text: string, max: number): string {
  const last = text.charCodeAt(max - 1)
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max)
}

export function issue(field: { name: string }, rule: string, what: string): Issue {
  return { field: field.name, rule, message: `${field.name} ${what}` }
}

/** The issue for a field the event cannot do without. */
export function required(name: FieldName): Issue {
  return { field: name, rule: 'required', message: `${name} is required` }
}
