import { describe, expect, it } from 'vitest';
import { Engine, type EngineEvents, type Lease } from '../../src/engine/engine.js';
import type { EngineOptions } from '../../src/engine/options.js';
import {
  AbortedError,
  AcquireTimeoutError,
  ConnectFatalError,
  ConnectTimeoutError,
  DoubleReleaseError,
  ErrorCodes,
  InvalidOptionError,
  PoolClosedError,
  type SteadfastError,
} from '../../src/errors.js';
import { FakeClock } from '../support/fake-clock.js';
import { type FakeConnection, FakeDriver } from '../support/fake-driver.js';

function setup(options: EngineOptions = {}, random = () => 0.5) {
  const clock = new FakeClock();
  const driver = new FakeDriver(clock);
  const engine = new Engine(driver, { validateAfterIdleMs: -1, ...options }, { clock, random });
  const events: { name: keyof EngineEvents<FakeConnection>; payload: any }[] = [];
  for (const name of ['connect', 'connectError', 'retry', 'evict', 'validate', 'timeout', 'error'] as const) {
    engine.events.on(name, (payload) => events.push({ name, payload }));
  }
  const invariant = () => {
    const s = engine.stats();
    expect(s.total).toBe(s.idle + s.inUse + s.connecting + s.validating + s.resetting);
    expect(s.total).toBeLessThanOrEqual(s.max);
    // Every open fake connection belongs to the pool, apart from those whose attempt is still running.
    expect(driver.openConnections).toBe(s.total - s.connecting);
  };
  return { clock, driver, engine, events, invariant };
}

/** An `onError` for `acquireWith` calls that must succeed. */
const noErrorExpected = () => {
  throw new Error('no error expected');
};

/** Records how a promise settled, without letting a rejection go unhandled. */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

describe('checkout and release', () => {
  it('reuses the most recently released connection (LIFO) and keeps counts straight', async () => {
    const { engine, clock, invariant } = setup({ max: 3 });
    const a = await engine.acquire();
    const b = await engine.acquire();
    invariant();
    engine.release(a);
    engine.release(b);
    await clock.flush();
    invariant();
    const c = await engine.acquire();
    expect(c.connection).toBe(b.connection);
    expect(engine.stats()).toMatchObject({ total: 2, idle: 1, inUse: 1, waiting: 0 });
    invariant();
  });

  it('serves waiters first-in first-out when connections come back', async () => {
    const { engine, clock } = setup({ max: 1 });
    const held = await engine.acquire();
    const order: number[] = [];
    const waiting = [1, 2, 3].map((n) =>
      engine.acquire().then((lease) => {
        order.push(n);
        engine.release(lease);
      }),
    );
    await clock.flush();
    expect(engine.waitingCount).toBe(3);
    engine.release(held);
    await Promise.all(waiting);
    expect(order).toEqual([1, 2, 3]);
  });

  it('throws a typed error on a double release', async () => {
    const { engine } = setup();
    const lease = await engine.acquire();
    engine.release(lease);
    expect(() => engine.release(lease)).toThrow(DoubleReleaseError);
    try {
      engine.release(lease);
    } catch (error) {
      expect((error as SteadfastError).code).toBe(ErrorCodes.DOUBLE_RELEASE);
    }
  });

  it('destroys a connection released with destroy, and opens a fresh one next', async () => {
    const { engine, events } = setup();
    const lease = await engine.acquire();
    engine.release(lease, { destroy: true, error: new Error('boom') });
    expect(lease.connection.open).toBe(false);
    expect(events.find((e) => e.name === 'evict')?.payload.reason).toBe('released-with-error');
    const next = await engine.acquire();
    expect(next.connection).not.toBe(lease.connection);
  });

  it('rolls back a connection returned inside a transaction, and destroys it when that fails', async () => {
    const { engine, clock, events, invariant } = setup();
    const lease = await engine.acquire();
    lease.connection.inTransaction = true;
    engine.release(lease);
    expect(engine.stats().resetting).toBe(1);
    invariant();
    await clock.flush();
    expect(lease.connection.inTransaction).toBe(false);
    expect(engine.stats()).toMatchObject({ idle: 1, resetting: 0 });

    const again = await engine.acquire();
    expect(again.connection).toBe(lease.connection);
    again.connection.inTransaction = true;
    again.connection.failReset = true;
    engine.release(again);
    await clock.flush();
    expect(again.connection.open).toBe(false);
    expect(events.filter((e) => e.name === 'evict').map((e) => e.payload.reason)).toEqual(['reset-failed']);
    invariant();
  });
});

