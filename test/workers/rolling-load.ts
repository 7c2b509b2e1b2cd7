// The load of test/workers/rolling.test.ts, run inside its network namespace (`ip netns exec NS bun
// rolling-load.ts PORT RATE`): tracker requests with a unique `seq` prop, each on a fresh connection,
// about RATE a second (default 1,000) from 48 loops, until SIGTERM; then one JSON line on stdout: the seqs answered
// 202, the failed requests by status (0 = connection reset or refused) and the count sent.

import { send } from './helpers.ts'

const port = Number(process.argv[2])
const rate = Number(process.argv[3] ?? 1000)
const parallel = 48
const pause = (parallel * 1000) / rate
const accepted: number[] = []
const failures: Record<string, number> = {}
let next = 0
let streaming = true

process.on('SIGTERM', () => {
  streaming = false
})

const loops = Array.from({ length: parallel }, async () => {
  while (streaming) {
    const seq = next++
    const began = Date.now()
    const status = await send(port, seq % 5000, {
      n: 'pageview',
      u: `https://example.com/s/${seq}`,
      d: 'example.com',
      p: { seq: String(seq) },
    })
    if (status === 202) accepted.push(seq)
    else failures[status] = (failures[status] ?? 0) + 1
    const wait = pause - (Date.now() - began)
    if (wait > 0) await Bun.sleep(wait)
  }
})
console.error('load started')
await Promise.all(loops)
console.log(JSON.stringify({ sent: next, accepted, failures }))
