/**
 * OpenTelemetry metrics against a real PostgreSQL: a scripted workload (queries, a syntax error, a
 * transaction, callers queued behind held connections, an acquire timeout, evictions, a dead server)
 * read back through the SDK's MetricReader, checked for the semantic-convention names, units,
 * instrument kinds, attributes and values.
 */
import { type Meter, metrics } from '@opentelemetry/api';
import {
  AggregationTemporality,
  type DataPoint,
  DataPointType,
  type Histogram,
  MeterProvider,
  type MetricData,
  MetricReader,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { ErrorCodes, Pool, type PoolConfig } from '../../src/index.js';
import { DURATION_BUCKETS_S, instrumentOpenTelemetry } from '../../src/observability/otel.js';
import { getFreePort } from '../../testbed/ports.js';
import { PostgresServer } from '../../testbed/postgres.js';

/** Used as the database password: it must never reach a metric. */
const SENTINEL = 'S3ntinel-pw-XYZ';

/** Reads on demand, cumulatively, like a pull exporter. */
class TestReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

let server: PostgresServer;
const pools: Pool[] = [];
const providers: MeterProvider[] = [];

function newPool(config: PoolConfig = {}): Pool {
  const pool = new Pool({ connectionString: server.connectionString, ...config });
  pools.push(pool);
  return pool;
}

function newReader(): { reader: TestReader; provider: MeterProvider } {
  const reader = new TestReader();
  const provider = new MeterProvider({ readers: [reader] });
  providers.push(provider);
  return { reader, provider };
}

/** A meter that remembers which `create*` method made each instrument: the instrument kind. */
function recordingMeter(meter: Meter): { meter: Meter; kinds: Map<string, string> } {
  const kinds = new Map<string, string>();
  const proxy = new Proxy(meter, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (typeof property === 'string' && property.startsWith('create')) {
        return (name: string, options?: unknown) => {
          kinds.set(name, property);
          return value.call(target, name, options);
        };
      }
      return value.bind(target);
    },
  });
  return { meter: proxy, kinds };
}

async function collect(reader: TestReader): Promise<ResourceMetrics> {
  const { resourceMetrics, errors } = await reader.collect();
  expect(errors).toEqual([]);
  return resourceMetrics;
}

function find(resourceMetrics: ResourceMetrics, name: string): MetricData | undefined {
  for (const scope of resourceMetrics.scopeMetrics) {
    if (scope.scope.name !== 'pg-steadfast') continue;
    const found = scope.metrics.find((m) => m.descriptor.name === name);
    if (found) return found;
  }
  return undefined;
}

function metric(resourceMetrics: ResourceMetrics, name: string): MetricData {
  const found = find(resourceMetrics, name);
  if (found === undefined) throw new Error(`metric ${name} was not exported`);
  return found;
}

/** The data point with exactly these attributes. */
function point(data: MetricData, attributes: Record<string, unknown>): DataPoint<unknown> | undefined {
  return (data.dataPoints as DataPoint<unknown>[]).find(
    (p) =>
      Object.keys(p.attributes).length === Object.keys(attributes).length &&
      Object.entries(attributes).every(([k, v]) => p.attributes[k] === v),
  );
}

function value(resourceMetrics: ResourceMetrics, name: string, attributes: Record<string, unknown>): unknown {
  const data = find(resourceMetrics, name);
  return data === undefined ? undefined : point(data, attributes)?.value;
}

function histogram(
  resourceMetrics: ResourceMetrics,
  name: string,
  attributes: Record<string, unknown>,
): Histogram | undefined {
  return value(resourceMetrics, name, attributes) as Histogram | undefined;
}

