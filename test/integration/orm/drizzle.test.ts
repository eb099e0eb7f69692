/**
 * Drizzle through steadfast's Pool, wired the way Drizzle's docs wire a pg.Pool:
 * `drizzle({ client: pool })` from `drizzle-orm/node-postgres`.
 *
 * What Drizzle does with the pool (drizzle-orm 0.45, node-postgres/session.js):
 * - plain statements go to `pool.query(config, params)`, with a `types` override and a `name` for
 *   prepared statements: steadfast's `query()` path, so its retries apply;
 * - `db.transaction()` decides whether it holds a pool by `client instanceof pg.Pool ||
 *   constructor.name.includes('Pool')`; if so it checks a client out with `pool.connect()`, runs
 *   BEGIN/COMMIT/ROLLBACK on it and calls `client.release()` with no argument, even when the
 *   connection broke. It runs BEGIN before its try/finally, so a failed BEGIN leaks the client (a
 *   Drizzle bug, pinned by a test below).
 * - It offers no cursor or stream for node-postgres, so there is no stream test here.
 */
import { eq, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { integer, pgTable, serial, text } from 'drizzle-orm/pg-core';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Pool } from '../../../src/index.js';
import { PostgresServer } from '../../../testbed/postgres.js';
import {
  COMPARE,
  checkedOut,
  createSchema,
  errorLabel,
  expectAtomicAcrossRestart,
  expectNoFailedReads,
  type PoolClass,
  Pools,
  printReport,
  restartUnderLoad,
  sessionsAfterEnd,
  TxLog,
  watchProcess,
} from './harness.js';

const items = pgTable('items', {
  id: serial('id').primaryKey(),
  name: text('name').notNull(),
  qty: integer('qty').notNull(),
});
const txLog = pgTable('tx_log', {
  tx: integer('tx').notNull(),
  part: integer('part').notNull(),
});

let server: PostgresServer;
let watch: ReturnType<typeof watchProcess>;
const pools = new Pools('orm-drizzle');
const newPool = <P extends pg.Pool>(PoolClass: PoolClass<P>, config?: pg.PoolConfig) =>
  pools.create(server, PoolClass, config);