describe('deadlines and abort', () => {
  it('times out with a snapshot and the last connect error as cause', async () => {
    const { engine, clock, driver } = setup({ acquireTimeoutMs: 1_000, connectTimeoutMs: 100_000 });
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    driver.defaultBehaviour = { kind: 'fail', error: refused, delayMs: 5 };
    const result = track(engine.acquire());
    await clock.advance(999);
    expect(result.settled).toBe(false);
    await clock.advance(1);
    expect(result.error).toBeInstanceOf(AcquireTimeoutError);
    const error = result.error as AcquireTimeoutError;
    expect(error.code).toBe(ErrorCodes.ACQUIRE_TIMEOUT);
    expect(error.cause).toBe(refused);
    expect(error.snapshot).toMatchObject({ total: 0, inUse: 0, waiting: 0, max: 10 });
    expect(error.message).toContain('ECONNREFUSED');
    expect(error.message).toMatch(/1000ms/);
  });

  it('says the pool is exhausted (no cause) when every connection is busy', async () => {
    const { engine, clock } = setup({ max: 1, acquireTimeoutMs: 50 });
    await engine.acquire();
    const result = track(engine.acquire());
    await clock.advance(50);
    const error = result.error as AcquireTimeoutError;
    expect(error).toBeInstanceOf(AcquireTimeoutError);
    expect(error.cause).toBeUndefined();
    expect(error.snapshot).toMatchObject({ total: 1, inUse: 1, waiting: 0 });
  });

  it('honours a per-call timeout', async () => {
    const { engine, clock } = setup({ max: 1 });
    await engine.acquire();
    const result = track(engine.acquire({ timeoutMs: 10 }));
    await clock.advance(10);
    expect((result.error as AcquireTimeoutError).timeoutMs).toBe(10);
  });

  it('rejects at once for an aborted signal, and on a later abort', async () => {
    const { engine, clock } = setup({ max: 1 });
    const controller = new AbortController();
    controller.abort(new Error('gone'));
    await expect(engine.acquire({ signal: controller.signal })).rejects.toBeInstanceOf(AbortedError);
    await engine.acquire();
    const later = new AbortController();
    const result = track(engine.acquire({ signal: later.signal }));
    await clock.flush();
    later.abort();
    await clock.flush();
    expect(result.error).toBeInstanceOf(AbortedError);
    expect(engine.waitingCount).toBe(0);
  });

  it('puts the connection meant for an abandoned acquire back to idle', async () => {
    const { engine, clock, driver, invariant } = setup();
    driver.defaultBehaviour = { kind: 'ok', delayMs: 100 };
    const controller = new AbortController();
    const result = track(engine.acquire({ signal: controller.signal }));
    await clock.advance(50);
    controller.abort();
    await clock.advance(100);
    expect(result.error).toBeInstanceOf(AbortedError);
    expect(engine.stats()).toMatchObject({ total: 1, idle: 1, inUse: 0 });
    invariant();
  });
});

describe('acquireWith (the callback hand-off)', () => {
  it('answers at once when a connection is idle, and from inside the release when a caller waits', async () => {
    const { engine, clock, invariant } = setup({ max: 1 });
    const first = await engine.acquire();
    const calls: string[] = [];
    let handed: Lease<FakeConnection> | undefined;
    engine.acquireWith(
      undefined,
      (lease) => {
        calls.push('lease');
        handed = lease;
      },
      () => calls.push('error'),
    );
    expect(calls).toEqual([]);
    expect(engine.waitingCount).toBe(1);
    await clock.advance(7);
    expect(calls).toEqual([]);
    engine.release(first);
    // Synchronously, inside release(): no promise or microtask between the two holders.
    expect(calls).toEqual(['lease']);
    expect(handed?.connection).toBe(first.connection);
    expect(handed!.acquiredAt - handed!.requestedAt).toBe(7);
    expect(first.releasedAt).toBe(handed!.acquiredAt);
    invariant();
    engine.release(handed!);
    engine.acquireWith(
      undefined,
      () => calls.push('lease again'),
      () => calls.push('error'),
    );
    expect(calls).toEqual(['lease', 'lease again']); // idle connection: at once
  });

  it('reports refusals through onError: closed, aborted, bad option, timeout, queue full', async () => {
    const { engine, clock } = setup({ max: 1, maxWaiting: 1, acquireTimeoutMs: 20 });
    const errors: unknown[] = [];
    const onError = (error: unknown) => errors.push(error);
    const fail = () => {
      throw new Error('no lease expected');
    };
    await engine.acquire();
    const aborted = new AbortController();
    aborted.abort();
    engine.acquireWith({ signal: aborted.signal }, fail, onError);
    engine.acquireWith({ priority: 'urgent' as never }, fail, onError);
    engine.acquireWith(undefined, fail, onError); // waits
    engine.acquireWith(undefined, fail, onError); // the queue is full: refused at once
    expect(errors.map((e) => (e as SteadfastError).code ?? (e as Error).name)).toEqual([
      ErrorCodes.ABORTED,
      ErrorCodes.INVALID_OPTION,
      ErrorCodes.QUEUE_FULL,
    ]);
    await clock.advance(20);
    expect(errors[3]).toBeInstanceOf(AcquireTimeoutError);
    void engine.close({ timeoutMs: 0 });
    engine.acquireWith(undefined, fail, onError);
    expect(errors[4]).toBeInstanceOf(PoolClosedError);
  });
});

