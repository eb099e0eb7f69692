/**
 * Multi-host connection strings against real servers: pg.Pool cannot even parse them.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AcquireTimeoutError, Pool } from '../../src/index.js';
import { getFreePort } from '../../testbed/ports.js';
import { PostgresServer } from '../../testbed/postgres.js';

let server: PostgresServer;

beforeAll(async () => {
  server = await PostgresServer.start();
});

afterAll(async () => {
  await server?.destroy();
});

const urlFor = (hosts: string, query = '') =>
  `postgres://${server.user}:${server.password}@${hosts}/${server.database}${query}`;

describe('multi-host', () => {
  it('skips a host that refuses and connects to the next, where pg.Pool cannot parse the string', async () => {
    const dead = await getFreePort();
    const connectionString = urlFor(`127.0.0.1:${dead},127.0.0.1:${server.port}`);
    const plain = new pg.Pool({ connectionString });
    // pg.Pool throws "Invalid URL" from inside query(), synchronously.
    await expect(Promise.resolve().then(() => plain.query('SELECT 1'))).rejects.toThrow(/Invalid URL/);
    await plain.end().catch(() => undefined);

    const pool = new Pool({ connectionString, logger: false });
    try {
      expect((await pool.query('SELECT 1 AS n')).rows[0].n).toBe(1);
      expect(pool.stats().topology?.hosts).toEqual([
        { host: '127.0.0.1', port: dead, role: 'unknown' },
        { host: '127.0.0.1', port: server.port, role: 'primary' },
      ]);
    } finally {
      await pool.end();
    }
  });

  it('refuses a server that does not match target_session_attrs, saying why', async () => {
    const pool = new Pool({
      connectionString: urlFor(`127.0.0.1:${server.port}`, '?target_session_attrs=standby'),
      acquireTimeoutMs: 800,
      logger: false,
    });
    try {
      const error = await pool.query('SELECT 1').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AcquireTimeoutError);
      expect(String(((error as AcquireTimeoutError).cause as Error).message)).toMatch(
        /is a primary, not standby/,
      );
      expect(String((error as Error).message)).not.toContain(server.password);
    } finally {
      await pool.end();
    }
  });
});
