/**
 * Typed errors with stable codes.
 *
 * Every error the pool raises on its own account is a `SteadfastError` with a stable `code` (match
 * on the code, never on the message) and, where another failure led to it, a `cause`. Errors that come
 * from PostgreSQL itself (a syntax error, a unique violation) are passed through untouched, so code
 * written for `pg` keeps working.
 */

const BRAND = Symbol.for('pg-steadfast.error');

/** The stable codes of the errors this package raises. */
export const ErrorCodes = {
  /** No connection could be handed out before the acquire deadline. */
  ACQUIRE_TIMEOUT: 'ERR_STEADFAST_ACQUIRE_TIMEOUT',
  /** The caller's AbortSignal fired. */
  ABORTED: 'ERR_STEADFAST_ABORTED',
  /** The pool is closing or closed and takes no new work. */
  POOL_CLOSED: 'ERR_STEADFAST_POOL_CLOSED',
  /** Opening a connection (TCP, TLS, startup and authentication) took longer than `connectTimeoutMs`. */
  CONNECT_TIMEOUT: 'ERR_STEADFAST_CONNECT_TIMEOUT',
  /** A connection attempt failed with an error that retrying will not fix (authentication, no database). */
  CONNECT_FATAL: 'ERR_STEADFAST_CONNECT_FATAL',
  /** The connection was lost after the statement was sent: it may or may not have run. */
  OUTCOME_UNKNOWN: 'ERR_STEADFAST_OUTCOME_UNKNOWN',
  /** A checked-out client was released twice. */
  DOUBLE_RELEASE: 'ERR_STEADFAST_DOUBLE_RELEASE',
  /** An option had a wrong type or was out of range. */
  INVALID_OPTION: 'ERR_STEADFAST_INVALID_OPTION',
  /** A call's own deadline (`timeoutMs`) passed. */
  TIMEOUT: 'ERR_STEADFAST_TIMEOUT',
  /** The circuit breaker is open: the database was unreachable, so calls fail fast until a probe succeeds. */
  CIRCUIT_OPEN: 'ERR_STEADFAST_CIRCUIT_OPEN',
  /** The wait queue is full (`maxWaiting`): the call was shed at once. */
  QUEUE_FULL: 'ERR_STEADFAST_QUEUE_FULL',
  /** The acquisition rate limit was exceeded: the call was shed at once. */
  RATE_LIMITED: 'ERR_STEADFAST_RATE_LIMITED',
  /** A client held past `leakReclaimMs` was taken back; its holder's queries fail with this. */
  RECLAIMED: 'ERR_STEADFAST_RECLAIMED',
  /** A read found no healthy replica and the cluster may not fall back to the primary. */
  NO_REPLICA: 'ERR_STEADFAST_NO_REPLICA',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** A snapshot of the pool at the moment an error was raised, for messages that explain themselves. */
export interface PoolSnapshot {
  total: number;
  idle: number;
  inUse: number;
  connecting: number;
  waiting: number;
  max: number;
}

export class SteadfastError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = new.target.name;
  }

  /** `instanceof` works across copies of this package (two versions installed side by side). */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this === SteadfastError) {
      return (
        typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true
      );
    }
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }
}
Object.defineProperty(SteadfastError.prototype, BRAND, { value: true });

function describeSnapshot(s: PoolSnapshot): string {
  return `total=${s.total}, idle=${s.idle}, inUse=${s.inUse}, connecting=${s.connecting}, waiting=${s.waiting}, max=${s.max}`;
}

function describeCause(cause: unknown): string {
  if (cause === undefined) return '';
  const err = cause as { code?: unknown; message?: unknown };
  const code = typeof err?.code === 'string' ? ` [${err.code}]` : '';
  const message = typeof err?.message === 'string' ? err.message : String(cause);
  return `; last connection error${code}: ${message}`;
}

/** No connection became available before the acquire deadline. `cause` is the last connect error, if any. */
export class AcquireTimeoutError extends SteadfastError {
  readonly timeoutMs: number;
  readonly snapshot: PoolSnapshot;

  constructor(timeoutMs: number, snapshot: PoolSnapshot, cause?: unknown) {
    super(
      ErrorCodes.ACQUIRE_TIMEOUT,
      `Timed out after ${timeoutMs}ms waiting for a connection (${describeSnapshot(snapshot)})${describeCause(cause)}`,
      { cause },
    );
    this.timeoutMs = timeoutMs;
    this.snapshot = snapshot;
  }
}

