// JSON lines on stderr (stdout belongs to the stdout sink). A line is a sentence plus key/value
// context; normal operation logs nothing per event.

export type Level = 'debug' | 'info' | 'warn' | 'error'
const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 }

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
  /** Logs at most once per `intervalMs` for the same key; returns whether it logged. */
  throttled(key: string, level: Level, msg: string, fields?: Record<string, unknown>, intervalMs?: number): boolean
}

export interface LoggerOptions {
  level?: Level
  /** Where lines go; stderr by default. Tests pass an array sink. */
  write?: (line: string) => void
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const min = LEVELS[options.level ?? (process.env.LOG_LEVEL as Level) ?? 'info'] ?? LEVELS.info
  const write = options.write ?? ((line: string) => process.stderr.write(line))
  const lastLogged = new Map<string, number>()
  const log = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] < min) return
    write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }, jsonSafe)}\n`)
  }
  return {
    debug: (msg, fields) => log('debug', msg, fields),
    info: (msg, fields) => log('info', msg, fields),
    warn: (msg, fields) => log('warn', msg, fields),
    error: (msg, fields) => log('error', msg, fields),
    throttled(key, level, msg, fields, intervalMs = 60_000) {
      const now = Date.now()
      const last = lastLogged.get(key)
      if (last !== undefined && now - last < intervalMs) return false
      if (lastLogged.size > 1000) lastLogged.clear()
      lastLogged.set(key, now)
      log(level, msg, fields)
      return true
    },
  }
}

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString()
  if (value instanceof Error) return { name: value.name, message: value.message }
  return value
}

/** A logger that drops everything (tests and tools). */
export const silentLogger: Logger = createLogger({ write: () => {} })