describe('opening connections', () => {
  it('retries with backoff until the server answers, within the deadline', async () => {
    const { engine, clock, driver, events } = setup({
      connectBackoffInitialMs: 100,
      connectBackoffMaxMs: 1_000,
    });
    const error = Object.assign(new Error('refused'), { code: 'ECONNREFUSED' });
    driver.script.push({ kind: 'fail', error }, { kind: 'fail', error }, { kind: 'fail', error });
    const result = track(engine.acquire());
    await clock.advance(5_000);
    expect(result.value).toBeDefined();
    expect(driver.connectCalls).toBe(4);
    const retries = events.filter((e) => e.name === 'retry').map((e) => e.payload);
    expect(retries.map((r) => r.attempt)).toEqual([1, 2, 3]);
    // Full jitter with random() = 0.5: half of 100, 200, 400.
    expect(retries.map((r) => r.delayMs)).toEqual([50, 100, 200]);
  });

  it('never runs more connection attempts at once than maxConnectConcurrency', async () => {
    const { engine, clock, driver } = setup({ max: 50, maxConnectConcurrency: 3 });
    driver.defaultBehaviour = { kind: 'ok', delayMs: 20 };
    const leases = Array.from({ length: 40 }, () => engine.acquire());
    await clock.advance(1_000);
    await Promise.all(leases);
    expect(driver.maxInFlight).toBe(3);
  });

  it('stops attempting when nobody waits any more', async () => {
    const { engine, clock, driver } = setup({ acquireTimeoutMs: 1_000 });
    driver.defaultBehaviour = {
      kind: 'fail',
      error: Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }),
    };
    track(engine.acquire());
    await clock.advance(1_000);
    const calls = driver.connectCalls;
    expect(calls).toBeGreaterThan(1);
    await clock.advance(60_000);
    expect(driver.connectCalls).toBe(calls);
  });

  it('fails waiters at once on a fatal error such as a wrong password', async () => {
    const { engine, clock, driver } = setup();
    const authError = Object.assign(new Error('password authentication failed for user "app"'), {
      code: '28P01',
      severity: 'FATAL',
    });
    driver.defaultBehaviour = { kind: 'fail', error: authError };
    const a = track(engine.acquire());
    const b = track(engine.acquire());
    await clock.flush();
    expect(a.error).toBeInstanceOf(ConnectFatalError);
    expect(b.error).toBeInstanceOf(ConnectFatalError);
    expect((a.error as ConnectFatalError).cause).toBe(authError);
    expect(driver.connectCalls).toBeLessThanOrEqual(2);
  });

  it('gives up on a hanging connect after connectTimeoutMs and reports it as the cause', async () => {
    const { engine, clock, driver } = setup({ connectTimeoutMs: 1_000, acquireTimeoutMs: 2_500 });
    driver.defaultBehaviour = { kind: 'hang' };
    const result = track(engine.acquire());
    await clock.advance(2_500);
    const error = result.error as AcquireTimeoutError;
    expect(error).toBeInstanceOf(AcquireTimeoutError);
    expect(error.cause).toBeInstanceOf(ConnectTimeoutError);
    expect(driver.connectCalls).toBeGreaterThanOrEqual(2);
    expect(driver.inFlight).toBe(1);
  });
});

