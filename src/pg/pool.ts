/**
 * `Pool`: a `pg.Pool` in every way an application or an ORM can see, running on the fault-tolerant
 * engine. It extends the application's own `pg.Pool`, so `instanceof pg.Pool` holds (Prisma's adapter
 * checks it) and the constructor name is "Pool" (Drizzle checks it).
 */

import type { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import pg from 'pg';
import { booleanOption, durationOption, enumOption } from '../config/validate.js';
import { type EventSlot, TypedEmitter } from '../engine/emitter.js';
import {
  Engine,
  type EngineEvents,
  type EngineStats,
  type EvictReason,
  type Lease,
  type Priority,
} from '../engine/engine.js';
import {
  AbortedError,
  AcquireTimeoutError,
  CircuitOpenError,
  InvalidOptionError,
  OutcomeUnknownError,
} from '../errors.js';
import { attachPoolLogging } from '../observability/pool-logging.js';
import { createRedactor, type Redactor } from '../observability/redact.js';
import { checkHealth, type HealthOptions, type HealthReport, type HealthTarget } from '../ops/health.js';
import { fullJitterDelay } from '../resilience/backoff.js';
import type { BreakerSnapshot } from '../resilience/breaker.js';
import { isConnectionBroken, isReadOnlyFailover, provesNotRun } from '../resilience/classify.js';
import type { HostPlan } from '../topology/hosts.js';
import { Admission, type CallTicket } from './admission.js';
import { type PoolConfig, resolvePoolConfig } from './config.js';
import { createPgDriver, hostOf } from './driver.js';
import { type LeakEvents, type LeakOptions, watchForLeak } from './leaks.js';
import { CHANNEL_PREFIX, type HostRole, type PoolLifecycleEvents, type Topology } from './lifecycle.js';
import type { PgBouncerGuard } from './pgbouncer.js';
import { recoveryOf, runStatement, type StatementLimits } from './statement.js';
import { runTransaction, type TransactionClient, type TransactionOptions } from './transaction.js';

/** Per-call options of `query()` and `connect()`. */
export interface CallOptions {
  /** Gives up when this signal aborts (while waiting for a connection, or between retries). */
  signal?: AbortSignal | undefined;
  /** Deadline for the whole call in ms, connection wait and retries included. Default: the pool's `acquireTimeoutMs`. */
  timeoutMs?: number | undefined;
  /**
   * The statement is safe to run twice, so it may be re-sent even when the connection was lost after
   * it was sent (outcome unknown). Default: the pool's `idempotent` option (false).
   */
  idempotent?: boolean | undefined;
  /** Lane in the wait queue: `'high'` (health checks, critical work) is served first. Default `'normal'`. */
  priority?: Priority | undefined;
}

/** A query config object that may carry the per-call options. */
export type QueryConfig = pg.QueryConfig & CallOptions & { rowMode?: 'array' | undefined; types?: unknown };

export type PoolClient = pg.PoolClient;

/** Events this pool emits beyond pg.Pool's `connect`, `acquire`, `release`, `remove` and `error`. */
export interface PoolEventPayloads {
  /** A connection was closed: `reason` says why. */
  evict: { id: number; reason: EvictReason; error?: unknown };
  /** A retry is scheduled: of a connection attempt, or of a `query()` whose statement provably did not run. */
  retry: { phase: 'connect' | 'query' | 'transaction'; attempt: number; delayMs: number; error: unknown };
  /** A connection attempt failed. */
  connectError: { error: unknown; attempt: number; fatal: boolean; durationMs: number };
  /** An acquire gave up at its deadline. */
  timeout: { waitMs: number; error: unknown };
  /** A running statement was cancelled on the server (see `PoolLifecycleEvents`). */
  cancel: PoolLifecycleEvents['cancel'];
  /** The circuit breaker changed state; `cause` is the failure that opened it. */
  breaker: PoolLifecycleEvents['breaker'];
}

const QUERY_RETRY_BACKOFF = { initialDelayMs: 5, maxDelayMs: 1_000 };

type Callback = (error: Error | undefined, result?: any) => void;

// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the interface below only adds typed overloads of on/once/off for the native events.
export class Pool extends pg.Pool {
  readonly #engine: Engine<pg.Client>;
  readonly #retryQueries: boolean;
  readonly #idempotent: boolean;
  readonly #queryTimeoutMs: number;
  readonly #cancelGraceMs: number;
  readonly #admission: Admission;
  readonly #redact: Redactor;
  readonly #hostPlan: HostPlan | undefined;
  readonly #pgbouncer: PgBouncerGuard | undefined;
  /** What each host was last seen to be, for stats() and `topology` events. */
  readonly #hostRoles = new Map<string, { host: string; port: number; role: HostRole; seenAt: number }>();
  readonly #leakOptions: LeakOptions;
  /** The pool's name in metrics, logs and diagnostics channels (option `poolName`). */
  readonly poolName: string;
  /**
   * Every lifecycle event with its full payload (connect with duration, acquire with wait time, evict
   * with reason, ...), for metrics, logging and leak detection. Listeners cannot break the pool.
   */
  readonly lifecycle: TypedEmitter<PoolLifecycleEvents>;
  #ended: Promise<void> | undefined;
  readonly #operationEvent: EventSlot<PoolLifecycleEvents['operation']>;
  /** Forwarders of lifecycle events to pg-style listeners (see #wireEvents). */
  #forwarders: Forwarder[] = [];

  constructor(config: PoolConfig = {}) {
    const resolved = resolvePoolConfig(config);
    super(config);
    this.#retryQueries = resolved.retryQueries;
    this.#idempotent = resolved.idempotent;
    this.#queryTimeoutMs = resolved.queryTimeoutMs;
    this.#cancelGraceMs = resolved.cancelGraceMs;
    const Client = resolved.Client ?? pg.Client;
    this.poolName = resolved.poolName;
    this.#hostPlan = resolved.hostPlan;
    this.#pgbouncer = resolved.pgbouncer;
    this.lifecycle = new TypedEmitter<PoolLifecycleEvents>({ prefix: CHANNEL_PREFIX, source: this.poolName });
    this.#operationEvent = this.lifecycle.slot('operation');
    this.#engine = new Engine(
      createPgDriver(Client, resolved.client, {
        hostPlan: resolved.hostPlan,
        onHostState:
          resolved.hostPlan === undefined
            ? undefined
            : (host, port, state) => this.#observeHost(host, port, state),
        allowExitOnIdle: resolved.allowExitOnIdle,
        password: resolved.password,
        ...(resolved.afterConnect ? { afterConnect: resolved.afterConnect } : {}),
      }),
      resolved.engine,
      // The engine reports straight into the pool's lifecycle emitter: no forwarding on the hot path.
      { events: this.lifecycle as unknown as TypedEmitter<EngineEvents<pg.Client>> },
    );
    this.#admission = new Admission(resolved, this.#engine, (change) => {
      if (change.to === 'open') {
        // Nobody waiting can be served while the database is unreachable: fail them fast too.
        this.#engine.rejectWaiters(
          () => new CircuitOpenError(this.#admission.breakerSnapshot()?.retryAfterMs ?? 0, change.cause),
        );
      }
      this.#announce('breaker', change);
    });
    this.#redact = createRedactor(resolved.secrets);
    this.#leakOptions = {
      thresholdMs: resolved.leakDetectionThresholdMs,
      reclaimMs: resolved.leakReclaimMs,
      report: (event, payload) => {
        (this.lifecycle as unknown as TypedEmitter<LeakEvents>).emit(event, payload);
        this.#safeEmit(event, payload);
      },
      reclaim: (lease, error) => this.#release(lease, error),
    };
    if (resolved.logger !== false) {
      attachPoolLogging(this.lifecycle, resolved.logger, {
        poolName: this.poolName,
        redact: this.#redact,
        echo: resolved.echo,
        echoPool: resolved.echoPool,
      });
    }
    this.#wireEvents();
  }

  // ---------------------------------------------------------------------------------------------
  // pg.Pool's surface

  // pg's types declare the counts as properties, while pg-pool defines getters; declaring them here and
  // defining the getters in the static block keeps the emitted types valid without skipLibCheck.
  declare readonly totalCount: number;
  declare readonly idleCount: number;
  declare readonly waitingCount: number;
  /** Checked-out connections past their lifetime: they close when they come back. */
  declare readonly expiredCount: number;

  static {
    Object.defineProperties(this.prototype, {
      totalCount: {
        configurable: true,
        get(this: Pool) {
          return this.#engine.total;
        },
      },
      idleCount: {
        configurable: true,
        get(this: Pool) {
          return this.#engine.idleCount;
        },
      },
      waitingCount: {
        configurable: true,
        get(this: Pool) {
          return this.#engine.waitingCount;
        },
      },
      expiredCount: {
        configurable: true,
        get(this: Pool) {
          return this.#engine.expiredInUseCount();
        },
      },
    });
  }

  /**
   * Checks out a client; give it back with `client.release()` (or `release(err)` / `release(true)` to
   * close it). Promise form, or pg's callback form `(err, client, done)`.
   */
  override connect(): Promise<PoolClient>;
  override connect(
    callback: (err: Error | undefined, client: PoolClient | undefined, done: (release?: any) => void) => void,
  ): void;
  override connect(options: CallOptions): Promise<PoolClient>;
  override connect(arg?: unknown): Promise<PoolClient> | undefined {
    if (typeof arg === 'function') {
      const callback = arg as (
        err: Error | undefined,
        client: PoolClient | undefined,
        done: (r?: any) => void,
      ) => void;
      this.#checkout(undefined).then(
        (client) => callback(undefined, client, client.release),
        (error: Error) => callback(error, undefined, noop),
      );
      return undefined;
    }
    try {
      return this.#checkout(checkCallOptions(arg as CallOptions | undefined));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Runs one statement on a pooled connection. Like pg.Pool, with a deadline, and with a retry on a
   * fresh connection when the connection turned out dead before the statement could run.
   */
  override query<T extends pg.Submittable>(queryStream: T): T;
  override query<R extends any[] = any[], I = any[]>(
    queryConfig: pg.QueryArrayConfig<I> & CallOptions,
    values?: pg.QueryConfigValues<I>,
    options?: CallOptions,
  ): Promise<pg.QueryArrayResult<R>>;
  override query<R extends pg.QueryResultRow = any, I = any[]>(
    queryConfig: pg.QueryConfig<I> & CallOptions,
  ): Promise<pg.QueryResult<R>>;
  override query<R extends pg.QueryResultRow = any, I = any[]>(
    queryTextOrConfig: string | (pg.QueryConfig<I> & CallOptions),
    values?: pg.QueryConfigValues<I>,
    options?: CallOptions,
  ): Promise<pg.QueryResult<R>>;
  override query<R extends any[] = any[], I = any[]>(
    queryConfig: pg.QueryArrayConfig<I>,
    callback: (err: Error, result: pg.QueryArrayResult<R>) => void,
  ): void;
  override query<R extends pg.QueryResultRow = any, I = any[]>(
    queryTextOrConfig: string | pg.QueryConfig<I>,
    callback: (err: Error, result: pg.QueryResult<R>) => void,
  ): void;
  override query<R extends pg.QueryResultRow = any, I = any[]>(
    queryText: string,
    values: pg.QueryConfigValues<I>,
    callback: (err: Error, result: pg.QueryResult<R>) => void,
  ): void;
  override query(config?: unknown, second?: unknown, third?: unknown, fourth?: unknown): any {
    // pg's (text|config, values?, callback?), plus per-call options before the callback:
    // (text, values, options) or (text, values, options, callback).
    let values = second;
    let callback: Callback | undefined;
    let options: CallOptions = NO_OPTIONS;
    if (typeof second === 'function') {
      callback = second as Callback;
      values = undefined;
    } else if (typeof third === 'function') {
      callback = third as Callback;
    } else {
      if (typeof fourth === 'function') callback = fourth as Callback;
      if (third != null && typeof third === 'object') options = third as CallOptions;
    }
    if (typeof config === 'function') {
      const error = new TypeError('Passing a function as the first parameter to pool.query is not supported');
      if (callback) {
        setImmediate(() => callback(error));
        return undefined;
      }
      return Promise.reject(error);
    }
    if (config != null && typeof (config as { submit?: unknown }).submit === 'function') {
      return this.#submit(config as pg.Submittable, values, callback);
    }
    const promise =
      options === NO_OPTIONS && this.#queryTimeoutMs === 0 && !carriesCallOptions(config)
        ? this.#runPlainQuery(
            config as string | QueryConfig,
            values,
            this.#operationEvent.active ? performance.now() : -1,
          )
        : this.#observe('query', this.#runQuery(config as string | QueryConfig, values, options));
    if (callback) {
      promise.then(
        (result) => callback(undefined, result),
        (error: Error) => callback(error),
      );
      return undefined;
    }
    return promise;
  }

  /** Closes the pool (see `close()`); pg's promise and callback forms. */
  override end(): Promise<void>;
  override end(callback: () => void): void;
  override end(callback?: () => void): Promise<void> | void {
    const closing = this.close();
    if (callback) {
      closing.then(
        () => callback(),
        () => callback(),
      );
      return;
    }
    return closing;
  }

  // ---------------------------------------------------------------------------------------------
  // The native API

  /**
   * Stops taking work, settles every waiter with `PoolClosedError`, lets checked-out clients finish
   * for up to `timeoutMs` (default `closeTimeoutMs`, 30 s) and then closes everything. Idempotent.
   * With `drain: true`, callers already waiting are still served within that time (graceful shutdown):
   * only new calls are refused.
   */
  close(options?: { timeoutMs?: number; drain?: boolean }): Promise<void> {
    if (this.#ended) return this.#ended;
    (this as { ending: boolean }).ending = true;
    this.#ended = this.#engine.close(options).then(() => {
      (this as { ended: boolean }).ended = true;
    });
    return this.#ended;
  }

  /**
   * Runs `fn` in a transaction on one connection: commits when it resolves, rolls back when it throws,
   * and re-runs it after a serialization failure, a deadlock, or a connection lost before COMMIT was
   * sent (`retry` times, default 3). A connection lost during COMMIT is an `OutcomeUnknownError`.
   * Nested `tx.transaction()` calls use savepoints. See {@link TransactionOptions}.
   */
  async transaction<T>(fn: (tx: TransactionClient) => Promise<T>, options?: TransactionOptions): Promise<T> {
    return this.#observe('transaction', this.#transaction(fn, options));
  }

  async #transaction<T>(fn: (tx: TransactionClient) => Promise<T>, options?: TransactionOptions): Promise<T> {
    return runTransaction(
      {
        admit: () => this.#admission.admit(),
        acquireWithin: (budgetEnd, timeoutMs, signal, ticket) =>
          this.#acquireWithin(budgetEnd, timeoutMs, signal, options?.priority, ticket),
        release: (lease, error) => this.#release(lease, error),
        acquireTimeoutMs: this.#engine.options.acquireTimeoutMs,
        cancelGraceMs: this.#cancelGraceMs,
        onRetry: (event) => this.#announce('retry', { phase: 'transaction', ...event }),
        onCancel: (event) => this.#announce('cancel', event),
        checkStatement:
          this.#pgbouncer === undefined ? undefined : (config) => this.#pgbouncer!.check(config),
      },
      fn,
      options === undefined ? undefined : { ...checkCallOptions(options), ...options },
    );
  }

  /**
   * A health check: `'readiness'` (default) runs one statement at high priority within `timeoutMs`
   * (default 2000) and reports latency and server version; `'liveness'` checks only the pool. Never
   * rejects, never contains credentials.
   */
  health(options?: HealthOptions): Promise<HealthReport> {
    return checkHealth(this as unknown as HealthTarget, this.#redact, options);
  }

  /** A snapshot: connection counts by state, waiters, counters since start, and the circuit breaker. */
  stats(): EngineStats & { breaker: BreakerSnapshot | undefined; topology: Topology | undefined } {
    return {
      ...this.#engine.stats(),
      breaker: this.#admission.breakerSnapshot(),
      topology:
        this.#hostPlan === undefined
          ? undefined
          : {
              targetSessionAttrs: this.#hostPlan.targetSessionAttrs,
              hosts: this.#hostPlan.hosts.map(({ host, port }) => ({
                host,
                port,
                role: this.#hostRoles.get(`${host}:${port}`)?.role ?? 'unknown',
              })),
            },
    };
  }

  /** The printed form shows the pool's state, never its config (which holds the password). */
  [inspect.custom](): string {
    const s = this.#engine.snapshot();
    return `Pool { total: ${s.total}, idle: ${s.idle}, inUse: ${s.inUse}, connecting: ${s.connecting}, waiting: ${s.waiting}, max: ${s.max} }`;
  }

  toJSON(): Record<string, unknown> {
    return { ...this.#engine.snapshot(), ended: this.ended };
  }

  // ---------------------------------------------------------------------------------------------

  async #checkout(options: CallOptions | undefined): Promise<PoolClient> {
    const timeoutMs = options?.timeoutMs ?? this.#engine.options.acquireTimeoutMs;
    const ticket = this.#admission.admit();
    const lease = await this.#acquireWithin(
      performance.now() + timeoutMs,
      timeoutMs,
      options?.signal,
      options?.priority,
      ticket,
    );
    const client = lease.connection as PoolClient;
    const watch = watchForLeak(lease, this.#leakOptions);
    // A fresh closure per checkout, bound to this lease: it works detached (`const { release } = client`)
    // and a stale one from an earlier checkout cannot release the current holder's lease.
    client.release =
      watch === undefined
        ? (error?: Error | boolean) => this.#release(lease, error)
        : (error?: Error | boolean) => {
            // A reclaimed client was already given back by the pool: its holder's release is a no-op.
            if (watch.reclaimed) return;
            watch.returned();
            this.#release(lease, error);
          };
    return client;
  }

  #release(lease: Lease<pg.Client>, error?: Error | boolean): void {
    // pg.Pool announces the release before the connection moves on to the next caller.
    if (!lease.released)
      this.#safeEmit('release', error instanceof Error ? error : undefined, lease.connection);
    this.#engine.release(lease, error ? { destroy: true, error } : undefined);
  }

  /**
   * `query()` with no per-call options and no pool deadline, the common case, on callbacks instead of
   * promises: the engine hands the connection over by a direct call (from inside the previous holder's
   * release, when this caller waited) and the statement is written in that same turn, as pg.Pool does.
   * Only the caller's own promise remains. A failed attempt continues on the general path.
   */
  #runPlainQuery(config: string | QueryConfig, values: unknown, startedAt: number): Promise<pg.QueryResult> {
    // It reports its own `operation` event (when `startedAt` >= 0: someone listens), at the moment it
    // settles, rather than through one more promise.
    return new Promise<pg.QueryResult>((resolve, reject) => {
      let ticket: CallTicket;
      try {
        this.#pgbouncer?.check(config);
        ticket = this.#admission.admit();
      } catch (error) {
        if (startedAt >= 0) this.#reportOperation('query', startedAt, true, error);
        reject(error);
        return;
      }
      this.#engine.acquireWith(
        undefined,
        (lease) => {
          this.#admission.acquired(ticket);
          try {
            // Older pg 8.x versions write the callback into the config object they are given: the caller's
            // object goes in behind a derived one, so that a later promise-form call with it still works.
            const sent = typeof config === 'object' && config !== null ? Object.create(config) : config;
            (lease.connection as unknown as CallbackClient).query(sent, values, (error, result) => {
              if (error) {
                this.#plainQueryFailed(error, lease, config, values, startedAt, resolve, reject);
                return;
              }
              try {
                this.#release(lease);
              } catch (failure) {
                if (startedAt >= 0) this.#reportOperation('query', startedAt, true, failure);
                reject(failure);
                return;
              }
              // The release just read the clock: the call's duration needs no second reading.
              if (startedAt >= 0) {
                const releasedAt = lease.releasedAt; // NaN when close() had already taken the connection
                this.#reportOperation(
                  'query',
                  startedAt,
                  false,
                  undefined,
                  releasedAt >= 0 ? releasedAt : undefined,
                );
              }
              resolve(result);
            });
          } catch (error) {
            // pg refused the arguments (e.g. a null query) before sending anything.
            this.#plainQueryFailed(error, lease, config, values, startedAt, resolve, reject);
          }
        },
        (error) => {
          this.#admission.failed(ticket, error);
          if (startedAt >= 0) this.#reportOperation('query', startedAt, true, error);
          reject(error);
        },
      );
    });
  }

  /** A failed attempt of the plain path: decided as on the general path, and retried there. */
  #plainQueryFailed(
    error: unknown,
    lease: Lease<pg.Client>,
    config: string | QueryConfig,
    values: unknown,
    startedAt: number,
    resolve: (result: Promise<pg.QueryResult>) => void,
    reject: (error: unknown) => void,
  ): void {
    // Later, not now: pg reports a statement's error before it has read the server's ReadyForQuery, and
    // the connection can only be judged (and given back) once the rest of the reply is in.
    queueMicrotask(() => {
      const timeoutMs = this.#engine.options.acquireTimeoutMs;
      const call: QueryCall = {
        config,
        values,
        signal: undefined,
        priority: undefined,
        idempotent: this.#idempotent,
        timeoutMs,
        budgetEnd: lease.requestedAt + timeoutMs,
        limits: undefined,
      };
      let delayMs: number | undefined;
      try {
        delayMs = this.#afterFailure(error, lease, call, 1);
      } catch (final) {
        if (startedAt >= 0) this.#reportOperation('query', startedAt, true, final);
        reject(final);
        return;
      }
      const retried = this.#attempts(call, 2, undefined, delayMs);
      resolve(startedAt >= 0 ? this.#observe('query', retried, startedAt) : retried);
    });
  }

  async #runQuery(
    config: string | QueryConfig,
    values: unknown,
    options: CallOptions,
  ): Promise<pg.QueryResult> {
    const fromConfig = typeof config === 'object' && config !== null ? config : undefined;
    const call = checkCallOptions({
      signal: options.signal ?? fromConfig?.signal,
      timeoutMs: options.timeoutMs ?? fromConfig?.timeoutMs,
      idempotent: options.idempotent ?? fromConfig?.idempotent,
    });
    const signal = call.signal;
    const priority = options.priority ?? fromConfig?.priority;
    this.#pgbouncer?.check(config);
    // With a deadline (per call, or the pool's queryTimeoutMs) it covers the whole call: the wait, the
    // statement (cancelled on the server when it runs late) and retries. Without one, the wait and
    // retries are bounded by acquireTimeoutMs and the statement runs as long as it takes, as in pg.
    const callTimeoutMs = call.timeoutMs ?? (this.#queryTimeoutMs > 0 ? this.#queryTimeoutMs : undefined);
    const timeoutMs = callTimeoutMs ?? this.#engine.options.acquireTimeoutMs;
    const budgetEnd = performance.now() + timeoutMs;
    const limits: StatementLimits | undefined =
      callTimeoutMs === undefined && signal === undefined
        ? undefined
        : {
            deadline: callTimeoutMs === undefined ? Number.POSITIVE_INFINITY : budgetEnd,
            timeoutMs,
            signal,
            cancelGraceMs: this.#cancelGraceMs,
            onCancel: (event: PoolEventPayloads['cancel']) => this.#announce('cancel', event),
          };
    const ticket = this.#admission.admit();
    return this.#attempts(
      {
        config,
        values,
        signal,
        priority,
        idempotent: call.idempotent ?? this.#idempotent,
        timeoutMs,
        budgetEnd,
        limits,
      },
      1,
      ticket,
      undefined,
    );
  }

  /** Attempts from `attempt` on, after waiting `delayMs` (if any), until one succeeds or the call gives up. */
  async #attempts(
    call: QueryCall,
    firstAttempt: number,
    ticket: CallTicket | undefined,
    delayMs: number | undefined,
  ): Promise<pg.QueryResult> {
    for (let attempt = firstAttempt; ; attempt++) {
      if (delayMs !== undefined) await sleep(delayMs, call.signal);
      const lease = await this.#acquireWithin(
        call.budgetEnd,
        call.timeoutMs,
        call.signal,
        call.priority,
        ticket,
      );
      try {
        const result = await (call.limits === undefined
          ? (lease.connection.query(
              call.config as pg.QueryConfig,
              call.values as unknown[] | undefined,
            ) as Promise<pg.QueryResult>)
          : runStatement(lease.connection, call.config, call.values, call.limits));
        this.#release(lease);
        return result;
      } catch (error) {
        delayMs = this.#afterFailure(error, lease, call, attempt);
      }
    }
  }

  /**
   * Decides what a failed attempt leads to and gives its connection back: throws when the call must
   * give up (the error itself, or `OutcomeUnknownError`); otherwise returns how long to wait before
   * the next attempt (undefined: at once).
   */
  #afterFailure(
    error: unknown,
    lease: Lease<pg.Client>,
    call: QueryCall,
    attempt: number,
  ): number | undefined {
    const recovery = recoveryOf(error);
    if (recovery) {
      // Interrupted by the deadline or the signal: the connection returns once its fate is known.
      void recovery.then((healthy) => this.#release(lease, healthy ? undefined : (error as Error)));
      throw error;
    }
    if (isReadOnlyFailover(error) && this.#followsPrimary()) {
      // 25006: the server behind these connections is a standby now. The statement was refused, so
      // it is safe to send again, once the pool has dropped them and found the new primary.
      this.#release(lease, error as Error);
      this.#engine.retireAll(error);
      this.#markHost(lease.connection, 'standby');
      if (performance.now() >= call.budgetEnd) throw error;
      this.#announce('retry', { phase: 'query', attempt, delayMs: 0, error });
      return undefined;
    }
    const broken = isConnectionBroken(error);
    this.#release(lease, broken ? (error as Error) : undefined);
    if (!broken) throw error; // a SQL error: the server ran the statement and refused it
    // A server error proves only that the current transaction did not commit: when the text may hold
    // several statements (simple protocol), earlier ones may have committed on their own.
    const safe =
      call.idempotent ||
      (provesNotRun(error) && (isSingleStatement(call.config, call.values) || !sentToServer(error)));
    if (!safe) throw new OutcomeUnknownError(error);
    if (!this.#retryQueries) throw error;
    const delayMs = Math.min(
      fullJitterDelay(attempt, QUERY_RETRY_BACKOFF),
      call.budgetEnd - performance.now(),
    );
    if (delayMs < 0) throw error;
    this.#announce('retry', { phase: 'query', attempt, delayMs, error });
    return delayMs;
  }

  /** Acquires within what is left of a call's budget; a timeout reports the whole budget. */
  async #acquireWithin(
    budgetEnd: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    priority: Priority | undefined,
    ticket: CallTicket | undefined,
  ): Promise<Lease<pg.Client>> {
    try {
      // The whole budget on a first attempt: waiters with equal timeouts share one deadline list and
      // timer in the engine. A retry gets what is left, in whole milliseconds.
      const remaining = budgetEnd - performance.now();
      const lease = await this.#engine.acquire({
        signal,
        timeoutMs: remaining >= timeoutMs - 1 ? timeoutMs : Math.max(1, Math.ceil(remaining)),
        priority,
      });
      this.#admission.acquired(ticket);
      return lease;
    } catch (error) {
      this.#admission.failed(ticket, error);
      if (error instanceof AcquireTimeoutError && error.timeoutMs !== timeoutMs) {
        throw new AcquireTimeoutError(timeoutMs, error.snapshot, error.cause);
      }
      throw error;
    }
  }

  /**
   * pg's Submittable form (pg.Query, cursors, streams), handled as pg.Pool does: checked out, passed to
   * `client.query`, released when its callback runs; no retry. The connection is also released when a
   * stream ends, fails or is destroyed without calling back, so it cannot leak.
   */
  #submit(submittable: pg.Submittable, values: unknown, callback: Callback | undefined): unknown {
    const target = submittable as pg.Submittable & { callback?: Callback; handleError?: (e: Error) => void };
    let resolveResult: (value: unknown) => void = noop;
    let rejectResult: (error: unknown) => void = noop;
    const result = callback
      ? undefined
      : new Promise((resolve, reject) => {
          resolveResult = resolve;
          rejectResult = reject;
        });
    const original = target.callback ?? callback;
    const settle: Callback = (error, value) => {
      if (original) original(error, value);
      if (error) rejectResult(error);
      else resolveResult(value);
    };
    // Attached before acquiring, so a failed acquire reaches the caller instead of an 'error' event
    // nobody listens to.
    target.callback = settle;
    this.#checkout(undefined).then(
      (client) => {
        let released = false;
        const done = (error?: Error) => {
          if (released) return;
          released = true;
          client.release(error && isConnectionBroken(error) ? error : undefined);
        };
        target.callback = (error, value) => {
          done(error);
          settle(error, value);
        };
        const emitter = submittable as unknown as Partial<NodeJS.EventEmitter>;
        if (typeof emitter.once === 'function') {
          emitter.once('end', () => done());
          emitter.once('close', () => done());
          emitter.once('error', (error: Error) => done(error));
        }
        client.query(submittable as any, values as any);
      },
      (error: Error) => settle(error),
    );
    // Never an unhandled rejection when the caller uses the submittable's own events instead.
    result?.catch(noop);
    return result;
  }

  /**
   * pg-style events come from the lifecycle emitter through forwarders that are attached only while
   * the pool has a listener for one of their events: with none, a checkout builds no payload for them.
   * EventEmitter's own `newListener` and `removeListener` events say when that changes.
   */
  #wireEvents(): void {
    const events = this.#engine.events;
    const forwarder = <K extends keyof EngineEvents<pg.Client>>(
      poolEvents: string[],
      event: K,
      listener: (payload: EngineEvents<pg.Client>[K]) => void,
    ): Forwarder => ({
      poolEvents,
      attached: false,
      attach: () => events.on(event, listener),
      detach: () => events.off(event, listener),
    });
    this.#forwarders = [
      forwarder(['connect'], 'connect', ({ connection }) => this.#safeEmit('connect', connection)),
      forwarder(['acquire'], 'acquire', ({ connection }) => this.#safeEmit('acquire', connection)),
      forwarder(['remove', 'evict'], 'evict', ({ connection, id, reason, error }) => {
        this.#safeEmit('remove', connection);
        this.#safeEmit('evict', error === undefined ? { id, reason } : { id, reason, error });
      }),
      forwarder(['error'], 'error', ({ connection, error, idle }) => {
        // Information only: the engine already evicted the connection. As in pg.Pool, only errors of
        // idle clients reach 'error' (a checked-out client's error reaches its holder). With no
        // listener, nothing is emitted, so the process never dies of an idle connection's error.
        if (idle) this.#safeEmit('error', error, connection);
      }),
      forwarder(['retry'], 'retry', (payload) => {
        if (payload.phase === 'connect') this.#safeEmit('retry', payload);
      }),
      forwarder(['connectError'], 'connectError', (payload) => this.#safeEmit('connectError', payload)),
      forwarder(['timeout'], 'timeout', (payload) => this.#safeEmit('timeout', payload)),
    ];
    this.#watchListeners();
  }

  #watchListeners(): void {
    // 'newListener' comes before the listener is added; 'removeListener' after it is gone.
    const emitter = this as unknown as EventEmitter;
    emitter.on('removeListener', (event: string | symbol) => this.#syncForwarders(event, false));
    emitter.on('newListener', (event: string | symbol) => this.#syncForwarders(event, true));
  }

  #syncForwarders(event: string | symbol | undefined, adding: boolean): void {
    for (const f of this.#forwarders) {
      if (event !== undefined && !f.poolEvents.includes(event as string)) continue;
      const wanted = adding || f.poolEvents.some((name) => this.listenerCount(name) > 0);
      if (wanted && !f.attached) f.attach();
      else if (!wanted && f.attached) f.detach();
      f.attached = wanted;
    }
  }

  override removeAllListeners(event?: string | symbol): this {
    // EventEmitter tells apart a call without arguments (every event) from one with `undefined`.
    if (event === undefined) super.removeAllListeners();
    else super.removeAllListeners(event);
    if (event === undefined || event === 'newListener' || event === 'removeListener') {
      // Our own watchers went too: put them back.
      if (this.listenerCount('newListener') === 0) this.#watchListeners();
    }
    this.#syncForwarders(event, false);
    return this;
  }

  /** Whether this pool must always reach the primary (target_session_attrs read-write or primary). */
  #followsPrimary(): boolean {
    const target = this.#hostPlan?.targetSessionAttrs;
    return target === 'read-write' || target === 'primary';
  }

  #observeHost(host: string, port: number, state: { inRecovery: boolean; readOnly: boolean }): void {
    this.#setHostRole(
      `${host}:${port}`,
      host,
      port,
      state.inRecovery ? 'standby' : state.readOnly ? 'read-only' : 'primary',
    );
  }

  #markHost(client: pg.Client, role: HostRole): void {
    const key = hostOf.get(client);
    if (key === undefined) return;
    const [host, port] = [key.slice(0, key.lastIndexOf(':')), Number(key.slice(key.lastIndexOf(':') + 1))];
    this.#setHostRole(key, host, port, role);
  }

  #setHostRole(key: string, host: string, port: number, role: HostRole): void {
    const previous = this.#hostRoles.get(key);
    this.#hostRoles.set(key, { host, port, role, seenAt: Date.now() });
    if (previous?.role !== role) this.#announce('topology', { host, port, role, previous: previous?.role });
  }

  /** Reports a call's duration and outcome as an `operation` lifecycle event, when anyone listens. */
  #observe<T>(kind: 'query' | 'transaction', promise: Promise<T>, startedAt?: number): Promise<T> {
    if (startedAt === undefined) {
      if (!this.#operationEvent.active) return promise;
      startedAt = performance.now();
    }
    const started = startedAt;
    promise.then(
      () => this.#reportOperation(kind, started, false, undefined),
      (error: unknown) => this.#reportOperation(kind, started, true, error),
    );
    return promise;
  }

  #reportOperation(
    kind: 'query' | 'transaction',
    startedAt: number,
    failed: boolean,
    error: unknown,
    endedAt = performance.now(),
  ): void {
    const durationMs = endedAt - startedAt;
    this.#operationEvent.emit(failed ? { kind, durationMs, error } : { kind, durationMs });
  }

  /** A pool-level event: to the lifecycle emitter (and its channel) and to pg-style listeners. */
  #announce<K extends 'retry' | 'cancel' | 'breaker' | 'topology'>(
    event: K,
    payload: PoolLifecycleEvents[K],
  ): void {
    this.lifecycle.emit(event, payload);
    this.#safeEmit(event, payload);
  }

  /** Emits without letting a throwing listener break the pool. */
  #safeEmit(event: string, ...args: unknown[]): void {
    if (this.listenerCount(event) === 0) return;
    try {
      this.emit(event, ...args);
    } catch (error) {
      process.emitWarning(
        `A listener for the pool event "${event}" threw: ${(error as Error)?.message ?? String(error)}`,
        'SteadfastListenerWarning',
      );
    }
  }
}

