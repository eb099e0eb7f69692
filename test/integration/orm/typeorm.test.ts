/**
 * TypeORM through steadfast's Pool.
 *
 * TypeORM never takes a pool object: its postgres driver builds one with `new driver.Pool(options)`,
 * where `driver` is the DataSource's `driver` option (the pg module by default). The documented hook is
 * therefore `driver`: pass a pg module whose `Pool` is steadfast's, `driver: { ...pg, Pool }` (the
 * spread keeps `Client`, `types`, `defaults` and the rest of the module).
 *
 * What TypeORM does with the pool (typeorm 1.1, driver/postgres):
 * - `pool.on('error', poolErrorHandler)` right after construction;
 * - checks clients out in the callback form, `pool.connect((err, client, release) => ...)`, and keeps
 *   `release` detached; a QueryRunner adds an 'error' listener to the client that calls
 *   `release(err)` and removes it on release;
 * - every statement runs on a checked-out client (`client.query(sql, params)`), so steadfast's
 *   `query()` retries are not on TypeORM's path;
 * - `.stream()` submits a pg-query-stream to the checked-out client (`loadStreamDependency`) and
 *   releases on the stream's 'end' or 'error';
 * - `dataSource.destroy()` ends the pool with `pool.end(callback)`.
 * Entities are declared with EntitySchema: the project's tsconfig has no `experimentalDecorators`.
 */
