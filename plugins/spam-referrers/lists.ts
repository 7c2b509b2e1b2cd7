// The spam referrer lists behind spec/plausible-dialect.md §7 (`spam_referrer`): local files and
// URLs, merged into one set of hosts.
//
// Start-up never waits on the network (design.md "The plugin contract"): a URL list starts from its
// last good copy on disk and is fetched in the background, then every `refreshMs` (with jitter, so
// several engines do not fetch at once). A download is kept only when it is a 200 with at least one
// host; it replaces the copy by an atomic rename, so a crash never leaves half a list. A failed
// refresh keeps the previous hosts and logs once until a refresh succeeds again. Plausible's own
// blocklist does the same weekly (plausible/referrer-blocklist: one week, file fallback).

import { createHash } from 'node:crypto'
import { mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../../core/logger.ts'
import { parseHostList } from './hosts.ts'

/** A failed download is retried sooner than a normal refresh, but not sooner than this. */
const RETRY_MS = 60 * 60 * 1000
/** A list bigger than this is refused (Matomo's is about 40 KB). */
const MAX_LIST_BYTES = 16 * 1024 * 1024

export interface ListSource {
  kind: 'file' | 'url'
  /** The option as written, for logs. */
  name: string
  /** The resolved path, or the URL. */
  location: string
}

export interface SpamListOptions {
  sources: ListSource[]
  /** Where URL copies live (a folder under the engine's stateDir). */
  copyDir: string
  refreshMs: number
  fetchTimeoutMs: number
  logger: Logger
  /** Fraction of `refreshMs` added at random to each wait; 0 in tests. */
  jitter?: number
}

interface SourceState {
  source: ListSource
  hosts: string[]
  copyPath: string
  failing: boolean
  timer: ReturnType<typeof setTimeout> | undefined
}

export function isUrl(location: string): boolean {
  return /^https?:\/\//i.test(location)
}

/** The copy's file name: readable host plus a hash of the whole URL, so two URLs never share a file. */
export function copyFileName(url: string): string {
  const hash = createHash('sha256').update(url).digest('hex').slice(0, 16)
  let host = 'list'
  try {
    host = new URL(url).hostname.replace(/[^a-z0-9.-]/gi, '_')
  } catch {}
  return `${host}-${hash}.txt`
}

export class SpamLists {
  /** Every listed host, sanitised. Replaced as a whole on refresh, so a reader never sees half a list. */
  hosts: ReadonlySet<string> = new Set()
  private readonly states: SourceState[]
  private readonly inflight = new Set<AbortController>()
  private stopped = false

  constructor(private readonly options: SpamListOptions) {
    this.states = options.sources.map((source) => ({
      source,
      hosts: [],
      copyPath: source.kind === 'url' ? join(options.copyDir, copyFileName(source.location)) : source.location,
      failing: false,
      timer: undefined,
    }))
  }

  /**
   * Reads every file and every URL's copy on disk; no network. Returns the sources whose file is
   * missing or unreadable (a config error for files; for URLs a missing copy only means "empty for now").
   */
  async load(): Promise<{ source: ListSource; error: string }[]> {
    const problems: { source: ListSource; error: string }[] = []
    for (const state of this.states) {
      try {
        state.hosts = parseHostList(await readFile(state.copyPath, 'utf8'))
        if (state.source.kind === 'url') {
          const savedAt = (await stat(state.copyPath)).mtime.toISOString()
          this.options.logger.info(
            'Loaded a spam referrer list from its copy on disk; a refresh runs in the background.',
            {
              url: state.source.location,
              hosts: state.hosts.length,
              savedAt,
            },
          )
        }
      } catch (error) {
        if (state.source.kind === 'file') problems.push({ source: state.source, error: (error as Error).message })
        else
          this.options.logger.warn(
            'No copy of a spam referrer list on disk yet; it stays empty until a download succeeds.',
            {
              url: state.source.location,
            },
          )
      }
    }
    this.rebuild()
    return problems
  }

  /** Schedules the background refreshes: a URL whose copy is older than `refreshMs` (or missing) at once. */
  async start(): Promise<void> {
    for (const state of this.states) {
      let delay = this.options.refreshMs
      if (state.source.kind === 'url') {
        const mtime = await stat(state.copyPath).then(
          (s) => s.mtimeMs,
          () => 0,
        )
        delay = Math.max(0, mtime + this.options.refreshMs - Date.now())
      }
      this.schedule(state, delay === 0 ? 0 : delay + this.jitter())
    }
  }

  /** Refreshes every source now (tests, and the timers one source at a time). */
  async refreshAll(): Promise<void> {
    await Promise.all(this.states.map((state) => this.refresh(state)))
  }

  stop(): void {
    this.stopped = true
    for (const state of this.states) clearTimeout(state.timer)
    for (const controller of this.inflight) controller.abort()
  }

  private jitter(): number {
    return Math.floor(Math.random() * (this.options.jitter ?? 0.05) * this.options.refreshMs)
  }

  private schedule(state: SourceState, delayMs: number): void {
    if (this.stopped) return
    clearTimeout(state.timer)
    state.timer = setTimeout(() => {
      void this.refresh(state).then((ok) => {
        const next = ok ? this.options.refreshMs : Math.min(this.options.refreshMs, RETRY_MS)
        this.schedule(state, next + this.jitter())
      })
    }, delayMs)
    // A pending refresh must not keep the process alive at shutdown.
    state.timer.unref?.()
  }

  /** One source: re-read the file, or download the URL and replace its copy. Never throws. */
  private async refresh(state: SourceState): Promise<boolean> {
    const { source } = state
    try {
      const text = source.kind === 'file' ? await readFile(source.location, 'utf8') : await this.download(state)
      const hosts = parseHostList(text)
      if (hosts.length === 0) throw new Error('the list has no hosts')
      if (source.kind === 'url') await this.saveCopy(state.copyPath, text)
      if (this.stopped) return true
      state.hosts = hosts
      this.rebuild()
      if (state.failing)
        this.options.logger.info('A spam referrer list refreshes again.', { list: source.name, hosts: hosts.length })
      state.failing = false
      return true
    } catch (error) {
      if (!state.failing && !this.stopped) {
        this.options.logger.warn('Could not refresh a spam referrer list; keeping the last good copy.', {
          list: source.name,
          error,
          hostsKept: state.hosts.length,
        })
      }
      state.failing = true
      return false
    }
  }

  private async download(state: SourceState): Promise<string> {
    const controller = new AbortController()
    const timeout = setTimeout(() => controller.abort(new Error('timed out')), this.options.fetchTimeoutMs)
    this.inflight.add(controller)
    try {
      const response = await fetch(state.source.location, { signal: controller.signal, redirect: 'follow' })
      if (!response.ok) throw new Error(`HTTP ${response.status}`)
      const declared = Number(response.headers.get('content-length') ?? 0)
      if (declared > MAX_LIST_BYTES) throw new Error(`the list is larger than ${MAX_LIST_BYTES} bytes`)
      const text = await response.text()
      if (text.length > MAX_LIST_BYTES) throw new Error(`the list is larger than ${MAX_LIST_BYTES} bytes`)
      return text
    } finally {
      clearTimeout(timeout)
      this.inflight.delete(controller)
    }
  }

  /** Writes beside the copy, then renames over it: readers and crashes see the old or the new list, whole. */
  private async saveCopy(path: string, text: string): Promise<void> {
    await mkdir(this.options.copyDir, { recursive: true })
    const temporary = `${path}.${process.pid}.${Date.now()}.tmp`
    try {
      await writeFile(temporary, text)
      await rename(temporary, path)
    } catch (error) {
      await unlink(temporary).catch(() => {})
      throw error
    }
  }

  private rebuild(): void {
    const hosts = new Set<string>()
    for (const state of this.states) for (const host of state.hosts) hosts.add(host)
    this.hosts = hosts
  }
}
