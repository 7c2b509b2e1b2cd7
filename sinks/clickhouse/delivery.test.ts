// The delivery lane against a fake server: batching, one insert in flight, retries with the same
// identity, spooling while down, dead letters, close and replay. No ClickHouse needed.

import { afterEach, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLogger } from '../../core/logger.ts'
import { DurabilityError, SinkStats } from '../../core/sink.ts'
import { DeadLetterFile, Spool, SpoolBudget } from '../spool/spool.ts'
import { type Batch, type Inserter, Lane } from './delivery.ts'

const dirs: string[] = []
const spools: Spool[] = []
afterEach(async () => {
  for (const spool of spools.splice(0)) await spool.close()
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

/** Stores lines; can be down, slow, or reject payloads containing BAD as ClickHouse does. */
class FakeServer implements Inserter {
  down = false
  delayMs = 0
  inFlight = 0
  maxInFlight = 0
  readonly attempts: string[] = []
  readonly stored: string[] = []
  /** Rows per attempt, in attempt order. */
  readonly sizes: number[] = []
  async insert(_table: string, batch: Batch): Promise<void> {
    this.attempts.push(batch.id)
    this.sizes.push(batch.rows)
    this.inFlight++
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight)
    try {
      if (this.delayMs) await Bun.sleep(this.delayMs)
      if (this.down) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8123'), { code: 'ECONNREFUSED' })
      const text = new TextDecoder().decode(batch.payload)
      if (text.includes('BAD')) {
        throw new Error('Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: BAD')
      }
      this.stored.push(...text.split('\n'))
    } finally {
      this.inFlight--
    }
  }
}

async function setup(
  server: FakeServer,
  dir?: string,
  overrides: Partial<{ batchRows: number; limit: number; durable: boolean; flushIntervalMs: number }> = {},
) {
  const root = dir ?? mkdtempSync(join(tmpdir(), 'lane-test-'))
  if (!dir) dirs.push(root)
  const logs: string[] = []
  const logger = createLogger({ write: (l) => logs.push(l) })
  const stats = new SinkStats()
  const spool = await Spool.open(join(root, 'spool'), new SpoolBudget(overrides.limit ?? 1 << 24))
  spools.push(spool)
  const deadLetters = new DeadLetterFile(join(root, 'dead.ndjson'))
  const lane = new Lane({
    table: 'events_v2',
    batchRows: overrides.batchRows ?? 10,
    flushIntervalMs: overrides.flushIntervalMs ?? 20,
    retryInitialMs: 5,
    retryMaxMs: 20,
    spool,
    deadLetters,
    inserter: server,
    stats,
    logger,
    sink: 'test',
    durable: overrides.durable ?? false,
  })
  return { lane, spool, stats, logs, root, deadPath: join(root, 'dead.ndjson') }
}

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await Bun.sleep(5)
  }
}

const line = (i: number) => JSON.stringify({ seq: i })

