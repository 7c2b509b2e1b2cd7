// Daily salts for user ids (spec/plausible-dialect.md §9): 16 random bytes per UTC day, rotated at
// 00:00 UTC, current and previous kept, older ones deleted, so after 48 h no id can be recomputed.
//
// A salt belongs to a day, not to the moment it was drawn: the salt of day D is used from D 00:00 to
// D+1 24:00 (as "previous" on D+1) and deleted on D+2, so none outlives 48 hours. Salts are never
// derived from the date (an HMAC of the day could be recomputed later) and never logged.

import { randomBytes } from 'node:crypto'
import {
  closeSync,
  constants,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'
import type { Logger } from '../../core/logger.ts'
import { ConfigError } from '../../core/plugin.ts'

export const DAY_MS = 86_400_000
export const SALT_BYTES = 16

/** The salts in force on one UTC day. */
export interface Salts {
  /** Days since the epoch (UTC) these salts are for. */
  readonly day: number
  readonly current: Uint8Array
  /** The previous day's salt, or undefined when none was made that day (or it could not be read). */
  readonly previous: Uint8Array | undefined
}

export interface SaltStore {
  /**
   * The salts for the UTC day containing `nowMs` (default: the store's clock). Makes that day's salt
   * when it does not exist yet and deletes older ones. Time never runs backwards here: asked for an
   * earlier day than the last one served, the store answers with the last one.
   */
  get(nowMs?: number): Salts
  /**
   * Like `get`, and makes the previous day's salt when none was made that day: an event back-dated
   * to yesterday (a trusted sender's) needs it. That salt is deleted on the same day as if it had
   * been made yesterday, so it too is gone 48 h after its day began.
   */
  withPrevious(nowMs?: number): Salts
}

export interface SaltStoreOptions {
  /** Milliseconds since the epoch; tests pass a fake clock. */
  clock?: () => number
  /** Source of salt bytes; tests may pass a deterministic one. */
  random?: (size: number) => Uint8Array
}

export function dayOf(ms: number): number {
  return Math.floor(ms / DAY_MS)
}

/** `YYYY-MM-DD` of a day number. */
export function dayName(day: number): string {
  return new Date(day * DAY_MS).toISOString().slice(0, 10)
}

const defaultRandom = (size: number): Uint8Array => new Uint8Array(randomBytes(size))

/** Salts held by this process only: ids change on restart and differ between processes. */
export function createMemorySaltStore(options: SaltStoreOptions = {}): SaltStore {
  const clock = options.clock ?? Date.now
  const random = options.random ?? defaultRandom
  const byDay = new Map<number, Uint8Array>()
  let served: Salts | undefined
  return {
    get(nowMs = clock()) {
      const day = dayOf(nowMs)
      if (served !== undefined && day <= served.day) return served
      let current = byDay.get(day)
      if (current === undefined) {
        current = random(SALT_BYTES)
        byDay.set(day, current)
      }
      for (const d of byDay.keys()) if (d < day - 1) byDay.delete(d)
      served = Object.freeze({ day, current, previous: byDay.get(day - 1) })
      return served
    },
    withPrevious(nowMs = clock()) {
      const salts = this.get(nowMs)
      if (salts.previous !== undefined) return salts
      const previous = random(SALT_BYTES)
      byDay.set(salts.day - 1, previous)
      served = Object.freeze({ day: salts.day, current: salts.current, previous })
      return served
    },
  }
}

export interface FileSaltStoreOptions extends SaltStoreOptions {
  /** The folder of the salt files (created 0700 when missing). */
  directory: string
  logger?: Logger
}

const SALT_FILE = /^salt-(\d{4})-(\d{2})-(\d{2})$/
const TEMP_FILE = /^\.salt-.+\.tmp$/

/**
 * Salts shared by the processes of one machine through a folder: one file `salt-YYYY-MM-DD` per day,
 * 16 raw bytes, mode 0600. The first process to need a day's salt creates its file atomically (a
 * complete temporary file hard-linked to the final name, which fails if the name exists); every
 * other process reads that file, so all agree. Files of days before yesterday are deleted.
 *
 * A file system failure after start never stops ingestion: that day's salt is then kept in memory
 * (ids may differ between processes for the day) and the failure is logged, without the salt.
 */
export function createFileSaltStore(options: FileSaltStoreOptions): SaltStore {
  const { directory, logger } = options
  const clock = options.clock ?? Date.now
  const random = options.random ?? defaultRandom
  try {
    mkdirSync(directory, { recursive: true, mode: 0o700 })
  } catch (error) {
    throw new ConfigError('directory', `cannot create the salt folder ${directory}: ${(error as Error).message}`)
  }
  const fallback = new Map<number, Uint8Array>()
  let served: Salts | undefined

  const fileOf = (day: number) => join(directory, `salt-${dayName(day)}`)

  const read = (day: number): Uint8Array | undefined => {
    try {
      const bytes = readFileSync(fileOf(day))
      if (bytes.length === SALT_BYTES) return new Uint8Array(bytes)
      logger?.error('A salt file has the wrong size; it is ignored', { file: fileOf(day), bytes: bytes.length })
      return undefined
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        logger?.error('A salt file cannot be read', { file: fileOf(day), error })
      }
      return undefined
    }
  }

  const create = (day: number): Uint8Array | undefined => {
    const salt = random(SALT_BYTES)
    const temp = join(
      directory,
      `.salt-${dayName(day)}.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2)}.tmp`,
    )
    try {
      const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
      try {
        writeSync(fd, salt)
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
      try {
        linkSync(temp, fileOf(day))
        return salt
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
        // Another process made the day's salt first: theirs is the one.
        return read(day)
      }
    } catch (error) {
      logger?.error('A salt file cannot be created', { file: fileOf(day), error })
      return undefined
    } finally {
      try {
        unlinkSync(temp)
      } catch {
        // Already gone, or never made.
      }
    }
  }

  const prune = (day: number) => {
    let names: string[]
    try {
      names = readdirSync(directory)
    } catch (error) {
      logger?.error('The salt folder cannot be listed', { directory, error })
      return
    }
    const now = clock()
    for (const name of names) {
      const match = SALT_FILE.exec(name)
      let stale = false
      if (match) {
        const fileDay = dayOf(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])))
        stale = fileDay < day - 1
      } else if (TEMP_FILE.test(name)) {
        // Leftovers of a process that died between writing and linking.
        try {
          stale = now - statSync(join(directory, name)).mtimeMs > 3_600_000
        } catch {
          stale = false
        }
      }
      if (!stale) continue
      try {
        unlinkSync(join(directory, name))
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
          logger?.error('An expired salt file cannot be deleted', { file: name, error })
        }
      }
    }
    for (const d of fallback.keys()) if (d < day - 1) fallback.delete(d)
  }

  const saltFor = (day: number, make: boolean): Uint8Array | undefined => {
    const kept = fallback.get(day)
    if (kept !== undefined) return kept
    const found = read(day) ?? (make ? create(day) : undefined)
    if (found !== undefined || !make) return found
    const local = random(SALT_BYTES)
    fallback.set(day, local)
    return local
  }

  return {
    get(nowMs = clock()) {
      const day = dayOf(nowMs)
      if (served !== undefined && day <= served.day) return served
      const current = saltFor(day, true)!
      const previous = saltFor(day - 1, false)
      prune(day)
      served = Object.freeze({ day, current, previous })
      return served
    },
    withPrevious(nowMs = clock()) {
      const salts = this.get(nowMs)
      if (salts.previous !== undefined) return salts
      // Made (or, when another process was first, read) like any day's salt; pruned with it.
      served = Object.freeze({ day: salts.day, current: salts.current, previous: saltFor(salts.day - 1, true) })
      return served
    },
  }
}
