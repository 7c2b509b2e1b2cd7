// A small Redis client over `node:net` speaking RESP2, for runtimes without Bun's built-in client
// (Deno, Node). It does what the plugins need and no more: raw commands, pipelined (every command is
// written at once and answers come back in order), a lazy connection that is made again on the next
// command after a failure, AUTH and SELECT from the URL, and TLS for `rediss://`.

import { connect as connectTcp, type Socket } from 'node:net'
import { connect as connectTls } from 'node:tls'
import type { RedisCommands } from './redis.ts'

/** An error reply from the server (`-ERR …`): the command reached Redis and was refused. */
export class RedisReplyError extends Error {
  override readonly name = 'RedisReplyError'
}

export type Reply = string | number | null | Reply[]

interface Pending {
  resolve(value: Reply): void
  reject(error: Error): void
}

export interface RespOptions {
  /** How long a connection attempt may take before the commands waiting on it fail. */
  connectTimeoutMs?: number
}

const CRLF = Buffer.from('\r\n')

/** Encodes one command as a RESP array of bulk strings. */
export function encodeCommand(command: string, args: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length + 1}\r\n`)]
  for (const word of [command, ...args]) {
    const bytes = Buffer.from(word, 'utf8')
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF)
  }
  return Buffer.concat(parts)
}

/**
 * Reads replies from a byte stream that may split them anywhere. `feed` returns every reply that is
 * complete; the rest waits for more bytes.
 */
export class ReplyReader {
  private buffer: Buffer = Buffer.alloc(0)
  private offset = 0

  feed(chunk: Buffer): Array<Reply | RedisReplyError> {
    this.buffer = this.offset < this.buffer.length ? Buffer.concat([this.buffer.subarray(this.offset), chunk]) : chunk
    this.offset = 0
    const replies: Array<Reply | RedisReplyError> = []
    for (;;) {
      const start = this.offset
      const reply = this.read()
      if (reply === INCOMPLETE) {
        this.offset = start
        return replies
      }
      replies.push(reply)
    }
  }

  private line(): string | typeof INCOMPLETE {
    const end = this.buffer.indexOf(CRLF, this.offset)
    if (end < 0) return INCOMPLETE
    const text = this.buffer.toString('utf8', this.offset, end)
    this.offset = end + 2
    return text
  }

  private read(): Reply | RedisReplyError | typeof INCOMPLETE {
    if (this.offset >= this.buffer.length) return INCOMPLETE
    const type = String.fromCharCode(this.buffer[this.offset]!)
    this.offset++
    const head = this.line()
    if (head === INCOMPLETE) return INCOMPLETE
    switch (type) {
      case '+':
        return head
      case '-':
        return new RedisReplyError(head)
      case ':':
        return Number(head)
      case '$': {
        const length = Number(head)
        if (length < 0) return null
        if (this.buffer.length < this.offset + length + 2) return INCOMPLETE
        const text = this.buffer.toString('utf8', this.offset, this.offset + length)
        this.offset += length + 2
        return text
      }
      case '*': {
        const count = Number(head)
        if (count < 0) return null
        const items: Reply[] = []
        for (let i = 0; i < count; i++) {
          const item = this.read()
          if (item === INCOMPLETE) return INCOMPLETE
          // An error inside an array (EXEC) is kept as its message; no plugin sends MULTI.
          items.push(item instanceof RedisReplyError ? item.message : item)
        }
        return items
      }
      default:
        throw new RedisReplyError(`unexpected reply type ${JSON.stringify(type)} from the server`)
    }
  }
}

const INCOMPLETE = Symbol('incomplete')

interface Target {
  host: string
  port: number
  tls: boolean
  username: string
  password: string
  db: number
}

/** The schemes Bun's client accepts over TCP, and whether each means TLS. */
const SCHEMES: Readonly<Record<string, boolean>> = {
  'redis:': false,
  'valkey:': false,
  'rediss:': true,
  'valkeys:': true,
  'redis+tls:': true,
  'valkey+tls:': true,
}

/** Reads `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS; Valkey's names too). */
export function parseRedisUrl(url: string): Target {
  const parsed = new URL(url)
  const tls = SCHEMES[parsed.protocol]
  if (tls === undefined) {
    throw new Error(`not a redis:// or rediss:// URL (${parsed.protocol}); Unix sockets need Bun's client`)
  }
  const db = parsed.pathname.length > 1 ? Number(parsed.pathname.slice(1)) : 0
  if (!Number.isInteger(db) || db < 0)
    throw new Error(`database ${JSON.stringify(parsed.pathname.slice(1))} is not a number`)
  return {
    // An IPv6 address comes bracketed in a URL, bare to connect().
    host: (parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname) || '127.0.0.1',
    port: parsed.port ? Number(parsed.port) : 6379,
    tls,
    username: decodeURIComponent(parsed.username),
    password: decodeURIComponent(parsed.password),
    db,
  }
}

