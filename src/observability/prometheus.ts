/**
 * Prometheus metrics for a pool, through prom-client.
 *
 * This module is its own entry point: it is the only place that imports `prom-client`, an optional peer
 * dependency, so applications that do not ask for Prometheus never load it.
 *
 * Point-in-time figures are gauges filled from `pool.stats()` when the registry is scraped, so they
 * cost nothing between scrapes. Durations and counts of events are recorded from the pool's lifecycle
 * events as they happen.
 *
 * Several pools share one set of metrics per registry (and prefix), told apart by the `pool` label:
 * a metric name can be registered only once in a registry, and a single metric with a `pool` label is
 * what PromQL aggregates over anyway.
 *
 * @module
 */
import { Counter, register as defaultRegistry, Gauge, type Metric, Registry } from 'prom-client';
import { subscribe } from '../engine/emitter.js';
import type { Pool } from '../pg/pool.js';
import type { BreakerState } from '../resilience/breaker.js';
import { errorLabel } from '../resilience/classify.js';
import { AggregatedHistogram, type HistogramSeries } from './prometheus-histogram.js';

/**
 * What the collector reads from a pool. A structural type, so a pool from another copy of this package
 * (ESM and CommonJS builds loaded side by side) is accepted too.
 */
export type CollectedPool = Pick<Pool, 'poolName' | 'lifecycle' | 'stats'>;

/** Options of {@link prometheusCollector}. */
export interface PrometheusOptions {
  /**
   * The registry to register the metrics in. Default: prom-client's global `register`. Set its content
   * type (Prometheus or OpenMetrics) before the first collector: counter names follow it.
   */
  registry?: Registry<any>;
  /** Prefix of every metric name. Default `'steadfast_'`. */
  prefix?: string;
}

/** A running collector. */
export interface Collector {
  /**
   * Stops reporting this pool and removes its series from the registry; the metrics themselves are
   * unregistered when the last pool sharing them detaches. Idempotent. Happens on its own when the pool
   * finishes closing.
   */
  detach(): void;
}

/**
 * Histogram buckets in seconds: the OpenTelemetry semantic conventions' advice for database operation
 * durations, used for every histogram here so both exports bucket alike.
 */
export const PROMETHEUS_BUCKETS_S: readonly number[] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10];

/** `breaker_state` values: ordered by how much traffic gets through, so `max()` finds the worst pool. */
const BREAKER_VALUE: Readonly<Record<BreakerState, number>> = { closed: 0, 'half-open': 1, open: 2 };
const BREAKER_STATES = Object.keys(BREAKER_VALUE) as BreakerState[];
const OPERATION_KINDS = ['query', 'transaction'] as const;
const OUTCOMES = ['ok', 'error'] as const;
const RETRY_PHASES = ['connect', 'query', 'transaction'] as const;

type Stats = ReturnType<CollectedPool['stats']>;

/** `connections{state}`: every open or opening connection is in exactly one of these. */
const CONNECTION_STATES: readonly (readonly [string, (s: Stats) => number])[] = [
  ['idle', (s) => s.idle],
  ['in_use', (s) => s.inUse],
  ['validating', (s) => s.validating],
  ['resetting', (s) => s.resetting],
  ['connecting', (s) => s.connecting],
];

/** Gauges with only the `pool` label; `undefined` leaves the pool out of that gauge. */
const POOL_GAUGES: readonly { name: string; help: string; value: (s: Stats) => number | undefined }[] = [
  { name: 'connections_max', help: 'The most connections the pool opens (max).', value: (s) => s.max },
  {
    name: 'connections_min',
    help: 'Idle connections the pool keeps open however long they idle (min).',
    value: (s) => s.min,
  },
  {
    name: 'pool_size',
    help: 'Connections kept open when idle (max - maxOverflow); the most idle connections kept.',
    value: (s) => s.keptSize,
  },
  { name: 'checked_in', help: 'Idle connections, ready to be checked out.', value: (s) => s.idle },
  { name: 'checked_out', help: 'Connections checked out by callers.', value: (s) => s.inUse },
  {
    name: 'overflow',
    help: 'Open connections beyond pool_size; they close when nobody needs them.',
    value: (s) => s.overflow,
  },
  { name: 'pending_requests', help: 'Callers waiting for a connection.', value: (s) => s.waiting },
  {
    name: 'consecutive_connect_failures',
    help: 'Failed connection attempts since the last successful one.',
    value: (s) => s.consecutiveConnectFailures,
  },
  {
    name: 'breaker_state',
    help: 'Circuit breaker state: 0 closed, 1 half-open, 2 open. Absent for pools without a breaker.',
    value: (s) => (s.breaker === undefined ? undefined : BREAKER_VALUE[s.breaker.state]),
  },
];

