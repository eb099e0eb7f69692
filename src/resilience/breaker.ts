/**
 * A circuit breaker for "the database is unreachable".
 *
 * While the database cannot be reached, every caller would otherwise wait out its whole acquire deadline
 * and the pool would keep dialling. An open breaker fails those calls at once with `CircuitOpenError`
 * (which says when to come back) and, after `openMs`, lets exactly one probe through; the probe's outcome
 * closes the breaker or opens it for another `openMs`.
 *
 * The breaker does not judge errors: the caller reports only the outcomes that say something about
 * reachability (a refused connection, a connect timeout), never a syntax error or a unique violation.
 *
 * Design points:
 * - No timers. `open` becomes `half-open` when someone next looks (`state`, `acquirePermit`,
 *   `snapshot`), so an idle breaker costs nothing and never holds the process open.
 * - Opening needs `failureThreshold` consecutive failures that also span `minOutageMs`, so a short blip
 *   that retries absorb never trips it; or a failure ratio over a sliding window, for a database that
 *   fails often without ever failing many times in a row.
 * - The sliding window is a ring of 10 time buckets: fixed memory whatever the load.
 * - The closed state is the hot path: `acquirePermit` returns one shared frozen permit and `succeed`
 *   resets a counter (plus one bucket increment when the rate rule is on). Nothing is allocated per call.
 *   A new shared permit is made each time the breaker opens, so a permit from before an outage is
 *   recognisably stale when its operation finally fails.
 * - Only the half-open probe is a distinct object. It carries a lease (`probeTimeoutMs`): a caller that
 *   drops its probe without reporting cannot keep everyone else out for good.
 */
import { durationOption, integerOption, suggest } from '../config/validate.js';
import type { Clock } from '../engine/clock.js';
import { TypedEmitter } from '../engine/emitter.js';
import { CircuitOpenError, InvalidOptionError } from '../errors.js';

/** Options of {@link CircuitBreaker}. Every field is optional; `resolveBreakerOptions` fills in defaults. */
export interface BreakerOptions {
  /**
   * Consecutive failures (no success in between) that can open the breaker, together with
   * `minOutageMs`. An integer >= 1. Default 5.
   */
  failureThreshold?: number;
  /**
   * The consecutive failures must also span at least this long, in ms (from the first failure of the
   * streak to the one that opens it), so a blip that retries absorb never opens the breaker. 0 lets the
   * threshold alone decide. Default 5000.
   */
  minOutageMs?: number;
  /**
   * Length of the sliding window of the rate rule, in ms. It is kept as 10 buckets of `windowMs / 10`,
   * so outcomes leave the window one bucket at a time and the window covers between 90% and 100% of
   * `windowMs`. At least 10. Default 10000.
   */
  windowMs?: number;
  /**
   * Outcomes (successes plus failures) the window must hold before the rate rule may open the breaker,
   * so a handful of calls cannot trip it. An integer >= 1. Default 20.
   */
  minThroughput?: number;
  /**
   * Failure ratio (failures / outcomes in the window, from 0 to 1) at or above which the rate rule opens
   * the breaker. 0 turns the rate rule off (only the consecutive rule remains). Default 0.5.
   */
  failureRatio?: number;
  /** How long the breaker stays open before it lets one probe through (half-open), in ms. Default 5000. */
  openMs?: number;
  /**
   * How long a half-open probe may stay unreported, in ms, before another caller may probe instead.
   * Guards against a probe whose caller vanished without calling `succeed`, `fail` or `abandon`.
   * Default 30000.
   */
  probeTimeoutMs?: number;
}

/** Option values with every default filled in. */
export type ResolvedBreakerOptions = Required<BreakerOptions>;

/**
 * `closed`: calls go through. `open`: calls fail fast with `CircuitOpenError`. `half-open`: `openMs` has
 * passed and one probe may go through to test the database.
 */
export type BreakerState = 'closed' | 'open' | 'half-open';

