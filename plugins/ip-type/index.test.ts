// Behaviour of ip-type from spec/plausible-dialect.md §6 and §7: `x-plausible-ip-type` dc_ip and
// threat_ip drop the event, when a trusted proxy sends them.

import { expect, test } from 'bun:test'
import { runPlugin } from '../../core/testing.ts'
import plugin from './index.ts'

async function verdict(ipType: string | undefined, peerIp = '127.0.0.1', options: unknown = {}) {
  const headers = new Headers(ipType === undefined ? {} : { 'x-plausible-ip-type': ipType })
  return (await runPlugin(plugin, options, { peerIp, clientIp: peerIp, headers })).dropped
}

test('drops dc_ip when a trusted proxy says dc_ip', async () => {
  expect(await verdict('dc_ip')).toBe('dc_ip')
})

test('drops threat_ip when a trusted proxy says threat_ip', async () => {
  expect(await verdict('threat_ip')).toBe('threat_ip')
})

test.each([[undefined], [''], ['anonymous_vpn_ip'], ['residential'], ['DC_IP']])(
  'keeps the event for ip type %p',
  async (type) => {
    expect(await verdict(type)).toBeUndefined()
  },
)

test('ignores the header from an untrusted peer', async () => {
  expect(await verdict('dc_ip', '198.51.100.20')).toBeUndefined()
  expect(await verdict('threat_ip', '198.51.100.20')).toBeUndefined()
})

test('trustedProxies overrides server.trustedProxies', async () => {
  const options = { trustedProxies: ['198.51.100.0/24'] }
  expect(await verdict('dc_ip', '198.51.100.20', options)).toBe('dc_ip')
  expect(await verdict('dc_ip', '127.0.0.1', options)).toBeUndefined()
})

test('keeps a trusted sender’s event marked dc_ip (the proxy classified the backend), not one marked threat_ip', async () => {
  const headers = (type: string) => new Headers({ 'x-plausible-ip-type': type })
  const run = async (type: string) =>
    (await runPlugin(plugin, {}, { peerIp: '127.0.0.1', headers: headers(type), trustedSender: true })).dropped
  expect(await run('dc_ip')).toBeUndefined()
  expect(await run('threat_ip')).toBe('threat_ip')
})
