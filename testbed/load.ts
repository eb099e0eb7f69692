/**
 * An open-loop load generator for fault tests, the demo and benchmarks.
 *
 * Open loop means requests start on a fixed schedule whatever happens to earlier ones: a slow or stuck
 * system under test does not slow the generator down, so queueing and failures show up the way real
 * traffic would produce them. The schedule is drift-free: request `i` is due at `t0 + i * 1000 / rate`, and
 * every tick starts all requests that are due, so a stalled event loop catches up instead of silently
 * lowering the rate.
 *
 * Times in {@link RequestOutcome} are `performance.now()` readings (milliseconds, monotonic, the same clock
 * for the whole process), so they can be lined up with other events of the same process.
 *
 * @module
 */

export interface LoadOptions {
  /** Requests started per second, on a fixed schedule regardless of completions (open loop). */
  ratePerSec: number;
  durationMs: number;
  /** Runs request number `seq` (0-based); resolves on success, rejects on failure. */
  request: (seq: number) => Promise<unknown>;
  /** Called when each request settles (for live output). */
  onSettle?: (outcome: RequestOutcome) => void;
  /**
   * Stops the schedule early: no request starts after the signal aborts. Requests already started are
   * still awaited (bounded by `settleTimeoutMs`) and reported.
   */
  signal?: AbortSignal;
}

export interface RequestOutcome {
  seq: number;
  /** `performance.now()` when the request started. */
  startedAt: number;
  /** `performance.now()` when it settled (or when the generator stopped waiting for it). */
  endedAt: number;
  ok: boolean;
  error?: unknown;
}

export interface LoadReport {
  sent: number;
  succeeded: number;
  failed: number;
  /** failures grouped by error code (err.code, or err.name, or 'unknown') */
  failuresByCode: Record<string, number>;
  /** In seq order. */
  outcomes: RequestOutcome[];
  /**
   * Latency percentiles (nearest rank) over every request, successful or not: the time its caller waited
   * for an answer. An unsettled request counts with the time it was given.
   */
  latencyMs: { p50: number; p95: number; p99: number; max: number };
  /** The seq numbers of requests that succeeded (acknowledged), ascending. */
  acknowledged: number[];
}

/** The code given to requests that had not settled when the generator stopped waiting. */
export const UNSETTLED = 'UNSETTLED';

/** The error recorded for a request that had not settled within `settleTimeoutMs`. */
export class UnsettledError extends Error {
  readonly code = UNSETTLED;

  constructor(settleTimeoutMs: number) {
    super(`The request had not settled ${settleTimeoutMs}ms after the last request was started`);
    this.name = 'UnsettledError';
  }
}

const DEFAULT_SETTLE_TIMEOUT_MS = 60_000;

/**
 * Starts requests at the given rate for the duration, then waits for all of them to settle (bounded by
 * `settleTimeoutMs`, default 60000, counted from the end of the schedule, after which unsettled ones count
 * as failed with code 'UNSETTLED').
 *
 * Requests are numbered from 0; request `i` is due at `i * 1000 / ratePerSec` ms after the start, and
 * every request due before `durationMs` is started, so a run sends `ceil(durationMs * ratePerSec / 1000)`
 * requests (unless aborted through `signal`).
 */
