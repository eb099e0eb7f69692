/**
 * Prometheus metrics against a real PostgreSQL: after a scripted workload on several pools sharing one
 * registry, the exposition text parses, carries the expected series and values, agrees with
 * `getMetricsAsJSON()`, and holds nothing from the connection settings.
 */
import { Gauge, type OpenMetricsContentType, Registry, register } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, Pool, type PoolConfig } from '../../src/index.js';
import { PROMETHEUS_BUCKETS_S, prometheusCollector } from '../../src/observability/prometheus.js';
import { getFreePort } from '../../testbed/ports.js';
import { PostgresServer } from '../../testbed/postgres.js';

/** Used as the database password: it must never reach a metric. */
const SENTINEL = 'S3ntinel-pw-XYZ';

let server: PostgresServer;
const pools: Pool[] = [];
const collectors: { detach(): void }[] = [];

function newPool(config: PoolConfig = {}): Pool {
  const pool = new Pool({ connectionString: server.connectionString, ...config });
  pools.push(pool);
  return pool;
}

function collect(...args: Parameters<typeof prometheusCollector>): { detach(): void } {
  const collector = prometheusCollector(...args);
  collectors.push(collector);
  return collector;
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

// ---------------------------------------------------------------------------------------------------
// A strict reader of the Prometheus text format (version 0.0.4)
// ---------------------------------------------------------------------------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Family {
  help: string;
  type: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,?)/y;

function unescapeLabel(value: string): string {
  return value.replace(/\\([\\"n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

function parseValue(text: string): number {
  if (text === '+Inf') return Number.POSITIVE_INFINITY;
  if (text === '-Inf') return Number.NEGATIVE_INFINITY;
  if (text === 'NaN') return Number.NaN;
  if (!/^-?\d+(\.\d+)?(e[+-]?\d+)?$/.test(text)) throw new Error(`bad sample value ${JSON.stringify(text)}`);
  return Number(text);
}

/** Parses the exposition, failing on anything out of format: every family declared once, HELP then TYPE. */
function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  let current: { name: string; family: Family } | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const help = /^# HELP (\S+) (.*)$/.exec(line);
    if (help) {
      const [, name, helpText] = help as unknown as [string, string, string];
      expect(name).toMatch(METRIC_NAME);
      expect(families.has(name), `${name} declared twice`).toBe(false);
      current = { name, family: { help: helpText, type: '', samples: [] } };
      families.set(name, current.family);
      continue;
    }
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      expect(type[1], 'TYPE follows its HELP').toBe(current?.name);
      current!.family.type = type[2]!;
      continue;
    }
    expect(line.startsWith('#'), `unexpected comment ${line}`).toBe(false);
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample) throw new Error(`not a sample line: ${line}`);
    const [, name, labelText = '', valueText] = sample as unknown as [
      string,
      string,
      string | undefined,
      string,
    ];
    const labels: Record<string, string> = {};
    LABEL.lastIndex = 0;
    let end = 0;
    while (end < labelText.length) {
      const match = LABEL.exec(labelText);
      if (!match) throw new Error(`bad labels in ${line}`);
      labels[match[1]!] = unescapeLabel(match[2]!);
      end = LABEL.lastIndex;
    }
    expect(current, `sample before any TYPE: ${line}`).toBeDefined();
    const family = current!;
    const suffixes = family.family.type === 'histogram' ? ['_bucket', '_sum', '_count'] : [''];
    expect(
      suffixes.map((s) => family.name + s),
      `${name} belongs to ${family.name}`,
    ).toContain(name);
    family.family.samples.push({ name, labels, value: parseValue(valueText) });
  }
  for (const [name, family] of families) expect(family.type, `${name} has a TYPE`).not.toBe('');
  return families;
}

function matches(labels: Record<string, string>, wanted: Record<string, string>): boolean {
  return (
    Object.keys(labels).length === Object.keys(wanted).length &&
    Object.entries(wanted).every(([k, v]) => labels[k] === v)
  );
}

/** The value of the sample with exactly these labels; `undefined` when there is none. */
function sample(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string>,
): number | undefined {
  for (const family of families.values()) {
    const found = family.samples.find((s) => s.name === name && matches(s.labels, labels));
    if (found) return found.value;
  }
  return undefined;
}

