// RowBinary against JSONEachRow for events_v2 on a throwaway ClickHouse (docs/delivery.md, "Wire
// format"): payload size, encoding CPU, insert time with and without gzip. Not a test; run by hand:
//
//   bun test/clickhouse/wire-format-bench.ts [events=10000] [runs=9]
//
// The RowBinary encoder here is a measuring device for this one table, not a sink feature: it writes
// the columns of EVENT_COLUMNS in order (LowCardinality(String) as String, which RowBinary accepts).

import { Readable } from 'node:stream'
import { createClient } from '@clickhouse/client'
import type { AnalyticsEvent } from '../../core/event.ts'
import { sortedProps } from '../../core/rows.ts'
import { eventLine } from '../../sinks/clickhouse/encode.ts'
import clickhouse from '../../sinks/clickhouse/index.ts'
import { EVENT_COLUMNS } from '../../sinks/clickhouse/schema.ts'
import { realisticEvents, removeScratch, scratchServices, sinkOptions } from './fixtures.ts'
import { startClickHouse } from './harness.ts'

const [count = 10_000, runs = 9] = process.argv.slice(2).map(Number)

/** A growable little-endian byte buffer. */
class Out {
  buf = new Uint8Array(1 << 20)
  view = new DataView(this.buf.buffer)
  at = 0
  private room(n: number): void {
    if (this.at + n <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.at + n))
    next.set(this.buf.subarray(0, this.at))
    this.buf = next
    this.view = new DataView(next.buffer)
  }
  u8(v: number): void {
    this.room(1)
    this.buf[this.at++] = v
  }
  u32(v: number): void {
    this.room(4)
    this.view.setUint32(this.at, v, true)
    this.at += 4
  }
  u64(v: bigint): void {
    this.room(8)
    this.view.setBigUint64(this.at, v, true)
    this.at += 8
  }
  i64(v: bigint): void {
    this.room(8)
    this.view.setBigInt64(this.at, v, true)
    this.at += 8
  }
  varint(v: number): void {
    while (v >= 0x80) {
      this.u8((v & 0x7f) | 0x80)
      v >>>= 7
    }
    this.u8(v)
  }
  string(s: string): void {
    // Worst case 3 bytes per UTF-16 unit. Most values are shorter than 128 bytes: encode them in
    // place behind a one-byte length; move the rare longer one behind its longer varint.
    this.room(s.length * 3 + 5)
    const { written } = encoder.encodeInto(s, this.buf.subarray(this.at + 1))
    if (written < 0x80) {
      this.buf[this.at] = written
      this.at += 1 + written
      return
    }
    const bytes = this.buf.slice(this.at + 1, this.at + 1 + written)
    this.varint(written)
    this.buf.set(bytes, this.at)
    this.at += written
  }
  fixed(s: string, n: number): void {
    this.room(n)
    const bytes = encoder.encode(s)
    for (let i = 0; i < n; i++) this.buf[this.at + i] = bytes[i] ?? 0
    this.at += n
  }
  decimal3(text: string): void {
    if (text === '') {
      this.u8(1)
      return
    }
    this.u8(0)
    const [whole = '0', fraction = ''] = text.replace('-', '').split('.')
    const value = BigInt(whole) * 1000n + BigInt(fraction.padEnd(3, '0'))
    this.i64(text.startsWith('-') ? -value : value)
  }
  bytes(): Uint8Array {
    return this.buf.slice(0, this.at)
  }
}
const encoder = new TextEncoder()

function rowBinary(events: AnalyticsEvent[]): Uint8Array {
  const o = new Out()
  for (const e of events) {
    const [keys, values] = sortedProps(e.props)
    for (const column of EVENT_COLUMNS) {
      switch (column.name) {
        case 'timestamp':
          o.u32(e.timestamp)
          break
        case 'site_id':
          o.u64(BigInt(e.site_id))
          break
        case 'user_id':
          o.u64(e.user_id)
          break
        case 'session_id':
          o.u64(e.session_id)
          break
        case 'country_code':
          o.fixed(e.country_code, 2)
          break
        case 'meta.key':
        case 'meta.value': {
          const list = column.name === 'meta.key' ? keys : values
          o.varint(list.length)
          for (const s of list) o.string(s)
          break
        }
        case 'city_geoname_id':
        case 'engagement_time':
          o.u32((e as unknown as Record<string, number>)[column.name]!)
          break
        case 'scroll_depth':
          o.u8(e.scroll_depth)
          break
        case 'revenue_reporting_amount':
        case 'revenue_source_amount':
          o.decimal3((e as unknown as Record<string, string>)[column.name]!)
          break
        case 'revenue_reporting_currency':
        case 'revenue_source_currency':
          o.fixed((e as unknown as Record<string, string>)[column.name]!, 3)
          break
        default:
          o.string((e as unknown as Record<string, string>)[column.name]!)
      }
    }
  }
  return o.bytes()
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const ch = await startClickHouse()
if (!ch) process.exit(0)
try {
  await clickhouse.migrate!(sinkOptions(clickhouse, { url: ch.url, database: 'wire' }), scratchServices())
  const events = realisticEvents(count)
  const encode = {
    JSONEachRow: () => encoder.encode(events.map(eventLine).join('\n')),
    RowBinary: () => rowBinary(events),
  }
  // Encoding: CPU time of the whole batch, median of `runs`.
  const payloads: Record<string, Uint8Array> = {}
  const cpu: Record<string, number> = {}
  for (const [format, run] of Object.entries(encode)) {
    run() // warm up
    const times: number[] = []
    for (let i = 0; i < runs; i++) {
      const started = process.cpuUsage()
      payloads[format] = run()
      const used = process.cpuUsage(started)
      times.push((used.user + used.system) / 1000)
    }
    cpu[format] = median(times)
  }
  // Inserts: the formats take turns, so background merges of the growing table hit both alike.
  const results: Record<string, unknown>[] = []
  for (const gzip of [false, true]) {
    const client = createClient({ url: ch.url, compression: { request: gzip, response: false }, log: { level: 127 } })
    const insert: Record<string, number[]> = { JSONEachRow: [], RowBinary: [] }
    for (let i = 0; i < runs; i++) {
      for (const format of Object.keys(encode)) {
        const started = performance.now()
        const result = await client.exec({
          query: `INSERT INTO wire.events_v2 FORMAT ${format}`,
          values: Readable.from([payloads[format]!], { objectMode: false }),
          clickhouse_settings: { input_format_skip_unknown_fields: 0 },
        })
        for await (const _ of result.stream) {
        }
        insert[format]!.push(performance.now() - started)
      }
    }
    await client.close()
    for (const format of Object.keys(encode)) {
      results.push({
        format,
        gzip,
        payloadMB: +(payloads[format]!.length / 1e6).toFixed(2),
        encodeCpuMs: +cpu[format]!.toFixed(1),
        insertMs: +median(insert[format]!).toFixed(0),
      })
    }
  }
  const stored = await ch.query('SELECT count() FROM wire.events_v2')
  console.table(results)
  console.log(`rows stored: ${stored.trim()} (expected ${count * runs * 4})`)
} finally {
  await ch.destroy()
  removeScratch()
}