describe('keeping connections healthy', () => {
  it('evicts an idle connection that breaks, without any listener, and never hands it out', async () => {
    const clock = new FakeClock();
    const driver = new FakeDriver(clock);
    const engine = new Engine(driver, {}, { clock });
    const lease = await engine.acquire();
    engine.release(lease);
    lease.connection.breakNow();
    expect(engine.stats()).toMatchObject({ total: 0, idle: 0 });
    expect(engine.stats().counters.evictions.broken).toBe(1);
    const next = await engine.acquire();
    expect(next.connection).not.toBe(lease.connection);
  });

  it('destroys a connection that broke while in use when it comes back', async () => {
    const { engine } = setup();
    const lease = await engine.acquire();
    lease.connection.breakNow();
    expect(engine.stats().inUse).toBe(1);
    engine.release(lease);
    expect(engine.stats()).toMatchObject({ total: 0 });
  });

  it('validates a connection idle longer than the window, and takes another when validation fails', async () => {
    const { engine, clock, events, invariant } = setup({ validateAfterIdleMs: 500 });
    const a = await engine.acquire();
    const b = await engine.acquire();
    engine.release(a);
    engine.release(b);
    await clock.advance(400);
    const fresh = await engine.acquire();
    expect(events.filter((e) => e.name === 'validate')).toHaveLength(0);
    engine.release(fresh);
    await clock.advance(600);
    b.connection.failValidation = true;
    const checked = await engine.acquire();
    invariant();
    expect(checked.connection).toBe(a.connection);
    const validations = events.filter((e) => e.name === 'validate').map((e) => e.payload.ok);
    expect(validations).toEqual([false, true]);
    expect(b.connection.open).toBe(false);
  });

  it('retires idle connections at their lifetime, with jitter, but never one in use', async () => {
    const { engine, clock, events } = setup({ maxLifetimeMs: 10_000, idleTimeoutMs: 0 }, () => 1);
    const held = await engine.acquire();
    const idle = await engine.acquire();
    engine.release(idle);
    // Lifetime shortened by 2.5% with random() = 1: 9750 ms.
    await clock.advance(9_749);
    expect(engine.stats().total).toBe(2);
    await clock.advance(1_001);
    expect(idle.connection.open).toBe(false);
    expect(held.connection.open).toBe(true);
    expect(engine.stats()).toMatchObject({ total: 1, inUse: 1 });
    engine.release(held);
    expect(held.connection.open).toBe(false);
    expect(events.filter((e) => e.name === 'evict').map((e) => e.payload.reason)).toEqual([
      'expired',
      'expired',
    ]);
  });

  it('closes idle connections beyond min after the idle timeout', async () => {
    const { engine, clock } = setup({ idleTimeoutMs: 5_000, min: 1 });
    const leases = await Promise.all([engine.acquire(), engine.acquire(), engine.acquire()]);
    for (const lease of leases) engine.release(lease);
    await clock.advance(4_000);
    expect(engine.stats().idle).toBe(3);
    await clock.advance(2_000);
    expect(engine.stats()).toMatchObject({ total: 1, idle: 1 });
  });

  it('closes overflow connections when they come back with nobody waiting', async () => {
    const { engine } = setup({ max: 3, maxOverflow: 1 });
    const leases = await Promise.all([engine.acquire(), engine.acquire(), engine.acquire()]);
    expect(engine.stats()).toMatchObject({ total: 3, overflow: 1, keptSize: 2 });
    engine.release(leases[0]!);
    expect(engine.stats()).toMatchObject({ total: 2, overflow: 0 });
    engine.release(leases[1]!);
    engine.release(leases[2]!);
    expect(engine.stats()).toMatchObject({ total: 2, idle: 2 });
    expect(engine.stats().counters.evictions.overflow).toBe(1);
  });

  it('caches nothing in null mode', async () => {
    const { engine } = setup({ mode: 'null' });
    const a = await engine.acquire();
    engine.release(a);
    expect(a.connection.open).toBe(false);
    const b = await engine.acquire();
    expect(b.connection).not.toBe(a.connection);
    expect(engine.stats().total).toBe(1);
  });
});

