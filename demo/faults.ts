/**
 * The fault script: what happens to the server while the load runs, scaled to the demo's duration.
 *
 * For the default 20 s run: a restart with a fast shutdown at 4 s, an immediate (crash-like) stop at 9 s
 * with the server down for 3 s, and `pg_terminate_backend` on every session at 16 s.
 */
import type { PostgresServer } from '../testbed/postgres.js';
import { formatMs, type Output } from './output.js';

/** The server operations the script needs; `PostgresServer` has them. */
export type FaultTarget = Pick<PostgresServer, 'restart' | 'stop' | 'start' | 'terminateBackends'>;

export interface Fault {
  /** When it starts, in ms after the load started. */
  atMs: number;
  /** What it does, in a few words, for the schedule and the live output. */
  description: string;
  run(target: FaultTarget, context: FaultContext): Promise<void>;
}

export interface FaultContext {
  output: Output;
  signal: AbortSignal;
}

/** The three faults, placed at the same fractions of any duration as in the 20 s default. */
export function faultSchedule(durationMs: number): Fault[] {
  const downMs = Math.round(Math.min(3_000, durationMs * 0.15));
  return [
    {
      atMs: Math.round(durationMs * 0.2),
      description: 'restart with a fast shutdown (sessions get 57P01, the server is back in a moment)',
      async run(target, { output }) {
        output.line('fault', 'FAULT', "restart('fast'): terminating sessions, shutting down, starting again");
        const began = performance.now();
        await target.restart('fast');
        output.line('fault', 'FAULT', `server is back after ${formatMs(performance.now() - began)}`);
      },
    },
    {
      atMs: Math.round(durationMs * 0.45),
      description: `immediate stop (like a crash), server down for ${formatMs(downMs)}, then started (crash recovery)`,
      async run(target, { output, signal }) {
        output.line(
          'fault',
          'FAULT',
          "stop('immediate'): every server process killed at once, as in a crash",
        );
        await target.stop('immediate');
        output.line('fault', 'FAULT', `server is down; starting it again in ${formatMs(downMs)}`);
        await delay(downMs, signal);
        output.line('fault', 'FAULT', 'starting the server (crash recovery first)');
        const began = performance.now();
        await target.start();
        output.line(
          'fault',
          'FAULT',
          `server accepts connections again after ${formatMs(performance.now() - began)}`,
        );
      },
    },
    {
      atMs: Math.round(durationMs * 0.8),
      description: 'pg_terminate_backend() on every session of both pools',
      async run(target, { output }) {
        output.line('fault', 'FAULT', 'terminateBackends(): pg_terminate_backend() on every client session');
        const count = await target.terminateBackends();
        output.line('fault', 'FAULT', `${count} session(s) terminated`);
      },
    },
  ];
}

/**
 * Runs the faults one after another at their times (a fault that is due while the previous one is still
 * running starts when that one ends). A failing fault is reported and the script goes on. When `signal`
 * aborts, no further fault starts; a stopped server is started again so that the demo can finish.
 */
export async function runFaults(
  target: FaultTarget,
  schedule: readonly Fault[],
  context: FaultContext & { t0: number },
): Promise<void> {
  const { output, signal, t0 } = context;
  for (const fault of schedule) {
    await delay(t0 + fault.atMs - performance.now(), signal);
    if (signal.aborted) return;
    try {
      await fault.run(target, context);
    } catch (error) {
      output.line('bad', 'FAULT', `failed: ${(error as Error)?.message ?? String(error)}`);
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
