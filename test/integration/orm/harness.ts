/**
 * Shared pieces of the ORM matrix (test/integration/orm/*.test.ts): a watch on the process for uncaught
 * exceptions and unhandled rejections, a load loop that runs through a real database restart and counts
 * what failed in which phase, and the check that transactional writes stayed atomic across it.
 *
 * Not a test file itself (vitest only collects `*.test.ts`).
 *
 * Environment: STEADFAST_ORM_REPORT=1 prints each restart run (what failed, when, and how fast each loop
 * recovered); STEADFAST_ORM_COMPARE=1 also runs every restart scenario on a plain pg.Pool and prints it.
 * The cursor and stream tests need `pg-cursor` and `pg-query-stream`, which are not devDependencies yet:
 * they are skipped when those packages cannot be required.
 */
import { createRequire } from 'node:module';
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { expect } from 'vitest';
import type { PostgresServer, StopMode } from '../../../testbed/postgres.js';

/**
 * Loads an optional CommonJS package (`pg-cursor`, `pg-query-stream`) the way the ORMs do (`require`),
 * or returns `undefined` when it is not installed. Stream and cursor tests are skipped without them.
 */
export function optionalModule<T>(name: string): T | undefined {
  try {
    return createRequire(import.meta.url)(name) as T;
  } catch (error) {
    // Only the package itself missing means "not installed"; a broken install must fail loudly.
    const { code, message } = error as NodeJS.ErrnoException;
    if (code === 'MODULE_NOT_FOUND' && message.includes(`'${name}'`)) return undefined;
    throw error;
  }
}

/** A pool class: steadfast's `Pool` or `pg.Pool`, for the same scenario on both. */
export type PoolClass<P extends pg.Pool = pg.Pool> = new (config: pg.PoolConfig) => P;

/** Pools a test file made, each with its own `application_name` so its server sessions can be counted. */
export class Pools {
  readonly #all: pg.Pool[] = [];
  #made = 0;

  constructor(readonly prefix: string) {}

  /** A fresh `application_name` under this file's prefix. */
  nextName(): string {
    return `${this.prefix}-${++this.#made}`;
  }

  /** A pool of the given class on `server`, as an application would build it. */
  create<P extends pg.Pool>(
    server: PostgresServer,
    PoolClass: PoolClass<P>,
    config: pg.PoolConfig = {},
  ): { pool: P; applicationName: string } {
    const applicationName = this.nextName();
    const pool = new PoolClass({
      ...server.clientConfig(),
      application_name: applicationName,
      max: 4,
      ...config,
    });
    this.#all.push(pool);
    return { pool, applicationName };
  }

  /** Ends the pool at the end of the test too (for pools that a library built). */
  track<P extends pg.Pool>(pool: P): P {
    this.#all.push(pool);
    return pool;
  }

