// Implements spec/plausible-dialect.md §4 (props): which pairs survive, how values become strings,
// the `path` prop of path goals, the 30-prop cut and the 300/2000-byte limit.

import { hasAmbiguousValue, isJsonObject, parseJson, RawNumber } from '../../core/json.ts'
import { compareBytes } from '../../core/rows.ts'
import { exceedsBytes, isBlank } from '../../core/text.ts'
import { formatElixirFloat } from './float.ts'

export const MAX_PROPS = 30
export const MAX_KEY_BYTES = 300
export const MAX_VALUE_BYTES = 2000
/** Plausible's message for the `props` field when a kept pair is too long. */
export const PROPS_TOO_LONG_MESSAGE = 'keys should have at most 300 bytes and values 2000 bytes'
/** Returned by `sanitiseProps` when a kept key or value is too long (the request gets a 400). */
export const PROPS_TOO_LONG: unique symbol = Symbol('props too long')

/** Events whose goals filter on the `path` prop, which defaults to the pathname (Plausible's SystemGoals). */
export const PATH_PROP_EVENTS: ReadonlySet<string> = new Set(['404', 'WP Form Completions', 'Form: Submission'])

/**
 * The props object a request carries: an object as is, a string that decodes to a JSON object, and
 * `{}` for anything else (a malformed props field is not an error).
 */
export function decodeProps(raw: unknown): Record<string, unknown> | undefined {
  if (typeof raw === 'string') {
    const decoded = parseJson(raw, hasAmbiguousValue)
    return isJsonObject(decoded) ? decoded : undefined
  }
  return isJsonObject(raw) ? raw : undefined
}

/**
 * A prop value as Plausible stores it, or undefined when the pair is dropped (arrays, objects,
 * null). Booleans and integers print as Elixir prints them; floats in Elixir's notation.
 */
export function propText(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
      return value
    case 'boolean':
      return value ? 'true' : 'false'
    case 'number':
      if (!Number.isInteger(value)) return formatElixirFloat(value)
      return Number.isSafeInteger(value) ? String(value) : BigInt(value).toString()
    case 'object':
      if (value instanceof RawNumber) return value.isFloat ? formatElixirFloat(value.value) : value.source
      return undefined
    default:
      return undefined
  }
}

/**
 * Applies §4 to a request's raw props field for one event name and pathname. Returns the props as
 * strings (a fresh object the caller owns), or `PROPS_TOO_LONG`.
 *
 * @example sanitiseProps({ seats: 3, f: 2.0, gone: null }, 'Signup', '/') // { seats: '3', f: '2.0' }
 */
export function sanitiseProps(
  raw: unknown,
  eventName: string,
  pathname: string,
): Record<string, string> | typeof PROPS_TOO_LONG {
  const source = decodeProps(raw)
  const keys: string[] = []
  const values: string[] = []
  let hasPath = false
  if (source !== undefined) {
    for (const key in source) {
      const text = propText(source[key])
      if (text === undefined || isBlank(key) || isBlank(text)) continue
      if (key === 'path') hasPath = true
      keys.push(key)
      values.push(text)
    }
  }
  const addPath = !hasPath && PATH_PROP_EVENTS.has(eventName)
  const room = addPath ? MAX_PROPS - 1 : MAX_PROPS
  const props: Record<string, string> = {}
  if (addPath) props.path = pathname
  if (keys.length <= room) {
    for (let i = 0; i < keys.length; i++) put(props, keys[i]!, values[i]!)
  } else {
    // Upstream keeps the greatest keys (it walks a sorted map backwards); for more than 32 keys its
    // order is arbitrary, ours stays the same.
    const order = keys.map((_, i) => i).sort((a, b) => compareBytes(keys[b]!, keys[a]!))
    for (let n = 0; n < room; n++) {
      const i = order[n]!
      put(props, keys[i]!, values[i]!)
    }
  }
  for (const key in props) {
    if (exceedsBytes(key, MAX_KEY_BYTES) || exceedsBytes(props[key]!, MAX_VALUE_BYTES)) return PROPS_TOO_LONG
  }
  return props
}

function put(props: Record<string, string>, key: string, value: string): void {
  // A plain assignment to `__proto__` would set the prototype instead of a prop.
  if (key === '__proto__')
    Object.defineProperty(props, key, { value, enumerable: true, writable: true, configurable: true })
  else props[key] = value
}