// The native events, typed, next to pg.Pool's own (declaration merging adds the overloads).
type PgPoolEvent = 'error' | 'release' | 'connect' | 'acquire' | 'remove';
type PgPoolListener<K extends PgPoolEvent> = K extends 'release' | 'error'
  ? (err: Error, client: pg.PoolClient) => void
  : (client: pg.PoolClient) => void;

export interface Pool {
  on<K extends PgPoolEvent>(event: K, listener: PgPoolListener<K>): this;
  on<K extends keyof PoolEventPayloads>(event: K, listener: (payload: PoolEventPayloads[K]) => void): this;
  once<K extends PgPoolEvent>(event: K, listener: PgPoolListener<K>): this;
  once<K extends keyof PoolEventPayloads>(event: K, listener: (payload: PoolEventPayloads[K]) => void): this;
  off<K extends PgPoolEvent>(event: K, listener: PgPoolListener<K>): this;
  off<K extends keyof PoolEventPayloads>(event: K, listener: (payload: PoolEventPayloads[K]) => void): this;
}

function noop(): void {}

const NO_OPTIONS: CallOptions = Object.freeze({});

/** Feeds pg-style events (`poolEvents`) from one lifecycle event, while anyone listens to them. */
interface Forwarder {
  poolEvents: string[];
  attached: boolean;
  attach(): void;
  detach(): void;
}

