/**
 * OpenTelemetry metrics for a pool, named and shaped after the database client semantic conventions
 * (`db.client.connection.*`, `db.client.operation.duration`).
 *
 * This module is its own entry point: it is the only place that imports `@opentelemetry/api`, an
 * optional peer dependency, so applications that do not ask for OpenTelemetry never load it.
 *
 * Point-in-time figures (connections by state, limits, pending requests) are asynchronous instruments
 * read from `pool.stats()` once per collection, so they cost nothing between collections. Durations and
 * counts of events are recorded from the pool's lifecycle events as they happen.
 *
 * @module
 */
import {
  type Attributes,
  type BatchObservableResult,
  type Counter,
  type Histogram,
  type Meter,
  type MeterProvider,
  metrics,
  type Observable,
  type ObservableUpDownCounter,
  ValueType,
} from '@opentelemetry/api';
import { booleanOption } from '../config/validate.js';
import { subscribe } from '../engine/emitter.js';
import type { Pool } from '../pg/pool.js';
import type { BreakerState } from '../resilience/breaker.js';
import { errorLabel } from '../resilience/classify.js';

/**
 * What the instrumentation reads from a pool. A structural type, so a pool from another copy of this
 * package (ESM and CommonJS builds loaded side by side) is accepted too.
 */
export type InstrumentedPool = Pick<Pool, 'poolName' | 'lifecycle' | 'stats'>;

/** Options of {@link instrumentOpenTelemetry}. */
export interface OpenTelemetryOptions {
  /**
   * Where the meter comes from. Default: the global provider (`metrics.getMeterProvider()`) as it is at
   * the time of the call, so register the SDK's provider first.
   */
  meterProvider?: MeterProvider;
  /** A meter to use as is; takes precedence over `meterProvider`. */
  meter?: Meter;
  /**
   * Record `db.client.connection.wait_time` and `db.client.connection.use_time` on every checkout.
   * The OpenTelemetry SDK hashes the attribute set on each record (about 0.5 µs on a 2-core machine), so
   * these two cost about 1 µs per query; `false` leaves them out (the instruments stay, empty) and keeps
   * `db.client.operation.duration`. A View with the drop aggregation does not save that time: the SDK
   * still does the work. Default `true`.
   */
  connectionTimings?: boolean;
}

/** A running instrumentation. */
export interface Instrumentation {
  /**
   * Stops reporting this pool: removes its event listeners and its collection callback. Idempotent.
   * Happens on its own when the pool finishes closing.
   */
  detach(): void;
}

/** Instrumentation scope name of the meter taken from a provider. */
export const METER_NAME = 'pg-steadfast';

/**
 * Bucket boundaries in seconds: the semantic conventions' advice for `db.client.operation.duration`.
 * The connection histograms use them too, since their waits and round trips span the same range.
 */
export const DURATION_BUCKETS_S: readonly number[] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10];

/** Attribute names used here. The `pg_steadfast.*` ones describe this pool; the rest are semconv. */
const ATTR = {
  poolName: 'db.client.connection.pool.name',
  state: 'db.client.connection.state',
  systemName: 'db.system.name',
  /** The pre-1.30 name of `db.system.name`, still what many dashboards filter on. */
  system: 'db.system',
  statusCode: 'db.response.status_code',
  errorType: 'error.type',
  kind: 'pg_steadfast.operation.kind',
  phase: 'pg_steadfast.retry.phase',
  reason: 'pg_steadfast.eviction.reason',
  breakerState: 'pg_steadfast.breaker.state',
} as const;

/** The semconv fallback for `error.type` when the error carries no code. */
const OTHER_ERROR = '_OTHER';

/**
 * A SQLSTATE: five characters from [0-9A-Z], never starting with `E` (which tells it apart from Node's
 * errno codes such as `EPIPE`). Only these go into `db.response.status_code`.
 */
const SQLSTATE = /^[0-9A-DF-Z][0-9A-Z]{4}$/;

const BREAKER_STATES: readonly BreakerState[] = ['closed', 'half-open', 'open'];
const OPERATION_KINDS = ['query', 'transaction'] as const;
const RETRY_PHASES = ['connect', 'query', 'transaction'] as const;

