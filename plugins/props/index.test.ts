// Tests spec/plausible-dialect.md §4 (props) through the props module's public API.

import { describe, expect, test } from 'bun:test'
import { parseWithoutRecursion } from '../../core/json.ts'
import { setupPlugin } from '../../core/testing.ts'
import plugin, {
  formatElixirFloat,
  INVALID_JSON,
  isBlank,
  jsonIntegerText,
  PROPS_TOO_LONG,
  parseJson,
  RawNumber,
  sanitiseProps,
  utf8Length,
} from './index.ts'

/** Props as the dialect sees them: decoded from the JSON text of a body. */
function fromJson(text: string, name = 'Signup', pathname = '/page') {
  return sanitiseProps(parseJson(text), name, pathname)
}

describe('floats print as Elixir prints them', () => {
  test.each([
    ['2.0', '2.0'],
    ['1.5', '1.5'],
    ['100.0', '100.0'],
    ['1000.0', '1.0e3'],
    ['1500.0', '1.5e3'],
    ['0.001', '0.001'],
    ['0.00001', '1.0e-5'],
    // One significant digit after the point: Erlang picks scientific on a length tie.
    ['0.0001', '1.0e-4'],
    ['0.00012', '1.2e-4'],
    ['0.012', '0.012'],
    ['0.1', '0.1'],
    ['123456.0', '123456.0'],
    ['1234567.0', '1234567.0'],
    ['15.99', '15.99'],
    ['1e15', '1.0e15'],
    ['1e21', '1.0e21'],
    ['9007199254740991.0', '9007199254740991.0'],
    // From 2^53 up, always scientific.
    ['9007199254740992.0', '9.007199254740992e15'],
    ['-1.5', '-1.5'],
    ['-1000.0', '-1.0e3'],
    ['0.0', '0.0'],
    ['-0.0', '-0.0'],
    ['1E2', '100.0'],
    ['2.5e-7', '2.5e-7'],
    ['5e-324', '5.0e-324'],
    ['1.7976931348623157e308', '1.7976931348623157e308'],
  ])('%s → %s', (json, expected) => {
    expect(fromJson(`{"f":${json}}`)).toEqual({ f: expected })
  })

  test('formatElixirFloat on plain doubles', () => {
    expect(formatElixirFloat(2)).toBe('2.0')
    expect(formatElixirFloat(0.3)).toBe('0.3')
    expect(formatElixirFloat(1 / 3)).toBe('0.3333333333333333')
  })
})

describe('parseJson keeps number text', () => {
  test('integers up to 2^53 stay numbers', () => {
    expect(parseJson('{"a":3,"b":-7,"c":[1,2]}')).toEqual({ a: 3, b: -7, c: [1, 2] })
  })

  test('floats become RawNumber, even when whole', () => {
    const parsed = parseJson('{"a":2.0,"b":1e3}') as Record<string, RawNumber>
    expect(parsed.a).toBeInstanceOf(RawNumber)
    expect(parsed.a?.isFloat).toBe(true)
    expect(parsed.a?.source).toBe('2.0')
    expect(parsed.b?.value).toBe(1000)
  })

  test('integers beyond 2^53 keep their digits', () => {
    const parsed = parseJson('{"a":12345678901234567890}') as Record<string, unknown>
    expect(jsonIntegerText(parsed.a)).toBe('12345678901234567890')
  })

  test('a number-like text inside a string changes nothing', () => {
    expect(parseJson('{"u":"http://a:1.5/x","n":3}')).toEqual({ u: 'http://a:1.5/x', n: 3 })
  })

  test.each(['', '{', 'defnotjson', '{"a":1,}', "{'a':1}", '{"a":1e400}'])('invalid JSON %p', (text) => {
    expect(parseJson(text)).toBe(INVALID_JSON)
  })
})

describe('which pairs survive', () => {
  test('booleans and integers become strings', () => {
    expect(sanitiseProps({ bool_test: true, no: false, number_test: 12, neg: -3 }, 'Signup', '/')).toEqual({
      bool_test: 'true',
      no: 'false',
      number_test: '12',
      neg: '-3',
    })
  })

  test('drops pairs with array or object values', () => {
    expect(fromJson('{"wat":["some-thing"],"foo":{"bar":"baz"},"other":"key"}')).toEqual({ other: 'key' })
  })

  test('drops null, empty and whitespace-only values and keys', () => {
    expect(
      fromJson('{"a":null,"b":"","c":"   ","      ":"    ","    ":"value","key":"\\u00a0\\t","good":true}'),
    ).toEqual({
      good: 'true',
    })
  })

  test('keeps leading whitespace when there is more after it', () => {
    expect(fromJson('{" k":"  v "}')).toEqual({ ' k': '  v ' })
  })

  test('integers beyond 2^53 print exactly', () => {
    expect(fromJson('{"big":12345678901234567890,"neg":-98765432109876543210}')).toEqual({
      big: '12345678901234567890',
      neg: '-98765432109876543210',
    })
  })

  test('a JSON string that decodes to an object is used', () => {
    expect(sanitiseProps('{"number_test":12,"f":2.0}', 'Signup', '/')).toEqual({ number_test: '12', f: '2.0' })
  })

  test.each([['"show-more:button"'], ['[1,2]'], ['not json'], [42], [null], [true], [[{ a: 1 }]]])(
    'anything but an object counts as {}: %p',
    (raw) => {
      expect(sanitiseProps(raw, 'Signup', '/')).toEqual({})
    },
  )

  test('a __proto__ key is an ordinary prop', () => {
    const props = fromJson('{"__proto__":"x","a":"b"}')
    expect(Object.keys(props)).toEqual(['__proto__', 'a'])
    expect(Object.getPrototypeOf(props)).toBe(Object.prototype)
  })
})

