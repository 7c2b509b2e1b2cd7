// The TCP peer of a request on a real socket is read only when a plugin needs it (core/http.ts
// SocketPeer): reading it costs Bun a system call and an object per request. A listener bound to a
// loopback address vouches that the peer is on this machine; when every loopback address is trusted
// (the default list), client-ip takes the forwarded address without reading the peer's.

import { afterAll, describe, expect, test } from 'bun:test'
import { connect } from 'node:net'
import { networkInterfaces } from 'node:os'
import { resolve } from 'node:path'
import { startTestEngine } from '../../core/testing.ts'
import { compileTrust, isLoopbackListener } from '../../core/trust.ts'

const root = resolve(import.meta.dir, '../..')

interface Answer {
  outcomes: string[]
  peer: string
  client: string
  peerRead: boolean
}

async function listening(host: string, trustedProxies?: string[]) {
  const t = await startTestEngine(
    {
      server: { port: 0, host, ...(trustedProxies ? { trustedProxies } : {}) },
      sites: [{ id: 1, domain: 'example.com' }],
      plugins: ['./test/fixtures/test-dialect.ts', 'client-ip'],
    },
    root,
  )
  const { port } = await t.engine.listen()
  return { t, port }
}

async function post(port: number, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(`http://127.0.0.1:${port}/t/event`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ d: 'example.com' }),
  })
  expect(res.status).toBe(202)
  return (await res.json()) as Answer
}

describe('a listener on 127.0.0.1, with every loopback address trusted (the default list)', async () => {
  const { t, port } = await listening('127.0.0.1')
  afterAll(() => t.close())

  test('a forwarded address is taken without reading the peer', async () => {
    const answer = await post(port, { 'x-forwarded-for': '198.51.100.7, 10.0.0.2' })
    expect(answer).toMatchObject({ outcomes: ['ok'], client: '198.51.100.7', peerRead: false })
    // Read afterwards, the address is still the socket's.
    expect(answer.peer).toBe('127.0.0.1')
  })

  test('without a forwarding header the client is the peer, read from the socket', async () => {
    expect(await post(port)).toEqual({ outcomes: ['ok'], peer: '127.0.0.1', client: '127.0.0.1', peerRead: true })
  })

  test('an unparsable forwarded address falls back to the peer', async () => {
    expect(await post(port, { 'x-forwarded-for': 'unknown' })).toMatchObject({ client: '127.0.0.1', peerRead: true })
  })

  // A process on this machine may connect from another of its addresses: it is on this machine all
  // the same, so the loopback listener's vouching trusts it as a loopback peer would be.
  const own = Object.values(networkInterfaces())
    .flat()
    .find((a) => a !== undefined && a.family === 'IPv4' && !a.internal)?.address
  test.skipIf(own === undefined)(
    'a peer on this machine connecting from a non-loopback address is trusted too',
    async () => {
      const text = await new Promise<string>((done, fail) => {
        const body = JSON.stringify({ d: 'example.com' })
        const socket = connect({ host: '127.0.0.1', port, localAddress: own }, () => {
          socket.write(
            `POST /t/event HTTP/1.1\r\nhost: 127.0.0.1\r\nx-forwarded-for: 198.51.100.8\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
          )
        })
        let received = ''
        socket.on('data', (chunk) => {
          received += chunk.toString()
        })
        socket.on('end', () => done(received))
        socket.on('error', fail)
      })
      const answer = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Answer
      expect(answer).toMatchObject({ client: '198.51.100.8', peerRead: false })
      expect(answer.peer).toBe(own!)
    },
  )
})

describe('the peer is read when the listener cannot vouch for it', () => {
  test('a listener on every address (0.0.0.0)', async () => {
    const { t, port } = await listening('0.0.0.0')
    try {
      const answer = await post(port, { 'x-forwarded-for': '198.51.100.7' })
      expect(answer).toEqual({ outcomes: ['ok'], peer: '127.0.0.1', client: '198.51.100.7', peerRead: true })
    } finally {
      await t.close()
    }
  })

  test('a trust list without every loopback address (127.0.0.1 alone)', async () => {
    const { t, port } = await listening('127.0.0.1', ['127.0.0.1'])
    try {
      expect(await post(port, { 'x-forwarded-for': '198.51.100.7' })).toMatchObject({
        client: '198.51.100.7',
        peerRead: true,
      })
    } finally {
      await t.close()
    }
  })

  test('an empty trust list: the header is not believed', async () => {
    const { t, port } = await listening('127.0.0.1', [])
    try {
      expect(await post(port, { 'x-forwarded-for': '198.51.100.7' })).toEqual({
        outcomes: ['ok'],
        peer: '127.0.0.1',
        client: '127.0.0.1',
        peerRead: true,
      })
    } finally {
      await t.close()
    }
  })
})

describe('which lists trust every loopback address, and which listen addresses are loopback', () => {
  test.each([
    [['loopback'], true],
    [['loopback', 'private'], true],
    [['127.0.0.0/8', '::1'], true],
    [['0.0.0.0/0', '::/0'], true],
    [['::ffff:127.0.0.0/104', '::1/128'], true],
    [['127.0.0.0/8'], false],
    [['::1'], false],
    [['127.0.0.1', '::1'], false],
    [['127.0.0.0/9', '127.128.0.0/9', '::1'], false],
    [['private'], false],
    [[], false],
  ] as [string[], boolean][])('%j → %p', (list, expected) => {
    expect(compileTrust(list, 'trustedProxies').trustsLocal).toBe(expected)
  })

  test.each([
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['::1', true],
    ['[::1]', true],
    ['::ffff:127.0.0.1', true],
    ['0.0.0.0', false],
    ['::', false],
    ['192.0.2.1', false],
    ['localhost', false],
    ['', false],
  ] as [string, boolean][])('%p → %p', (host, expected) => {
    expect(isLoopbackListener(host)).toBe(expected)
  })
})
