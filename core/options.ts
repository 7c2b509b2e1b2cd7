// Option validation with TypeBox: defaults applied, every error reported with a readable path.

import type { TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

export interface ConfigIssue {
  /** `plugins[3].geoip.database` */
  path: string
  message: string
}

/** Appends one key to a path: `base.key`, `base[3]`, or `base["./odd key"]`. */
export function appendKey(base: string, key: string): string {
  if (/^\d+$/.test(key)) return `${base}[${key}]`
  if (/^[A-Za-z_$][\w$-]*$/.test(key)) return base === '' ? key : `${base}.${key}`
  return `${base}[${JSON.stringify(key)}]`
}

/** Joins a base path and a JSON pointer (`/lists/0`) as `base.lists[0]`. */
export function joinPath(base: string, pointer: string): string {
  let out = base
  for (const raw of pointer.split('/').slice(1)) out = appendKey(out, raw.replace(/~1/g, '/').replace(/~0/g, '~'))
  return out
}

/**
 * Validates `raw` against `schema` after applying its defaults. Returns the value with defaults, or
 * the list of issues, each with a path under `basePath`.
 */
export function resolveOptions<T>(
  schema: TSchema,
  raw: unknown,
  basePath: string,
): { ok: true; value: T } | { ok: false; issues: ConfigIssue[] } {
  const value = Value.Default(schema, Value.Clone(raw ?? {}))
  if (Value.Check(schema, value)) return { ok: true, value: value as T }
  const issues: ConfigIssue[] = []
  collectIssues(schema, value, basePath, issues, new Set())
  return { ok: false, issues }
}

function collectIssues(
  schema: TSchema,
  value: unknown,
  basePath: string,
  issues: ConfigIssue[],
  seen: Set<string>,
): void {
  for (const error of Value.Errors(schema, value)) {
    const path = joinPath(basePath, error.path) || '(root)'
    // A union says only "expected union value"; when exactly one branch has the value's JSON type
    // (an array for `sites: [...]`), report that branch's own errors, which name the bad field.
    const branches = (error.schema as { anyOf?: TSchema[] }).anyOf
    if (branches) {
      const kind = jsonType(error.value)
      const matching = branches.filter((b) => b.type === kind)
      if (matching.length === 1) {
        collectIssues(matching[0]!, error.value, path === '(root)' ? '' : path, issues, seen)
        continue
      }
    }
    const message = describe(error.message, error.value, error.schema)
    const key = `${path}\u0000${message}`
    if (seen.has(key)) continue
    seen.add(key)
    issues.push({ path, message })
  }
}

function jsonType(value: unknown): string {
  if (Array.isArray(value)) return 'array'
  if (value === null) return 'null'
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number'
  return typeof value
}

function describe(message: string, value: unknown, schema: TSchema): string {
  // TypeBox says "Unexpected property" without naming it when additionalProperties is false.
  if (message === 'Unexpected property') return 'unknown option'
  // A union whose branches all fail says only "expected union value"; a schema can say better.
  if (typeof schema.errorMessage === 'string') return schema.errorMessage
  const lower = message.charAt(0).toLowerCase() + message.slice(1)
  if (schema.description && value === undefined) return `${lower} (${schema.description})`
  return lower
}
