/**
 * Topology against real replication and a real PgBouncer: reads from a standby while the primary is
 * down, failover to a promoted standby under write load, target_session_attrs, and the foundation's
 * faults behind PgBouncer in transaction mode.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, ErrorCodes, Pool, type PoolLifecycleEvents } from '../../src/index.js';
import { runOpenLoop, verifyWrites } from '../../testbed/load.js';
import { PgBouncer } from '../../testbed/pgbouncer.js';
import { ReplicatedCluster } from '../../testbed/replication.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PORT = "SELECT current_setting('port')::int AS port";

describe('replication', () => {
  let cluster: ReplicatedCluster;

  beforeAll(async () => {
    cluster = await ReplicatedCluster.start({
      synchronous: true,
      settings: { synchronous_commit: 'remote_apply' },
    });
  });

  afterAll(async () => {
    await cluster?.destroy();
  });

  const url = (query: string) => `${cluster.connectionString}${query}`;

  it('picks the right server for every target_session_attrs', async () => {
    const expected = {
      any: cluster.primary.port,
      'read-write': cluster.primary.port,
      primary: cluster.primary.port,
      'read-only': cluster.standby.port,
      standby: cluster.standby.port,
      'prefer-standby': cluster.standby.port,
    } as const;
    for (const [target, port] of Object.entries(expected)) {
      const pool = new Pool({ connectionString: url(`?target_session_attrs=${target}`), logger: false });
      try {
        expect({ target, port: (await pool.query(PORT)).rows[0].port }).toEqual({ target, port });
      } finally {
        await pool.end();
      }
    }
  });

  it('keeps reads succeeding from the standby while the primary is stopped for 5 s', async () => {
    await cluster.primary.query('CREATE TABLE IF NOT EXISTS seen (id int)');
    await cluster.waitForReplay();
    const reads = new Cluster({
      primary: { ...cluster.primary.clientConfig(), logger: false, acquireTimeoutMs: 2_000 },
      replicas: [{ ...cluster.standby.clientConfig(), logger: false }],
    });
    try {
      const fault = (async () => {
        await sleep(1_000);
        await cluster.primary.stop('immediate');
        await sleep(5_000);
        await cluster.primary.start();
      })();
      const report = await runOpenLoop({
        ratePerSec: 50,
        durationMs: 7_000,
        request: () => reads.read('SELECT count(*) FROM seen'),
      });
      await fault;
      expect(report.failuresByCode).toEqual({});
      expect(report.succeeded).toBe(report.sent);
    } finally {
      await reads.end();
    }
  });

  it('fails over to the promoted standby under write load: nothing acknowledged lost, writes resume within 2 s', async () => {
    await cluster.primary.query('CREATE TABLE failover_writes (id int NOT NULL)');
    await cluster.waitForReplay();
    const pool = new Pool({
      connectionString: url('?target_session_attrs=read-write'),
      logger: false,
      // A failover is an outage of its own: retry connects at least once a second.
      connectBackoffMaxMs: 1_000,
    });
    const topology: PoolLifecycleEvents['topology'][] = [];
    pool.lifecycle.on('topology', (event) => topology.push(event));
    const marks: Record<string, number> = {};
    try {
      await pool.query('SELECT 1');
      const fault = (async () => {
        await sleep(1_500);
        await cluster.primary.stop('immediate');
        marks.killed = performance.now();
        await sleep(1_000);
        await cluster.promote();
        marks.promoted = performance.now();
      })();
      const report = await runOpenLoop({
        ratePerSec: 100,
        durationMs: 6_000,
        request: (seq) => pool.query('INSERT INTO failover_writes (id) VALUES ($1)', [seq]),
      });
      await fault;
      // Only writes in flight at the kill may fail, and only as outcome unknown: never silently re-sent.
      for (const outcome of report.outcomes.filter((o) => !o.ok)) {
        expect((outcome.error as { code?: string }).code).toBe(ErrorCodes.OUTCOME_UNKNOWN);
        expect(outcome.startedAt).toBeLessThan(marks.killed!);
      }
      const { rows } = await cluster.standby.query<{ id: number }>('SELECT id FROM failover_writes');
      const check = verifyWrites(
        report.acknowledged,
        rows.map((r) => r.id),
      );
      expect(check.missing).toEqual([]);
      expect(check.duplicates).toEqual([]);
      const firstWriteAfter = Math.min(
        ...report.outcomes.filter((o) => o.ok && o.endedAt > marks.promoted!).map((o) => o.endedAt),
      );
      console.log(
        `[failover] writes resumed ${Math.round(firstWriteAfter - marks.promoted!)} ms after the promotion; ${report.failed} of ${report.sent} failed (${JSON.stringify(report.failuresByCode)})`,
      );
      expect(firstWriteAfter - marks.promoted!).toBeLessThan(2_000);
      const hosts = pool.stats().topology!.hosts;
      expect(hosts.find((h) => h.port === cluster.standby.port)?.role).toBe('primary');
      expect(topology.some((e) => e.port === cluster.standby.port && e.role === 'primary')).toBe(true);
    } finally {
      await pool.end();
    }
  });
});

describe.skipIf(!PgBouncer.available())('behind PgBouncer in transaction mode', () => {
  let cluster: ReplicatedCluster;
  let bouncer: PgBouncer;

  beforeAll(async () => {
    cluster = await ReplicatedCluster.start();
    const server = cluster.primary;
    bouncer = await PgBouncer.start({
      target: {
        host: server.host,
        port: server.port,
        user: server.user,
        password: server.password,
        database: server.database,
      },
      poolMode: 'transaction',
    });
  });

  afterAll(async () => {
    await bouncer?.destroy();
    await cluster?.destroy();
  });

  const faults: [string, () => Promise<void>][] = [
    ['a server restart', () => cluster.primary.restart('fast')],
    ['a PgBouncer restart', () => bouncer.restart('fast')],
    [
      'PAUSE for 2 s, then RESUME',
      async () => {
        await bouncer.pause();
        await sleep(2_000);
        await bouncer.resume();
      },
    ],
  ];

  for (const [name, inject] of faults) {
    it(`survives ${name} with zero failed reads`, async () => {
      const pool = new Pool({ connectionString: bouncer.connectionString, pgbouncer: true, logger: false });
      try {
        const fault = (async () => {
          await sleep(1_500);
          await inject();
        })();
        const report = await runOpenLoop({
          ratePerSec: 50,
          durationMs: 5_000,
          request: () => pool.query('SELECT 1', [], { idempotent: true }),
        });
        await fault;
        expect(report.failuresByCode).toEqual({});
        await expect(pool.query('SET search_path TO public')).rejects.toThrow(/session state/);
      } finally {
        await pool.end();
      }
    });
  }
});