/** The metrics of one registry and prefix, shared by every pool collected into it. */
interface Shared {
  registry: Registry<any>;
  /** Every metric registered, to unregister them with the last pool. */
  registered: { name: string; metric: object }[];
  pools: Map<string, CollectedPool>;
  timeouts: Counter<'pool'>;
  retries: Counter<'pool' | 'phase'>;
  evictions: Counter<'pool' | 'reason'>;
  connectErrors: Counter<'pool' | 'code'>;
  operationErrors: Counter<'pool' | 'kind' | 'code'>;
  breakerTransitions: Counter<'pool' | 'to'>;
  createSeconds: AggregatedHistogram;
  waitSeconds: AggregatedHistogram;
  useSeconds: AggregatedHistogram;
  operationSeconds: AggregatedHistogram;
}

/** Shared metrics by registry, then by prefix (two prefixes make two independent sets of names). */
const sharedByRegistry = new WeakMap<Registry<any>, Map<string, Shared>>();

function createShared(registry: Registry<any>, prefix: string, registered: Shared['registered']): Shared {
  const registers = [registry];
  const pools = new Map<string, CollectedPool>();
  // An OpenMetrics registry appends `_total` to counter names itself; a Prometheus one prints them as named.
  const total = registry.contentType === Registry.OPENMETRICS_CONTENT_TYPE ? '' : '_total';
  const keep = <M extends object>(name: string, metric: M): M => {
    registered.push({ name, metric });
    return metric;
  };
  const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
    keep(prefix + name + total, new Counter<L>({ name: prefix + name + total, help, labelNames, registers }));
  // Histograms aggregate on our side (see prometheus-histogram.ts); the registry reads them when scraped.
  const histogram = (name: string, help: string, labelNames: string[]) => {
    const metric = new AggregatedHistogram(prefix + name, help, labelNames, PROMETHEUS_BUCKETS_S);
    registry.registerMetric(metric as unknown as Metric);
    return keep(prefix + name, metric);
  };

  // Gauges are filled at scrape time: reset first, so a pool that left takes its series with it.
  keep(
    prefix + 'connections',
    new Gauge<'pool' | 'state'>({
      name: prefix + 'connections',
      help: 'Connections by state: idle, in_use, validating, resetting, connecting (being opened).',
      labelNames: ['pool', 'state'],
      registers,
      collect() {
        this.reset();
        for (const [pool, source] of pools) {
          const stats = source.stats();
          for (const [state, value] of CONNECTION_STATES) this.set({ pool, state }, value(stats));
        }
      },
    }),
  );
  for (const gauge of POOL_GAUGES) {
    keep(
      prefix + gauge.name,
      new Gauge<'pool'>({
        name: prefix + gauge.name,
        help: gauge.help,
        labelNames: ['pool'],
        registers,
        collect() {
          this.reset();
          for (const [pool, source] of pools) {
            const value = gauge.value(source.stats());
            if (value !== undefined) this.set({ pool }, value);
          }
        },
      }),
    );
  }

  return {
    registry,
    registered,
    pools,
    timeouts: counter('acquire_timeouts', 'Callers that gave up waiting for a connection.', ['pool']),
    retries: counter('retries', 'Retries scheduled, by phase: connect, query, transaction.', [
      'pool',
      'phase',
    ]),
    evictions: counter('evictions', 'Connections the pool closed, by reason.', ['pool', 'reason']),
    connectErrors: counter(
      'connect_errors',
      'Failed attempts to open a connection, by error code (SQLSTATE, Node code or steadfast code).',
      ['pool', 'code'],
    ),
    operationErrors: counter(
      'operation_errors',
      'Failed pool.query() and pool.transaction() calls, by kind and error code.',
      ['pool', 'kind', 'code'],
    ),
    breakerTransitions: counter('breaker_transitions', 'Circuit breaker state changes, by new state.', [
      'pool',
      'to',
    ]),
    createSeconds: histogram('connection_create_seconds', 'Time to open a new connection, in seconds.', [
      'pool',
    ]),
    waitSeconds: histogram(
      'connection_wait_seconds',
      'Time callers waited to obtain a connection, in seconds (successful acquisitions).',
      ['pool'],
    ),
    useSeconds: histogram(
      'connection_use_seconds',
      'Time between checking a connection out and returning it, in seconds.',
      ['pool'],
    ),
    operationSeconds: histogram(
      'operation_duration_seconds',
      'Duration of pool.query() and pool.transaction() calls, retries and connection wait included, in seconds.',
      ['pool', 'kind', 'outcome'],
    ),
  };
}

