/**
 * pool.transaction() against a real server: commit, rollback, savepoints, re-runs that are provably
 * safe, outcome unknown when COMMIT was in flight, and no dirty or leaked connection on abort.
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AbortedError, OutcomeUnknownError, Pool, TimeoutError } from '../../src/index.js';
import { ChaosProxy } from '../../testbed/chaos-proxy.js';
import { PostgresServer } from '../../testbed/postgres.js';

let server: PostgresServer;
const pools: Pool[] = [];
let table = 0;

function newPool(config: Record<string, unknown> = {}): Pool {
  const pool = new Pool({ ...server.clientConfig(), ...config });
  pools.push(pool);
  return pool;
}

async function freshTable(columns = 'id int'): Promise<string> {
  const name = `tx_${++table}`;
  await server.query(`CREATE TABLE ${name} (${columns})`);
  return name;
}

const count = async (name: string) =>
  (await server.query(`SELECT count(*)::int AS n FROM ${name}`)).rows[0].n;

beforeAll(async () => {
  server = await PostgresServer.start();
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
});

afterAll(async () => {
  await server?.destroy();
});

describe('pool.transaction', () => {
  it('commits when fn resolves and rolls back when it throws', async () => {
    const pool = newPool({ max: 1 });
    const name = await freshTable();
    const value = await pool.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${name} VALUES (1)`);
      return 'done';
    });
    expect(value).toBe('done');
    const failure = new Error('fn failed');
    await expect(
      pool.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${name} VALUES (2)`);
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(await count(name)).toBe(1);
    const client = await pool.connect();
    expect(client.getTransactionStatus?.()).toBe('I');
    client.release();
  });

  it('opens the transaction with the isolation level, read only and deferrable asked for', async () => {
    const pool = newPool();
    const name = await freshTable();
    const isolation = await pool.transaction(
      async (tx) => (await tx.query('SHOW transaction_isolation')).rows[0].transaction_isolation,
      { isolation: 'serializable', readOnly: true, deferrable: true },
    );
    expect(isolation).toBe('serializable');
    const error = await pool
      .transaction((tx) => tx.query(`INSERT INTO ${name} VALUES (1)`), { readOnly: true })
      .catch((e: unknown) => e);
    expect((error as pg.DatabaseError).code).toBe('25006');
    await expect(pool.transaction(async () => 1, { isolation: 'chaos' as never })).rejects.toThrow(
      /isolation: got "chaos"/,
    );
  });

  it('re-runs serialization failures until a concurrent read-modify-write workload is correct', async () => {
    const pool = newPool({ max: 4 });
    const name = await freshTable('id int primary key, balance int');
    await server.query(`INSERT INTO ${name} VALUES (1, 0)`);
    let retries = 0;
    pool.on('retry', (event) => {
      if (event.phase === 'transaction') retries++;
    });
    const deposit = () =>
      pool.transaction(
        async (tx) => {
          const { rows } = await tx.query(`SELECT balance FROM ${name} WHERE id = 1`);
          await new Promise((r) => setTimeout(r, 20));
          await tx.query(`UPDATE ${name} SET balance = $1 WHERE id = 1`, [rows[0].balance + 10]);
        },
        { isolation: 'serializable', retry: 50 },
      );
    await Promise.all(Array.from({ length: 8 }, deposit));
    const { rows } = await server.query(`SELECT balance FROM ${name} WHERE id = 1`);
    expect(rows[0].balance).toBe(80);
    expect(retries).toBeGreaterThan(0);
  });

  it('re-runs the whole transaction once when its backend is killed before COMMIT', async () => {
    const pool = newPool({ application_name: 'tx-kill' });
    const name = await freshTable();
    let runs = 0;
    await pool.transaction(async (tx) => {
      runs++;
      await tx.query(`INSERT INTO ${name} VALUES ($1)`, [runs]);
      if (runs === 1) {
        const killer = new Promise((r) => setTimeout(r, 150)).then(() =>
          server.terminateBackends({ applicationName: 'tx-kill' }),
        );
        await Promise.all([tx.query('SELECT pg_sleep(1)').catch((e: unknown) => Promise.reject(e)), killer]);
      }
    });
    expect(runs).toBe(2);
    const { rows } = await server.query(`SELECT id FROM ${name}`);
    expect(rows).toEqual([{ id: 2 }]);
  });

  it('rolls back and releases a clean connection when the caller aborts mid-transaction', async () => {
    const pool = newPool({ max: 1 });
    const name = await freshTable();
    const controller = new AbortController();
    const running = pool
      .transaction(
        async (tx) => {
          await tx.query(`INSERT INTO ${name} VALUES (1)`);
          await tx.query('SELECT pg_sleep(5)');
        },
        { signal: controller.signal },
      )
      .catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    controller.abort();
    expect(await running).toBeInstanceOf(AbortedError);
    // The single connection comes back rolled back and idle: the next transaction gets it.
    expect(
      await pool.transaction(async (tx) => (await tx.query('SELECT 1 AS n')).rows[0].n, { timeoutMs: 5_000 }),
    ).toBe(1);
    expect(await count(name)).toBe(0);
    expect(pool.totalCount).toBe(1);
  });

  it('rolls back at its deadline, even while fn is busy with something else', async () => {
    const pool = newPool({ max: 1 });
    const name = await freshTable();
    const started = performance.now();
    const error = await pool
      .transaction(
        async (tx) => {
          await tx.query(`INSERT INTO ${name} VALUES (1)`);
          await new Promise((r) => setTimeout(r, 2_000));
        },
        { timeoutMs: 300 },
      )
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TimeoutError);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(await pool.query('SELECT 1 AS n').then((r) => r.rows[0].n)).toBe(1);
    expect(await count(name)).toBe(0);
  });

  it('uses savepoints for nested transactions', async () => {
    const pool = newPool();
    const name = await freshTable();
    await pool.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${name} VALUES (1)`);
      await tx
        .transaction(async (inner) => {
          await inner.query(`INSERT INTO ${name} VALUES (2)`);
          throw new Error('inner fails');
        })
        .catch(() => undefined);
      await tx.transaction(async (inner) => {
        await inner.query(`INSERT INTO ${name} VALUES (3)`);
      });
    });
    const { rows } = await server.query(`SELECT id FROM ${name} ORDER BY id`);
    expect(rows).toEqual([{ id: 1 }, { id: 3 }]);
  });

  it('does not commit a transaction whose failed statement fn swallowed', async () => {
    const pool = newPool();
    const name = await freshTable('id int primary key');
    const error = await pool
      .transaction(async (tx) => {
        await tx.query(`INSERT INTO ${name} VALUES (1)`);
        await tx.query(`INSERT INTO ${name} VALUES (1)`).catch(() => undefined);
      })
      .catch((e: unknown) => e);
    expect((error as pg.DatabaseError).code).toBe('23505');
    expect(await count(name)).toBe(0);
  });

  it('reports outcome unknown, never a re-run, when the connection is lost while COMMIT is in flight', async () => {
    const proxy = await ChaosProxy.start({ host: server.host, port: server.port });
    try {
      const pool = newPool({ host: proxy.host, port: proxy.port });
      const name = await freshTable();
      // A deferred constraint trigger makes COMMIT itself take a second.
      await server.query(`
        CREATE FUNCTION ${name}_slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER ${name}_slow AFTER INSERT ON ${name}
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${name}_slow();`);
      let runs = 0;
      const running = pool
        .transaction(async (tx) => {
          runs++;
          await tx.query(`INSERT INTO ${name} VALUES (1)`);
          setTimeout(() => proxy.resetAll(), 300);
        })
        .catch((e: unknown) => e);
      const error = await running;
      expect(error).toBeInstanceOf(OutcomeUnknownError);
      expect(runs).toBe(1);
    } finally {
      await proxy.close();
    }
  });
});
