// Preloaded into engine processes by the namespace tests only (`bun --preload`): Date.now() runs at
// real time plus the offset (ms) written in the file named by ANALYTICS_TEST_CLOCK_FILE, read again
// every 20 ms. A test moves every machine's clock together by rewriting one file: to just before
// 00:00 UTC, then a day at a time. Nothing in the engine knows; timers keep real time.

import { readFileSync } from 'node:fs'

const file = process.env.ANALYTICS_TEST_CLOCK_FILE
if (file) {
  const realNow = Date.now.bind(Date)
  const read = (): number => {
    try {
      const offset = Number(readFileSync(file, 'utf8'))
      return Number.isFinite(offset) ? offset : 0
    } catch {
      return 0
    }
  }
  let offset = read()
  setInterval(() => {
    offset = read()
  }, 20).unref()
  Date.now = () => realNow() + offset
}
