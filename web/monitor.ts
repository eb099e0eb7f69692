/**
 * What the dashboard shows: for each pool, one sample per second (connections by state, requests that
 * succeeded and failed, retries, evictions, latency percentiles, breaker state) kept for the last
 * {@link HISTORY_S} seconds, running totals, and an event log of what happened, aggregated per second so
 * that a burst of hundreds of failures reads as one line.
 */
import { failureLabel } from '../demo/failures.js';

export type PoolKey = 'steadfast' | 'pg';
export const POOL_KEYS: readonly PoolKey[] = ['steadfast', 'pg'];

/** Seconds of history kept and sent to the page. */
export const HISTORY_S = 120;
/** Log entries kept. */
const EVENT_LOG_SIZE = 300;

/** The connection counts a pool reports at a given moment. */
export interface Gauges {
  idle: number;
  inUse: number;
  connecting: number;
  waiting: number;
  total: number;
  /** Circuit breaker state; `null` for a pool without one. */
  breaker: string | null;
}

/** One second of one pool. */
export interface Sample extends Gauges {
  /** End of the second, epoch ms. */
  t: number;
  /** Requests that succeeded during this second. */
  ok: number;
  /** Requests that failed during this second. */
  failed: number;
  /** Requests started and not yet settled, at the end of the second. */
  inFlight: number;
  /** Age of the oldest request still in flight, ms (0 when none). */
  oldestMs: number;
  retries: number;
  evictions: number;
  connectErrors: number;
  /** Latency of the requests that settled during this second (either way), ms; `null` when none did. */
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
}

/** Running totals of one pool since the demo started. */
export interface Totals {
  sent: number;
  ok: number;
  failed: number;
  retries: number;
  evictions: number;
  connectErrors: number;
  /** pg.Pool: 'error' events raised by idle clients (without a listener they would crash the process). */
  errorEvents: number;
  failuresByLabel: Record<string, number>;
}

export type LogSource = 'steadfast' | 'pg' | 'chaos' | 'demo';
export type LogLevel = 'info' | 'good' | 'warn' | 'bad';

export interface LogEntry {
  seq: number;
  /** Epoch ms. */
  t: number;
  source: LogSource;
  level: LogLevel;
  text: string;
}

/** A chaos action, drawn as a band on every chart. */
export interface ChaosMark {
  id: number;
  kind: string;
  label: string;
  start: number;
  /** `null` while it lasts. */
  end: number | null;
}

export interface PoolState {
  label: string;
  current: Sample | null;
  totals: Totals;
  series: Sample[];
}

/** What a new second adds, sent to the page as a Server-Sent Event. */
export interface Tick {
  t: number;
  samples: Record<PoolKey, Sample>;
  totals: Record<PoolKey, Totals>;
  events: LogEntry[];
  marks: ChaosMark[];
  status: Record<string, unknown>;
}

/** Counts by key within a window. */
class Tally {
  readonly counts = new Map<string, number>();
  total = 0;

  add(key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    this.total++;
  }

  describe(): string {
    return [...this.counts.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([key, n]) => `${n}× ${key}`)
      .join(', ');
  }

  clear(): void {
    this.counts.clear();
    this.total = 0;
  }
}

/** `1 retry`, `3 retries`. */
function count(n: number, singular: string, plural: string): string {
  return `${n} ${n === 1 ? singular : plural}`;
}

/** Nearest-rank percentile of an ascending array. */
function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return round(sorted[rank - 1]!);
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** One pool's figures: the current window, the totals and the history. */
export class PoolTracker {
  readonly key: PoolKey;
  readonly label: string;
  readonly totals: Totals = {
    sent: 0,
    ok: 0,
    failed: 0,
    retries: 0,
    evictions: 0,
    connectErrors: 0,
    errorEvents: 0,
    failuresByLabel: {},
  };
  readonly series: Sample[] = [];
  readonly #gauges: () => Gauges;
  /** Start times (performance.now()) of requests in flight, by request number. */
  readonly #inFlight = new Map<number, number>();
  #latencies: number[] = [];
  #ok = 0;
  readonly failures = new Tally();
  readonly retries = new Tally();
  readonly evictions = new Tally();
  readonly connectErrors = new Tally();
  readonly errorEvents = new Tally();
  /** Whether the last seconds had failures and no clean second since. */
  inOutage = false;
  outageFailures = 0;
  outageStart = 0;