/** Checks one histogram series: buckets as configured, cumulative, and +Inf equal to _count. */
function checkHistogram(families: Map<string, Family>, name: string, labels: Record<string, string>): number {
  const family = families.get(name)!;
  const buckets = family.samples.filter((s) => {
    if (s.name !== `${name}_bucket`) return false;
    const { le: _, ...rest } = s.labels;
    return matches(rest, labels);
  });
  expect(buckets.map((b) => b.labels.le)).toEqual([...PROMETHEUS_BUCKETS_S.map(String), '+Inf']);
  for (let i = 1; i < buckets.length; i++) {
    expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
  }
  const count = sample(families, `${name}_count`, labels)!;
  expect(buckets.at(-1)!.value).toBe(count);
  expect(sample(families, `${name}_sum`, labels)).toBeGreaterThanOrEqual(0);
  return count;
}

// ---------------------------------------------------------------------------------------------------

beforeAll(async () => {
  server = await PostgresServer.start({ password: SENTINEL });
});

afterEach(async () => {
  for (const collector of collectors.splice(0)) collector.detach();
  await Promise.all(pools.splice(0).map((p) => p.end()));
});

afterAll(async () => {
  await server?.destroy();
});

describe('the exposition reader used here', () => {
  it('rejects text out of format', () => {
    const valid = '# HELP x_total Things.\n# TYPE x_total counter\nx_total{pool="a\\"b"} 1\n';
    expect(sample(parseExposition(valid), 'x_total', { pool: 'a"b' })).toBe(1);
    expect(() => parseExposition(`${valid}${valid}`)).toThrow(/declared twice/);
    expect(() => parseExposition('x_total 1\n')).toThrow(/before any TYPE/);
    expect(() => parseExposition(valid.replace('} 1', '} one'))).toThrow(/bad sample value/);
    expect(() => parseExposition(valid.replace('pool=', '0pool='))).toThrow(/bad labels/);
    expect(() => parseExposition(`${valid}y_total 2\n`)).toThrow(/belongs to x_total/);
  });
});

