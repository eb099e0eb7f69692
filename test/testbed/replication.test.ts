import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PostgresServer } from '../../testbed/postgres.js';
import { ReplicatedCluster, withReplicatedCluster } from '../../testbed/replication.js';

/** Clients opened by a test; ended after it whatever happened. */
const openClients = new Set<pg.Client>();

async function connect(config: pg.ClientConfig): Promise<pg.Client> {
  const client = new pg.Client({ connectionTimeoutMillis: 5_000, ...config });
  client.on('error', () => undefined);
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

/** Data directories of test bed servers that this process owns (templates excluded). */
async function ownServerDirs(): Promise<string[]> {
  const dirs: string[] = [];
  for (const name of await readdir(tmpdir())) {
    if (!name.startsWith('steadfast-pg-') || name.startsWith('steadfast-pg-template-')) continue;
    try {
      const owner = JSON.parse(await readFile(join(tmpdir(), name, 'steadfast-owner.json'), 'utf8'));
      if (owner.pid === process.pid) dirs.push(name);
    } catch {
      // Being created or removed by someone else.
    }
  }
  return dirs.sort();
}

async function count(client: pg.Client, name: string): Promise<number> {
  const { rows } = await client.query('SELECT count(*)::int AS n FROM items WHERE name = $1', [name]);
  return rows[0].n;
}

describe('ReplicatedCluster', () => {
  let cluster: ReplicatedCluster;

  beforeAll(async () => {
    cluster = await ReplicatedCluster.start();
    await cluster.primary.query('CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)');
  });

  afterAll(async () => {
    await cluster?.destroy();
  });

  it('runs a primary and a hot standby on their own ports, listed by hosts()', async () => {
    const { primary, standby } = cluster;
    expect(standby.port).not.toBe(primary.port);
    expect(standby.dataDir).not.toBe(primary.dataDir);
    expect(cluster.hosts()).toEqual([
      { host: '127.0.0.1', port: primary.port },
      { host: '127.0.0.1', port: standby.port },
    ]);
    expect(cluster.connectionString).toBe(
      `postgres://steadfast:${encodeURIComponent(primary.password)}@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/steadfast`,
    );

    const onPrimary = await connect(primary.clientConfig());
    const onStandby = await connect(standby.clientConfig());
    const recovery = 'SELECT pg_is_in_recovery() AS r, inet_server_port() AS port';
    expect((await onPrimary.query(recovery)).rows[0]).toEqual({ r: false, port: primary.port });
    expect((await onStandby.query(recovery)).rows[0]).toEqual({ r: true, port: standby.port });

    const replication = await primary.query(
      'SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1',
      ['steadfast_standby'],
    );
    expect(replication.rows).toEqual([{ state: 'streaming', sync_state: 'async' }]);
    const settings = await primary.query(
      "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'hot_standby') ORDER BY name",
    );
    expect(settings.rows).toEqual([
      { name: 'hot_standby', setting: 'on' },
      { name: 'wal_level', setting: 'replica' },
    ]);
  });

  it('a row written on the primary appears on the standby after waitForReplay()', async () => {
    const onPrimary = await connect(cluster.primary.clientConfig());
    const onStandby = await connect(cluster.standby.clientConfig());
    await onPrimary.query('INSERT INTO items (name) VALUES ($1)', ['replicated']);
    await cluster.waitForReplay();
    expect(await count(onStandby, 'replicated')).toBe(1);
    expect(await cluster.replicationLagBytes()).toBe(0);
  });

  it('writes to the standby fail with 25006 read_only_sql_transaction', async () => {
    const onStandby = await connect(cluster.standby.clientConfig());
    await expect(onStandby.query('INSERT INTO items (name) VALUES ($1)', ['nope'])).rejects.toMatchObject({
      code: '25006',
    });
    expect((await onStandby.query('SHOW transaction_read_only')).rows[0].transaction_read_only).toBe('on');
    await expect(cluster.standby.query('CREATE TABLE other (id int)')).rejects.toMatchObject({
      code: '25006',
    });
  });

  it('pauseReplay() makes the standby fall behind; replicationLagBytes() measures it; resumeReplay() catches up', async () => {
    const onStandby = await connect(cluster.standby.clientConfig());
    await cluster.pauseReplay();
    try {
      await cluster.primary.query("INSERT INTO items (name) SELECT 'lagging' FROM generate_series(1, 1000)");
      const lag = await cluster.replicationLagBytes();
      expect(lag).toBeGreaterThan(10_000);
      await expect(cluster.waitForReplay({ timeoutMs: 300 })).rejects.toThrow(/bytes behind/);
      expect(await count(onStandby, 'lagging')).toBe(0);
    } finally {
      await cluster.resumeReplay();
    }
    await cluster.waitForReplay();
    expect(await count(onStandby, 'lagging')).toBe(1000);
    expect(await cluster.replicationLagBytes()).toBe(0);
  });

  it('the standby keeps serving reads while the primary is down, and catches up after it is back', async () => {
    const onStandby = await connect(cluster.standby.clientConfig());
    await cluster.primary.stop('immediate');
    expect(await count(onStandby, 'replicated')).toBe(1);
    await expect(cluster.replicationLagBytes()).rejects.toThrow();
    await sleep(300);
    expect(await count(onStandby, 'replicated')).toBe(1);

    const restartedAt = Date.now();
    await cluster.primary.start();
    await cluster.primary.query('INSERT INTO items (name) VALUES ($1)', ['after primary restart']);
    await cluster.waitForReplay();
    // The standby reconnects within wal_retrieve_retry_interval (200 ms) rather than the default 5 s.
    expect(Date.now() - restartedAt).toBeLessThan(4_000);
    expect(await count(onStandby, 'after primary restart')).toBe(1);
  });

  it('the standby restarts as a standby and resumes streaming', async () => {
    await cluster.standby.restart();
    await cluster.primary.query('INSERT INTO items (name) VALUES ($1)', ['after standby restart']);
    await cluster.waitForReplay();
    const onStandby = await connect(cluster.standby.clientConfig());
    expect(await count(onStandby, 'after standby restart')).toBe(1);
    expect((await onStandby.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(true);
  });
});

describe('failover', () => {
  it('after the primary is stopped and the standby promoted, the standby accepts writes', async () => {
    await withReplicatedCluster(async (cluster) => {
      await cluster.primary.query('CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)');
      await cluster.primary.query('INSERT INTO items (name) VALUES ($1)', ['before failover']);
      await cluster.waitForReplay();

      await cluster.primary.stop('immediate');
      const startedAt = Date.now();
      await cluster.promote();
      const promotionMs = Date.now() - startedAt;
      expect(promotionMs).toBeLessThan(5_000);

      const promoted = await connect(cluster.standby.clientConfig());
      expect((await promoted.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(false);
      await promoted.query('INSERT INTO items (name) VALUES ($1)', ['after failover']);
      expect(await count(promoted, 'before failover')).toBe(1);
      expect(await count(promoted, 'after failover')).toBe(1);
      await expect(cluster.promote()).rejects.toThrow(/not in recovery/);

      // Promotion is permanent: the server restarts as a primary.
      await cluster.standby.restart();
      const restarted = await connect(cluster.standby.clientConfig());
      expect((await restarted.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(false);
      expect(await count(restarted, 'after failover')).toBe(1);
    });
  });

  it('synchronous: commits wait for the standby, and no acknowledged write is lost by a failover', async () => {
    await withReplicatedCluster(
      async (cluster) => {
        expect(cluster.synchronous).toBe(true);
        const replication = await cluster.primary.query(
          'SELECT sync_state FROM pg_stat_replication WHERE application_name = $1',
          ['steadfast_standby'],
        );
        expect(replication.rows).toEqual([{ sync_state: 'sync' }]);
        await cluster.primary.query('CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)');

        // With the standby down, a commit on the primary is not acknowledged.
        await cluster.standby.stop();
        const writer = await connect(cluster.primary.clientConfig());
        let acknowledged = false;
        const waiting = writer
          .query('INSERT INTO items (name) VALUES ($1)', ['waits for the standby'])
          .then(() => {
            acknowledged = true;
          });
        await sleep(500);
        expect(acknowledged).toBe(false);
        await cluster.standby.start();
        await waiting;

        // remote_apply: an acknowledged row is visible on the standby without waiting for replay.
        const reader = await connect(cluster.standby.clientConfig());
        await writer.query('INSERT INTO items (name) VALUES ($1)', ['acknowledged']);
        expect(await count(reader, 'acknowledged')).toBe(1);

        await cluster.primary.stop('immediate');
        await cluster.promote();
        const promoted = await connect(cluster.standby.clientConfig());
        expect(await count(promoted, 'waits for the standby')).toBe(1);
        expect(await count(promoted, 'acknowledged')).toBe(1);
        // The promoted server has no synchronous standby of its own, so its commits do not wait.
        await promoted.query('INSERT INTO items (name) VALUES ($1)', ['on the new primary']);
      },
      { synchronous: true, settings: { synchronous_commit: 'remote_apply' } },
    );
  });
});

describe('options and cleanup', () => {
  it('passes server options to both servers, and standbySettings to the standby only', async () => {
    await withReplicatedCluster(
      async (cluster) => {
        expect(cluster.standby.user).toBe('app');
        const onStandby = await connect(cluster.standby.clientConfig());
        const { rows } = await onStandby.query(
          "SELECT current_user AS u, current_database() AS d, current_setting('work_mem') AS w, " +
            "current_setting('statement_timeout') AS s",
        );
        expect(rows[0]).toEqual({ u: 'app', d: 'appdb', w: '8MB', s: '3s' });
        const onPrimary = await connect(cluster.primary.clientConfig());
        expect((await onPrimary.query("SELECT current_setting('statement_timeout') AS s")).rows[0].s).toBe(
          '0',
        );
        expect(cluster.standby.maxConnections).toBe(cluster.primary.maxConnections);
      },
      {
        user: 'app',
        password: 'app-password',
        database: 'appdb',
        maxConnections: 20,
        settings: { work_mem: '8MB' },
        standbySettings: { statement_timeout: '3s' },
      },
    );
  });

  it('PostgresServer.clone() copies a stopped server into an independent one', async () => {
    const source = await PostgresServer.start();
    let copy: PostgresServer | undefined;
    try {
      await source.query('CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)');
      await source.query("INSERT INTO items (name) VALUES ('original')");
      await expect(source.clone()).rejects.toThrow(/stop the server/);
      await source.stop();
      await expect(source.clone({ files: { '../escape': '' } })).rejects.toThrow(/inside the data directory/);
      copy = await source.clone({ settings: { work_mem: '7MB' }, files: { 'note.txt': 'copied' } });
      expect(source.isRunning()).toBe(false);
      await source.start();

      expect(copy.port).not.toBe(source.port);
      expect(await readFile(join(copy.dataDir, 'note.txt'), 'utf8')).toBe('copied');
      const client = await connect(copy.clientConfig());
      expect(await count(client, 'original')).toBe(1);
      expect((await client.query('SHOW work_mem')).rows[0].work_mem).toBe('7MB');
      await client.query("INSERT INTO items (name) VALUES ('copy only')");
      const onSource = await connect(source.clientConfig());
      expect(await count(onSource, 'copy only')).toBe(0);
    } finally {
      await Promise.all([copy?.destroy(), source.destroy()]);
    }
  });

  it('destroy() is idempotent and removes both servers; withReplicatedCluster() destroys on throw', async () => {
    let dirs: string[] = [];
    let ports: number[] = [];
    await expect(
      withReplicatedCluster(async (cluster) => {
        dirs = [cluster.primary.dataDir, cluster.standby.dataDir];
        ports = cluster.hosts().map((host) => host.port);
        await Promise.all([cluster.destroy(), cluster.destroy()]);
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    for (const dir of dirs) expect(existsSync(dir)).toBe(false);
    for (const port of ports) {
      await expect(
        connect({ host: '127.0.0.1', port, user: 'steadfast', password: 'x', database: 'steadfast' }),
      ).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    }
  });

  it('a start that fails leaves no server and no directory behind', async () => {
    const before = await ownServerDirs();
    await expect(ReplicatedCluster.start({ standbySettings: { 'bad name': 1 } })).rejects.toThrow(
      /invalid PostgreSQL setting/,
    );
    // A hot standby refuses to run with fewer connection slots than its primary: the standby fails to start.
    await expect(ReplicatedCluster.start({ standbySettings: { max_connections: 5 } })).rejects.toThrow(
      /insufficient parameter settings/,
    );
    expect(await ownServerDirs()).toEqual(before);
  });
});
