/**
 * Admission of a call before it asks the engine for a connection: the acquisition rate limit, then the
 * circuit breaker. Also reports each call's first acquisition to the breaker, and feeds it the engine's
 * connection attempts, which are the evidence of whether the database is reachable.
 */
import type pg from 'pg';
import { systemClock } from '../engine/clock.js';
import type { Engine } from '../engine/engine.js';
import { AcquireTimeoutError, InvalidOptionError, RateLimitedError } from '../errors.js';
import {
  type BreakerOptions,
  type BreakerSnapshot,
  type BreakerStateChange,
  CircuitBreaker,
  type Permit,
} from '../resilience/breaker.js';
import { type RateLimitOptions, resolveRateLimit, TokenBucket } from '../resilience/rate-limit.js';

/**
 * The pool's breaker defaults: open only after 10 s of failures with no success in between (short
 * outages are absorbed by retries, which is what callers prefer), no rate rule (a burst of failures
 * that retries will absorb must not open it), and a probe every second while open, so a database
 * that is back is noticed within about a second.
 */
const POOL_BREAKER_DEFAULTS: BreakerOptions = { minOutageMs: 10_000, failureRatio: 0, openMs: 1_000 };

/** Holds a call's permit until its first acquisition settles. */
export interface CallTicket {
  permit: Permit | undefined;
}

export class Admission {
  readonly #breaker: CircuitBreaker | undefined;
  readonly #bucket: TokenBucket | undefined;

  constructor(
    options: { circuitBreaker?: BreakerOptions | false; rateLimit?: RateLimitOptions | false },
    engine: Engine<pg.Client>,
    onBreakerChange: (change: BreakerStateChange) => void,
  ) {
    const rate = resolveRateLimit(options.rateLimit);
    this.#bucket = rate === false ? undefined : new TokenBucket(rate, systemClock);
    const breakerOptions = options.circuitBreaker;
    if (
      breakerOptions !== undefined &&
      breakerOptions !== false &&
      (typeof breakerOptions !== 'object' || breakerOptions === null || Array.isArray(breakerOptions))
    ) {
      throw new InvalidOptionError(
        'circuitBreaker',
        `got ${breakerOptions === null ? 'null' : typeof breakerOptions === 'string' ? JSON.stringify(breakerOptions) : String(breakerOptions)}, expected false or an options object`,
      );
    }
    if (options.circuitBreaker !== false) {
      this.#breaker = new CircuitBreaker(
        { ...POOL_BREAKER_DEFAULTS, ...options.circuitBreaker },
        systemClock,
      );
      const breaker = this.#breaker;
      engine.events.on('connect', () => breaker.recordSuccess());
      engine.events.on('connectError', ({ error, fatal }) => {
        // A refused password says nothing about reachability.
        if (!fatal) breaker.recordFailure(error);
      });
      breaker.events.on('stateChange', onBreakerChange);
    }
  }

  /** Lets a call in or throws `RateLimitedError` / `CircuitOpenError`, at once. */
  admit(): CallTicket {
    if (this.#bucket !== undefined && !this.#bucket.tryTake())
      throw new RateLimitedError(this.#bucket.perSecond);
    return { permit: this.#breaker?.acquirePermit() };
  }

  /** The call got its connection: the database answered. */
  acquired(ticket: CallTicket | undefined): void {
    if (ticket?.permit === undefined) return;
    this.#breaker!.succeed(ticket.permit);
    ticket.permit = undefined;
  }

  /** The call's acquisition failed: a timeout caused by failing connects counts against the database. */
  failed(ticket: CallTicket | undefined, error: unknown): void {
    if (ticket?.permit === undefined) return;
    if (error instanceof AcquireTimeoutError && error.cause !== undefined)
      this.#breaker!.fail(ticket.permit, error.cause);
    else this.#breaker!.abandon(ticket.permit);
    ticket.permit = undefined;
  }

  breakerSnapshot(): BreakerSnapshot | undefined {
    return this.#breaker?.snapshot();
  }
}
