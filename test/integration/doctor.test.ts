/**
 * The doctor and the startup budget check against a real server: a session left idle in a
 * transaction, a long query and a lock wait are found; the budget is read from the server; an
 * unreachable server and a wrong password give a report, not an exception; the password never shows.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Pool } from '../../src/index.js';
import { doctor, formatDoctorReport } from '../../src/ops/doctor.js';
import { checkConnectionBudget } from '../../src/ops/sizing.js';
import { getFreeServerPort } from '../../testbed/ports.js';
import { PostgresServer } from '../../testbed/postgres.js';

const PASSWORD = 'Doctor-S3NT1NEL-3e9d';

let server: PostgresServer;
const clients: pg.Client[] = [];

async function openClient(applicationName: string): Promise<{ client: pg.Client; pid: number }> {
  const client = new pg.Client({ ...server.clientConfig(), application_name: applicationName });
  client.on('error', () => undefined);
  await client.connect();
  clients.push(client);
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  return { client, pid: rows[0]!.pid };
}

function expectNoPassword(report: unknown): void {
  const json = JSON.stringify(report);
  expect(json).not.toContain(PASSWORD);
  expect(json).not.toContain(encodeURIComponent(PASSWORD));
}

beforeAll(async () => {
  server = await PostgresServer.start({ password: PASSWORD });
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.end().catch(() => undefined)));
});

afterAll(async () => {
  await server?.destroy();
});

describe('doctor', () => {
  it('lists a session left idle in a transaction, with its duration', async () => {
    const { client, pid } = await openClient('leaky-app');
    await client.query('BEGIN');
    await client.query('SELECT 1');
    await new Promise((r) => setTimeout(r, 300));

    const report = await doctor(server.connectionString, { timeoutMs: 10_000, instances: 2, poolSize: 5 });
    expect(report.connected).toBe(true);
    expect(report.target).toBe(
      `postgres://${server.user}:***@127.0.0.1:${server.port}/${encodeURIComponent(server.database)}`,
    );
    expect(report.connectMs).toBeGreaterThan(0);
    expect(report.roundTripMs).toBeGreaterThanOrEqual(0);
    expect(report.server).toMatchObject({
      maxConnections: server.maxConnections + 3,
      superuserReservedConnections: 3,
      user: server.user,
      database: server.database,
      isSuperuser: false,
    });
    expect(report.server!.serverVersionNum).toBeGreaterThanOrEqual(100_000);
    expect(report.budget).toMatchObject({ instances: 2, poolSize: 5, maxOverflow: 0, needed: 13, ok: true });

    const session = report.idleInTransaction.find((s) => s.pid === pid);
    expect(session).toMatchObject({
      pid,
      state: 'idle in transaction',
      applicationName: 'leaky-app',
      user: server.user,
      database: server.database,
      query: 'SELECT 1',
    });
    expect(session!.stateSeconds).toBeGreaterThanOrEqual(0.2);
    expect(session!.transactionSeconds).toBeGreaterThanOrEqual(session!.stateSeconds!);
    expect(report.connections!.byApplication).toContainEqual({
      database: server.database,
      applicationName: 'leaky-app',
      state: 'idle in transaction',
      count: 1,
    });
    // Under the default threshold (60 s) it is listed, not a problem.
    expect(report.problems.filter((p) => p.severity !== 'info')).toEqual([]);
    expect(report.ok).toBe(true);

    const text = formatDoctorReport(report);
    expect(text).toContain('Idle in transaction (1):');
    expect(text).toMatch(new RegExp(`pid ${pid} +${server.user}@${server.database} +app "leaky-app"`));
    expect(text).toContain('Result: OK');
    expect(text).not.toContain(PASSWORD);
    expectNoPassword(report);

    const strict = await doctor(server.connectionString, { idleInTransactionSeconds: 0.1 });
    expect(strict.ok).toBe(false);
    const problem = strict.problems.find((p) => p.code === 'idle-in-transaction');
    expect(problem?.severity).toBe('warning');
    expect(problem?.message).toContain(`pid ${pid}`);
    expect(formatDoctorReport(strict)).toContain('WARNING idle-in-transaction');
  });

  it('finds long-running queries and lock waits, and who blocks them', async () => {
    await server.query('CREATE TABLE IF NOT EXISTS doctor_locks (id int)');
    const holder = await openClient('lock-holder');
    await holder.client.query('BEGIN');
    await holder.client.query('LOCK TABLE doctor_locks IN ACCESS EXCLUSIVE MODE');
    const waiter = await openClient('lock-waiter');
    const blocked = waiter.client.query('SELECT count(*) FROM doctor_locks').catch(() => undefined);
    const sleeper = await openClient('sleeper');
    const sleeping = sleeper.client.query('SELECT pg_sleep(30)').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1_200));

    const report = await doctor(server.connectionString, { longQuerySeconds: 1, lockWaitSeconds: 0.5 });
    const wait = report.waitingOnLocks.find((s) => s.pid === waiter.pid);
    expect(wait).toMatchObject({
      waitEventType: 'Lock',
      blockedBy: [holder.pid],
      applicationName: 'lock-waiter',
    });
    expect(report.longRunning.map((s) => s.pid)).toEqual(expect.arrayContaining([sleeper.pid, waiter.pid]));
    expect(report.longRunning.find((s) => s.pid === sleeper.pid)!.querySeconds).toBeGreaterThanOrEqual(1);
    expect(report.problems.map((p) => p.code)).toEqual(
      expect.arrayContaining(['long-running-query', 'lock-wait']),
    );
    expect(report.ok).toBe(false);
    expect(formatDoctorReport(report)).toContain(`blocked by ${holder.pid}`);

    await holder.client.query('ROLLBACK');
    await blocked;
    // Ending the client does not stop pg_sleep on the server; cancel it.
    await server.query('SELECT pg_cancel_backend($1)', [sleeper.pid]);
    await sleeping;
  });

  it('reports a budget that does not fit max_connections as an error', async () => {
    const report = await doctor(server.connectionString, { instances: 20, poolSize: 5, maxOverflow: 5 });
    expect(report.budget).toMatchObject({ needed: 203, available: server.maxConnections + 3, ok: false });
    expect(report.problems).toContainEqual(
      expect.objectContaining({ severity: 'error', code: 'budget-exceeded' }),
    );
    expect(report.ok).toBe(false);
  });

  it('gives a report when the server cannot be reached', async () => {
    const port = await getFreeServerPort();
    const url = `postgres://someone:${PASSWORD}@127.0.0.1:${port}/nowhere`;
    const report = await doctor(url, { timeoutMs: 3_000 });
    expect(report).toMatchObject({
      connected: false,
      ok: false,
      target: `postgres://someone:***@127.0.0.1:${port}/nowhere`,
      connectError: { code: 'ECONNREFUSED' },
    });
    expect(report.problems[0]).toMatchObject({ severity: 'error', code: 'connect-failed' });
    expect(formatDoctorReport(report)).toContain('Cannot connect');
    expectNoPassword(report);
  });

  it('reports a wrong password without showing it', async () => {
    const wrong = `${PASSWORD}-wrong`;
    const url = `postgres://${server.user}:${encodeURIComponent(wrong)}@127.0.0.1:${server.port}/${server.database}`;
    const report = await doctor(url, { timeoutMs: 5_000 });
    expect(report.connected).toBe(false);
    expect(report.connectError?.code).toBe('28P01');
    expect(JSON.stringify(report)).not.toContain(wrong);
    expectNoPassword(report);
  });

  it('rejects a malformed URL without echoing its password', async () => {
    await expect(doctor(`mysql://u:${PASSWORD}@db/app`)).rejects.toThrow(/got "mysql:\/\/u:\*\*\*@db\/app"/);
  });

  it('rejects bad options before connecting', async () => {
    const url = server.connectionString;
    await expect(doctor(url, { instances: 0 })).rejects.toThrow(/Invalid option instances: got 0/);
    await expect(doctor(url, { poolSize: 1.5 })).rejects.toThrow(/Invalid option poolSize/);
    await expect(doctor(url, { timeoutMs: 0 })).rejects.toThrow(/Invalid option timeoutMs/);
    await expect(doctor(url, { longQuerySeconds: -1 })).rejects.toThrow(
      /longQuerySeconds: got -1, expected seconds >= 0/,
    );
  });
});

describe('checkConnectionBudget', () => {
  it('reads max_connections and the reserved slots from the server', async () => {
    const warnings: string[] = [];
    const check = await checkConnectionBudget(server.clientConfig(), {
      instances: 3,
      onWarning: (m) => warnings.push(m),
    });
    // The pool default: 10 kept, no overflow; 3 slots reserved for superusers.
    expect(check).toMatchObject({
      instances: 3,
      poolSize: 10,
      maxOverflow: 0,
      reserved: 3,
      needed: 33,
      available: server.maxConnections + 3,
      ok: true,
    });
    expect(check.server.maxConnections).toBe(server.maxConnections + 3);
    expect(warnings).toEqual([]);
  });

  it('takes the size from a pool and warns when the pools do not fit', async () => {
    const pool = new Pool({ ...server.clientConfig(), max: 30, maxOverflow: 10 });
    try {
      const warnings: string[] = [];
      const check = await checkConnectionBudget(pool, { instances: 4, onWarning: (m) => warnings.push(m) });
      expect(check).toMatchObject({ poolSize: 20, maxOverflow: 10, needed: 123, ok: false });
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('4 instances × (20 + 10 overflow) + 3 reserved = 123 connections');
      expect(warnings[0]).not.toContain(PASSWORD);
      // The check used a connection of its own, not one of the pool's.
      expect(pool.totalCount).toBe(0);
    } finally {
      await pool.end();
    }
  });

  it('checks the role CONNECTION LIMIT too, and takes a connection string', async () => {
    await server.query(`ALTER ROLE ${pg.escapeIdentifier(server.user)} CONNECTION LIMIT 15`);
    try {
      const check = await checkConnectionBudget(server.connectionString, {
        instances: 2,
        poolSize: 5,
        maxOverflow: 5,
        onWarning: false,
      });
      expect(check.ok).toBe(false);
      expect(check.server.roleConnectionLimit).toBe(15);
      expect(check.message).toContain(`exceed the CONNECTION LIMIT 15 of role ${server.user}`);
    } finally {
      await server.query(`ALTER ROLE ${pg.escapeIdentifier(server.user)} CONNECTION LIMIT -1`);
    }
  });

  it('emits a process warning by default', async () => {
    const emitWarning = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      await checkConnectionBudget(server.clientConfig(), { instances: 100 });
      expect(emitWarning).toHaveBeenCalledWith(
        expect.stringContaining('100 instances × (10 + 0 overflow) + 3 reserved = 1003 connections'),
        { type: 'SteadfastWarning', code: 'STEADFAST_CONNECTION_BUDGET' },
      );
    } finally {
      emitWarning.mockRestore();
    }
  });

  it('fails when the server cannot be reached', async () => {
    const port = await getFreeServerPort();
    await expect(
      checkConnectionBudget({ host: '127.0.0.1', port, user: 'x', password: PASSWORD }, { timeoutMs: 2_000 }),
    ).rejects.toThrow(/ECONNREFUSED/);
  });
});