describe('delivery lane', () => {
  test('seals at batchRows and after flushIntervalMs, one insert in flight', async () => {
    const server = new FakeServer()
    server.delayMs = 10
    const { lane, stats } = await setup(server)
    for (let i = 0; i < 35; i++) lane.add(line(i))
    await until(() => server.stored.length === 35)
    expect(server.stored).toEqual(Array.from({ length: 35 }, (_, i) => line(i)))
    expect(server.maxInFlight).toBe(1)
    expect(stats.rowsWritten).toBe(35)
    expect(stats.batches).toBe(4)
    await lane.close()
  })

  test('while the server is down batches are spooled; afterwards every row arrives once, in order', async () => {
    const server = new FakeServer()
    const { lane, spool, stats } = await setup(server)
    server.down = true
    for (let i = 0; i < 50; i++) lane.add(line(i))
    await lane.flush()
    await until(() => lane.health().failure !== undefined)
    expect(spool.rows).toBe(50)
    expect(lane.health().failure?.kind).toBe('transient')
    for (let i = 50; i < 60; i++) lane.add(line(i))
    await lane.flush()
    expect(spool.rows).toBe(60)
    server.down = false
    await until(() => server.stored.length === 60)
    expect(server.stored).toEqual(Array.from({ length: 60 }, (_, i) => line(i)))
    expect(stats.retries).toBeGreaterThan(0)
    expect(lane.health()).toMatchObject({ failure: undefined, spooledRows: 0, queuedRows: 0 })
    // Every attempt of one batch carried the same identity.
    const first = server.attempts[0]!
    expect(server.attempts.filter((id) => id === first).length).toBeGreaterThan(1)
    expect(new Set(server.attempts).size).toBe(6)
    await lane.close()
  })

  test('a malformed batch goes to the dead-letter file, counted, and the rest flows', async () => {
    const server = new FakeServer()
    const { lane, stats, deadPath, logs } = await setup(server, undefined, { batchRows: 2 })
    lane.add(line(1))
    lane.add('{"seq":"BAD"}')
    lane.add(line(3))
    lane.add(line(4))
    await lane.flush()
    await until(() => server.stored.length === 2)
    expect(server.stored).toEqual([line(3), line(4)])
    expect(stats.deadLetters).toBe(1)
    expect(stats.rowsFailed).toBe(2)
    const dead = JSON.parse(readFileSync(deadPath, 'utf8').trim())
    expect(dead).toMatchObject({ table: 'events_v2', rows: 2, payload: `${line(1)}\n{"seq":"BAD"}` })
    expect(dead.error).toContain('Code: 27')
    // Logs carry the code and name, not the row data the server quoted.
    expect(logs.join('')).toContain('CANNOT_PARSE_INPUT_ASSERTION_FAILED')
    expect(logs.join('')).not.toContain('BAD')
    await lane.close()
  })

  test('close() while the server is down spools everything; the next lane replays it', async () => {
    const server = new FakeServer()
    server.down = true
    const first = await setup(server)
    for (let i = 0; i < 25; i++) first.lane.add(line(i))
    await first.lane.close()
    await first.spool.close()
    expect(first.spool.rows).toBe(25)
    server.down = false
    const second = await setup(server, first.root)
    await until(() => server.stored.length === 25)
    expect(server.stored).toEqual(Array.from({ length: 25 }, (_, i) => line(i)))
    await second.lane.close()
    expect(existsSync(join(first.root, 'spool'))).toBe(true)
    expect(second.spool.records).toBe(0)
  })

  test('close() while healthy delivers what is buffered', async () => {
    const server = new FakeServer()
    const { lane, spool } = await setup(server, undefined, { batchRows: 1000 })
    for (let i = 0; i < 5; i++) lane.add(line(i))
    await lane.close()
    expect(server.stored.length).toBe(5)
    expect(spool.records).toBe(0)
  })

  test('with the spool full and the server down, rows wait in memory, then are dropped and counted', async () => {
    const server = new FakeServer()
    server.down = true
    const { lane, stats } = await setup(server, undefined, { batchRows: 10_000, limit: 200 })
    for (let i = 0; i < 10_000; i++) lane.add(line(i))
    await lane.flush()
    for (let i = 10_000; i < 60_000; i++) lane.add(line(i))
    await lane.flush()
    const h = lane.health()
    expect(h.spoolProblem).toBe('spool is full')
    expect(h.queuedRows).toBe(50_000)
    expect(stats.rowsFailed).toBe(10_000)
    server.down = false
    await until(() => server.stored.length === 50_000)
    expect(lane.health()).toMatchObject({ spoolProblem: undefined, queuedRows: 0 })
    await lane.close()
  })

  test('a missing table makes the lane migrate once per attempt and retry at once', async () => {
    /** Answers UNKNOWN_TABLE until its migration has run; the migration fails while `ddlFails`. */
    class EmptyServer extends FakeServer {
      tables = false
      ddlFails = true
      migrations = 0
      override async insert(table: string, batch: Batch): Promise<void> {
        this.attempts.push(batch.id)
        if (!this.tables)
          throw new Error(`Code: 60, e.displayText() = DB::Exception: Table analytics.${table} doesn't exist.`)
        this.stored.push(...new TextDecoder().decode(batch.payload).split('\n'))
      }
      async createMissing(): Promise<string[]> {
        this.migrations++
        if (this.ddlFails) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })
        this.tables = true
        return ['created table analytics.events_v2']
      }
    }
    const server = new EmptyServer()
    const { lane, stats, logs } = await setup(server)
    for (let i = 0; i < 3; i++) lane.add(line(i))
    await lane.flush()
    await until(() => server.migrations >= 3)
    // Every attempt tried one migration, no more: attempts and migrations go in step with the backoff.
    expect(server.migrations).toBeLessThanOrEqual(server.attempts.length)
    expect(server.stored).toEqual([])
    server.ddlFails = false
    await until(() => server.stored.length === 3)
    expect(server.stored).toEqual([line(0), line(1), line(2)])
    // The successful migration and the insert after it happened in the same attempt.
    expect(server.attempts.at(-1)).toBe(server.attempts.at(-2))
    expect(stats.deadLetters).toBe(0)
    expect(lane.health().failure).toBeUndefined()
    expect(logs.some((l) => l.includes('the sink migrated and retries'))).toBe(true)
    await lane.close()
  })
})