  /** Ends every pool not ended yet (pg.Pool throws when ended twice). */
  async endAll(): Promise<void> {
    await Promise.all(this.#all.splice(0).map((p) => (p.ending ? undefined : p.end())));
  }
}

/** Collects every uncaught exception and unhandled rejection of the process until `stop()`. */
export function watchProcess(): { seen: unknown[]; stop(): void } {
  const seen: unknown[] = [];
  const record = (error: unknown) => seen.push(error);
  process.on('uncaughtException', record);
  process.on('unhandledRejection', record);
  return {
    seen,
    stop() {
      process.off('uncaughtException', record);
      process.off('unhandledRejection', record);
    },
  };
}

/** When an operation of a loop started, relative to the restart. */
export type Phase = 'before' | 'during' | 'after';

/** One sequential loop of operations through the library under test. */
export interface Loop {
  name: string;
  /** Runs operation number `i`; a rejection counts as a failure of the phase the operation started in. */
  run: (i: number) => Promise<unknown>;
}

export interface LoopStats {
  name: string;
  ok: Record<Phase, number>;
  failed: Record<Phase, number>;
  /** `phase: code: message` of every failure, in order. */
  errors: string[];
  /** The loop had not finished its last operation 15 s after it was told to stop. */
  hung: boolean;
  /** Milliseconds from the server being back to the loop's first success (undefined: none). */
  recoveredMs: number | undefined;
}

export interface RestartReport {
  restartMs: number;
  loops: LoopStats[];
}

const phases = (): Record<Phase, number> => ({ before: 0, during: 0, after: 0 });

/**
 * What a statement in flight on a checked-out client sees when the server shuts down (fast): the
 * server's 57P01, the socket closing or reset under it, or pg refusing a client whose connection died.
 */
export const CONNECTION_LOST = /57P01|ECONNRESET|EPIPE|terminat|not queryable/i;

/**
 * A short, stable label for an error: its code (SQLSTATE, errno or steadfast's), the start of its
 * message, and the same for its cause (ORMs wrap the driver's error).
 */
export function errorLabel(error: unknown, depth = 0): string {
  const e = error as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : typeof e?.name === 'string' ? e.name : typeof error;
  const message = typeof e?.message === 'string' ? e.message.split('\n')[0]!.slice(0, 120) : String(error);
  const cause = e?.cause !== undefined && depth < 2 ? ` <- ${errorLabel(e.cause, depth + 1)}` : '';
  return `${code}: ${message}${cause}`;
}

/**
 * Runs every loop concurrently (each one operation at a time), restarts the server after `beforeMs`
 * (`pg_ctl stop -m fast` then start, on the same port), and lets the loops go on after the server is
 * back: at least `afterMs`, and until every loop has had `okAfter` operations started after the restart
 * succeed, or `maxAfterMs` have passed. Resolves with what succeeded and failed in each phase. Never
 * rejects because an operation failed; a loop that does not finish within 15 s of the stop is reported
 * as hung.
 */
export async function restartUnderLoad(
  server: PostgresServer,
  loops: Loop[],
  {
    beforeMs = 300,
    afterMs = 500,
    okAfter = 20,
    maxAfterMs = 10_000,
    mode = 'fast',
  }: { beforeMs?: number; afterMs?: number; okAfter?: number; maxAfterMs?: number; mode?: StopMode } = {},
): Promise<RestartReport> {
  let phase: Phase = 'before';
  let stopping = false;
  let restartEnded = Number.POSITIVE_INFINITY;
  const stats: LoopStats[] = loops.map(({ name }) => ({
    name,
    ok: phases(),
    failed: phases(),
    errors: [],
    hung: true,
    recoveredMs: undefined,
  }));
  const running = loops.map(async (loop, k) => {
    const stat = stats[k]!;
    for (let i = 0; !stopping; i++) {
      const started = phase;
      try {
        await loop.run(i);
        stat.ok[started]++;
        const now = performance.now();
        if (stat.recoveredMs === undefined && now >= restartEnded) {
          stat.recoveredMs = Math.round(now - restartEnded);
        }
      } catch (error) {
        stat.failed[started]++;
        stat.errors.push(`${started}: ${errorLabel(error)}`);
        await delay(20); // a loop that fails fast must not spin
      }
      await delay(2);
    }
    stat.hung = false;
  });
  await delay(beforeMs);
  phase = 'during';
  const restartStarted = performance.now();
  await server.restart(mode);
  restartEnded = performance.now();
  const restartMs = Math.round(restartEnded - restartStarted);
  phase = 'after';
  await delay(afterMs);
  while (performance.now() - restartEnded < maxAfterMs && stats.some((stat) => stat.ok.after < okAfter)) {
    await delay(20);
  }
  stopping = true;
  await Promise.race([Promise.all(running), delay(15_000)]);
  return { restartMs, loops: stats };
}

/**
 * Clients still checked out once the loops have stopped, i.e. leaked by the library, counted with
 * pg.Pool's own counts after the pool has had a moment to reset what came back.
 */
export async function checkedOut(pool: pg.Pool): Promise<number> {
  for (let i = 0; i < 20 && pool.totalCount !== pool.idleCount; i++) await delay(10);
  return pool.totalCount - pool.idleCount;
}

/**
 * The server sessions of `applicationName`, polled for up to 2 s until there are none. For pg.Pool:
 * its end() resolves once it has asked its clients to end, not once their sessions are gone (steadfast's
 * end() waits for the sessions, so its tests count at once).
 */
export async function sessionsAfterEnd(server: PostgresServer, applicationName: string): Promise<number> {
  let sessions = await server.countConnections({ applicationName });
  for (let i = 0; i < 100 && sessions > 0; i++) {
    await delay(20);
    sessions = await server.countConnections({ applicationName });
  }
  return sessions;
}

/** Connections steadfast closed because they broke (seen by its listener, or by the failed statement). */
export function brokenEvictions(pool: {
  stats(): { counters: { evictions: Record<string, number> } };
}): number {
  const { evictions } = pool.stats().counters;
  return (evictions.broken ?? 0) + (evictions['released-with-error'] ?? 0);
}

/**
 * STEADFAST_ORM_COMPARE=1 also runs each restart scenario on a plain pg.Pool (with the 'error' listener
 * its docs require) and prints both reports, for comparison. Off by default: it asserts nothing.
 */
export const COMPARE = Boolean(process.env.STEADFAST_ORM_COMPARE);

/** Prints the report when STEADFAST_ORM_REPORT or STEADFAST_ORM_COMPARE is set. */
export function printReport(title: string, report: RestartReport, extra: Record<string, unknown> = {}): void {
  if (!process.env.STEADFAST_ORM_REPORT && !COMPARE) return;
  const lines = [`[orm-matrix] ${title}: restart took ${report.restartMs} ms ${JSON.stringify(extra)}`];
  for (const loop of report.loops) {
    const f = loop.failed;
    const o = loop.ok;
    lines.push(
      `  ${loop.name}: ok ${o.before}/${o.during}/${o.after}, failed ${f.before}/${f.during}/${f.after}` +
        ` (before/during/after), first success ${loop.recoveredMs} ms after the restart` +
        `${loop.hung ? ' HUNG' : ''}`,
    );
    const distinct = new Map<string, number>();
    for (const e of loop.errors) distinct.set(e, (distinct.get(e) ?? 0) + 1);
    for (const [e, n] of distinct) lines.push(`    ${n} x ${e}`);
  }
  console.log(lines.join('\n'));
}

/**
 * Transactional writes under chaos: transaction `tx` inserts rows `(tx, 1)` and `(tx, 2)` into
 * `table (tx int, part int)`. Tracks which transactions the library reported committed or failed.
 */
export class TxLog {
  readonly committed: number[] = [];
  readonly failed: number[] = [];
  #next = 0;

