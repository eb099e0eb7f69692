/**
 * Prisma's `@prisma/adapter-pg` cannot run here: its client needs `prisma generate`, which downloads
 * engine binaries this build environment cannot fetch. This file exercises the surface the adapter
 * uses instead, as its source uses it: the `instanceof pg.Pool` check that decides whether a pool is
 * taken as given, `pool.options`, an 'error' listener on the pool, queries in array row mode with the
 * adapter's own type parsers, and transactions as a checked-out client with BEGIN and a release that
 * carries the error when BEGIN fails.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Pool } from '../../../src/index.js';
import { PostgresServer } from '../../../testbed/postgres.js';

let server: PostgresServer;

beforeAll(async () => {
  server = await PostgresServer.start();
});

afterAll(async () => {
  await server?.destroy();
});

describe('the surface @prisma/adapter-pg uses', () => {
  it('is taken as a pool, queried in array mode with custom parsers, and runs transactions', async () => {
    const pool = new Pool({ ...server.clientConfig(), logger: false });
    try {
      // PrismaPgAdapterFactory: `poolOrConfig instanceof pg.Pool` decides between using it and building one.
      expect(pool instanceof pg.Pool).toBe(true);
      expect(pool.options.max).toBe(10);
      const errors: unknown[] = [];
      pool.on('error', (error) => errors.push(error));

      // queryRaw: pool.query({ text, values, rowMode: 'array', types: { getTypeParser } }, values)
      const types = {
        getTypeParser: (oid: number) =>
          oid === 1184 ? (value: string) => `ts:${value}` : (value: string) => value,
      };
      const result = await pool.query(
        { text: 'SELECT $1::int AS n, now() AS at', values: [7], rowMode: 'array', types } as never,
        [7],
      );
      expect(result.fields.map((f) => f.name)).toEqual(['n', 'at']);
      expect(result.rows[0][0]).toBe('7');
      expect(String(result.rows[0][1])).toMatch(/^ts:/);

      // startTransaction: connect, BEGIN, statements, COMMIT, release.
      await pool.query('CREATE TABLE IF NOT EXISTS prisma_probe (id int)');
      const client = await pool.connect();
      await client.query('BEGIN');
      await client.query('INSERT INTO prisma_probe VALUES (1)');
      await client.query('COMMIT');
      client.release();

      // A BEGIN that fails: the adapter releases with the error, which closes that connection.
      const broken = await pool.connect();
      const beginError = await broken.query('BEGIN ISOLATION LEVEL NONSENSE').catch((e: Error) => e);
      expect(beginError).toBeInstanceOf(Error);
      broken.release(beginError as Error);
      expect(pool.stats().counters.evictions['released-with-error']).toBe(1);

      expect((await pool.query('SELECT count(*)::int AS n FROM prisma_probe')).rows[0].n).toBe(1);
      expect(errors).toEqual([]);
    } finally {
      await pool.end();
    }
  });
});
