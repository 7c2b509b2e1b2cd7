// An on-disk spool for sinks (spec/clickhouse-schema.md "Writing"; research/scale-out.md §3.4): batches a
// sink could not deliver are appended to segment files, replayed oldest first, and acknowledged one by
// one, so that a restart (even after SIGKILL) resumes exactly where delivery stopped. Not a sink: a
// library the `clickhouse` and `chdb` sinks share.
//
// Layout of a spool folder:
//
//   000000000001.seg   records, append-only: a JSON header line, the payload bytes, a newline
//   000000000001.ack   one byte per delivered record of that segment (records are acked in order)
//   delivering         the id of the batch whose records are being acknowledged (see ackBatch)
//
// A segment is deleted once every record in it is acknowledged and nothing is appended to it any more.
// A record's header carries the batch's identity (`id`), which the sink sends as its deduplication
// token on every attempt, so a replayed batch is recognised by servers that support tokens.

import { close, fdatasync, mkdirSync, open, read, write } from 'node:fs'
import { appendFile, mkdir, readdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { crc32 } from 'node:zlib'
import type { Logger } from '../../core/logger.ts'
import { isProcessAlive } from '../../core/processes.ts'

/** One batch as the spool stores it. */
export interface SpoolRecord {
  /** Stable identity of the batch (a UUID); the same on every delivery attempt. */
  id: string
  rows: number
  payload: Uint8Array
}

/** Where a stored record lives; returned by `peek`, passed back to `read` and `ack`. */
export interface SpoolEntry {
  readonly id: string
  readonly rows: number
  readonly segment: number
  /** Byte offset of the payload in the segment file. */
  readonly offset: number
  readonly length: number
  readonly crc: number
}

/** A byte limit shared by several spools (a sink's tables draw on one budget). */
export class SpoolBudget {
  usedBytes = 0
  constructor(readonly limitBytes: number) {}
  hasRoom(bytes: number): boolean {
    return this.usedBytes + bytes <= this.limitBytes
  }
}

/** A stored record whose bytes no longer match their checksum (a damaged disk, an edited file). */
export class SpoolCorruptError extends Error {
  override name = 'SpoolCorruptError'
}

export interface SpoolOptions {
  /** A new segment starts once the current one reaches this size. */
  segmentBytes?: number
  /** fdatasync after each append, so a machine crash does not lose acknowledged spooling. */
  sync?: boolean
  logger?: Logger
}

interface Segment {
  seq: number
  /** Undelivered records, oldest first. */
  entries: SpoolEntry[]
  /** Size of the .seg file. */
  bytes: number
}

const HEADER_MAX = 4096
/** Names the batch of several records being acknowledged; read back at open (see `ackBatch`). */
const DELIVERING = 'delivering'
const NEWLINE = new Uint8Array([10])
const ACK_BYTE = new Uint8Array([1])
const encoder = new TextEncoder()
const decoder = new TextDecoder()

/**
 * A folder of append-only segments.
 *
 * ```ts
 * const spool = await Spool.open('/var/lib/analytics/spool/events_v2', new SpoolBudget(1 << 30))
 * await spool.append({ id: crypto.randomUUID(), rows: 2, payload })
 * const entry = spool.peek()            // the oldest undelivered record
 * if (entry) { await send(await spool.read(entry)); await spool.ack(entry) }
 * ```
 *
 * Mutations (append, ack) run one at a time in call order; `read` may run beside them.
 */
export class Spool {
  private readonly segments: Segment[]
  /** The segment appends go to; a fresh one after every open, so a torn tail is never appended to. */
  private writing: { segment: Segment; fd: number } | undefined
  private nextSeq: number
  private queue: Promise<unknown> = Promise.resolve()
  private closed = false
  private readonly segmentBytes: number
  private readonly sync: boolean

  private constructor(
    readonly dir: string,
    private readonly budget: SpoolBudget,
    segments: Segment[],
    options: SpoolOptions,
  ) {
    this.segments = segments
    this.nextSeq = (segments.at(-1)?.seq ?? 0) + 1
    this.segmentBytes = options.segmentBytes ?? 64 * 1024 * 1024
    this.sync = options.sync ?? true
  }

  /** Opens (creating) a spool folder, drops what was fully delivered and cuts a torn last record. */
  static async open(dir: string, budget: SpoolBudget, options: SpoolOptions = {}): Promise<Spool> {
    await mkdir(dir, { recursive: true })
    // Two writers on one folder would cut each other's tails and delete each other's segments.
    await lockFolder(dir)
    const names = (await readdir(dir)).filter((n) => /^\d{12}\.seg$/.test(n)).sort()
    const segments: Segment[] = []
    for (const name of names) {
      const seq = Number(name.slice(0, 12))
      const segment = await recoverSegment(dir, seq, options.logger)
      if (segment.entries.length === 0) {
        await removeSegment(dir, seq)
        continue
      }
      budget.usedBytes += segment.bytes
      segments.push(segment)
    }
    const spool = new Spool(dir, budget, segments, options)
    // A crash among the acks of a delivered batch leaves its last records behind: they were
    // delivered with the rest and must not go again as a smaller batch no server knows as a retry.
    const delivered = await readFile(join(dir, DELIVERING), 'utf8').catch(() => '')
    let dropped = 0
    for (let head = spool.peek(); delivered !== '' && head?.id === delivered; head = spool.peek()) {
      await spool.ack(head)
      dropped++
    }
    if (dropped > 0) {
      options.logger?.info('Spool: records of a batch delivered before the last stop were acknowledged.', {
        spool: dir,
        records: dropped,
      })
    }
    return spool
  }

  /** Undelivered records. */
  get records(): number {
    let n = 0
    for (const s of this.segments) n += s.entries.length
    return n
  }

  /** Undelivered rows. */
  get rows(): number {
    let n = 0
    for (const s of this.segments) for (const e of s.entries) n += e.rows
    return n
  }

  /** Bytes on disk, delivered records of live segments included. */
  get bytes(): number {
    let n = 0
    for (const s of this.segments) n += s.bytes
    return n
  }

  /** Bytes a record takes on disk, at most (the checksum's digits vary). */
  static recordBytes(record: SpoolRecord): number {
    return headerOf(record, 0xffff_ffff).length + record.payload.length + 1
  }

  /** Whether the shared budget can take this record. */
  hasRoom(record: SpoolRecord): boolean {
    return this.budget.hasRoom(Spool.recordBytes(record))
  }

  /** Appends a record; resolves once it is written (and synced). Refuses when over the budget. */
  append(record: SpoolRecord): Promise<void> {
    return this.serial(async () => {
      if (this.closed) throw new Error('spool is closed')
      const crc = crc32(record.payload)
      const header = headerOf(record, crc)
      const size = header.length + record.payload.length + 1
      if (!this.budget.hasRoom(size)) throw new SpoolFullError('spool is full')
      if (!this.writing || this.writing.segment.bytes >= this.segmentBytes) await this.rotate()
      const w = this.writing!
      const offset = w.segment.bytes + header.length
      // One write call per record keeps a crash's damage to the tail, which `open` cuts off.
      await writeAll(w.fd, concat(header, record.payload, NEWLINE), w.segment.bytes)
      if (this.sync) await fdatasyncAsync(w.fd)
      w.segment.bytes += size
      this.budget.usedBytes += size
      w.segment.entries.push({
        id: record.id,
        rows: record.rows,
        segment: w.segment.seq,
        offset,
        length: record.payload.length,
        crc,
      })
    })
  }

  /** The oldest undelivered record, if any. */
  peek(): SpoolEntry | undefined {
    for (const s of this.segments) if (s.entries.length > 0) return s.entries[0]
    return undefined
  }

  /** Undelivered records, oldest first (ack order). */
  *entries(): Generator<SpoolEntry> {
    for (const s of this.segments) yield* s.entries
  }

  /** Reads a record's payload and checks it against its checksum. */
  async read(entry: SpoolEntry): Promise<Uint8Array> {
    const fd = await openAsync(segmentPath(this.dir, entry.segment), 'r')
    try {
      const buf = new Uint8Array(entry.length)
      const bytesRead = await readAt(fd, buf, entry.offset)
      if (bytesRead !== entry.length || crc32(buf) !== entry.crc) {
        throw new SpoolCorruptError(`spool record ${entry.id} in segment ${entry.segment} failed its checksum`)
      }
      return buf
    } finally {
      await closeAsync(fd)
    }
  }

  /** Marks the oldest record delivered; deletes its segment when nothing in it is left. */
  ack(entry: SpoolEntry): Promise<void> {
    return this.serial(async () => {
      const index = this.segments.findIndex((s) => s.seq === entry.segment)
      const segment = this.segments[index]
      if (!segment || segment.entries[0] !== entry) throw new Error(`spool ack out of order: ${entry.id}`)
      segment.entries.shift()
      // A drained segment goes at once, even the one being appended to: the next append starts another.
      if (segment.entries.length === 0) await this.retire(index)
      // One byte per delivered record: the file's length is the count, so a torn write cannot lie.
      else await appendFile(ackPath(this.dir, segment.seq), ACK_BYTE)
    })
  }

  /**
   * Marks the oldest records delivered as one batch (they share an id, oldest first). The batch's id
   * is written first (to a new file, then renamed over the old one), so that a crash between the
   * records' acks cannot leave part of the delivered batch to be sent again on its own at the next
   * open: a smaller batch is a different block to a deduplicating server, so it would be stored twice.
   */
  async ackBatch(entries: readonly SpoolEntry[]): Promise<void> {
    if (entries.length === 0) return
    if (entries.length > 1) {
      const id = entries[0]!.id
      await this.serial(async () => {
        const temp = join(this.dir, `${DELIVERING}.tmp`)
        await writeFile(temp, id)
        await rename(temp, join(this.dir, DELIVERING))
      })
    }
    for (const entry of entries) await this.ack(entry)
  }

  /** Waits for pending writes and releases the open segment. The files stay for the next start. */
  close(): Promise<void> {
    return this.serial(async () => {
      if (this.closed) return
      this.closed = true
      const fd = this.writing?.fd
      this.writing = undefined
      if (fd !== undefined) await closeAsync(fd)
      await unlockFolder(this.dir)
    })
  }

  private async retire(index: number): Promise<void> {
    const segment = this.segments[index]!
    // Bookkeeping first, so that nobody sees a drained spool that still counts bytes.
    this.segments.splice(index, 1)
    this.budget.usedBytes -= segment.bytes
    if (this.writing?.segment === segment) {
      const fd = this.writing.fd
      this.writing = undefined
      await closeAsync(fd)
    }
    await removeSegment(this.dir, segment.seq)
  }

  private async rotate(): Promise<void> {
    if (this.writing) {
      const fd = this.writing.fd
      this.writing = undefined
      await closeAsync(fd)
    }
    const seq = this.nextSeq++
    const fd = await openAsync(segmentPath(this.dir, seq), 'wx')
    const segment: Segment = { seq, entries: [], bytes: 0 }
    this.segments.push(segment)
    this.writing = { segment, fd }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return run
  }
}

/** Thrown by `append` when the budget cannot take the record. */
export class SpoolFullError extends Error {
  override name = 'SpoolFullError'
}

/**
 * An append-only file of batches a server rejected as malformed, one JSON line each, with the error.
 * Operators inspect it and re-import what they can; the sink never retries it.
 */
export class DeadLetterFile {
  private queue: Promise<unknown> = Promise.resolve()
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true })
  }

  write(entry: { table: string; id: string; rows: number; error: string; payload: Uint8Array }): Promise<void> {
    const line = `${JSON.stringify({
      time: new Date().toISOString(),
      table: entry.table,
      id: entry.id,
      rows: entry.rows,
      error: entry.error,
      payload: decoder.decode(entry.payload),
    })}\n`
    const run = this.queue.then(() => appendFile(this.path, line, { mode: 0o600 }))
    this.queue = run.catch(() => {})
    return run
  }
}

