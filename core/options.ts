// Option validation with TypeBox: defaults applied, every error reported with a readable path.

import type { TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

export interface ConfigIssue {
  /** `plugins[3].geoip.database` */
  path: string
  message: string
}

/** Joins a base path and a JSON pointer (`/lists/0`) as `base.lists[0]`. */
export function joinPath(base: string, pointer: string): string {
  let out = base
  for (const raw of pointer.split('/').slice(1)) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    if (/^\d+$/.test(part)) out += `[${part}]`
    else if (/^[A-Za-z_$][\w$-]*$/.test(part)) out += out === '' ? part : `.${part}`
    else out += `[${JSON.stringify(part)}]`
  }
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
  const seen = new Set<string>()
  for (const error of Value.Errors(schema, value)) {
    const path = joinPath(basePath, error.path) || '(root)'
    const message = describe(error.message, error.value, error.schema)
    const key = `${path}\u0000${message}`
    if (seen.has(key)) continue
    seen.add(key)
    issues.push({ path, message })
  }
  return { ok: false, issues: collapseUnionNoise(issues) }
}

function describe(message: string, value: unknown, schema: TSchema): string {
  // TypeBox says "Unexpected property" without naming it when additionalProperties is false.
  if (message === 'Unexpected property') return 'unknown option'
  const lower = message.charAt(0).toLowerCase() + message.slice(1)
  if (schema.description && value === undefined) return `${lower} (${schema.description})`
  return lower
}

/** A union failure lists every branch's complaint at the same path; keep the most specific ones. */
function collapseUnionNoise(issues: ConfigIssue[]): ConfigIssue[] {
  const deeper = (p: string) =>
    issues.some((i) => i.path !== p && i.path.startsWith(p) && /^[.[]/.test(i.path.slice(p.length)))
  return issues.filter((i) => !(i.message.startsWith('expected union value') && deeper(i.path)))
}