  constructor(readonly table: string) {}

  /** Runs `write(tx)` (which must insert both rows in one transaction) and records the outcome. */
  async run(write: (tx: number) => Promise<unknown>): Promise<void> {
    const tx = ++this.#next;
    try {
      await write(tx);
      this.committed.push(tx);
    } catch (error) {
      this.failed.push(tx);
      throw error;
    }
  }

  /**
   * Reads the table back: no transaction may be half there, every reported commit must be there, and a
   * failed one may be there only if its outcome was lost while COMMIT was in flight.
   */
  async check(server: PostgresServer): Promise<{
    partial: number[];
    missingCommitted: number[];
    failedButCommitted: number[];
  }> {
    const { rows } = await server.query<{ tx: number; parts: number }>(
      `SELECT tx, count(*)::int AS parts FROM ${this.table} GROUP BY tx`,
    );
    const present = new Map(rows.map((r) => [r.tx, r.parts]));
    return {
      partial: rows.filter((r) => r.parts !== 2).map((r) => r.tx),
      missingCommitted: this.committed.filter((tx) => !present.has(tx)),
      failedButCommitted: this.failed.filter((tx) => present.has(tx)),
    };
  }
}

/**
 * The tables every library's tests use: `items` (with `bulkRows` rows of qty 1..n for streams) and
 * `tx_log` (for {@link TxLog}).
 */
export async function createSchema(server: PostgresServer, bulkRows = 1000): Promise<void> {
  await server.query(
    'CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty int NOT NULL);' +
      'CREATE TABLE tx_log (tx int NOT NULL, part int NOT NULL);' +
      (bulkRows > 0
        ? `INSERT INTO items (name, qty) SELECT 'bulk', n FROM generate_series(1, ${bulkRows}) AS n;`
        : ''),
  );
}

/** After a restart under load: every transaction whole, every reported commit present, dead connections evicted. */
export function expectAtomicAcrossRestart(
  atomicity: { partial: number[]; missingCommitted: number[] },
  pool: Parameters<typeof brokenEvictions>[0],
): void {
  expect(atomicity.partial).toEqual([]);
  expect(atomicity.missingCommitted).toEqual([]);
  expect(brokenEvictions(pool)).toBeGreaterThan(0);
}

/** After a restart under load: no loop hung, and every loop succeeded again once the server was back. */
export function expectEveryLoopRecovered(report: RestartReport): void {
  for (const loop of report.loops) {
    expect(loop.hung, JSON.stringify(loop)).toBe(false);
    expect(loop.ok.after, JSON.stringify(loop)).toBeGreaterThan(0);
  }
}

/**
 * For libraries that run statements on checked-out clients: every loop recovered, and at most the one
 * operation in flight when the server shut down failed (none after the restart), with an error `allowed`
 * accepts (by default a lost connection).
 */
export function expectOnlyInFlightFailures(
  report: RestartReport,
  allowed: (error: string) => boolean = (error) => CONNECTION_LOST.test(error),
): void {
  expectEveryLoopRecovered(report);
  for (const loop of report.loops) {
    expect(loop.failed.after, JSON.stringify(loop)).toBe(0);
    expect(loop.failed.before + loop.failed.during, JSON.stringify(loop)).toBeLessThanOrEqual(1);
    for (const error of loop.errors) expect(allowed(error), error).toBe(true);
  }
}

/** For reads through the pool's own query(): every loop recovered, and no read failed at all. */
export function expectNoFailedReads(report: RestartReport): void {
  expectEveryLoopRecovered(report);
  const readErrors = report.loops.flatMap((loop) => (loop.name.startsWith('read') ? loop.errors : []));
  expect(readErrors).toEqual([]);
}
