/**
 * Kysely through steadfast's Pool, wired the way Kysely's docs wire a pg.Pool:
 * `new Kysely({ dialect: new PostgresDialect({ pool, cursor }) })`.
 *
 * What Kysely does with the pool (kysely 0.28, dialect/postgres/postgres-driver.js):
 * - every statement, inside a transaction or not, runs on a checked-out client: `pool.connect()`, then
 *   `client.query(sql, params)`, then `client.release()` with no argument. steadfast's `query()` retries
 *   are therefore not on this path: a statement in flight when the server goes away fails, as on pg.Pool.
 * - it caches its connection wrapper per client object (`WeakMap<client, PostgresConnection>`) and runs
 *   `onCreateConnection` only the first time it sees a client, so the pool must hand out the same
 *   object for the same server connection and a new object for a new one.
 * - `.stream()` submits `new cursor(sql, params)` (pg-cursor) to `client.query()`.
 * - `db.destroy()` calls `pool.end()`.
 * Newer Kysely versions read `client.processID` to cancel queries; it is checked here too.
 */
import { type Generated, Kysely, PostgresDialect, sql } from 'kysely';
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
  expectOnlyInFlightFailures,
  optionalModule,
  type PoolClass,
  Pools,
  printReport,
  restartUnderLoad,
  sessionsAfterEnd,
  TxLog,
  watchProcess,
} from './harness.js';

interface Database {
  items: { id: Generated<number>; name: string; qty: number };
  tx_log: { tx: number; part: number };
}

/** pg-cursor is not a devDependency yet: the stream test runs only when it is installed. */
const Cursor = optionalModule<new (...args: any[]) => any>('pg-cursor');

let server: PostgresServer;
let watch: ReturnType<typeof watchProcess>;
const pools = new Pools('orm-kysely');
const dbs: Kysely<Database>[] = [];

function newDb<P extends pg.Pool>(PoolClass: PoolClass<P>, config?: pg.PoolConfig, onCreate?: () => void) {
  const { pool, applicationName } = pools.create(server, PoolClass, config);
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({
      pool,
      ...(Cursor ? { cursor: Cursor } : {}),
      ...(onCreate ? { onCreateConnection: async () => onCreate() } : {}),
    }),
  });
  dbs.push(db);
  return { db, pool, applicationName };
}

