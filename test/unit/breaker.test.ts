import { describe, expect, it } from 'vitest';
import { CircuitOpenError, ErrorCodes, InvalidOptionError } from '../../src/errors.js';
import {
  type BreakerOptions,
  type BreakerStateChange,
  CircuitBreaker,
  type Permit,
  resolveBreakerOptions,
} from '../../src/resilience/breaker.js';
import { FakeClock } from '../support/fake-clock.js';

const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
const timedOut = Object.assign(new Error('connect timed out'), { code: 'ERR_STEADFAST_CONNECT_TIMEOUT' });

/** Only the consecutive rule, with small numbers: 3 failures spanning 1000 ms open it for 2000 ms. */
const consecutiveOnly: BreakerOptions = {
  failureThreshold: 3,
  minOutageMs: 1000,
  openMs: 2000,
  failureRatio: 0,
};

function setup(options: BreakerOptions = consecutiveOnly) {
  const clock = new FakeClock();
  const breaker = new CircuitBreaker(options, clock);
  const changes: BreakerStateChange[] = [];
  breaker.events.on('stateChange', (change) => changes.push(change));
  const transitions = () => changes.map((c) => `${c.from}>${c.to}`);
  return { clock, breaker, changes, transitions };
}

/** Runs one operation through the breaker and reports a failure. */
function failOnce(breaker: CircuitBreaker, error: unknown = refused): void {
  breaker.fail(breaker.acquirePermit(), error);
}

/** The CircuitOpenError `acquirePermit` throws, or a failure if it does not throw one. */
function refusal(breaker: CircuitBreaker): CircuitOpenError {
  try {
    breaker.acquirePermit();
  } catch (err) {
    expect(err).toBeInstanceOf(CircuitOpenError);
    return err as CircuitOpenError;
  }
  throw new Error('acquirePermit did not throw');
}

/** Opens a `consecutiveOnly` breaker at t=1000: failures at 0, 500 and 1000. */
async function openIt(clock: FakeClock, breaker: CircuitBreaker, error: unknown = refused): Promise<void> {
  failOnce(breaker, error);
  await clock.advance(500);
  failOnce(breaker, error);
  await clock.advance(500);
  failOnce(breaker, error);
  expect(breaker.state).toBe('open');
}

