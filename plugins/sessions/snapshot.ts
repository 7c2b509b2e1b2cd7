// The live sessions written at shutdown and read back at start, so a restart (a deploy, a SIGTERM)
// does not cut every visit in two (issue "scale out": "a session snapshot on SIGTERM restored at
// start"; Plausible hands its sessions to the next node for the same reason).
//
// A snapshot is read once and deleted at once: a snapshot older than the rows written after it
// (the process restored it, then died without writing a new one) would bring back stale states whose
// next -1 row would not cancel the last +1 row stored. It holds what sessions_v2 rows hold (hashed
// ids, pages, attribution), never an address or a user agent.

import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { attributionFields, attributionFromFields, Session } from './session.ts'
import type { KeySpace, SessionStore } from './store.ts'

const VERSION = 1
const SPACES = new Set<KeySpace>(['user', 'client', 'past'])

/** Writes every session still live at `nowSeconds`, one JSON line each, atomically (temp + rename). */
export function writeSnapshot(file: string, store: SessionStore, nowSeconds: number, timeoutSeconds: number): number {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  const temp = `${file}.${process.pid}.tmp`
  const fd = openSync(temp, 'w', 0o600)
  let count = 0
  try {
    writeSync(fd, `${JSON.stringify({ version: VERSION, writtenAt: nowSeconds })}\n`)
    let chunk = ''
    for (const [space, siteId, id, s] of store.entries()) {
      if (nowSeconds - s.lastSeen > timeoutSeconds) continue
      const a = s.attribution
      chunk += `${JSON.stringify([
        space,
        siteId,
        id.toString(),
        s.sessionId.toString(),
        s.userId.toString(),
        s.start,
        s.timestamp,
        s.lastSeen,
        s.pageviews,
        s.events,
        s.isBounce,
        s.hostname,
        s.entryPage,
        s.exitPage,
        s.exitPageHostname,
        attributionFields(a),
      ])}\n`
      count++
      if (chunk.length > 1 << 20) {
        writeSync(fd, chunk)
        chunk = ''
      }
    }
    writeSync(fd, chunk)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(temp, file)
  return count
}

/**
 * Reads a snapshot into the store and deletes it; sessions idle past the timeout at `nowSeconds`
 * are skipped. Returns how many were restored; a damaged line is skipped, a damaged file is ignored.
 */
export function restoreSnapshot(
  file: string,
  store: SessionStore,
  nowSeconds: number,
  timeoutSeconds: number,
): { restored: number; skipped: number } {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return { restored: 0, skipped: 0 }
  }
  rmSync(file, { force: true })
  const lines = text.split('\n')
  let restored = 0
  let skipped = 0
  try {
    const header = JSON.parse(lines[0] ?? '') as { version?: number }
    if (header.version !== VERSION) return { restored, skipped: lines.length - 1 }
  } catch {
    return { restored, skipped: lines.length - 1 }
  }
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!
    if (line === '') continue
    const session = parseLine(line)
    if (session === undefined || nowSeconds - session.session.lastSeen > timeoutSeconds) {
      skipped++
      continue
    }
    store.put(session.space, session.siteId, session.id, session.session)
    restored++
  }
  return { restored, skipped }
}

function parseLine(line: string): { space: KeySpace; siteId: number; id: bigint; session: Session } | undefined {
  try {
    const v = JSON.parse(line) as unknown[]
    const a = v[15] as unknown[]
    if (!Array.isArray(v) || v.length !== 16 || !Array.isArray(a)) return undefined
    const space = v[0] as KeySpace
    if (!SPACES.has(space)) return undefined
    const attribution = attributionFromFields(a)
    const session = new Session(
      BigInt(v[3] as string),
      BigInt(v[4] as string),
      v[1] as number,
      v[5] as number,
      v[6] as number,
      v[7] as number,
      v[8] as number,
      v[9] as number,
      v[10] as 0 | 1,
      v[11] as string,
      v[12] as string,
      v[13] as string,
      v[14] as string,
      attribution,
    )
    return { space, siteId: v[1] as number, id: BigInt(v[2] as string), session }
  } catch {
    return undefined
  }
}