/** A point-in-time view of a breaker, for metrics and health endpoints. */
export interface BreakerSnapshot {
  state: BreakerState;
  /** Failures reported since the last success (informational; it keeps counting while open). */
  consecutiveFailures: number;
  /** `clock.now()` when the breaker last opened; `undefined` while closed. */
  openedAt: number | undefined;
  /**
   * ms until a probe is allowed: the rest of `openMs` while open, 0 when closed or half-open (in
   * half-open a probe may go now, or one is already out and its outcome is imminent).
   */
  retryAfterMs: number;
  /** The last failure reported (kept after the breaker closes, for diagnosis); `undefined` if none yet. */
  lastFailure: unknown;
  /** How many times the breaker has opened (from closed, or again after a failed probe). */
  opens: number;
}

/** Payload of the `stateChange` event. */
export interface BreakerStateChange {
  from: BreakerState;
  to: BreakerState;
  /** The failure that opened the breaker for a change to `open`; `undefined` for the other changes. */
  cause: unknown;
}

/** Events of {@link CircuitBreaker}. */
export interface BreakerEvents {
  /**
   * Emitted on every transition: closed → open, open → half-open (when observed, see
   * {@link CircuitBreaker.state}), half-open → closed, half-open → open, and open → closed (a success
   * reported while open). Listeners run synchronously after the state has changed.
   */
  stateChange: BreakerStateChange;
}

/**
 * Permission to run one operation, from {@link CircuitBreaker.acquirePermit}. Report its outcome with
 * exactly one of `succeed`, `fail` or `abandon`. Opaque apart from `probe`.
 */
export type Permit = {
  /** True for the single half-open probe whose outcome decides whether the breaker closes. */
  readonly probe: boolean;
};

/** The half-open probe: a distinct object, so a second report of it can be recognised and ignored. */
class ProbePermit implements Permit {
  readonly probe = true;
  /** Set by the first report; later reports are ignored. */
  reported = false;
}

/** Buckets of the rate window. Ten keeps the window's granularity at 10% of its length in fixed memory. */
const WINDOW_BUCKETS = 10;

/** Smallest `windowMs`: one millisecond per bucket. */
const MIN_WINDOW_MS = WINDOW_BUCKETS;

const breakerDefaults: ResolvedBreakerOptions = {
  failureThreshold: 5,
  minOutageMs: 5_000,
  windowMs: 10_000,
  minThroughput: 20,
  failureRatio: 0.5,
  openMs: 5_000,
  probeTimeoutMs: 30_000,
};

const BREAKER_KEYS: ReadonlySet<string> = new Set(Object.keys(breakerDefaults));

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value);
  return typeof value;
}

/**
 * Checks that `options` is a plain options object with no unknown keys: a misspelt key would otherwise
 * be silently replaced by its default.
 */
function checkOptionObject(name: string, options: unknown, known: ReadonlySet<string>): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidOptionError(name, `got ${show(options)}, expected an object of options or false`);
  }
  for (const key of Object.keys(options)) {
    if (!known.has(key)) {
      const hint = suggest(key, known);
      throw new InvalidOptionError(
        `${name}.${key}`,
        `unknown option${hint === undefined ? '' : `; did you mean ${hint}?`}`,
      );
    }
  }
}

/**
 * Validates breaker options and fills in defaults.
 *
 * @param options - `false` turns the breaker off; `undefined` or `{}` gives every default.
 * @param name - the option's name in the caller's configuration, used in error messages
 *   (`circuitBreaker.failureThreshold`). Default `'circuitBreaker'`.
 * @returns the resolved options, or `false` when the breaker is off.
 * @throws InvalidOptionError naming the option, the bad value and the allowed range, for a value of the
 *   wrong type or out of range, an unknown key, or `options` that is neither an object nor `false`.
 */
