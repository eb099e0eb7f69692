/**
 * Load shedding and the circuit breaker against a real server: fail fast instead of queueing without
 * bound or waiting on a database that is gone, and recover on the first probe.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CircuitOpenError, ErrorCodes, Pool, type PoolEventPayloads } from '../../src/index.js';
import { PostgresServer } from '../../testbed/postgres.js';

let server: PostgresServer;
const pools: Pool[] = [];

function newPool(config: Record<string, unknown> = {}): Pool {
  const pool = new Pool({ ...server.clientConfig(), ...config });
  pools.push(pool);
  return pool;
}

beforeAll(async () => {
  server = await PostgresServer.start();
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
  if (!server.isRunning()) await server.start();
});

afterAll(async () => {
  await server?.destroy();
});

const gc = async () => {
  const { setFlagsFromString } = await import('node:v8');
  const { runInNewContext } = await import('node:vm');
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
};

describe('load shedding', () => {
  it('rejects the excess of 10,000 concurrent acquires at once, serves high priority first, and stays flat', async () => {
    const pool = newPool({ max: 10, maxWaiting: 100, application_name: 'shed' });
    const burst = async () => {
      const order: string[] = [];
      const started = performance.now();
      const shedAt: number[] = [];
      const calls = Array.from({ length: 10_000 }, (_, i) => {
        const priority = i % 100 === 99 ? 'high' : 'normal';
        return pool
          .query('SELECT pg_sleep(0.01)', [], { priority })
          .then(() => order.push(priority))
          .catch((error: { code?: string }) => {
            expect(error.code).toBe(ErrorCodes.QUEUE_FULL);
            shedAt.push(performance.now() - started);
          });
      });
      await Promise.all(calls);
      return { order, shedAt };
    };
    await burst(); // warm up
    await gc();
    const heapBefore = process.memoryUsage().heapUsed;
    const { order, shedAt } = await burst();
    await gc();
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
    // 10 running + 100 waiting are served; 100 high-priority callers displace normal waiters.
    expect(order.length).toBeGreaterThanOrEqual(110);
    expect(order.filter((p) => p === 'high')).toHaveLength(100);
    // Shed at once: within the synchronous burst, long before any statement finishes.
    expect(shedAt.length).toBe(10_000 - order.length);
    expect(Math.max(...shedAt.slice(0, 100))).toBeLessThan(1_000);
    // High-priority callers are served before the normal ones still waiting.
    const firstHigh = order.indexOf('high');
    const lastHigh = order.lastIndexOf('high');
    expect(order.slice(firstHigh, lastHigh + 1).every((p) => p === 'high')).toBe(true);
    expect(pool.totalCount).toBeLessThanOrEqual(10);
    expect(await server.countConnections({ applicationName: 'shed' })).toBeLessThanOrEqual(10);
    expect(heapGrowth).toBeLessThan(2 * 1024 * 1024);
  });

  it('sheds acquisitions over the rate limit at once', async () => {
    const pool = newPool({ rateLimit: { perSecond: 5, burst: 5 } });
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, () =>
        pool.query('SELECT 1').then(
          () => 'ok',
          (error: { code?: string }) => error.code,
        ),
      ),
    );
    expect(outcomes.filter((o) => o === 'ok')).toHaveLength(5);
    expect(outcomes.filter((o) => o === ErrorCodes.RATE_LIMITED)).toHaveLength(3);
  });
});

describe('circuit breaker', () => {
  it('opens while the database is down, fails calls in under 5 ms, and closes on the first probe after', async () => {
    const pool = newPool({
      connectTimeoutMs: 500,
      connectBackoffMaxMs: 200,
      circuitBreaker: { failureThreshold: 3, minOutageMs: 500, openMs: 1_000 },
    });
    const changes: PoolEventPayloads['breaker'][] = [];
    pool.on('breaker', (change) => changes.push(change));
    await pool.query('SELECT 1');
    await server.stop('immediate');
    // The idle connection's end is read asynchronously: until the pool has seen it, the next query could
    // be written to that dead connection and end as outcome-unknown instead of waiting for a new one.
    await expect.poll(() => pool.totalCount, { timeout: 5_000 }).toBe(0);
    // Callers wait (and retries fail) until the breaker has seen enough: then they fail fast.
    const waiting = pool.query('SELECT 1', [], { timeoutMs: 10_000 }).catch((e: unknown) => e);
    await expect.poll(() => pool.stats().breaker?.state, { timeout: 5_000 }).toBe('open');
    expect(await waiting).toBeInstanceOf(CircuitOpenError);
    const timings: number[] = [];
    for (let i = 0; i < 20; i++) {
      const started = performance.now();
      const error = await pool.query('SELECT 1').catch((e: unknown) => e);
      timings.push(performance.now() - started);
      expect(error).toBeInstanceOf(CircuitOpenError);
      expect(((error as CircuitOpenError).cause as { code?: string }).code).toBe('ECONNREFUSED');
    }
    expect(Math.max(...timings)).toBeLessThan(5);
    await server.start();
    // After openMs, one probe goes through, succeeds, and closes the breaker.
    await new Promise((r) => setTimeout(r, 1_100));
    expect((await pool.query('SELECT 1 AS n')).rows[0].n).toBe(1);
    expect(pool.stats().breaker?.state).toBe('closed');
    expect(changes.map((c) => `${c.from}->${c.to}`)).toEqual([
      'closed->open',
      'open->half-open',
      'half-open->closed',
    ]);
  });

  it('is not opened by SQL errors', async () => {
    const pool = newPool({ circuitBreaker: { failureThreshold: 2, minOutageMs: 0 } });
    for (let i = 0; i < 10; i++) await pool.query('SELEC 1').catch(() => undefined);
    expect(pool.stats().breaker?.state).toBe('closed');
  });
});

describe('server capacity', () => {
  it('makes a bounded number of connect attempts while another client holds every slot, and recovers', async () => {
    const limited = await PostgresServer.start({ maxConnections: 5 });
    const hogs: pg.Client[] = [];
    try {
      const pool = new Pool({ ...limited.clientConfig(), max: 5, application_name: 'capacity' });
      pools.push(pool);
      for (let i = 0; i < 5; i++) {
        const hog = new pg.Client(limited.clientConfig());
        await hog.connect();
        hogs.push(hog);
      }
      const results = Array.from({ length: 20 }, () =>
        pool.query('SELECT 1').then(
          () => 'ok',
          (e: { code?: string }) => e.code,
        ),
      );
      await new Promise((r) => setTimeout(r, 3_000));
      const attemptsWhileFull = pool.stats().counters.connectsStarted;
      console.log(
        `[capacity] ${attemptsWhileFull} connect attempts in 3 s while the server had no free slot`,
      );
      expect(attemptsWhileFull).toBeLessThanOrEqual(10);
      expect(pool.stats().capacityLimit).toBe(0);
      await Promise.all(hogs.splice(0).map((h) => h.end()));
      expect(await Promise.all(results)).toEqual(Array(20).fill('ok'));
    } finally {
      await Promise.all(hogs.map((h) => h.end().catch(() => undefined)));
      await limited.destroy();
    }
  });
});
