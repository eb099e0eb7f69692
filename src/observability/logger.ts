/**
 * Logging of the pool's lifecycle, pino-shaped: `logger.warn(fields, message)`. Any logger with that
 * shape works (pino, bunyan-style adapters); without one, warnings and errors go to the console.
 *
 * What is logged by default (level warn): failing connection attempts (once per 10 s per error code,
 * with how many were suppressed), the circuit breaker opening and closing, leaked clients, acquire
 * timeouts (rate-limited like connect errors). `echoPool` adds every lifecycle event at debug level
 * (SQLAlchemy's `echo_pool`), `echo` adds every `pool.query()`/`pool.transaction()` with its duration
 * (SQLAlchemy's `echo`). Every message and field goes through the redactor: no password reaches a log.
 */
import { errorLabel } from '../resilience/classify.js';
import type { Redactor } from './redact.js';

type LogMethod = (fields: Record<string, unknown>, message: string) => void;

/** The logger shape the pool writes to: pino's `(fields, message)` methods. */
export interface Logger {
  debug?: LogMethod;
  info?: LogMethod;
  warn: LogMethod;
  error?: LogMethod;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
const LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent'];

/** A console logger printing one JSON line per entry at `level` and above. */
export function consoleLogger(level: LogLevel = 'warn'): Logger {
  const threshold = LEVELS.indexOf(level);
  const method =
    (name: Exclude<LogLevel, 'silent'>, write: (line: string) => void): LogMethod =>
    (fields, message) => {
      if (LEVELS.indexOf(name) < threshold) return;
      write(JSON.stringify({ level: name, time: new Date().toISOString(), msg: message, ...fields }));
    };
  return {
    debug: method('debug', (line) => console.debug(line)),
    info: method('info', (line) => console.info(line)),
    warn: method('warn', (line) => console.warn(line)),
    error: method('error', (line) => console.error(line)),
  };
}

/** Plain, redacted fields for an error: its code and message, never the object (which may hold config). */
export function errorFields(error: unknown, redact: Redactor): Record<string, unknown> {
  if (error === undefined) return {};
  const message =
    typeof (error as { message?: unknown })?.message === 'string' ? (error as Error).message : String(error);
  return { err: { code: errorLabel(error), message: redact(message) } };
}

/** Lets one line through per key per interval, and counts what it held back. */
export class LogThrottle {
  readonly #last = new Map<string, { at: number; suppressed: number }>();

  constructor(readonly intervalMs: number) {}

  /** Returns how many were suppressed since the last line for `key`, or -1 if this one is suppressed. */
  admit(key: string, now = performance.now()): number {
    const entry = this.#last.get(key);
    if (entry !== undefined && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return -1;
    }
    const suppressed = entry?.suppressed ?? 0;
    this.#last.set(key, { at: now, suppressed: 0 });
    return suppressed;
  }
}