/**
 * The shared metrics for this registry and prefix, created on first use. Recreated when the registry no
 * longer holds them (after `registry.clear()`). When another owner registered one of the names,
 * prom-client's duplicate-registration error is thrown and nothing stays registered.
 */
function sharedFor(registry: Registry<any>, prefix: string): Shared {
  let byPrefix = sharedByRegistry.get(registry);
  if (byPrefix === undefined) {
    byPrefix = new Map();
    sharedByRegistry.set(registry, byPrefix);
  }
  const shared = byPrefix.get(prefix);
  const first = shared?.registered[0];
  if (shared !== undefined && first !== undefined && registry.getSingleMetric(first.name) === first.metric) {
    return shared;
  }
  const registered: Shared['registered'] = [];
  try {
    const created = createShared(registry, prefix, registered);
    byPrefix.set(prefix, created);
    return created;
  } catch (error) {
    // A name was taken by someone else: leave the registry as it was, not half filled.
    for (const { name, metric } of registered) {
      if (registry.getSingleMetric(name) === metric) registry.removeSingleMetric(name);
    }
    throw error;
  }
}

function release(shared: Shared, prefix: string): void {
  if (shared.pools.size > 0) return;
  for (const { name, metric } of shared.registered) {
    // Only our own: after registry.clear() the name may belong to a newer set.
    if (shared.registry.getSingleMetric(name) === metric) shared.registry.removeSingleMetric(name);
  }
  const byPrefix = sharedByRegistry.get(shared.registry);
  if (byPrefix?.get(prefix) === shared) byPrefix.delete(prefix);
}

/**
 * Collects a pool's figures into a prom-client registry.
 *
 * Metrics (names after the prefix, default `steadfast_`), all labelled `pool` with `pool.poolName`:
 *
 * - Gauges, read from `pool.stats()` at scrape time: `connections{state}` (idle, in_use, validating,
 *   resetting, connecting), `connections_max`, `connections_min`, `pool_size` (the kept size,
 *   `max - maxOverflow`), `checked_in` (idle), `checked_out` (in use), `overflow` (open beyond
 *   `pool_size`), `pending_requests` (callers waiting), `consecutive_connect_failures`, `breaker_state`
 *   (0 closed, 1 half-open, 2 open; only for pools with a circuit breaker).
 * - Counters, from lifecycle events since this call: `acquire_timeouts_total`, `retries_total{phase}`,
 *   `evictions_total{reason}`, `connect_errors_total{code}`, `operation_errors_total{kind,code}`,
 *   `breaker_transitions_total{to}`. (On an OpenMetrics registry prom-client adds the `_total` itself.)
 * - Histograms in seconds ({@link PROMETHEUS_BUCKETS_S}): `connection_create_seconds`,
 *   `connection_wait_seconds`, `connection_use_seconds`, `operation_duration_seconds{kind,outcome}`.
 *
 * Series with known label values (phases, eviction reasons, breaker states, kinds and outcomes) start at
 * 0, so `rate()` and `increase()` see their first increment. `code` is the error's SQLSTATE, Node code
 * or steadfast code (`errorLabel`), or `unknown`; label values never come from the connection settings
 * or an error message.
 *
 * @param pool - the pool to collect; its `poolName` must be unique among the pools in this registry.
 * @param options - the registry and the metric name prefix.
 * @returns a handle whose `detach()` stops the collection.
 * @throws Error when a pool of the same name is already collected into this registry with this prefix.
 */