describe('close', () => {
  it('rejects waiters and new work, waits for checked-out connections, and is idempotent', async () => {
    const { engine, clock, driver } = setup({ max: 1 });
    const held = await engine.acquire();
    const waiter = track(engine.acquire());
    await clock.flush();
    const closing = engine.close();
    expect(engine.close()).toBe(closing);
    await clock.flush();
    expect(waiter.error).toBeInstanceOf(PoolClosedError);
    await expect(engine.acquire()).rejects.toBeInstanceOf(PoolClosedError);
    const closed = track(closing);
    await clock.flush();
    expect(closed.settled).toBe(false);
    engine.release(held);
    await clock.flush();
    expect(closed.settled).toBe(true);
    expect(driver.openConnections).toBe(0);
    expect(clock.pending().keepAlive).toBe(0);
  });

  it('destroys connections still checked out when its timeout passes', async () => {
    const { engine, clock, driver } = setup();
    const held = await engine.acquire();
    const closed = track(engine.close({ timeoutMs: 1_000 }));
    await clock.advance(999);
    expect(closed.settled).toBe(false);
    await clock.advance(1);
    expect(closed.settled).toBe(true);
    expect(driver.openConnections).toBe(0);
    expect(() => engine.release(held)).not.toThrow();
  });
});

describe('options', () => {
  it('names the option, the value and the range', () => {
    const clock = new FakeClock();
    const driver = new FakeDriver(clock);
    expect(() => new Engine(driver, { max: 0 })).toThrow(
      /Invalid option max: got 0, expected an integer from 1/,
    );
    expect(() => new Engine(driver, { max: 1e9 })).toThrow(InvalidOptionError);
    expect(() => new Engine(driver, { acquireTimeoutMs: Number.NaN })).toThrow(/acquireTimeoutMs: got NaN/);
    expect(() => new Engine(driver, { mode: 'lifo' as never })).toThrow(/expected one of "queue", "null"/);
    expect(() => new Engine(driver, { max: 5, maxOverflow: 5 })).toThrow(/maxOverflow/);
  });

  it('blames the backoff option that was set when the initial delay exceeds the maximum', () => {
    const driver = new FakeDriver(new FakeClock());
    // Found by the option fuzzer: with only the initial delay set, the refusal named the unset maximum.
    expect(() => new Engine(driver, { connectBackoffInitialMs: 2_001 })).toThrow(
      /connectBackoffInitialMs: got 2001, expected at most connectBackoffMaxMs \(2000, its default\)/,
    );
    expect(() => new Engine(driver, { connectBackoffInitialMs: 100, connectBackoffMaxMs: 50 })).toThrow(
      /connectBackoffMaxMs: got 50, expected at least connectBackoffInitialMs \(100\)/,
    );
  });
});

describe('events', () => {
  it('keeps working when a listener throws', async () => {
    const { engine } = setup();
    engine.events.on('acquire', () => {
      throw new Error('listener bug');
    });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    const lease: Lease<FakeConnection> = await engine.acquire();
    engine.release(lease);
    await new Promise((r) => setImmediate(r));
    process.off('warning', onWarning);
    expect(engine.stats()).toMatchObject({ idle: 1, inUse: 0 });
    expect(warnings.some((w) => w.includes('listener bug'))).toBe(true);
  });
});

describe('maxUses', () => {
  it('closes a connection after it was checked out maxUses times', async () => {
    const { engine, events } = setup({ maxUses: 2 });
    const first = await engine.acquire();
    engine.release(first);
    const second = await engine.acquire();
    expect(second.connection).toBe(first.connection);
    engine.release(second);
    expect(first.connection.open).toBe(false);
    expect(events.filter((e) => e.name === 'evict').map((e) => e.payload.reason)).toEqual(['max-uses']);
    expect((await engine.acquire()).connection).not.toBe(first.connection);
  });
});

