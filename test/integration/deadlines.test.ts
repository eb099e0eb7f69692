/**
 * Deadlines end to end: a statement that outlives its call's deadline or its caller's signal is
 * cancelled on the server, the caller gets a typed error at once, and the connection is reused only
 * when it is provably healthy.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AbortedError, ErrorCodes, Pool, type PoolEventPayloads, TimeoutError } from '../../src/index.js';
import { ChaosProxy } from '../../testbed/chaos-proxy.js';
import { PostgresServer } from '../../testbed/postgres.js';

let server: PostgresServer;
const pools: Pool[] = [];

function newPool(config: Record<string, unknown> = {}): Pool {
  const pool = new Pool({ ...server.clientConfig(), ...config });
  pools.push(pool);
  return pool;
}

const sleepingStatements = async (applicationName: string) =>
  (
    await server.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND query LIKE '%pg_sleep%' AND state = 'active'`,
      [applicationName],
    )
  ).rows[0]!.n;

beforeAll(async () => {
  server = await PostgresServer.start();
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
});

afterAll(async () => {
  await server?.destroy();
});

describe('statement deadlines', () => {
  it('cancels a statement that runs past its deadline on the server and keeps the connection', async () => {
    const pool = newPool({ application_name: 'deadline' });
    const cancels: PoolEventPayloads['cancel'][] = [];
    pool.on('cancel', (event) => cancels.push(event));
    await pool.query('SELECT 1');
    const started = performance.now();
    const error = await pool.query('SELECT pg_sleep(10)', [], { timeoutMs: 500 }).catch((e: unknown) => e);
    const elapsed = performance.now() - started;
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).code).toBe(ErrorCodes.TIMEOUT);
    expect(elapsed).toBeGreaterThanOrEqual(490);
    expect(elapsed).toBeLessThan(1_000);
    await expect.poll(() => cancels.length, { timeout: 3_000 }).toBe(1);
    expect(cancels[0]).toEqual({ reason: 'timeout', delivered: true, healthy: true });
    expect(await sleepingStatements('deadline')).toBe(0);
    // The same connection serves the next call: it was provably healthy.
    expect((await pool.query('SELECT 2 AS n')).rows[0].n).toBe(2);
    expect(pool.totalCount).toBe(1);
    expect(pool.stats().counters.connectsSucceeded).toBe(1);
  });

  it('applies the pool-wide queryTimeoutMs when a call gives none', async () => {
    const pool = newPool({ application_name: 'pool-deadline', queryTimeoutMs: 300 });
    const error = await pool.query('SELECT pg_sleep(5)').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).timeoutMs).toBe(300);
    await expect.poll(() => sleepingStatements('pool-deadline'), { timeout: 3_000 }).toBe(0);
  });

  it('cancels on the caller signal, too', async () => {
    const pool = newPool({ application_name: 'abort' });
    const controller = new AbortController();
    const running = pool
      .query('SELECT pg_sleep(10)', [], { signal: controller.signal })
      .catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    expect(await sleepingStatements('abort')).toBe(1);
    controller.abort(new Error('client went away'));
    const error = await running;
    expect(error).toBeInstanceOf(AbortedError);
    await expect.poll(() => sleepingStatements('abort'), { timeout: 3_000 }).toBe(0);
    expect((await pool.query('SELECT 3 AS n')).rows[0].n).toBe(3);
  });

  it('destroys the connection when the network is frozen, and works again once it heals', async () => {
    const proxy = await ChaosProxy.start({ host: server.host, port: server.port });
    try {
      const pool = newPool({ host: proxy.host, port: proxy.port, cancelGraceMs: 300 });
      const cancels: PoolEventPayloads['cancel'][] = [];
      pool.on('cancel', (event) => cancels.push(event));
      await pool.query('SELECT 1');
      proxy.freeze();
      const started = performance.now();
      const error = await pool.query('SELECT 1', [], { timeoutMs: 500 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TimeoutError);
      expect(performance.now() - started).toBeLessThan(1_000);
      await expect.poll(() => cancels.length, { timeout: 3_000 }).toBe(1);
      expect(cancels[0]).toEqual({ reason: 'timeout', delivered: false, healthy: false });
      expect(pool.stats().counters.evictions['released-with-error']).toBe(1);
      proxy.pass();
      expect((await pool.query('SELECT 4 AS n', [], { timeoutMs: 5_000 })).rows[0].n).toBe(4);
    } finally {
      await proxy.close();
    }
  });

  it('passes statement_timeout, lock_timeout and idle_in_transaction_session_timeout to every connection', async () => {
    const pool = newPool({
      statement_timeout: 1_234,
      lock_timeout: 2_345,
      idle_in_transaction_session_timeout: 3_456,
    });
    const client = await pool.connect();
    try {
      const show = async (name: string) => (await client.query(`SHOW ${name}`)).rows[0][name];
      expect(await show('statement_timeout')).toBe('1234ms');
      expect(await show('lock_timeout')).toBe('2345ms');
      expect(await show('idle_in_transaction_session_timeout')).toBe('3456ms');
    } finally {
      client.release();
    }
  });
});
