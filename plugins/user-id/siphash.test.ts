// SipHash-2-4 (spec/plausible-dialect.md §9): the spec's test vector, the reference vectors, and
// agreement with a plain BigInt implementation on random inputs.

import { expect, test } from 'bun:test'
import fc from 'fast-check'
import { sipHash24, sipKey } from './siphash.ts'

const utf8 = (s: string) => new TextEncoder().encode(s)

test('the spec vector: key "0123456789ABCDEF", message "hello"', () => {
  expect(sipHash24(sipKey(utf8('0123456789ABCDEF')), utf8('hello'))).toBe(4402678656023170274n)
})

// Key 00 01 … 0f, message 00 01 … (n-1): values from the SipHash reference vectors (n ≤ 63) and
// OpenSSL's SIPHASH MAC (all n), read as little-endian 64-bit integers.
const REFERENCE: [number, bigint][] = [
  [0, 0x726fdb47dd0e0e31n],
  [1, 0x74f839c593dc67fdn],
  [2, 0x0d6c8009d9a94f5an],
  [3, 0x85676696d7fb7e2dn],
  [4, 0xcf2794e0277187b7n],
  [5, 0x18765564cd99a68dn],
  [6, 0xcbc9466e58fee3cen],
  [7, 0xab0200f58b01d137n],
  [8, 0x93f5f5799a932462n],
  [9, 0x9e0082df0ba9e4b0n],
  [15, 0xa129ca6149be45e5n],
  [16, 0x3f2acc7f57c29bdbn],
  [17, 0x699ae9f52cbe4794n],
  [31, 0x32d892fad841c342n],
  [63, 0x958a324ceb064572n],
  [64, 0xacd2c40b8502cad8n],
  [255, 0xa9c169fec74db21an],
  [256, 0x999d0526d2a7bfd7n],
  [300, 0x4b0b710db6117839n],
]

const referenceKey = sipKey(Uint8Array.from({ length: 16 }, (_, i) => i))

test.each(REFERENCE)('reference vector, %i bytes', (length, expected) => {
  const message = Uint8Array.from({ length }, (_, i) => i % 256)
  expect(sipHash24(referenceKey, message)).toBe(expected)
})

test('hashes a prefix when given a length', () => {
  const message = Uint8Array.from({ length: 100 }, (_, i) => i)
  expect(sipHash24(referenceKey, message, 15)).toBe(0xa129ca6149be45e5n)
})

test('a key of another size is refused', () => {
  expect(() => sipKey(new Uint8Array(15))).toThrow(RangeError)
})

// The algorithm as the paper states it, on BigInt words: slow and obviously right.
function slowSipHash(key: Uint8Array, data: Uint8Array): bigint {
  const M = (1n << 64n) - 1n
  const rotl = (x: bigint, b: bigint) => ((x << b) | (x >> (64n - b))) & M
  const word = (b: Uint8Array, i: number) => {
    let w = 0n
    for (let j = 7; j >= 0; j--) w = (w << 8n) | BigInt(b[i + j] ?? 0)
    return w
  }
  const k0 = word(key, 0)
  const k1 = word(key, 8)
  let v0 = k0 ^ 0x736f6d6570736575n
  let v1 = k1 ^ 0x646f72616e646f6dn
  let v2 = k0 ^ 0x6c7967656e657261n
  let v3 = k1 ^ 0x7465646279746573n
  const round = () => {
    v0 = (v0 + v1) & M
    v1 = rotl(v1, 13n) ^ v0
    v0 = rotl(v0, 32n)
    v2 = (v2 + v3) & M
    v3 = rotl(v3, 16n) ^ v2
    v0 = (v0 + v3) & M
    v3 = rotl(v3, 21n) ^ v0
    v2 = (v2 + v1) & M
    v1 = rotl(v1, 17n) ^ v2
    v2 = rotl(v2, 32n)
  }
  const padded = new Uint8Array(data.length - (data.length % 8) + 8)
  padded.set(data)
  padded[padded.length - 1] = data.length & 0xff
  for (let i = 0; i < padded.length; i += 8) {
    const m = word(padded, i)
    v3 ^= m
    round()
    round()
    v0 ^= m
  }
  v2 ^= 0xffn
  for (let r = 0; r < 4; r++) round()
  return v0 ^ v1 ^ v2 ^ v3
}

test('agrees with the plain BigInt algorithm on random keys and messages', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.uint8Array({ maxLength: 300 }), (key, data) => {
      expect(sipHash24(sipKey(key), data)).toBe(slowSipHash(key, data))
    }),
    { numRuns: 500 },
  )
})

test('costs about half a microsecond for a typical input', () => {
  const key = sipKey(utf8('0123456789ABCDEF'))
  const message = utf8(
    `${'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 '}203.0.113.7example.comexample.com`,
  )
  let sink = 0n
  for (let i = 0; i < 20_000; i++) sink ^= sipHash24(key, message)
  const runs = 200_000
  // CPU time, not wall time: the test machine is shared, and a busy neighbour must not fail this.
  const started = process.cpuUsage()
  for (let i = 0; i < runs; i++) sink ^= sipHash24(key, message)
  const used = process.cpuUsage(started)
  const ns = ((used.user + used.system) * 1000) / runs
  console.log(`sipHash24: ${ns.toFixed(0)} ns of CPU per ${message.length}-byte message`)
  expect(sink).not.toBe(-1n)
  expect(ns).toBeLessThan(2000)
})
