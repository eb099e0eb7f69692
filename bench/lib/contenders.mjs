/**
 * The pools of the microbenchmarks behind one shape: `acquire()` resolves with a handle, `release(handle)`
 * gives it back (and `acquireWith(onHandle)`, where a pool hands out by callback); or, for the pg-face
 * contenders (`pool-*`), `query()` runs one statement. Each pool runs
 * with its defaults except the size (10) and what a contender's name says.
 */

import { dirname, join } from 'node:path';
import genericPool from 'generic-pool';
import PgPool from 'pg-pool';
import tarn from 'tarn';
import { FakePgClient, fakeDriver, fakeFactory } from './fakes.mjs';
import { distEntry } from './util.mjs';

export const POOL_SIZE = 10;

/** What each contender is, for the report. */
export const CONTENDERS = {
  steadfast: 'steadfast Engine, defaults (validation after 500 ms idle: never due in a busy loop)',
  'steadfast-novalidate': 'steadfast Engine, validateAfterIdleMs: -1 (validation off)',
  'steadfast-events': 'steadfast Engine, defaults, listeners on acquire/release/connect/evict',
  'steadfast-callback':
    'steadfast Engine, defaults, through `acquireWith` (the callback hand-off `Pool#query` uses): no promise per checkout',
  'pg-pool': 'pg-pool 3 with a fake Client (no validation exists)',
  tarn: 'tarn 3, defaults (validate: () => true on every checkout)',
  'generic-pool': 'generic-pool 3, defaults (testOnBorrow: false)',
  bare: 'connections in a bare array, waiters in another: no deadline, no checks (the e2e ceiling)',
  'bare-list':
    'connections in a bare array, waiters in a linked list of resolvers: the least a promise-based pool can do',
  'pool-steadfast': 'steadfast Pool, defaults, `pool.query()` over a fake pg Client',
  'pool-steadfast-prometheus': 'the same, with Prometheus metrics (`prometheusCollector`, prom-client)',
  'pool-steadfast-otel':
    'the same, with OpenTelemetry metrics (`instrumentOpenTelemetry`, SDK MeterProvider)',
  'pool-steadfast-otel-lean':
    'the same, OpenTelemetry with `connectionTimings: false` (no wait/use time records per checkout)',
  'pool-pg': 'pg.Pool, defaults, `pool.query()` over the same fake Client',
  'pool-bare': 'the same fake Clients from bare arrays: acquire, `client.query()`, release',
};

/** The end-to-end ceiling's hand-out over any connections: the least a pool can do. */
function barePool(connections) {
  const idle = [...connections];
  const waiting = [];
  return {
    acquire: () => {
      const connection = idle.pop();
      return connection !== undefined
        ? Promise.resolve(connection)
        : new Promise((resolve) => waiting.push(resolve));
    },
    release: (connection) => {
      const next = waiting.shift();
      if (next !== undefined) next(connection);
      else idle.push(connection);
    },
    close: () => Promise.resolve(),
  };
}

/** Metrics as an application would turn them on: prom-client with a registry of its own. */
export async function attachPrometheus(pool) {
  const { Registry } = await import('prom-client');
  const { prometheusCollector } = await import(join(dirname(distEntry), 'prometheus.js'));
  return prometheusCollector(pool, { registry: new Registry() });
}

/** Metrics through the OpenTelemetry SDK: a MeterProvider with a reader that is never asked to export. */
export async function attachOpenTelemetry(pool, options = {}) {
  const { MeterProvider, MetricReader } = await import('@opentelemetry/sdk-metrics');
  const { instrumentOpenTelemetry } = await import(join(dirname(distEntry), 'otel.js'));
  class IdleReader extends MetricReader {
    onForceFlush() {
      return Promise.resolve();
    }
    onShutdown() {
      return Promise.resolve();
    }
  }
  const meterProvider = new MeterProvider({ readers: [new IdleReader()] });
  return instrumentOpenTelemetry(pool, { meterProvider, ...options });
}