export function prometheusCollector(pool: CollectedPool, options: PrometheusOptions = {}): Collector {
  const registry = options.registry ?? defaultRegistry;
  const prefix = options.prefix ?? 'steadfast_';
  const shared = sharedFor(registry, prefix);
  const name = pool.poolName;
  if (shared.pools.has(name)) {
    throw new Error(
      `A pool named "${name}" is already collected into this registry; give each pool its own poolName, or detach the other first`,
    );
  }

  // Every series this pool creates, so detach() can remove exactly those; label sets are cached by key
  // so an event reuses one object instead of building its labels again.
  type Labels = Record<string, string>;
  const series: { metric: { remove(labels: Labels): void }; labels: Labels }[] = [];
  const labelSets = new Map<string, Labels>();
  const labelsOf = (metric: { remove(labels: Labels): void }, key: string, make: () => Labels): Labels => {
    let labels = labelSets.get(key);
    if (labels === undefined) {
      labels = make();
      labelSets.set(key, labels);
      series.push({ metric, labels });
    }
    return labels;
  };
  const retryLabels = (phase: string) =>
    labelsOf(shared.retries, `retry:${phase}`, () => ({ pool: name, phase }));
  const evictLabels = (reason: string) =>
    labelsOf(shared.evictions, `evict:${reason}`, () => ({ pool: name, reason }));
  const breakerLabels = (to: string) =>
    labelsOf(shared.breakerTransitions, `breaker:${to}`, () => ({ pool: name, to }));
  const operationLabels = (kind: string, outcome: string) =>
    labelsOf(shared.operationSeconds, `operation:${kind}:${outcome}`, () => ({ pool: name, kind, outcome }));

  const poolLabels: Labels = { pool: name };
  for (const metric of [shared.timeouts, shared.createSeconds, shared.waitSeconds, shared.useSeconds]) {
    series.push({ metric, labels: poolLabels });
  }
  // Start known series at 0: a counter that appears only with its first increment hides that increment
  // from rate() and increase().
  const stats = pool.stats();
  shared.timeouts.inc(poolLabels, 0);
  for (const phase of RETRY_PHASES) shared.retries.inc(retryLabels(phase), 0);
  for (const reason of Object.keys(stats.counters.evictions)) shared.evictions.inc(evictLabels(reason), 0);
  if (stats.breaker !== undefined) {
    for (const to of BREAKER_STATES) shared.breakerTransitions.inc(breakerLabels(to), 0);
  }
  // Histogram series are created (at zero) once, here; events record into them directly.
  const createSeries = shared.createSeconds.series(poolLabels);
  const waitSeries = shared.waitSeconds.series(poolLabels);
  const useSeries = shared.useSeconds.series(poolLabels);
  const operationSeries = Object.fromEntries(
    OPERATION_KINDS.map((kind) => [
      kind,
      {
        ok: shared.operationSeconds.series(operationLabels(kind, 'ok')),
        error: shared.operationSeconds.series(operationLabels(kind, 'error')),
      },
    ]),
  ) as Record<(typeof OPERATION_KINDS)[number], Record<(typeof OUTCOMES)[number], HistogramSeries>>;

  const subscriptions = subscribe(pool.lifecycle);
  const on = subscriptions.on;

  on('connect', ({ durationMs }) => createSeries.observe(durationMs / 1000));
  on('acquire', ({ waitMs }) => waitSeries.observe(waitMs / 1000));
  on('release', ({ useMs }) => useSeries.observe(useMs / 1000));
  on('timeout', () => shared.timeouts.inc(poolLabels));
  on('retry', ({ phase }) => shared.retries.inc(retryLabels(phase)));
  on('evict', ({ reason }) => shared.evictions.inc(evictLabels(reason)));
  on('breaker', ({ to }) => shared.breakerTransitions.inc(breakerLabels(to)));
  on('connectError', ({ error }) => {
    const code = errorLabel(error);
    shared.connectErrors.inc(labelsOf(shared.connectErrors, `connect:${code}`, () => ({ pool: name, code })));
  });
  on('operation', (event) => {
    const { kind } = event;
    // `in` rather than `error !== undefined`: a call can fail with `undefined` as its reason.
    const failed = 'error' in event;
    operationSeries[kind][failed ? 'error' : 'ok'].observe(event.durationMs / 1000);
    if (failed) {
      const code = errorLabel(event.error);
      const labels = labelsOf(shared.operationErrors, `error:${kind}:${code}`, () => ({
        pool: name,
        kind,
        code,
      }));
      shared.operationErrors.inc(labels);
    }
  });
  // A closed pool has nothing left to report, and keeping its name would block a successor's.
  on('close', () => detach());

  shared.pools.set(name, pool);

  let attached = true;
  function detach(): void {
    if (!attached) return;
    attached = false;
    subscriptions.detach();
    shared.pools.delete(name);
    for (const { metric, labels } of series.splice(0)) metric.remove(labels);
    release(shared, prefix);
  }
  return { detach };
}