/** The instruments of one meter, created once and shared by every pool reported through it. */
interface Instruments {
  count: ObservableUpDownCounter;
  idleMax: ObservableUpDownCounter;
  idleMin: ObservableUpDownCounter;
  max: ObservableUpDownCounter;
  pendingRequests: ObservableUpDownCounter;
  breakerState: ObservableUpDownCounter;
  timeouts: Counter;
  createTime: Histogram;
  waitTime: Histogram;
  useTime: Histogram;
  operationDuration: Histogram;
  createErrors: Counter;
  evictions: Counter;
  retries: Counter;
  /** Names of the pools reported through this meter: semconv requires a pool name unique in the application. */
  pools: Set<string>;
}

/**
 * Instruments by meter. Creating an instrument twice under one name makes some SDKs warn or keep two
 * storages, so every pool on a meter shares one set and tells its series apart by the pool name.
 */
const instrumentsByMeter = new WeakMap<Meter, Instruments>();

function durationOptions(description: string) {
  return {
    description,
    unit: 's',
    valueType: ValueType.DOUBLE,
    advice: { explicitBucketBoundaries: [...DURATION_BUCKETS_S] },
  };
}

function countOptions(description: string, unit: string) {
  return { description, unit, valueType: ValueType.INT };
}

function createInstruments(meter: Meter): Instruments {
  return {
    count: meter.createObservableUpDownCounter(
      'db.client.connection.count',
      countOptions(
        'The number of connections that are currently in state described by the `state` attribute.',
        '{connection}',
      ),
    ),
    idleMax: meter.createObservableUpDownCounter(
      'db.client.connection.idle.max',
      countOptions('The maximum number of idle open connections allowed.', '{connection}'),
    ),
    idleMin: meter.createObservableUpDownCounter(
      'db.client.connection.idle.min',
      countOptions('The minimum number of idle open connections allowed.', '{connection}'),
    ),
    max: meter.createObservableUpDownCounter(
      'db.client.connection.max',
      countOptions('The maximum number of open connections allowed.', '{connection}'),
    ),
    pendingRequests: meter.createObservableUpDownCounter(
      'db.client.connection.pending_requests',
      countOptions('The number of current pending requests for an open connection.', '{request}'),
    ),
    // One series per state, 1 for the current one and 0 for the others (as `hw.status` with `hw.state`
    // does), so a dashboard can filter or sum by state without knowing an encoding.
    breakerState: meter.createObservableUpDownCounter(
      'pg_steadfast.breaker.status',
      countOptions(
        'Whether the circuit breaker is in the state of the `pg_steadfast.breaker.state` attribute.',
        '1',
      ),
    ),
    timeouts: meter.createCounter(
      'db.client.connection.timeouts',
      countOptions(
        'The number of connection timeouts that have occurred trying to obtain a connection from the pool.',
        '{timeout}',
      ),
    ),
    createTime: meter.createHistogram(
      'db.client.connection.create_time',
      durationOptions('The time it took to create a new connection.'),
    ),
    waitTime: meter.createHistogram(
      'db.client.connection.wait_time',
      durationOptions('The time it took to obtain an open connection from the pool.'),
    ),
    useTime: meter.createHistogram(
      'db.client.connection.use_time',
      durationOptions('The time between borrowing a connection and returning it to the pool.'),
    ),
    operationDuration: meter.createHistogram(
      'db.client.operation.duration',
      durationOptions(
        'Duration of database client operations (a pool.query() or a whole pool.transaction()).',
      ),
    ),
    createErrors: meter.createCounter(
      'pg_steadfast.connection.create_errors',
      countOptions('Failed attempts to open a connection, by `error.type`.', '{error}'),
    ),
    evictions: meter.createCounter(
      'pg_steadfast.connection.evictions',
      countOptions('Connections the pool closed, by `pg_steadfast.eviction.reason`.', '{connection}'),
    ),
    retries: meter.createCounter(
      'pg_steadfast.retries',
      countOptions('Retries scheduled, by `pg_steadfast.retry.phase`.', '{retry}'),
    ),
    pools: new Set(),
  };
}

function instrumentsFor(meter: Meter): Instruments {
  let instruments = instrumentsByMeter.get(meter);
  if (instruments === undefined) {
    instruments = createInstruments(meter);
    instrumentsByMeter.set(meter, instruments);
  }
  return instruments;
}