export function resolveBreakerOptions(
  options: BreakerOptions | false | undefined,
  name = 'circuitBreaker',
): ResolvedBreakerOptions | false {
  if (options === false) return false;
  if (options === undefined) return { ...breakerDefaults };
  checkOptionObject(name, options, BREAKER_KEYS);
  const d = breakerDefaults;
  const ratio = options.failureRatio;
  if (
    ratio !== undefined &&
    (typeof ratio !== 'number' || !Number.isFinite(ratio) || ratio < 0 || ratio > 1)
  ) {
    throw new InvalidOptionError(
      `${name}.failureRatio`,
      `got ${show(ratio)}, expected a ratio from 0 to 1 (0 turns the rate rule off)`,
    );
  }
  return {
    failureThreshold: integerOption(
      `${name}.failureThreshold`,
      options.failureThreshold,
      d.failureThreshold,
      1,
    ),
    minOutageMs: durationOption(`${name}.minOutageMs`, options.minOutageMs, d.minOutageMs, 0),
    windowMs: durationOption(`${name}.windowMs`, options.windowMs, d.windowMs, MIN_WINDOW_MS),
    minThroughput: integerOption(`${name}.minThroughput`, options.minThroughput, d.minThroughput, 1),
    failureRatio: ratio ?? d.failureRatio,
    openMs: durationOption(`${name}.openMs`, options.openMs, d.openMs, 0),
    probeTimeoutMs: durationOption(`${name}.probeTimeoutMs`, options.probeTimeoutMs, d.probeTimeoutMs, 1),
  };
}

/**
 * A circuit breaker that counts the outcomes it is told about and fails calls fast while the database is
 * unreachable. See the module comment for the rules.
 *
 * Usage: `const permit = breaker.acquirePermit()` (throws `CircuitOpenError` while open), run the
 * operation, then `breaker.succeed(permit)`, `breaker.fail(permit, error)` for a reachability failure, or
 * `breaker.abandon(permit)` when the operation ended for a reason that says nothing about the database.
 */
export class CircuitBreaker {
  /** `stateChange` on every transition. */
  readonly events = new TypedEmitter<BreakerEvents>();

  readonly #options: ResolvedBreakerOptions;
  readonly #clock: Clock;
  /** False when `failureRatio` is 0: successes then skip the window entirely. */
  readonly #rateRule: boolean;
  readonly #bucketMs: number;

  /** The stored state; `open` may be stale (past `openMs`) until {@link #observe} runs. */
  #state: BreakerState = 'closed';
  /**
   * The permit every caller gets while closed. Replaced each time the breaker opens, so any other
   * non-probe permit is from an earlier closed period.
   */
  #closedPermit: Permit = Object.freeze({ probe: false });
  #consecutiveFailures = 0;
  /** `clock.now()` at the first failure of the current streak; meaningful while the streak is > 0. */
  #streakStartedAt = 0;
  #openedAt: number | undefined;
  #lastFailure: unknown;
  #opens = 0;
  /** The half-open probe that is out, if any. */
  #probe: ProbePermit | undefined;
  /** When the outstanding probe's lease ends and another caller may probe. */
  #probeLeaseEndsAt = 0;

  // The rate window: a ring of buckets, the newest at #headIndex covering [#headEpoch * #bucketMs, +#bucketMs).
  readonly #successes = new Float64Array(WINDOW_BUCKETS);
  readonly #failures = new Float64Array(WINDOW_BUCKETS);
  #headIndex = 0;
  #headEpoch = 0;
  /** End of the head bucket, so the hot path compares once instead of dividing. */
  #headEndsAt = 0;

  /**
   * @param options - see {@link BreakerOptions}; `undefined` gives every default.
   * @param clock - time source; the breaker sets no timers.
   * @throws InvalidOptionError for a bad option.
   */
  constructor(options: BreakerOptions | undefined, clock: Clock) {
    // `false` is not accepted here, so the result is never false.
    this.#options = resolveBreakerOptions(options ?? {}) as ResolvedBreakerOptions;
    this.#clock = clock;
    this.#rateRule = this.#options.failureRatio > 0;
    this.#bucketMs = this.#options.windowMs / WINDOW_BUCKETS;
    this.#resetWindow(clock.now());
  }

