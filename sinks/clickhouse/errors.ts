// Which insert failures are worth retrying (spec/clickhouse-schema.md "Writing": retried with capped
// backoff, never dropped silently; a batch rejected as malformed goes to the dead-letter file).
//
// ClickHouse error codes are the same on 18.16 and today; 18.16 does not print the code's name and
// answers HTTP 500 for everything, so the code, not the HTTP status, decides.

export type FailureKind = 'malformed' | 'schema' | 'transient'

export interface Failure {
  /**
   * `malformed`: the batch itself is bad; retrying cannot help (dead-letter it).
   * `schema`: the table is missing or older than the rows (run `migrate`); retried, the data is kept.
   * `transient`: network, server down, overload, read-only replica…; retried.
   */
  kind: FailureKind
  code: number | undefined
  /** A short sentence without row data, for logs and health. */
  summary: string
  /** The complete message, which may quote row data: for the dead-letter file only, never for logs. */
  message: string
}

/** Codes for data the server could not parse or store: the same bytes will fail again. */
const MALFORMED: Record<number, string> = {
  6: 'CANNOT_PARSE_TEXT',
  25: 'CANNOT_PARSE_ESCAPE_SEQUENCE',
  26: 'CANNOT_PARSE_QUOTED_STRING',
  27: 'CANNOT_PARSE_INPUT_ASSERTION_FAILED',
  32: 'ATTEMPT_TO_READ_AFTER_EOF',
  33: 'CANNOT_READ_ALL_DATA',
  38: 'CANNOT_PARSE_DATE',
  41: 'CANNOT_PARSE_DATETIME',
  53: 'TYPE_MISMATCH',
  69: 'ARGUMENT_OUT_OF_BOUND',
  70: 'CANNOT_CONVERT_TYPE',
  72: 'CANNOT_PARSE_NUMBER',
  117: 'INCORRECT_DATA',
  131: 'TOO_LARGE_STRING_SIZE',
  190: 'SIZES_OF_ARRAYS_DONT_MATCH',
  321: 'VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE',
  349: 'CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN',
  407: 'DECIMAL_OVERFLOW',
  467: 'CANNOT_PARSE_BOOL',
}

/** Codes that mean the table does not match the rows: fixed by `migrate`, so the data must wait. */
const SCHEMA: Record<number, string> = {
  16: 'NO_SUCH_COLUMN_IN_TABLE',
  47: 'UNKNOWN_IDENTIFIER',
  60: 'UNKNOWN_TABLE',
  81: 'UNKNOWN_DATABASE',
}

const OTHER: Record<number, string> = {
  159: 'TIMEOUT_EXCEEDED',
  164: 'READONLY',
  192: 'UNKNOWN_USER',
  193: 'WRONG_PASSWORD',
  202: 'TOO_MANY_SIMULTANEOUS_QUERIES',
  209: 'SOCKET_TIMEOUT',
  210: 'NETWORK_ERROR',
  241: 'MEMORY_LIMIT_EXCEEDED',
  242: 'TABLE_IS_READ_ONLY',
  252: 'TOO_MANY_PARTS',
  279: 'ALL_CONNECTION_TRIES_FAILED',
  516: 'AUTHENTICATION_FAILED',
}

/**
 * Classifies an insert error from `@clickhouse/client`, from the chdb engine, or from the network.
 *
 * ```ts
 * classify(new Error('Code: 27, e.displayText() = DB::Exception: Cannot parse input: …'))
 * // → { kind: 'malformed', code: 27, summary: 'ClickHouse error 27 (CANNOT_PARSE_INPUT_ASSERTION_FAILED): Cannot parse input', … }
 * ```
 */
export function classify(error: unknown): Failure {
  const message = error instanceof Error ? error.message : String(error)
  const match = /\bCode: (\d+)[.,]/.exec(message)
  if (!match) {
    // No ClickHouse code: the request never got an answer (refused, reset, timed out, worker gone).
    const code = (error as { code?: unknown } | null)?.code
    const first = message.split('\n')[0]?.slice(0, 160) ?? ''
    return {
      kind: 'transient',
      code: undefined,
      summary: typeof code === 'string' ? `${code}: ${first}` : first,
      message,
    }
  }
  const code = Number(match[1])
  const name = MALFORMED[code] ?? SCHEMA[code] ?? OTHER[code] ?? /\(([A-Z][A-Z0-9_]{2,})\)\s*$/.exec(message)?.[1]
  const text = exceptionText(message)
  const summary = `ClickHouse error ${code}${name ? ` (${name})` : ''}${text ? `: ${text}` : ''}`
  // JSONEachRow names an unknown column "Unknown field" under INCORRECT_DATA: a schema problem, not bad data.
  if (SCHEMA[code] || (code === 117 && /unknown field/i.test(message))) {
    return { kind: 'schema', code, summary, message }
  }
  if (MALFORMED[code]) return { kind: 'malformed', code, summary, message }
  return { kind: 'transient', code, summary, message }
}

/**
 * The start of the exception text, cut before the first colon or quote: ClickHouse continues with the
 * offending input ("Cannot parse input: expected , before: <row data>"), which must not reach logs.
 */
function exceptionText(message: string): string {
  const at = message.indexOf('Exception: ')
  if (at < 0) return ''
  const rest = message.slice(at + 'Exception: '.length)
  const cut = rest.search(/[:'"`\n(]/)
  return (cut < 0 ? rest : rest.slice(0, cut)).trim().replace(/[.,]$/, '').slice(0, 120)
}
