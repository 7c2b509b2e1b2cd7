import { expect, test } from 'bun:test'
import { SinkStats } from '../../core/sink.ts'
import { makeEvent, testServices } from '../../core/testing.ts'
import memory, { type MemorySinkInstance } from './index.ts'

test('keeps event rows in order and drops the oldest beyond maxRows', async () => {
  const stats = new SinkStats()
  const sink = (await memory.setup({ maxRows: 2 }, testServices(), stats)) as MemorySinkInstance
  for (const name of ['a', 'b', 'c']) sink.write(makeEvent({ name }))
  expect(sink.events.map((r) => r.name)).toEqual(['b', 'c'])
  expect(stats.rowsWritten).toBe(3)
  sink.clear()
  expect(sink.events).toEqual([])
})