const countRows = async (table: string, where = 'true') =>
  (await server.query(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`)).rows[0].n as number;

beforeAll(async () => {
  server = await PostgresServer.start();
  await createSchema(server);
  watch = watchProcess();
});

afterEach(async () => {
  dbs.splice(0);
  await pools.endAll();
  expect(watch.seen).toEqual([]);
});

afterAll(async () => {
  watch?.stop();
  await server?.destroy();
});

describe('Kysely (PostgresDialect) on steadfast', () => {
  it('creates its connection wrapper once per server connection, and reads a real processID', async () => {
    let created = 0;
    const { db, pool, applicationName } = newDb(Pool, { max: 2 }, () => created++);
    const connected: pg.PoolClient[] = [];
    pool.on('connect', (client) => connected.push(client));
    const acquired = new Set<unknown>();
    pool.on('acquire', (client) => acquired.add(client));
    await Promise.all(Array.from({ length: 20 }, () => sql`SELECT pg_sleep(0.005)`.execute(db)));
    for (let i = 0; i < 10; i++) await db.selectFrom('items').select('id').limit(1).execute();
    expect(connected).toHaveLength(2);
    expect(acquired.size).toBe(2);
    expect(created).toBe(2);
    // processID is the backend's pid (what pg_cancel_backend needs).
    const pids = new Set((connected as unknown as { processID: number }[]).map((c) => c.processID));
    const { rows } = await db
      .connection()
      .execute(async (conn) => sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(conn));
    expect(pids.has(rows[0]!.pid)).toBe(true);

    // A connection the pool replaced is a new client object: Kysely runs onCreateConnection for it.
    expect(await server.terminateBackends({ applicationName })).toBe(2);
    // The pool hears of it on its own (the server says goodbye on each idle connection).
    for (let i = 0; i < 200 && pool.totalCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(pool.totalCount).toBe(0);
    await db.selectFrom('items').select('id').limit(1).execute();
    expect(created).toBe(3);
    expect(connected).toHaveLength(3);
  });

  it('runs CRUD', async () => {
    const { db } = newDb(Pool);
    const created = await db
      .insertInto('items')
      .values({ name: 'pear', qty: 5 })
      .returning(['id', 'name', 'qty'])
      .executeTakeFirstOrThrow();
    expect(created).toMatchObject({ name: 'pear', qty: 5 });
    const { id } = created;
    expect(await db.selectFrom('items').selectAll().where('id', '=', id).execute()).toEqual([
      { id, name: 'pear', qty: 5 },
    ]);
    const updated = await db
      .updateTable('items')
      .set((eb) => ({ qty: eb('qty', '+', 1) }))
      .where('id', '=', id)
      .executeTakeFirst();
    expect(updated.numUpdatedRows).toBe(1n);
    expect(await countRows('items', `id = ${id} AND qty = 6`)).toBe(1);
    const deleted = await db.deleteFrom('items').where('id', '=', id).executeTakeFirst();
    expect(deleted.numDeletedRows).toBe(1n);
    expect(await countRows('items', `id = ${id}`)).toBe(0);
  });

  it('commits a transaction, and rolls back one that throws, atomically; controlled transactions and savepoints too', async () => {
    const { db, pool } = newDb(Pool);
    await db.transaction().execute(async (trx) => {
      await trx.insertInto('items').values({ name: 'k-commit', qty: 1 }).execute();
      await trx.insertInto('items').values({ name: 'k-commit', qty: 2 }).execute();
    });
    expect(await countRows('items', "name = 'k-commit'")).toBe(2);

    const failure = new Error('business rule failed');
    await expect(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('items').values({ name: 'k-throw', qty: 1 }).execute();
        await trx.insertInto('items').values({ name: 'k-throw', qty: 2 }).execute();
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(await countRows('items', "name = 'k-throw'")).toBe(0);

    const trx = await db.startTransaction().execute();
    await trx.insertInto('items').values({ name: 'k-controlled', qty: 1 }).execute();
    const afterSavepoint = await trx.savepoint('sp1').execute();
    await afterSavepoint.insertInto('items').values({ name: 'k-savepoint', qty: 1 }).execute();
    await afterSavepoint.rollbackToSavepoint('sp1').execute();
    await trx.commit().execute();
    expect(await countRows('items', "name = 'k-controlled'")).toBe(1);
    expect(await countRows('items', "name = 'k-savepoint'")).toBe(0);

    const abandoned = await db.startTransaction().execute();
    await abandoned.insertInto('items').values({ name: 'k-rolled-back', qty: 1 }).execute();
    await abandoned.rollback().execute();
    expect(await countRows('items', "name = 'k-rolled-back'")).toBe(0);

    expect(await checkedOut(pool)).toBe(0);
  });

  it.skipIf(!Cursor)(
    'streams rows through a pg-cursor, and releases the client when the loop breaks early',
    async () => {
      const { db, pool } = newDb(Pool, { max: 1 });
      let total = 0;
      let chunks = 0;
      for await (const row of db.selectFrom('items').select('qty').where('name', '=', 'bulk').stream(100)) {
        total += row.qty;
        chunks++;
      }
      expect(chunks).toBe(1000);
      expect(total).toBe((1000 * 1001) / 2);
      let seen = 0;
      for await (const _ of db.selectFrom('items').select('id').where('name', '=', 'bulk').stream(10)) {
        if (++seen === 15) break;
      }
      expect(seen).toBe(15);
      // Back in the pool, outside any transaction, and usable (max 1: the same connection).
      expect(pool.idleCount).toBe(1);
      const { rows } = await pool.query('SELECT 1 AS one');
      expect(rows).toEqual([{ one: 1 }]);
    },
  );

  it('destroy() ends the pool it was given', async () => {
    const { db, pool, applicationName } = newDb(Pool);
    await db.selectFrom('items').select('id').limit(1).execute();
    expect(await server.countConnections({ applicationName })).toBe(1);
    await db.destroy();
    expect(pool.ended).toBe(true);
    expect(await server.countConnections({ applicationName })).toBe(0);
  });

  it('survives a database restart mid-run: reads fail only if in flight, atomic writes, no crash, no leftover connection', async () => {
    const { report, atomicity, db, pool, applicationName } = await restartScenario(
      Pool,
      'kysely on steadfast',
    );
    // Kysely runs statements on checked-out clients: one that was in flight when the server shut
    // down fails (57P01 or a terminated connection), as with pg.Pool. No other failure: none while
    // the server is down (the pool waits for it), none after.
    expectOnlyInFlightFailures(report);
    expectAtomicAcrossRestart(atomicity, pool);
    expect(await checkedOut(pool)).toBe(0); // the library gave every client back
    await db.destroy();
    expect(await server.countConnections({ applicationName })).toBe(0);
    expect(watch.seen).toEqual([]);
  });

  it.runIf(COMPARE)('for comparison: the same run on a plain pg.Pool', async () => {
    const { db, applicationName } = await restartScenario(pg.Pool, 'kysely on pg.Pool');
    // pg.Pool's uncaught errors are part of what this run shows, not a failure of the suite.
    watch.seen.splice(0);
    await db.destroy();
    expect(await sessionsAfterEnd(server, applicationName)).toBe(0);
  });
});

/** Two read loops and one loop of two-row transactions through Kysely while the server restarts. */
async function restartScenario<P extends pg.Pool>(PoolClass: PoolClass<P>, title: string) {
  await server.query('TRUNCATE tx_log');
  const { db, pool, applicationName } = newDb(PoolClass);
  // pg.Pool's docs require this listener; steadfast does not need it.
  if (!(pool instanceof Pool)) pool.on('error', () => undefined);
  const log = new TxLog('tx_log');
  const read = async () => {
    const row = await db.selectFrom('items').select(['id', 'qty']).where('qty', '=', 7).executeTakeFirst();
    if (!row) throw new Error('expected a row');
  };
  const report = await restartUnderLoad(server, [
    { name: 'read-1', run: read },
    { name: 'read-2', run: read },
    {
      name: 'write-tx',
      run: () =>
        log.run((tx) =>
          db.transaction().execute(async (trx) => {
            await trx.insertInto('tx_log').values({ tx, part: 1 }).execute();
            await trx.insertInto('tx_log').values({ tx, part: 2 }).execute();
          }),
        ),
    },
  ]);
  const atomicity = await log.check(server);
  printReport(title, report, { ...atomicity, uncaught: watch.seen.map((e) => errorLabel(e)) });
  return { report, atomicity, db, pool, applicationName };
}
