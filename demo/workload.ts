/**
 * The workload both pools run: INSERTs with unique ids (not idempotent: a write that may have run is
 * never re-sent) and primary-key SELECTs (idempotent: safe to re-send), on an open-loop schedule.
 */
import type pg from 'pg';
import type { Pool } from '../src/index.js';
import { type LoadReport, runOpenLoop } from '../testbed/load.js';
import { labelled } from './failures.js';
import type { LiveView } from './live.js';

export const CREATE_TABLE_SQL =
  'CREATE TABLE demo_writes (id int PRIMARY KEY, pool text NOT NULL, at timestamptz NOT NULL DEFAULT now())';
const INSERT_SQL = 'INSERT INTO demo_writes (id, pool) VALUES ($1, $2)';
const SELECT_SQL = 'SELECT id, pool, at FROM demo_writes WHERE id = $1';

export interface Subject {
  /** Key in the live view. */
  key: 'steadfast' | 'pg';
  /** Value of the `pool` column. */
  column: string;
  /** Ids of this pool's writes are `idBase + seq`, so that the two pools never collide. */
  idBase: number;
  write(sql: string, values: unknown[]): Promise<unknown>;
  read(sql: string, values: unknown[]): Promise<unknown>;
}

/** The steadfast pool: reads are marked idempotent; every call stops waiting when the demo is interrupted. */
export function steadfastSubject(pool: Pool, signal: AbortSignal): Subject {
  return {
    key: 'steadfast',
    column: 'steadfast',
    idBase: 0,
    write: (sql, values) => pool.query(sql, values, { signal }),
    read: (sql, values) => pool.query(sql, values, { idempotent: true, signal }),
  };
}

/** The plain pg.Pool, used exactly as an application would. */
export function pgSubject(pool: pg.Pool): Subject {
  return {
    key: 'pg',
    column: 'pg',
    idBase: 1_000_000,
    write: (sql, values) => pool.query(sql, values),
    read: (sql, values) => pool.query(sql, values),
  };
}

export interface WorkloadOptions {
  writesPerSec: number;
  readsPerSec: number;
  durationMs: number;
  settleTimeoutMs: number;
  live: LiveView;
  signal: AbortSignal;
}

export interface WorkloadResult {
  writes: LoadReport;
  reads: LoadReport;
}

/** Runs the writes and the reads of one pool concurrently. */
export async function runWorkload(subject: Subject, options: WorkloadOptions): Promise<WorkloadResult> {
  const { live, signal, durationMs, settleTimeoutMs } = options;
  let lastWritten = subject.idBase;
  const track = <T>(work: () => Promise<T>): Promise<T> => {
    live.started(subject.key);
    return labelled(work);
  };
  const [writes, reads] = await Promise.all([
    runOpenLoop({
      ratePerSec: options.writesPerSec,
      durationMs,
      settleTimeoutMs,
      signal,
      request: (seq) =>
        track(async () => {
          const id = subject.idBase + seq;
          await subject.write(INSERT_SQL, [id, subject.column]);
          lastWritten = Math.max(lastWritten, id);
        }),
      onSettle: (outcome) => live.settled(subject.key, outcome),
    }),
    runOpenLoop({
      ratePerSec: options.readsPerSec,
      durationMs,
      settleTimeoutMs,
      signal,
      request: () => track(() => subject.read(SELECT_SQL, [lastWritten])),
      onSettle: (outcome) => live.settled(subject.key, outcome),
    }),
  ]);
  return { writes, reads };
}