describe('regressions: close and re-entrancy', () => {
  it('close() settles and leaves nothing open when a validation succeeds after its caller gave up', async () => {
    const { engine, clock, driver } = setup({ validateAfterIdleMs: 500 });
    driver.validateDelayMs = 100;
    engine.release(await engine.acquire());
    await clock.advance(1_000);
    const controller = new AbortController();
    const caller = track(engine.acquire({ signal: controller.signal }));
    await clock.advance(10);
    controller.abort();
    const closed = track(engine.close());
    await clock.advance(200);
    expect(caller.error).toBeInstanceOf(AbortedError);
    expect(closed.settled).toBe(true);
    expect(driver.openConnections).toBe(0);
    expect(clock.pending().keepAlive).toBe(0);
  });

  it('close() rejects a caller whose connection is being validated, at once', async () => {
    const { engine, clock, driver } = setup({ validateAfterIdleMs: 500 });
    driver.validateDelayMs = 100;
    engine.release(await engine.acquire());
    await clock.advance(1_000);
    const caller = track(engine.acquire());
    await clock.advance(10);
    const closed = track(engine.close());
    await clock.flush();
    expect(caller.error).toBeInstanceOf(PoolClosedError);
    expect(closed.settled).toBe(true);
    await clock.advance(200);
    expect(driver.openConnections).toBe(0);
    expect(clock.pending().keepAlive).toBe(0);
  });

  it('an evict listener that acquires during close() is refused', async () => {
    const { engine, clock } = setup();
    engine.release(await engine.acquire());
    const during: ReturnType<typeof track>[] = [];
    engine.events.on('evict', () => during.push(track(engine.acquire())));
    await engine.close();
    await clock.flush();
    expect(during).toHaveLength(1);
    expect(during[0]!.error).toBeInstanceOf(PoolClosedError);
    expect(clock.pending().keepAlive).toBe(0);
  });

  it('the idle sweep never closes a connection an evict listener just checked out', async () => {
    const { engine, clock, invariant } = setup({ idleTimeoutMs: 1_000 });
    const leases = await Promise.all([engine.acquire(), engine.acquire()]);
    for (const lease of leases) engine.release(lease);
    const taken: Lease<FakeConnection>[] = [];
    engine.events.on('evict', () => {
      if (taken.length === 0) void engine.acquire().then((lease) => taken.push(lease));
    });
    await clock.advance(1_500);
    expect(taken).toHaveLength(1);
    expect(taken[0]!.connection.open).toBe(true);
    invariant();
  });

  it('a connectError listener that acquires cannot skip the backoff', async () => {
    const { engine, clock, driver } = setup({ connectBackoffInitialMs: 1_000, connectBackoffMaxMs: 1_000 });
    driver.defaultBehaviour = {
      kind: 'fail',
      error: Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }),
    };
    engine.events.on('connectError', () => void engine.acquire({ timeoutMs: 5_000 }).catch(() => undefined));
    void engine.acquire({ timeoutMs: 5_000 }).catch(() => undefined);
    await clock.advance(100);
    // One attempt, then the backoff (500 ms with random() = 0.5) holds every caller back.
    expect(driver.connectCalls).toBe(1);
  });
});

describe('load shedding', () => {
  it('rejects at once when the wait queue is full, shedding the newest less urgent waiter first', async () => {
    const { engine, clock } = setup({ max: 1, maxWaiting: 2 });
    const held = await engine.acquire();
    const low = track(engine.acquire({ priority: 'low' }));
    const first = track(engine.acquire());
    // Full: a normal caller displaces the low one...
    const second = track(engine.acquire());
    await clock.flush();
    expect((low.error as SteadfastError).code).toBe(ErrorCodes.QUEUE_FULL);
    // ...a high one displaces the newest normal one...
    const high = track(engine.acquire({ priority: 'high' }));
    await clock.flush();
    expect((second.error as SteadfastError).code).toBe(ErrorCodes.QUEUE_FULL);
    // ...and with nobody less urgent left, the caller itself is shed, at once.
    const excess = track(engine.acquire());
    await clock.flush();
    expect((excess.error as SteadfastError).code).toBe(ErrorCodes.QUEUE_FULL);
    expect(engine.waitingCount).toBe(2);
    engine.release(held);
    await clock.flush();
    expect(high.value).toBeDefined();
    expect(first.settled).toBe(false);
    engine.release(high.value as Lease<FakeConnection>);
    await clock.flush();
    expect(first.value).toBeDefined();
    expect(engine.stats().counters.shed).toBe(3);
  });

  it('serves high-priority waiters first, FIFO within a lane', async () => {
    const { engine, clock } = setup({ max: 1 });
    const held = await engine.acquire();
    const order: string[] = [];
    const names = ['n1', 'h1', 'l1', 'n2', 'h2'];
    const done = names.map((name) =>
      engine
        .acquire({ priority: name[0] === 'h' ? 'high' : name[0] === 'l' ? 'low' : 'normal' })
        .then((lease) => {
          order.push(name);
          engine.release(lease);
        }),
    );
    await clock.flush();
    engine.release(held);
    await Promise.all(done);
    expect(order).toEqual(['h1', 'h2', 'n1', 'n2', 'l1']);
  });

  it('rejects an unknown priority', async () => {
    const { engine } = setup();
    await expect(engine.acquire({ priority: 'urgent' as never })).rejects.toThrow(/priority: got "urgent"/);
  });
});