/** The RESP2 client; see the module comment. */
export class RespClient implements RedisCommands {
  /** The socket of the current attempt (connected or not). */
  private socket: Socket | undefined
  private ready: Promise<Socket> | undefined
  private readonly pending: Pending[] = []
  private reader = new ReplyReader()
  private closed = false
  private readonly target: Target

  constructor(
    url: string,
    private readonly options: RespOptions = {},
  ) {
    this.target = parseRedisUrl(url)
  }

  send(command: string, args: string[]): Promise<Reply> {
    if (this.closed) return Promise.reject(new Error('the redis connection is closed'))
    const frame = encodeCommand(command, args)
    return this.connection().then((socket) => this.write(socket, frame))
  }

  close(): void {
    this.closed = true
    this.drop(new Error('the redis connection is closed'))
  }

  private write(socket: Socket, frame: Buffer): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => {
      this.pending.push({ resolve, reject })
      socket.write(frame)
    })
  }

  private connection(): Promise<Socket> {
    if (this.ready) return this.ready
    const { host, port, tls } = this.target
    const socket = tls ? connectTls({ host, port, servername: host }) : connectTcp({ host, port })
    this.socket = socket
    // Events of an earlier, dropped socket must not touch the commands of the current one.
    const current = () => this.socket === socket
    const opened = new Promise<Socket>((resolve, reject) => {
      socket.setNoDelay(true)
      const timer = setTimeout(() => {
        socket.destroy(new Error(`could not connect to redis at ${host}:${port} within ${this.timeoutMs()} ms`))
      }, this.timeoutMs())
      socket.once(tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer)
        resolve(socket)
      })
      socket.on('data', (chunk: Buffer) => {
        if (current()) this.receive(chunk)
      })
      socket.on('error', (error) => {
        clearTimeout(timer)
        reject(error)
        if (current()) this.drop(error)
      })
      socket.on('close', () => {
        clearTimeout(timer)
        reject(new Error('the redis connection closed'))
        if (current()) this.drop(new Error('the redis connection closed'))
      })
    })
    const ready = opened.then((s) => this.handshake(s))
    this.ready = ready
    // A refused AUTH or SELECT must not stick either: drop the connection so the next command retries.
    ready.catch((error: Error) => {
      if (current()) this.drop(error)
    })
    return ready
  }

  /** AUTH and SELECT go first on every new connection; their answers are checked like any other. */
  private async handshake(socket: Socket): Promise<Socket> {
    const { username, password, db } = this.target
    if (password !== '') await this.write(socket, encodeCommand('AUTH', username ? [username, password] : [password]))
    if (db !== 0) await this.write(socket, encodeCommand('SELECT', [String(db)]))
    return socket
  }

  private receive(chunk: Buffer): void {
    let replies: Array<Reply | RedisReplyError>
    try {
      replies = this.reader.feed(chunk)
    } catch (error) {
      this.socket?.destroy(error as Error)
      return
    }
    for (const reply of replies) {
      const waiter = this.pending.shift()
      if (!waiter) continue
      if (reply instanceof RedisReplyError) waiter.reject(reply)
      else waiter.resolve(reply)
    }
  }

  /** Fails every command still waiting and forgets the connection, so the next command reconnects. */
  private drop(error: Error): void {
    const socket = this.socket
    this.socket = undefined
    this.ready = undefined
    this.reader = new ReplyReader()
    for (const waiter of this.pending.splice(0)) waiter.reject(error)
    socket?.destroy()
  }

  private timeoutMs(): number {
    return this.options.connectTimeoutMs ?? 2000
  }
}