  constructor(key: PoolKey, label: string, gauges: () => Gauges) {
    this.key = key;
    this.label = label;
    this.#gauges = gauges;
  }

  started(seq: number): void {
    this.#inFlight.set(seq, performance.now());
    this.totals.sent++;
  }

  settled(seq: number, error?: unknown): void {
    const startedAt = this.#inFlight.get(seq);
    if (startedAt === undefined) return;
    this.#inFlight.delete(seq);
    this.#latencies.push(performance.now() - startedAt);
    if (error === undefined) {
      this.#ok++;
      this.totals.ok++;
      return;
    }
    const label = failureLabel(error);
    this.failures.add(label);
    this.totals.failed++;
    this.totals.failuresByLabel[label] = (this.totals.failuresByLabel[label] ?? 0) + 1;
  }

  retry(phase: string): void {
    this.retries.add(phase);
    this.totals.retries++;
  }

  evict(reason: string): void {
    this.evictions.add(reason);
    this.totals.evictions++;
  }

  connectError(error: unknown): void {
    this.connectErrors.add(failureLabel(error));
    this.totals.connectErrors++;
  }

  errorEvent(error: unknown): void {
    this.errorEvents.add(failureLabel(error));
    this.totals.errorEvents++;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** Closes the current second: returns its sample and appends it to the history. */
  sample(t: number): Sample {
    const sorted = this.#latencies.sort((a, b) => a - b);
    let oldest = Number.POSITIVE_INFINITY;
    // Map iteration is insertion order, so the first entry is the oldest request.
    for (const startedAt of this.#inFlight.values()) {
      oldest = startedAt;
      break;
    }
    const sample: Sample = {
      t,
      ...this.#gauges(),
      ok: this.#ok,
      failed: this.failures.total,
      inFlight: this.#inFlight.size,
      oldestMs: Number.isFinite(oldest) ? Math.round(performance.now() - oldest) : 0,
      retries: this.retries.total,
      evictions: this.evictions.total,
      connectErrors: this.connectErrors.total,
      p50: percentile(sorted, 50),
      p95: percentile(sorted, 95),
      p99: percentile(sorted, 99),
      max: sorted.length > 0 ? round(sorted[sorted.length - 1]!) : null,
    };
    this.#latencies = [];
    this.#ok = 0;
    this.series.push(sample);
    if (this.series.length > HISTORY_S) this.series.splice(0, this.series.length - HISTORY_S);
    return sample;
  }

  /** Clears the per-second tallies once their log lines are written. */
  clearWindow(): void {
    this.failures.clear();
    this.retries.clear();
    this.evictions.clear();
    this.connectErrors.clear();
    this.errorEvents.clear();
  }

  state(): PoolState {
    return {
      label: this.label,
      current: this.series[this.series.length - 1] ?? null,
      totals: this.totals,
      series: this.series,
    };
  }
}

export interface MonitorOptions {
  steadfast: PoolTracker;
  pg: PoolTracker;
  /** The database and network state, sent with every tick. */
  status: () => Record<string, unknown>;
}

/** Samples both pools every second, writes the event log, and hands each tick to subscribers. */
export class Monitor {
  readonly pools: Record<PoolKey, PoolTracker>;
  readonly events: LogEntry[] = [];
  readonly marks: ChaosMark[] = [];
  readonly startedAt = Date.now();
  readonly #status: () => Record<string, unknown>;
  readonly #subscribers = new Set<(tick: Tick) => void>();
  #seq = 0;
  #markId = 0;
  #pending: LogEntry[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(options: MonitorOptions) {
    this.pools = { steadfast: options.steadfast, pg: options.pg };
    this.#status = options.status;
  }

  start(): void {
    this.#timer ??= setInterval(() => this.tick(), 1000);
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#subscribers.clear();
  }

  subscribe(listener: (tick: Tick) => void): () => void {
    this.#subscribers.add(listener);
    return () => this.#subscribers.delete(listener);
  }