// Plain descriptors rather than FileHandle objects: Bun throws when a FileHandle is garbage-collected
// unclosed, which would turn a leak into a crash.
const openAsync = promisify(open)
const closeAsync = promisify(close)
const fdatasyncAsync = promisify(fdatasync)
const writeAsync = promisify(write)
const readAsync = promisify(read)

async function writeAll(fd: number, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < bytes.length) {
    const { bytesWritten } = await writeAsync(fd, bytes, done, bytes.length - done, position + done)
    done += bytesWritten
  }
}

/** Reads until `buf` is full or the file ends; returns the bytes read. */
async function readAt(fd: number, buf: Uint8Array, position: number): Promise<number> {
  let done = 0
  while (done < buf.length) {
    const { bytesRead } = await readAsync(fd, buf, done, buf.length - done, position + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  return done
}

function headerOf(record: SpoolRecord, crc: number): Uint8Array {
  return encoder.encode(`${JSON.stringify({ id: record.id, rows: record.rows, bytes: record.payload.length, crc })}\n`)
}

function concat(...parts: Uint8Array[]): Uint8Array {
  let size = 0
  for (const p of parts) size += p.length
  const out = new Uint8Array(size)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

function segmentPath(dir: string, seq: number): string {
  return join(dir, `${String(seq).padStart(12, '0')}.seg`)
}

function ackPath(dir: string, seq: number): string {
  return join(dir, `${String(seq).padStart(12, '0')}.ack`)
}

async function removeSegment(dir: string, seq: number): Promise<void> {
  await rm(segmentPath(dir, seq), { force: true })
  await rm(ackPath(dir, seq), { force: true })
}

/** Walks a segment's headers; cuts off a record that was only partly written when the process died. */
async function recoverSegment(dir: string, seq: number, logger: Logger | undefined): Promise<Segment> {
  const path = segmentPath(dir, seq)
  const size = (await stat(path)).size
  const acked = await stat(ackPath(dir, seq)).then(
    (s) => s.size,
    () => 0,
  )
  const entries: SpoolEntry[] = []
  const fd = await openAsync(path, 'r')
  let at = 0
  try {
    const head = new Uint8Array(HEADER_MAX)
    while (at < size) {
      const bytesRead = await readAt(fd, head.subarray(0, Math.min(HEADER_MAX, size - at)), at)
      const nl = head.subarray(0, bytesRead).indexOf(10)
      const parsed = nl < 0 ? undefined : parseHeader(decoder.decode(head.subarray(0, nl)))
      const end = parsed ? at + nl + 1 + parsed.bytes + 1 : Number.POSITIVE_INFINITY
      if (!parsed || end > size) break
      const entry: SpoolEntry = {
        id: parsed.id,
        rows: parsed.rows,
        segment: seq,
        offset: at + nl + 1,
        length: parsed.bytes,
        crc: parsed.crc,
      }
      // The last complete record is the one a crash may have torn; check its bytes now.
      if (end === size) {
        const buf = new Uint8Array(entry.length)
        await readAt(fd, buf, entry.offset)
        if (crc32(buf) !== entry.crc) break
      }
      entries.push(entry)
      at = end
    }
  } finally {
    await closeAsync(fd)
  }
  if (at < size) {
    logger?.warn('Spool segment ended in a partly written record; cutting it off.', {
      segment: path,
      keptBytes: at,
      droppedBytes: size - at,
    })
    await truncate(path, at)
  }
  return { seq, entries: entries.slice(acked), bytes: at }
}

function parseHeader(text: string): { id: string; rows: number; bytes: number; crc: number } | undefined {
  try {
    const h = JSON.parse(text) as Record<string, unknown>
    if (
      typeof h.id === 'string' &&
      typeof h.rows === 'number' &&
      typeof h.bytes === 'number' &&
      typeof h.crc === 'number' &&
      h.bytes >= 0
    ) {
      return { id: h.id, rows: h.rows, bytes: h.bytes, crc: h.crc }
    }
  } catch {
    // A torn header is not JSON; the caller treats it as the end of the segment.
  }
  return undefined
}

/**
 * Takes a folder for this spool: refused while another live process holds it (a lock file with its
 * pid); a lock left by a process that died (kill -9) is taken over. Within one process the sinks'
 * default folders differ by destination, so the lock is per process.
 */
async function lockFolder(dir: string): Promise<void> {
  const lock = join(dir, '.lock')
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lock, String(process.pid), { flag: 'wx' })
      return
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const pid = Number((await readFile(lock, 'utf8').catch(() => '')).trim())
    if (pid === process.pid) return
    if (Number.isInteger(pid) && pid > 0 && isProcessAlive(pid)) {
      throw new Error(
        `the spool folder ${dir} is in use by process ${pid}; give each engine its own stateDir or spoolDir`,
      )
    }
    await rm(lock, { force: true })
  }
  throw new Error(`cannot lock the spool folder ${dir}`)
}

async function unlockFolder(dir: string): Promise<void> {
  await rm(join(dir, '.lock'), { force: true })
}

/**
 * Keeps a batch its destination refused in the dead-letter file and says so (`what` names the
 * refusal); when the file fails too, says that the rows are lost. Never throws.
 */
export async function deadLetterBatch(
  file: DeadLetterFile,
  logger: Logger,
  what: string,
  entry: { table: string; id: string; rows: number; error: string; summary: string; payload: Uint8Array },
  context: Record<string, unknown>,
): Promise<void> {
  const fields = { ...context, batch: entry.id, rows: entry.rows, error: entry.summary }
  try {
    await file.write(entry)
    logger.error(`${what}; it went to the dead-letter file.`, { ...fields, file: file.path })
  } catch (error) {
    logger.error(`${what} and the dead-letter file failed; the rows are lost.`, { ...fields, fileError: String(error) })
  }
}

/** What an append's failure means for an operator: the spool is full, or the disk failed. */
export function spoolProblemOf(error: unknown): string {
  return error instanceof SpoolFullError ? 'spool is full' : `spool write failed: ${String(error)}`
}
