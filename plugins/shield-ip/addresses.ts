// IP addresses and CIDR ranges for the IP blocklist (spec/plausible-dialect.md §7, `site_ip_blocklist`).
//
// Addresses are parsed by hand (no regex sees request data) into four 32-bit words; an IPv4 address
// and its IPv4-mapped IPv6 form (`::ffff:1.2.3.4`, what a dual-stack socket reports) are the same
// address, so `1.2.3.4` blocks both spellings.

/** Four unsigned 32-bit words, most significant first. IPv4 is `[0, 0, 0xffff, v4]`. */
export type Address = [number, number, number, number]

const V4_MAPPED_PREFIX = 0xffff

/** Parses dotted-quad IPv4 (`1.2.3.4`); undefined for anything else. */
function parseV4(text: string, start: number, end: number): number | undefined {
  let value = 0
  let parts = 0
  let i = start
  while (i <= end) {
    let octet = 0
    let digits = 0
    while (i < end) {
      const c = text.charCodeAt(i) - 48
      if (c < 0 || c > 9) break
      octet = octet * 10 + c
      digits++
      i++
    }
    // No empty parts, no leading zeros (`010` is octal to some parsers), nothing over 255.
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && text.charCodeAt(i - digits) === 48)) return
    value = value * 256 + octet
    parts++
    if (i === end) break
    if (text.charCodeAt(i) !== 46 /* . */ || parts === 4) return
    i++
  }
  return parts === 4 ? value : undefined
}

function hexDigit(code: number): number {
  if (code >= 48 && code <= 57) return code - 48
  const lower = code | 0x20
  if (lower >= 97 && lower <= 102) return lower - 87
  return -1
}

/** Parses IPv6 text (with `::`, an embedded IPv4 tail, and a `%zone` that is ignored). */
function parseV6(text: string, start: number, end: number): Address | undefined {
  const zone = text.indexOf('%', start)
  if (zone >= 0 && zone < end) end = zone
  const groups: number[] = []
  let gap = -1 // index in `groups` where `::` stands
  let i = start
  if (text.startsWith('::', i)) {
    gap = 0
    i += 2
  }
  while (i < end) {
    let value = 0
    let digits = 0
    const groupStart = i
    while (i < end) {
      const d = hexDigit(text.charCodeAt(i))
      if (d < 0) break
      value = value * 16 + d
      digits++
      i++
    }
    if (i < end && text.charCodeAt(i) === 46 /* . */) {
      // An IPv4 tail: the last 32 bits.
      const v4 = parseV4(text, groupStart, end)
      if (v4 === undefined) return
      groups.push(v4 >>> 16, v4 & 0xffff)
      i = end
      break
    }
    if (digits === 0 || digits > 4) return
    groups.push(value)
    if (i === end) break
    if (text.charCodeAt(i) !== 58 /* : */) return
    i++
    if (text.charCodeAt(i) === 58) {
      if (gap >= 0) return
      gap = groups.length
      i++
    } else if (i === end) return
  }
  if (gap < 0 ? groups.length !== 8 : groups.length > 7) return
  const full = new Array<number>(8).fill(0)
  const tail = gap < 0 ? 0 : groups.length - gap
  for (let g = 0; g < groups.length - tail; g++) full[g] = groups[g]!
  for (let g = 0; g < tail; g++) full[8 - tail + g] = groups[gap + g]!
  const word = (k: number) => ((full[2 * k]! << 16) | full[2 * k + 1]!) >>> 0
  return [word(0), word(1), word(2), word(3)]
}

/** Parses an IPv4 or IPv6 address (brackets allowed); undefined when it is not one. Never throws. */
export function parseAddress(text: string): Address | undefined {
  let start = 0
  let end = text.length
  if (end === 0 || end > 64) return
  if (text.charCodeAt(0) === 91 /* [ */ && text.charCodeAt(end - 1) === 93 /* ] */) {
    start = 1
    end--
  }
  if (text.indexOf(':', start) < 0) {
    const v4 = parseV4(text, start, end)
    return v4 === undefined ? undefined : [0, 0, V4_MAPPED_PREFIX, v4]
  }
  return parseV6(text, start, end)
}

function isV4(address: Address): boolean {
  return address[0] === 0 && address[1] === 0 && address[2] === V4_MAPPED_PREFIX
}

