// Payload templates of the `webhook` sink: a JSON value whose strings may hold `{{field}}` placeholders,
// filled from the event's row. Substitution only: no expressions, no code, no access beyond the
// fields listed in FIELDS. Compiled once at setup; an unknown field is a config error there.

import { AnalyticsEvent } from '../../core/event.ts'
import { ConfigError } from '../../core/plugin.ts'
import { eventRow, type JsonRow } from '../../core/rows.ts'

/** A value as a template sees it: the row's columns plus a few derived fields. */
type Value = string | number | null | string[] | Record<string, string>

/** What a compiled template reads per event; built once per event, shared by every placeholder. */
export interface TemplateInput {
  row: JsonRow
  event: AnalyticsEvent
}

/** Fields beyond the row's columns. */
const DERIVED: Record<string, (input: TemplateInput) => Value> = {
  /** The site's main domain (the configured one, or the one the client named under `sites: any`). */
  domain: ({ event }) => event.site?.domain ?? event.domain,
  /** ISO 8601 UTC, e.g. `2026-01-02T03:04:05Z`, for receivers that expect it. */
  time: ({ event }) => `${new Date(event.timestamp * 1000).toISOString().slice(0, 19)}Z`,
  /** Seconds since the epoch. */
  unix_time: ({ event }) => event.timestamp,
  /** The custom properties as one object. */
  props: ({ event }) => ({ ...event.props }),
}

/** Column names of events_v2, taken from a row so the list cannot drift from core/rows.ts. */
const COLUMNS = new Set(Object.keys(eventRow(new AnalyticsEvent())))

/** Every field a placeholder may name (`props.<key>` besides). */
export const TEMPLATE_FIELDS: readonly string[] = [...COLUMNS, ...Object.keys(DERIVED)]

const WHOLE = /^\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}$/
const PLACEHOLDER = /\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}/g

type Getter = (input: TemplateInput) => Value
export type Template = (input: TemplateInput) => unknown

function getter(field: string, path: string): Getter {
  if (field.startsWith('props.') && field.length > 'props.'.length) {
    const key = field.slice('props.'.length)
    // Own keys only: `props.constructor` names a prop, never something inherited.
    return ({ event }) => (Object.hasOwn(event.props, key) ? event.props[key]! : null)
  }
  if (COLUMNS.has(field)) return ({ row }) => row[field] ?? null
  const derived = DERIVED[field]
  if (derived) return derived
  throw new ConfigError(path, `unknown field {{${field}}} (known: ${TEMPLATE_FIELDS.join(', ')}, props.<key>)`)
}

/** A value inside a longer string: arrays joined by commas, null and objects as JSON or ''. */
function asText(value: Value): string {
  if (value === null) return ''
  if (Array.isArray(value)) return value.join(',')
  if (typeof value === 'object') return JSON.stringify(value)
  return String(value)
}

/**
 * Compiles a template. A string that is exactly one placeholder takes the field's own JSON type
 * (a number stays a number, `meta.key` an array, a missing prop `null`); placeholders inside longer
 * strings are replaced by their text. Object keys are literal.
 *
 * ```ts
 * const t = compileTemplate({ text: 'Signup on {{domain}}{{pathname}}', at: '{{unix_time}}' }, 'template')
 * t({ row, event }) // { text: 'Signup on example.com/pricing', at: 1767323045 }
 * ```
 */
export function compileTemplate(template: unknown, path: string): Template {
  if (typeof template === 'string') {
    const whole = WHOLE.exec(template)
    if (whole) return getter(whole[1]!, path)
    if (!template.includes('{{')) return () => template
    const parts: (string | Getter)[] = []
    let at = 0
    for (const match of template.matchAll(PLACEHOLDER)) {
      parts.push(template.slice(at, match.index))
      parts.push(getter(match[1]!, path))
      at = match.index + match[0].length
    }
    parts.push(template.slice(at))
    return (input) => {
      let out = ''
      for (const p of parts) out += typeof p === 'string' ? p : asText(p(input))
      return out
    }
  }
  if (Array.isArray(template)) {
    const items = template.map((item, i) => compileTemplate(item, `${path}.${i}`))
    return (input) => items.map((item) => item(input))
  }
  if (template !== null && typeof template === 'object') {
    const entries = Object.entries(template).map(
      ([key, value]) => [key, compileTemplate(value, `${path}.${key}`)] as const,
    )
    return (input) => {
      const out: Record<string, unknown> = {}
      for (const [key, value] of entries) out[key] = value(input)
      return out
    }
  }
  return () => template
}
