import { describe, expect, it } from 'vitest';
import { ErrorCodes, InvalidOptionError } from '../../src/errors.js';
import { type RateLimitOptions, resolveRateLimit, TokenBucket } from '../../src/resilience/rate-limit.js';
import { FakeClock } from '../support/fake-clock.js';

function setup(options: RateLimitOptions) {
  const clock = new FakeClock();
  return { clock, bucket: new TokenBucket(options, clock) };
}

/** Takes tokens until refused; returns how many were taken. */
function drain(bucket: TokenBucket): number {
  let taken = 0;
  while (bucket.tryTake()) taken++;
  return taken;
}

describe('resolveRateLimit', () => {
  it('means no limit for false and undefined', () => {
    expect(resolveRateLimit(false)).toBe(false);
    expect(resolveRateLimit(undefined)).toBe(false);
  });

  it('defaults burst to perSecond, and to 1 below one per second', () => {
    expect(resolveRateLimit({ perSecond: 50 })).toEqual({ perSecond: 50, burst: 50 });
    expect(resolveRateLimit({ perSecond: 2.5 })).toEqual({ perSecond: 2.5, burst: 2.5 });
    expect(resolveRateLimit({ perSecond: 0.2 })).toEqual({ perSecond: 0.2, burst: 1 });
    expect(resolveRateLimit({ perSecond: 10, burst: 3 })).toEqual({ perSecond: 10, burst: 3 });
  });

  it.each([
    [{}, 'Invalid option rateLimit.perSecond: got undefined, expected a finite number > 0'],
    [{ perSecond: 0 }, 'Invalid option rateLimit.perSecond: got 0, expected a finite number > 0'],
    [{ perSecond: -5 }, 'Invalid option rateLimit.perSecond: got -5, expected a finite number > 0'],
    [
      { perSecond: Number.POSITIVE_INFINITY },
      'Invalid option rateLimit.perSecond: got Infinity, expected a finite number > 0',
    ],
    [{ perSecond: '10' }, 'Invalid option rateLimit.perSecond: got "10", expected a finite number > 0'],
    [{ perSecond: 10, burst: 0.5 }, 'Invalid option rateLimit.burst: got 0.5, expected a finite number >= 1'],
    [
      { perSecond: 10, burst: Number.NaN },
      'Invalid option rateLimit.burst: got NaN, expected a finite number >= 1',
    ],
    [{ perSecond: 10, brust: 5 }, 'Invalid option rateLimit.brust: unknown option; did you mean burst?'],
    [{ rate: 10 }, 'Invalid option rateLimit.rate: unknown option'],
  ])('rejects %j', (options, message) => {
    let error: unknown;
    try {
      resolveRateLimit(options as RateLimitOptions);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect((error as InvalidOptionError).message).toBe(message);
    expect((error as InvalidOptionError).code).toBe(ErrorCodes.INVALID_OPTION);
  });

  it('rejects a value that is neither an options object nor false', () => {
    expect(() => resolveRateLimit(100 as never)).toThrow(
      'Invalid option rateLimit: got 100, expected an object of options or false',
    );
    expect(() => resolveRateLimit(null as never)).toThrow(
      'Invalid option rateLimit: got null, expected an object of options or false',
    );
  });

  it('names the option as the caller configures it', () => {
    expect(() => resolveRateLimit({ perSecond: 0 }, 'acquireRate')).toThrow(
      'Invalid option acquireRate.perSecond: got 0, expected a finite number > 0',
    );
  });

  it('validates in the constructor', () => {
    expect(() => new TokenBucket({ perSecond: 0 }, new FakeClock())).toThrow(InvalidOptionError);
  });
});

describe('TokenBucket', () => {
  it('starts full and allows a burst of exactly `burst`', () => {
    const { bucket } = setup({ perSecond: 10, burst: 5 });
    expect(bucket.perSecond).toBe(10);
    expect(bucket.burst).toBe(5);
    expect(drain(bucket)).toBe(5);
    expect(bucket.tryTake()).toBe(false);
  });

  it('refills at perSecond: one token every 1000 / perSecond ms', async () => {
    const { clock, bucket } = setup({ perSecond: 10, burst: 1 });
    expect(bucket.tryTake()).toBe(true);
    await clock.advance(99);
    expect(bucket.tryTake()).toBe(false);
    await clock.advance(1);
    expect(bucket.tryTake()).toBe(true);
    expect(bucket.tryTake()).toBe(false);
  });

  it('sustains perSecond over a long run', async () => {
    const { clock, bucket } = setup({ perSecond: 20, burst: 1 });
    let taken = 0;
    for (let t = 0; t < 10_000; t += 5) {
      if (bucket.tryTake()) taken++;
      await clock.advance(5);
    }
    // One at t=0, then one every 50 ms: 200 in 10 s.
    expect(taken).toBe(200);
  });

  it('keeps fractional tokens between calls', async () => {
    const { clock, bucket } = setup({ perSecond: 4, burst: 1 }); // a token every 250 ms
    expect(bucket.tryTake()).toBe(true);
    await clock.advance(100); // 0.4
    expect(bucket.tryTake()).toBe(false);
    await clock.advance(100); // 0.8
    expect(bucket.tryTake()).toBe(false);
    await clock.advance(49); // 0.996
    expect(bucket.tryTake()).toBe(false);
    await clock.advance(1); // 1.0
    expect(bucket.tryTake()).toBe(true);
  });

  it('works below one token per second', async () => {
    const { clock, bucket } = setup({ perSecond: 0.5 });
    expect(bucket.tryTake()).toBe(true);
    expect(bucket.msUntilToken()).toBe(2000);
    await clock.advance(1999);
    expect(bucket.tryTake()).toBe(false);
    await clock.advance(1);
    expect(bucket.tryTake()).toBe(true);
  });

  it('caps the refill at burst', async () => {
    const { clock, bucket } = setup({ perSecond: 10, burst: 3 });
    expect(drain(bucket)).toBe(3);
    await clock.advance(60_000);
    expect(drain(bucket)).toBe(3);
  });

  it('refills a fractional burst to its cap', async () => {
    const { clock, bucket } = setup({ perSecond: 10, burst: 2.5 });
    expect(drain(bucket)).toBe(2); // 0.5 left
    await clock.advance(50); // 1.0
    expect(drain(bucket)).toBe(1);
    await clock.advance(60_000); // capped at 2.5
    expect(drain(bucket)).toBe(2);
    expect(bucket.msUntilToken()).toBe(50);
  });

  it('reports msUntilToken exactly, rounded up to whole milliseconds', async () => {
    const { clock, bucket } = setup({ perSecond: 10, burst: 2 });
    expect(bucket.msUntilToken()).toBe(0);
    drain(bucket);
    expect(bucket.msUntilToken()).toBe(100);
    await clock.advance(30);
    expect(bucket.msUntilToken()).toBe(70);
    await clock.advance(69);
    expect(bucket.msUntilToken()).toBe(1);
    await clock.advance(1);
    expect(bucket.msUntilToken()).toBe(0);
    // Asking does not take: the token is still there.
    expect(bucket.tryTake()).toBe(true);
    expect(bucket.msUntilToken()).toBe(100);
  });

  it('rounds a fractional wait up, and the wait is always enough', async () => {
    const { clock, bucket } = setup({ perSecond: 3, burst: 1 }); // a token every 333.33 ms
    expect(bucket.tryTake()).toBe(true);
    const wait = bucket.msUntilToken();
    expect(wait).toBe(334);
    await clock.advance(wait - 1);
    expect(bucket.tryTake()).toBe(false);
    await clock.advance(1);
    expect(bucket.tryTake()).toBe(true);
  });

  it('honours msUntilToken across many odd rates', async () => {
    for (const perSecond of [0.3, 1, 3, 7, 13, 30, 333, 1000, 7777]) {
      const { clock, bucket } = setup({ perSecond, burst: 1 });
      for (let i = 0; i < 20; i++) {
        expect(bucket.tryTake()).toBe(true);
        const wait = bucket.msUntilToken();
        expect(wait).toBeGreaterThanOrEqual(1);
        expect(wait).toBeLessThanOrEqual(Math.ceil(1000 / perSecond));
        await clock.advance(wait);
        expect(bucket.msUntilToken()).toBe(0);
      }
    }
  });

  it('sets no timers', () => {
    const { clock, bucket } = setup({ perSecond: 1 });
    bucket.tryTake();
    bucket.tryTake();
    bucket.msUntilToken();
    expect(clock.pending().total).toBe(0);
  });
});
