// The thread the `chdb` sink runs the embedded engine on (spec/clickhouse-schema.md: "chdb runs each
// query synchronously on the calling thread (~23 ms per 10k-row insert): keep it off the HTTP thread").
// Loading the library (hundreds of MB) also happens here, so start-up does not stall the server either.
//
// Protocol: the sink posts { id, op, … }; the worker answers { id, ok: true, result } or
// { id, ok: false, error }. Requests run one at a time, in order.

import type { Session } from 'chdb'
import type { Request, Response } from './protocol.ts'

declare const self: Worker

let session: Session | undefined
let queue: Promise<void> = Promise.resolve()

self.onmessage = (event: MessageEvent<Request>) => {
  const request = event.data
  queue = queue.then(async () => {
    let response: Response
    try {
      response = { id: request.id, ok: true, result: await handle(request) }
    } catch (error) {
      response = { id: request.id, ok: false, error: error instanceof Error ? error.message : String(error) }
    }
    self.postMessage(response)
  })
}

async function handle(request: Request): Promise<unknown> {
  switch (request.op) {
    case 'open': {
      const chdb = (await import(request.module)) as typeof import('chdb')
      session = new chdb.Session(request.path)
      return session.query('SELECT version()', 'TSVRaw').trim()
    }
    case 'exec': {
      const s = open()
      for (const [key, value] of Object.entries(request.settings ?? {})) s.query(`SET ${key} = ${value}`, 'TSV')
      s.query(request.sql, 'TSV')
      return undefined
    }
    case 'select': {
      const text = open().query(request.sql, 'JSONEachRow')
      return text
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as unknown)
    }
    case 'insert': {
      // The raw insert hands the bytes to the engine's parser without building JS objects.
      await open().insert({
        table: request.table,
        values: request.payload,
        format: 'JSONEachRow',
        settings: request.settings,
      })
      return undefined
    }
    case 'close': {
      session?.close()
      session = undefined
      return undefined
    }
  }
}

function open(): Session {
  if (!session) throw new Error('chdb session is not open')
  return session
}