/** The error a call failed with; fails the test if the call succeeded. */
async function failure(call: Promise<unknown>): Promise<{ code?: string }> {
  try {
    await call;
  } catch (error) {
    return error as { code?: string };
  }
  throw new Error('expected the call to fail');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

beforeAll(async () => {
  server = await PostgresServer.start({ password: SENTINEL });
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
  await Promise.all(providers.splice(0).map((p) => p.shutdown()));
  metrics.disable();
});

afterAll(async () => {
  await server?.destroy();
});

describe('instrumentOpenTelemetry', () => {
  it('reports every semconv metric with its name, unit, kind, attributes and the workload values', async () => {
    const { reader, provider } = newReader();
    const { meter, kinds } = recordingMeter(provider.getMeter('pg-steadfast'));
    const name = 'otel-main';
    const pool = newPool({ poolName: name, max: 3, maxOverflow: 1, min: 1 });
    instrumentOpenTelemetry(pool, { meter });
    const poolAttrs = { 'db.client.connection.pool.name': name };
    const op = (kind: string, extra: Record<string, string> = {}) => ({
      ...poolAttrs,
      'db.system.name': 'postgresql',
      'db.system': 'postgresql',
      'pg_steadfast.operation.kind': kind,
      ...extra,
    });

    // The workload.
    for (let i = 0; i < 5; i++) await pool.query('SELECT $1::int AS n', [i]);
    const syntax = await failure(pool.query('SELEC 1'));
    expect(syntax.code).toBe('42601');
    await pool.transaction(async (tx) => {
      await tx.query('SELECT 1');
    });
    const held = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
    const waiter = pool.query('SELECT 2 AS n');
    const timedOut = failure(pool.query('SELECT 3', [], { timeoutMs: 150 }));
    await expect.poll(() => pool.stats().waiting).toBe(2);
    const during = await collect(reader);
    expect((await timedOut).code).toBe(ErrorCodes.ACQUIRE_TIMEOUT);
    await sleep(100);
    held[0]!.release(); // the waiter takes it, after waiting at least 250 ms
    expect((await waiter).rows[0].n).toBe(2);
    held[1]!.release(true); // destroyed: released-with-error
    held[2]!.release();
    const after = await collect(reader);
    const stats = pool.stats();

    // Names, units and instrument kinds.
    const expected: [string, string, string][] = [
      ['db.client.connection.count', '{connection}', 'createObservableUpDownCounter'],
      ['db.client.connection.idle.max', '{connection}', 'createObservableUpDownCounter'],
      ['db.client.connection.idle.min', '{connection}', 'createObservableUpDownCounter'],
      ['db.client.connection.max', '{connection}', 'createObservableUpDownCounter'],
      ['db.client.connection.pending_requests', '{request}', 'createObservableUpDownCounter'],
      ['db.client.connection.timeouts', '{timeout}', 'createCounter'],
      ['db.client.connection.create_time', 's', 'createHistogram'],
      ['db.client.connection.wait_time', 's', 'createHistogram'],
      ['db.client.connection.use_time', 's', 'createHistogram'],
      ['db.client.operation.duration', 's', 'createHistogram'],
      ['pg_steadfast.connection.evictions', '{connection}', 'createCounter'],
      ['pg_steadfast.breaker.status', '1', 'createObservableUpDownCounter'],
    ];
    for (const [metricName, unit, kind] of expected) {
      const data = metric(after, metricName);
      expect(data.descriptor.unit, metricName).toBe(unit);
      expect(data.descriptor.description, metricName).not.toBe('');
      expect(kinds.get(metricName), metricName).toBe(kind);
      if (kind === 'createHistogram') {
        expect(data.dataPointType, metricName).toBe(DataPointType.HISTOGRAM);
        for (const p of data.dataPoints as DataPoint<Histogram>[]) {
          expect(p.value.buckets.boundaries, metricName).toEqual(DURATION_BUCKETS_S);
        }
      } else {
        expect(data.dataPointType, metricName).toBe(DataPointType.SUM);
        expect(data.dataPointType === DataPointType.SUM && data.isMonotonic, metricName).toBe(
          kind === 'createCounter',
        );
      }
      expect(data.aggregationTemporality).toBe(AggregationTemporality.CUMULATIVE);
      for (const p of data.dataPoints) {
        expect(p.attributes['db.client.connection.pool.name'], metricName).toBe(name);
      }
    }

    // While every connection was held and two callers queued.
    expect(
      value(during, 'db.client.connection.count', { ...poolAttrs, 'db.client.connection.state': 'used' }),
    ).toBe(3);
    expect(
      value(during, 'db.client.connection.count', { ...poolAttrs, 'db.client.connection.state': 'idle' }),
    ).toBe(0);
    expect(value(during, 'db.client.connection.pending_requests', poolAttrs)).toBe(2);

    // After the workload.
    expect(
      value(after, 'db.client.connection.count', { ...poolAttrs, 'db.client.connection.state': 'used' }),
    ).toBe(0);
    expect(
      value(after, 'db.client.connection.count', { ...poolAttrs, 'db.client.connection.state': 'idle' }),
    ).toBe(stats.idle);
    expect(stats.idle).toBeGreaterThan(0);
    expect(value(after, 'db.client.connection.pending_requests', poolAttrs)).toBe(0);
    expect(value(after, 'db.client.connection.max', poolAttrs)).toBe(3);
    expect(value(after, 'db.client.connection.idle.max', poolAttrs)).toBe(2);
    expect(value(after, 'db.client.connection.idle.min', poolAttrs)).toBe(1);
    expect(value(after, 'db.client.connection.timeouts', poolAttrs)).toBe(1);
    for (const state of ['closed', 'half-open', 'open']) {
      expect(
        value(after, 'pg_steadfast.breaker.status', { ...poolAttrs, 'pg_steadfast.breaker.state': state }),
      ).toBe(state === 'closed' ? 1 : 0);
    }

    const created = histogram(after, 'db.client.connection.create_time', poolAttrs)!;
    expect(created.count).toBe(stats.counters.connectsSucceeded);
    expect(created.sum).toBeGreaterThan(0);
    const waited = histogram(after, 'db.client.connection.wait_time', poolAttrs)!;
    expect(waited.count).toBe(stats.counters.acquires);
    expect(waited.max).toBeGreaterThanOrEqual(0.2); // seconds, not milliseconds
    expect(waited.max).toBeLessThan(5);
    const used = histogram(after, 'db.client.connection.use_time', poolAttrs)!;
    expect(used.count).toBe(stats.counters.releases);
    expect(used.max).toBeGreaterThanOrEqual(0.2);
    expect(used.max).toBeLessThan(5);

    // One series per outcome: 5 queries and the waiter succeeded; a syntax error; an acquire timeout.
    const duration = metric(after, 'db.client.operation.duration');
    expect(duration.dataPoints).toHaveLength(4);
    expect(histogram(after, 'db.client.operation.duration', op('query'))?.count).toBe(6);
    expect(histogram(after, 'db.client.operation.duration', op('transaction'))?.count).toBe(1);
    const failedSql = histogram(
      after,
      'db.client.operation.duration',
      op('query', { 'error.type': '42601', 'db.response.status_code': '42601' }),
    );
    expect(failedSql?.count).toBe(1);
    // A pool error is no server response: error.type only.
    const timedOutOp = histogram(
      after,
      'db.client.operation.duration',
      op('query', { 'error.type': ErrorCodes.ACQUIRE_TIMEOUT }),
    );
    expect(timedOutOp?.count).toBe(1);
    expect(timedOutOp?.min).toBeGreaterThanOrEqual(0.14);

    // Evictions by reason, as the pool counted them: the overflow connection and the destroyed one.
    const evictions = metric(after, 'pg_steadfast.connection.evictions');
    const counted = Object.entries(stats.counters.evictions).filter(([, n]) => n > 0);
    expect(Object.fromEntries(counted)).toEqual({ overflow: 1, 'released-with-error': 1 });
    for (const [reason, n] of counted) {
      expect(point(evictions, { ...poolAttrs, 'pg_steadfast.eviction.reason': reason })?.value).toBe(n);
    }

    // Nothing from the connection settings anywhere.
    const exported = JSON.stringify([during, after]);
    expect(exported).not.toContain(SENTINEL);
    expect(exported).not.toContain('postgres://');
    expect(exported).not.toContain(server.host);
  });

  it('counts failed connects and their retries by code, and reports the breaker opening', async () => {
    const { reader, provider } = newReader();
    const port = await getFreePort();
    const name = 'otel-dead';
    const pool = newPool({
      connectionString: `postgres://${server.user}:${SENTINEL}@127.0.0.1:${port}/${server.database}`,
      poolName: name,
      connectTimeoutMs: 500,
      connectBackoffMaxMs: 50,
      circuitBreaker: { failureThreshold: 2, minOutageMs: 0, openMs: 60_000 },
    });
    instrumentOpenTelemetry(pool, { meterProvider: provider });
    const error = await failure(pool.query('SELECT 1', [], { timeoutMs: 5_000 }));
    expect(error.code).toBe(ErrorCodes.CIRCUIT_OPEN);
    // An attempt still in flight when the breaker opened would otherwise fail between the reads below.
    await expect.poll(() => pool.stats().connecting).toBe(0);
    const result = await collect(reader);
    const poolAttrs = { 'db.client.connection.pool.name': name };
    const failures = pool.stats().counters.connectsFailed;
    expect(failures).toBeGreaterThanOrEqual(2);
    expect(
      value(result, 'pg_steadfast.connection.create_errors', { ...poolAttrs, 'error.type': 'ECONNREFUSED' }),
    ).toBe(failures);
    const retries = value(result, 'pg_steadfast.retries', {
      ...poolAttrs,
      'pg_steadfast.retry.phase': 'connect',
      'error.type': 'ECONNREFUSED',
    });
    expect(retries).toBeGreaterThanOrEqual(1);
    expect(
      value(result, 'pg_steadfast.breaker.status', { ...poolAttrs, 'pg_steadfast.breaker.state': 'open' }),
    ).toBe(1);
    expect(
      value(result, 'pg_steadfast.breaker.status', { ...poolAttrs, 'pg_steadfast.breaker.state': 'closed' }),
    ).toBe(0);
    // No connection was made, so there is no create time; the call itself failed fast on the breaker.
    expect(histogram(result, 'db.client.connection.create_time', poolAttrs)).toBeUndefined();
    const failed = histogram(result, 'db.client.operation.duration', {
      ...poolAttrs,
      'db.system.name': 'postgresql',
      'db.system': 'postgresql',
      'pg_steadfast.operation.kind': 'query',
      'error.type': ErrorCodes.CIRCUIT_OPEN,
    });
    expect(failed?.count).toBe(1);
    const exported = JSON.stringify(result);
    expect(exported).not.toContain(SENTINEL);
    expect(exported).not.toContain(String(port));
  });

  it('keeps pools apart on one meter, refuses a duplicate name, and stops on detach() and on close', async () => {
    const { reader, provider } = newReader();
    const a = newPool({ poolName: 'otel-a' });
    const b = newPool({ poolName: 'otel-b' });
    const handleA = instrumentOpenTelemetry(a, { meterProvider: provider });
    instrumentOpenTelemetry(b, { meterProvider: provider });
    expect(() =>
      instrumentOpenTelemetry(newPool({ poolName: 'otel-a' }), { meterProvider: provider }),
    ).toThrow(/otel-a.*already reported/);
    await a.query('SELECT 1');
    await a.query('SELECT 1');
    await b.query('SELECT 1');
    const countOf = (result: ResourceMetrics, pool: string) =>
      histogram(result, 'db.client.operation.duration', {
        'db.client.connection.pool.name': pool,
        'db.system.name': 'postgresql',
        'db.system': 'postgresql',
        'pg_steadfast.operation.kind': 'query',
      })?.count;
    let result = await collect(reader);
    expect(countOf(result, 'otel-a')).toBe(2);
    expect(countOf(result, 'otel-b')).toBe(1);
    expect(value(result, 'db.client.connection.max', { 'db.client.connection.pool.name': 'otel-a' })).toBe(
      10,
    );
    expect(value(result, 'db.client.connection.max', { 'db.client.connection.pool.name': 'otel-b' })).toBe(
      10,
    );

    // detach(): no more stats() reads, no more records.
    handleA.detach();
    handleA.detach();
    const statsA = vi.spyOn(a, 'stats');
    await a.query('SELECT 1');
    await b.query('SELECT 1');
    result = await collect(reader);
    expect(statsA).not.toHaveBeenCalled();
    expect(countOf(result, 'otel-a')).toBe(2);
    expect(countOf(result, 'otel-b')).toBe(2);
    // The name is free again.
    const again = instrumentOpenTelemetry(a, { meterProvider: provider });
    again.detach();

    // A pool that closes detaches itself, and frees its name for a successor.
    await b.end();
    const successor = newPool({ poolName: 'otel-b' });
    instrumentOpenTelemetry(successor, { meterProvider: provider });
    await successor.query('SELECT 1');
    result = await collect(reader);
    expect(countOf(result, 'otel-b')).toBe(3);
  });

  it('leaves out the per-checkout connection timings with connectionTimings: false, and refuses a non-boolean', async () => {
    const { reader, provider } = newReader();
    const pool = newPool({ poolName: 'otel-lean' });
    expect(() =>
      instrumentOpenTelemetry(pool, { meterProvider: provider, connectionTimings: 'no' as never }),
    ).toThrow(/connectionTimings.*"no".*true or false/);
    instrumentOpenTelemetry(pool, { meterProvider: provider, connectionTimings: false });
    await pool.query('SELECT 1');
    await pool.query('SELECT 1');
    const result = await collect(reader);
    const poolAttrs = { 'db.client.connection.pool.name': 'otel-lean' };
    expect(histogram(result, 'db.client.connection.wait_time', poolAttrs)?.count ?? 0).toBe(0);
    expect(histogram(result, 'db.client.connection.use_time', poolAttrs)?.count ?? 0).toBe(0);
    expect(
      histogram(result, 'db.client.operation.duration', {
        ...poolAttrs,
        'db.system.name': 'postgresql',
        'db.system': 'postgresql',
        'pg_steadfast.operation.kind': 'query',
      })?.count,
    ).toBe(2);
    // The connection is still reported when it opens.
    expect(histogram(result, 'db.client.connection.create_time', poolAttrs)?.count).toBe(1);
  });

  it('uses the global meter provider by default, under the scope name pg-steadfast', async () => {
    const { reader, provider } = newReader();
    metrics.setGlobalMeterProvider(provider);
    const pool = newPool({ poolName: 'otel-global' });
    instrumentOpenTelemetry(pool);
    await pool.query('SELECT 1');
    const result = await collect(reader);
    expect(result.scopeMetrics.map((s) => s.scope.name)).toEqual(['pg-steadfast']);
    expect(
      histogram(result, 'db.client.connection.wait_time', { 'db.client.connection.pool.name': 'otel-global' })
        ?.count,
    ).toBe(1);
  });
});
