// graphemesEnd (core/text.ts) counts ASCII itself and hands the rest to Intl.Segmenter: it must cut
// where the segmenter alone cuts (UAX #29), whatever mix of ASCII and joining characters comes.

import { describe, expect, test } from 'bun:test'
import { graphemesEnd } from '../../core/text.ts'

const segmenter = new Intl.Segmenter(undefined, { granularity: 'grapheme' })

/** The reference: the segmenter over the whole string. */
function segmenterEnd(s: string, limit: number): number {
  let count = 0
  for (const { index } of segmenter.segment(s)) {
    if (count === limit) return index
    count++
  }
  return s.length
}

// Pieces where a boundary depends on the neighbours: CR LF, a combining mark after ASCII, ZWJ emoji
// sequences, regional-indicator pairs (flags), Hangul syllable parts, a prepend mark, a lone surrogate.
const PIECES = [
  'a',
  'Z',
  '/',
  ' ',
  '\r',
  '\n',
  '\t',
  '\u0301', // combining acute accent (Extend)
  '\u200d', // zero-width joiner
  '\ufe0f', // variation selector 16
  '👩',
  '💻',
  '\u{1f1e9}', // regional indicator D
  '\u{1f1ea}', // regional indicator E
  '\u1100', // Hangul L
  '\u1161', // Hangul V
  '\u11a8', // Hangul T
  '\u0600', // Arabic number sign (Prepend)
  '\u0903', // Devanagari sign visarga (SpacingMark)
  'é',
  '\ud800', // lone high surrogate
]

/** A deterministic generator (xorshift), so a failure names its case. */
function strings(count: number, seed: number): string[] {
  let x = seed
  const next = () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 2 ** 32
  }
  const out: string[] = []
  for (let k = 0; k < count; k++) {
    const length = Math.floor(next() * 40)
    let s = ''
    // Mostly ASCII runs, as in URLs, with the tricky pieces dropped in.
    for (let i = 0; i < length; i++)
      s += next() < 0.6 ? 'abc/.?=&%'[Math.floor(next() * 9)] : PIECES[Math.floor(next() * PIECES.length)]
    out.push(s)
  }
  return out
}

describe('graphemesEnd', () => {
  test('cuts where Intl.Segmenter alone cuts, for every limit, on 3,000 mixed strings', () => {
    let checked = 0
    for (const s of strings(3000, 0x9e3779b9)) {
      for (let limit = 0; limit <= s.length + 1; limit++) {
        const got = graphemesEnd(s, limit)
        if (got !== segmenterEnd(s, limit)) {
          throw new Error(
            `graphemesEnd(${JSON.stringify(s)}, ${limit}) = ${got}, segmenter says ${segmenterEnd(s, limit)}`,
          )
        }
        checked++
      }
    }
    expect(checked).toBeGreaterThan(30_000)
  })

  test('the cases the ASCII count must not get wrong', () => {
    // CR LF is one cluster.
    expect(graphemesEnd('ab\r\ncd', 3)).toBe(4)
    // A combining mark joins the ASCII letter before it: "é" here is two code units.
    expect(graphemesEnd('abe\u0301cd', 3)).toBe(4)
    expect(graphemesEnd('abe\u0301cd', 2)).toBe(2)
    // A flag is two regional indicators (four code units) after ASCII.
    expect(graphemesEnd('x\u{1f1e9}\u{1f1ea}y', 2)).toBe(5)
    // Fewer clusters than the limit, or exactly as many: the whole string.
    expect(graphemesEnd('e\u0301'.repeat(5), 5)).toBe(10)
    expect(graphemesEnd('abc', 3)).toBe(3)
    expect(graphemesEnd('abcd', 3)).toBe(3)
  })

  test('a long ASCII string is cut at the limit, as Plausible cuts a referrer at 2,000', () => {
    const long = `http://${'a.'.repeat(1000)}/${'a@'.repeat(1000)}`
    expect(graphemesEnd(long, 2000)).toBe(2000)
    expect(graphemesEnd(`${'a'.repeat(1999)}e\u0301x`, 2000)).toBe(2001)
  })
})
