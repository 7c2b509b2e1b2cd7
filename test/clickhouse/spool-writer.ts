// A child process for faults.test.ts: sets the clickhouse sink up against a port nobody listens on,
// writes events until they are spooled, says so on stdout, and waits to be killed with SIGKILL.
//
//   bun test/clickhouse/spool-writer.ts <spoolDir> <deadPort> <events>

import { dirname } from 'node:path'
import { testServices } from '../../core/testing.ts'
import clickhouse from '../../sinks/clickhouse/index.ts'
import { realisticEvents, setupSink } from './fixtures.ts'

const [spoolDir = '', port = '1', count = '100'] = process.argv.slice(2)
const { sink } = await setupSink(
  clickhouse,
  {
    url: `http://127.0.0.1:${port}`,
    database: 'killed',
    spoolDir,
    batchRows: 50,
    flushIntervalMs: 20,
    retryMaxMs: 100,
  },
  // The parent's folder: this process dies by SIGKILL and could not clean up one of its own.
  testServices({ stateDir: dirname(spoolDir) }),
)
for (const event of realisticEvents(Number(count), 7)) sink.write(event)
await sink.flush()
process.stdout.write(`spooled ${JSON.stringify(sink.health())}\n`)
// Never closes: the parent kills this process, as the OOM killer would.
setInterval(() => {}, 1000)
