// Salt stores (spec/plausible-dialect.md §9): daily rotation at 00:00 UTC, current + previous, nothing
// older than 48 h, agreement between processes sharing a folder.

import { describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '../../core/plugin.ts'
import { createFileSaltStore, createMemorySaltStore, DAY_MS, dayName, SALT_BYTES } from './salts.ts'

const D = Date.UTC(2026, 0, 10) / DAY_MS
const at = (day: number, hours = 12) => day * DAY_MS + hours * 3_600_000
const folder = () => join(mkdtempSync(join(tmpdir(), 'salts-')), 'salts')

describe.each([
  ['memory', () => createMemorySaltStore()],
  ['file', () => createFileSaltStore({ directory: folder() })],
])('the %s store', (_name, make) => {
  test('gives 16 bytes, the same all day, a new salt after 00:00 UTC', () => {
    const store = make()
    const morning = store.get(at(D, 0))
    expect(morning.current.length).toBe(SALT_BYTES)
    expect(store.get(at(D, 23.99)).current).toEqual(morning.current)
    const next = store.get(at(D + 1, 0))
    expect(next.current).not.toEqual(morning.current)
    expect(next.previous).toEqual(morning.current)
  })

  test('has no previous salt on its first day, nor after a day without one', () => {
    const store = make()
    expect(store.get(at(D)).previous).toBeUndefined()
    expect(store.get(at(D + 2)).previous).toBeUndefined()
  })

  test('withPrevious makes the missing previous salt once; it is gone two rotations later', () => {
    const store = make()
    const first = store.withPrevious(at(D))
    expect(first.current).toEqual(store.get(at(D)).current)
    expect(first.previous?.length).toBe(SALT_BYTES)
    expect(first.previous).not.toEqual(first.current)
    expect(store.withPrevious(at(D, 18)).previous).toEqual(first.previous)
    expect(store.get(at(D, 20)).previous).toEqual(first.previous)
    // On D+1 the salt made for D-1 is older than the previous day's: deleted.
    expect(store.get(at(D + 1)).previous).toEqual(first.current)
  })

  test('never goes back to an earlier day', () => {
    const store = make()
    const later = store.get(at(D + 1))
    expect(store.get(at(D))).toBe(later)
  })

  test('uses the injected clock when no time is given', () => {
    let now = at(D)
    const store =
      _name === 'memory'
        ? createMemorySaltStore({ clock: () => now })
        : createFileSaltStore({ directory: folder(), clock: () => now })
    expect(store.get().day).toBe(D)
    now = at(D + 1)
    expect(store.get().day).toBe(D + 1)
  })
})

describe('the file store', () => {
  test('two processes on one folder agree on every day, whoever comes first', () => {
    const directory = folder()
    const a = createFileSaltStore({ directory })
    const b = createFileSaltStore({ directory })
    expect(b.get(at(D)).current).toEqual(a.get(at(D)).current)
    const bNext = b.get(at(D + 1))
    const aNext = a.get(at(D + 1))
    expect(aNext.current).toEqual(bNext.current)
    expect(aNext.previous).toEqual(bNext.previous)
  })

  test("withPrevious writes yesterday's file, another process reads it, and it is deleted on D+1", () => {
    const directory = folder()
    const a = createFileSaltStore({ directory })
    const b = createFileSaltStore({ directory })
    expect(b.get(at(D)).previous).toBeUndefined()
    const made = a.withPrevious(at(D)).previous
    expect(readdirSync(directory).sort()).toEqual([`salt-${dayName(D - 1)}`, `salt-${dayName(D)}`])
    // b served D without a previous salt; asked to fill it, it takes a's file instead of making its own.
    expect(b.withPrevious(at(D)).previous).toEqual(made!)
    a.get(at(D + 1))
    expect(readdirSync(directory).sort()).toEqual([`salt-${dayName(D)}`, `salt-${dayName(D + 1)}`])
  })

  test('a restarted process reads the same salts', () => {
    const directory = folder()
    const first = createFileSaltStore({ directory }).get(at(D, 1))
    const again = createFileSaltStore({ directory }).get(at(D, 2))
    expect(again.current).toEqual(first.current)
  })

  test('files are 16 bytes, mode 0600, in a 0700 folder, one per day', () => {
    const directory = folder()
    createFileSaltStore({ directory }).get(at(D))
    const file = join(directory, `salt-${dayName(D)}`)
    expect(statSync(file).size).toBe(SALT_BYTES)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    expect(statSync(directory).mode & 0o777).toBe(0o700)
    expect(readdirSync(directory)).toEqual([`salt-${dayName(D)}`])
  })

  test('deletes salts older than 48 hours: only today and yesterday remain', () => {
    const directory = folder()
    const store = createFileSaltStore({ directory })
    store.get(at(D))
    store.get(at(D + 1))
    expect(readdirSync(directory).sort()).toEqual([`salt-${dayName(D)}`, `salt-${dayName(D + 1)}`])
    store.get(at(D + 2, 0))
    expect(readdirSync(directory).sort()).toEqual([`salt-${dayName(D + 1)}`, `salt-${dayName(D + 2)}`])
    store.get(at(D + 10))
    expect(readdirSync(directory)).toEqual([`salt-${dayName(D + 10)}`])
  })

  test('deletes old files another process left behind, and stale temporary files', () => {
    const directory = folder()
    createFileSaltStore({ directory })
    writeFileSync(join(directory, `salt-${dayName(D - 5)}`), new Uint8Array(SALT_BYTES))
    const temp = join(directory, '.salt-2026-01-01.1.2.x.tmp')
    writeFileSync(temp, new Uint8Array(SALT_BYTES))
    createFileSaltStore({ directory, clock: () => Date.now() + 2 * 3_600_000 }).get(at(D))
    expect(existsSync(join(directory, `salt-${dayName(D - 5)}`))).toBe(false)
    expect(existsSync(temp)).toBe(false)
  })

  test('a salt file of the wrong size is not used', () => {
    const directory = folder()
    createFileSaltStore({ directory })
    writeFileSync(join(directory, `salt-${dayName(D - 1)}`), 'short')
    expect(createFileSaltStore({ directory }).get(at(D)).previous).toBeUndefined()
  })

  test('a folder that cannot be made is a ConfigError on directory', () => {
    const blocker = join(mkdtempSync(join(tmpdir(), 'salts-')), 'file')
    writeFileSync(blocker, 'x')
    const error = (() => {
      try {
        createFileSaltStore({ directory: join(blocker, 'salts') })
      } catch (e) {
        return e
      }
    })()
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).path).toBe('directory')
  })
})
