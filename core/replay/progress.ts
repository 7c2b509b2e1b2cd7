// Progress of a replay on stderr (stdout belongs to the stdout sink): a one-line bar redrawn in
// place on a terminal, otherwise one JSON line per interval and a final summary line.

export interface ReplayCounts {
  /** Input lines read (blank lines included). */
  lines: number
  /** Events the pipeline accepted (and rows groups written), handed to the sinks. */
  accepted: number
  /** Events dropped: by a plugin, or by the dialect (unknown site). */
  dropped: number
  /** Requests the dialect refused outright (a 4xx answer: bad body, too large). */
  refused: number
  /** Requests no configured route serves (method and path). */
  unrouted: number
  /** Records skipped because the ledger says they were replayed already. */
  duplicates: number
  /** Lines that could not be parsed; listed by line number in the summary. */
  invalid: number
  /** Access-log lines left out by `--status`. */
  filtered: number
}

export interface ProgressWriter {
  write(text: string): void
  readonly isTTY: boolean
}

export interface Snapshot {
  counts: ReplayCounts
  bytesRead: number
  /** Total bytes of the inputs when all are files; undefined with stdin. */
  bytesTotal: number | undefined
  elapsedMs: number
}

const fmt = (n: number) => n.toLocaleString('en-US')

export function progressJson(s: Snapshot): string {
  const rate = s.elapsedMs > 0 ? Math.round((s.counts.lines * 1000) / s.elapsedMs) : 0
  return `${JSON.stringify({
    replay: 'progress',
    ...s.counts,
    bytesRead: s.bytesRead,
    ...(s.bytesTotal !== undefined ? { bytesTotal: s.bytesTotal } : {}),
    linesPerSecond: rate,
    elapsedMs: Math.round(s.elapsedMs),
  })}\n`
}

export function progressBar(s: Snapshot, width = 24): string {
  const c = s.counts
  const rate = s.elapsedMs > 0 ? Math.round((c.lines * 1000) / s.elapsedMs) : 0
  let bar = ''
  if (s.bytesTotal !== undefined && s.bytesTotal > 0) {
    const done = Math.min(1, s.bytesRead / s.bytesTotal)
    const filled = Math.round(done * width)
    bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.floor(done * 100)).padStart(3)}%  `
  }
  const parts = [
    `${fmt(c.lines)} lines`,
    `${fmt(c.accepted)} accepted`,
    `${fmt(c.dropped)} dropped`,
    `${fmt(c.duplicates)} duplicate`,
    `${fmt(c.invalid)} invalid`,
  ]
  if (c.refused) parts.push(`${fmt(c.refused)} refused`)
  if (c.unrouted) parts.push(`${fmt(c.unrouted)} unrouted`)
  return `\r\x1b[2K${bar}${parts.join('  ')}  ${fmt(rate)}/s`
}

/** Reports every `intervalMs` until stopped; the bar on a terminal, JSON lines otherwise. */
export function startProgress(out: ProgressWriter, intervalMs: number, snapshot: () => Snapshot): { stop(): void } {
  const draw = () => out.write(out.isTTY ? progressBar(snapshot()) : progressJson(snapshot()))
  const timer = setInterval(draw, intervalMs)
  ;(timer as { unref?: () => void }).unref?.()
  return {
    stop() {
      clearInterval(timer)
      if (out.isTTY) out.write(`${progressBar(snapshot())}\n`)
    },
  }
}
