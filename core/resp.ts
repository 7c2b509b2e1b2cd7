// The one Redis client of the engine: RESP2 over `node:net` / `node:tls`, so it runs alike on Bun,
// Deno and Node. It does what the plugins need and no more: raw commands, pipelined (the commands of
// one turn of the event loop go out in one socket write, answers come back in order), batches of
// pre-encoded commands with one promise for all (the sessions' write-behind), a lazy connection that
// is made again on the next command after any failure, AUTH and SELECT from the URL, TLS for
// `rediss://`.
//
// Why not Bun's built-in RedisClient: it gives up for good after its reconnection attempts (measured:
// ~31 s into an outage), so the plugins would never share again after a longer one; it holds commands
// sent while disconnected in an offline queue and sends them late (counted twice by the rate limits);
// and it costs one promise and one command object per command (4–5 µs of CPU per session write,
// against ~1 µs batched here). Here a command sent while there is no connection starts one and fails
// as soon as that attempt fails (at most `connectTimeoutMs`); nothing is kept for later.

import { connect as connectTcp } from 'node:net'
import { connect as connectTls } from 'node:tls'
import type { RedisCommands } from './redis.ts'

/** An error reply from the server (`-ERR …`): the command reached Redis and was refused. */
export class RedisReplyError extends Error {
  override readonly name = 'RedisReplyError'
}

export type Reply = string | number | null | Reply[]

/** A batch's replies in the order of its commands; an error reply is a value here, not a rejection. */
export type BatchReplies = Array<Reply | RedisReplyError>

/** A command (`replies` undefined) or a batch of `left` commands still to be answered. */
interface Pending {
  left: number
  replies: BatchReplies | undefined
  // biome-ignore lint/suspicious/noExplicitAny: resolves with a Reply (command) or BatchReplies (batch)
  resolve(value: any): void
  reject(error: Error): void
}

export interface RespOptions {
  /** How long a connection attempt may take before the commands waiting on it fail. */
  connectTimeoutMs?: number
}

const CRLF = Buffer.from('\r\n')

/**
 * RESP encoding of one command as text to write as UTF-8: each length is the argument's UTF-8 byte
 * count. String building, not a Buffer per argument: the write-behind encodes thousands per second.
 */
export function encodeCommand(command: string, args: readonly string[]): string {
  let out = `*${args.length + 1}\r\n$${Buffer.byteLength(command)}\r\n${command}\r\n`
  for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
  return out
}

/**
 * RESP encoding of one command whose words are known to be ASCII (the caller made them so): no byte
 * counting, the hot path of the sessions' write-behind.
 */
export function encodeAsciiCommand(words: readonly string[]): string {
  let out = `*${words.length}\r\n`
  for (const w of words) out += `$${w.length}\r\n${w}\r\n`
  return out
}

/** Whether `s` is ASCII: its UTF-8 length is its length (native, 6× faster than a regex here). */
export const isAscii = (s: string): boolean => Buffer.byteLength(s) === s.length

/**
 * Reads replies from a byte stream that may split them anywhere. `feed` returns every reply that is
 * complete; the rest waits for more bytes.
 */
export class ReplyReader {
  private buffer: Buffer = Buffer.alloc(0)
  private offset = 0

