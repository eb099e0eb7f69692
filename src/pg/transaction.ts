/**
 * `pool.transaction(fn)`: runs `fn` inside one transaction on one connection, commits or rolls back,
 * and re-runs the whole of `fn` when that is provably safe.
 *
 * Safe to re-run: a serialization failure or deadlock (40001, 40P01: the server rolled the transaction
 * back), and a connection lost before COMMIT was sent (the server rolls back a transaction whose session
 * ends). Not safe: a connection lost while COMMIT was in flight. The transaction may have committed, so
 * that is an `OutcomeUnknownError`, never a silent re-run.
 *
 * A deadline or an abort while `fn` runs rolls back and releases the connection; a statement still
 * running is cancelled on the server first. Nested `tx.transaction(fn)` calls use savepoints.
 */
import type pg from 'pg';
import { enumOption, integerOption } from '../config/validate.js';
import type { Lease, Priority } from '../engine/engine.js';
import { AbortedError, InvalidOptionError, OutcomeUnknownError, TimeoutError } from '../errors.js';
import { fullJitterDelay } from '../resilience/backoff.js';
import { isConnectionBroken, isTransactionRetryable } from '../resilience/classify.js';
import type { CallTicket } from './admission.js';
import { recoveryOf, runStatement, type StatementLimits } from './statement.js';

export type IsolationLevel = 'read uncommitted' | 'read committed' | 'repeatable read' | 'serializable';

export interface TransactionOptions {
  /** Isolation level of the transaction. Default: the server's (`read committed` unless configured). */
  isolation?: IsolationLevel;
  /** `READ ONLY`. Default false. */
  readOnly?: boolean;
  /** `DEFERRABLE` (meaningful with `serializable` and `readOnly`). Default false. */
  deferrable?: boolean;
  /**
   * How many times `fn` may be re-run after a serialization failure, a deadlock, or a connection lost
   * before COMMIT was sent. 0 or false: never. Default 3.
   */
  retry?: number | false;
  /** Deadline of the whole call in ms: waiting, every run of `fn`, COMMIT, and the pauses between runs. */
  timeoutMs?: number;
  /** Aborting rolls the transaction back and rejects with `AbortedError`. */
  signal?: AbortSignal;
  /** Lane in the wait queue. Default `'normal'`. */
  priority?: Priority;
}

