/**
 * Runs one statement on a held connection under a deadline and an AbortSignal.
 *
 * When either fires while the statement runs, the caller is answered at once with a typed error
 * (`TimeoutError` or `AbortedError`), the statement is cancelled on the server (CancelRequest), and the
 * connection is reused only if the statement then comes back within a grace period: otherwise its state
 * is unknown (a frozen network, a server that ignores the cancel) and it is destroyed. Whoever holds the
 * connection learns which through {@link recoveryOf}.
 */
import type pg from 'pg';
import { AbortedError, TimeoutError } from '../errors.js';
import { sendCancelRequest } from './cancel.js';

export interface StatementLimits {
  /** `performance.now()` by which the statement must finish; Infinity for none. */
  deadline: number;
  /** The whole call's timeout, for the error message. */
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** How long to wait for the CancelRequest to be delivered, and then for the statement to come back. */
  cancelGraceMs: number;
  /** Told once an interrupted statement's fate is known. */
  onCancel?: (event: { reason: 'timeout' | 'abort'; delivered: boolean; healthy: boolean }) => void;
}

/** For an error raised by {@link runStatement} on interruption: resolves to whether the connection can be reused. */
const recoveries = new WeakMap<object, Promise<boolean>>();

export function recoveryOf(error: unknown): Promise<boolean> | undefined {
  return typeof error === 'object' && error !== null ? recoveries.get(error) : undefined;
}

export function runStatement(
  client: pg.Client,
  config: unknown,
  values: unknown,
  limits: StatementLimits,
): Promise<pg.QueryResult> {
  const { deadline, signal } = limits;
  const query = client.query(
    config as pg.QueryConfig,
    values as unknown[] | undefined,
  ) as Promise<pg.QueryResult>;
  if (deadline === Number.POSITIVE_INFINITY && signal === undefined) return query;
  return new Promise<pg.QueryResult>((resolve, reject) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const cleanup = () => {
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const interrupt = (reason: 'timeout' | 'abort') => {
      if (settled) return;
      cleanup();
      const error =
        reason === 'timeout'
          ? new TimeoutError(
              'The statement',
              limits.timeoutMs,
              'it was cancelled on the server and may or may not have run',
            )
          : new AbortedError(
              'The statement (cancelled on the server; it may or may not have run)',
              signal?.reason,
            );
      recoveries.set(error, recover(client, query, reason, limits));
      reject(error);
    };
    const onAbort = () => interrupt('abort');
    if (signal?.aborted) {
      // Already sent: pg writes the statement synchronously when the connection is free.
      interrupt('abort');
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    if (deadline !== Number.POSITIVE_INFINITY) {
      timer = setTimeout(() => interrupt('timeout'), Math.max(0, deadline - performance.now()));
    }
    query.then(
      (result) => {
        if (settled) return;
        cleanup();
        resolve(result);
      },
      (error: unknown) => {
        if (settled) return;
        cleanup();
        reject(error);
      },
    );
  });
}

async function recover(
  client: pg.Client,
  query: Promise<unknown>,
  reason: 'timeout' | 'abort',
  limits: StatementLimits,
): Promise<boolean> {
  const returned = query.then(
    () => true,
    (error: unknown) => (error as { code?: unknown })?.code === '57014' || isStatementError(error),
  );
  const delivered = await sendCancelRequest(client, limits.cancelGraceMs);
  let timer: NodeJS.Timeout | undefined;
  const healthy = await Promise.race([
    returned,
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), limits.cancelGraceMs);
    }),
  ]);
  clearTimeout(timer);
  limits.onCancel?.({ reason, delivered, healthy });
  return healthy;
}

/** An ERROR from the server for the statement itself leaves the session usable. */
function isStatementError(error: unknown): boolean {
  return (error as { severity?: unknown })?.severity === 'ERROR';
}