describe('path prop for path goals', () => {
  test.each(['404', 'WP Form Completions', 'Form: Submission'])('%s gets path = pathname', (name) => {
    expect(sanitiseProps({ a: '1' }, name, '/missing')).toEqual({ path: '/missing', a: '1' })
  })

  test('an existing path prop is kept', () => {
    expect(sanitiseProps({ path: '/mine' }, '404', '/missing')).toEqual({ path: '/mine' })
  })

  test('a path prop that did not survive is replaced by the pathname', () => {
    expect(sanitiseProps({ path: '  ' }, '404', '/missing')).toEqual({ path: '/missing' })
  })

  test('other events get no path', () => {
    expect(sanitiseProps({}, 'pageview', '/missing')).toEqual({})
  })
})

describe('at most 30 props', () => {
  const many = (n: number) =>
    Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${String(i).padStart(2, '0')}`, 'v']))

  test('30 props are all kept', () => {
    expect(Object.keys(sanitiseProps(many(30), 'Signup', '/'))).toHaveLength(30)
  })

  test('beyond 30, the greatest keys in byte order are kept', () => {
    const kept = Object.keys(sanitiseProps(many(50), 'Signup', '/')).sort()
    expect(kept).toEqual(Array.from({ length: 30 }, (_, i) => `k${i + 20}`))
  })

  test('an added path always survives the cut, with the 29 greatest keys', () => {
    const kept = Object.keys(sanitiseProps(many(40), '404', '/p')).sort()
    expect(kept).toHaveLength(30)
    expect(kept).toContain('path')
    expect(kept.filter((k) => k !== 'path')).toEqual(Array.from({ length: 29 }, (_, i) => `k${i + 11}`))
  })

  test('byte order, not UTF-16 order, decides', () => {
    // U+FF5E sorts below U+1F600 in UTF-8 but above it in UTF-16 code units.
    const props: Record<string, string> = { '\uff5e': 'v', '\u{1f600}': 'v' }
    for (let i = 1; i <= 29; i++) props[String.fromCodePoint(0x1f600 + i)] = 'v'
    const kept = Object.keys(sanitiseProps(props, 'Signup', '/'))
    expect(kept).toHaveLength(30)
    expect(kept).toContain('\u{1f600}')
    expect(kept).not.toContain('\uff5e')
  })
})

describe('length limits', () => {
  test('a 300-byte key and a 2000-byte value pass', () => {
    expect(sanitiseProps({ ['k'.repeat(300)]: 'v'.repeat(2000) }, 'Signup', '/')).not.toBe(PROPS_TOO_LONG)
  })

  test('a key over 300 bytes fails', () => {
    expect(sanitiseProps({ ['a'.repeat(301)]: 'abc' }, 'Signup', '/')).toBe(PROPS_TOO_LONG)
  })

  test('a value over 2000 bytes fails', () => {
    expect(sanitiseProps({ abc: 'a'.repeat(2001) }, 'Signup', '/')).toBe(PROPS_TOO_LONG)
  })

  test('bytes, not characters, count', () => {
    expect(sanitiseProps({ ['é'.repeat(151)]: 'x' }, 'Signup', '/')).toBe(PROPS_TOO_LONG)
    expect(sanitiseProps({ ['é'.repeat(150)]: 'x' }, 'Signup', '/')).not.toBe(PROPS_TOO_LONG)
    expect(sanitiseProps({ k: '€'.repeat(667) }, 'Signup', '/')).toBe(PROPS_TOO_LONG)
  })

  test('a long pair cut off by the 30-prop limit is not checked', () => {
    const props: Record<string, string> = { a: 'x'.repeat(5000) }
    for (let i = 0; i < 30; i++) props[`z${i}`] = 'v'
    expect(sanitiseProps(props, 'Signup', '/')).not.toBe(PROPS_TOO_LONG)
  })
})

describe('text helpers', () => {
  test('utf8Length', () => {
    expect(utf8Length('aé€😀')).toBe(1 + 2 + 3 + 4)
  })

  test('isBlank uses Unicode whitespace', () => {
    expect(isBlank(' \t\n\u00a0\u3000')).toBe(true)
    expect(isBlank('\ufeff')).toBe(false)
  })
})

describe('the props plugin', () => {
  test('adds no pipeline step and takes no options', async () => {
    const instance = await setupPlugin(plugin, {})
    expect(instance.run).toBeUndefined()
    await expect(setupPlugin(plugin, { max: 10 })).rejects.toThrow()
  })
})

describe('parseJson on nesting deeper than the reviver can walk', () => {
  test('keeps float text beside a 10^4-deep array, like the recursive parse', () => {
    const deep = `${'['.repeat(10_000)}${']'.repeat(10_000)}`
    const value = parseJson(
      `{"price":2.0,"big":12345678901234567890,"s":"a\\"b","o":{"__proto__":1},"deep":${deep}}`,
    ) as Record<string, unknown>
    expect(value.price).toEqual(new RawNumber(2, true, '2.0'))
    expect((value.big as RawNumber).source).toBe('12345678901234567890')
    expect(value.s).toBe('a"b')
    expect(Object.keys(value.o as object)).toEqual(['__proto__'])
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  test('gives the same result as the recursive parse on ordinary bodies', () => {
    const text = '{"a":[1,2.5,{"b":null,"c":true,"d":false}],"e":"x","f":-0.0,"g":1e3,"h":[]}'
    expect(parseWithoutRecursion(text)).toEqual(parseJson(text) as object)
  })
})