/** A range: the network's words and a mask per word. */
interface Range {
  network: Address
  mask: Address
}

function maskWords(bits: number): Address {
  const mask: Address = [0, 0, 0, 0]
  for (let k = 0; k < 4; k++) {
    const take = Math.max(0, Math.min(32, bits - 32 * k))
    mask[k] = take === 0 ? 0 : take === 32 ? 0xffffffff : (0xffffffff << (32 - take)) >>> 0
  }
  return mask
}

/** Parses `addr` or `addr/prefix`; undefined when either part is invalid. */
export function parseRange(text: string): Range | undefined {
  const slash = text.indexOf('/')
  const address = parseAddress(slash < 0 ? text.trim() : text.slice(0, slash).trim())
  if (!address) return
  const v4 = isV4(address) && !text.includes(':')
  const width = v4 ? 32 : 128
  let bits = width
  if (slash >= 0) {
    const suffix = text.slice(slash + 1).trim()
    if (!/^\d{1,3}$/.test(suffix)) return
    bits = Number(suffix)
    if (bits > width) return
  }
  // An IPv4 prefix counts from the start of the 32 bits it lives in.
  const mask = maskWords(v4 ? 96 + bits : bits)
  const network: Address = [
    (address[0] & mask[0]) >>> 0,
    (address[1] & mask[1]) >>> 0,
    (address[2] & mask[2]) >>> 0,
    (address[3] & mask[3]) >>> 0,
  ]
  return { network, mask }
}

function key(a: Address): string {
  return `${a[0]}.${a[1]}.${a[2]}.${a[3]}`
}

function inRange(address: Address, { network, mask }: Range): boolean {
  return (
    (address[0] & mask[0]) >>> 0 === network[0] &&
    (address[1] & mask[1]) >>> 0 === network[1] &&
    (address[2] & mask[2]) >>> 0 === network[2] &&
    (address[3] & mask[3]) >>> 0 === network[3]
  )
}

/** A compiled blocklist: exact addresses in a Set, ranges scanned in order. */
export interface IpRuleSet {
  readonly empty: boolean
  matches(ip: string): boolean
}

/** Compiles rules; `invalid` receives each entry that is neither an address nor a range. */
export function compileIpRules(rules: readonly string[], invalid: (rule: string) => void): IpRuleSet {
  const exact = new Set<string>()
  const ranges: Range[] = []
  // IPv4 clients are the common case: their exact rules and the ranges inside the IPv4-mapped
  // space are kept as plain numbers, so a dotted-quad client IP is checked without allocating.
  const exactV4 = new Set<number>()
  const v4Networks: number[] = []
  const v4Masks: number[] = []
  const wideRanges: Range[] = [] // ranges wider than the IPv4-mapped /96 (`::/0`, say)
  for (const rule of rules) {
    const range = parseRange(rule)
    if (!range) {
      invalid(rule)
      continue
    }
    const { network, mask } = range
    if (mask[3] === 0xffffffff) exact.add(key(network))
    else ranges.push(range)
    const mapped = network[0] === 0 && network[1] === 0 && network[2] === V4_MAPPED_PREFIX
    const fullV6Prefix = mask[0] === 0xffffffff && mask[1] === 0xffffffff && mask[2] === 0xffffffff
    if (mapped && fullV6Prefix) {
      if (mask[3] === 0xffffffff) exactV4.add(network[3])
      else {
        v4Networks.push(network[3])
        v4Masks.push(mask[3])
      }
    } else if (!fullV6Prefix) wideRanges.push(range)
  }
  return {
    empty: exact.size === 0 && ranges.length === 0,
    matches(ip) {
      if (ip.indexOf(':') < 0 && ip.charCodeAt(0) !== 91 /* [ */) {
        const v4 = parseV4(ip, 0, ip.length)
        if (v4 === undefined) return false
        if (exactV4.has(v4)) return true
        for (let i = 0; i < v4Networks.length; i++) if ((v4 & v4Masks[i]!) >>> 0 === v4Networks[i]) return true
        if (wideRanges.length === 0) return false
        const address: Address = [0, 0, V4_MAPPED_PREFIX, v4]
        for (const range of wideRanges) if (inRange(address, range)) return true
        return false
      }
      const address = parseAddress(ip)
      if (!address) return false
      if (exact.has(key(address))) return true
      for (const range of ranges) if (inRange(address, range)) return true
      return false
    },
  }
}