  /**
   * The current state. Reading it turns `open` into `half-open` once `openMs` has passed (emitting
   * `stateChange`), which is how the breaker does without timers.
   */
  get state(): BreakerState {
    if (this.#state === 'open') this.#observe(this.#clock.now());
    return this.#state;
  }

  /**
   * Asks to run one operation.
   *
   * Closed: returns the shared closed-state permit. Open: throws. Half-open: the first caller (or the
   * first after the outstanding probe's lease of `probeTimeoutMs` ran out) gets a permit with
   * `probe: true`; everyone else is refused until the probe reports.
   *
   * @returns a permit to report with `succeed`, `fail` or `abandon`.
   * @throws CircuitOpenError while open (`retryAfterMs` is the rest of `openMs`) and while a probe is out
   *   (`retryAfterMs` 0); its `cause` is the last failure reported.
   */
  acquirePermit(): Permit {
    if (this.#state === 'closed') return this.#closedPermit;
    const now = this.#clock.now();
    if (this.#state === 'open') {
      const remaining = (this.#openedAt ?? now) + this.#options.openMs - now;
      if (remaining > 0) throw new CircuitOpenError(remaining, this.#lastFailure);
      this.#transition('half-open', undefined);
      // A stateChange listener may have taken the probe or closed the breaker: decide afresh.
      return this.acquirePermit();
    }
    if (this.#probe !== undefined && now < this.#probeLeaseEndsAt) {
      throw new CircuitOpenError(0, this.#lastFailure);
    }
    const probe = new ProbePermit();
    this.#probe = probe;
    this.#probeLeaseEndsAt = now + this.#options.probeTimeoutMs;
    return probe;
  }

  /**
   * Reports that the operation of `permit` succeeded. The probe's success closes the breaker; so does
   * the success of any earlier permit while open or half-open, since the database evidently answered.
   * A probe reported a second time is ignored. The shared closed-state permit has no identity per call,
   * so the caller must report it once; a second report counts as a second success.
   */
  succeed(permit: Permit): void {
    if (permit === this.#closedPermit) {
      // The hot path: the breaker is closed (the current closed permit is only handed out while closed).
      this.#consecutiveFailures = 0;
      if (this.#rateRule) this.#countSuccess(this.#clock.now());
      return;
    }
    if (permit instanceof ProbePermit) {
      if (permit.reported) return;
      permit.reported = true;
      if (this.#probe === permit) this.#probe = undefined;
    }
    this.recordSuccess();
  }

  /**
   * Reports that the operation of `permit` failed because the database could not be reached.
   *
   * While closed, counts toward opening. The probe's failure opens the breaker again for `openMs`. A
   * permit from before the breaker last opened is stale: while closed it is ignored (it describes the
   * outage already acted on); otherwise it only updates the last failure. A probe reported a second time,
   * or superseded after its lease ran out, does not reopen the breaker.
   *
   * @param error - the failure; it becomes the `cause` of later `CircuitOpenError`s.
   */
  fail(permit: Permit, error: unknown): void {
    if (permit === this.#closedPermit) {
      this.#failClosed(error, this.#clock.now());
      return;
    }
    if (permit instanceof ProbePermit) {
      if (permit.reported) return;
      permit.reported = true;
      if (this.#probe === permit) {
        this.#probe = undefined;
        this.#lastFailure = error;
        this.#consecutiveFailures++;
        this.#open(error, this.#clock.now());
        return;
      }
    }
    if (this.#state !== 'closed') {
      this.#lastFailure = error;
      this.#consecutiveFailures++;
    }
  }

  /**
   * Records a success observed without a permit (a background connection attempt of the pool). While
   * closed it resets the failure streak and counts in the window; while open or half-open it closes the
   * breaker, since the database evidently answered.
   */
  recordSuccess(): void {
    if (this.#state === 'closed') {
      this.#consecutiveFailures = 0;
      if (this.#rateRule) this.#countSuccess(this.#clock.now());
      return;
    }
    this.#close();
  }

  /**
   * Records a reachability failure observed without a permit. While closed it counts toward opening
   * exactly like `fail`. While open or half-open it only updates the last failure: the open period
   * already promised its `retryAfterMs`, and in half-open the probe decides.
   *
   * @param error - the failure; it becomes the `cause` of later `CircuitOpenError`s.
   */
  recordFailure(error: unknown): void {
    if (this.#state === 'closed') {
      this.#failClosed(error, this.#clock.now());
      return;
    }
    this.#lastFailure = error;
    this.#consecutiveFailures++;
  }

  /**
   * Releases a permit whose operation ended for a reason that says nothing about the database (the
   * caller aborted, the statement had a SQL error). Nothing is counted; an abandoned probe frees the
   * half-open slot at once, so the next caller probes instead. Ignored for a permit already reported.
   */
  abandon(permit: Permit): void {
    if (!(permit instanceof ProbePermit) || permit.reported) return;
    permit.reported = true;
    if (this.#probe === permit) this.#probe = undefined;
  }

  /** The current state and counters. Like {@link state}, it first turns an expired `open` into `half-open`. */
  snapshot(): BreakerSnapshot {
    const now = this.#clock.now();
    if (this.#state === 'open') this.#observe(now);
    const retryAfterMs =
      this.#state === 'open' ? Math.max(0, (this.#openedAt ?? now) + this.#options.openMs - now) : 0;
    return {
      state: this.#state,
      consecutiveFailures: this.#consecutiveFailures,
      openedAt: this.#openedAt,
      retryAfterMs,
      lastFailure: this.#lastFailure,
      opens: this.#opens,
    };
  }

  /** Turns `open` into `half-open` once `openMs` has passed. */
  #observe(now: number): void {
    if ((this.#openedAt ?? now) + this.#options.openMs <= now) this.#transition('half-open', undefined);
  }

  #failClosed(error: unknown, now: number): void {
    this.#lastFailure = error;
    if (this.#consecutiveFailures === 0) this.#streakStartedAt = now;
    this.#consecutiveFailures++;
    const o = this.#options;
    if (this.#consecutiveFailures >= o.failureThreshold && now - this.#streakStartedAt >= o.minOutageMs) {
      this.#open(error, now);
      return;
    }
    if (this.#rateRule) {
      this.#rotate(now);
      this.#failures[this.#headIndex]++;
      if (this.#rateExceeded()) this.#open(error, now);
    }
  }

  #rateExceeded(): boolean {
    let failures = 0;
    let total = 0;
    for (let i = 0; i < WINDOW_BUCKETS; i++) {
      failures += this.#failures[i];
      total += this.#failures[i] + this.#successes[i];
    }
    return total >= this.#options.minThroughput && failures / total >= this.#options.failureRatio;
  }

  #open(cause: unknown, now: number): void {
    const from = this.#state;
    this.#state = 'open';
    this.#openedAt = now;
    this.#opens++;
    this.#probe = undefined;
    // Permits handed out before this point are now recognisably stale.
    this.#closedPermit = Object.freeze({ probe: false });
    this.#transitioned(from, cause);
  }

  #close(): void {
    this.#probe = undefined;
    this.#consecutiveFailures = 0;
    this.#openedAt = undefined;
    // The outage's failures must not count against the fresh closed period.
    this.#resetWindow(this.#clock.now());
    this.#transition('closed', undefined);
  }

  #transition(to: BreakerState, cause: unknown): void {
    const from = this.#state;
    this.#state = to;
    this.#transitioned(from, cause);
  }

  #transitioned(from: BreakerState, cause: unknown): void {
    // Emitted last, with every field already updated, so a listener that calls back in sees a consistent breaker.
    this.events.emit('stateChange', { from, to: this.#state, cause });
  }

  #countSuccess(now: number): void {
    if (now >= this.#headEndsAt) this.#rotate(now);
    this.#successes[this.#headIndex]++;
  }

  /** Moves the head to the bucket that holds `now`, emptying the buckets that fell out of the window. */
  #rotate(now: number): void {
    const epoch = Math.floor(now / this.#bucketMs);
    const steps = epoch - this.#headEpoch;
    // A clock that went backwards keeps counting into the head bucket.
    if (steps <= 0) return;
    if (steps >= WINDOW_BUCKETS) {
      this.#successes.fill(0);
      this.#failures.fill(0);
    } else {
      for (let i = 0; i < steps; i++) {
        this.#headIndex = (this.#headIndex + 1) % WINDOW_BUCKETS;
        this.#successes[this.#headIndex] = 0;
        this.#failures[this.#headIndex] = 0;
      }
    }
    this.#headEpoch = epoch;
    this.#headEndsAt = (epoch + 1) * this.#bucketMs;
  }

  #resetWindow(now: number): void {
    this.#successes.fill(0);
    this.#failures.fill(0);
    this.#headEpoch = Math.floor(now / this.#bucketMs);
    this.#headEndsAt = (this.#headEpoch + 1) * this.#bucketMs;
  }
}
