// Trusted proxies (spec/plausible-dialect.md §6, deviation "security"): which socket peers may set
// the client address and the `x-plausible-ip-type` header. Shared by client-ip, geoip and ip-type.

import { BoundedCache } from './cache.ts'
import { normalizeIp, parseIPv4, parseIPv6 } from './ip.ts'
import { ConfigError } from './plugin.ts'

/** What the words in a `trustedProxies` list stand for. */
export const PROXY_WORDS: Readonly<Record<string, readonly string[]>> = {
  loopback: ['127.0.0.0/8', '::1/128'],
  // RFC 1918, IPv6 unique local (RFC 4193) and link-local: the ranges a proxy in the same cluster,
  // container network or host has. Carrier-grade NAT (100.64.0.0/10) is left out: it is shared with
  // strangers, so a peer there is not necessarily one's own proxy.
  private: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', 'fc00::/7', 'fe80::/10'],
}

/** A socket peer as seen by the trust check. */
export interface Peer {
  /** Whether proxy headers from this peer are believed. */
  readonly trusted: boolean
  /** The peer address normalised (`::ffff:a.b.c.d` → `a.b.c.d`), or the raw text when it is no address. */
  readonly ip: string
}

interface V6Range {
  net: Uint16Array
  bits: number
}

/**
 * Compiles a list of CIDR ranges, single addresses and the words `loopback` and `private` into a
 * test of normalised addresses (see `normalizeIp`). Throws `ConfigError(path, …)` for an entry that
 * is none of these.
 *
 * @example
 * const isPrivate = compileRanges(['private'], 'ranges')
 * isPrivate('10.1.2.3') // true
 */
export function compileRanges(entries: readonly string[], path: string): (ip: string) => boolean {
  const v4Nets: number[] = []
  const v4Masks: number[] = []
  const v6: V6Range[] = []
  const scratch = new Uint16Array(8)
  for (const entry of entries) {
    const expanded = PROXY_WORDS[entry.trim().toLowerCase()] ?? [entry]
    for (const cidr of expanded) {
      if (!addRange(cidr.trim(), v4Nets, v4Masks, v6)) {
        throw new ConfigError(path, `not an address, a CIDR range, "loopback" or "private": ${JSON.stringify(entry)}`)
      }
    }
  }
  if (v4Nets.length === 0 && v6.length === 0) return () => false
  return (ip) => {
    if (ip.indexOf(':') < 0) {
      const value = parseIPv4(ip)
      if (value < 0) return false
      for (let i = 0; i < v4Nets.length; i++) if ((value & v4Masks[i]!) >>> 0 === v4Nets[i]) return true
      return false
    }
    if (!parseIPv6(ip, scratch)) return false
    for (const range of v6) if (inV6Range(scratch, range)) return true
    return false
  }
}

/**
 * Compiles a `trustedProxies` list (see `compileRanges`) into a lookup of socket peers; verdicts are
 * cached per peer text, at most `cacheSize` of them.
 *
 * @example
 * const peerOf = compileTrust(['loopback', '203.0.113.0/24'], 'trustedProxies')
 * peerOf('::ffff:127.0.0.1') // { trusted: true, ip: '127.0.0.1' }
 */
export function compileTrust(entries: readonly string[], path: string, cacheSize = 10_000): (peer: string) => Peer {
  const matches = compileRanges(entries, path)
  const cache = new BoundedCache<Peer>(cacheSize)
  const scratch = new Uint16Array(8)
  return (peer) => {
    let verdict = cache.get(peer)
    if (verdict === undefined) {
      const ip = normalizeIp(peer, scratch)
      verdict = Object.freeze({ trusted: ip !== '' && matches(ip), ip: ip === '' ? peer : ip })
      cache.set(peer, verdict)
    }
    return verdict
  }
}

function addRange(cidr: string, v4Nets: number[], v4Masks: number[], v6: V6Range[]): boolean {
  const slash = cidr.indexOf('/')
  const addr = slash < 0 ? cidr : cidr.slice(0, slash)
  const bitsText = slash < 0 ? '' : cidr.slice(slash + 1)
  if (bitsText !== '' && !/^\d{1,3}$/.test(bitsText)) return false
  const v4 = parseIPv4(addr)
  if (v4 >= 0) {
    const bits = bitsText === '' ? 32 : Number(bitsText)
    if (bits > 32) return false
    pushV4(v4, bits, v4Nets, v4Masks)
    return true
  }
  const groups = new Uint16Array(8)
  if (!parseIPv6(addr, groups)) return false
  const bits = bitsText === '' ? 128 : Number(bitsText)
  if (bits > 128) return false
  // An IPv4-mapped range is an IPv4 range: peers are normalised to plain IPv4 before matching.
  if (bits >= 96 && groups[0] === 0 && groups[1] === 0 && groups[2] === 0) {
    if (groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
      pushV4(groups[6]! * 65536 + groups[7]!, bits - 96, v4Nets, v4Masks)
      return true
    }
  }
  const net = new Uint16Array(8)
  for (let g = 0; g < 8; g++) net[g] = groups[g]! & groupMask(bits, g)
  v6.push({ net, bits })
  return true
}

function pushV4(value: number, bits: number, nets: number[], masks: number[]): void {
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0
  masks.push(mask)
  nets.push((value & mask) >>> 0)
}

function groupMask(bits: number, group: number): number {
  const covered = bits - group * 16
  if (covered >= 16) return 0xffff
  if (covered <= 0) return 0
  return (0xffff << (16 - covered)) & 0xffff
}

function inV6Range(groups: Uint16Array, range: V6Range): boolean {
  for (let g = 0; g < 8; g++) {
    const mask = groupMask(range.bits, g)
    if (mask === 0) return true
    if ((groups[g]! & mask) !== range.net[g]) return false
  }
  return true
}