/** One attribute set per key, built up front. */
function attributesBy<K extends string>(
  keys: readonly K[],
  make: (key: K) => Attributes,
): Record<K, Attributes> {
  const sets = {} as Record<K, Attributes>;
  for (const key of keys) sets[key] = make(key);
  return sets;
}

/**
 * `error.type` for an error: its SQLSTATE, Node code or steadfast code (from `errorLabel`, which never
 * looks at messages, so no user data reaches an attribute), or `_OTHER` when it has none.
 */
function errorType(error: unknown): string {
  const label = errorLabel(error);
  return label === 'unknown' ? OTHER_ERROR : label;
}

/**
 * Reports a pool's connections and operations as OpenTelemetry metrics.
 *
 * Instruments, all with `db.client.connection.pool.name` = `pool.poolName`:
 *
 * | name | instrument | unit | more attributes |
 * | --- | --- | --- | --- |
 * | `db.client.connection.count` | async UpDownCounter | `{connection}` | `db.client.connection.state`: `idle`, `used` |
 * | `db.client.connection.idle.max` | async UpDownCounter | `{connection}` | |
 * | `db.client.connection.idle.min` | async UpDownCounter | `{connection}` | |
 * | `db.client.connection.max` | async UpDownCounter | `{connection}` | |
 * | `db.client.connection.pending_requests` | async UpDownCounter | `{request}` | |
 * | `db.client.connection.timeouts` | Counter | `{timeout}` | |
 * | `db.client.connection.create_time` | Histogram | `s` | |
 * | `db.client.connection.wait_time` | Histogram | `s` | |
 * | `db.client.connection.use_time` | Histogram | `s` | |
 * | `db.client.operation.duration` | Histogram | `s` | `db.system.name` and `db.system` = `postgresql`, `pg_steadfast.operation.kind`: `query`, `transaction`; on failure `error.type` and, for server errors, `db.response.status_code` (the SQLSTATE) |
 * | `pg_steadfast.connection.create_errors` | Counter | `{error}` | `error.type` |
 * | `pg_steadfast.connection.evictions` | Counter | `{connection}` | `pg_steadfast.eviction.reason` |
 * | `pg_steadfast.retries` | Counter | `{retry}` | `pg_steadfast.retry.phase`, `error.type` |
 * | `pg_steadfast.breaker.status` | async UpDownCounter | `1` | `pg_steadfast.breaker.state`: 1 for the current state, 0 for the others; only with a circuit breaker |
 *
 * How the figures map: `used` counts open connections that are not idle (checked out, being validated
 * or reset); connections still being opened are in neither state. `idle.max` is the kept size
 * (`max - maxOverflow`): idle connections beyond it are overflow and close. `idle.min` is `min`.
 * `pending_requests` is callers waiting for a connection. Histograms record seconds, with the bucket
 * boundaries the conventions advise ({@link DURATION_BUCKETS_S}; passed as instrument advice, which
 * `@opentelemetry/api` >= 1.7 forwards and a View can override). `create_time` counts successful
 * connects only; failed ones go to `pg_steadfast.connection.create_errors`. `wait_time` counts
 * successful acquisitions; the ones that gave up count in `timeouts`. `db.client.operation.duration`
 * covers a whole call, retries and connection wait included. Counters count from this call on.
 *
 * Attribute values are the pool name, fixed words and error codes; never a host, user, password,
 * query text or error message.
 *
 * @param pool - the pool to report; its `poolName` must be unique among the pools reported on the meter.
 * @param options - where the meter comes from.
 * @returns a handle whose `detach()` stops the reporting.
 * @throws Error when a pool of the same name is already reported on this meter.
 */
