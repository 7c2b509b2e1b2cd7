// A `--preload` that counts, by type, the JavaScript objects a server makes per answered request:
// on SIGUSR2 it runs a full collection, takes JavaScriptCore's count of cells by type, waits
// CENSUS_MS (1000 by default) and counts again. The difference, divided by the Responses made in
// between, is printed on stderr. A collection inside the window takes away the objects made before
// it, of every type alike, so read the ratios, not the totals.
//
//   bun --preload bench/alloc-census.ts core/cli.ts serve --config bench/cases/engine-stdout.yaml &
//   (a light paced load, e.g. wrk -c5 with bench/replay.lua and a 10 ms delay)  kill -USR2 <pid>

import { heapStats } from 'bun:jsc'

process.on('SIGUSR2', () => {
  Bun.gc(true)
  const before = heapStats().objectTypeCounts as Record<string, number>
  setTimeout(
    () => {
      const after = heapStats().objectTypeCounts as Record<string, number>
      const answered = (after.Response ?? 0) - (before.Response ?? 0)
      if (answered <= 0) {
        process.stderr.write('census: no Response made in the window (no load, or a collection took them)\n')
        return
      }
      const rows = Object.entries(after)
        .map(([type, count]) => [type, (count - (before[type] ?? 0)) / answered] as const)
        .filter(([, perRequest]) => perRequest >= 0.1)
        .sort((a, b) => b[1] - a[1])
      process.stderr.write(
        `census: ${answered} answers; objects per answer by type:\n` +
          rows.map(([type, perRequest]) => `${perRequest.toFixed(2).padStart(7)}  ${type}`).join('\n') +
          '\n',
      )
    },
    Number(process.env.CENSUS_MS ?? 1000),
  )
})