/** The least a promise-based pool can do: a stack of connections and a FIFO linked list of resolvers. */
function listPool(connections) {
  const idle = [...connections];
  let head;
  let tail;
  return {
    acquire: () => {
      const connection = idle.pop();
      if (connection !== undefined) return Promise.resolve(connection);
      return new Promise((resolve) => {
        const node = { resolve, next: undefined };
        if (tail) tail.next = node;
        else head = node;
        tail = node;
      });
    },
    release: (connection) => {
      const node = head;
      if (node === undefined) {
        idle.push(connection);
        return;
      }
      head = node.next;
      if (head === undefined) tail = undefined;
      node.resolve(connection);
    },
    close: () => Promise.resolve(),
  };
}

/** Counts events so the listeners do observable work (an empty function could be optimised away). */
export const observed = { count: 0 };

export async function createContender(name) {
  switch (name) {
    case 'steadfast':
    case 'steadfast-novalidate':
    case 'steadfast-events':
    case 'steadfast-callback': {
      const { Engine } = await import(distEntry);
      const options = { max: POOL_SIZE };
      if (name === 'steadfast-novalidate') options.validateAfterIdleMs = -1;
      const engine = new Engine(fakeDriver(), options);
      if (name === 'steadfast-events') {
        const listener = () => {
          observed.count++;
        };
        for (const event of ['acquire', 'release', 'connect', 'evict']) engine.events.on(event, listener);
      }
      const fail = (error) => {
        throw error;
      };
      return {
        acquire: () => engine.acquire(),
        ...(name === 'steadfast-callback'
          ? { acquireWith: (onLease) => engine.acquireWith(undefined, onLease, fail) }
          : {}),
        release: (lease) => engine.release(lease),
        close: () => engine.close({ timeoutMs: 0 }),
      };
    }
    case 'pg-pool': {
      const pool = new PgPool({ Client: FakePgClient, max: POOL_SIZE });
      return {
        acquire: () => pool.connect(),
        release: (client) => client.release(),
        close: () => pool.end(),
      };
    }
    case 'tarn': {
      const pool = new tarn.Pool({ ...fakeFactory, min: 0, max: POOL_SIZE });
      return {
        acquire: () => pool.acquire().promise,
        release: (resource) => pool.release(resource),
        close: () => pool.destroy(),
      };
    }
    case 'generic-pool': {
      const pool = genericPool.createPool(fakeFactory, { max: POOL_SIZE });
      return {
        acquire: () => pool.acquire(),
        release: (resource) => {
          pool.release(resource);
        },
        close: () => pool.drain().then(() => pool.clear()),
      };
    }
    case 'bare':
    case 'bare-list': {
      const connections = [];
      for (let i = 0; i < POOL_SIZE; i++) connections.push(await fakeFactory.create());
      return name === 'bare' ? barePool(connections) : listPool(connections);
    }
    case 'pool-steadfast':
    case 'pool-steadfast-prometheus':
    case 'pool-steadfast-otel':
    case 'pool-steadfast-otel-lean': {
      const { Pool } = await import(distEntry);
      const pool = new Pool({ Client: FakePgClient, max: POOL_SIZE });
      if (name === 'pool-steadfast-prometheus') await attachPrometheus(pool);
      if (name === 'pool-steadfast-otel') await attachOpenTelemetry(pool);
      if (name === 'pool-steadfast-otel-lean') await attachOpenTelemetry(pool, { connectionTimings: false });
      return { query: () => pool.query('SELECT 1'), close: () => pool.end() };
    }
    case 'pool-pg': {
      const pool = new PgPool({ Client: FakePgClient, max: POOL_SIZE });
      return { query: () => pool.query('SELECT 1'), close: () => pool.end() };
    }
    case 'pool-bare': {
      const bare = barePool(Array.from({ length: POOL_SIZE }, () => new FakePgClient()));
      return {
        query: async () => {
          const client = await bare.acquire();
          try {
            return await client.query('SELECT 1');
          } finally {
            bare.release(client);
          }
        },
        close: bare.close,
      };
    }
    default:
      throw new Error(`unknown contender ${name}`);
  }
}
