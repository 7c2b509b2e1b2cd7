// Trusted proxies (spec/plausible-dialect.md §6, deviation "security"): which socket peers may set
// the client address and the `x-plausible-ip-type` header. Shared by client-ip, geoip and ip-type.

import { BoundedCache } from './cache.ts'
import { cleanAddress, normalizeIp, parseIPv4, parseIPv6 } from './ip.ts'
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
  return matcher(parseRanges(entries, path))
}

interface Ranges {
  v4Nets: number[]
  v4Masks: number[]
  v6: V6Range[]
}

function parseRanges(entries: readonly string[], path: string): Ranges {
  const ranges: Ranges = { v4Nets: [], v4Masks: [], v6: [] }
  for (const entry of entries) {
    const expanded = PROXY_WORDS[entry.trim().toLowerCase()] ?? [entry]
    for (const cidr of expanded) {
      if (!addRange(cidr.trim(), ranges.v4Nets, ranges.v4Masks, ranges.v6)) {
        throw new ConfigError(path, `not an address, a CIDR range, "loopback" or "private": ${JSON.stringify(entry)}`)
      }
    }
  }
  return ranges
}

function matcher({ v4Nets, v4Masks, v6 }: Ranges): (ip: string) => boolean {
  const scratch = new Uint16Array(8)
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

/** Whether one IPv4 range holds all of 127.0.0.0/8 and one IPv6 range holds ::1. */
function coversLoopback({ v4Nets, v4Masks, v6 }: Ranges): boolean {
  // Masks are leading ones, so a prefix of at most 8 bits is a mask of at most 0xff000000.
  const v4 = v4Nets.some((net, i) => v4Masks[i]! <= 0xff000000 && (0x7f000000 & v4Masks[i]!) >>> 0 === net)
  const one = new Uint16Array(8)
  one[7] = 1
  return v4 && v6.some((range) => inV6Range(one, range))
}

/** A compiled `trustedProxies` list: the verdict on a peer address, cached per address text. */
export interface PeerTrust {
  (peer: string): Peer
  /**
   * Whether every loopback address is trusted (all of 127.0.0.0/8 and ::1). Then a peer known to be
   * on this machine (`event.peerIsLocal`) is trusted without its address being read.
   */
  readonly trustsLocal: boolean
}

/**
 * Compiles a `trustedProxies` list (see `compileRanges`) into a lookup of socket peers; verdicts are
 * cached per peer text, at most `cacheSize` of them.
 *
 * @example
 * const peerOf = compileTrust(['loopback', '203.0.113.0/24'], 'trustedProxies')
 * peerOf('::ffff:127.0.0.1') // { trusted: true, ip: '127.0.0.1' }
 */
export function compileTrust(entries: readonly string[], path: string, cacheSize = 10_000): PeerTrust {
  const ranges = parseRanges(entries, path)
  const matches = matcher(ranges)
  const cache = new BoundedCache<Peer>(cacheSize)
  const scratch = new Uint16Array(8)
  const peerOf = (peer: string): Peer => {
    let verdict = cache.get(peer)
    if (verdict === undefined) {
      const ip = normalizeIp(peer, scratch)
      verdict = Object.freeze({ trusted: ip !== '' && matches(ip), ip: ip === '' ? peer : ip })
      cache.set(peer, verdict)
    }
    return verdict
  }
  return Object.assign(peerOf, { trustsLocal: coversLoopback(ranges) })
}

/**
 * Whether the event's TCP peer is a trusted proxy. A peer on this machine (the listener is bound to
 * a loopback address) is, when every loopback address is trusted, without reading its address: a
 * process here can connect from 127.0.0.1 as well as from any other address this machine has.
 */
export function peerTrusted(
  trust: PeerTrust,
  event: { readonly peerIsLocal: boolean; readonly peerIp: string },
): boolean {
  return (event.peerIsLocal && trust.trustsLocal) || trust(event.peerIp).trusted
}

const isLoopback = compileRanges(['loopback'], 'loopback')

/**
 * Whether a listen address is a loopback address (`server.host: 127.0.0.1` or `::1`): such a
 * listener takes connections from this machine only. Names (`localhost`) are not resolved: false.
 */
export function isLoopbackListener(host: string): boolean {
  const ip = cleanAddress(host, new Uint16Array(8))
  return ip !== '' && isLoopback(ip)
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