/** The caller's AbortSignal fired. `cause` is the signal's reason. */
export class AbortedError extends SteadfastError {
  constructor(what: string, reason?: unknown) {
    super(ErrorCodes.ABORTED, `${what} was aborted`, { cause: reason });
  }
}

/** The pool is closing or closed. */
export class PoolClosedError extends SteadfastError {
  constructor(message = 'The pool is closed and takes no new work') {
    super(ErrorCodes.POOL_CLOSED, message);
  }
}

/** Opening one connection took longer than the connect timeout. */
export class ConnectTimeoutError extends SteadfastError {
  readonly timeoutMs: number;

  constructor(timeoutMs: number, cause?: unknown) {
    super(ErrorCodes.CONNECT_TIMEOUT, `Opening a connection took longer than ${timeoutMs}ms`, { cause });
    this.timeoutMs = timeoutMs;
  }
}

/** A connection attempt failed in a way retrying will not fix (wrong password, no such database). */
export class ConnectFatalError extends SteadfastError {
  constructor(cause: unknown) {
    super(ErrorCodes.CONNECT_FATAL, `Connecting failed and will not be retried${describeCause(cause)}`, {
      cause,
    });
  }
}

/**
 * The connection was lost after the statement was sent, so it may have run or not. The pool does not
 * retry such a statement unless the call was marked `idempotent`.
 */
export class OutcomeUnknownError extends SteadfastError {
  constructor(cause: unknown) {
    super(
      ErrorCodes.OUTCOME_UNKNOWN,
      `The connection was lost after the statement was sent; it may or may not have run${describeCause(cause).replace('last connection error', 'cause')}`,
      { cause },
    );
  }
}

/** `release()` was called on a client that was already released. */
export class DoubleReleaseError extends SteadfastError {
  constructor() {
    super(ErrorCodes.DOUBLE_RELEASE, 'Release called on a client that was already released to the pool');
  }
}

/** An option had a wrong type or value. The message names the option, the value and what is allowed. */
export class InvalidOptionError extends SteadfastError {
  readonly option: string;

  constructor(option: string, message: string) {
    super(ErrorCodes.INVALID_OPTION, `Invalid option ${option}: ${message}`);
    this.option = option;
  }
}

/** A call's own deadline passed while its statement ran; the statement was cancelled on the server. */
export class TimeoutError extends SteadfastError {
  readonly timeoutMs: number;

  constructor(what: string, timeoutMs: number, detail?: string, cause?: unknown) {
    super(ErrorCodes.TIMEOUT, `${what} timed out after ${timeoutMs}ms${detail ? `; ${detail}` : ''}`, {
      cause,
    });
    this.timeoutMs = timeoutMs;
  }
}

/** The circuit breaker is open. `cause` is the failure that opened it (or the last one seen). */
export class CircuitOpenError extends SteadfastError {
  /** When the breaker lets a probe through next, as milliseconds from now (0 when a probe is already running). */
  readonly retryAfterMs: number;

  constructor(retryAfterMs: number, cause?: unknown) {
    super(
      ErrorCodes.CIRCUIT_OPEN,
      `The database is unreachable: failing fast while the circuit breaker is open (next probe in ${Math.max(0, Math.round(retryAfterMs))}ms)${describeCause(cause)}`,
      { cause },
    );
    this.retryAfterMs = retryAfterMs;
  }
}

/** The wait queue is full: the call was rejected at once instead of queueing without bound. */
export class QueueFullError extends SteadfastError {
  readonly snapshot: PoolSnapshot;

  constructor(maxWaiting: number, snapshot: PoolSnapshot) {
    super(
      ErrorCodes.QUEUE_FULL,
      `The pool's wait queue is full (maxWaiting=${maxWaiting}); shedding this call (${describeSnapshot(snapshot)})`,
    );
    this.snapshot = snapshot;
  }
}

/** More acquisitions per second than the configured rate limit: the call was rejected at once. */
export class RateLimitedError extends SteadfastError {
  constructor(ratePerSecond: number) {
    super(ErrorCodes.RATE_LIMITED, `More than ${ratePerSecond} acquisitions per second; shedding this call`);
  }
}

/** The client was held past `leakReclaimMs` and taken back by the pool; its connection was closed. */
export class ConnectionReclaimedError extends SteadfastError {
  readonly heldMs: number;

  constructor(heldMs: number, limitMs: number) {
    super(
      ErrorCodes.RECLAIMED,
      `This client was held for ${Math.round(heldMs)}ms, past leakReclaimMs (${limitMs}ms); the pool took it back and closed its connection`,
    );
    this.heldMs = heldMs;
  }
}
