/**
 * Wires a logger to a pool's lifecycle events. See `logger.ts` for what is logged at which level.
 */
import { subscribe, type TypedEmitter } from '../engine/emitter.js';
import type { PoolLifecycleEvents } from '../pg/lifecycle.js';
import { errorLabel } from '../resilience/classify.js';
import { errorFields, type Logger, LogThrottle } from './logger.js';
import type { Redactor } from './redact.js';

export interface PoolLoggingOptions {
  poolName: string;
  redact: Redactor;
  /** Log every `pool.query()` / `pool.transaction()` with its duration (info). */
  echo: boolean;
  /** Log every lifecycle event (debug). */
  echoPool: boolean;
  /** At most one line per error code per interval for repeated failures, in ms. Default 10000. */
  throttleMs?: number;
}

const ECHO_POOL_EVENTS = [
  'connect',
  'acquire',
  'release',
  'validate',
  'evict',
  'retry',
  'cancel',
  'close',
] as const;

export function attachPoolLogging(
  lifecycle: TypedEmitter<PoolLifecycleEvents>,
  logger: Logger,
  options: PoolLoggingOptions,
): () => void {
  const { poolName: pool, redact } = options;
  const throttle = new LogThrottle(options.throttleMs ?? 10_000);
  const subscriptions = subscribe(lifecycle);
  const on = subscriptions.on;

  on('connectError', ({ error, attempt, fatal, durationMs }) => {
    const suppressed = throttle.admit(`connect:${errorLabel(error)}`);
    if (suppressed < 0) return;
    const fields = {
      pool,
      attempt,
      fatal,
      durationMs: Math.round(durationMs),
      suppressed,
      ...errorFields(error, redact),
    };
    if (fatal)
      (logger.error ?? logger.warn)(fields, 'Connecting to the database failed and will not be retried');
    else logger.warn(fields, 'Connecting to the database failed; retrying with backoff');
  });
  on('timeout', ({ waitMs, error }) => {
    const suppressed = throttle.admit('timeout');
    if (suppressed < 0) return;
    logger.warn(
      { pool, waitMs: Math.round(waitMs), suppressed, ...errorFields(error, redact) },
      'Acquire timed out',
    );
  });
  on('breaker', ({ from, to, cause }) => {
    const fields = { pool, from, to, ...errorFields(cause, redact) };
    if (to === 'open')
      logger.warn(fields, 'Circuit breaker opened: failing fast while the database is unreachable');
    else (logger.info ?? logger.warn)(fields, `Circuit breaker ${to}`);
  });
  on('leak', ({ id, heldMs, stack }) => {
    logger.warn(
      { pool, connection: id, heldMs: Math.round(heldMs), stack: redact(stack) },
      'Possible connection leak: a client has been checked out past leakDetectionThresholdMs',
    );
  });
  on('leakReturned', ({ id, heldMs }) => {
    (logger.info ?? logger.warn)(
      { pool, connection: id, heldMs: Math.round(heldMs) },
      'A client reported as leaked was returned',
    );
  });
  on('leakReclaimed', ({ id, heldMs, stack }) => {
    logger.warn(
      { pool, connection: id, heldMs: Math.round(heldMs), stack: redact(stack) },
      'Reclaimed a client held past leakReclaimMs; its connection was closed',
    );
  });
  if (options.echo && logger.info) {
    const info = logger.info;
    on('operation', ({ kind, durationMs, error }) =>
      info(
        { pool, kind, durationMs: Math.round(durationMs * 1000) / 1000, ...errorFields(error, redact) },
        kind,
      ),
    );
  }
  if (options.echoPool && logger.debug) {
    const debug = logger.debug;
    for (const event of ECHO_POOL_EVENTS) {
      on(event, (payload: Record<string, unknown>) => {
        const { connection: _connection, error, ...rest } = payload as Record<string, unknown>;
        debug({ pool, event, ...rest, ...errorFields(error, redact) }, `pool ${event}`);
      });
    }
  }
  return () => subscriptions.detach();
}