describe('server capacity', () => {
  it('after 53300 grows one connection at a time instead of asking for all it wants', async () => {
    const { engine, clock, driver } = setup({ max: 10, maxConnectConcurrency: 4, connectBackoffMaxMs: 100 });
    const full = Object.assign(new Error('sorry, too many clients already'), {
      code: '53300',
      severity: 'FATAL',
    });
    const held = [await engine.acquire(), await engine.acquire()];
    driver.defaultBehaviour = { kind: 'fail', error: full, delayMs: 5 };
    const waiting = Array.from({ length: 6 }, () => track(engine.acquire({ timeoutMs: 60_000 })));
    await clock.advance(50);
    expect(engine.stats().capacityLimit).toBe(2);
    driver.maxInFlight = 0;
    await clock.advance(2_000);
    // One probe at a time while the server is full.
    expect(driver.maxInFlight).toBe(1);
    driver.defaultBehaviour = { kind: 'ok', delayMs: 5 };
    await clock.advance(2_000);
    expect(waiting.every((w) => w.value !== undefined)).toBe(true);
    expect(engine.stats().total).toBe(8);
    for (const lease of held) engine.release(lease);
  });
});

describe('regressions: close with connects in flight', () => {
  it('close() settles at once even when a connect attempt ignores its abort', async () => {
    const { engine, clock, driver } = setup({ connectTimeoutMs: 60_000 });
    driver.defaultBehaviour = { kind: 'hang', ignoreAbort: true };
    const caller = track(engine.acquire());
    await clock.flush();
    const closed = track(engine.close());
    await clock.flush();
    expect(caller.error).toBeInstanceOf(PoolClosedError);
    expect(closed.settled).toBe(true);
    expect(clock.pending().keepAlive).toBe(0);
  });
});

describe('close with drain', () => {
  it('refuses new callers but serves those already waiting, then closes', async () => {
    const { engine, clock, driver } = setup({ max: 1 });
    const held = await engine.acquire();
    const waiting = track(engine.acquire());
    await clock.flush();
    const closed = track(engine.close({ drain: true, timeoutMs: 10_000 }));
    await expect(engine.acquire()).rejects.toBeInstanceOf(PoolClosedError);
    engine.release(held);
    await clock.flush();
    expect(waiting.value).toBeDefined();
    expect(closed.settled).toBe(false);
    engine.release(waiting.value as Lease<FakeConnection>);
    await clock.flush();
    expect(closed.settled).toBe(true);
    expect(driver.openConnections).toBe(0);
    expect(clock.pending().keepAlive).toBe(0);
  });

  it('refuses the callers still waiting when the drain timeout passes', async () => {
    const { engine, clock, driver } = setup({ max: 1 });
    const held = await engine.acquire();
    const waiting = track(engine.acquire({ timeoutMs: 60_000 }));
    const closed = track(engine.close({ drain: true, timeoutMs: 1_000 }));
    await clock.advance(1_000);
    expect(waiting.error).toBeInstanceOf(PoolClosedError);
    expect(closed.settled).toBe(true);
    expect(driver.openConnections).toBe(0);
    expect(() => engine.release(held)).not.toThrow();
  });

  it('opens connections for waiters during a drain', async () => {
    const { engine, clock } = setup({ max: 2 });
    const held = await engine.acquire();
    const waiting = [track(engine.acquire()), track(engine.acquire())];
    const closed = track(engine.close({ drain: true, timeoutMs: 10_000 }));
    await clock.flush();
    expect(waiting[0]!.value).toBeDefined();
    engine.release(held);
    await clock.flush();
    expect(waiting[1]!.value).toBeDefined();
    for (const w of waiting) engine.release(w.value as Lease<FakeConnection>);
    await clock.flush();
    expect(closed.settled).toBe(true);
  });
});