const countRows = async (table: string, where = 'true') =>
  (await server.query(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`)).rows[0].n as number;

beforeAll(async () => {
  server = await PostgresServer.start();
  await createSchema(server, 0);
  watch = watchProcess();
});

afterEach(async () => {
  await pools.endAll();
  expect(watch.seen).toEqual([]);
});

afterAll(async () => {
  watch?.stop();
  await server?.destroy();
});

describe('Drizzle (drizzle-orm/node-postgres) on steadfast', () => {
  it('takes the pool as its client and sees a pg.Pool: instanceof and constructor name', async () => {
    const { pool } = newPool(Pool);
    const db = drizzle({ client: pool });
    expect(db.$client).toBe(pool);
    expect(pool).toBeInstanceOf(pg.Pool);
    // The exact test Drizzle's transaction() makes (session.js).
    expect(Object.getPrototypeOf(pool).constructor.name.includes('Pool')).toBe(true);
    // Had Drizzle not recognised a pool, BEGIN would go through pool.query() and every statement of the
    // "transaction" would run in its own implicit transaction: one txid each.
    const acquires: unknown[] = [];
    pool.on('acquire', (client) => acquires.push(client));
    const seen = await db.transaction(async (tx) => {
      const a = await tx.execute(sql`SELECT txid_current()::text AS id, pg_backend_pid() AS pid`);
      const b = await tx.execute(sql`SELECT txid_current()::text AS id, pg_backend_pid() AS pid`);
      return [a.rows[0], b.rows[0]];
    });
    expect(seen[0]).toEqual(seen[1]);
    expect(acquires).toHaveLength(1);
    expect(await checkedOut(pool)).toBe(0);
  });

  it('runs CRUD through the query builder, plain and as named prepared statements', async () => {
    const { pool } = newPool(Pool);
    const db = drizzle({ client: pool });
    const [created] = await db.insert(items).values({ name: 'apple', qty: 3 }).returning();
    expect(created).toMatchObject({ name: 'apple', qty: 3 });
    const id = created!.id;
    expect(await db.select().from(items).where(eq(items.id, id))).toEqual([{ id, name: 'apple', qty: 3 }]);
    const byId = db
      .select({ name: items.name })
      .from(items)
      .where(eq(items.id, sql.placeholder('id')))
      .prepare('drizzle_item_by_id');
    expect(await byId.execute({ id })).toEqual([{ name: 'apple' }]);
    const updated = await db
      .update(items)
      .set({ qty: sql`${items.qty} + 1` })
      .where(eq(items.id, id))
      .returning({ qty: items.qty });
    expect(updated).toEqual([{ qty: 4 }]);
    expect(await countRows('items', `id = ${id} AND qty = 4`)).toBe(1);
    await db.delete(items).where(eq(items.id, id));
    expect(await countRows('items', `id = ${id}`)).toBe(0);
    expect(await byId.execute({ id })).toEqual([]);
  });

  it('commits a transaction, and rolls back one that throws or calls tx.rollback(), atomically', async () => {
    const { pool } = newPool(Pool);
    const db = drizzle({ client: pool });
    await db.transaction(async (tx) => {
      await tx.insert(items).values({ name: 'tx-commit', qty: 1 });
      await tx.insert(items).values({ name: 'tx-commit', qty: 2 });
    });
    expect(await countRows('items', "name = 'tx-commit'")).toBe(2);

    const failure = new Error('business rule failed');
    await expect(
      db.transaction(async (tx) => {
        await tx.insert(items).values({ name: 'tx-throw', qty: 1 });
        await tx.insert(items).values({ name: 'tx-throw', qty: 2 });
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(await countRows('items', "name = 'tx-throw'")).toBe(0);

    await expect(
      db.transaction(async (tx) => {
        await tx.insert(items).values({ name: 'tx-rollback', qty: 1 });
        tx.rollback();
      }),
    ).rejects.toThrow(/Rollback/);
    expect(await countRows('items', "name = 'tx-rollback'")).toBe(0);

    // A failed SQL statement inside: the server aborts the transaction, Drizzle rolls back.
    await expect(
      db.transaction(async (tx) => {
        await tx.insert(items).values({ name: 'tx-sql-error', qty: 1 });
        await tx.execute(sql`SELECT * FROM no_such_table`);
      }),
    ).rejects.toMatchObject({ cause: { code: '42P01' } });
    expect(await countRows('items', "name = 'tx-sql-error'")).toBe(0);

    // Nested: a savepoint rolled back alone.
    await db.transaction(async (tx) => {
      await tx.insert(items).values({ name: 'tx-outer', qty: 1 });
      await tx
        .transaction(async (inner) => {
          await inner.insert(items).values({ name: 'tx-inner', qty: 1 });
          throw new Error('inner only');
        })
        .catch(() => undefined);
    });
    expect(await countRows('items', "name = 'tx-outer'")).toBe(1);
    expect(await countRows('items', "name = 'tx-inner'")).toBe(0);

    // Every connection came back clean (no transaction left open by a rollback path).
    expect(await checkedOut(pool)).toBe(0);
    const { rows } = await pool.query('SELECT 1 AS one');
    expect(rows).toEqual([{ one: 1 }]);
  });

  /**
   * A Drizzle bug, not a steadfast one: `NodePgSession.transaction()` checks a client out and runs
   * BEGIN before its try/finally, so when BEGIN fails (here a bad isolation level; in the restart test
   * below, a connection the server just terminated) the client is never released. pg.Pool keeps it
   * checked out for good, and its end() then never resolves; steadfast keeps it too, and end() closes it
   * after `closeTimeoutMs` (30 s by default), or sooner with `close({ timeoutMs })`.
   */
  it('leaks the client when BEGIN fails, on pg.Pool and on steadfast alike', async () => {
    for (const PoolClass of [pg.Pool, Pool] as PoolClass[]) {
      const { pool, applicationName } = newPool(PoolClass, { max: 2 });
      const acquired: pg.PoolClient[] = [];
      pool.on('acquire', (client) => acquired.push(client));
      const db = drizzle({ client: pool });
      await expect(
        db.transaction(async () => undefined, { isolationLevel: 'no such level' as 'serializable' }),
      ).rejects.toMatchObject({ cause: { code: '42601' } });
      expect(await checkedOut(pool), PoolClass.name).toBe(1);
      const still = (p: Promise<unknown>, ms: number) =>
        Promise.race([p.then(() => 'ended'), new Promise((r) => setTimeout(r, ms, 'still waiting'))]);
      if (pool instanceof Pool) {
        // end() would wait closeTimeoutMs (30 s) for it; close() takes a shorter grace period.
        const ended = pool.close({ timeoutMs: 300 });
        expect(await still(ended, 100)).toBe('still waiting');
        await ended;
      } else {
        const ended = pool.end();
        expect(await still(ended, 300)).toBe('still waiting');
        acquired[0]!.release(); // pg.Pool would wait forever: hand the client back for it
        await ended;
      }
      expect(await server.countConnections({ applicationName })).toBe(0);
    }
  });

  it('survives a database restart mid-run: no failed read, atomic writes, no crash, no leftover connection', async () => {
    const { report, atomicity, pool, applicationName } = await restartScenario(Pool, 'drizzle on steadfast');
    // Reads go through pool.query(): steadfast re-runs them on a fresh connection.
    expectNoFailedReads(report);
    // A transaction can fail (its connection was terminated under it); none may be half applied.
    expectAtomicAcrossRestart(atomicity, pool);
    // Drizzle leaks the client of a transaction whose BEGIN failed (see the test above), and only that.
    const writeErrors = report.loops.find((loop) => loop.name === 'write-tx')!.errors;
    const failedBegins = writeErrors.filter((e) => /Failed query: begin/.test(e)).length;
    expect(await checkedOut(pool)).toBe(failedBegins);
    // end() would wait closeTimeoutMs (30 s) for such a client; the app that knows it leaked closes sooner.
    await (failedBegins > 0 ? pool.close({ timeoutMs: 500 }) : pool.end());
    expect(await server.countConnections({ applicationName })).toBe(0);
    expect(watch.seen).toEqual([]);
  });

  it.runIf(COMPARE)('for comparison: the same run on a plain pg.Pool', async () => {
    const { pool, applicationName } = await restartScenario(pg.Pool, 'drizzle on pg.Pool');
    // pg.Pool's uncaught errors are part of what this run shows, not a failure of the suite.
    watch.seen.splice(0);
    // A client Drizzle leaked would keep pg.Pool's end() waiting forever: not awaited then.
    const leaked = await checkedOut(pool);
    if (leaked > 0)
      console.log(`[orm-matrix] drizzle on pg.Pool: ${leaked} client(s) leaked, end() never resolves`);
    const ended = pool.end();
    if (leaked === 0) await ended;
    else await new Promise((r) => setTimeout(r, 100));
    expect(await sessionsAfterEnd(server, applicationName)).toBe(0);
  });
});

/**
 * Three read loops (the query builder, and a named prepared statement) and one loop of two-row
 * transactions through Drizzle while the server restarts.
 */
async function restartScenario<P extends pg.Pool>(PoolClass: PoolClass<P>, title: string) {
  await server.query('TRUNCATE tx_log');
  const [seed] = (await server.query("INSERT INTO items (name, qty) VALUES ('restart', 1) RETURNING id"))
    .rows as { id: number }[];
  const { pool, applicationName } = newPool(PoolClass);
  // pg.Pool's docs require this listener (an idle client's error is emitted on the pool, and an
  // 'error' event without a listener kills the process); steadfast does not need it.
  if (!(pool instanceof Pool)) pool.on('error', () => undefined);
  const db = drizzle({ client: pool });
  const byId = db
    .select()
    .from(items)
    .where(eq(items.id, sql.placeholder('id')))
    .prepare('drizzle_restart');
  const log = new TxLog('tx_log');
  const read = async () => {
    const rows = await db.select().from(items).where(eq(items.id, seed!.id));
    if (rows.length !== 1) throw new Error(`expected the seeded row, got ${rows.length}`);
  };
  const report = await restartUnderLoad(server, [
    { name: 'read-1', run: read },
    { name: 'read-2', run: read },
    {
      name: 'read-prepared',
      run: async () => {
        if ((await byId.execute({ id: seed!.id })).length !== 1) throw new Error('expected the seeded row');
      },
    },
    {
      name: 'write-tx',
      run: () =>
        log.run((tx) =>
          db.transaction(async (t) => {
            await t.insert(txLog).values({ tx, part: 1 });
            await t.insert(txLog).values({ tx, part: 2 });
          }),
        ),
    },
  ]);
  const atomicity = await log.check(server);
  printReport(title, report, { ...atomicity, uncaught: watch.seen.map((e) => errorLabel(e)) });
  return { report, atomicity, pool, applicationName };
}