/** pg.Client's callback form of `query`, as the plain path calls it (pg's overloads are narrower). */
interface CallbackClient {
  query(
    config: unknown,
    values: unknown,
    callback: (error: Error | null | undefined, result: pg.QueryResult) => void,
  ): void;
}

/** One `query()` call, as its attempts see it. */
interface QueryCall {
  config: string | QueryConfig;
  values: unknown;
  signal: AbortSignal | undefined;
  priority: Priority | undefined;
  idempotent: boolean;
  /** The whole call's timeout (reported in errors) and when it runs out (`performance.now()` scale). */
  timeoutMs: number;
  budgetEnd: number;
  /** The statement's deadline and signal; undefined when it has neither (it runs as long as it takes). */
  limits: StatementLimits | undefined;
}

/** Whether a query config object carries per-call options (which the plain path does not handle). */
function carriesCallOptions(config: unknown): boolean {
  if (typeof config !== 'object' || config === null) return false;
  const c = config as CallOptions;
  return (
    c.signal !== undefined ||
    c.timeoutMs !== undefined ||
    c.idempotent !== undefined ||
    c.priority !== undefined
  );
}

/** Checks per-call options: a bad deadline must not silently become 1 ms (Node clamps bad timer delays). */
function checkCallOptions(options: CallOptions | undefined): CallOptions {
  if (options === undefined) return {};
  const { timeoutMs, idempotent, signal } = options;
  if (timeoutMs !== undefined) durationOption('timeoutMs', timeoutMs, 0, 1);
  if (idempotent !== undefined) booleanOption('idempotent', idempotent, false);
  if (options.priority !== undefined)
    enumOption('priority', options.priority, 'normal', ['high', 'normal', 'low']);
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidOptionError('signal', `got ${typeof signal}, expected an AbortSignal`);
  }
  return options;
}

/**
 * True when the statement is certainly one statement: with parameters pg uses the extended protocol,
 * which takes exactly one. Plain text is one statement unless it has a semicolon before its end.
 */
function isSingleStatement(config: unknown, values: unknown): boolean {
  const text = typeof config === 'string' ? config : (config as { text?: unknown } | null)?.text;
  const params = Array.isArray(values) ? values : (config as { values?: unknown } | null)?.values;
  if (Array.isArray(params) && params.length > 0) return true;
  if (typeof text !== 'string') return false;
  const semicolon = text.indexOf(';');
  return semicolon === -1 || text.slice(semicolon + 1).trim() === '';
}

/** Whether the error was an answer from the server (rather than a refusal to send on the client side). */
function sentToServer(error: unknown): boolean {
  return typeof (error as { severity?: unknown })?.severity === 'string';
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (ms <= 0 && !signal?.aborted) return Promise.resolve();
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortedError('The query', signal.reason));
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AbortedError('The query', signal?.reason));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