describe('deadlines on one timer', () => {
  it('expires each waiter at its own deadline, whatever the order they came in', async () => {
    const { engine, clock } = setup({ max: 1 });
    await engine.acquire();
    const long = track(engine.acquire({ timeoutMs: 1_000 }));
    const short = track(engine.acquire({ timeoutMs: 50 }));
    const sameAsLong = track(engine.acquire({ timeoutMs: 1_000 }));
    await clock.advance(49);
    expect(short.settled).toBe(false);
    await clock.advance(1);
    expect(short.error).toBeInstanceOf(AcquireTimeoutError);
    expect(long.settled).toBe(false);
    await clock.advance(949);
    expect(long.settled).toBe(false);
    await clock.advance(1);
    expect(long.error).toBeInstanceOf(AcquireTimeoutError);
    expect(sameAsLong.error).toBeInstanceOf(AcquireTimeoutError);
    // No waiter left: no timer holds the process.
    expect(clock.pending().keepAlive).toBe(0);
  });

  it('starts the clock of a caller joining a queue by the end of the turn it queued in', async () => {
    const { engine, clock } = setup({ max: 1, acquireTimeoutMs: 100 });
    const held = await engine.acquire();
    const first = track(engine.acquire());
    await clock.advance(30);
    // Joins a queue that is already there: its wait and its deadline start from here, not earlier.
    const second = track(engine.acquire());
    await clock.advance(70);
    expect(first.error).toBeInstanceOf(AcquireTimeoutError);
    expect(second.settled).toBe(false);
    engine.release(held);
    await clock.flush();
    expect((second.value as Lease<FakeConnection>).acquiredAt).toBe(100);
    expect((second.value as Lease<FakeConnection>).requestedAt).toBe(30);
  });

  it('keeps deadlines and waits on a clock whose readings are below zero', async () => {
    const clock = new FakeClock(-1_000);
    const engine = new Engine(new FakeDriver(clock), { max: 1, acquireTimeoutMs: 50 }, { clock });
    const waits: number[] = [];
    engine.events.on('timeout', ({ waitMs }) => waits.push(waitMs));
    const held = await engine.acquire();
    const first = track(engine.acquire());
    const second = track(engine.acquire());
    await clock.advance(49);
    expect(first.settled || second.settled).toBe(false);
    await clock.advance(1);
    expect(first.error).toBeInstanceOf(AcquireTimeoutError);
    expect(second.error).toBeInstanceOf(AcquireTimeoutError);
    expect(waits).toEqual([50, 50]);
    const third = track(engine.acquire());
    const fourth = track(engine.acquire());
    await clock.advance(20);
    engine.release(held);
    await clock.flush();
    const lease = third.value as Lease<FakeConnection>;
    expect(lease.acquiredAt - lease.requestedAt).toBe(20);
    engine.release(lease);
    await clock.flush();
    const next = fourth.value as Lease<FakeConnection>;
    expect(next.acquiredAt - next.requestedAt).toBe(20);
  });

  it('leaves no deadline behind for a caller served in the turn it queued', async () => {
    const { engine, clock } = setup({ max: 1 });
    const held = await engine.acquire();
    const leases: Lease<FakeConnection>[] = [];
    const push = (lease: Lease<FakeConnection>) => leases.push(lease);
    engine.acquireWith(undefined, push, noErrorExpected); // first in the queue: its clock starts at once
    engine.acquireWith(undefined, push, noErrorExpected); // joins the queue: its clock starts at the end of the turn
    engine.release(held);
    engine.release(leases[0]!);
    expect(leases).toHaveLength(2);
    expect(leases[1]!.acquiredAt - leases[1]!.requestedAt).toBe(0);
    await clock.flush();
    expect(engine.waitingCount).toBe(0);
    // Served before its clock started: no deadline timer is left to hold the process.
    expect(clock.pending().keepAlive).toBe(0);
  });

  it('counts the wait of a caller joining a queue from the end of its turn, exactly while anyone listens', async () => {
    const waitsOfSecondCaller = async (listen: boolean) => {
      const { engine, clock } = setup({ max: 1 });
      const waits: number[] = [];
      if (listen) engine.events.on('acquire', ({ waitMs }) => waits.push(waitMs));
      const held = await engine.acquire();
      const leases: Lease<FakeConnection>[] = [];
      const push = (lease: Lease<FakeConnection>) => leases.push(lease);
      engine.acquireWith(undefined, push, noErrorExpected);
      engine.acquireWith(undefined, push, noErrorExpected);
      clock.jump(4); // the rest of the turn takes 4 ms
      await clock.advance(5);
      engine.release(held);
      engine.release(leases[0]!);
      return { lease: leases[1]!.acquiredAt - leases[1]!.requestedAt, waits };
    };
    // Nobody listening: the clock started when the turn ended, never earlier.
    expect(await waitsOfSecondCaller(false)).toEqual({ lease: 5, waits: [] });
    // Wait times are observed: read when the caller queued.
    expect(await waitsOfSecondCaller(true)).toEqual({ lease: 9, waits: [0, 9, 9] });
  });
});
