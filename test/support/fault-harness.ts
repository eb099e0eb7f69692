/**
 * Runs one fault scenario under open-loop load through steadfast's Pool and, side by side on the same
 * server and the same faults, through a plain pg.Pool, and reports both.
 *
 * Writes carry unique ids, so the table can be checked afterwards: every acknowledged write present,
 * none present twice.
 */
import pg from 'pg';
import { Pool, type Pool as SteadfastPool } from '../../src/index.js';
import type { ChaosProxy } from '../../testbed/chaos-proxy.js';
import { type LoadReport, runOpenLoop, verifyWrites } from '../../testbed/load.js';
import type { PostgresServer } from '../../testbed/postgres.js';

export interface ScenarioContext {
  server: PostgresServer;
  proxy: ChaosProxy | undefined;
}

export interface Scenario {
  name: string;
  /** Injects the fault; resolves when it is over (server back, proxy passing). */
  inject(context: ScenarioContext, marks: Record<string, number>): Promise<void>;
}

export interface PoolResult {
  writes: LoadReport;
  reads: LoadReport;
  missing: number[];
  duplicates: number[];
  unacknowledgedPresent: number[];
  connectionsAfterEnd: number;
}

export interface ScenarioResult {
  steadfast: PoolResult;
  pgPool: PoolResult;
  /** `performance.now()` marks the scenario recorded (e.g. when the server was killed). */
  marks: Record<string, number>;
  /** Uncaught exceptions and unhandled rejections seen during the run. */
  crashes: unknown[];
  steadfastStats: ReturnType<SteadfastPool['stats']>;
}

export interface RunOptions {
  writesPerSec?: number;
  readsPerSec?: number;
  durationMs?: number;
  faultAtMs?: number;
  /** Extra options for steadfast's pool (defaults otherwise: 30 s deadline). */
  steadfastOptions?: Record<string, unknown>;
}

let tableCounter = 0;

export async function runScenario(
  scenario: Scenario,
  context: ScenarioContext,
  options: RunOptions = {},
): Promise<ScenarioResult> {
  const { server, proxy } = context;
  const target = proxy ? { host: proxy.host, port: proxy.port } : { host: server.host, port: server.port };
  const table = `writes_${process.pid}_${++tableCounter}`;
  await server.query(`CREATE TABLE ${table} (id int NOT NULL, pool text NOT NULL)`);
  await server.query(`GRANT ALL ON ${table} TO ${server.user}`);

  const crashes: unknown[] = [];
  const onCrash = (error: unknown) => crashes.push(error);
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);

  const base = { ...server.clientConfig(), ...target, max: 10 };
  const steadfast = new Pool({
    ...base,
    application_name: `sf_${table}`,
    ...options.steadfastOptions,
  } as never);
  const plain = new pg.Pool({ ...base, application_name: `pg_${table}` } as pg.PoolConfig);
  // Without this listener pg.Pool would crash the process on the first idle connection error.
  plain.on('error', () => {});

  const durationMs = options.durationMs ?? 8_000;
  const marks: Record<string, number> = { start: performance.now() };
  const fault = (async () => {
    await new Promise((r) => setTimeout(r, options.faultAtMs ?? 2_000));
    marks.faultStart = performance.now();
    await scenario.inject(context, marks);
    marks.faultEnd = performance.now();
  })();

  const load = (pool: pg.Pool, name: string, idBase: number) => {
    // steadfast settles everything by its own deadline; pg.Pool may wait forever (no connect timeout by
    // default), so the generator stops waiting for it after a while and counts the rest as UNSETTLED.
    const settleTimeoutMs = pool instanceof Pool ? 45_000 : 10_000;
    const writes = runOpenLoop({
      ratePerSec: options.writesPerSec ?? 100,
      durationMs,
      settleTimeoutMs,
      request: (seq) => pool.query(`INSERT INTO ${table} (id, pool) VALUES ($1, $2)`, [idBase + seq, name]),
    });
    const reads = runOpenLoop({
      ratePerSec: options.readsPerSec ?? 50,
      durationMs,
      settleTimeoutMs,
      request: (seq) => {
        const text = `SELECT count(*) FROM ${table} WHERE id < $1`;
        // Reads are marked idempotent, so steadfast may re-run one whose connection was lost mid-flight.
        return pool instanceof Pool
          ? pool.query(text, [idBase + seq], { idempotent: true })
          : pool.query(text, [idBase + seq]);
      },
    });
    return Promise.all([writes, reads]);
  };

  const [[sfWrites, sfReads], [pgWrites, pgReads]] = await Promise.all([
    load(steadfast, 'steadfast', 0),
    load(plain, 'pg', 10_000_000),
    fault,
  ]).then(([a, b]) => [a, b] as const);
  await fault;

  const steadfastStats = steadfast.stats();
  // pg.Pool's end() never settles while a client is stuck (node-postgres #2199): do not wait on it long.
  await Promise.all([steadfast.end(), Promise.race([plain.end().catch(() => undefined), sleep(2_000)])]);
  // Give the server a moment to notice closed sockets before counting sessions.
  await new Promise((r) => setTimeout(r, 200));
  const rows = (await server.query<{ id: number; pool: string }>(`SELECT id, pool FROM ${table}`)).rows;
  process.off('uncaughtException', onCrash);
  process.off('unhandledRejection', onCrash);

  const result = async (
    writes: LoadReport,
    reads: LoadReport,
    name: string,
    idBase: number,
  ): Promise<PoolResult> => {
    const ids = rows.filter((r) => r.pool === name).map((r) => r.id - idBase);
    return {
      writes,
      reads,
      ...verifyWrites(writes.acknowledged, ids),
      connectionsAfterEnd: await server.countConnections({
        applicationName: `${name === 'pg' ? 'pg' : 'sf'}_${table}`,
      }),
    };
  };
  return {
    steadfast: await result(sfWrites, sfReads, 'steadfast', 0),
    pgPool: await result(pgWrites, pgReads, 'pg', 10_000_000),
    marks,
    crashes,
    steadfastStats,
  };
}

