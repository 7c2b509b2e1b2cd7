// JSON decoding that keeps what JSON.parse loses (spec/plausible-dialect.md §4.2): whether a number
// was written as a float (`2.0` must stay a float to print as "2.0") and the digits of integers
// beyond 2^53 (Plausible's JSON decoder keeps them exact).

/** A JSON number whose text matters: a float (`2.0`, `1e3`) or an integer beyond 2^53. */
export class RawNumber {
  constructor(
    /** The nearest double (exact for floats, which are doubles upstream too). */
    readonly value: number,
    /** Written with a fraction or an exponent. */
    readonly isFloat: boolean,
    /** The number as written. */
    readonly source: string,
  ) {}
}

/** Returned by `parseJson` for text that is not JSON (never thrown). */
export const INVALID_JSON: unique symbol = Symbol('invalid JSON')

// A number needs its text when it has a fraction or an exponent, or 16 digits or more (the smallest
// unsafe integer has 16). A number token always follows `:`, `,` or `[`; a hit inside a string only
// costs the slower path. JSON.parse with a reviver is ~8x slower than without, and this test costs
// about as much as a plain parse of a tracker body, so both run only when they can matter.
const NEEDS_SOURCE = /[:,[]\s*-?(?:\d+[.eE]|\d{16})/

class NonFiniteNumber extends Error {}

function keepSource(_key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value !== 'number') return value
  const source = context?.source
  if (source === undefined) {
    // Runtimes without source text access: only fractions are known to be floats.
    return Number.isInteger(value) ? value : new RawNumber(value, true, String(value))
  }
  for (let i = 0; i < source.length; i++) {
    const c = source.charCodeAt(i)
    if (c === 0x2e || c === 0x65 || c === 0x45) {
      // Plausible's decoder rejects a body whose float overflows a double.
      if (!Number.isFinite(value)) throw new NonFiniteNumber()
      return new RawNumber(value, true, source)
    }
  }
  return Number.isSafeInteger(value) ? value : new RawNumber(value, false, source)
}

/**
 * Parses JSON text. Integers up to 2^53 come back as numbers; floats and larger integers as
 * `RawNumber`. Never throws: invalid text (or a float beyond the double range) gives `INVALID_JSON`.
 *
 * `needsSource`, when given, is asked about a plain parse first: only when it finds whole numbers
 * where it matters whether they were written `2` or `2.0` (and the text has floats or long integers
 * at all) is the text parsed again keeping number text. A tracker pageview then costs one plain
 * JSON.parse, and floats with a fraction (`15.99`) need no second parse either.
 *
 * @example parseJson('{"a":2.0,"b":3}') // { a: RawNumber { value: 2, isFloat: true, source: '2.0' }, b: 3 }
 */
export function parseJson(text: string, needsSource?: (plain: unknown) => boolean): unknown {
  let plain: unknown
  try {
    plain = JSON.parse(text)
  } catch {
    return INVALID_JSON
  }
  if (needsSource !== undefined && !needsSource(plain)) return plain
  if (!NEEDS_SOURCE.test(text)) return plain
  try {
    return JSON.parse(text, keepSource)
  } catch (error) {
    // A number beyond the double range makes the text invalid where it is read. Anything else is
    // the reviver's recursion overflowing on deep nesting: parse again without recursion.
    if (error instanceof NonFiniteNumber) return INVALID_JSON
    try {
      return parseWithoutRecursion(text)
    } catch (again) {
      return again instanceof NonFiniteNumber ? INVALID_JSON : plain
    }
  }
}

type Container =
  | { kind: 'array'; value: unknown[] }
  | { kind: 'object'; value: Record<string, unknown>; key: string | undefined }

/**
 * The same result as `JSON.parse(text, keepSource)` for text already known to be valid JSON, with an
 * explicit stack instead of recursion, for bodies nested deeper than the reviver can walk.
 */
export function parseWithoutRecursion(text: string): unknown {
  const stack: Container[] = []
  let i = 0
  let root: unknown
  let done = false
  const skipSpace = () => {
    while (i < text.length) {
      const c = text.charCodeAt(i)
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break
      i++
    }
  }
  const put = (value: unknown) => {
    const top = stack[stack.length - 1]
    if (top === undefined) {
      root = value
      done = true
    } else if (top.kind === 'array') top.value.push(value)
    else {
      // Own data properties, as JSON.parse makes them (a `__proto__` key stays a plain key).
      Object.defineProperty(top.value, top.key!, { value, enumerable: true, writable: true, configurable: true })
      top.key = undefined
    }
  }
  const readString = (): string => {
    const start = i
    i++
    while (i < text.length) {
      const c = text.charCodeAt(i)
      if (c === 0x5c) i += 2
      else if (c === 0x22) break
      else i++
    }
    i++
    return JSON.parse(text.slice(start, i)) as string
  }
  while (!done || stack.length > 0) {
    skipSpace()
    const c = text.charCodeAt(i)
    const top = stack[stack.length - 1]
    if (top?.kind === 'object' && top.key === undefined) {
      if (c === 0x7d) {
        i++
        stack.pop()
        put(top.value)
        continue
      }
      if (c === 0x2c) {
        i++
        continue
      }
      top.key = readString()
      skipSpace()
      i++ // the colon
      continue
    }
    if (c === 0x5d && top?.kind === 'array') {
      i++
      stack.pop()
      put(top.value)
      continue
    }
    if (c === 0x2c) {
      i++
      continue
    }
    if (c === 0x7b) {
      i++
      stack.push({ kind: 'object', value: {}, key: undefined })
    } else if (c === 0x5b) {
      i++
      stack.push({ kind: 'array', value: [] })
    } else if (c === 0x22) put(readString())
    else if (c === 0x74) {
      i += 4
      put(true)
    } else if (c === 0x66) {
      i += 5
      put(false)
    } else if (c === 0x6e) {
      i += 4
      put(null)
    } else {
      const start = i
      while (i < text.length) {
        const d = text.charCodeAt(i)
        if ((d >= 0x30 && d <= 0x39) || d === 0x2d || d === 0x2b || d === 0x2e || d === 0x65 || d === 0x45) i++
        else break
      }
      const source = text.slice(start, i)
      put(keepSource('', Number(source), { source }))
    }
  }
  return root
}

/**
 * Whether a plain-parsed number may have lost its text: a whole number (written `2` or `2.0`?), or
 * one beyond the double range (which makes the text invalid).
 */
export function isAmbiguousNumber(value: unknown): boolean {
  return typeof value === 'number' && (Number.isInteger(value) || !Number.isFinite(value))
}

/** A `needsSource` for objects whose top-level values all matter (props). */
export function hasAmbiguousValue(plain: unknown): boolean {
  if (typeof plain !== 'object' || plain === null) return true
  for (const key in plain) if (isAmbiguousNumber((plain as Record<string, unknown>)[key])) return true
  return false
}

/** Whether a parsed JSON value is an object (not an array, not null, not a `RawNumber`). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof RawNumber)
}

/**
 * The value of a JSON integer (a number written without fraction or exponent), or undefined for
 * anything else. Integers beyond 2^53 come back as the nearest double: right in sign and size.
 */
export function jsonInteger(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) ? value : undefined
  if (value instanceof RawNumber && !value.isFloat) return value.value
  return undefined
}

/** A JSON integer in decimal, exact at any size; undefined for anything else. */
export function jsonIntegerText(value: unknown): string | undefined {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) return undefined
    return Number.isSafeInteger(value) ? String(value) : BigInt(value).toString()
  }
  if (value instanceof RawNumber && !value.isFloat) return value.source
  return undefined
}
