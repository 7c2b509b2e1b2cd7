// The ip-type plugin: spec/plausible-dialect.md §6 (`x-plausible-ip-type`: dc_ip, threat_ip).

import { Type } from '@sinclair/typebox'
import { definePlugin } from '../../core/plugin.ts'
import { compileTrust, peerTrusted } from '../../core/trust.ts'

export const IP_TYPE_HEADER = 'x-plausible-ip-type'

export default definePlugin({
  name: 'ip-type',
  stage: 'classify',
  summary: "Drops events a trusted proxy classified as datacenter or threat traffic (header 'x-plausible-ip-type').",
  drops: {
    dc_ip: 'a trusted proxy marked the client address as a datacenter address (`x-plausible-ip-type: dc_ip`)',
    threat_ip: 'a trusted proxy marked the client address as a known threat (`x-plausible-ip-type: threat_ip`)',
  },
  options: Type.Object(
    {
      trustedProxies: Type.Optional(
        Type.Array(Type.String(), {
          description:
            'Socket peers whose `x-plausible-ip-type` header is believed: CIDR ranges, single addresses, `loopback`, `private`. Default: `server.trustedProxies`.',
          examples: [['loopback', '10.0.0.0/8']],
        }),
      ),
    },
    { additionalProperties: false },
  ),
  setup(options, engine) {
    // The header is a classification made by Plausible's own edge proxy. Anyone else could send it
    // to have their traffic dropped or, worse, to make a rival's look like a datacenter's, so it is
    // believed only from the same trusted peers as the client-ip headers.
    const trust = compileTrust(options.trustedProxies ?? engine.server.trustedProxies, 'trustedProxies')
    return {
      run(event, ctx) {
        const type = event.headers.get(IP_TYPE_HEADER)
        if (type === null) return undefined
        if (type !== 'dc_ip' && type !== 'threat_ip') return undefined
        // A proxy classifies the address it sees: for a trusted sender (a backend with a site key)
        // that is the backend's own, which sits in a datacenter by nature. A threat verdict still holds.
        if (type === 'dc_ip' && event.trustedSender) return undefined
        if (!peerTrusted(trust, event)) return undefined
        return ctx.drop(type)
      },
    }
  },
})
