// A write-only Redis connection for the sessions' write-behind: one socket write per batch of
// commands, one promise per batch.
//
// Why not Bun's RedisClient here: it costs one promise and one command object per command. With a
// SET per changed session that came to 4–5 µs of Bun CPU per event on this 2-core machine, against
// about 1 µs for the same SETs written as one RESP buffer (bench/redis-sessions.ts; the issue allows
// 8 µs for Bun and Redis together). Reads (a GET on a miss) stay on Bun's client.
//
// Only what the writes need is parsed: simple strings, errors and integers (SET, EVALSHA, AUTH,
// SELECT, PING); anything else closes the connection, and the caller connects anew.

import type { Socket } from 'bun'

export interface Reply {
  /** Replies in the order of the commands; an Error for each `-ERR` reply. */
  replies: (string | number | Error)[]
}

interface Pending {
  left: number
  replies: (string | number | Error)[]
  resolve: (r: Reply) => void
  reject: (e: Error) => void
}

/** RESP encoding of one command, as bytes held one per char (its UTF-8 bytes for non-ASCII text). */
export function encodeCommand(args: readonly string[]): string {
  let out = `*${args.length}\r\n`
  // As UTF-8 bytes held one per char, so that lengths are byte counts and the text is written as is.
  for (const a of args) {
    const bytes = isAscii(a) ? a : Buffer.from(a).toString('latin1')
    out += `$${bytes.length}\r\n${bytes}\r\n`
  }
  return out
}

/**
 * RESP encoding of one command whose arguments are known to be ASCII (the caller made them so):
 * no byte counting, no conversion, the hot path of the write-behind.
 */
export function encodeAsciiCommand(args: readonly string[]): string {
  let out = `*${args.length}\r\n`
  for (const a of args) out += `$${a.length}\r\n${a}\r\n`
  return out
}

/** Whether `s` is ASCII: its UTF-8 length is its length (native, 6× faster than a regex here). */
export const isAscii = (s: string): boolean => Buffer.byteLength(s) === s.length

export class RespWriter {
  private socket: Socket | undefined
  private readonly queue: Pending[] = []
  /** Text the socket has not taken yet, in order, each with whether it is ASCII (else latin1 bytes). */
  private unsent: string[] = []
  private unsentAscii: boolean[] = []
  private partial = ''
  private failed: Error | undefined
  private opened = false
  private readonly ready: Promise<void>

  private constructor(url: URL, timeoutMs: number) {
    const db = url.pathname.length > 1 ? url.pathname.slice(1) : ''
    const hello: string[][] = []
    if (url.password !== '') {
      const password = decodeURIComponent(url.password)
      hello.push(url.username !== '' ? ['AUTH', decodeURIComponent(url.username), password] : ['AUTH', password])
    }
    if (db !== '' && db !== '0') hello.push(['SELECT', db])
    const self = this
    const connecting = Bun.connect({
      // An IPv6 address comes bracketed in a URL, bare to connect().
      hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
      port: Number(url.port || 6379),
      tls: url.protocol === 'rediss:',
      socket: {
        data(_socket, data) {
          self.receive(data.toString('latin1'))
        },
        drain(socket) {
          self.pump(socket)
        },
        close() {
          self.fail(new Error('connection closed'))
        },
        error(_socket, error) {
          self.fail(error)
        },
        connectError(_socket, error) {
          self.fail(error)
        },
      },
    })
    let timer: ReturnType<typeof setTimeout> | undefined
    this.ready = Promise.race([
      connecting.then(async (socket) => {
        this.socket = socket
        // Connected after a timeout or a close: nobody will use it.
        if (this.failed !== undefined) socket.end()
        if (hello.length > 0) {
          let text = ''
          for (const c of hello) text += encodeCommand(c)
          const { replies } = await this.write(text, hello.length, false)
          const refused = replies.find((r) => r instanceof Error)
          if (refused !== undefined) throw refused
        }
        this.opened = true
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs)
      }),
    ]).finally(() => clearTimeout(timer))
    // A failed start is reported by `send`; this only keeps it from being an unhandled rejection.
    this.ready.catch((error: Error) => this.fail(error))
  }

  /** Connects to `url` (`redis://` or `rediss://`, with password and db as in Bun's client). */
  static connect(url: string, timeoutMs: number): RespWriter {
    return new RespWriter(new URL(url), timeoutMs)
  }

  /** Writes the commands in one go; resolves with their replies (errors as values), rejects if the link fails. */
  send(commands: readonly (readonly string[])[]): Promise<Reply> {
    let text = ''
    for (const c of commands) text += encodeCommand(c)
    return this.sendEncoded(text, commands.length, false)
  }

  /**
   * Writes `count` commands already encoded, in one go. `ascii`: the text is ASCII (written as is,
   * no scan: the caller knows), else bytes held one per char (encodeCommand).
   */
  async sendEncoded(text: string, count: number, ascii = true): Promise<Reply> {
    if (!this.opened && this.failed === undefined) await this.ready
    return this.write(text, count, ascii)
  }

  private write(text: string, count: number, ascii: boolean): Promise<Reply> {
    if (this.failed !== undefined) return Promise.reject(this.failed)
    return new Promise<Reply>((resolve, reject) => {
      this.queue.push({ left: count, replies: [], resolve, reject })
      this.unsent.push(text)
      this.unsentAscii.push(ascii)
      if (this.unsent.length === 1) this.pump(this.socket!)
    })
  }

  /** Hands the socket what it takes; the rest waits for `drain`. */
  private pump(socket: Socket): void {
    while (this.unsent.length > 0) {
      const text = this.unsent[0]!
      // Every char is one byte: ASCII is written as is, bytes held one per char as latin1.
      const n = socket.write(this.unsentAscii[0] ? text : Buffer.from(text, 'latin1'))
      if (n < text.length) {
        this.unsent[0] = text.slice(Math.max(0, n))
        return
      }
      this.unsent.shift()
      this.unsentAscii.shift()
    }
  }

  close(): void {
    this.fail(new Error('closed'))
  }

  private receive(chunk: string): void {
    let text = this.partial + chunk
    let at = 0
    for (;;) {
      const end = text.indexOf('\r\n', at)
      if (end < 0) break
      const type = text[at]
      const body = text.slice(at + 1, end)
      at = end + 2
      let reply: string | number | Error
      if (type === '+') reply = body
      else if (type === ':') reply = Number(body)
      else if (type === '-') reply = new Error(body)
      else {
        this.fail(new Error(`unexpected reply type ${JSON.stringify(type)}`))
        return
      }
      const head = this.queue[0]
      if (head === undefined) {
        this.fail(new Error('reply without a command'))
        return
      }
      head.replies.push(reply)
      if (--head.left === 0) {
        this.queue.shift()
        head.resolve({ replies: head.replies })
      }
    }
    text = text.slice(at)
    this.partial = text
  }

  private fail(error: Error): void {
    if (this.failed !== undefined) return
    this.failed = error
    for (const p of this.queue.splice(0)) p.reject(error)
    this.socket?.end()
  }
}
