// The replay ledger (docs/operators/replay.md "Idempotence"): the ids of the records already replayed,
// kept under the state folder so a second run, or a run resumed after an interruption, writes nothing
// twice. It holds keyed hashes only: an id is the first 128 bits of HMAC-SHA256 under a random key
// made for this ledger, so an id cannot be tested against a guessed address or user agent without
// the key, and holds nothing that could be read back.
//
// Files, in `<stateDir>/replay/`:
//   key     32 random bytes, mode 0600, made once (atomically: the first process wins)
//   ledger  one id per line (32 hex digits), appended and fsync'd per checkpoint
//   lock    the pid of the replay holding the ledger; a second replay on the same state refuses to run

import { createHmac, randomBytes } from 'node:crypto'
import {
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'
import { isProcessAlive } from '../processes.ts'

const ID = /^[0-9a-f]{32}$/

export class LedgerBusy extends Error {}

export class Ledger {
  private readonly ids = new Set<string>()
  private readonly fd: number
  private readonly key: Buffer
  private readonly lockFile: string

  private constructor(directory: string) {
    this.lockFile = join(directory, 'lock')
    this.key = readOrMakeKey(join(directory, 'key'))
    const file = join(directory, 'ledger')
    if (existsSync(file)) {
      // A line cut short by a crash mid-append is not an id; it is skipped, and its record replays.
      for (const line of readFileSync(file, 'latin1').split('\n')) if (ID.test(line)) this.ids.add(line)
    }
    this.fd = openSync(file, 'a', 0o600)
  }

  /** Opens (creating when missing) the ledger in `directory` and takes its lock. */
  static open(directory: string): Ledger {
    mkdirSync(directory, { recursive: true, mode: 0o700 })
    takeLock(join(directory, 'lock'))
    try {
      return new Ledger(directory)
    } catch (error) {
      releaseLock(join(directory, 'lock'))
      throw error
    }
  }

  get size(): number {
    return this.ids.size
  }

  /** The id of a record's canonical text (the `n`th record with that text in this run: n ≥ 0). */
  idOf(canonical: string, occurrence: number): string {
    const h = createHmac('sha256', this.key).update(canonical)
    if (occurrence > 0) h.update(`\n#${occurrence}`)
    return h.digest('hex').slice(0, 32)
  }

  /** The id of a record's canonical text, for counting its occurrences without keeping the text. */
  contentKey(canonical: string): string {
    return createHmac('sha256', this.key).update('content\n').update(canonical).digest('hex').slice(0, 32)
  }

  has(id: string): boolean {
    return this.ids.has(id)
  }

  /** Marks ids as replayed, durably (written and fsync'd before this returns). */
  commit(ids: Iterable<string>): void {
    let text = ''
    for (const id of ids) {
      if (this.ids.has(id)) continue
      this.ids.add(id)
      text += `${id}\n`
    }
    if (text === '') return
    writeSync(this.fd, text)
    fsyncSync(this.fd)
  }

  close(): void {
    closeSync(this.fd)
    releaseLock(this.lockFile)
  }
}

function readOrMakeKey(file: string): Buffer {
  if (!existsSync(file)) {
    const temp = `${file}.${process.pid}.tmp`
    writeFileSync(temp, randomBytes(32), { mode: 0o600 })
    try {
      linkSync(temp, file)
    } catch (error) {
      // Another process made the key first: theirs is the one.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    } finally {
      unlinkSync(temp)
    }
  }
  const key = readFileSync(file)
  if (key.length !== 32)
    throw new Error(`the replay key ${file} is not 32 bytes; delete the replay folder to start over`)
  return key
}

function takeLock(file: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
      writeSync(fd, String(process.pid))
      closeSync(fd)
      return
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const holder = Number(readFileSync(file, 'utf8').trim())
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isProcessAlive(holder)) {
      throw new LedgerBusy(`another replay (pid ${holder}) is using this state folder`)
    }
    // Left by a replay that was killed: take it over.
    try {
      unlinkSync(file)
    } catch {
      // Someone else took it over first; the next attempt decides.
    }
  }
  throw new LedgerBusy('another replay is taking this state folder')
}

function releaseLock(file: string): void {
  try {
    if (readFileSync(file, 'utf8').trim() === String(process.pid)) unlinkSync(file)
  } catch {
    // Already gone.
  }
}
