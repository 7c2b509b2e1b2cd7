// The client-ip plugin: spec/plausible-dialect.md §6 (client IP from trusted proxies' headers).

import { Type } from '@sinclair/typebox'
import { cleanAddress, firstListEntry, forwardedFor } from '../../core/ip.ts'
import { definePlugin } from '../../core/plugin.ts'
import { compileTrust } from '../../core/trust.ts'

/** Plausible's header order (`PlausibleWeb.RemoteIP`); the socket address comes after all of them. */
export const CLIENT_IP_HEADERS = [
  'x-plausible-ip',
  'cf-connecting-ip',
  'b-forwarded-for',
  'x-forwarded-for',
  'forwarded',
] as const

type HeaderName = (typeof CLIENT_IP_HEADERS)[number]
type Reader = (value: string, scratch: Uint16Array) => string

// How each header carries the address: one address, a comma list (the client first), or RFC 7239.
const READERS: Record<HeaderName, Reader> = {
  'x-plausible-ip': cleanAddress,
  'cf-connecting-ip': cleanAddress,
  'b-forwarded-for': firstListEntry,
  'x-forwarded-for': firstListEntry,
  forwarded: forwardedFor,
}

export default definePlugin({
  name: 'client-ip',
  stage: 'identify',
  summary: "Sets the client's IP address from a trusted proxy's headers, or from the socket.",
  options: Type.Object(
    {
      trustedProxies: Type.Optional(
        Type.Array(Type.String(), {
          description:
            'Socket peers whose headers are believed: CIDR ranges, single addresses, `loopback`, `private`. Default: `server.trustedProxies`.',
          examples: [['loopback', '10.0.0.0/8', '2001:db8::/32']],
        }),
      ),
      headers: Type.Array(
        Type.Union([
          Type.Literal('x-plausible-ip'),
          Type.Literal('cf-connecting-ip'),
          Type.Literal('b-forwarded-for'),
          Type.Literal('x-forwarded-for'),
          Type.Literal('forwarded'),
        ]),
        {
          default: [...CLIENT_IP_HEADERS],
          uniqueItems: true,
          description:
            'Headers read from a trusted peer, in order; the first one holding a valid address wins, the socket address is the last resort.',
        },
      ),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    const trust = compileTrust(options.trustedProxies ?? engine.server.trustedProxies, 'trustedProxies')
    const names: string[] = options.headers
    const readers: Reader[] = options.headers.map((h) => READERS[h])
    const count = names.length
    const scratch = new Uint16Array(8)
    // The events of one request share its Headers object: the address is worked out once per
    // request (a batch carries up to 1,000 events) and reused while the same request goes on.
    let lastHeaders: Headers | undefined
    let lastTrustedSender = false
    let lastLocal = false
    /** The peer the last answer depended on; undefined when it came from a header of a peer on this machine. */
    let lastPeer: string | undefined
    let lastIp = ''
    return {
      run(event) {
        const headers = event.headers
        if (
          headers === lastHeaders &&
          event.trustedSender === lastTrustedSender &&
          event.peerIsLocal === lastLocal &&
          (lastPeer === undefined || event.peerIp === lastPeer)
        ) {
          event.clientIp = lastIp
          return undefined
        }
        // A peer on this machine (a loopback listener) is trusted without asking for its address
        // when every loopback address is (core/trust.ts): behind a local proxy the address is never read.
        const local = event.peerIsLocal && trust.trustsLocal
        let ip = ''
        // A trusted sender (a backend with a site key, core/senders.ts) forwards its visitor's address
        // in the same headers a trusted proxy would, read in the same order, whatever its peer address.
        if (local || event.trustedSender || trust(event.peerIp).trusted) {
          for (let i = 0; i < count && ip === ''; i++) {
            const value = headers.get(names[i]!)
            // An unparsable value (`unknown`, a typo, `for=_hidden`) falls through to the next source.
            if (value !== null && value !== '') ip = readers[i]!(value, scratch)
          }
        }
        const fromPeer = !local || ip === ''
        if (ip === '') ip = trust(event.peerIp).ip
        event.clientIp = ip
        lastHeaders = headers
        lastTrustedSender = event.trustedSender
        lastLocal = event.peerIsLocal
        lastPeer = fromPeer ? event.peerIp : undefined
        lastIp = ip
        return undefined
      },
    }
  },
})
