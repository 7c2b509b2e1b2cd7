// Young-generation collections on a clock while requests arrive (`server.youngCollectionMs`, Bun).
//
// Why: left to itself, JavaScriptCore collected the engine's young generation about every 0.4-0.6 s
// under load, and after those collections the event loop had turns of 9-12 ms with no JavaScript on
// the stack, one or two a second: they set the latency's p99 (8-12 ms at half the peak, where bare
// Bun.serve has 4-5). Collecting every 100 ms, each collection about 1.5-2 ms, those turns all but
// went (turns over 8 ms in 10 s at 13,500 req/s: 1-4 against 12-16), the p99 fell to 3.8-4.9 ms, and
// the CPU per request at full speed did not grow (bench/results.md, "Session of 2026-11-23, sixth").
// An idle engine is left alone: a tick with no request since the last collection does nothing.

export class YoungCollections {
  private timer: ReturnType<typeof setInterval> | undefined
  private requestsSince = 0
  /** Collections run, and the seconds they took, for /metrics. */
  collections = 0
  seconds = 0

  /** Counts a request; the next tick collects only when one came since the last collection. */
  noteRequest(): void {
    this.requestsSince++
  }

  start(collect: () => void, everyMs: number): void {
    this.stop()
    this.timer = setInterval(() => {
      if (this.requestsSince === 0) return
      this.requestsSince = 0
      const started = performance.now()
      collect()
      this.seconds += (performance.now() - started) / 1000
      this.collections++
    }, everyMs)
    ;(this.timer as { unref?: () => void }).unref?.()
  }

  stop(): void {
    clearInterval(this.timer)
    this.timer = undefined
  }
}
