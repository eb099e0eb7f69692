/**
 * Leak detection for clients checked out with `pool.connect()` (HikariCP's leakDetectionThreshold).
 *
 * A client held longer than `leakDetectionThresholdMs` is reported with the stack of the line that
 * acquired it and how long it has been held; when it finally comes back, that is reported too. With
 * `leakReclaimMs`, a client held that long is taken back by force: its connection is destroyed and the
 * holder's next query on it fails with `ConnectionReclaimedError` instead of hanging the pool forever.
 *
 * Costs nothing when off: no stack is captured and no timer is set.
 */
import type pg from 'pg';
import type { Lease } from '../engine/engine.js';
import { ConnectionReclaimedError } from '../errors.js';

export interface LeakEvents {
  /** A client was held past the threshold. `stack` is where it was acquired. */
  leak: { id: number; heldMs: number; stack: string };
  /** A client reported as leaked came back (HikariCP logs "previously reported leaked connection ... returned"). */
  leakReturned: { id: number; heldMs: number };
  /** A client held past `leakReclaimMs` was taken back and its connection destroyed. */
  leakReclaimed: { id: number; heldMs: number; stack: string };
}

export interface LeakOptions {
  thresholdMs: number;
  reclaimMs: number;
  report<K extends keyof LeakEvents>(event: K, payload: LeakEvents[K]): void;
  /** Destroys the lease's connection (the pool's release with an error). */
  reclaim(lease: Lease<pg.Client>, error: Error): void;
}

export interface LeakWatch {
  /** The client came back: stop watching, and say so if it had been reported. */
  returned(): void;
  /** Whether the connection was taken back by force (the holder's release is then a no-op). */
  readonly reclaimed: boolean;
}

export function watchForLeak(lease: Lease<pg.Client>, options: LeakOptions): LeakWatch | undefined {
  const { thresholdMs, reclaimMs } = options;
  if (thresholdMs <= 0 && reclaimMs <= 0) return undefined;
  // Captured here, so the report points at the application line that called connect().
  const stack = cleanStack(new Error('Connection acquired here').stack);
  const acquiredAt = performance.now();
  let reported = false;
  let reclaimed = false;
  const leakTimer =
    thresholdMs > 0
      ? setTimeout(() => {
          reported = true;
          options.report('leak', { id: lease.id, heldMs: performance.now() - acquiredAt, stack });
        }, thresholdMs)
      : undefined;
  const reclaimTimer =
    reclaimMs > 0
      ? setTimeout(() => {
          reclaimed = true;
          const heldMs = performance.now() - acquiredAt;
          const error = new ConnectionReclaimedError(heldMs, reclaimMs);
          disarm(lease.connection, error);
          options.reclaim(lease, error);
          options.report('leakReclaimed', { id: lease.id, heldMs, stack });
        }, reclaimMs)
      : undefined;
  // Watching a leak must not keep the process alive on its own.
  leakTimer?.unref();
  reclaimTimer?.unref();
  return {
    get reclaimed() {
      return reclaimed;
    },
    returned() {
      clearTimeout(leakTimer);
      clearTimeout(reclaimTimer);
      if (reported && !reclaimed) {
        options.report('leakReturned', { id: lease.id, heldMs: performance.now() - acquiredAt });
      }
    },
  };
}

/** Makes every later query on a reclaimed client fail with a typed error, in both pg call styles. */
function disarm(client: pg.Client, error: Error): void {
  const reject = (...args: unknown[]) => {
    const callback = args.find((a) => typeof a === 'function') as ((e: Error) => void) | undefined;
    if (callback) {
      process.nextTick(() => callback(error));
      return undefined;
    }
    return Promise.reject(error);
  };
  Object.defineProperty(client, 'query', { value: reject, configurable: true, writable: true });
}

/** Drops the frames of this module, so the first line is the caller's. */
function cleanStack(stack: string | undefined): string {
  if (stack === undefined) return '';
  return stack
    .split('\n')
    .filter(
      (line) => !line.includes('/leaks.') && !line.includes('#checkout') && !line.includes('node:internal'),
    )
    .join('\n');
}
