/**
 * @fastify/postgres through steadfast's Pool.
 *
 * Like TypeORM, the plugin builds its own pool, `new options.pg.Pool(options)`; its documented `pg`
 * option takes the pg module to use. Passing `{ ...pg, Pool }` makes it build a steadfast Pool. Every
 * plugin option, `pg` included, reaches the Pool constructor (steadfast passes unknown keys on to
 * pg.Client, which ignores them, as pg.Pool does).
 *
 * What the plugin does with the pool (@fastify/postgres 6.1, index.js):
 * - `fastify.pg.query` and `fastify.pg.connect` are `pool.query` / `pool.connect` bound to the pool,
 *   used in promise and callback forms (its README uses the callback forms);
 * - `fastify.pg.transact(fn[, cb])` checks a client out with `pool.connect((err, client, done) => ...)`
 *   and passes `done` detached as the callback of `client.query('ROLLBACK', done)` (so `done` receives
 *   `(null, result)`) or calls `done()` after COMMIT;
 * - routes with `{ pg: { transact: true } }` check a client out in a preHandler, run BEGIN, and
 *   COMMIT (onSend) or ROLLBACK (onError) before `client.release()`;
 * - `fastify.close()` ends the pool with `pool.end(done)`.
 * Plain `fastify.pg.query` is steadfast's `query()` path, so its retries apply there.
 */
import fastifyPostgres from '@fastify/postgres';
import Fastify, { type FastifyInstance } from 'fastify';
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
  optionalModule,
  type PoolClass,
  Pools,
  printReport,
  restartUnderLoad,
  sessionsAfterEnd,
  TxLog,
  watchProcess,
} from './harness.js';

/** pg-query-stream is not a devDependency yet: the streaming route is tested only when it is installed. */
const QueryStream =
  optionalModule<new (text: string, values?: unknown[]) => NodeJS.ReadableStream>('pg-query-stream');

/**
 * Regression: the plugin hands its whole options object to `new pg.Pool(options)`, its own `pg` option
 * included. A did-you-mean check once took `pg` for a misspelt `log` and refused it; short unknown keys
 * now pass through to pg.Client, as with pg.Pool. The tests give the plugin steadfast's Pool directly.
 */
const PluginPool: PoolClass<Pool> = Pool;

let server: PostgresServer;
let watch: ReturnType<typeof watchProcess>;
const pools = new Pools('orm-fastify');
const apps: FastifyInstance[] = [];

/** A Fastify app with the plugin registered on a pg module whose Pool is `PoolClass`, and a few routes. */
async function newApp<P extends pg.Pool>(PoolClass: PoolClass<P>) {
  const applicationName = pools.nextName();
  const app = Fastify();
  apps.push(app);
  await app.register(fastifyPostgres, {
    pg: { ...pg, Pool: PoolClass } as unknown as typeof pg,
    connectionString: server.connectionString,
    application_name: applicationName,
    max: 4,
  });

  // The README's callback forms.
  app.get<{ Params: { id: string } }>('/items/:id', (req, reply) => {
    app.pg.query('SELECT id, name, qty FROM items WHERE id = $1', [req.params.id], (err, result) => {
      if (err) return reply.send(err);
      if (result.rows.length === 0) return reply.code(404).send();
      return reply.send(result.rows[0]);
    });
  });
  app.post<{ Body: { name: string; qty: number } }>('/items', (req, reply) => {
    app.pg.connect((err, client, release) => {
      if (err || !client) return reply.send(err);
      client.query(
        'INSERT INTO items (name, qty) VALUES ($1, $2) RETURNING id, name, qty',
        [req.body.name, req.body.qty],
        (queryError, result) => {
          release();
          reply.send(queryError ?? result.rows[0]);
        },
      );
    });
  });
  // Promise forms.
  app.put<{ Params: { id: string }; Body: { qty: number } }>('/items/:id', async (req) => {
    const { rowCount } = await app.pg.query('UPDATE items SET qty = $2 WHERE id = $1', [
      req.params.id,
      req.body.qty,
    ]);
    return { updated: rowCount };
  });
  app.delete<{ Params: { id: string } }>('/items/:id', async (req) => {
    const client = await app.pg.connect();
    try {
      const { rowCount } = await client.query('DELETE FROM items WHERE id = $1', [req.params.id]);
      return { deleted: rowCount };
    } finally {
      client.release();
    }
  });
  // A route-level transaction: two rows, then an optional failure after both were written.
  app.post<{ Body: { name: string; fail?: boolean } }>('/batch', { pg: { transact: true } }, async (req) => {
    await req.pg!.query('INSERT INTO items (name, qty) VALUES ($1, 1)', [req.body.name]);
    await req.pg!.query('INSERT INTO items (name, qty) VALUES ($1, 2)', [req.body.name]);
    if (req.body.fail) throw new Error('second thoughts');
    return { ok: true };
  });
  if (QueryStream) {
    // pg-query-stream's documented use: on a checked-out client, released when the stream closes.
    app.get('/export', async (_req, reply) => {
      const client = await app.pg.connect();
      const rows = client.query(
        new QueryStream("SELECT qty FROM items WHERE name = 'bulk' ORDER BY qty") as never,
      );
      const stream = rows as unknown as NodeJS.ReadableStream & { once(e: string, f: () => void): void };
      stream.once('close', () => client.release());
      const { Transform } = await import('node:stream');
      const ndjson = new Transform({
        writableObjectMode: true,
        transform: (row, _encoding, callback) => callback(null, `${JSON.stringify(row)}\n`),
      });
      reply.type('application/x-ndjson');
      return reply.send(stream.pipe(ndjson));
    });
  }
  await app.ready();
  return { app, pool: pools.track(app.pg.pool as P), applicationName };
}

