// Implements spec/plausible-dialect.md §1 (transport): which bodies are read, and how, by content type.

import { hasAmbiguousValue, INVALID_JSON, isAmbiguousNumber, isJsonObject, parseJson } from '../../core/json.ts'
import { percentDecode } from './url.ts'

/** The request's fields, as decoded from its body. */
export type Params = Record<string, unknown>

/** The body could not be read as fields: the 400 names the `request` field. */
export const UNREADABLE: unique symbol = Symbol('unreadable body')

/** What to do with a request that has no `Content-Type` header at all. */
export type MissingContentType = 'reject' | 'json'

type BodyKind = 'json' | 'raw' | 'form' | 'multipart' | 'none'

/** How a body with this `Content-Type` is read (Plausible's parsers: JSON, form, multipart, else raw JSON). */
export function bodyKind(contentType: string | null, missing: MissingContentType): BodyKind {
  if (contentType === null) return missing === 'json' ? 'raw' : 'none'
  const semi = contentType.indexOf(';')
  const media = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase()
  if (media === 'text/plain') return 'raw'
  if (media === 'application/json' || (media.startsWith('application/') && media.endsWith('+json'))) return 'json'
  if (media === 'application/x-www-form-urlencoded') return 'form'
  if (media === 'multipart/form-data') return 'multipart'
  // Plausible lets every other type through unparsed and reads the raw body as JSON.
  return 'raw'
}

export const NO_PARAMS: Params = Object.freeze(Object.create(null))

/**
 * Whether a plain-parsed body needs its number text: a whole number in a field whose type decides
 * its meaning (`n`, `h`, `sd`, `e`: `404` is valid, `404.0` is not) or in the props (`2` vs `2.0`).
 */
export function needsNumberText(plain: unknown): boolean {
  if (!isJsonObject(plain)) return false
  const p = plain
  if (
    isAmbiguousNumber(p.n) ||
    isAmbiguousNumber(p.name) ||
    isAmbiguousNumber(p.h) ||
    isAmbiguousNumber(p.hashMode) ||
    isAmbiguousNumber(p.sd) ||
    isAmbiguousNumber(p.e)
  ) {
    return true
  }
  return propsNeedText(p.m) || propsNeedText(p.meta) || propsNeedText(p.p) || propsNeedText(p.props)
}

function propsNeedText(props: unknown): boolean {
  return isJsonObject(props) && hasAmbiguousValue(props)
}

/** Reads request bodies into fields; holds what is prepared once. */
export type BodyReader = (
  contentType: string | null,
  body: string,
) => Params | typeof UNREADABLE | Promise<Params | typeof UNREADABLE>

const KIND_CACHE_LIMIT = 64

/**
 * A reader that returns the fields of a request body, `UNREADABLE`, or (multipart only) a promise
 * of them. Without a content type Plausible reads nothing, so every field is missing (unless
 * `missing` is `json`).
 */
export function createBodyReader(missing: MissingContentType): BodyReader {
  // Clients send a handful of distinct Content-Type values; parsing each once saves a slice, a trim
  // and a lower-casing per request. Bounded, as the header is the client's to choose.
  const kinds = new Map<string, BodyKind>()
  const kindOf = (contentType: string | null): BodyKind => {
    if (contentType === null) return bodyKind(null, missing)
    let kind = kinds.get(contentType)
    if (kind === undefined) {
      kind = bodyKind(contentType, missing)
      if (kinds.size >= KIND_CACHE_LIMIT) kinds.clear()
      kinds.set(contentType, kind)
    }
    return kind
  }
  return (contentType, body) => {
    switch (kindOf(contentType)) {
      case 'raw': {
        // The tracker's text/plain body must be a JSON object; anything else is one `request` error.
        const value = parseJson(body, needsNumberText)
        return isJsonObject(value) ? value : UNREADABLE
      }
      case 'json': {
        const value = parseJson(body, needsNumberText)
        if (value === INVALID_JSON) return UNREADABLE
        // Valid JSON that is not an object leaves every field missing, as Plug wraps it under `_json`.
        return isJsonObject(value) ? value : NO_PARAMS
      }
      case 'form':
        return decodeForm(body)
      case 'multipart':
        return readMultipart(contentType!, body)
      default:
        return NO_PARAMS
    }
  }
}

/**
 * Decodes an `application/x-www-form-urlencoded` body like Plug: `+` is a space, a key without `=`
 * maps to `""`, the last of repeated keys wins, `p[k]=v` nests and `a[]=v` collects a list.
 */
export function decodeForm(body: string): Params {
  const params: Params = Object.create(null)
  if (body === '') return params
  let start = 0
  while (start <= body.length) {
    let end = body.indexOf('&', start)
    if (end === -1) end = body.length
    if (end > start) {
      const eq = body.indexOf('=', start)
      const hasValue = eq !== -1 && eq < end
      const key = formDecode(body.slice(start, hasValue ? eq : end))
      assign(params, key, hasValue ? formDecode(body.slice(eq + 1, end)) : '')
    }
    start = end + 1
  }
  return params
}

function formDecode(s: string): string {
  return percentDecode(s.indexOf('+') === -1 ? s : s.replaceAll('+', ' '))
}

function assign(params: Params, key: string, value: unknown): void {
  const open = key.indexOf('[')
  if (open <= 0 || key.charCodeAt(key.length - 1) !== 0x5d) {
    params[key] = value
    return
  }
  const segments = key.slice(open + 1, -1).split('][')
  let target = params
  let name = key.slice(0, open)
  for (let k = 0; k < segments.length; k++) {
    const segment = segments[k]!
    if (segment === '' && k === segments.length - 1) {
      const existing = target[name]
      const list = Array.isArray(existing) ? existing : []
      list.push(value)
      target[name] = list
      return
    }
    let next = target[name]
    if (typeof next !== 'object' || next === null || Array.isArray(next)) {
      next = Object.create(null)
      target[name] = next
    }
    target = next as Params
    name = segment
  }
  target[name] = value
}

async function readMultipart(contentType: string, body: string): Promise<Params | typeof UNREADABLE> {
  let form: FormData
  try {
    form = await new Response(body, { headers: { 'content-type': contentType } }).formData()
  } catch {
    return UNREADABLE
  }
  const params: Params = Object.create(null)
  // Uploaded files carry no event field; only text parts count.
  for (const [key, value] of form) if (typeof value === 'string') assign(params, key, value)
  return params
}
