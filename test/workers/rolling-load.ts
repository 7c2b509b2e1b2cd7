// The load of test/workers/rolling.test.ts, run inside its network namespace (`ip netns exec NS bun
// rolling-load.ts PORT RATE`): tracker requests with a unique `seq` prop, each on a fresh connection,
// about RATE a second (default 1,000) from 48 loops, until SIGTERM; then one JSON line on stdout: the seqs answered
// 202, the failed requests by status (0 = connection reset or refused) and each failure's detail, and
// the count sent.

import { streamSeqs } from './helpers.ts'

const port = Number(process.argv[2])
const rate = Number(process.argv[3] ?? 1000)
const traffic = streamSeqs(port, rate, 48)
process.on('SIGTERM', async () => {
  await traffic.stop()
  const failures = Object.fromEntries(traffic.failures)
  console.log(
    JSON.stringify({ sent: traffic.sent(), accepted: [...traffic.accepted], failures, failed: traffic.failed }),
  )
})
console.error('load started')
