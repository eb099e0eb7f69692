/**
 * Live output while the load runs: pool events and failed requests, aggregated per window so that a
 * burst of hundreds of events reads as one line, and a status line every second.
 */
import type { EventEmitter } from 'node:events';
import type pg from 'pg';
import type { Pool, PoolEventPayloads } from '../src/index.js';
import type { RequestOutcome } from '../testbed/load.js';
import { failureLabel } from './failures.js';
import { formatCounts, type Output } from './output.js';

/** Counts by key, for one window. */
class Tally {
  readonly counts = new Map<string, number>();
  total = 0;

  add(key: string, n = 1): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
    this.total += n;
  }

  clear(): void {
    this.counts.clear();
    this.total = 0;
  }
}

/** Running totals of one pool's requests, for the status line. */
export interface PoolTotals {
  ok: number;
  failed: number;
  inFlight: number;
}

export interface LiveOptions {
  output: Output;
  steadfast: Pool;
  pgPool: pg.Pool;
  /** Aggregation window for event lines, ms. Default 500. */
  windowMs?: number;
  /** Interval of the status line, ms. Default 1000. */
  statusMs?: number;
}

export class LiveView {
  readonly totals = {
    steadfast: { ok: 0, failed: 0, inFlight: 0 } as PoolTotals,
    pg: { ok: 0, failed: 0, inFlight: 0 } as PoolTotals,
  };
  readonly #output: Output;
  readonly #steadfast: Pool;
  readonly #pgPool: pg.Pool;
  readonly #windowMs: number;
  readonly #statusMs: number;
  readonly #retries = new Tally();
  readonly #evictions = new Tally();
  readonly #connectErrors = new Tally();
  readonly #timeouts = new Tally();
  readonly #failures = { steadfast: new Tally(), pg: new Tally() };
  readonly #pgErrors = new Tally();
  #timers: NodeJS.Timeout[] = [];
  readonly #unsubscribe: Array<() => void> = [];

  constructor(options: LiveOptions) {
    this.#output = options.output;
    this.#steadfast = options.steadfast;
    this.#pgPool = options.pgPool;
    this.#windowMs = options.windowMs ?? 500;
    this.#statusMs = options.statusMs ?? 1000;
    this.#subscribe();
  }

  /** Starts the periodic lines. */
  start(): void {
    this.#timers.push(setInterval(() => this.flush(), this.#windowMs));
    this.#timers.push(setInterval(() => this.status(), this.#statusMs));
  }

  /** Stops the periodic lines and the event listeners (pg.Pool keeps its own 'error' listener), after a last flush. */
  stop(): void {
    for (const timer of this.#timers) clearInterval(timer);
    this.#timers = [];
    this.flush();
    for (const off of this.#unsubscribe) off();
    this.#unsubscribe.length = 0;
  }

  /** A request of `pool` started. */
  started(pool: 'steadfast' | 'pg'): void {
    this.totals[pool].inFlight++;
  }

  /** A request of `pool` settled. */
  settled(pool: 'steadfast' | 'pg', outcome: RequestOutcome): void {
    const totals = this.totals[pool];
    totals.inFlight--;
    if (outcome.ok) {
      totals.ok++;
    } else {
      totals.failed++;
      this.#failures[pool].add(failureLabel(outcome.error));
    }
  }

  /** A pg.Pool 'error' event: an idle client broke; the demo's listener keeps it from crashing the process. */
  pgPoolError(error: unknown): void {
    this.#pgErrors.add(failureLabel(error));
  }

  /** Prints what the window collected, if anything, and starts a new window. */
  flush(): void {
    const parts: string[] = [];
    if (this.#retries.total)
      parts.push(`${this.#retries.total} retries (${formatCounts(this.#retries.counts)})`);
    if (this.#evictions.total)
      parts.push(`${this.#evictions.total} evictions (${formatCounts(this.#evictions.counts)})`);
    if (this.#connectErrors.total) {
      parts.push(`${this.#connectErrors.total} connect errors (${formatCounts(this.#connectErrors.counts)})`);
    }
    if (this.#timeouts.total) parts.push(`${this.#timeouts.total} acquire timeouts`);
    if (parts.length) this.#output.line('steadfast', 'steadfast', parts.join(' · '));
    this.#retries.clear();
    this.#evictions.clear();
    this.#connectErrors.clear();
    this.#timeouts.clear();

    const failed = this.#failures.steadfast;
    if (failed.total) {
      this.#output.line(
        'bad',
        'steadfast',
        `${failed.total} requests failed (${formatCounts(failed.counts)})`,
      );
    }
    failed.clear();

    const pgParts: string[] = [];
    if (this.#failures.pg.total) {
      pgParts.push(`${this.#failures.pg.total} requests failed (${formatCounts(this.#failures.pg.counts)})`);
    }
    if (this.#pgErrors.total) {
      pgParts.push(
        `${this.#pgErrors.total} 'error' events on idle clients (${formatCounts(this.#pgErrors.counts)}), caught by the demo's listener`,
      );
    }
    if (pgParts.length) this.#output.line('pg', 'pg.Pool', pgParts.join(' · '));
    this.#failures.pg.clear();
    this.#pgErrors.clear();
  }

  /** One line with both pools' totals and connection counts. */
  status(): void {
    const s = this.totals.steadfast;
    const p = this.totals.pg;
    const st = this.#steadfast.stats();
    const describe = (t: PoolTotals) => `${t.ok} ok, ${t.failed} failed, ${t.inFlight} in flight`;
    this.#output.line(
      'status',
      'status',
      `steadfast: ${describe(s)} (conns ${st.total}, waiting ${st.waiting})  |  ` +
        `pg.Pool: ${describe(p)} (conns ${this.#pgPool.totalCount}, waiting ${this.#pgPool.waitingCount})`,
    );
  }

  #subscribe(): void {
    // pg's typings only know pg.Pool's own events.
    const emitter = this.#steadfast as unknown as EventEmitter;
    const on = <K extends keyof PoolEventPayloads>(
      event: K,
      listener: (payload: PoolEventPayloads[K]) => void,
    ) => {
      emitter.on(event, listener);
      this.#unsubscribe.push(() => emitter.off(event, listener));
    };
    on('retry', (payload) => this.#retries.add(payload.phase));
    on('evict', (payload) => this.#evictions.add(payload.reason));
    on('connectError', (payload) =>
      this.#connectErrors.add(`${failureLabel(payload.error)}${payload.fatal ? ', fatal' : ''}`),
    );
    on('timeout', () => this.#timeouts.add('timeout'));
  }
}