const countRows = async (table: string, where = 'true') =>
  (await server.query(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`)).rows[0].n as number;

beforeAll(async () => {
  server = await PostgresServer.start();
  await createSchema(server);
  watch = watchProcess();
});

afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
  await pools.endAll();
  expect(watch.seen).toEqual([]);
});

afterAll(async () => {
  watch?.stop();
  await server?.destroy();
});

describe('@fastify/postgres (pg option) on steadfast', () => {
  it('registers the documented way, with pg: { ...pg, Pool } and nothing else', async () => {
    const app = Fastify({ pluginTimeout: 1_000 });
    try {
      await app.register(fastifyPostgres, {
        pg: { ...pg, Pool } as unknown as typeof pg,
        connectionString: server.connectionString,
        application_name: pools.nextName(),
      });
      await app.ready();
      pools.track(app.pg.pool);
      expect(app.pg.pool).toBeInstanceOf(Pool);
      expect((await app.pg.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await app.close().catch(() => undefined);
    }
  });

  it('builds a steadfast Pool from the pg option', async () => {
    const { app, pool } = await newApp(PluginPool);
    expect(pool).toBeInstanceOf(Pool);
    expect(pool).toBeInstanceOf(pg.Pool);
    expect(app.pg.Client).toBe(pg.Client);
    const { rows } = await app.pg.query('SHOW application_name');
    expect(rows[0].application_name).toMatch(/^orm-fastify-/);
  });

  it('runs CRUD through routes, in the callback and promise forms', async () => {
    const { app, pool } = await newApp(PluginPool);
    const created = await app.inject({ method: 'POST', url: '/items', payload: { name: 'kiwi', qty: 4 } });
    expect(created.statusCode).toBe(200);
    const { id } = created.json() as { id: number };
    expect((await app.inject(`/items/${id}`)).json()).toEqual({ id, name: 'kiwi', qty: 4 });
    const updated = await app.inject({ method: 'PUT', url: `/items/${id}`, payload: { qty: 5 } });
    expect(updated.json()).toEqual({ updated: 1 });
    expect(await countRows('items', `id = ${id} AND qty = 5`)).toBe(1);
    expect((await app.inject({ method: 'DELETE', url: `/items/${id}` })).json()).toEqual({ deleted: 1 });
    expect((await app.inject(`/items/${id}`)).statusCode).toBe(404);
    expect(await checkedOut(pool)).toBe(0);
  });

  it('commits and rolls back with transact() (promise and callback forms) and transact routes, atomically', async () => {
    const { app, pool } = await newApp(PluginPool);
    const value = await app.pg.transact(async (client) => {
      await client.query("INSERT INTO items (name, qty) VALUES ('f-commit', 1)");
      await client.query("INSERT INTO items (name, qty) VALUES ('f-commit', 2)");
      return 'done';
    });
    expect(value).toBe('done');
    expect(await countRows('items', "name = 'f-commit'")).toBe(2);

    const failure = new Error('business rule failed');
    await expect(
      app.pg.transact(async (client) => {
        await client.query("INSERT INTO items (name, qty) VALUES ('f-throw', 1)");
        await client.query("INSERT INTO items (name, qty) VALUES ('f-throw', 2)");
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(await countRows('items', "name = 'f-throw'")).toBe(0);

    // Callback form: the ROLLBACK's callback is the detached `done`, called with (null, result).
    const viaCallback = await new Promise<unknown>((resolve) =>
      app.pg.transact(
        async (client) => {
          await client.query("INSERT INTO items (name, qty) VALUES ('f-callback', 1)");
          await client.query('SELECT * FROM no_such_table');
        },
        (err) => resolve(err),
      ),
    );
    expect((viaCallback as pg.DatabaseError).code).toBe('42P01');
    expect(await countRows('items', "name = 'f-callback'")).toBe(0);

    const committed = await app.inject({ method: 'POST', url: '/batch', payload: { name: 'f-route' } });
    expect(committed.json()).toEqual({ ok: true });
    expect(await countRows('items', "name = 'f-route'")).toBe(2);
    const rolledBack = await app.inject({
      method: 'POST',
      url: '/batch',
      payload: { name: 'f-route-fail', fail: true },
    });
    expect(rolledBack.statusCode).toBe(500);
    expect(await countRows('items', "name = 'f-route-fail'")).toBe(0);

    // Every client came back, out of its transaction.
    expect(await checkedOut(pool)).toBe(0);
    for (let i = 0; i < pool.totalCount + 1; i++) {
      const client = await app.pg.connect();
      expect(client.getTransactionStatus?.() ?? 'I').toBe('I');
      client.release();
    }
  });

  it.skipIf(!QueryStream)('streams rows from a pg-query-stream route and releases the client', async () => {
    const { app, pool } = await newApp(PluginPool);
    const response = await app.inject('/export');
    expect(response.statusCode).toBe(200);
    const lines = response.body.trim().split('\n');
    expect(lines).toHaveLength(1000);
    expect(JSON.parse(lines[999]!)).toEqual({ qty: 1000 });
    expect(await checkedOut(pool)).toBe(0);
  });

  it('fastify.close() ends the pool', async () => {
    const { app, pool, applicationName } = await newApp(PluginPool);
    await app.inject('/items/1');
    expect(await server.countConnections({ applicationName })).toBe(1);
    await app.close();
    expect(pool.ended).toBe(true);
    expect(await server.countConnections({ applicationName })).toBe(0);
  });

  it('survives a database restart mid-run: no failed read, atomic writes, no crash, no leftover connection', async () => {
    const { report, atomicity, app, pool, applicationName } = await restartScenario(
      PluginPool,
      'fastify on steadfast',
    );
    // Reads go through fastify.pg.query, steadfast's query(): re-run on a fresh connection.
    expectNoFailedReads(report);
    expectAtomicAcrossRestart(atomicity, pool);
    expect(await checkedOut(pool)).toBe(0); // the library gave every client back
    await app.close();
    expect(await server.countConnections({ applicationName })).toBe(0);
    expect(watch.seen).toEqual([]);
  });

  it.runIf(COMPARE)('for comparison: the same run on a plain pg.Pool', async () => {
    const { app, applicationName } = await restartScenario(pg.Pool, 'fastify on pg.Pool');
    // pg.Pool's uncaught errors are part of what this run shows, not a failure of the suite.
    watch.seen.splice(0);
    await app.close();
    expect(await sessionsAfterEnd(server, applicationName)).toBe(0);
  });
});

/** Two loops of GET requests (fastify.pg.query) and one of transact() writes while the server restarts. */
async function restartScenario<P extends pg.Pool>(PoolClass: PoolClass<P>, title: string) {
  await server.query('TRUNCATE tx_log');
  const { app, pool, applicationName } = await newApp(PoolClass);
  // pg.Pool's docs require this listener; the plugin does not add one, steadfast does not need one.
  if (!(pool instanceof Pool)) pool.on('error', () => undefined);
  const log = new TxLog('tx_log');
  const read = async () => {
    const response = await app.inject('/items/7');
    if (response.statusCode !== 200) throw new Error(`HTTP ${response.statusCode}: ${response.body}`);
  };
  const report = await restartUnderLoad(server, [
    { name: 'read-1', run: read },
    { name: 'read-2', run: read },
    {
      name: 'write-transact',
      run: () =>
        log.run((tx) =>
          app.pg.transact(async (client) => {
            await client.query('INSERT INTO tx_log VALUES ($1, 1)', [tx]);
            await client.query('INSERT INTO tx_log VALUES ($1, 2)', [tx]);
          }),
        ),
    },
  ]);
  const atomicity = await log.check(server);
  printReport(title, report, { ...atomicity, uncaught: watch.seen.map((e) => errorLabel(e)) });
  return { report, atomicity, app, pool, applicationName };
}
