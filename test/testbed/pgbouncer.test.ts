import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { PgBouncer, withPgBouncer } from '../../testbed/pgbouncer.js';
import { PostgresServer } from '../../testbed/postgres.js';

const repoRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const available = PgBouncer.available();
if (!available) {
  console.warn(
    'PgBouncer tests skipped: no pgbouncer binary (install the Debian package pgbouncer, as .ci/run does, ' +
      'or set STEADFAST_PGBOUNCER_BIN)',
  );
}

/** Clients opened by a test; ended after it whatever happened. */
const openClients = new Set<pg.Client>();
const clientErrors = new WeakMap<pg.Client, Error[]>();

async function connect(config: pg.ClientConfig): Promise<pg.Client> {
  const client = new pg.Client({ connectionTimeoutMillis: 5_000, ...config });
  const errors: Error[] = [];
  clientErrors.set(client, errors);
  client.on('error', (error) => errors.push(error));
  openClients.add(client);
  await client.connect();
  return client;
}

afterEach(async () => {
  await Promise.all([...openClients].map((client) => client.end().catch(() => undefined)));
  openClients.clear();
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

/** A target that is never connected to: PgBouncer opens server connections only when a client needs one. */
const unusedTarget = { host: '127.0.0.1', port: 1, user: 'app', password: 'app-password', database: 'app' };

describe.skipIf(!available)('PgBouncer', () => {
  let server: PostgresServer;

  beforeAll(async () => {
    server = await PostgresServer.start();
    await server.query('CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)');
  });

  afterAll(async () => {
    await server?.destroy();
  });

  describe('in transaction mode', () => {
    let bouncer: PgBouncer;

    beforeAll(async () => {
      bouncer = await PgBouncer.start({ target: server.clientConfig(), poolMode: 'transaction' });
    });

    afterAll(async () => {
      await bouncer?.destroy();
    });

    it('proxies queries to the target server with SCRAM on both sides', async () => {
      expect(bouncer.host).toBe('127.0.0.1');
      expect(bouncer.port).not.toBe(server.port);
      const client = await connect(bouncer.clientConfig());
      const { rows } = await client.query(
        'SELECT inet_server_port() AS port, current_user AS "user", current_database() AS db',
      );
      expect(rows[0]).toEqual({ port: server.port, user: 'steadfast', db: 'steadfast' });

      const viaString = await connect({ connectionString: bouncer.connectionString });
      await viaString.query('INSERT INTO items (name) VALUES ($1)', ['through pgbouncer']);
      const inserted = await server.query(
        "SELECT count(*)::int AS n FROM items WHERE name = 'through pgbouncer'",
      );
      expect(inserted.rows[0].n).toBe(1);

      const pools = await bouncer.show<{ database: string; pool_mode: string }>('POOLS');
      expect(pools).toContainEqual(
        expect.objectContaining({ database: 'steadfast', pool_mode: 'transaction' }),
      );
      const config = await bouncer.show<{ key: string; value: string }>('CONFIG');
      expect(config).toContainEqual(expect.objectContaining({ key: 'auth_type', value: 'scram-sha-256' }));
    });

    it("answers a wrong password or an unknown database with PgBouncer's own 08P01", async () => {
      await expect(connect({ ...bouncer.clientConfig(), password: 'wrong' })).rejects.toMatchObject({
        code: '08P01',
        message: expect.stringMatching(/SASL authentication failed/),
      });
      await expect(connect({ ...bouncer.clientConfig(), database: 'nosuch' })).rejects.toMatchObject({
        code: '08P01',
        message: expect.stringMatching(/no such database/),
      });
    });

    it('the admin console answers through adminConfig()', async () => {
      const admin = await connect(bouncer.adminConfig());
      const { rows } = await admin.query('SHOW VERSION');
      expect(JSON.stringify(rows)).toMatch(/PgBouncer 1\.\d+/);
    });

    it('pause() holds queries until resume()', async () => {
      const client = await connect(bouncer.clientConfig());
      await client.query('SELECT 1');
      await bouncer.pause();
      let settled = false;
      const query = client.query('SELECT 42 AS answer').finally(() => {
        settled = true;
      });
      await sleep(300);
      expect(settled).toBe(false);
      const pools = await bouncer.show<{ database: string; cl_waiting: number }>('POOLS');
      expect(pools.find((pool) => pool.database === 'steadfast')?.cl_waiting).toBe(1);
      await bouncer.resume();
      expect((await query).rows[0].answer).toBe(42);
    });

    it('pause() waits for an open transaction to end', async () => {
      const client = await connect(bouncer.clientConfig());
      await client.query('BEGIN');
      await client.query('SELECT 1');
      let paused = false;
      const pausing = bouncer.pause().then(() => {
        paused = true;
      });
      await sleep(300);
      expect(paused).toBe(false);
      await client.query('COMMIT');
      await pausing;
      await bouncer.resume();
      await expect(client.query('SELECT 1')).resolves.toBeDefined();
    });

    it('shares one server connection between clients (transaction pooling)', async () => {
      await withPgBouncer(
        async (single) => {
          const [a, b] = await Promise.all([connect(single.clientConfig()), connect(single.clientConfig())]);
          const pidA = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
          const pidB = (await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
          expect(pidB).toBe(pidA);
          // A session SET leaks to the next client of the same server connection.
          await a.query("SET application_name = 'set by a'");
          expect((await b.query('SHOW application_name')).rows[0].application_name).toBe('set by a');
        },
        { target: server.clientConfig(), poolMode: 'transaction', defaultPoolSize: 1 },
      );
    });

    it('survives a server restart: clients keep their PgBouncer connection', async () => {
      const client = await connect(bouncer.clientConfig());
      await client.query('SELECT 1');
      await server.restart();
      expect((await client.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      expect(clientErrors.get(client)).toEqual([]);
    });

    it('restart() keeps the port; its clients are disconnected and new ones get in', async () => {
      const client = await connect(bouncer.clientConfig());
      await client.query('SELECT 1');
      const port = bouncer.port;
      const pid = bouncer.pid;

      await bouncer.restart();
      expect(bouncer.port).toBe(port);
      expect(bouncer.pid).not.toBe(pid);
      await expect(client.query('SELECT 1')).rejects.toThrow();
      const fresh = await connect(bouncer.clientConfig());
      expect((await fresh.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    });

    it('stop() refuses connections with ECONNREFUSED; start() brings it back on the same port', async () => {
      const port = bouncer.port;
      await bouncer.stop();
      expect(bouncer.isRunning()).toBe(false);
      expect(bouncer.pid).toBeUndefined();
      await expect(connect(bouncer.clientConfig())).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      await bouncer.stop(); // stopping a stopped PgBouncer is a no-op

      await bouncer.start();
      expect(bouncer.isRunning()).toBe(true);
      expect(bouncer.port).toBe(port);
      await expect((await connect(bouncer.clientConfig())).query('SELECT 1')).resolves.toBeDefined();
    });

    it('stop("smart") lets a running query finish; "fast" and "immediate" cut it off', async () => {
      const client = await connect(bouncer.clientConfig());
      const running = client.query('SELECT pg_sleep(0.5), 7 AS n');
      await vi.waitFor(async () => {
        const { rows } = await server.query(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(0.5)%'",
        );
        expect(rows[0].n).toBe(1);
      });
      await bouncer.stop('smart');
      expect((await running).rows[0].n).toBe(7);
      expect(bouncer.isRunning()).toBe(false);

      for (const mode of ['fast', 'immediate'] as const) {
        await bouncer.start();
        const victim = await connect(bouncer.clientConfig());
        const cut = victim.query('SELECT pg_sleep(5)');
        cut.catch(() => undefined);
        await sleep(100);
        const startedAt = Date.now();
        await bouncer.stop(mode);
        await expect(cut).rejects.toThrow(/Connection terminated/);
        expect(Date.now() - startedAt).toBeLessThan(2_000);
      }
      await bouncer.start();
      // The backends whose clients were cut off are still sleeping; end them so that they do not linger.
      await server.terminateBackends();
    });

    it('fails queries with 08P01 while the server is down: query_wait_timeout, then server_login_retry', async () => {
      await withPgBouncer(
        async (short) => {
          const client = await connect(short.clientConfig());
          await client.query('SELECT 1');
          await server.stop();
          try {
            await expect(client.query('SELECT 1')).rejects.toMatchObject({
              code: '08P01',
              message: 'query_wait_timeout',
            });
            await server.start();
            // The failed logins are fresh: PgBouncer fails new work at once for server_login_retry.
            const next = await connect(short.clientConfig());
            await expect(next.query('SELECT 1')).rejects.toMatchObject({
              code: '08P01',
              message: expect.stringMatching(/server_login_retry/),
            });
            await vi.waitFor(
              async () => {
                const again = await connect(short.clientConfig());
                await again.query('SELECT 1');
              },
              { timeout: 10_000, interval: 200 },
            );
          } finally {
            await server.start();
          }
        },
        {
          target: server.clientConfig(),
          // The retry interval outlasts the wait by enough for the server to start again under load.
          settings: { query_wait_timeout: 1, server_login_retry: 4 },
        },
      );
    });

    it('retarget() sends new server connections to another server', async () => {
      const other = await PostgresServer.start();
      try {
        const before = await connect(bouncer.clientConfig());
        expect((await before.query('SELECT inet_server_port() AS p')).rows[0].p).toBe(server.port);
        await bouncer.retarget({ port: other.port });
        expect(bouncer.target.port).toBe(other.port);
        const after = await connect(bouncer.clientConfig());
        expect((await after.query('SELECT inet_server_port() AS p')).rows[0].p).toBe(other.port);
        // The reload closed the idle connection to the old server, so the old client moves too.
        await vi.waitFor(
          async () =>
            expect((await before.query('SELECT inet_server_port() AS p')).rows[0].p).toBe(other.port),
          { timeout: 5_000 },
        );
      } finally {
        await bouncer.retarget({ port: server.port });
        await other.destroy();
      }
    });

    it('reload() re-reads the configuration', async () => {
      await expect(bouncer.reload()).resolves.toBeUndefined();
      await expect(bouncer.admin('SHOW STATS')).resolves.toBeInstanceOf(Array);
    });
  });

  it('session mode gives each client its own server connection', async () => {
    await withPgBouncer(
      async (bouncer) => {
        expect(bouncer.poolMode).toBe('session');
        const [a, b] = await Promise.all([connect(bouncer.clientConfig()), connect(bouncer.clientConfig())]);
        const pidA = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        const pidB = (await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        expect(pidB).not.toBe(pidA);
        const pools = await bouncer.show<{ database: string; pool_mode: string }>('POOLS');
        expect(pools).toContainEqual(
          expect.objectContaining({ database: 'steadfast', pool_mode: 'session' }),
        );
      },
      { target: server.clientConfig(), poolMode: 'session' },
    );
  });

  it('applies maxClientConn, defaultPoolSize, a client-facing database name and extra settings', async () => {
    await withPgBouncer(
      async (bouncer) => {
        expect(bouncer.database).toBe('appdb');
        expect(bouncer.connectionString).toMatch(/\/appdb$/);
        const config = Object.fromEntries(
          (await bouncer.show<{ key: string; value: string }>('CONFIG')).map((row) => [row.key, row.value]),
        );
        expect(config).toMatchObject({
          max_client_conn: '2',
          default_pool_size: '1',
          server_idle_timeout: '7',
        });

        const clients = await Promise.all([connect(bouncer.clientConfig()), connect(bouncer.clientConfig())]);
        expect((await clients[0].query('SELECT current_database() AS db')).rows[0].db).toBe('steadfast');
        await expect(connect(bouncer.clientConfig())).rejects.toMatchObject({
          code: '08P01',
          message: expect.stringMatching(/no more connections allowed \(max_client_conn\)/),
        });
      },
      {
        target: server.clientConfig(),
        database: 'appdb',
        maxClientConn: 2,
        defaultPoolSize: 1,
        settings: { server_idle_timeout: 7 },
      },
    );
  });

  it('a port the caller chose that is taken fails the start, with the log in the message', async () => {
    await withPgBouncer(
      async (first) => {
        await expect(PgBouncer.start({ target: unusedTarget, port: first.port })).rejects.toThrow(
          /Address already in use/,
        );
      },
      { target: unusedTarget },
    );
  });

  it('rejects invalid options before doing any work', async () => {
    await expect(PgBouncer.start({ target: { ...unusedTarget, database: 'bad name' } })).rejects.toThrow(
      /database name/,
    );
    await expect(
      PgBouncer.start({ target: { ...unusedTarget, user: 'steadfast_pgbouncer_admin' } }),
    ).rejects.toThrow(/reserved/);
    await expect(PgBouncer.start({ target: unusedTarget, defaultPoolSize: 0 })).rejects.toThrow(RangeError);
    await expect(PgBouncer.start({ target: unusedTarget, settings: { 'bad-name': 1 } })).rejects.toThrow(
      /invalid PgBouncer setting/,
    );
  });
});

describe.skipIf(!available)('PgBouncer cleanup', () => {
  it('destroy() is idempotent, kills the process and removes the directory', async () => {
    const bouncer = await PgBouncer.start({ target: unusedTarget });
    const pid = bouncer.pid!;
    expect(processGone(pid)).toBe(false);
    await Promise.all([bouncer.destroy(), bouncer.destroy()]);
    await bouncer.destroy();
    expect(bouncer.isRunning()).toBe(false);
    expect(existsSync(bouncer.dir)).toBe(false);
    await vi.waitFor(() => expect(processGone(pid)).toBe(true));
    await expect(bouncer.start()).rejects.toThrow(/destroyed/);
  });

  it('withPgBouncer() destroys the instance when the callback throws', async () => {
    let dir = '';
    await expect(
      withPgBouncer(
        async (bouncer) => {
          dir = bouncer.dir;
          throw new Error('boom');
        },
        { target: unusedTarget },
      ),
    ).rejects.toThrow('boom');
    expect(existsSync(dir)).toBe(false);
  });

  describe('when the owning process ends', () => {
    let scratch: string;

    beforeAll(async () => {
      scratch = await mkdtemp(join(tmpdir(), 'steadfast-testbed-child-'));
      await writeFile(
        join(scratch, 'child.ts'),
        `import { PgBouncer } from ${JSON.stringify(join(repoRoot, 'testbed/pgbouncer.ts'))};
const bouncer = await PgBouncer.start({ target: ${JSON.stringify(unusedTarget)} });
process.stdout.write(JSON.stringify({ dir: bouncer.dir, pid: bouncer.pid }) + '\\n');
if (process.argv[2] === 'exit') process.exit(0);
setInterval(() => undefined, 1_000);
`,
      );
    });

    afterAll(async () => {
      await rm(scratch, { recursive: true, force: true });
    });

    function startChild(how: string) {
      const child = spawn(join(repoRoot, 'node_modules/.bin/vite-node'), [join(scratch, 'child.ts'), how], {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
      });
      const reported = new Promise<{ dir: string; pid: number }>((resolve, reject) => {
        let stdout = '';
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
          stdout += chunk;
          const line = stdout.split('\n').find((candidate) => candidate.startsWith('{'));
          if (line) resolve(JSON.parse(line));
        });
        child.once('exit', (code) =>
          reject(new Error(`child exited (${code}) before reporting:\n${stderr}`)),
        );
      });
      return { child, exited, reported };
    }

    async function expectRemoved(report: { dir: string; pid: number }): Promise<void> {
      await vi.waitFor(
        () => {
          expect(processGone(report.pid)).toBe(true);
          expect(existsSync(report.dir)).toBe(false);
        },
        { timeout: 10_000 },
      );
    }

    it('SIGTERM kills its PgBouncers and removes their directories', async () => {
      const { child, reported, exited } = startChild('wait');
      const report = await reported;
      expect(processGone(report.pid)).toBe(false);
      child.kill('SIGTERM');
      await exited;
      await expectRemoved(report);
    });

    it('after SIGKILL, the next process to start a PgBouncer removes the leftovers', async () => {
      const killed = startChild('wait');
      const report = await killed.reported;
      killed.child.kill('SIGKILL');
      await killed.exited;
      expect(existsSync(report.dir)).toBe(true);
      expect(processGone(report.pid)).toBe(false);

      const next = startChild('exit');
      await next.reported;
      await next.exited;
      await expectRemoved(report);
    });
  });
});
