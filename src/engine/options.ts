/**
 * The engine's options, their defaults and their checks.
 */

import { durationOption, enumOption, integerOption } from '../config/validate.js';
import { InvalidOptionError } from '../errors.js';

export interface EngineOptions {
  /** Most connections open at once, kept plus overflow. Default 10 (as `pg.Pool`). */
  max?: number;
  /**
   * Of `max`, how many are burst ("overflow") connections that close when they are returned with
   * nobody waiting (or after `overflowIdleTimeoutMs`), as SQLAlchemy's QueuePool does. The kept size is
   * `max - maxOverflow`. Default 0.
   */
  maxOverflow?: number;
  /** Idle connections kept open however long they idle (the idle timeout never goes below this). Default 0. */
  min?: number;
  /**
   * `'queue'` caches connections (QueuePool). `'null'` caches none: every checkout opens a connection
   * and every release closes it, for use behind PgBouncer (SQLAlchemy's NullPool). Default `'queue'`.
   */
  mode?: 'queue' | 'null';
  /**
   * Most callers waiting for a connection at once; beyond it a call is rejected at once with
   * `QueueFullError` (or, for a more urgent caller, the newest less urgent waiter is). Default Infinity.
   */
  maxWaiting?: number;
  /** Longest wait for a connection, in ms, retries included. Default 30000 (HikariCP, SQLAlchemy). */
  acquireTimeoutMs?: number;
  /** Longest one connection attempt (TCP, TLS, startup, auth) may take, in ms. Default 5000. */
  connectTimeoutMs?: number;
  /** Most connection attempts in flight at once, so an outage does not become a reconnect storm. Default 2. */
  maxConnectConcurrency?: number;
  /** First retry delay after a failed connection attempt, in ms (full jitter). Default 10 (HikariCP). */
  connectBackoffInitialMs?: number;
  /** Cap of the retry delay, in ms. Default 2000: a recovered server is used within about a second on average, while a pool still makes at most a few attempts per second during an outage (HikariCP caps at 5000). */
  connectBackoffMaxMs?: number;
  /**
   * A connection idle longer than this (ms) is validated with a round trip before it is handed out;
   * one used more recently is trusted. -1 turns validation off. Default 500 (HikariCP).
   */
  validateAfterIdleMs?: number;
  /** Longest a validation round trip may take, in ms. Default 5000. */
  validationTimeoutMs?: number;
  /** Longest a reset (ROLLBACK of a connection returned inside a transaction) may take, in ms. Default 5000. */
  resetTimeoutMs?: number;
  /**
   * A connection older than this (ms) is closed when next idle; each connection's lifetime is shortened
   * by a random 0-2.5% so they do not all expire at once. 0 disables. Default 1800000 (30 min).
   */
  maxLifetimeMs?: number;
  /** A connection is closed after it has been checked out this many times (pg.Pool's `maxUses`). 0: no limit. Default 0. */
  maxUses?: number;
  /** An idle connection beyond `min` is closed after this long, in ms. 0 disables. Default 10000 (as `pg.Pool`). */
  idleTimeoutMs?: number;
  /** How long an overflow connection may idle before it closes, in ms. Default 0: closed when returned. */
  overflowIdleTimeoutMs?: number;
  /** How often idle connections are checked for idle timeout and lifetime, in ms. Default 1000. */
  housekeepingIntervalMs?: number;
  /** How long `close()` lets checked-out connections finish before destroying them, in ms. Default 30000. */
  closeTimeoutMs?: number;
}

export type ResolvedEngineOptions = Required<EngineOptions>;

export const engineDefaults: ResolvedEngineOptions = {
  max: 10,
  maxOverflow: 0,
  min: 0,
  mode: 'queue',
  maxWaiting: Number.POSITIVE_INFINITY,
  acquireTimeoutMs: 30_000,
  connectTimeoutMs: 5_000,
  maxConnectConcurrency: 2,
  connectBackoffInitialMs: 10,
  connectBackoffMaxMs: 2_000,
  validateAfterIdleMs: 500,
  validationTimeoutMs: 5_000,
  resetTimeoutMs: 5_000,
  maxLifetimeMs: 30 * 60_000,
  maxUses: 0,
  idleTimeoutMs: 10_000,
  overflowIdleTimeoutMs: 0,
  housekeepingIntervalMs: 1_000,
  closeTimeoutMs: 30_000,
};