/** One line per pool, printed so a run shows both pools' figures side by side. */
export function describeResult(label: string, result: ScenarioResult): string {
  const line = (name: string, r: PoolResult) =>
    `  ${name.padEnd(10)} writes ${r.writes.succeeded}/${r.writes.sent} ok, ${r.writes.failed} failed ${JSON.stringify(
      r.writes.failuresByCode,
    )}; reads ${r.reads.succeeded}/${r.reads.sent} ok, ${r.reads.failed} failed ${JSON.stringify(
      r.reads.failuresByCode,
    )}; missing ${r.missing.length}, duplicates ${r.duplicates.length}; p99 ${Math.round(r.writes.latencyMs.p99)} ms`;
  return [`[fault] ${label}`, line('steadfast', result.steadfast), line('pg.Pool', result.pgPool)].join('\n');
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The scenarios of the foundation's acceptance; `refuse` differs by path (server or proxy). */
export const scenarios = {
  restart: {
    name: 'restart (pg_ctl restart -m fast)',
    inject: async ({ server }) => server.restart('fast'),
  },
  immediateStop: {
    name: 'stop -m immediate for 3 s',
    inject: async ({ server }, marks) => {
      await server.stop('immediate');
      marks.killed = performance.now();
      await sleep(3_000);
      await server.start();
    },
  },
  terminate: {
    name: 'pg_terminate_backend of every connection',
    inject: async ({ server }) => {
      await server.terminateBackends();
    },
  },
  refuse: {
    name: 'terminate all and refuse new connections for 3 s',
    inject: async ({ server, proxy }) => {
      if (proxy) {
        // As PgBouncer or a cloud proxy does when its backend is gone: TCP opens, then closes.
        // Sessions end server-side (57P01: provably not run), then new connections are refused.
        proxy.refuse();
        await server.terminateBackends();
        await sleep(3_000);
        proxy.pass();
      } else {
        // The server itself refuses the role: FATAL 53300 at startup.
        await server.query(`ALTER ROLE ${server.user} CONNECTION LIMIT 0`);
        await server.terminateBackends();
        await sleep(3_000);
        await server.query(`ALTER ROLE ${server.user} CONNECTION LIMIT -1`);
      }
    },
  },
} satisfies Record<string, Scenario>;