describe('ack: durable', () => {
  test('sync resolves once the rows are fsynced in the spool, before any insert; concurrent syncs share commits', async () => {
    const server = new FakeServer()
    const { lane, spool } = await setup(server, undefined, { durable: true, batchRows: 1000, flushIntervalMs: 200 })
    const waits: Promise<void>[] = []
    for (let i = 0; i < 50; i++) {
      lane.add(line(i))
      waits.push(lane.sync())
    }
    await Promise.all(waits)
    expect(spool.rows).toBe(50)
    // Fifty requests, a handful of fsyncs: the first commit takes one row, the next all that came meanwhile.
    expect(spool.records).toBeLessThanOrEqual(3)
    expect(server.attempts).toEqual([])
    // One batch: the records share one id, delivered as one insert once the batch is due.
    await until(() => server.stored.length === 50)
    expect(new Set(server.attempts).size).toBe(1)
    expect(server.stored).toEqual(Array.from({ length: 50 }, (_, i) => line(i)))
    await until(() => spool.records === 0)
    await lane.close()
  })

  test('a batch is sealed at batchRows; a retry resends the identical batch', async () => {
    const server = new FakeServer()
    server.down = true
    // A long interval: only batchRows closes a batch, however slow the disk's fsync.
    const { lane } = await setup(server, undefined, { durable: true, batchRows: 4, flushIntervalMs: 10_000 })
    for (let i = 0; i < 10; i++) {
      lane.add(line(i))
      await lane.sync()
    }
    await until(() => server.attempts.length >= 3)
    const first = server.attempts[0]
    expect(server.attempts.every((id) => id === first)).toBe(true)
    server.down = false
    // The two full batches go at once; the third (2 rows) is still open and goes at close.
    await until(() => server.stored.length === 8)
    await lane.close()
    expect(server.stored).toEqual(Array.from({ length: 10 }, (_, i) => line(i)))
    // Batches of at most 4 rows: 4 + 4 + 2, from ten commits of one row each.
    expect(new Set(server.attempts).size).toBe(3)
  })

  test('a commit that would take the open batch past batchRows starts the next batch instead', async () => {
    const server = new FakeServer()
    const { lane } = await setup(server, undefined, { durable: true, batchRows: 4, flushIntervalMs: 10_000 })
    // Commits of 3, 3, 1 and 3 rows: 3 + 3 would be 6, so the second starts a batch, which the 1 fits.
    let seq = 0
    for (const rows of [3, 3, 1, 3]) {
      for (let i = 0; i < rows; i++) lane.add(line(seq++))
      await lane.sync()
    }
    await lane.close()
    expect(server.stored).toEqual(Array.from({ length: 10 }, (_, i) => line(i)))
    expect(server.sizes).toEqual([3, 4, 3])
  })

  test('a lane that stops while the server is down leaves batches whose identity the next start keeps', async () => {
    const server = new FakeServer()
    server.down = true
    const root = mkdtempSync(join(tmpdir(), 'lane-test-'))
    dirs.push(root)
    const first = await setup(server, root, { durable: true, batchRows: 5 })
    for (let i = 0; i < 12; i++) first.lane.add(line(i))
    await first.lane.sync()
    await until(() => server.attempts.length > 0)
    const triedBefore = new Set(server.attempts)
    await first.lane.close()
    await first.spool.close()
    server.down = false
    const second = await setup(server, root, { durable: true, batchRows: 5 })
    await until(() => server.stored.length === 12)
    // The batch that was tried before the stop is tried again under the same id, with the same rows.
    expect([...triedBefore].every((id) => server.attempts.lastIndexOf(id) > server.attempts.indexOf(id))).toBe(true)
    expect(server.stored).toEqual(Array.from({ length: 12 }, (_, i) => line(i)))
    await second.lane.close()
  })

  test('a full spool rejects sync with a DurabilityError, drops and counts those rows, and takes new ones once it drains', async () => {
    const server = new FakeServer()
    server.down = true
    const { lane, spool, stats } = await setup(server, undefined, { durable: true, limit: 400, flushIntervalMs: 10 })
    lane.add(line(1))
    await lane.sync()
    lane.add('x'.repeat(1000))
    const error = await lane.sync().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(DurabilityError)
    // Answered 503 "not stored": the rows are not kept for later, where a resent event would meet them.
    expect(lane.health()).toMatchObject({ spoolProblem: 'spool is full', queuedRows: 0 })
    expect(stats.rowsFailed).toBe(1)
    server.down = false
    await until(() => spool.records === 0)
    lane.add(line(2))
    await lane.sync()
    await until(() => server.stored.length === 2)
    expect(server.stored).toEqual([line(1), line(2)])
    await lane.close()
  })

  test('batches written under ack: durable are sent whole after a switch to ack: received', async () => {
    const server = new FakeServer()
    server.down = true
    const root = mkdtempSync(join(tmpdir(), 'lane-test-'))
    dirs.push(root)
    const durable = await setup(server, root, { durable: true, batchRows: 100, flushIntervalMs: 10_000 })
    for (let i = 0; i < 10; i++) {
      durable.lane.add(line(i))
      await durable.lane.sync()
    }
    expect(durable.spool.records).toBe(10)
    await durable.lane.close()
    await durable.spool.close()
    server.down = false
    const received = await setup(server, root, { durable: false })
    await until(() => server.stored.length === 10)
    // One batch, one token: a server deduplicating by token keeps all ten rows.
    expect(new Set(server.attempts).size).toBe(1)
    await received.lane.close()
  })
})