describe('resolveBreakerOptions', () => {
  it('fills in the documented defaults', () => {
    expect(resolveBreakerOptions(undefined)).toEqual({
      failureThreshold: 5,
      minOutageMs: 5000,
      windowMs: 10_000,
      minThroughput: 20,
      failureRatio: 0.5,
      openMs: 5000,
      probeTimeoutMs: 30_000,
    });
    expect(resolveBreakerOptions({})).toEqual(resolveBreakerOptions(undefined));
    expect(resolveBreakerOptions({ openMs: 0, failureRatio: 0 })).toMatchObject({
      openMs: 0,
      failureRatio: 0,
      failureThreshold: 5,
    });
  });

  it('returns false when turned off', () => {
    expect(resolveBreakerOptions(false)).toBe(false);
  });

  it.each([
    [
      { failureThreshold: 0 },
      'Invalid option circuitBreaker.failureThreshold: got 0, expected an integer >= 1',
    ],
    [
      { failureThreshold: 2.5 },
      'Invalid option circuitBreaker.failureThreshold: got 2.5, expected an integer >= 1',
    ],
    [
      { minOutageMs: -1 },
      'Invalid option circuitBreaker.minOutageMs: got -1, expected milliseconds from 0 to 2147483647',
    ],
    [
      { windowMs: 5 },
      'Invalid option circuitBreaker.windowMs: got 5, expected milliseconds from 10 to 2147483647',
    ],
    [
      { minThroughput: Number.POSITIVE_INFINITY },
      'Invalid option circuitBreaker.minThroughput: got Infinity, expected an integer >= 1',
    ],
    [
      { failureRatio: 1.5 },
      'Invalid option circuitBreaker.failureRatio: got 1.5, expected a ratio from 0 to 1 (0 turns the rate rule off)',
    ],
    [
      { failureRatio: '0.5' },
      'Invalid option circuitBreaker.failureRatio: got "0.5", expected a ratio from 0 to 1 (0 turns the rate rule off)',
    ],
    [
      { failureRatio: Number.NaN },
      'Invalid option circuitBreaker.failureRatio: got NaN, expected a ratio from 0 to 1 (0 turns the rate rule off)',
    ],
    [
      { openMs: '5s' },
      'Invalid option circuitBreaker.openMs: got "5s", expected milliseconds from 0 to 2147483647',
    ],
    [
      { probeTimeoutMs: 0 },
      'Invalid option circuitBreaker.probeTimeoutMs: got 0, expected milliseconds from 1 to 2147483647',
    ],
    [
      { failureTreshold: 3 },
      'Invalid option circuitBreaker.failureTreshold: unknown option; did you mean failureThreshold?',
    ],
    [{ colour: 'red' }, 'Invalid option circuitBreaker.colour: unknown option'],
  ])('rejects %j', (options, message) => {
    let error: unknown;
    try {
      resolveBreakerOptions(options as BreakerOptions);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect((error as InvalidOptionError).message).toBe(message);
    expect((error as InvalidOptionError).code).toBe(ErrorCodes.INVALID_OPTION);
  });

  it('rejects a value that is neither an options object nor false', () => {
    expect(() => resolveBreakerOptions(true as never)).toThrow(
      'Invalid option circuitBreaker: got true, expected an object of options or false',
    );
    expect(() => resolveBreakerOptions(null as never)).toThrow(
      'Invalid option circuitBreaker: got null, expected an object of options or false',
    );
  });

  it('names the option as the caller configures it', () => {
    expect(() => resolveBreakerOptions({ openMs: -5 }, 'breaker')).toThrow(
      'Invalid option breaker.openMs: got -5, expected milliseconds from 0 to 2147483647',
    );
  });

  it('validates in the constructor', () => {
    expect(() => new CircuitBreaker({ failureThreshold: -1 }, new FakeClock())).toThrow(InvalidOptionError);
  });
});

describe('closed state', () => {
  it('hands out one shared, frozen, non-probe permit', () => {
    const { breaker } = setup();
    const a = breaker.acquirePermit();
    const b = breaker.acquirePermit();
    expect(a).toBe(b);
    expect(a.probe).toBe(false);
    expect(Object.isFrozen(a)).toBe(true);
    expect(breaker.state).toBe('closed');
  });

  it('with defaults, starts closed with an empty snapshot', () => {
    const breaker = new CircuitBreaker(undefined, new FakeClock());
    expect(breaker.snapshot()).toEqual({
      state: 'closed',
      consecutiveFailures: 0,
      openedAt: undefined,
      retryAfterMs: 0,
      lastFailure: undefined,
      opens: 0,
    });
  });
});

describe('consecutive rule', () => {
  it('does not open on the threshold alone before minOutageMs has passed', async () => {
    const { clock, breaker, transitions } = setup();
    for (let i = 0; i < 10; i++) failOnce(breaker);
    expect(breaker.state).toBe('closed');
    expect(breaker.snapshot().consecutiveFailures).toBe(10);
    await clock.advance(999);
    failOnce(breaker);
    expect(breaker.state).toBe('closed');
    await clock.advance(1);
    failOnce(breaker);
    expect(breaker.state).toBe('open');
    expect(transitions()).toEqual(['closed>open']);
  });

  it('does not open on a long streak below the threshold', async () => {
    const { clock, breaker } = setup();
    failOnce(breaker);
    await clock.advance(10_000);
    failOnce(breaker);
    expect(breaker.state).toBe('closed');
    await clock.advance(1);
    failOnce(breaker);
    expect(breaker.state).toBe('open');
  });

  it('restarts the streak, and its start time, after any success', async () => {
    const { clock, breaker } = setup();
    failOnce(breaker);
    failOnce(breaker);
    await clock.advance(2000);
    breaker.succeed(breaker.acquirePermit());
    expect(breaker.snapshot().consecutiveFailures).toBe(0);
    failOnce(breaker);
    failOnce(breaker);
    failOnce(breaker);
    // Three in a row now, but the new streak started at t=2000 and spans 0 ms.
    expect(breaker.state).toBe('closed');
    await clock.advance(1000);
    failOnce(breaker);
    expect(breaker.state).toBe('open');
  });

  it('counts a permitless success and failure the same way', async () => {
    const { clock, breaker } = setup();
    breaker.recordFailure(refused);
    breaker.recordFailure(refused);
    breaker.recordSuccess();
    expect(breaker.snapshot().consecutiveFailures).toBe(0);
    breaker.recordFailure(refused);
    await clock.advance(1000);
    breaker.recordFailure(refused);
    expect(breaker.state).toBe('closed');
    breaker.recordFailure(timedOut);
    expect(breaker.state).toBe('open');
    expect(breaker.snapshot().lastFailure).toBe(timedOut);
  });

  it('opens at the threshold with minOutageMs 0', () => {
    const { breaker } = setup({ failureThreshold: 2, minOutageMs: 0, failureRatio: 0 });
    failOnce(breaker);
    expect(breaker.state).toBe('closed');
    failOnce(breaker);
    expect(breaker.state).toBe('open');
  });
});

describe('rate rule', () => {
  const rate: BreakerOptions = {
    failureThreshold: 1000,
    windowMs: 10_000,
    minThroughput: 20,
    failureRatio: 0.5,
    openMs: 2000,
  };

  it('opens when the window holds minThroughput outcomes and the failure ratio is reached', () => {
    const { breaker, transitions } = setup(rate);
    for (let i = 0; i < 9; i++) {
      breaker.succeed(breaker.acquirePermit());
      failOnce(breaker);
    }
    breaker.succeed(breaker.acquirePermit());
    // 19 outcomes, 9 failures: not enough throughput yet.
    expect(breaker.state).toBe('closed');
    failOnce(breaker);
    // 20 outcomes, 10 failures: ratio 0.5.
    expect(breaker.state).toBe('open');
    expect(transitions()).toEqual(['closed>open']);
  });

  it('does not open below the ratio, however many outcomes', () => {
    const { breaker } = setup(rate);
    for (let i = 0; i < 100; i++) breaker.succeed(breaker.acquirePermit());
    for (let i = 0; i < 99; i++) {
      breaker.succeed(breaker.acquirePermit());
      failOnce(breaker);
    }
    // 298 outcomes, 99 failures.
    expect(breaker.state).toBe('closed');
  });

  it('does not open on a high ratio below minThroughput', () => {
    const { breaker } = setup(rate);
    for (let i = 0; i < 19; i++) breaker.recordFailure(refused);
    expect(breaker.state).toBe('closed');
    breaker.recordFailure(refused);
    expect(breaker.state).toBe('open');
  });

  it('forgets outcomes older than the window, one bucket (windowMs / 10) at a time', async () => {
    /** 10 failures in the bucket [0, 1000), 9 successes in [1000, 2000), then one failure at `at`. */
    async function lastFailureAt(at: number) {
      const { clock, breaker } = setup(rate);
      for (let i = 0; i < 10; i++) breaker.recordFailure(refused);
      await clock.advance(1000);
      for (let i = 0; i < 9; i++) breaker.recordSuccess();
      await clock.advance(at - 1000);
      breaker.recordFailure(refused);
      return breaker.state;
    }
    // At t=9999 the first bucket is still in the window: 20 outcomes, 11 failures.
    expect(await lastFailureAt(9999)).toBe('open');
    // At t=10000 it has left: 10 outcomes, 1 failure.
    expect(await lastFailureAt(10_000)).toBe('closed');
  });

  it('counts every outcome of the window, across buckets', async () => {
    const { clock, breaker } = setup(rate);
    for (let i = 0; i < 10; i++) breaker.recordFailure(refused); // [0, 1000)
    await clock.advance(1000);
    for (let i = 0; i < 10; i++) breaker.recordSuccess(); // [1000, 2000)
    expect(breaker.state).toBe('closed');
    breaker.recordFailure(refused);
    // 21 outcomes, 11 failures (0.52).
    expect(breaker.state).toBe('open');
  });

  it('keeps the window after a long quiet period empty', async () => {
    const { clock, breaker } = setup(rate);
    for (let i = 0; i < 19; i++) breaker.recordFailure(refused);
    await clock.advance(60_000);
    breaker.recordFailure(refused);
    expect(breaker.state).toBe('closed');
  });

  it('is off with failureRatio 0', () => {
    const { breaker } = setup({ ...rate, failureRatio: 0 });
    for (let i = 0; i < 500; i++) {
      breaker.recordSuccess();
      breaker.recordFailure(refused);
    }
    expect(breaker.state).toBe('closed');
  });

  it('starts a fresh window after the breaker closes', async () => {
    const { clock, breaker } = setup(rate);
    for (let i = 0; i < 20; i++) breaker.recordFailure(refused);
    expect(breaker.state).toBe('open');
    await clock.advance(2000);
    const probe = breaker.acquirePermit();
    breaker.succeed(probe);
    expect(breaker.state).toBe('closed');
    // The 20 failures of the outage are gone: one more failure is 1 outcome, not 21.
    breaker.recordFailure(refused);
    expect(breaker.state).toBe('closed');
  });
});

describe('open state', () => {
  it('fails fast with the rest of openMs and the last failure as cause', async () => {
    const { clock, breaker } = setup();
    await openIt(clock, breaker, timedOut);
    const first = refusal(breaker);
    expect(first.code).toBe(ErrorCodes.CIRCUIT_OPEN);
    expect(first.retryAfterMs).toBe(2000);
    expect(first.cause).toBe(timedOut);
    await clock.advance(1500);
    expect(refusal(breaker).retryAfterMs).toBe(500);
    expect(breaker.snapshot()).toEqual({
      state: 'open',
      consecutiveFailures: 3,
      openedAt: 1000,
      retryAfterMs: 500,
      lastFailure: timedOut,
      opens: 1,
    });
  });

  it('keeps openMs fixed when more failures arrive without a permit, but updates the cause', async () => {
    const { clock, breaker } = setup();
    await openIt(clock, breaker);
    await clock.advance(1000);
    breaker.recordFailure(timedOut);
    const err = refusal(breaker);
    expect(err.retryAfterMs).toBe(1000);
    expect(err.cause).toBe(timedOut);
    expect(breaker.snapshot().consecutiveFailures).toBe(4);
  });

  it('turns half-open once openMs has passed, observed lazily and announced once', async () => {
    const { clock, breaker, transitions } = setup();
    await openIt(clock, breaker);
    await clock.advance(1999);
    expect(breaker.state).toBe('open');
    await clock.advance(1);
    expect(clock.pending().total).toBe(0);
    expect(transitions()).toEqual(['closed>open']);
    expect(breaker.state).toBe('half-open');
    expect(breaker.state).toBe('half-open');
    expect(breaker.snapshot().retryAfterMs).toBe(0);
    expect(transitions()).toEqual(['closed>open', 'open>half-open']);
  });

  it('closes at once on a success reported without a permit', async () => {
    const { clock, breaker, changes } = setup();
    await openIt(clock, breaker);
    breaker.recordSuccess();
    expect(breaker.state).toBe('closed');
    expect(breaker.acquirePermit().probe).toBe(false);
    expect(changes.at(-1)).toEqual({ from: 'open', to: 'closed', cause: undefined });
    expect(breaker.snapshot()).toMatchObject({ consecutiveFailures: 0, openedAt: undefined, opens: 1 });
  });

  it('closes on the late success of a permit taken before it opened', async () => {
    const { clock, breaker } = setup();
    const early = breaker.acquirePermit();
    await openIt(clock, breaker);
    breaker.succeed(early);
    expect(breaker.state).toBe('closed');
  });

  it('only notes the late failure of a permit taken before it opened', async () => {
    const { clock, breaker } = setup();
    const early = breaker.acquirePermit();
    await openIt(clock, breaker);
    await clock.advance(500);
    breaker.fail(early, timedOut);
    const err = refusal(breaker);
    expect(err.retryAfterMs).toBe(1500);
    expect(err.cause).toBe(timedOut);
  });
});

describe('half-open state', () => {
  async function halfOpen(options: BreakerOptions = consecutiveOnly) {
    const s = setup(options);
    await openIt(s.clock, s.breaker);
    await s.clock.advance(options.openMs ?? 5000);
    return s;
  }

  it('lets exactly one probe through; the others get retryAfterMs 0', async () => {
    const { breaker } = await halfOpen();
    const probe = breaker.acquirePermit();
    expect(probe.probe).toBe(true);
    const err = refusal(breaker);
    expect(err.retryAfterMs).toBe(0);
    expect(err.cause).toBe(refused);
    expect(refusal(breaker).retryAfterMs).toBe(0);
    expect(breaker.state).toBe('half-open');
  });

  it('goes straight to a probe when acquirePermit is the first to observe the expiry', async () => {
    const { breaker, transitions } = await halfOpen();
    const probe = breaker.acquirePermit();
    expect(probe.probe).toBe(true);
    expect(transitions()).toEqual(['closed>open', 'open>half-open']);
  });

  it('closes when the probe succeeds', async () => {
    const { breaker, changes, transitions } = await halfOpen();
    const probe = breaker.acquirePermit();
    breaker.succeed(probe);
    expect(breaker.state).toBe('closed');
    expect(transitions()).toEqual(['closed>open', 'open>half-open', 'half-open>closed']);
    expect(changes.at(-1)?.cause).toBe(undefined);
    expect(breaker.acquirePermit().probe).toBe(false);
    expect(breaker.snapshot()).toEqual({
      state: 'closed',
      consecutiveFailures: 0,
      openedAt: undefined,
      retryAfterMs: 0,
      lastFailure: refused,
      opens: 1,
    });
  });

  it('opens again for a full openMs when the probe fails', async () => {
    const { clock, breaker, changes, transitions } = await halfOpen();
    await clock.advance(300);
    const probe = breaker.acquirePermit();
    breaker.fail(probe, timedOut);
    expect(breaker.state).toBe('open');
    expect(transitions()).toEqual(['closed>open', 'open>half-open', 'half-open>open']);
    expect(changes.at(-1)).toEqual({ from: 'half-open', to: 'open', cause: timedOut });
    const err = refusal(breaker);
    expect(err.retryAfterMs).toBe(2000);
    expect(err.cause).toBe(timedOut);
    expect(breaker.snapshot()).toMatchObject({ openedAt: 3300, opens: 2, consecutiveFailures: 4 });
    await clock.advance(2000);
    expect(breaker.acquirePermit().probe).toBe(true);
  });

  it('ignores a probe reported twice', async () => {
    const { clock, breaker, transitions } = await halfOpen();
    const probe = breaker.acquirePermit();
    breaker.fail(probe, timedOut);
    await clock.advance(2000);
    // A second report of the old probe neither closes nor reopens the breaker.
    breaker.succeed(probe);
    breaker.fail(probe, refused);
    expect(breaker.state).toBe('half-open');
    expect(breaker.snapshot().lastFailure).toBe(timedOut);
    const second = breaker.acquirePermit();
    expect(second.probe).toBe(true);
    expect(second).not.toBe(probe);
    breaker.succeed(second);
    breaker.fail(second, refused);
    expect(breaker.state).toBe('closed');
    expect(breaker.snapshot().consecutiveFailures).toBe(0);
    expect(transitions()).toEqual([
      'closed>open',
      'open>half-open',
      'half-open>open',
      'open>half-open',
      'half-open>closed',
    ]);
  });

  it('lets another probe go once the probe lease (probeTimeoutMs) runs out', async () => {
    const { clock, breaker } = await halfOpen({ ...consecutiveOnly, probeTimeoutMs: 10_000 });
    const lost = breaker.acquirePermit();
    await clock.advance(9999);
    expect(refusal(breaker).retryAfterMs).toBe(0);
    await clock.advance(1);
    const next = breaker.acquirePermit();
    expect(next.probe).toBe(true);
    expect(next).not.toBe(lost);
    // The superseded probe's failure does not reopen the breaker: the new probe decides.
    breaker.fail(lost, timedOut);
    expect(breaker.state).toBe('half-open');
    expect(breaker.snapshot().lastFailure).toBe(timedOut);
    expect(refusal(breaker).retryAfterMs).toBe(0);
    breaker.succeed(next);
    expect(breaker.state).toBe('closed');
  });

  it('closes on the late success of a superseded probe', async () => {
    const { clock, breaker } = await halfOpen({ ...consecutiveOnly, probeTimeoutMs: 100 });
    const lost = breaker.acquirePermit();
    await clock.advance(100);
    breaker.acquirePermit();
    breaker.succeed(lost);
    expect(breaker.state).toBe('closed');
  });

  it('frees the probe slot at once when the probe is abandoned, counting nothing', async () => {
    const { breaker, transitions } = await halfOpen();
    const probe = breaker.acquirePermit();
    breaker.abandon(probe);
    expect(breaker.state).toBe('half-open');
    expect(breaker.snapshot()).toMatchObject({ consecutiveFailures: 3, opens: 1, lastFailure: refused });
    const next = breaker.acquirePermit();
    expect(next.probe).toBe(true);
    expect(next).not.toBe(probe);
    // An abandoned probe reported afterwards is ignored.
    breaker.fail(probe, timedOut);
    expect(breaker.state).toBe('half-open');
    expect(refusal(breaker).retryAfterMs).toBe(0);
    expect(transitions()).toEqual(['closed>open', 'open>half-open']);
  });

  it('ignores abandon of a probe already reported', async () => {
    const { clock, breaker } = await halfOpen();
    const probe = breaker.acquirePermit();
    breaker.fail(probe, timedOut);
    await clock.advance(2000);
    const next = breaker.acquirePermit();
    breaker.abandon(probe);
    // `next` still holds the slot.
    expect(refusal(breaker).retryAfterMs).toBe(0);
    breaker.succeed(next);
    expect(breaker.state).toBe('closed');
  });

  it('closes on a success reported without a permit while the probe is out', async () => {
    const { breaker, transitions } = await halfOpen();
    const probe = breaker.acquirePermit();
    breaker.recordSuccess();
    expect(breaker.state).toBe('closed');
    // The probe reports afterwards: its failure is stale and ignored in the new closed period.
    breaker.fail(probe, timedOut);
    expect(breaker.state).toBe('closed');
    expect(breaker.snapshot().consecutiveFailures).toBe(0);
    expect(transitions()).toEqual(['closed>open', 'open>half-open', 'half-open>closed']);
  });

  it('leaves the decision to the probe when a failure arrives without a permit', async () => {
    const { breaker } = await halfOpen();
    const probe = breaker.acquirePermit();
    breaker.recordFailure(timedOut);
    expect(breaker.state).toBe('half-open');
    expect(breaker.snapshot().lastFailure).toBe(timedOut);
    expect(refusal(breaker).retryAfterMs).toBe(0);
    breaker.succeed(probe);
    expect(breaker.state).toBe('closed');
  });
});

describe('permits across periods', () => {
  it('ignores the failure of a permit from before the last opening once closed again', async () => {
    const { clock, breaker } = setup();
    const early = breaker.acquirePermit();
    await openIt(clock, breaker);
    breaker.recordSuccess();
    const current = breaker.acquirePermit();
    expect(current).not.toBe(early);
    breaker.fail(early, timedOut);
    expect(breaker.snapshot().consecutiveFailures).toBe(0);
    expect(breaker.snapshot().lastFailure).toBe(refused);
    breaker.fail(current, timedOut);
    expect(breaker.snapshot().consecutiveFailures).toBe(1);
    expect(breaker.snapshot().lastFailure).toBe(timedOut);
  });

  it('does nothing on abandon of a closed-state permit', () => {
    const { breaker } = setup();
    breaker.recordFailure(refused);
    breaker.abandon(breaker.acquirePermit());
    expect(breaker.snapshot().consecutiveFailures).toBe(1);
    expect(breaker.state).toBe('closed');
  });
});

describe('events', () => {
  it('reports the full cycle with causes', async () => {
    const { clock, breaker, changes } = setup();
    await openIt(clock, breaker, timedOut);
    await clock.advance(2000);
    breaker.fail(breaker.acquirePermit(), refused);
    await clock.advance(2000);
    breaker.succeed(breaker.acquirePermit());
    expect(changes).toEqual([
      { from: 'closed', to: 'open', cause: timedOut },
      { from: 'open', to: 'half-open', cause: undefined },
      { from: 'half-open', to: 'open', cause: refused },
      { from: 'open', to: 'half-open', cause: undefined },
      { from: 'half-open', to: 'closed', cause: undefined },
    ]);
  });

  it('lets a listener that calls back in see the new state', async () => {
    const clock = new FakeClock();
    const breaker = new CircuitBreaker(consecutiveOnly, clock);
    const seen: string[] = [];
    let taken: Permit | undefined;
    breaker.events.on('stateChange', ({ to }) => {
      seen.push(`${to}:${breaker.state}`);
      // A listener that takes the probe itself when half-open begins.
      if (to === 'half-open') taken = breaker.acquirePermit();
    });
    await openIt(clock, breaker);
    await clock.advance(2000);
    // This call observes the expiry; the listener takes the probe first, so this caller is refused.
    expect(refusal(breaker).retryAfterMs).toBe(0);
    expect(taken?.probe).toBe(true);
    expect(seen).toEqual(['open:open', 'half-open:half-open']);
  });
});
