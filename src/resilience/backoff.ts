/**
 * Retry delays: exponential backoff with full jitter.
 *
 * "Full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter") draws each delay uniformly from
 * zero up to the exponential ceiling. Spreading retries over the whole window, rather than around the
 * ceiling, is what stops a fleet of clients that failed together (a database restart, a failover) from
 * reconnecting together and knocking the server over again; the post measured it to need the least total
 * work of the variants compared.
 */

/** Parameters of the exponential ceiling. */
export interface BackoffOptions {
  /** Ceiling of the first retry, in milliseconds. */
  initialDelayMs: number;
  /** Largest ceiling, in milliseconds, however many attempts have failed. */
  maxDelayMs: number;
  /** Growth of the ceiling per attempt. Default 2. */
  multiplier?: number;
}

/**
 * The longest delay Node's timers honour. `setTimeout` treats anything above 2^31 - 1 ms as 1 ms (with a
 * TimeoutOverflowWarning), which would turn a huge backoff into a busy loop.
 */
const MAX_TIMER_DELAY_MS = 2_147_483_647;

const DEFAULT_MULTIPLIER = 2;

/** `value` when it is a number of at least zero (`Infinity` included), otherwise 0. */
function atLeastZero(value: unknown): number {
  return typeof value === 'number' && value >= 0 ? value : 0;
}

/**
 * Delay before retry number `attempt` (1-based): a random integer in
 * [0, min(maxDelayMs, initialDelayMs * multiplier^(attempt - 1))], all values equally likely.
 *
 * The result is always a whole number of milliseconds between 0 and 2^31 - 1 (the largest delay
 * `setTimeout` accepts), never `NaN` or `Infinity`, however large `attempt` is: the ceiling is computed
 * in floating point, where overflow becomes `Infinity` and the `min` with `maxDelayMs` removes it.
 *
 * Out-of-range inputs are repaired instead of rejected, because this runs on the failure path where a
 * throw would hide the original error: an `attempt` below 1 or not a number counts as 1 and a
 * fractional one is rounded down; a negative or non-numeric `initialDelayMs` or `maxDelayMs` counts as 0,
 * and a `maxDelayMs` above 2^31 - 1 (`Infinity` included) counts as 2^31 - 1; a `multiplier` that is not
 * a finite number of at least 1 counts as 2; a `random` result outside [0, 1) is clamped into it.
 *
 * @param attempt - which retry this is: 1 for the first retry after the first failure.
 * @param opts - initial ceiling, maximum ceiling and growth factor.
 * @param random - source of uniform numbers in [0, 1); injectable for tests. Default `Math.random`.
 * @returns the delay in whole milliseconds.
 */
export function fullJitterDelay(
  attempt: number,
  opts: BackoffOptions,
  random: () => number = Math.random,
): number {
  // NaN fails the comparison; Math.floor keeps Infinity, whose ceiling is maxDelayMs like any huge attempt.
  const n = attempt >= 1 ? Math.floor(attempt) : 1;
  const initial = atLeastZero(opts.initialDelayMs);
  const max = Math.min(atLeastZero(opts.maxDelayMs), MAX_TIMER_DELAY_MS);
  const m = opts.multiplier;
  const multiplier = typeof m === 'number' && Number.isFinite(m) && m >= 1 ? m : DEFAULT_MULTIPLIER;

  // multiplier^(n-1) overflows to Infinity for large n, which min() caps. 1 ** Infinity is NaN in
  // JavaScript, hence the special case; initial * growth is then NaN only for 0 * Infinity, a zero ceiling.
  const growth = multiplier === 1 ? 1 : multiplier ** (n - 1);
  const grown = initial * growth;
  const ceiling = Math.floor(Number.isNaN(grown) ? 0 : Math.min(max, grown));

  let r = random();
  if (!(r >= 0)) r = 0; // also catches NaN
  if (r >= 1) r = 1 - Number.EPSILON;
  // floor(r * (ceiling + 1)) gives each integer in [0, ceiling] the same share of [0, 1).
  return Math.min(ceiling, Math.floor(r * (ceiling + 1)));
}
