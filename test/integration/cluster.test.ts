/**
 * Read/write splitting and the registry of named pools, against real servers. (Replication itself is
 * exercised in topology.test.ts; here two independent servers stand for a primary and a replica, which
 * is all routing needs.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, ErrorCodes, PoolRegistry } from '../../src/index.js';
import { PostgresServer } from '../../testbed/postgres.js';

let primary: PostgresServer;
let replicaA: PostgresServer;
let replicaB: PostgresServer;

beforeAll(async () => {
  [primary, replicaA, replicaB] = await Promise.all([
    PostgresServer.start(),
    PostgresServer.start(),
    PostgresServer.start(),
  ]);
});

afterAll(async () => {
  await Promise.all([primary, replicaA, replicaB].map((s) => s?.destroy()));
});

const portOf = async (run: () => Promise<{ rows: { port: string }[] }>) =>
  Number((await run()).rows[0]!.port);
const PORT = "SELECT current_setting('port') AS port";

describe('Cluster', () => {
  it('sends writes and transactions to the primary and reads to the replicas, round-robin', async () => {
    const cluster = new Cluster({
      primary: { ...primary.clientConfig(), logger: false },
      replicas: [
        { ...replicaA.clientConfig(), logger: false },
        { ...replicaB.clientConfig(), logger: false },
      ],
    });
    try {
      expect(await portOf(() => cluster.query(PORT))).toBe(primary.port);
      expect(await portOf(() => cluster.transaction((tx) => tx.query(PORT)))).toBe(primary.port);
      const reads = [];
      for (let i = 0; i < 4; i++) reads.push(await portOf(() => cluster.read(PORT)));
      expect(reads).toEqual([replicaA.port, replicaB.port, replicaA.port, replicaB.port]);
      expect(await portOf(() => cluster.read(PORT, [], { role: 'primary' }))).toBe(primary.port);
    } finally {
      await cluster.end();
    }
  });

  it('takes a failed replica out without failing a read, falls back to the primary, and probes it back in', async () => {
    const cluster = new Cluster({
      primary: { ...primary.clientConfig(), logger: false },
      replicas: [{ ...replicaA.clientConfig(), logger: false, acquireTimeoutMs: 500, connectTimeoutMs: 300 }],
      checkIntervalMs: 200,
    });
    try {
      expect(await portOf(() => cluster.read(PORT))).toBe(replicaA.port);
      await replicaA.stop('immediate');
      // The read in flight fails over: no error reaches the caller.
      expect(await portOf(() => cluster.read(PORT))).toBe(primary.port);
      expect(cluster.stats().replicas[0]!.healthy).toBe(false);
      expect(await portOf(() => cluster.read(PORT))).toBe(primary.port);
      await replicaA.start();
      await expect.poll(() => cluster.stats().replicas[0]!.healthy, { timeout: 5_000 }).toBe(true);
      expect(await portOf(() => cluster.read(PORT))).toBe(replicaA.port);
    } finally {
      await cluster.end();
    }
  });

  it('refuses to fall back when told not to', async () => {
    const cluster = new Cluster({
      primary: { ...primary.clientConfig(), logger: false },
      replicas: [{ ...replicaB.clientConfig(), logger: false, acquireTimeoutMs: 300, connectTimeoutMs: 200 }],
      fallbackToPrimary: false,
    });
    try {
      await replicaB.stop('fast');
      const error = await cluster.read(PORT).catch((e: unknown) => e);
      expect((error as { code?: string }).code).toBe(ErrorCodes.NO_REPLICA);
    } finally {
      await replicaB.start();
      await cluster.end();
    }
  });
});

describe('PoolRegistry', () => {
  it('creates named pools from config, checks and closes them together', async () => {
    const registry = new PoolRegistry({
      orders: { ...primary.clientConfig(), logger: false },
      reports: { ...replicaA.clientConfig(), logger: false, max: 2 },
    });
    try {
      expect(registry.names()).toEqual(['orders', 'reports']);
      expect(registry.get('orders').poolName).toBe('orders');
      expect(() => registry.get('order')).toThrow(/did you mean "orders"/);
      expect((await registry.get('reports').query('SELECT 1 AS n')).rows[0].n).toBe(1);
      const health = await registry.health();
      expect(Object.values(health).map((h) => h.status)).toEqual(['ok', 'ok']);
    } finally {
      await registry.closeAll();
    }
    expect(registry.get('orders').ended).toBe(true);
  });
});
