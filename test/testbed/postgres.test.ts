import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { ephemeralPortRange } from '../../testbed/ports.js';
import { PostgresServer, withPostgres } from '../../testbed/postgres.js';

const repoRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** Clients opened by a test; ended after it whatever happened. */
const openClients = new Set<pg.Client>();
/** 'error' events each client emitted (a terminated session reports itself this way). */
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

/** True once `pid` has exited (a zombie awaiting its reaper counts as exited). */
function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

describe('PostgresServer', () => {
  let server: PostgresServer;

  beforeAll(async () => {
    server = await PostgresServer.start({ password: 'correct horse battery' });
    await server.query('CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)');
  });

  afterAll(async () => {
    await server?.destroy();
  });

  it('serves the application role on 127.0.0.1 with password authentication and test bed settings', async () => {
    expect(server.host).toBe('127.0.0.1');
    // Below the ephemeral range, so that no outgoing connection can hold the port while the server is down.
    expect(server.port).toBeLessThan(ephemeralPortRange()[0]);
    expect(server.connectionString).toBe(
      `postgres://steadfast:correct%20horse%20battery@127.0.0.1:${server.port}/steadfast`,
    );
    expect(server.clientConfig()).toEqual({
      host: '127.0.0.1',
      port: server.port,
      user: 'steadfast',
      password: 'correct horse battery',
      database: 'steadfast',
    });
    expect(server.isRunning()).toBe(true);
    expect(server.dataDir.startsWith(join(tmpdir(), 'steadfast-pg-'))).toBe(true);

    const client = await connect(server.clientConfig());
    const { rows } = await client.query(`
      SELECT current_user AS "user", current_database() AS database, inet_server_addr()::text AS address,
             current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS synchronous_commit,
             current_setting('max_connections')::int AS max_connections,
             (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser`);
    expect(rows[0]).toEqual({
      user: 'steadfast',
      database: 'steadfast',
      address: '127.0.0.1/32',
      fsync: 'off',
      synchronous_commit: 'on',
      max_connections: 100 + 3,
      superuser: false,
    });

    const viaUrl = await connect({ connectionString: server.connectionString });
    expect((await viaUrl.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);

    await expect(connect({ ...server.clientConfig(), password: 'wrong' })).rejects.toMatchObject({
      code: '28P01',
    });
  });

  it('logs to logFile inside the data directory', async () => {
    expect(server.logFile.startsWith(server.dataDir)).toBe(true);
    expect(await server.readLog()).toContain('database system is ready to accept connections');
  });

  it('lets the application role use tables created through query()', async () => {
    const client = await connect(server.clientConfig());
    await client.query('INSERT INTO items (name) VALUES ($1)', ['first']);
    const { rows } = await server.query<{ name: string }>('SELECT name FROM items ORDER BY id');
    expect(rows.map((row) => row.name)).toContain('first');
  });

  it('stop() refuses connections with ECONNREFUSED, and start() brings back the same port and data', async () => {
    const live = await connect(server.clientConfig());
    const port = server.port;

    await server.stop();
    expect(server.isRunning()).toBe(false);
    await expect(live.query('SELECT 1')).rejects.toThrow();
    expect(clientErrors.get(live)).toContainEqual(expect.objectContaining({ code: '57P01' }));
    await expect(connect(server.clientConfig())).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await server.stop(); // stopping a stopped server is a no-op

    await server.start();
    expect(server.isRunning()).toBe(true);
    expect(server.port).toBe(port);
    const client = await connect(server.clientConfig());
    const { rows } = await client.query("SELECT count(*)::int AS n FROM items WHERE name = 'first'");
    expect(rows[0].n).toBe(1);
  });

  it('restart() ends sessions and keeps the port and the data', async () => {
    const live = await connect(server.clientConfig());
    await live.query('INSERT INTO items (name) VALUES ($1)', ['before restart']);
    const port = server.port;

    await server.restart();
    expect(server.port).toBe(port);
    await expect(live.query('SELECT 1')).rejects.toThrow();
    const client = await connect(server.clientConfig());
    const { rows } = await client.query("SELECT count(*)::int AS n FROM items WHERE name = 'before restart'");
    expect(rows[0].n).toBe(1);
  });

  it('stop("immediate") kills sessions at once; recovery keeps acknowledged writes', async () => {
    const client = await connect(server.clientConfig());
    await client.query('INSERT INTO items (name) VALUES ($1)', ['acknowledged']);
    const sleeping = client.query('SELECT pg_sleep(30)');
    sleeping.catch(() => undefined);

    const startedAt = Date.now();
    await server.stop('immediate');
    await expect(sleeping).rejects.toThrow();
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    expect(server.isRunning()).toBe(false);
    await expect(connect(server.clientConfig())).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    await server.start();
    expect(await server.readLog()).toMatch(/not properly shut down; automatic recovery in progress/);
    const { rows } = await server.query("SELECT count(*)::int AS n FROM items WHERE name = 'acknowledged'");
    expect(rows[0].n).toBe(1);
  });

  it('stop("smart") refuses new sessions and waits for existing ones to leave', async () => {
    const client = await connect(server.clientConfig());
    const stopping = server.stop('smart');
    await sleep(300);
    expect(server.isRunning()).toBe(true);
    await expect(connect(server.clientConfig())).rejects.toMatchObject({ code: '57P03' });

    await client.end();
    await stopping;
    expect(server.isRunning()).toBe(false);
    await server.start();
  });

  it('terminateBackends() ends live sessions, optionally by application_name; countConnections() sees it', async () => {
    const victim = await connect({ ...server.clientConfig(), application_name: 'victim' });
    const bystander = await connect({ ...server.clientConfig(), application_name: 'bystander' });
    expect(await server.countConnections()).toBe(2);
    expect(await server.countConnections({ applicationName: 'victim' })).toBe(1);

    expect(await server.terminateBackends({ applicationName: 'victim' })).toBe(1);
    await vi.waitFor(() =>
      expect(clientErrors.get(victim)).toContainEqual(expect.objectContaining({ code: '57P01' })),
    );
    await expect(victim.query('SELECT 1')).rejects.toThrow();
    await expect(bystander.query('SELECT 1')).resolves.toBeDefined();
    expect(await server.countConnections()).toBe(1);

    expect(await server.terminateBackends({ exceptSelf: true })).toBe(1);
    await expect(bystander.query('SELECT 1')).rejects.toThrow();
    expect(await server.countConnections()).toBe(0);
    expect(await server.terminateBackends()).toBe(0);
  });

  it('runs several servers side by side', async () => {
    await withPostgres(async (other) => {
      expect(other.port).not.toBe(server.port);
      expect(other.dataDir).not.toBe(server.dataDir);
      const a = await connect(server.clientConfig());
      const b = await connect(other.clientConfig());
      const [ra, rb] = await Promise.all([
        a.query('SELECT inet_server_port() AS p'),
        b.query('SELECT inet_server_port() AS p'),
      ]);
      expect([ra.rows[0].p, rb.rows[0].p]).toEqual([server.port, other.port]);
    });
  });
});

describe('connection limits', () => {
  it('setMaxConnections(5): five sessions fit, the sixth fails with 53300, the admin helpers still work', async () => {
    await withPostgres(async (server) => {
      const port = server.port;
      await server.setMaxConnections(5);
      expect(server.maxConnections).toBe(5);
      expect(server.port).toBe(port);
      // Three more slots stay reserved for superusers, which is where the admin helpers connect.
      const shown = await server.query('SHOW max_connections');
      expect(shown.rows[0].max_connections).toBe('8');

      const clients = await Promise.all(Array.from({ length: 5 }, () => connect(server.clientConfig())));
      expect(clients).toHaveLength(5);
      await expect(connect(server.clientConfig())).rejects.toMatchObject({ code: '53300' });
      expect(await server.countConnections()).toBe(5);

      expect(await server.terminateBackends()).toBe(5);
      await connect(server.clientConfig());
    });
  });

  it('maxConnections at start; a superuser role may also take the reserved slots', async () => {
    await withPostgres(
      async (server) => {
        expect(server.maxConnections).toBe(2);
        await Promise.all(Array.from({ length: 5 }, () => connect(server.clientConfig())));
        await expect(connect(server.clientConfig())).rejects.toMatchObject({ code: '53300' });
      },
      { maxConnections: 2, superuser: true },
    );
  });
});

describe('options', () => {
  it('applies custom credentials, database and settings', async () => {
    const options = {
      user: 'app user',
      password: "p@ss:/'word",
      database: 'app-db',
      settings: { statement_timeout: '1500ms', work_mem: '8MB', log_connections: true },
    };
    await withPostgres(async (server) => {
      const client = await connect({ connectionString: server.connectionString });
      const { rows } = await client.query(`
        SELECT current_user AS "user", current_database() AS database,
               current_setting('statement_timeout') AS statement_timeout,
               current_setting('work_mem') AS work_mem, current_setting('log_connections') AS log_connections`);
      expect(rows[0]).toEqual({
        user: 'app user',
        database: 'app-db',
        statement_timeout: '1500ms',
        work_mem: '8MB',
        log_connections: 'on',
      });
    }, options);
  });

  it('can use an existing database', async () => {
    await withPostgres(
      async (server) => {
        const client = await connect(server.clientConfig());
        expect((await client.query('SELECT current_database() AS d')).rows[0].d).toBe('postgres');
      },
      { database: 'postgres' },
    );
  });

  it('rejects invalid options before doing any work', async () => {
    await expect(PostgresServer.start({ settings: { 'bad name': 1 } })).rejects.toThrow(
      /invalid PostgreSQL setting/,
    );
    await expect(PostgresServer.start({ maxConnections: 0 })).rejects.toThrow(RangeError);
    await expect(PostgresServer.start({ user: 'steadfast_admin' })).rejects.toThrow(/reserved/);
  });
});

describe('cleanup', () => {
  it('withPostgres() destroys the server when the callback throws', async () => {
    let dataDir = '';
    let port = 0;
    await expect(
      withPostgres(async (server) => {
        dataDir = server.dataDir;
        port = server.port;
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(existsSync(dataDir)).toBe(false);
    await expect(
      connect({ host: '127.0.0.1', port, user: 'steadfast', password: 'steadfast', database: 'steadfast' }),
    ).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('destroy() is idempotent, never throws, and removes the data directory', async () => {
    const server = await PostgresServer.start();
    const postmaster = Number.parseInt(readFileSync(join(server.dataDir, 'postmaster.pid'), 'utf8'), 10);
    await Promise.all([server.destroy(), server.destroy()]);
    await server.destroy();
    expect(existsSync(server.dataDir)).toBe(false);
    expect(server.isRunning()).toBe(false);
    await vi.waitFor(() => expect(processGone(postmaster)).toBe(true));
    await expect(server.start()).rejects.toThrow(/destroyed/);
  });

  describe('when the owning process ends', () => {
    let scratch: string;

    beforeAll(async () => {
      scratch = await mkdtemp(join(tmpdir(), 'steadfast-testbed-child-'));
      // The child starts a server, reports where it lives, then ends as its argument says.
      await writeFile(
        join(scratch, 'child.ts'),
        `import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PostgresServer } from ${JSON.stringify(join(repoRoot, 'testbed/postgres.ts'))};
const server = await PostgresServer.start();
const postmaster = Number.parseInt(readFileSync(join(server.dataDir, 'postmaster.pid'), 'utf8'), 10);
process.stdout.write(JSON.stringify({ dataDir: server.dataDir, postmaster }) + '\\n');
if (process.argv[2] === 'exit') process.exit(0);
setInterval(() => undefined, 1_000);
`,
      );
    });

    afterAll(async () => {
      await rm(scratch, { recursive: true, force: true });
    });

    /** Runs the child until it has started its server; resolves with the child and what it reported. */
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
      const reported = new Promise<{ dataDir: string; postmaster: number }>((resolve, reject) => {
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

    async function expectRemoved(report: { dataDir: string; postmaster: number }): Promise<void> {
      await vi.waitFor(
        () => {
          expect(processGone(report.postmaster)).toBe(true);
          expect(existsSync(report.dataDir)).toBe(false);
        },
        { timeout: 10_000 },
      );
    }

    it('process.exit() stops its servers and removes their directories', async () => {
      const { reported, exited } = startChild('exit');
      const report = await reported;
      await exited;
      await expectRemoved(report);
    });

    it('SIGTERM stops its servers and removes their directories', async () => {
      const { child, reported, exited } = startChild('wait');
      const report = await reported;
      expect(processGone(report.postmaster)).toBe(false);
      child.kill('SIGTERM');
      await exited;
      expect(child.signalCode ?? child.exitCode).not.toBeNull();
      await expectRemoved(report);
    });

    it('after SIGKILL, the next process to start a server removes the leftovers', async () => {
      const killed = startChild('wait');
      const report = await killed.reported;
      killed.child.kill('SIGKILL');
      await killed.exited;
      expect(existsSync(report.dataDir)).toBe(true);

      const next = startChild('exit');
      await next.reported;
      await next.exited;
      await expectRemoved(report);
    });
  });
});
