// Floats printed the way Plausible (Elixir's Float.to_string, i.e. Erlang's `float_to_binary(F,
// [short])`) prints them, for prop values (spec/plausible-dialect.md §4.2).

/**
 * The shortest round-trip digits, in plain or scientific notation, whichever is shorter, always with a
 * fraction; scientific from 2^53 up. Erlang breaks length ties towards plain notation except for a
 * single significant digit after the point (`0.0001` → `1.0e-4`, six characters either way).
 *
 * @example formatElixirFloat(2) // "2.0"; formatElixirFloat(1000) // "1.0e3"; formatElixirFloat(0.001) // "0.001"
 */
export function formatElixirFloat(x: number): string {
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0'
  if (!Number.isFinite(x)) return String(x)
  const negative = x < 0
  const abs = negative ? -x : x
  // ECMAScript's Number#toString already yields the shortest round-trip digits; only the layout differs.
  const text = String(abs)
  const e = text.indexOf('e')
  const mantissa = e === -1 ? text : text.slice(0, e)
  let place = e === -1 ? 0 : Number(text.slice(e + 1))
  const dot = mantissa.indexOf('.')
  let digits = mantissa
  if (dot !== -1) {
    digits = mantissa.slice(0, dot) + mantissa.slice(dot + 1)
    place -= mantissa.length - dot - 1
  }
  let start = 0
  while (start < digits.length - 1 && digits.charCodeAt(start) === 0x30) start++
  let end = digits.length
  while (end > start + 1 && digits.charCodeAt(end - 1) === 0x30) {
    end--
    place++
  }
  digits = digits.slice(start, end)
  const out = layout(digits, place, abs)
  return negative ? `-${out}` : out
}

/** Erlang's choice between notations for the value `digits × 10^place`. */
function layout(digits: string, place: number, abs: number): string {
  const length = digits.length
  const exponent = place + length - 1
  const exponentText = String(exponent)
  const exponentCost = exponentText.length + 2
  if (place < 0) {
    if (exponent >= 0) return `${digits.slice(0, length + place)}.${digits.slice(length + place)}`
    if (2 - place - length <= exponentCost) return `0.${'0'.repeat(-place - length)}${digits}`
    return scientific(digits, exponentText)
  }
  const dot = length === 1 ? 1 : 0
  if (exponentCost + dot >= place + 2 && abs < 2 ** 53) return `${digits}${'0'.repeat(place)}.0`
  return scientific(digits, exponentText)
}

function scientific(digits: string, exponentText: string): string {
  return digits.length === 1 ? `${digits}.0e${exponentText}` : `${digits[0]}.${digits.slice(1)}e${exponentText}`
}