export async function runOpenLoop(options: LoadOptions & { settleTimeoutMs?: number }): Promise<LoadReport> {
  const { ratePerSec, durationMs, request, onSettle, signal } = options;
  const settleTimeoutMs = options.settleTimeoutMs ?? DEFAULT_SETTLE_TIMEOUT_MS;
  if (!(Number.isFinite(ratePerSec) && ratePerSec > 0)) {
    throw new RangeError(`ratePerSec must be a positive finite number, got ${ratePerSec}`);
  }
  if (!(Number.isFinite(durationMs) && durationMs >= 0)) {
    throw new RangeError(`durationMs must be a non-negative finite number, got ${durationMs}`);
  }
  if (!(Number.isFinite(settleTimeoutMs) && settleTimeoutMs >= 0)) {
    throw new RangeError(`settleTimeoutMs must be a non-negative finite number, got ${settleTimeoutMs}`);
  }

  const intervalMs = 1000 / ratePerSec;
  const total = Math.ceil((durationMs * ratePerSec) / 1000 - 1e-9);
  const outcomes: RequestOutcome[] = [];
  /** Requests in flight: seq to start time. */
  const pending = new Map<number, number>();
  let allSettled: (() => void) | undefined;
  let giveUp = false;

  const settle = (outcome: RequestOutcome): void => {
    if (giveUp || !pending.delete(outcome.seq)) return;
    outcomes[outcome.seq] = outcome;
    safeCall(onSettle, outcome);
    if (pending.size === 0) allSettled?.();
  };

  const start = (seq: number): void => {
    const startedAt = performance.now();
    pending.set(seq, startedAt);
    let promise: Promise<unknown>;
    try {
      promise = Promise.resolve(request(seq));
    } catch (error) {
      promise = Promise.reject(error);
    }
    promise.then(
      () => settle({ seq, startedAt, endedAt: performance.now(), ok: true }),
      (error: unknown) => settle({ seq, startedAt, endedAt: performance.now(), ok: false, error }),
    );
  };

  // The schedule: start everything that is due, then sleep until the next due time.
  let sent = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const stop = (): void => {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', stop);
      resolve();
    };
    const tick = (): void => {
      timer = undefined;
      const now = performance.now();
      while (sent < total && t0 + sent * intervalMs <= now && !signal?.aborted) start(sent++);
      if (sent >= total || signal?.aborted) {
        stop();
        return;
      }
      timer = setTimeout(tick, Math.max(0, t0 + sent * intervalMs - performance.now()));
    };
    signal?.addEventListener('abort', stop, { once: true });
    tick();
  });

  // Wait for the stragglers, within bounds.
  if (pending.size > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, settleTimeoutMs);
      allSettled = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  const givenUpAt = performance.now();
  const unsettled = [...pending];
  giveUp = true;
  for (const [seq, startedAt] of unsettled) {
    const outcome: RequestOutcome = {
      seq,
      startedAt,
      endedAt: givenUpAt,
      ok: false,
      error: new UnsettledError(settleTimeoutMs),
    };
    outcomes[seq] = outcome;
    safeCall(onSettle, outcome);
  }
  pending.clear();

  return summarize(outcomes.slice(0, sent));
}

/** Builds the report from outcomes in seq order. */
function summarize(outcomes: RequestOutcome[]): LoadReport {
  const failuresByCode: Record<string, number> = {};
  const acknowledged: number[] = [];
  const latencies: number[] = [];
  for (const outcome of outcomes) {
    latencies.push(outcome.endedAt - outcome.startedAt);
    if (outcome.ok) {
      acknowledged.push(outcome.seq);
    } else {
      const code = errorCodeOf(outcome.error);
      failuresByCode[code] = (failuresByCode[code] ?? 0) + 1;
    }
  }
  latencies.sort((a, b) => a - b);
  return {
    sent: outcomes.length,
    succeeded: acknowledged.length,
    failed: outcomes.length - acknowledged.length,
    failuresByCode,
    outcomes,
    latencyMs: {
      p50: percentile(latencies, 50),
      p95: percentile(latencies, 95),
      p99: percentile(latencies, 99),
      max: latencies.length > 0 ? latencies[latencies.length - 1]! : 0,
    },
    acknowledged,
  };
}

/** The grouping key of a failure: `err.code`, or `err.name`, or `'unknown'`. */
export function errorCodeOf(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const { code, name } = error as { code?: unknown; name?: unknown };
    if ((typeof code === 'string' && code !== '') || typeof code === 'number') return String(code);
    if (typeof name === 'string' && name !== '') return name;
  }
  return 'unknown';
}

/** Nearest-rank percentile of ascending `sorted`; 0 for an empty list. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/**
 * Compares acknowledged write ids with the ids actually in the table: missing acknowledged writes,
 * duplicates (ids present more than once), and stray ids (present but never acknowledged — allowed for
 * outcome-unknown writes). Each list is ascending and names every id once.
 */
export function verifyWrites(
  acknowledged: number[],
  idsInTable: number[],
): { missing: number[]; duplicates: number[]; unacknowledgedPresent: number[] } {
  const present = new Map<number, number>();
  for (const id of idsInTable) present.set(id, (present.get(id) ?? 0) + 1);
  const acked = new Set(acknowledged);
  const ascending = (a: number, b: number) => a - b;
  const missing = [...acked].filter((id) => !present.has(id)).sort(ascending);
  const duplicates = [...present]
    .filter(([, count]) => count > 1)
    .map(([id]) => id)
    .sort(ascending);
  const unacknowledgedPresent = [...present.keys()].filter((id) => !acked.has(id)).sort(ascending);
  return { missing, duplicates, unacknowledgedPresent };
}

function safeCall(callback: ((outcome: RequestOutcome) => void) | undefined, outcome: RequestOutcome): void {
  if (!callback) return;
  try {
    callback(outcome);
  } catch {
    // A broken progress callback must not distort the measurement.
  }
}