/** What `fn` gets: statements run inside the transaction, under its deadline and signal. */
export interface TransactionClient {
  /** Runs one statement in the transaction. Rejects once the transaction is over. */
  query<R extends pg.QueryResultRow = any>(
    text: string | pg.QueryConfig,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>>;
  /** Runs `fn` in a nested transaction (a savepoint): its failure rolls back only its own work. */
  transaction<T>(fn: (tx: TransactionClient) => Promise<T>): Promise<T>;
  /** Aborted when the transaction's deadline passes or its caller aborts: long work in `fn` can stop early. */
  readonly signal: AbortSignal;
  /** The underlying client, for APIs that need one (cursors, COPY). Statements sent through it bypass the deadline. */
  readonly client: pg.Client;
}

export interface TransactionHost {
  /** Rate limit and circuit breaker: throws when the call is shed. */
  admit(): CallTicket;
  acquireWithin(
    budgetEnd: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    ticket: CallTicket,
  ): Promise<Lease<pg.Client>>;
  release(lease: Lease<pg.Client>, error?: Error): void;
  acquireTimeoutMs: number;
  cancelGraceMs: number;
  onRetry(event: { attempt: number; delayMs: number; error: unknown }): void;
  onCancel: StatementLimits['onCancel'];
  /** Refuses statements the pool's mode forbids (PgBouncer transaction pooling). */
  checkStatement?: ((config: unknown) => void) | undefined;
}

const ISOLATION_LEVELS: readonly IsolationLevel[] = [
  'read uncommitted',
  'read committed',
  'repeatable read',
  'serializable',
];
const RETRY_BACKOFF = { initialDelayMs: 10, maxDelayMs: 1_000 };

/** The statement that opens the transaction, from validated options. */
function beginStatement(options: TransactionOptions): string {
  let text = 'BEGIN';
  if (options.isolation !== undefined) {
    text += ` ISOLATION LEVEL ${enumOption('isolation', options.isolation, 'read committed', ISOLATION_LEVELS).toUpperCase()}`;
  }
  if (options.readOnly) text += ' READ ONLY';
  if (options.deferrable) text += ' DEFERRABLE';
  return text;
}

function retryLimit(retry: TransactionOptions['retry']): number {
  if (retry === false) return 0;
  return integerOption('retry', retry, 3, 0, 100);
}

/** COMMIT answered ROLLBACK: a statement in the transaction failed and `fn` carried on regardless. */
class RolledBack extends Error {
  constructor() {
    super('COMMIT rolled the transaction back: a statement in it had failed');
  }
}

export async function runTransaction<T>(
  host: TransactionHost,
  fn: (tx: TransactionClient) => Promise<T>,
  options: TransactionOptions = {},
): Promise<T> {
  if (typeof fn !== 'function') throw new InvalidOptionError('fn', `got ${typeof fn}, expected a function`);
  const begin = beginStatement(options);
  const maxRetries = retryLimit(options.retry);
  const timeoutMs = options.timeoutMs;
  const reportedTimeoutMs = timeoutMs ?? host.acquireTimeoutMs;
  const budgetEnd = performance.now() + reportedTimeoutMs;
  const deadline = timeoutMs === undefined ? Number.POSITIVE_INFINITY : budgetEnd;

  const ticket = host.admit();
  for (let attempt = 1; ; attempt++) {
    const lease = await host.acquireWithin(budgetEnd, reportedTimeoutMs, options.signal, ticket);
    const run = new Run(lease.connection, host.checkStatement, {
      deadline,
      timeoutMs: reportedTimeoutMs,
      signal: options.signal,
      cancelGraceMs: host.cancelGraceMs,
      onCancel: host.onCancel,
    });
    let commitSent = false;
    try {
      await run.statement(begin);
      const result = await run.race(fn(run.client));
      run.close();
      commitSent = true;
      const commit = await run.statement('COMMIT', true);
      // COMMIT of a transaction in which a statement failed answers ROLLBACK, without an error.
      if (commit.command === 'ROLLBACK') throw new RolledBack();
      run.dispose();
      host.release(lease);
      return result;
    } catch (caught) {
      run.close();
      run.dispose();
      const error = caught instanceof RolledBack ? (run.lastStatementError ?? caught) : caught;
      const recovery = recoveryOf(error);
      if (recovery !== undefined || run.interruption !== undefined) {
        // Deadline or abort: the connection goes back (rolled back on release) once any cancelled
        // statement is accounted for. Never re-run: the caller has given up.
        const settleThenRelease = recovery ?? Promise.resolve(true);
        void settleThenRelease.then((healthy) => host.release(lease, healthy ? undefined : (error as Error)));
        throw run.interruption ?? error;
      }
      const lost = isConnectionBroken(error) || !run.connectionUsable();
      if (lost) {
        host.release(lease, error as Error);
        if (commitSent) throw new OutcomeUnknownError(error);
      } else {
        // A SQL error or an error of fn's own: the release rolls the transaction back.
        host.release(lease);
      }
      const retryable = lost || isTransactionRetryable(error);
      if (!retryable || attempt > maxRetries) throw error;
      const delayMs = Math.min(fullJitterDelay(attempt, RETRY_BACKOFF), budgetEnd - performance.now());
      if (delayMs < 0) throw error;
      host.onRetry({ attempt, delayMs, error });
      await pause(delayMs, options.signal);
    }
  }
}

/** One run of `fn`: its statements, savepoints, deadline and interruption. */
class Run {
  readonly client: TransactionClient;
  /** Set when the deadline passed or the caller aborted while `fn` was busy with something else. */
  interruption: Error | undefined;
  lastStatementError: unknown;
  readonly #connection: pg.Client;
  readonly #limits: StatementLimits;
  readonly #controller = new AbortController();
  readonly #cleanup: () => void;
  #closed = false;
  #savepoints = 0;