/** The most connections one pool may open; far above any sane size, low enough to catch `1e9`. */
export const MAX_POOL_SIZE = 10_000;

export function resolveEngineOptions(options: EngineOptions = {}): ResolvedEngineOptions {
  const d = engineDefaults;
  const max = integerOption('max', options.max, d.max, 1, MAX_POOL_SIZE);
  const resolved: ResolvedEngineOptions = {
    max,
    maxOverflow: integerOption('maxOverflow', options.maxOverflow, d.maxOverflow, 0, max - 1),
    min: integerOption('min', options.min, d.min, 0, max),
    mode: enumOption('mode', options.mode, d.mode, ['queue', 'null'] as const),
    maxWaiting:
      options.maxWaiting === Number.POSITIVE_INFINITY
        ? options.maxWaiting
        : integerOption('maxWaiting', options.maxWaiting, d.maxWaiting, 0),
    acquireTimeoutMs: durationOption('acquireTimeoutMs', options.acquireTimeoutMs, d.acquireTimeoutMs, 1),
    connectTimeoutMs: durationOption('connectTimeoutMs', options.connectTimeoutMs, d.connectTimeoutMs, 1),
    maxConnectConcurrency: integerOption(
      'maxConnectConcurrency',
      options.maxConnectConcurrency,
      d.maxConnectConcurrency,
      1,
      MAX_POOL_SIZE,
    ),
    // At least 1 ms: a ceiling of 0 doubles to 0 forever, which would be no backoff at all.
    connectBackoffInitialMs: durationOption(
      'connectBackoffInitialMs',
      options.connectBackoffInitialMs,
      d.connectBackoffInitialMs,
      1,
    ),
    connectBackoffMaxMs: durationOption(
      'connectBackoffMaxMs',
      options.connectBackoffMaxMs,
      d.connectBackoffMaxMs,
      0,
    ),
    validateAfterIdleMs: durationOption(
      'validateAfterIdleMs',
      options.validateAfterIdleMs,
      d.validateAfterIdleMs,
      -1,
    ),
    validationTimeoutMs: durationOption(
      'validationTimeoutMs',
      options.validationTimeoutMs,
      d.validationTimeoutMs,
      1,
    ),
    resetTimeoutMs: durationOption('resetTimeoutMs', options.resetTimeoutMs, d.resetTimeoutMs, 1),
    maxLifetimeMs: durationOption('maxLifetimeMs', options.maxLifetimeMs, d.maxLifetimeMs, 0),
    maxUses: integerOption('maxUses', options.maxUses, d.maxUses, 0),
    idleTimeoutMs: durationOption('idleTimeoutMs', options.idleTimeoutMs, d.idleTimeoutMs, 0),
    overflowIdleTimeoutMs: durationOption(
      'overflowIdleTimeoutMs',
      options.overflowIdleTimeoutMs,
      d.overflowIdleTimeoutMs,
      0,
    ),
    housekeepingIntervalMs: durationOption(
      'housekeepingIntervalMs',
      options.housekeepingIntervalMs,
      d.housekeepingIntervalMs,
      10,
    ),
    closeTimeoutMs: durationOption('closeTimeoutMs', options.closeTimeoutMs, d.closeTimeoutMs, 0),
  };
  if (resolved.connectBackoffMaxMs < resolved.connectBackoffInitialMs) {
    // Blame the option the caller set: with the maximum left at its default, the initial delay is too long.
    throw options.connectBackoffMaxMs === undefined
      ? new InvalidOptionError(
          'connectBackoffInitialMs',
          `got ${resolved.connectBackoffInitialMs}, expected at most connectBackoffMaxMs (${resolved.connectBackoffMaxMs}, its default)`,
        )
      : new InvalidOptionError(
          'connectBackoffMaxMs',
          `got ${resolved.connectBackoffMaxMs}, expected at least connectBackoffInitialMs (${resolved.connectBackoffInitialMs})`,
        );
  }
  if (resolved.validateAfterIdleMs < 0 && resolved.validateAfterIdleMs !== -1) {
    throw new InvalidOptionError(
      'validateAfterIdleMs',
      `got ${resolved.validateAfterIdleMs}, expected -1 (off) or milliseconds >= 0`,
    );
  }
  if (resolved.min > resolved.max - resolved.maxOverflow) {
    throw new InvalidOptionError(
      'min',
      `got ${resolved.min}, expected at most the kept size max - maxOverflow (${resolved.max - resolved.maxOverflow})`,
    );
  }
  return resolved;
}