  feed(bytes: Uint8Array): Array<Reply | RedisReplyError> {
    const chunk = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
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
    const b = this.buffer
    const at = this.offset
    if (at >= b.length) return INCOMPLETE
    // `+OK`, the answer to every SET of the write-behind, without a string made for it.
    if (b[at] === 0x2b && b[at + 1] === 0x4f && b[at + 2] === 0x4b && b[at + 3] === 0x0d && b[at + 4] === 0x0a) {
      this.offset = at + 5
      return 'OK'
    }
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

/** The URL schemes taken (Redis's and Valkey's names), and whether each means TLS. */
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
    throw new Error(`not a redis:// or rediss:// URL (${parsed.protocol}); Unix sockets are not supported`)
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

/** One connection as the client sees it, whatever the runtime's socket API. */
interface Link {
  /** Hands text (written as UTF-8) to the socket in order; false: it holds plenty, wait for `drain`. */
  write(text: string): boolean
  /**
   * Closes at once, with a reset: what the kernel still holds for the server is discarded, so a
   * stalled link that heals does not deliver commands their callers were told had failed.
   */
  end(): void
}

interface LinkEvents {
  /** Connected (TLS: after the handshake); writes may go out. */
  open(): void
  data(chunk: Uint8Array): void
  drain(): void
  /** An error or a close; the link is of no further use. */
  fail(error: Error): void
}

/** TCP or TLS through `node:net` / `node:tls`, alike on Bun, Deno and Node. */
function nodeLink(host: string, port: number, tls: boolean, on: LinkEvents): Link {
  const socket = tls ? connectTls({ host, port, servername: host }) : connectTcp({ host, port })
  socket.setNoDelay(true)
  socket.once(tls ? 'secureConnect' : 'connect', () => on.open())
  socket.on('data', (chunk: Buffer) => on.data(chunk))
  socket.on('drain', () => on.drain())
  socket.on('error', (error) => on.fail(error))
  socket.on('close', () => on.fail(new Error('the redis connection closed')))
  return {
    // node:net keeps order and buffers past a false; the client waits for `drain` anyway.
    write: (text) => socket.write(text, 'utf8'),
    end: () => (socket.resetAndDestroy ? socket.resetAndDestroy() : socket.destroy()),
  }
}

/** The RESP2 client; see the module comment. */
export class RespClient implements RedisCommands {
  /** The link of the current attempt (connected or not); undefined: none, the next command makes one. */
  private link: Link | undefined
  /** The socket took the handshake's answers: commands may be written. */
  private open = false
  /** The socket's buffer is full: text waits in `unsent` until it drains. */
  private blocked = false
  private flushQueued = false
  /** Every command accepted and not answered yet, in order, from `head` on (written or not). */
  private pending: Pending[] = []
  private head = 0
  /** Text of accepted commands not handed to the socket yet, in order. */
  private unsent = ''
  private reader = new ReplyReader()
  private closed = false
  private readonly target: Target

  constructor(
    url: string,
    private readonly options: RespOptions = {},
  ) {
    this.target = parseRedisUrl(url)
  }

  /** One command; resolves with its reply, rejects on an error reply or a lost connection. */
  send(command: string, args: readonly string[]): Promise<Reply> {
    return this.enqueue(encodeCommand(command, args), 1, undefined) as Promise<Reply>
  }

  /** Commands in one write; resolves with their replies in order (error replies as values). */
  sendBatch(commands: readonly (readonly string[])[]): Promise<BatchReplies> {
    let text = ''
    for (const [command, ...args] of commands) text += encodeCommand(command!, args)
    return this.sendEncoded(text, commands.length)
  }

  /**
   * `count` commands already encoded (encodeCommand, encodeAsciiCommand) as one text: one write, one
   * promise, resolving with their replies in order (error replies as values). Rejects, as a whole,
   * when the connection fails before every reply came.
   */
  sendEncoded(text: string, count: number): Promise<BatchReplies> {
    if (count === 0) return Promise.resolve([])
    return this.enqueue(text, count, []) as Promise<BatchReplies>
  }

  /** Refuses every later command and ends the connection. */
  close(): void {
    this.closed = true
    this.drop(new Error('the redis connection is closed'))
  }

  /**
   * Ends the current connection now, failing whatever waits on it (a command held by a stalled link
   * must not reach Redis minutes late); the next command connects again.
   */
  reset(reason = 'the redis connection was reset'): void {
    this.drop(new Error(reason))
  }

  private enqueue(text: string, count: number, replies: BatchReplies | undefined): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the redis connection is closed'))
    return new Promise((resolve, reject) => {
      this.pending.push({ left: count, replies, resolve, reject })
      this.unsent += text
      if (this.link === undefined) this.connect()
      else if (this.open && !this.blocked && !this.flushQueued) {
        // Every command of this turn of the event loop goes out in one write.
        this.flushQueued = true
        queueMicrotask(this.flush)
      }
    })
  }

  private readonly flush = (): void => {
    this.flushQueued = false
    const link = this.link
    if (link === undefined || !this.open || this.blocked || this.unsent === '') return
    const text = this.unsent
    this.unsent = ''
    // A full buffer keeps the text (in order); later text waits here until `drain`.
    if (!link.write(text)) this.blocked = true
  }

  private connect(): void {
    const { host, port, tls } = this.target
    this.open = false
    this.blocked = false
    // Events of an earlier, dropped link must not touch the commands of the current one.
    const current = () => this.link === link
    const timer = setTimeout(() => {
      if (current()) this.drop(new Error(`could not connect to redis at ${host}:${port} within ${this.timeoutMs()} ms`))
    }, this.timeoutMs())
    const on: LinkEvents = {
      open: () => {
        clearTimeout(timer)
        if (current()) this.handshake(link)
      },
      data: (chunk) => {
        if (current()) this.receive(chunk)
      },
      drain: () => {
        if (!current()) return
        this.blocked = false
        this.flush()
      },
      fail: (error) => {
        clearTimeout(timer)
        if (current()) this.drop(error)
      },
    }
    const link = nodeLink(host, port, tls, on)
    this.link = link
  }

  /**
   * AUTH and SELECT go first on every new connection, ahead of the commands that waited for it; a
   * refused one fails them all and drops the connection, so the next command tries again.
   */
  private handshake(link: Link): void {
    const { username, password, db } = this.target
    let text = ''
    let count = 0
    if (password !== '') {
      text += encodeCommand('AUTH', username ? [username, password] : [password])
      count++
    }
    if (db !== 0) {
      text += encodeCommand('SELECT', [String(db)])
      count++
    }
    const ready = () => {
      this.open = true
      this.flush()
    }
    if (count === 0) {
      ready()
      return
    }
    const hello: Pending = {
      left: count,
      replies: [],
      resolve: (replies: BatchReplies) => {
        const refused = replies.find((r) => r instanceof RedisReplyError)
        if (this.link !== link) return
        if (refused) this.drop(refused)
        else ready()
      },
      reject: () => {},
    }
    // Nothing was written on this link yet: the handshake's answers come first.
    this.pending.splice(this.head, 0, hello)
    if (!link.write(text)) this.blocked = true
  }

  private receive(chunk: Uint8Array): void {
    let replies: BatchReplies
    try {
      replies = this.reader.feed(chunk)
    } catch (error) {
      this.drop(error as Error)
      return
    }
    const pending = this.pending
    for (const reply of replies) {
      const waiter = pending[this.head]
      if (waiter === undefined) {
        this.drop(new Error('a redis reply without a command'))
        return
      }
      if (waiter.replies === undefined) {
        this.head++
        if (reply instanceof RedisReplyError) waiter.reject(reply)
        else waiter.resolve(reply)
      } else {
        waiter.replies.push(reply)
        if (--waiter.left === 0) {
          this.head++
          waiter.resolve(waiter.replies)
          // A refused handshake dropped the connection (its resolve runs here, synchronously).
          if (this.pending !== pending) return
        }
      }
    }
    // Answered entries are cut off now and then, not one shift per reply.
    if (this.head === pending.length) {
      this.pending = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > pending.length) {
      this.pending = pending.slice(this.head)
      this.head = 0
    }
  }

  /** Fails every command still waiting and forgets the connection, so the next command reconnects. */
  private drop(error: Error): void {
    const link = this.link
    const waiting = this.pending.slice(this.head)
    this.link = undefined
    this.open = false
    this.blocked = false
    this.pending = []
    this.head = 0
    this.unsent = ''
    this.reader = new ReplyReader()
    for (const waiter of waiting) waiter.reject(error)
    link?.end()
  }

  private timeoutMs(): number {
    return this.options.connectTimeoutMs ?? 2000
  }
}