export function instrumentOpenTelemetry(
  pool: InstrumentedPool,
  options: OpenTelemetryOptions = {},
): Instrumentation {
  const connectionTimings = booleanOption('connectionTimings', options.connectionTimings, true);
  const meter = options.meter ?? (options.meterProvider ?? metrics.getMeterProvider()).getMeter(METER_NAME);
  const instruments = instrumentsFor(meter);
  const name = pool.poolName;
  if (instruments.pools.has(name)) {
    throw new Error(
      `A pool named "${name}" is already reported on this meter; give each pool its own poolName, or detach the other first`,
    );
  }
  instruments.pools.add(name);

  // Attribute sets are built once: listeners run on the pool's hot path and only pick one.
  const poolAttrs: Attributes = { [ATTR.poolName]: name };
  const idleAttrs: Attributes = { ...poolAttrs, [ATTR.state]: 'idle' };
  const usedAttrs: Attributes = { ...poolAttrs, [ATTR.state]: 'used' };
  const operationBase: Attributes = {
    ...poolAttrs,
    [ATTR.systemName]: 'postgresql',
    [ATTR.system]: 'postgresql',
  };
  const operationOk = attributesBy(OPERATION_KINDS, (kind) => ({ ...operationBase, [ATTR.kind]: kind }));
  const breakerAttrs = attributesBy(BREAKER_STATES, (state) => ({
    ...poolAttrs,
    [ATTR.breakerState]: state,
  }));
  const retryBase = attributesBy(RETRY_PHASES, (phase) => ({ ...poolAttrs, [ATTR.phase]: phase }));
  const evictAttrs = new Map<string, Attributes>();

  const subscriptions = subscribe(pool.lifecycle);
  const on = subscriptions.on;

  on('connect', ({ durationMs }) => instruments.createTime.record(durationMs / 1000, poolAttrs));
  on('connectError', ({ error }) =>
    instruments.createErrors.add(1, { ...poolAttrs, [ATTR.errorType]: errorType(error) }),
  );
  if (connectionTimings) {
    on('acquire', ({ waitMs }) => instruments.waitTime.record(waitMs / 1000, poolAttrs));
    on('release', ({ useMs }) => instruments.useTime.record(useMs / 1000, poolAttrs));
  }
  on('timeout', () => instruments.timeouts.add(1, poolAttrs));
  on('evict', ({ reason }) => {
    let attrs = evictAttrs.get(reason);
    if (attrs === undefined) {
      attrs = { ...poolAttrs, [ATTR.reason]: reason };
      evictAttrs.set(reason, attrs);
    }
    instruments.evictions.add(1, attrs);
  });
  on('retry', ({ phase, error }) =>
    instruments.retries.add(1, { ...retryBase[phase], [ATTR.errorType]: errorType(error) }),
  );
  on('operation', (event) => {
    const durationS = event.durationMs / 1000;
    // `in` rather than `error !== undefined`: a call can fail with `undefined` as its reason.
    if (!('error' in event)) {
      instruments.operationDuration.record(durationS, operationOk[event.kind]);
      return;
    }
    const type = errorType(event.error);
    const attrs: Attributes = { ...operationOk[event.kind], [ATTR.errorType]: type };
    if (SQLSTATE.test(type)) attrs[ATTR.statusCode] = type;
    instruments.operationDuration.record(durationS, attrs);
  });
  // A closed pool has nothing left to report, and keeping its name would block a successor's.
  on('close', () => detach());

  const observe = (result: BatchObservableResult): void => {
    const stats = pool.stats();
    result.observe(instruments.count, stats.idle, idleAttrs);
    result.observe(instruments.count, Math.max(0, stats.total - stats.idle - stats.connecting), usedAttrs);
    result.observe(instruments.idleMax, stats.keptSize, poolAttrs);
    result.observe(instruments.idleMin, stats.min, poolAttrs);
    result.observe(instruments.max, stats.max, poolAttrs);
    result.observe(instruments.pendingRequests, stats.waiting, poolAttrs);
    const breaker = stats.breaker;
    if (breaker !== undefined) {
      for (const state of BREAKER_STATES) {
        result.observe(instruments.breakerState, breaker.state === state ? 1 : 0, breakerAttrs[state]);
      }
    }
  };
  const observables: Observable[] = [
    instruments.count,
    instruments.idleMax,
    instruments.idleMin,
    instruments.max,
    instruments.pendingRequests,
    instruments.breakerState,
  ];

  meter.addBatchObservableCallback(observe, observables);

  let attached = true;
  function detach(): void {
    if (!attached) return;
    attached = false;
    subscriptions.detach();
    meter.removeBatchObservableCallback(observe, observables);
    instruments.pools.delete(name);
  }
  return { detach };
}