describe('prometheusCollector', () => {
  it('exposes gauges, counters and histograms for several pools in one registry', async () => {
    const registry = new Registry();
    const a = newPool({ poolName: 'prom-a', max: 3, maxOverflow: 1, min: 1 });
    const b = newPool({ poolName: 'prom-b', max: 4 });
    const deadPort = await getFreePort();
    const dead = newPool({
      connectionString: `postgres://${server.user}:${SENTINEL}@127.0.0.1:${deadPort}/${server.database}`,
      poolName: 'prom-dead',
      connectTimeoutMs: 500,
      connectBackoffMaxMs: 50,
      circuitBreaker: { failureThreshold: 2, minOutageMs: 0, openMs: 60_000 },
    });
    // Three collectors on one registry: the metrics are registered once and shared.
    collect(a, { registry });
    collect(b, { registry });
    collect(dead, { registry });

    // The workload on A: queries, a syntax error, a transaction, two queued callers (one times out),
    // an overflow connection closed on return and a connection released with an error.
    for (let i = 0; i < 4; i++) await a.query('SELECT $1::int AS n', [i]);
    expect((await failure(a.query('SELEC 1'))).code).toBe('42601');
    await a.transaction(async (tx) => {
      await tx.query('SELECT 1');
    });
    const held = await Promise.all([a.connect(), a.connect(), a.connect()]);
    const waiter = a.query('SELECT 2 AS n');
    const timedOut = failure(a.query('SELECT 3', [], { timeoutMs: 150 }));
    await expect.poll(() => a.stats().waiting).toBe(2);
    const during = parseExposition(await registry.metrics());
    expect(sample(during, 'steadfast_pending_requests', { pool: 'prom-a' })).toBe(2);
    expect(sample(during, 'steadfast_checked_out', { pool: 'prom-a' })).toBe(3);
    expect(sample(during, 'steadfast_connections', { pool: 'prom-a', state: 'in_use' })).toBe(3);
    expect(sample(during, 'steadfast_overflow', { pool: 'prom-a' })).toBe(1);
    expect((await timedOut).code).toBe(ErrorCodes.ACQUIRE_TIMEOUT);
    await sleep(100);
    held[0]!.release();
    await waiter;
    held[1]!.release(true);
    held[2]!.release();
    // B: two queries. The dead pool: connection refused until the breaker opens.
    await b.query('SELECT 1');
    await b.query('SELECT 1');
    expect((await failure(dead.query('SELECT 1', [], { timeoutMs: 5_000 }))).code).toBe(
      ErrorCodes.CIRCUIT_OPEN,
    );
    // An attempt still in flight when the breaker opened would otherwise fail between the reads below.
    await expect.poll(() => dead.stats().connecting).toBe(0);

    const text = await registry.metrics();
    const families = parseExposition(text);
    const statsA = a.stats();
    const statsB = b.stats();
    const statsDead = dead.stats();

    // Every family is there once, with help and type, whatever the number of pools.
    const expectedTypes: Record<string, string> = {
      steadfast_connections: 'gauge',
      steadfast_connections_max: 'gauge',
      steadfast_connections_min: 'gauge',
      steadfast_pool_size: 'gauge',
      steadfast_checked_in: 'gauge',
      steadfast_checked_out: 'gauge',
      steadfast_overflow: 'gauge',
      steadfast_pending_requests: 'gauge',
      steadfast_consecutive_connect_failures: 'gauge',
      steadfast_breaker_state: 'gauge',
      steadfast_acquire_timeouts_total: 'counter',
      steadfast_retries_total: 'counter',
      steadfast_evictions_total: 'counter',
      steadfast_connect_errors_total: 'counter',
      steadfast_operation_errors_total: 'counter',
      steadfast_breaker_transitions_total: 'counter',
      steadfast_connection_create_seconds: 'histogram',
      steadfast_connection_wait_seconds: 'histogram',
      steadfast_connection_use_seconds: 'histogram',
      steadfast_operation_duration_seconds: 'histogram',
    };
    expect(Object.fromEntries([...families].map(([name, f]) => [name, f.type]))).toEqual(expectedTypes);
    for (const [name, family] of families) expect(family.help.length, name).toBeGreaterThan(10);
    // Every sample is labelled with a pool that was collected.
    for (const family of families.values()) {
      for (const s of family.samples) expect(['prom-a', 'prom-b', 'prom-dead']).toContain(s.labels.pool);
    }

    // Gauges: A matches its stats, and the seed-003 figures (size, checked in/out, overflow) are there.
    for (const [pool, stats] of [
      ['prom-a', statsA],
      ['prom-b', statsB],
    ] as const) {
      const labels = { pool };
      expect(sample(families, 'steadfast_connections_max', labels)).toBe(stats.max);
      expect(sample(families, 'steadfast_connections_min', labels)).toBe(stats.min);
      expect(sample(families, 'steadfast_pool_size', labels)).toBe(stats.keptSize);
      expect(sample(families, 'steadfast_checked_in', labels)).toBe(stats.idle);
      expect(sample(families, 'steadfast_checked_out', labels)).toBe(0);
      expect(sample(families, 'steadfast_overflow', labels)).toBe(stats.overflow);
      expect(sample(families, 'steadfast_pending_requests', labels)).toBe(0);
      expect(sample(families, 'steadfast_breaker_state', labels)).toBe(0);
      const states = ['idle', 'in_use', 'validating', 'resetting', 'connecting'];
      const byState = states.map((state) => sample(families, 'steadfast_connections', { pool, state }));
      expect(byState.reduce((x, y) => x! + y!, 0)).toBe(stats.total);
    }
    expect(sample(families, 'steadfast_connections_max', { pool: 'prom-a' })).toBe(3);
    expect(sample(families, 'steadfast_pool_size', { pool: 'prom-a' })).toBe(2);
    expect(sample(families, 'steadfast_connections_min', { pool: 'prom-a' })).toBe(1);
    expect(sample(families, 'steadfast_checked_in', { pool: 'prom-a' })).toBeGreaterThan(0);
    expect(sample(families, 'steadfast_breaker_state', { pool: 'prom-dead' })).toBe(2);
    expect(sample(families, 'steadfast_consecutive_connect_failures', { pool: 'prom-dead' })).toBe(
      statsDead.consecutiveConnectFailures,
    );

    // Counters.
    expect(sample(families, 'steadfast_acquire_timeouts_total', { pool: 'prom-a' })).toBe(1);
    expect(sample(families, 'steadfast_acquire_timeouts_total', { pool: 'prom-b' })).toBe(0);
    for (const [reason, n] of Object.entries(statsA.counters.evictions)) {
      expect(sample(families, 'steadfast_evictions_total', { pool: 'prom-a', reason }), reason).toBe(n);
    }
    expect(sample(families, 'steadfast_evictions_total', { pool: 'prom-a', reason: 'overflow' })).toBe(1);
    expect(
      sample(families, 'steadfast_evictions_total', { pool: 'prom-a', reason: 'released-with-error' }),
    ).toBe(1);
    for (const phase of ['connect', 'query', 'transaction']) {
      expect(sample(families, 'steadfast_retries_total', { pool: 'prom-a', phase })).toBe(0);
    }
    expect(
      sample(families, 'steadfast_retries_total', { pool: 'prom-dead', phase: 'connect' }),
    ).toBeGreaterThan(0);
    expect(
      sample(families, 'steadfast_connect_errors_total', { pool: 'prom-dead', code: 'ECONNREFUSED' }),
    ).toBe(statsDead.counters.connectsFailed);
    expect(sample(families, 'steadfast_breaker_transitions_total', { pool: 'prom-dead', to: 'open' })).toBe(
      1,
    );
    expect(sample(families, 'steadfast_breaker_transitions_total', { pool: 'prom-a', to: 'open' })).toBe(0);
    const errors = (pool: string, kind: string, code: string) =>
      sample(families, 'steadfast_operation_errors_total', { pool, kind, code });
    expect(errors('prom-a', 'query', '42601')).toBe(1);
    expect(errors('prom-a', 'query', ErrorCodes.ACQUIRE_TIMEOUT)).toBe(1);
    expect(errors('prom-dead', 'query', ErrorCodes.CIRCUIT_OPEN)).toBe(1);
    expect(families.get('steadfast_operation_errors_total')!.samples).toHaveLength(3);

    // Histograms, in seconds.
    const labelsA = { pool: 'prom-a' };
    expect(checkHistogram(families, 'steadfast_connection_wait_seconds', labelsA)).toBe(
      statsA.counters.acquires,
    );
    expect(checkHistogram(families, 'steadfast_connection_use_seconds', labelsA)).toBe(
      statsA.counters.releases,
    );
    expect(checkHistogram(families, 'steadfast_connection_create_seconds', labelsA)).toBe(
      statsA.counters.connectsSucceeded,
    );
    // The waiter waited at least 250 ms: it is above the 0.1 s bucket, and the sum is in seconds.
    expect(
      sample(families, 'steadfast_connection_wait_seconds_bucket', { ...labelsA, le: '0.1' }),
    ).toBeLessThan(statsA.counters.acquires);
    const waitSum = sample(families, 'steadfast_connection_wait_seconds_sum', labelsA)!;
    expect(waitSum).toBeGreaterThanOrEqual(0.2);
    expect(waitSum).toBeLessThan(10);
    expect(checkHistogram(families, 'steadfast_connection_wait_seconds', { pool: 'prom-b' })).toBe(2);
    expect(checkHistogram(families, 'steadfast_connection_create_seconds', { pool: 'prom-dead' })).toBe(0);
    const operation = (pool: string, kind: string, outcome: string) =>
      checkHistogram(families, 'steadfast_operation_duration_seconds', { pool, kind, outcome });
    expect(operation('prom-a', 'query', 'ok')).toBe(5);
    expect(operation('prom-a', 'query', 'error')).toBe(2);
    expect(operation('prom-a', 'transaction', 'ok')).toBe(1);
    expect(operation('prom-a', 'transaction', 'error')).toBe(0);
    expect(operation('prom-b', 'query', 'ok')).toBe(2);

    // The JSON form agrees with the text.
    const json = await registry.getMetricsAsJSON();
    const checkedIn = json.find((m) => m.name === 'steadfast_checked_in')!;
    expect(checkedIn.type).toBe('gauge');
    expect(checkedIn.values.find((v) => v.labels.pool === 'prom-a')?.value).toBe(
      sample(families, 'steadfast_checked_in', labelsA),
    );
    expect(json.map((m) => m.name).sort()).toEqual(Object.keys(expectedTypes).sort());

    // Nothing from the connection settings, in either form.
    for (const output of [text, JSON.stringify(json)]) {
      expect(output).not.toContain(SENTINEL);
      expect(output).not.toContain('postgres://');
      expect(output).not.toContain(server.host);
      expect(output).not.toContain(String(deadPort));
    }
  });

  it('removes a pool’s series on detach(), and unregisters the metrics with the last pool', async () => {
    const registry = new Registry();
    const keep = new Gauge({ name: 'app_up', help: 'The application is up.', registers: [registry] });
    keep.set(1);
    const a = newPool({ poolName: 'prom-detach-a' });
    const b = newPool({ poolName: 'prom-detach-b' });
    const collectorA = collect(a, { registry });
    const collectorB = collect(b, { registry });
    await a.query('SELECT 1');
    await b.query('SELECT 1');
    collectorB.detach();
    collectorB.detach();
    await b.query('SELECT 1');
    const families = parseExposition(await registry.metrics());
    const poolsSeen = new Set(
      [...families.values()].flatMap((f) => f.samples.map((s) => s.labels.pool)).filter(Boolean),
    );
    expect([...poolsSeen]).toEqual(['prom-detach-a']);
    expect(sample(families, 'steadfast_connection_wait_seconds_count', { pool: 'prom-detach-a' })).toBe(1);

    // The name is free again, with fresh series.
    const again = collect(b, { registry });
    expect(
      sample(parseExposition(await registry.metrics()), 'steadfast_connection_wait_seconds_count', {
        pool: 'prom-detach-b',
      }),
    ).toBe(0);
    again.detach();
    collectorA.detach();
    expect(registry.getMetricsAsArray().map((m) => (m as unknown as { name: string }).name)).toEqual([
      'app_up',
    ]);
    // And registering again after that works.
    collect(a, { registry });
    expect(registry.getSingleMetric('steadfast_connections')).toBeDefined();
  });

  it('detaches a pool when it closes, so a successor can take its name', async () => {
    const registry = new Registry();
    const first = newPool({ poolName: 'prom-closing' });
    collect(first, { registry });
    await first.query('SELECT 1');
    await first.end();
    expect(registry.getMetricsAsArray()).toEqual([]);
    const successor = newPool({ poolName: 'prom-closing' });
    collect(successor, { registry });
    await successor.query('SELECT 1');
    const families = parseExposition(await registry.metrics());
    expect(sample(families, 'steadfast_connection_wait_seconds_count', { pool: 'prom-closing' })).toBe(1);
  });

  it('refuses a duplicate pool name and a name taken by another metric, leaving the registry intact', async () => {
    const registry = new Registry();
    collect(newPool({ poolName: 'prom-dup' }), { registry });
    expect(() => prometheusCollector(newPool({ poolName: 'prom-dup' }), { registry })).toThrow(
      /prom-dup.*already collected/,
    );

    const other = new Registry();
    new Gauge({ name: 'steadfast_pool_size', help: 'Someone else’s.', registers: [other] });
    expect(() => prometheusCollector(newPool({ poolName: 'prom-taken' }), { registry: other })).toThrow(
      /steadfast_pool_size/,
    );
    expect(other.getMetricsAsArray()).toHaveLength(1);
    // Under another prefix there is no clash.
    collect(newPool({ poolName: 'prom-taken' }), { registry: other, prefix: 'db_' });
    const families = parseExposition(await other.metrics());
    expect(sample(families, 'db_pool_size', { pool: 'prom-taken' })).toBe(10);
  });

  it('keeps one set per prefix in a registry, and names counters for an OpenMetrics registry', async () => {
    const registry = new Registry();
    const pool = newPool({ poolName: 'prom-prefixes' });
    collect(pool, { registry });
    collect(pool, { registry, prefix: 'app_pg_' });
    await pool.query('SELECT 1');
    const families = parseExposition(await registry.metrics());
    expect(sample(families, 'steadfast_connection_wait_seconds_count', { pool: 'prom-prefixes' })).toBe(1);
    expect(sample(families, 'app_pg_connection_wait_seconds_count', { pool: 'prom-prefixes' })).toBe(1);

    const openMetrics = new Registry<OpenMetricsContentType>();
    openMetrics.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    collect(pool, { registry: openMetrics });
    const text = await openMetrics.metrics();
    expect(text).toContain('steadfast_acquire_timeouts_total{pool="prom-prefixes"} 0');
    expect(text).not.toContain('_total_total');
    expect(text.trimEnd().endsWith('# EOF')).toBe(true);
  });

  it('uses prom-client’s global registry by default', async () => {
    const pool = newPool({ poolName: 'prom-global' });
    const collector = collect(pool);
    expect(register.getSingleMetric('steadfast_checked_in')).toBeDefined();
    await pool.query('SELECT 1');
    const families = parseExposition(await register.metrics());
    expect(sample(families, 'steadfast_checked_in', { pool: 'prom-global' })).toBe(1);
    collector.detach();
    expect(register.getSingleMetric('steadfast_checked_in')).toBeUndefined();
  });
});
