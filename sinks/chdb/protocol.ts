// Messages between the `chdb` sink and its worker (worker.ts), and the sink-side client that sends them.

export type Request =
  | { id: number; op: 'open'; module: string; path: string }
  | { id: number; op: 'exec'; sql: string; settings?: Record<string, string | number> }
  | { id: number; op: 'select'; sql: string }
  | { id: number; op: 'insert'; table: string; payload: Uint8Array; settings: Record<string, string | number> }
  | { id: number; op: 'close' }

export type Response = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string }

type Body = Request extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never

/**
 * The worker seen from the sink: request/response over postMessage. A worker that dies fails every
 * pending call; the next call after that starts a new worker (`open` again).
 */
export class ChdbWorker {
  private worker: Worker | undefined
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  /** The engine's version once open. */
  version: string | undefined

  constructor(
    private readonly path: string,
    private readonly module: string,
  ) {}

  /** Starts the worker and opens the data folder; rejects when chdb cannot load. */
  async open(): Promise<string> {
    if (this.worker && this.version) return this.version
    this.spawn()
    this.version = String(await this.call({ op: 'open', module: this.module, path: this.path }))
    return this.version
  }

  call(body: Body): Promise<unknown> {
    const worker = this.worker ?? this.spawn()
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      // Referenced only while a call waits: an idle worker must not keep the process alive, a busy one must.
      if (this.pending.size === 0) refs(worker).ref?.()
      this.pending.set(id, { resolve, reject })
      worker.postMessage({ ...body, id } as Request)
    })
  }

  /** Closes the session and ends the worker. */
  async close(): Promise<void> {
    const worker = this.worker
    if (!worker) return
    try {
      if (this.version) await this.call({ op: 'close' })
    } finally {
      this.worker = undefined
      this.version = undefined
      worker.terminate()
    }
  }

  private spawn(): Worker {
    // `type: 'module'`: Deno supports only module workers; Bun accepts it too.
    const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' })
    refs(worker).unref?.()
    worker.onmessage = (event: MessageEvent<Response>) => {
      const response = event.data
      const waiter = this.pending.get(response.id)
      if (!waiter) return
      this.pending.delete(response.id)
      if (this.pending.size === 0) refs(worker).unref?.()
      if (response.ok) waiter.resolve(response.result)
      else waiter.reject(new Error(response.error))
    }
    worker.onerror = (event: ErrorEvent) => this.fail(worker, new Error(`chdb worker failed: ${event.message}`))
    worker.addEventListener('close', () => this.fail(worker, new Error('chdb worker exited')))
    this.worker = worker
    this.version = undefined
    return worker
  }

  private fail(worker: Worker, error: Error): void {
    if (this.worker !== worker) return
    this.worker = undefined
    this.version = undefined
    for (const waiter of this.pending.values()) waiter.reject(error)
    this.pending.clear()
  }
}

/** Bun's Worker has ref/unref; the DOM typing in tsconfig's lib does not know them. */
function refs(worker: Worker): { ref?(): void; unref?(): void } {
  return worker as unknown as { ref?(): void; unref?(): void }
}

const shared = new Map<string, { worker: ChdbWorker; users: number }>()

/**
 * The worker for a folder, shared by everything in this process that uses it (the sink, `migrate`,
 * tools). chdb allows one data folder per process, and a second session on the same folder that
 * closes leaves the first one's inserts hanging (seen with chdb 3.4): so there is one session, counted.
 */
export function acquireChdb(path: string, module: string): { worker: ChdbWorker; release(): Promise<void> } {
  const key = `${module}\u0000${path}`
  let entry = shared.get(key)
  if (!entry) {
    entry = { worker: new ChdbWorker(path, module), users: 0 }
    shared.set(key, entry)
  }
  entry.users++
  const held = entry
  let released = false
  return {
    worker: held.worker,
    async release() {
      if (released) return
      released = true
      held.users--
      if (held.users > 0) return
      shared.delete(key)
      await held.worker.close()
    },
  }
}