import pg from 'pg';
import { DataSource, EntitySchema } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Pool } from '../../../src/index.js';
import { PostgresServer } from '../../../testbed/postgres.js';
import {
  COMPARE,
  CONNECTION_LOST,
  checkedOut,
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

interface Item {
  id: number;
  name: string;
  qty: number;
}
interface TxRow {
  id: number;
  tx: number;
  part: number;
}
const ItemEntity = new EntitySchema<Item>({
  name: 'Item',
  tableName: 'items',
  columns: {
    id: { type: Number, primary: true, generated: true },
    name: { type: String },
    qty: { type: 'int' },
  },
});
const TxEntity = new EntitySchema<TxRow>({
  name: 'TxRow',
  tableName: 'tx_log',
  columns: {
    id: { type: Number, primary: true, generated: true },
    tx: { type: 'int' },
    part: { type: 'int' },
  },
});

/** TypeORM loads pg-query-stream itself for `.stream()`; it is not a devDependency yet. */
const hasQueryStream = optionalModule('pg-query-stream') !== undefined;

let server: PostgresServer;
let watch: ReturnType<typeof watchProcess>;
const pools = new Pools('orm-typeorm');
const sources: DataSource[] = [];

/** A DataSource whose driver module builds pools of the given class. */
async function newDataSource<P extends pg.Pool>(PoolClass: PoolClass<P>, synchronize = false) {
  const applicationName = pools.nextName();
  const config = server.clientConfig();
  const ds = new DataSource({
    type: 'postgres',
    driver: { ...pg, Pool: PoolClass },
    host: config.host,
    port: config.port,
    username: config.user,
    password: config.password,
    database: config.database,
    applicationName,
    poolSize: 4,
    entities: [ItemEntity, TxEntity],
    synchronize,
  });
  sources.push(ds);
  await ds.initialize();
  const pool = pools.track((ds.driver as PostgresDriver).master as P);
  return { ds, pool, applicationName };
}

const countRows = async (table: string, where = 'true') =>
  (await server.query(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`)).rows[0].n as number;

beforeAll(async () => {
  server = await PostgresServer.start();
  watch = watchProcess();
  // The schema through TypeORM itself, then the bulk rows for the stream test.
  const { ds } = await newDataSource(Pool, true);
  await ds.query("INSERT INTO items (name, qty) SELECT 'bulk', n FROM generate_series(1, 1000) AS n");
  await ds.destroy();
  sources.splice(0);
});

afterEach(async () => {
  await Promise.all(sources.splice(0).map((ds) => (ds.isInitialized ? ds.destroy() : undefined)));
  await pools.endAll();
  expect(watch.seen).toEqual([]);
});

afterAll(async () => {
  watch?.stop();
  await server?.destroy();
});

describe('TypeORM (postgres driver option) on steadfast', () => {
  it('builds its pool from the driver module: a steadfast Pool, with its error handler attached', async () => {
    const { ds, pool } = await newDataSource(Pool);
    expect(pool).toBeInstanceOf(Pool);
    expect(pool).toBeInstanceOf(pg.Pool);
    expect(pool.listenerCount('error')).toBe(1); // TypeORM's poolErrorHandler
    // TypeORM adds an 'error' listener to a client per checkout and removes it on release: the count
    // must not grow with reuse (it would if release were bound to a stale checkout).
    const clients = new Set<pg.PoolClient>();
    pool.on('acquire', (client) => clients.add(client));
    await ds.getRepository(ItemEntity).count();
    const [client] = [...clients];
    const listeners = client!.listenerCount('error');
    for (let i = 0; i < 30; i++) await ds.getRepository(ItemEntity).findOneBy({ qty: i + 1 });
    expect(client!.listenerCount('error')).toBe(listeners);
    expect(await checkedOut(pool)).toBe(0);
  });

  it('runs CRUD through a repository', async () => {
    const { ds } = await newDataSource(Pool);
    const repo = ds.getRepository(ItemEntity);
    const saved = await repo.save({ name: 'fig', qty: 2 });
    expect(saved.id).toEqual(expect.any(Number));
    expect(await repo.findOneBy({ id: saved.id })).toEqual({ id: saved.id, name: 'fig', qty: 2 });
    await repo.update({ id: saved.id }, { qty: 3 });
    expect(await countRows('items', `id = ${saved.id} AND qty = 3`)).toBe(1);
    await repo.increment({ id: saved.id }, 'qty', 1);
    expect((await repo.findOneByOrFail({ id: saved.id })).qty).toBe(4);
    expect((await repo.delete({ id: saved.id })).affected).toBe(1);
    expect(await countRows('items', `id = ${saved.id}`)).toBe(0);
  });

  it('commits a transaction, and rolls back one that throws or a QueryRunner rollback, atomically', async () => {
    const { ds, pool } = await newDataSource(Pool);
    await ds.transaction(async (manager) => {
      await manager.insert(ItemEntity, { name: 't-commit', qty: 1 });
      await manager.insert(ItemEntity, { name: 't-commit', qty: 2 });
    });
    expect(await countRows('items', "name = 't-commit'")).toBe(2);

    const failure = new Error('business rule failed');
    await expect(
      ds.transaction(async (manager) => {
        await manager.insert(ItemEntity, { name: 't-throw', qty: 1 });
        await manager.insert(ItemEntity, { name: 't-throw', qty: 2 });
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(await countRows('items', "name = 't-throw'")).toBe(0);

    const runner = ds.createQueryRunner();
    await runner.connect();
    await runner.startTransaction();
    await runner.manager.insert(ItemEntity, { name: 't-runner', qty: 1 });
    await runner.startTransaction(); // nested: a savepoint
    await runner.manager.insert(ItemEntity, { name: 't-savepoint', qty: 1 });
    await runner.rollbackTransaction(); // to the savepoint
    await runner.commitTransaction();
    await runner.release();
    expect(await countRows('items', "name = 't-runner'")).toBe(1);
    expect(await countRows('items', "name = 't-savepoint'")).toBe(0);

    const abandoned = ds.createQueryRunner();
    await abandoned.startTransaction();
    await abandoned.manager.insert(ItemEntity, { name: 't-rolled-back', qty: 1 });
    await abandoned.rollbackTransaction();
    await abandoned.release();
    expect(await countRows('items', "name = 't-rolled-back'")).toBe(0);
    expect(await checkedOut(pool)).toBe(0);
  });

  it.skipIf(!hasQueryStream)(
    'streams rows from a query builder and releases the client at the end',
    async () => {
      const { ds, pool } = await newDataSource(Pool);
      const stream = await ds
        .getRepository(ItemEntity)
        .createQueryBuilder('item')
        .select('item.qty', 'qty')
        .where('item.name = :name', { name: 'bulk' })
        .stream();
      let total = 0;
      let count = 0;
      for await (const row of stream) {
        total += (row as { qty: number }).qty;
        count++;
      }
      expect(count).toBe(1000);
      expect(total).toBe((1000 * 1001) / 2);
      expect(await checkedOut(pool)).toBe(0);
    },
  );

  it('destroy() ends the pool it built', async () => {
    const { ds, pool, applicationName } = await newDataSource(Pool);
    await ds.getRepository(ItemEntity).count();
    expect(await server.countConnections({ applicationName })).toBeGreaterThan(0);
    await ds.destroy();
    expect(pool.ended).toBe(true);
    expect(await server.countConnections({ applicationName })).toBe(0);
  });

  it('survives a database restart mid-run: reads fail only if in flight, atomic writes, no crash, no leftover connection', async () => {
    const { report, atomicity, ds, pool, applicationName } = await restartScenario(
      Pool,
      'typeorm on steadfast',
    );
    // A statement in flight on a checked-out client when the server shut down fails; nothing else.
    // TypeORM releases a QueryRunner whose client emitted 'error': the transaction's next statement
    // then fails with QueryRunnerAlreadyReleasedError (the same on pg.Pool).
    expectOnlyInFlightFailures(
      report,
      (error) => CONNECTION_LOST.test(error) || error.includes('QueryRunnerAlreadyReleased'),
    );
    expectAtomicAcrossRestart(atomicity, pool);
    expect(await checkedOut(pool)).toBe(0); // the library gave every client back
    await ds.destroy();
    expect(await server.countConnections({ applicationName })).toBe(0);
    expect(watch.seen).toEqual([]);
  });

  it.runIf(COMPARE)('for comparison: the same run on a plain pg.Pool', async () => {
    const { ds, applicationName } = await restartScenario(pg.Pool, 'typeorm on pg.Pool');
    // pg.Pool's uncaught errors are part of what this run shows, not a failure of the suite.
    watch.seen.splice(0);
    await ds.destroy();
    expect(await sessionsAfterEnd(server, applicationName)).toBe(0);
  });
});

/** Two read loops and one loop of two-row transactions through TypeORM while the server restarts. */
async function restartScenario<P extends pg.Pool>(PoolClass: PoolClass<P>, title: string) {
  await server.query('TRUNCATE tx_log');
  // TypeORM attaches the 'error' listener pg.Pool needs by itself.
  const { ds, pool, applicationName } = await newDataSource(PoolClass);
  const repo = ds.getRepository(ItemEntity);
  const log = new TxLog('tx_log');
  const read = async () => {
    if (!(await repo.findOneBy({ qty: 7 }))) throw new Error('expected a row');
  };
  const report = await restartUnderLoad(server, [
    { name: 'read-1', run: read },
    { name: 'read-2', run: read },
    {
      name: 'write-tx',
      run: () =>
        log.run((tx) =>
          ds.transaction(async (manager) => {
            await manager.insert(TxEntity, { tx, part: 1 });
            await manager.insert(TxEntity, { tx, part: 2 });
          }),
        ),
    },
  ]);
  const atomicity = await log.check(server);
  printReport(title, report, { ...atomicity, uncaught: watch.seen.map((e) => errorLabel(e)) });
  return { report, atomicity, ds, pool, applicationName };
}
