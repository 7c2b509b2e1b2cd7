// One table's export files: lines are appended (and fdatasync'd) to `<name>.partial` at each flush;
// rotation (by size or age) closes it and publishes `<name>` by rename, so a reader that ignores
// `*.partial` only ever sees complete files. For Parquet the `.partial` file is the NDJSON staging of
// the rows, converted by chdb at rotation; a staging file that cannot be converted yet stays on disk
// and is converted later (next rotation, close, or next start), so no row is lost to a chdb problem.

import { close, fdatasync, ftruncate, open, read, write } from 'node:fs'
import { mkdir, rename, rm, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { promisify } from 'node:util'
import type { Logger } from '../../core/logger.ts'
import type { SinkStats } from '../../core/sink.ts'
import type { ParquetWriter } from './parquet.ts'

export const PARTIAL = '.partial'

export interface TableFileOptions {
  table: string
  rotateBytes: number
  rotateSeconds: number
  /** The final path of a new file for this table (unique, with its extension). */
  nextPath(table: string): string
  /** Set when this sink writes Parquet or a previous run left Parquet staging files. */
  parquet: ParquetWriter | undefined
  stats: SinkStats
  logger: Logger
}

/** A staging file and the name it is published under. */
interface Staged {
  partial: string
  final: string
  table: string
}

interface OpenFile {
  fd: number
  /** The published name; the file is written as `final + PARTIAL`. */
  final: string
  bytes: number
  timer: ReturnType<typeof setTimeout>
}

/** Lines kept in memory while the disk refuses them, before the oldest are dropped and counted. */
const MEMORY_LIMIT_LINES = 200_000

const openAsync = promisify(open)
const closeAsync = promisify(close)
const fdatasyncAsync = promisify(fdatasync)
const ftruncateAsync = promisify(ftruncate)
const writeAsync = promisify(write)
const readAsync = promisify(read)
const encoder = new TextEncoder()

export class TableFile {
  private lines: string[] = []
  private current: OpenFile | undefined
  /** Staging files whose Parquet conversion failed; retried at every rotation and at close. */
  private readonly unconverted: Staged[] = []
  private queue: Promise<unknown> = Promise.resolve()
  /** The last disk or conversion problem, while it lasts. */
  problem: string | undefined
  droppedRows = 0

  constructor(private readonly o: TableFileOptions) {}

  get queuedRows(): number {
    return this.lines.length
  }

  get pendingConversions(): number {
    return this.unconverted.length
  }

  add(line: string): void {
    this.lines.push(line)
  }

  /** Appends what is buffered to the open file (opening one) and syncs it; rotates when it is full. */
  flush(): Promise<void> {
    return this.serial(async () => {
      await this.append()
      if (this.current && this.current.bytes >= this.o.rotateBytes) await this.rotateNow()
    })
  }

  /** Flushes, then closes and publishes the open file. */
  rotate(): Promise<void> {
    return this.serial(async () => {
      await this.append()
      await this.rotateNow()
    })
  }

  /**
   * Publishes a staging file left by an earlier run (cut after its last complete line); `table` is the
   * one its name says, which decides the Parquet columns.
   */
  recover(partial: string, table: string): Promise<void> {
    return this.serial(async () => {
      // Nothing complete in it (killed before the first flush finished): nothing to publish.
      if ((await cutTornLine(partial)) === 0) await rm(partial, { force: true })
      else await this.publish({ partial, final: partial.slice(0, -PARTIAL.length), table })
    })
  }

  private async append(): Promise<void> {
    if (this.lines.length === 0) return
    const batch = this.lines
    this.lines = []
    const started = performance.now()
    let file: OpenFile | undefined
    try {
      file = this.current ?? (await this.openNext())
      const bytes = encoder.encode(`${batch.join('\n')}\n`)
      await writeAll(file.fd, bytes, file.bytes)
      await fdatasyncAsync(file.fd)
      file.bytes += bytes.length
      this.o.stats.rowsWritten += batch.length
      this.o.stats.recordBatch((performance.now() - started) / 1000)
      if (this.problem?.startsWith('writing')) this.problem = undefined
    } catch (error) {
      // Cut what a failed write may have left, so the retry neither duplicates nor tears a line.
      if (file) await ftruncateAsync(file.fd, file.bytes).catch(() => {})
      this.lines = batch.concat(this.lines)
      if (this.lines.length > MEMORY_LIMIT_LINES) {
        const dropped = this.lines.length - MEMORY_LIMIT_LINES
        this.lines.splice(0, dropped)
        this.droppedRows += dropped
        this.o.stats.rowsFailed += dropped
      }
      this.fail(`writing ${this.o.table} failed: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
    }
  }

  private async openNext(): Promise<OpenFile> {
    const final = this.o.nextPath(this.o.table)
    await mkdir(dirname(final), { recursive: true })
    const fd = await openAsync(final + PARTIAL, 'wx', 0o640)
    // Age rotation from the file's first row: an idle table opens no file and rotates nothing.
    // rotate() never rejects (rotateNow reports its own failures), but a timer must not risk the process.
    const timer = setTimeout(() => this.rotate().catch(() => {}), this.o.rotateSeconds * 1000)
    timer.unref?.()
    this.current = { fd, final, bytes: 0, timer }
    return this.current
  }

  private async rotateNow(): Promise<void> {
    const file = this.current
    if (file) {
      this.current = undefined
      clearTimeout(file.timer)
      const staged = { partial: file.final + PARTIAL, final: file.final, table: this.o.table }
      try {
        await closeAsync(file.fd)
        await this.publish(staged)
      } catch (error) {
        // A read-only remount, a staging file moved away: keep it for the next rotation or start.
        this.unconverted.push(staged)
        this.fail(`publishing ${file.final} failed: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
      }
    }
    // Conversions and renames that failed before get another chance now.
    for (const pending of this.unconverted.splice(0)) {
      try {
        await this.publish(pending)
      } catch (error) {
        this.unconverted.push(pending)
        this.fail(`publishing ${pending.final} failed: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
      }
    }
  }

  private async publish(staged: Staged): Promise<void> {
    const { partial, final, table } = staged
    if (!final.endsWith('.parquet')) {
      await rename(partial, final)
      return
    }
    const tmp = `${final}.tmp`
    try {
      await this.o.parquet!.convert(table, partial, tmp)
      await syncFile(tmp)
      await rename(tmp, final)
      await rm(partial, { force: true })
      if (this.problem?.startsWith('Parquet')) this.problem = undefined
    } catch (error) {
      await rm(tmp, { force: true }).catch(() => {})
      this.unconverted.push(staged)
      this.fail(`Parquet conversion failed (rows kept in ${partial}): ${String(error).split('\n')[0]?.slice(0, 200)}`)
    }
  }

  private fail(problem: string): void {
    if (this.problem !== problem) {
      this.o.logger.error('File sink problem; rows are kept and retried.', {
        sink: 'file',
        table: this.o.table,
        problem,
      })
    }
    this.problem = problem
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return run
  }
}

async function writeAll(fd: number, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < bytes.length) {
    const { bytesWritten } = await writeAsync(fd, bytes, done, bytes.length - done, position + done)
    done += bytesWritten
  }
}

async function syncFile(path: string): Promise<void> {
  const fd = await openAsync(path, 'r')
  try {
    await fdatasyncAsync(fd)
  } finally {
    await closeAsync(fd)
  }
}

/**
 * A process killed mid-write may leave half a line at the end: keep only complete lines. Returns the
 * bytes kept.
 */
async function cutTornLine(path: string): Promise<number> {
  const size = (await stat(path)).size
  const fd = await openAsync(path, 'r+')
  try {
    const chunk = new Uint8Array(65_536)
    let end = size
    // Backwards, chunk by chunk, to the last newline.
    while (end > 0) {
      const from = Math.max(0, end - chunk.length)
      const { bytesRead } = await readAsync(fd, chunk, 0, end - from, from)
      const at = chunk.subarray(0, bytesRead).lastIndexOf(10)
      if (at >= 0) {
        end = from + at + 1
        break
      }
      end = from
    }
    if (end < size) await ftruncateAsync(fd, end)
    return end
  } finally {
    await closeAsync(fd)
  }
}