  log(source: LogSource, level: LogLevel, text: string): LogEntry {
    const entry: LogEntry = { seq: ++this.#seq, t: Date.now(), source, level, text };
    this.events.push(entry);
    if (this.events.length > EVENT_LOG_SIZE) this.events.splice(0, this.events.length - EVENT_LOG_SIZE);
    this.#pending.push(entry);
    return entry;
  }

  /** Starts a band on the charts; call the returned function when the action is over. */
  mark(kind: string, label: string): (end?: number) => void {
    const mark: ChaosMark = { id: ++this.#markId, kind, label, start: Date.now(), end: null };
    this.marks.push(mark);
    const horizon = Date.now() - HISTORY_S * 1000;
    while (this.marks.length > 0 && this.marks[0]!.end !== null && this.marks[0]!.end < horizon) {
      this.marks.shift();
    }
    return (end = Date.now()) => {
      mark.end ??= end;
    };
  }

  /** Closes the current second for both pools and tells the subscribers. */
  tick(): Tick {
    const t = Date.now();
    const samples = {} as Record<PoolKey, Sample>;
    for (const key of POOL_KEYS) {
      const pool = this.pools[key];
      samples[key] = pool.sample(t);
      this.#describeWindow(pool, samples[key]);
      pool.clearWindow();
    }
    const tick: Tick = {
      t,
      samples,
      totals: { steadfast: this.pools.steadfast.totals, pg: this.pools.pg.totals },
      events: this.#pending,
      marks: this.marks,
      status: this.#status(),
    };
    this.#pending = [];
    for (const listener of this.#subscribers) {
      try {
        listener(tick);
      } catch {
        // A subscriber that broke (a closed response) must not stop the others.
      }
    }
    return tick;
  }

  state(): Record<string, unknown> {
    return {
      startedAt: this.startedAt,
      now: Date.now(),
      historyS: HISTORY_S,
      status: this.#status(),
      pools: { steadfast: this.pools.steadfast.state(), pg: this.pools.pg.state() },
      events: this.events,
      marks: this.marks,
    };
  }

  /** Log lines for what one pool's second held, and the start and end of its outages. */
  #describeWindow(pool: PoolTracker, sample: Sample): void {
    const source = pool.key;
    if (pool.failures.total > 0) {
      this.log(
        source,
        'bad',
        `${count(pool.failures.total, 'request', 'requests')} failed: ${pool.failures.describe()}`,
      );
    }
    const notes: string[] = [];
    if (pool.retries.total > 0) {
      notes.push(`${count(pool.retries.total, 'retry', 'retries')} (${pool.retries.describe()})`);
    }
    if (pool.connectErrors.total > 0) {
      const attempts = count(
        pool.connectErrors.total,
        'failed connection attempt',
        'failed connection attempts',
      );
      notes.push(`${attempts} (${pool.connectErrors.describe()})`);
    }
    if (pool.evictions.total > 0) {
      // pg.Pool does not say why it removed a client.
      notes.push(
        pool.key === 'pg'
          ? `${count(pool.evictions.total, 'client', 'clients')} removed from the pool`
          : `${count(pool.evictions.total, 'connection', 'connections')} evicted (${pool.evictions.describe()})`,
      );
    }
    if (pool.errorEvents.total > 0) {
      notes.push(
        `${count(pool.errorEvents.total, "'error' event", "'error' events")} on idle clients ` +
          `(${pool.errorEvents.describe()}), caught by the demo's listener`,
      );
    }
    if (notes.length > 0) this.log(source, 'warn', notes.join(' · '));

    if (sample.failed > 0) {
      if (!pool.inOutage) {
        pool.inOutage = true;
        pool.outageFailures = 0;
        pool.outageStart = sample.t - 1000;
      }
      pool.outageFailures += sample.failed;
    } else if (pool.inOutage && sample.ok > 0) {
      pool.inOutage = false;
      const seconds = Math.round((sample.t - pool.outageStart) / 1000);
      this.log(
        source,
        'good',
        `requests succeed again: ${count(pool.outageFailures, 'request', 'requests')} failed over ${seconds} s`,
      );
    }
  }
}
