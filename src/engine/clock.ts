/**
 * Time, behind an interface so the engine's state machine can be driven by a fake clock in tests.
 */
// Imported rather than read from the global, which Node defines as a lazy getter (one more call per read).
import { performance } from 'node:perf_hooks';

/** An opaque timer handle returned by {@link Clock.setTimeout}. */
export type TimerHandle = unknown;

export interface Clock {
  /** Milliseconds on a monotonic scale (only differences are meaningful). */
  now(): number;
  /**
   * Runs `fn` once after `ms` milliseconds. A timer with `keepAlive: false` never holds the process open
   * (housekeeping); one with `keepAlive: true` does (a caller is waiting for it, so exiting would drop work).
   */
  setTimeout(fn: () => void, ms: number, keepAlive: boolean): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** The real clock: `performance.now()` and Node timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout(fn, ms, keepAlive) {
    const timer = setTimeout(fn, ms);
    if (!keepAlive) timer.unref();
    return timer;
  },
  clearTimeout(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};
