/**
 * The pg.Pool face against a real PostgreSQL: the surface ORMs and applications use, and the
 * behaviour that makes it safer than pg.Pool (reset on release, idle errors that cannot crash, retries).
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  AcquireTimeoutError,
  ConnectTimeoutError,
  DoubleReleaseError,
  ErrorCodes,
  OutcomeUnknownError,
  Pool,
  PoolClosedError,
} from '../../src/index.js';
import { ChaosProxy } from '../../testbed/chaos-proxy.js';
import { PostgresServer } from '../../testbed/postgres.js';

let server: PostgresServer;
const pools: Pool[] = [];
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

function newPool(config: ConstructorParameters<typeof Pool>[0] = {}): Pool {
  const pool = new Pool({ ...server.clientConfig(), ...config });
  pools.push(pool);
  return pool;
}

beforeAll(async () => {
  server = await PostgresServer.start();
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
  expect(uncaught).toEqual([]);
});

afterAll(async () => {
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
  await server?.destroy();
});

describe('pg.Pool compatibility', () => {
  it('is a pg.Pool by instanceof and by constructor name', () => {
    const pool = newPool();
    expect(pool).toBeInstanceOf(pg.Pool);
    expect(pool.constructor.name).toContain('Pool');
    expect(pool.options.max).toBe(10);
  });

  it('runs queries in promise and callback forms, with values, rowMode and types', async () => {
    const pool = newPool();
    const viaPromise = await pool.query('SELECT $1::int + 1 AS n', [41]);
    expect(viaPromise.rows).toEqual([{ n: 42 }]);
    const viaConfig = await pool.query({ text: 'SELECT 1 AS a, 2 AS b', rowMode: 'array' });
    expect(viaConfig.rows).toEqual([[1, 2]]);
    const types = { getTypeParser: () => (value: string) => `parsed:${value}` };
    const typed = await pool.query({ text: 'SELECT 7::int AS n', types } as pg.QueryConfig);
    expect(typed.rows[0].n).toBe('parsed:7');
    const viaCallback = await new Promise<pg.QueryResult>((resolve, reject) => {
      const returned = pool.query(
        'SELECT $1::text AS t',
        ['cb'],
        (err: Error | undefined, res: pg.QueryResult) => (err ? reject(err) : resolve(res)),
      );
      expect(returned).toBeUndefined();
    });
    expect(viaCallback.rows[0].t).toBe('cb');
    const noValues = await new Promise<pg.QueryResult>((resolve, reject) =>
      pool.query('SELECT 3 AS n', (err: Error | undefined, res: pg.QueryResult) =>
        err ? reject(err) : resolve(res),
      ),
    );
    expect(noValues.rows[0].n).toBe(3);
  });

  it('passes SQL errors through untouched and keeps the connection', async () => {
    const pool = newPool();
    await pool.query('SELECT 1');
    const error = await pool.query('SELEC 1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(pg.DatabaseError);
    expect((error as pg.DatabaseError).code).toBe('42601');
    expect(pool.totalCount).toBe(1);
    expect(
      pool.stats().counters.evictions.broken + pool.stats().counters.evictions['released-with-error'],
    ).toBe(0);
  });

  it('hands out real pg.Clients whose release works detached, and refuses a double release', async () => {
    const pool = newPool();
    const client = await pool.connect();
    expect(client).toBeInstanceOf(pg.Client);
    expect(typeof (client as unknown as { processID: unknown }).processID).toBe('number');
    const { release } = client;
    release();
    expect(pool.idleCount).toBe(1);
    expect(() => release()).toThrow(DoubleReleaseError);
    const viaCallback = await new Promise<pg.PoolClient>((resolve, reject) =>
      pool.connect((err, c, done) => {
        if (err || !c) return reject(err);
        expect(done).toBe(c.release);
        resolve(c);
      }),
    );
    expect(viaCallback).toBe(client); // LIFO: the same connection again
    viaCallback.release(true);
    expect(pool.totalCount).toBe(0);
  });

  it('keeps pg counts and emits pg events', async () => {
    const pool = newPool({ max: 2 });
    const seen: string[] = [];
    for (const name of ['connect', 'acquire', 'release', 'remove'] as const)
      pool.on(name, () => seen.push(name));
    const a = await pool.connect();
    const b = await pool.connect();
    const waiting = pool.connect();
    await new Promise((r) => setTimeout(r, 20));
    expect([pool.totalCount, pool.idleCount, pool.waitingCount]).toEqual([2, 0, 1]);
    a.release();
    (await waiting).release();
    b.release(new Error('done with it'));
    expect([pool.totalCount, pool.idleCount, pool.waitingCount]).toEqual([1, 1, 0]);
    expect(seen).toEqual([
      'connect',
      'acquire',
      'connect',
      'acquire',
      'release',
      'acquire',
      'release',
      'release',
      'remove',
    ]);
  });

  it('rolls back a client returned inside a transaction before anyone else gets it', async () => {
    const pool = newPool({ max: 1 });
    await pool.query('CREATE TABLE IF NOT EXISTS reset_probe (id int)');
    const client = await pool.connect();
    await client.query('BEGIN');
    await client.query('INSERT INTO reset_probe VALUES (1)');
    client.release();
    const next = await pool.connect();
    expect(next).toBe(client);
    expect(next.getTransactionStatus?.() ?? 'I').toBe('I');
    const { rows } = await next.query('SELECT count(*)::int AS n FROM reset_probe');
    expect(rows[0].n).toBe(0);
    next.release();
  });

  it('ends in promise and callback forms, idempotently, leaving no server connection', async () => {
    const pool = newPool({ application_name: 'end-probe' } as never);
    await Promise.all([pool.query('SELECT pg_sleep(0.05)'), pool.query('SELECT 1')]);
    expect(await server.countConnections({ applicationName: 'end-probe' })).toBeGreaterThan(0);
    await new Promise<void>((resolve) => pool.end(resolve));
    await pool.end();
    expect(pool.ended).toBe(true);
    expect(await server.countConnections({ applicationName: 'end-probe' })).toBe(0);
    await expect(pool.query('SELECT 1')).rejects.toBeInstanceOf(PoolClosedError);
  });

  it('never prints its password', () => {
    const pool = newPool({ password: 'hunter2-secret' });
    const { inspect } = require('node:util') as typeof import('node:util');
    expect(inspect(pool)).not.toContain('hunter2');
    expect(JSON.stringify(pool)).not.toContain('hunter2');
  });
});

describe('faults on single connections', () => {
  it('survives an idle connection being killed with no error listener, and the next query works', async () => {
    const pool = newPool({ application_name: 'idle-kill' } as never);
    await pool.query('SELECT 1');
    expect(pool.listenerCount('error')).toBe(0);
    expect(await server.terminateBackends({ applicationName: 'idle-kill' })).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(pool.totalCount).toBe(0);
    expect(pool.stats().counters.evictions.broken).toBe(1);
    expect((await pool.query('SELECT 2 AS n')).rows[0].n).toBe(2);
  });

  it('reports an idle connection error to an error listener, as information', async () => {
    const pool = newPool({ application_name: 'idle-kill-2' } as never);
    const errors: unknown[] = [];
    pool.on('error', (err) => errors.push(err));
    await pool.query('SELECT 1');
    await server.terminateBackends({ applicationName: 'idle-kill-2' });
    await new Promise((r) => setTimeout(r, 100));
    expect(errors).toHaveLength(1);
    expect((errors[0] as pg.DatabaseError).code).toBe('57P01');
  });

  it('re-runs a statement the server aborted before it could commit (57P01)', async () => {
    const pool = newPool({ application_name: 'retry-57P01' } as never);
    const retries: unknown[] = [];
    pool.on('retry', (event) => retries.push(event));
    const running = pool.query('SELECT pg_sleep(0.5), 1 AS n');
    await new Promise((r) => setTimeout(r, 150));
    expect(await server.terminateBackends({ applicationName: 'retry-57P01' })).toBe(1);
    expect((await running).rows[0].n).toBe(1);
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatchObject({ phase: 'query', attempt: 1 });
  });

  it('reports outcome unknown when the connection is lost after the statement was sent, unless idempotent', async () => {
    const proxy = await ChaosProxy.start({ host: server.host, port: server.port });
    try {
      const pool = newPool({ host: proxy.host, port: proxy.port });
      await pool.query('SELECT 1');
      const lost = pool.query('SELECT pg_sleep(0.5)');
      await new Promise((r) => setTimeout(r, 100));
      proxy.resetAll();
      const error = await lost.catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OutcomeUnknownError);
      expect((error as OutcomeUnknownError).code).toBe(ErrorCodes.OUTCOME_UNKNOWN);
      expect((error as OutcomeUnknownError).cause).toBeInstanceOf(Error);

      const retried = pool.query('SELECT pg_sleep(0.5), 5 AS n', [], { idempotent: true });
      await new Promise((r) => setTimeout(r, 100));
      proxy.resetAll();
      expect((await retried).rows[0].n).toBe(5);
    } finally {
      await proxy.close();
    }
  });

  it('fails a hanging connect by its deadline, with the connect timeout as cause', async () => {
    const proxy = await ChaosProxy.start({ host: server.host, port: server.port });
    try {
      proxy.blackhole();
      const pool = newPool({
        host: proxy.host,
        port: proxy.port,
        connectTimeoutMs: 300,
        acquireTimeoutMs: 1_000,
      });
      const started = performance.now();
      const error = await pool.query('SELECT 1').catch((e: unknown) => e);
      const elapsed = performance.now() - started;
      expect(error).toBeInstanceOf(AcquireTimeoutError);
      expect((error as AcquireTimeoutError).cause).toBeInstanceOf(ConnectTimeoutError);
      expect(elapsed).toBeGreaterThanOrEqual(990);
      expect(elapsed).toBeLessThan(3_000);
    } finally {
      await proxy.close();
    }
  });
});

describe('abandoned acquires', () => {
  it('leaves no leaked connection and no growing heap after 10,000 aborted or timed-out acquires', async () => {
    const { setFlagsFromString } = await import('node:v8');
    const { runInNewContext } = await import('node:vm');
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const pool = newPool({ max: 2, application_name: 'abandon' } as never);
    const held = [await pool.connect(), await pool.connect()];

    const abandon = async (count: number) => {
      const settled: Promise<unknown>[] = [];
      for (let i = 0; i < count; i++) {
        if (i % 2 === 0) {
          const controller = new AbortController();
          settled.push(pool.connect({ signal: controller.signal }).catch((e: unknown) => e));
          controller.abort();
        } else {
          settled.push(pool.connect({ timeoutMs: 1 }).catch((e: unknown) => e));
        }
      }
      const outcomes = await Promise.all(settled);
      expect(outcomes.every((o) => o instanceof Error)).toBe(true);
    };

    await abandon(10_000); // warm up: JIT, lazily created structures
    gc();
    const before = process.memoryUsage().heapUsed;
    await abandon(10_000);
    // Connections that arrive for nobody go back to the pool: release the held ones meanwhile.
    for (const client of held) client.release();
    gc();
    const growth = process.memoryUsage().heapUsed - before;
    expect(pool.waitingCount).toBe(0);
    expect(pool.totalCount).toBe(2);
    expect(pool.idleCount).toBe(2);
    expect(await server.countConnections({ applicationName: 'abandon' })).toBe(2);
    expect(growth).toBeLessThan(1024 * 1024);
    const stats = pool.stats();
    expect(stats.counters.aborts).toBe(10_000);
    expect(stats.counters.timeouts).toBe(10_000);
  });
});

describe('pg.Pool behaviours ORMs rely on', () => {
  it('runs onConnect and verify on every new client, and fails the connect when they fail', async () => {
    const seen: string[] = [];
    const pool = newPool({
      onConnect: async (client: pg.Client) => {
        seen.push('onConnect');
        await client.query("SET application_name = 'hooked'");
      },
      verify: (client: pg.Client, done: (err?: Error) => void) => {
        seen.push('verify');
        client.query('SELECT 1').then(() => done(), done);
      },
    } as never);
    const { rows } = await pool.query('SHOW application_name');
    expect(rows[0].application_name).toBe('hooked');
    expect(seen).toEqual(['onConnect', 'verify']);

    const failing = newPool({
      acquireTimeoutMs: 2_000,
      onConnect: async (client: pg.Client) => {
        await client.query('SELECT * FROM no_such_table');
      },
    } as never);
    const error = await failing.query('SELECT 1').catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe('ERR_STEADFAST_CONNECT_FATAL');
    expect(((error as Error).cause as pg.DatabaseError).code).toBe('42P01');
    expect(failing.totalCount).toBe(0);
  });

  it("leaves the caller's query config object as it was, even with a Client that writes into it", async () => {
    // Older pg 8.x versions set `callback` on a config object passed with a callback; reused later in the
    // promise form, such an object would answer the old callback instead of returning a promise.
    class WritingClient extends pg.Client {
      override query(config: any, values?: any, callback?: any): any {
        if (typeof config === 'object' && config !== null && typeof callback === 'function') {
          config.callback = callback;
        }
        return super.query(config, values, callback);
      }
    }
    const pool = newPool({ Client: WritingClient, max: 1 } as never);
    const config = { text: 'SELECT $1::int AS n', values: [1], rowMode: 'array' as const };
    const first = await pool.query(config);
    expect(first.rows).toEqual([[1]]);
    expect(Object.keys(config)).toEqual(['text', 'values', 'rowMode']);
    const client = await pool.connect();
    try {
      const again = await client.query(config);
      expect(again.rows).toEqual([[1]]);
    } finally {
      client.release();
    }
  });

  it('lets statements released with a client finish, as pg.Pool does, then reuses it', async () => {
    const pool = newPool({ max: 1 });
    const client = await pool.connect();
    const running = client.query('SELECT pg_sleep(0.2), 1 AS n');
    client.release();
    expect((await running).rows[0].n).toBe(1);
    const again = await pool.connect();
    expect(again).toBe(client);
    again.release();
    expect(pool.stats().counters.evictions['reset-failed']).toBe(0);
  });

  it('takes a pg.Query submittable, releasing its client when it completes, and reports a failed acquire', async () => {
    const pool = newPool({ max: 1 });
    const rows = await new Promise<unknown[]>((resolve, reject) => {
      const query = new pg.Query('SELECT generate_series(1, 3) AS n');
      pool.query(query as never, (err: Error | undefined, res: pg.QueryResult) =>
        err ? reject(err) : resolve(res.rows),
      );
    });
    expect(rows).toHaveLength(3);
    expect(pool.idleCount).toBe(1);
    const viaPromise = (await pool.query(new pg.Query('SELECT 1 AS n') as never)) as pg.QueryResult;
    expect(viaPromise.rows).toEqual([{ n: 1 }]);

    // Queued behind a held client: it runs once the client comes back.
    const held = await pool.connect();
    const queued = new Promise<unknown>((resolve) => {
      pool.query(new pg.Query('SELECT 2 AS n') as never, (err: unknown, res: pg.QueryResult) =>
        resolve(err ?? res.rows),
      );
    });
    held.release();
    expect(await queued).toEqual([{ n: 2 }]);

    // A submittable whose acquire fails hears about it through its callback; nothing crashes.
    const busy = newPool({ max: 1, acquireTimeoutMs: 200 });
    const holder = await busy.connect();
    const failed = await new Promise<unknown>((resolve) => {
      busy.query(new pg.Query('SELECT 1') as never, (err: unknown) => resolve(err));
    });
    holder.release();
    expect(failed).toBeInstanceOf(AcquireTimeoutError);
  });

  it('rejects a bad per-call deadline instead of treating it as 1 ms', async () => {
    const pool = newPool();
    for (const timeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      const error = await pool.query('SELECT 1', [], { timeoutMs }).catch((e: unknown) => e);
      expect((error as { code?: string }).code).toBe(ErrorCodes.INVALID_OPTION);
    }
    await expect(pool.connect({ timeoutMs: 0 })).rejects.toThrow(/timeoutMs/);
  });

  it('does not re-run plain text that may hold several statements when the session is terminated mid-way', async () => {
    await server.query('CREATE TABLE IF NOT EXISTS multi_probe (id int)');
    const pool = newPool({ application_name: 'multi' } as never);
    const running = pool
      .query('INSERT INTO multi_probe VALUES (1); SELECT pg_sleep(1)')
      .catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    await server.terminateBackends({ applicationName: 'multi' });
    const error = await running;
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    const { rows } = await server.query('SELECT count(*)::int AS n FROM multi_probe');
    expect(rows[0].n).toBe(0); // an implicit transaction: the INSERT did not commit, but nothing proved it
  });
});

describe('regressions', () => {
  it('end() with connection attempts in flight settles at once (pg never settles a connect ended by end())', async () => {
    const pool = newPool();
    await Promise.all(Array.from({ length: 5 }, () => pool.query('SELECT 1')));
    const started = performance.now();
    await pool.end();
    expect(performance.now() - started).toBeLessThan(1_500);
  });
});

describe('lifecycle events', () => {
  it('reports connect, acquire, release and operations with timings, and mirrors them on diagnostics_channel', async () => {
    const diagnostics = await import('node:diagnostics_channel');
    const pool = newPool({ poolName: 'lifecycle-probe' });
    const seen: Record<string, any[]> = {};
    for (const name of ['connect', 'acquire', 'release', 'operation'] as const) {
      pool.lifecycle.on(name, (payload: unknown) => {
        seen[name] ??= [];
        seen[name].push(payload);
      });
    }
    const published: any[] = [];
    const onMessage = (message: unknown) => published.push(message);
    diagnostics.subscribe('pg-steadfast:acquire', onMessage);
    try {
      await pool.query('SELECT 1');
      await pool.query('SELEC').catch(() => undefined);
    } finally {
      diagnostics.unsubscribe('pg-steadfast:acquire', onMessage);
    }
    expect(seen.connect).toHaveLength(1);
    expect(seen.connect![0].durationMs).toBeGreaterThan(0);
    expect(seen.acquire).toHaveLength(2);
    expect(typeof seen.acquire![0].waitMs).toBe('number');
    expect(seen.release).toHaveLength(2);
    expect(seen.operation!.map((o) => [o.kind, o.error === undefined])).toEqual([
      ['query', true],
      ['query', false],
    ]);
    expect(published).toHaveLength(2);
    expect(published[0]).toMatchObject({ pool: 'lifecycle-probe', id: 1 });
    expect(pool.poolName).toBe('lifecycle-probe');
  });
});
