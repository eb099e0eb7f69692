/**
 * A token bucket: at most `burst` operations at once, then `perSecond` on average.
 *
 * The bucket refills continuously, computed from `clock.now()` whenever it is asked, so it needs no timer
 * and costs nothing while unused. Tokens are fractional: with `perSecond: 10` a token is whole again
 * 100 ms after the last one was taken, not at the next whole second.
 */
import { suggest } from '../config/validate.js';
import type { Clock } from '../engine/clock.js';
import { InvalidOptionError } from '../errors.js';

/** Options of {@link TokenBucket}. */
export interface RateLimitOptions {
  /** Tokens added per second: the sustained rate. A finite number > 0; fractions allowed (0.5 = one every 2 s). */
  perSecond: number;
  /**
   * Bucket size: how many operations may run back to back after a quiet period. A finite number >= 1
   * (a smaller bucket could never hold a whole token). Default `perSecond`, or 1 if `perSecond` is below 1.
   */
  burst?: number;
}

/** Option values with every default filled in. */
export type ResolvedRateLimitOptions = Required<RateLimitOptions>;

const RATE_LIMIT_KEYS: ReadonlySet<string> = new Set(['perSecond', 'burst']);

/**
 * Slack for floating-point error in the refill sum: after waiting exactly `msUntilToken()` the bucket may
 * hold 0.9999999999 tokens, which must count as one.
 */
const EPSILON = 1e-9;

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value);
  return typeof value;
}

/**
 * Validates rate-limit options and fills in defaults.
 *
 * @param options - `false` or `undefined` means no rate limit (there is no sensible default rate).
 * @param name - the option's name in the caller's configuration, used in error messages
 *   (`rateLimit.perSecond`). Default `'rateLimit'`.
 * @returns the resolved options, or `false` when there is no limit.
 * @throws InvalidOptionError naming the option, the bad value and the allowed range, for a missing or bad
 *   `perSecond`, a bad `burst`, an unknown key, or `options` that is neither an object, `false` nor
 *   `undefined`.
 */
export function resolveRateLimit(
  options: RateLimitOptions | false | undefined,
  name = 'rateLimit',
): ResolvedRateLimitOptions | false {
  if (options === false || options === undefined) return false;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidOptionError(name, `got ${show(options)}, expected an object of options or false`);
  }
  for (const key of Object.keys(options)) {
    if (!RATE_LIMIT_KEYS.has(key)) {
      const hint = suggest(key, RATE_LIMIT_KEYS);
      throw new InvalidOptionError(
        `${name}.${key}`,
        `unknown option${hint === undefined ? '' : `; did you mean ${hint}?`}`,
      );
    }
  }
  const { perSecond, burst } = options;
  if (typeof perSecond !== 'number' || !Number.isFinite(perSecond) || perSecond <= 0) {
    throw new InvalidOptionError(`${name}.perSecond`, `got ${show(perSecond)}, expected a finite number > 0`);
  }
  if (burst !== undefined && (typeof burst !== 'number' || !Number.isFinite(burst) || burst < 1)) {
    throw new InvalidOptionError(`${name}.burst`, `got ${show(burst)}, expected a finite number >= 1`);
  }
  return { perSecond, burst: burst ?? Math.max(1, perSecond) };
}

/**
 * A token bucket that starts full. Each operation takes one token; tokens come back at `perSecond`, up to
 * `burst`.
 */
export class TokenBucket {
  /** Tokens added per second. */
  readonly perSecond: number;
  /** Most tokens the bucket holds. */
  readonly burst: number;
  readonly #clock: Clock;
  readonly #msPerToken: number;
  #tokens: number;
  /** `clock.now()` when `#tokens` was last brought up to date. */
  #updatedAt: number;

  /**
   * @param options - rate and burst; see {@link RateLimitOptions}.
   * @param clock - time source; the bucket sets no timers.
   * @throws InvalidOptionError for a bad option.
   */
  constructor(options: RateLimitOptions, clock: Clock) {
    // An options object never resolves to false.
    const resolved = resolveRateLimit(options) as ResolvedRateLimitOptions;
    this.perSecond = resolved.perSecond;
    this.burst = resolved.burst;
    this.#msPerToken = 1000 / resolved.perSecond;
    this.#clock = clock;
    this.#tokens = resolved.burst;
    this.#updatedAt = clock.now();
  }

  /**
   * Takes one token if a whole one is available.
   *
   * @returns true if the operation may go ahead; false if it should be refused (nothing is taken).
   */
  tryTake(): boolean {
    const tokens = this.#refill();
    if (tokens < 1 - EPSILON) return false;
    this.#tokens = Math.max(0, tokens - 1);
    return true;
  }

  /**
   * How long until a whole token is available, in whole milliseconds rounded up, so a caller that waits
   * this long will find one (unless another caller takes it first).
   *
   * @returns 0 if a token is available now, otherwise at least 1.
   */
  msUntilToken(): number {
    const tokens = this.#refill();
    if (tokens >= 1 - EPSILON) return 0;
    // The small subtraction keeps float noise (50.000000000001) from adding a whole millisecond.
    return Math.max(1, Math.ceil((1 - tokens) * this.#msPerToken - 1e-6));
  }

  /** Adds the tokens earned since the last update, capped at `burst`, and returns the new count. */
  #refill(): number {
    const now = this.#clock.now();
    const elapsed = now - this.#updatedAt;
    // A clock that went backwards earns nothing; the next forward step is measured from the later time.
    if (elapsed > 0) {
      this.#tokens = Math.min(this.burst, this.#tokens + elapsed / this.#msPerToken);
      this.#updatedAt = now;
    }
    return this.#tokens;
  }
}
