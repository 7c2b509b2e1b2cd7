import { afterEach, describe, expect, test } from 'bun:test'
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DeadLetterFile, Spool, SpoolBudget, SpoolCorruptError, SpoolFullError, type SpoolRecord } from './spool.ts'

const dirs: string[] = []
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'spool-test-'))
  dirs.push(dir)
  return dir
}
const opened: Spool[] = []
async function openSpool(...args: Parameters<typeof Spool.open>): Promise<Spool> {
  const spool = await Spool.open(...args)
  opened.push(spool)
  return spool
}
afterEach(async () => {
  for (const spool of opened.splice(0)) await spool.close()
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

const record = (i: number, size = 100): SpoolRecord => ({
  id: `batch-${i}`,
  rows: i + 1,
  payload: new TextEncoder().encode(`${i}:`.padEnd(size, 'x')),
})
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

async function drain(spool: Spool): Promise<string[]> {
  const out: string[] = []
  for (let entry = spool.peek(); entry; entry = spool.peek()) {
    out.push(text(await spool.read(entry)))
    await spool.ack(entry)
  }
  return out
}

describe('spool', () => {
  test('a batch of several records cut off among its acks (a crash) is not replayed in part', async () => {
    const dir = tempDir()
    const budget = new SpoolBudget(1 << 20)
    // One record per segment, so the batch also spans segments (the first is deleted on its ack).
    const spool = await Spool.open(dir, budget, { segmentBytes: 1 })
    const part = (id: string, i: number): SpoolRecord => ({
      id,
      rows: 1,
      payload: new TextEncoder().encode(`${id}:${i}`),
    })
    for (let i = 0; i < 3; i++) await spool.append(part('X', i))
    await spool.append(part('Y', 0))
    const run = [...spool.entries()].slice(0, 3)
    // The process dies after the first record's ack: the others stay on disk.
    const ack = spool.ack.bind(spool)
    let acks = 0
    spool.ack = (entry) => (++acks > 1 ? Promise.reject(new Error('killed')) : ack(entry))
    await expect(spool.ackBatch(run)).rejects.toThrow('killed')
    await spool.close()
    const reopened = await openSpool(dir, new SpoolBudget(1 << 20), { segmentBytes: 1 })
    expect([...reopened.entries()].map((e) => e.id)).toEqual(['Y'])
    expect(await drain(reopened)).toEqual(['Y:0'])
  })

  test('a batch acknowledged whole leaves the next batch alone at the next open', async () => {
    const dir = tempDir()
    const spool = await Spool.open(dir, new SpoolBudget(1 << 20))
    for (const id of ['X', 'X', 'Y', 'Y']) await spool.append({ id, rows: 1, payload: new Uint8Array([65]) })
    await spool.ackBatch([...spool.entries()].slice(0, 2))
    await spool.close()
    const reopened = await openSpool(dir, new SpoolBudget(1 << 20))
    expect([...reopened.entries()].map((e) => e.id)).toEqual(['Y', 'Y'])
  })

  test('replays records oldest first and deletes drained segments', async () => {
    const dir = tempDir()
    const budget = new SpoolBudget(1 << 20)
    const spool = await openSpool(dir, budget, { segmentBytes: 250 })
    for (let i = 0; i < 5; i++) await spool.append(record(i))
    expect(spool.records).toBe(5)
    expect(spool.rows).toBe(1 + 2 + 3 + 4 + 5)
    expect(readdirSync(dir).filter((n) => n.endsWith('.seg')).length).toBeGreaterThan(1)
    expect(budget.usedBytes).toBe(spool.bytes)
    const seen = await drain(spool)
    expect(seen.map((s) => s.split(':')[0])).toEqual(['0', '1', '2', '3', '4'])
    expect(spool.records).toBe(0)
    expect(budget.usedBytes).toBe(0)
    expect(readdirSync(dir).filter((n) => n.endsWith('.seg') || n.endsWith('.ack'))).toEqual([])
    await spool.close()
  })

  test('a reopened spool resumes after the last acknowledged record, ids intact', async () => {
    const dir = tempDir()
    const first = await openSpool(dir, new SpoolBudget(1 << 20))
    for (let i = 0; i < 4; i++) await first.append(record(i))
    const head = first.peek()!
    await first.ack(head)
    // No close: as after a SIGKILL.
    const again = await openSpool(dir, new SpoolBudget(1 << 20))
    expect(again.records).toBe(3)
    expect(again.peek()?.id).toBe('batch-1')
    expect((await drain(again)).map((s) => s.split(':')[0])).toEqual(['1', '2', '3'])
  })

  test('a torn last record is cut off at open', async () => {
    const dir = tempDir()
    const spool = await openSpool(dir, new SpoolBudget(1 << 20))
    await spool.append(record(0))
    await spool.append(record(1))
    await spool.close()
    const segment = join(dir, readdirSync(dir).find((n) => n.endsWith('.seg'))!)
    appendFileSync(segment, '{"id":"batch-2","rows":3,"bytes":100,"crc":1}\n2:xxx') // died mid-write
    const again = await openSpool(dir, new SpoolBudget(1 << 20))
    expect(again.records).toBe(2)
    await again.append(record(3))
    expect((await drain(again)).map((s) => s.split(':')[0])).toEqual(['0', '1', '3'])
  })

  test('a record whose bytes changed fails its checksum on read', async () => {
    const dir = tempDir()
    const spool = await openSpool(dir, new SpoolBudget(1 << 20))
    await spool.append(record(0))
    await spool.append(record(1))
    const segment = join(dir, readdirSync(dir).find((n) => n.endsWith('.seg'))!)
    const bytes = readFileSync(segment)
    bytes[bytes.indexOf('0:') + 5] = 'y'.charCodeAt(0)
    writeFileSync(segment, bytes)
    await expect(spool.read(spool.peek()!)).rejects.toBeInstanceOf(SpoolCorruptError)
  })

  test('refuses records beyond the shared budget', async () => {
    const budget = new SpoolBudget(Spool.recordBytes(record(0)) * 2)
    const a = await openSpool(join(tempDir(), 'a'), budget)
    const b = await openSpool(join(tempDir(), 'b'), budget)
    await a.append(record(0))
    await b.append(record(1))
    expect(a.hasRoom(record(2))).toBe(false)
    await expect(a.append(record(2))).rejects.toBeInstanceOf(SpoolFullError)
    await a.ack(a.peek()!)
    expect(b.hasRoom(record(2))).toBe(true)
  })

  test('dead letters are JSON lines with the error and the payload', async () => {
    const path = join(tempDir(), 'sub', 'dead.ndjson')
    const file = new DeadLetterFile(path)
    await file.write({ table: 't', id: 'x', rows: 1, error: 'Code: 27', payload: new TextEncoder().encode('{"a":1}') })
    expect(existsSync(path)).toBe(true)
    const line = JSON.parse(readFileSync(path, 'utf8').trim())
    expect(line).toMatchObject({ table: 't', id: 'x', rows: 1, error: 'Code: 27', payload: '{"a":1}' })
  })
})

test('a folder held by another live process is refused; one left by a dead process is taken over', async () => {
  const dir = tempDir()
  const holder = Bun.spawn(['sleep', '30'])
  try {
    writeFileSync(join(dir, '.lock'), String(holder.pid))
    await expect(Spool.open(dir, new SpoolBudget(1 << 20))).rejects.toThrow(`in use by process ${holder.pid}`)
  } finally {
    holder.kill('SIGKILL')
    await holder.exited
  }
  // The holder died without closing: its lock no longer counts.
  const spool = await openSpool(dir, new SpoolBudget(1 << 20))
  expect(readFileSync(join(dir, '.lock'), 'utf8')).toBe(String(process.pid))
  await spool.close()
  expect(existsSync(join(dir, '.lock'))).toBe(false)
})
