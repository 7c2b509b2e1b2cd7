// One /metrics view over the workers of `serve --workers N`: series with the same name and labels
// are summed. That is exact for counters and histograms (buckets, _sum, _count); gauges are summed
// too, which is right for queued rows and spool bytes (the machine's totals) and gives N for
// `analytics_sink_up` when every worker is healthy, and the workers' uptimes added. The families keep
// the order of their first appearance.

interface Family {
  help: string | undefined
  type: string | undefined
  /** `name{labels}` → value, in order of first appearance. */
  series: Map<string, number>
}

/** Sums Prometheus texts; adds `analytics_workers` (configured) and `analytics_workers_reporting`. */
export function sumMetrics(texts: string[], configured: number): string {
  const families = new Map<string, Family>()
  const familyOf = (name: string): Family => {
    let family = families.get(name)
    if (!family) {
      family = { help: undefined, type: undefined, series: new Map() }
      families.set(name, family)
    }
    return family
  }
  for (const text of texts) {
    let current: Family | undefined
    for (const line of text.split('\n')) {
      if (line === '') continue
      if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) {
        const rest = line.slice(7)
        const space = rest.indexOf(' ')
        const name = space < 0 ? rest : rest.slice(0, space)
        current = familyOf(name)
        if (line.startsWith('# HELP ')) current.help ??= line
        else current.type ??= line
        continue
      }
      if (line.startsWith('#')) continue
      const space = line.lastIndexOf(' ')
      if (space < 0) continue
      const key = line.slice(0, space)
      const value = Number(line.slice(space + 1))
      const brace = key.indexOf('{')
      const family = current ?? familyOf(brace < 0 ? key : key.slice(0, brace))
      family.series.set(key, (family.series.get(key) ?? 0) + (Number.isFinite(value) ? value : 0))
    }
  }
  const out: string[] = []
  for (const family of families.values()) {
    if (family.help) out.push(family.help)
    if (family.type) out.push(family.type)
    for (const [key, value] of family.series) out.push(`${key} ${value}`)
  }
  out.push(
    '# HELP analytics_workers Worker processes configured (serve --workers).',
    '# TYPE analytics_workers gauge',
    `analytics_workers ${configured}`,
    '# HELP analytics_workers_reporting Workers whose series are in this view (the others did not answer).',
    '# TYPE analytics_workers_reporting gauge',
    `analytics_workers_reporting ${texts.length}`,
  )
  return `${out.join('\n')}\n`
}
