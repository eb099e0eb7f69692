/**
 * A continuous open-loop load: requests start on a fixed schedule whatever happened to earlier ones, so
 * a stalled pool does not slow the generator down and queueing and failures show up as real traffic
 * would produce them. Unlike testbed/load.ts it runs until stopped and keeps nothing per request
 * beyond the requests in flight, so it can run for hours.
 */

export interface ContinuousLoadOptions {
  /** Requests started per second. */
  ratePerSec: number;
  /** Runs request number `seq` (0-based). */
  request: (seq: number) => Promise<unknown>;
  onStart?: (seq: number) => void;
  /** `error` is undefined when the request succeeded. */
  onSettle?: (seq: number, error: unknown) => void;
}

/** How often the schedule is checked; every request that is due is started then. */
const TICK_MS = 10;

export class ContinuousLoad {
  readonly #options: ContinuousLoadOptions;
  readonly #inFlight = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #t0 = 0;
  /** Requests started before the current schedule began (the schedule restarts when the rate changes). */
  #base = 0;
  #next = 0;
  #rate: number;

  constructor(options: ContinuousLoadOptions) {
    if (!(Number.isFinite(options.ratePerSec) && options.ratePerSec > 0)) {
      throw new RangeError(`ratePerSec must be a positive number, got ${options.ratePerSec}`);
    }
    this.#options = options;
    this.#rate = options.ratePerSec;
  }

  get rate(): number {
    return this.#rate;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  start(): void {
    if (this.#timer) return;
    this.#restartSchedule();
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
  }

  /** Changes the rate from now on. */
  setRate(ratePerSec: number): void {
    if (!(Number.isFinite(ratePerSec) && ratePerSec > 0)) {
      throw new RangeError(`ratePerSec must be a positive number, got ${ratePerSec}`);
    }
    this.#rate = ratePerSec;
    this.#restartSchedule();
  }

  /** Starts no further request; resolves when those in flight settled or after `timeoutMs`. */
  async stop(timeoutMs = 5_000): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#inFlight.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(this.#inFlight),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  #restartSchedule(): void {
    this.#t0 = performance.now();
    this.#base = this.#next;
  }

  #tick(): void {
    // Drift-free: request i of this schedule is due at t0 + i / rate, so a stalled event loop catches
    // up instead of silently lowering the rate.
    const due = this.#base + Math.floor(((performance.now() - this.#t0) * this.#rate) / 1000) + 1;
    while (this.#next < due) this.#launch(this.#next++);
  }

  #launch(seq: number): void {
    const { request, onStart, onSettle } = this.#options;
    onStart?.(seq);
    let promise: Promise<unknown>;
    try {
      promise = Promise.resolve(request(seq));
    } catch (error) {
      promise = Promise.reject(error);
    }
    const report = (error: unknown) => {
      try {
        onSettle?.(seq, error);
      } catch {
        // The observer's failure is not the request's.
      }
    };
    const settled = promise.then(
      () => report(undefined),
      (error: unknown) => report(error ?? new Error('rejected without a reason')),
    );
    const tracked = settled.finally(() => this.#inFlight.delete(tracked));
    this.#inFlight.add(tracked);
  }
}