  readonly #checkStatement: ((config: unknown) => void) | undefined;

  constructor(
    connection: pg.Client,
    checkStatement: ((config: unknown) => void) | undefined,
    limits: StatementLimits,
  ) {
    this.#checkStatement = checkStatement;
    this.#connection = connection;
    const outer = limits.signal;
    this.#limits = { ...limits, signal: this.#controller.signal };
    const interrupt = (error: Error) => {
      if (this.interruption !== undefined || this.#closed) return;
      this.interruption = error;
      this.#controller.abort(error);
    };
    const onAbort = () => interrupt(new AbortedError('The transaction', outer?.reason));
    if (outer?.aborted) onAbort();
    else outer?.addEventListener('abort', onAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    if (limits.deadline !== Number.POSITIVE_INFINITY) {
      timer = setTimeout(
        () => interrupt(new TimeoutError('The transaction', limits.timeoutMs, 'it was rolled back')),
        Math.max(0, limits.deadline - performance.now()),
      );
    }
    this.#cleanup = () => {
      if (timer !== undefined) clearTimeout(timer);
      outer?.removeEventListener('abort', onAbort);
    };
    this.client = this.#makeClient();
  }

  /** No more statements from `fn` (it returned, threw, or the transaction gave up on it). */
  close(): void {
    this.#closed = true;
  }

  dispose(): void {
    this.#cleanup();
  }

  connectionUsable(): boolean {
    return (this.#connection as unknown as { _queryable?: boolean })._queryable !== false;
  }

  /** Settles with `work`, or rejects as soon as the transaction is interrupted. */
  race<T>(work: Promise<T>): Promise<T> {
    const signal = this.#controller.signal;
    if (signal.aborted) {
      work.catch(() => undefined);
      return Promise.reject(signal.reason);
    }
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      work.then(
        (value) => {
          signal.removeEventListener('abort', onAbort);
          resolve(value);
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      );
    });
  }

  /** A statement of the transaction's own (BEGIN, COMMIT, SAVEPOINT...), under the same limits. */
  statement(text: string, afterClose = false): Promise<pg.QueryResult> {
    if (this.#closed && !afterClose) return Promise.reject(new Error('The transaction is over'));
    return runStatement(this.#connection, text, undefined, this.#limits);
  }

  #makeClient(depth = 0): TransactionClient {
    const run = this;
    return {
      signal: this.#controller.signal,
      client: this.#connection,
      async query(text, values) {
        if (run.#closed) throw new Error('The transaction is over: statements after it ended are refused');
        if (run.interruption) throw run.interruption;
        // Inside a transaction SET LOCAL is the safe form; a plain SET would outlive it.
        run.#checkStatement?.(text);
        try {
          return await runStatement(run.#connection, text, values, run.#limits);
        } catch (error) {
          run.lastStatementError = error;
          throw error;
        }
      },
      async transaction(fn) {
        const name = `steadfast_sp_${depth + 1}_${++run.#savepoints}`;
        await this.query(`SAVEPOINT ${name}`);
        try {
          const result = await fn(run.#makeClient(depth + 1));
          await this.query(`RELEASE SAVEPOINT ${name}`);
          return result;
        } catch (error) {
          // Only this level's work is undone; the outer transaction can carry on.
          if (run.connectionUsable() && !run.interruption) await this.query(`ROLLBACK TO SAVEPOINT ${name}`);
          throw error;
        }
      },
    } as TransactionClient;
  }
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortedError('The transaction', signal.reason));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AbortedError('The transaction', signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
