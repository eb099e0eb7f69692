/**
 * The web demo: a Fastify server on a disposable PostgreSQL server, with a live dashboard.
 *
 * The server starts its own PostgreSQL (testbed/postgres.ts) behind a fault-injecting TCP proxy
 * (testbed/chaos-proxy.ts) and opens two pools on the same target through that proxy: steadfast's
 * `Pool` and a plain `pg.Pool`. The same open-loop load (INSERTs with unique ids and primary-key
 * SELECTs, alternating) runs through both, all the time, so the chaos buttons show what each pool's
 * callers see. The application routes (`/pg_version`, `/health/db`, `/items`) use the steadfast pool.
 *
 * Routes:
 * - `GET /` the dashboard; `GET /api/state` the whole state as JSON; `GET /api/events` Server-Sent
 *   Events: `state` (the whole state) on connect, then `tick` every second.
 * - `GET /pg_version`, `GET /health/db` (readiness), `GET /health/live` (liveness), `GET /metrics`.
 * - `POST /items`, `GET /items`, `GET /items/:id`, `PUT /items/:id`, `DELETE /items/:id`.
 * - `POST /chaos/restart`, `POST /chaos/stop?seconds=N[&mode=fast|immediate]`,
 *   `POST /chaos/kill-connections[?how=terminate|reset]`, `POST /chaos/freeze?seconds=N`.
 */
import { setMaxListeners } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import pg from 'pg';
import { Counter, Gauge, Registry } from 'prom-client';
import { fastifyHealthHandler, Pool } from '../src/index.js';
import { prometheusCollector } from '../src/observability/prometheus.js';
import { ChaosProxy } from '../testbed/chaos-proxy.js';
import { PostgresServer } from '../testbed/postgres.js';
import { Chaos, ChaosConflictError, MAX_CHAOS_SECONDS } from './chaos.js';
import { ContinuousLoad } from './load.js';
import { type Gauges, Monitor, type PoolKey, PoolTracker, type Tick } from './monitor.js';

export const DEFAULT_PORT = 3000;
export const DEFAULT_HOST = '127.0.0.1';
/** Requests per second and pool: half INSERTs, half SELECTs. */
export const DEFAULT_RATE = 50;
export const DEFAULT_POOL_SIZE = 10;
/** Deadline of each application route's statement, so an HTTP request never hangs on an outage. */
const ROUTE_TIMEOUT_MS = 5_000;
const CLOSE_TIMEOUT_MS = 5_000;

export interface WebDemoOptions {
  /** TCP port of the HTTP server; 0 picks a free one. Default 3000. */
  port?: number;
  /** Address to listen on. Default 127.0.0.1. */
  host?: string;
  /** Requests per second through each pool, INSERTs and SELECTs alternating. Default 50. */
  rate?: number;
  /** `max` of both pools. Default 10. */
  poolSize?: number;
}

export interface WebDemo {
  /** The dashboard's address, e.g. `http://127.0.0.1:3000/`. */
  url: string;
  /** Stops the load, closes the HTTP server and both pools, and destroys the PostgreSQL server. Idempotent. */
  close(): Promise<void>;
}

const LOAD_TABLE_SQL = `CREATE TABLE load_requests (
  pool text NOT NULL,
  id int NOT NULL,
  at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (pool, id)
)`;
const ITEMS_TABLE_SQL = `CREATE TABLE items (
  id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL,
  quantity int NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
)`;
const LOAD_INSERT_SQL = 'INSERT INTO load_requests (pool, id) VALUES ($1, $2)';
const LOAD_SELECT_SQL = 'SELECT pool, id, at FROM load_requests WHERE pool = $1 AND id = $2';

const STATIC_FILES: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/app.js': 'app.js',
  '/style.css': 'style.css',
};
const CONTENT_TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};

/**
 * The dashboard's files: next to this module when run from source (web/public), or in the repository's
 * web/public when this module is bundled into dist/ by the CLI build.
 */
function publicDir(): string {
  const candidates = [new URL('./public/', import.meta.url), new URL('../web/public/', import.meta.url)];
  for (const candidate of candidates) {
    const dir = fileURLToPath(candidate);
    if (existsSync(`${dir}index.html`)) return dir;
  }
  throw new Error(
    `the dashboard's files (web/public) were not found next to ${fileURLToPath(import.meta.url)}; ` +
      'run the web demo from a clone of the repository',
  );
}

async function loadStaticFiles(): Promise<Map<string, { body: string; type: string }>> {
  const dir = publicDir();
  const files = new Map<string, { body: string; type: string }>();
  for (const [route, name] of Object.entries(STATIC_FILES)) {
    const body = await readFile(`${dir}${name}`, 'utf8');
    files.set(route, { body, type: CONTENT_TYPES[name.slice(name.lastIndexOf('.') + 1)]! });
  }
  return files;
}

/**
 * A pg.Client that counts its connection attempts in progress: pg.Pool counts a client being
 * connected as neither idle nor waiting, so without this the dashboard could not tell "connecting"
 * from "in use".
 */
function countingClient(onConnecting: (delta: number) => void, onError: (error: Error) => void) {
  return class CountingClient extends pg.Client {
    override connect(): Promise<pg.Client>;
    override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
    override connect(callback?: (...args: any[]) => void): Promise<pg.Client> | undefined {
      onConnecting(1);
      const settle = (error: Error | null | undefined) => {
        onConnecting(-1);
        if (error) onError(error);
      };
      if (callback) {
        super.connect((error: Error) => {
          settle(error);
          callback(error);
        });
        return;
      }
      return super.connect().then(
        (client) => {
          settle(undefined);
          return client;
        },
        (error: Error) => {
          settle(error);
          throw error;
        },
      );
    }
  };
}

function bounded(work: Promise<unknown>, ms = CLOSE_TIMEOUT_MS): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work.then(
      () => undefined,
      () => undefined,
    ),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function displayHost(host: string): string {
  if (host === '0.0.0.0' || host === '::') return 'localhost';
  return host.includes(':') ? `[${host}]` : host;
}

/** Starts everything and resolves once the dashboard is served and the load runs. */
export async function startWebDemo(options: WebDemoOptions = {}): Promise<WebDemo> {
  const rate = options.rate ?? DEFAULT_RATE;
  const poolSize = options.poolSize ?? DEFAULT_POOL_SIZE;
  if (!(Number.isFinite(rate) && rate > 0))
    throw new RangeError(`rate must be a positive number, got ${rate}`);
  if (!(Number.isInteger(poolSize) && poolSize > 0)) {
    throw new RangeError(`poolSize must be a positive integer, got ${poolSize}`);
  }
  const staticFiles = await loadStaticFiles();

  // Everything opened so far, closed in reverse order by close(), also when the start fails half way.
  let server: PostgresServer | undefined;
  let proxy: ChaosProxy | undefined;
  let steadfast: Pool | undefined;
  let plain: pg.Pool | undefined;
  let app: FastifyInstance | undefined;
  let monitor: Monitor | undefined;
  let chaos: Chaos | undefined;
  const loads: ContinuousLoad[] = [];
  const streams = new Set<ServerResponse>();
  const aborter = new AbortController();
  // Every request of the steadfast load listens to this one signal.
  setMaxListeners(0, aborter.signal);
  let closing: Promise<void> | undefined;

  const close = (): Promise<void> => {
    closing ??= (async () => {
      chaos?.close();
      monitor?.stop();
      aborter.abort(new Error('the web demo is shutting down'));
      await Promise.all(loads.map((load) => load.stop(2_000)));
      for (const stream of streams) stream.end();
      streams.clear();
      if (app) await bounded(app.close());
      await Promise.all([
        steadfast ? bounded(steadfast.close({ timeoutMs: CLOSE_TIMEOUT_MS })) : undefined,
        plain ? bounded(plain.end()) : undefined,
      ]);
      // Destroying the proxy's sockets also releases whatever a frozen connection still held.
      await proxy?.close();
      await server?.destroy();
    })();
    return closing;
  };

  try {
    server = await PostgresServer.start();
    proxy = await ChaosProxy.start({ host: server.host, port: server.port });
    await server.query(LOAD_TABLE_SQL);
    await server.query(ITEMS_TABLE_SQL);
    const version = (await server.query<{ v: string }>("SELECT current_setting('server_version') AS v"))
      .rows[0]!.v;

    const target = { ...server.clientConfig(), host: proxy.host, port: proxy.port };
    // The dashboard is where this pool's events go, so its console logger stays off.
    steadfast = new Pool({
      ...target,
      max: poolSize,
      poolName: 'steadfast',
      logger: false,
      application_name: 'web-demo-steadfast',
    });
    let pgConnecting = 0;
    const pgTracker = new PoolTracker('pg', 'pg.Pool', (): Gauges => {
      const total = plain!.totalCount;
      const idle = plain!.idleCount;
      return {
        total,
        idle,
        connecting: pgConnecting,
        inUse: Math.max(0, total - idle - pgConnecting),
        waiting: plain!.waitingCount,
        breaker: null,
      };
    });
    plain = new pg.Pool({
      ...target,
      max: poolSize,
      application_name: 'web-demo-pg',
      Client: countingClient(
        (delta) => {
          pgConnecting += delta;
        },
        (error) => pgTracker.connectError(error),
      ),
    });
    // Without a listener, the 'error' an idle client emits when the server goes away crashes the process.
    plain.on('error', (error) => pgTracker.errorEvent(error));
    plain.on('remove', () => pgTracker.evict('removed'));

    const pool = steadfast;
    const steadfastTracker = new PoolTracker('steadfast', 'steadfast Pool', (): Gauges => {
      const s = pool.stats();
      return {
        total: s.total,
        idle: s.idle,
        inUse: s.inUse,
        connecting: s.connecting,
        waiting: s.waiting,
        breaker: s.breaker?.state ?? null,
      };
    });
    const m = new Monitor({
      steadfast: steadfastTracker,
      pg: pgTracker,
      status: () => ({ ...chaos!.status(), version, rate, poolSize }),
    });
    monitor = m;
    chaos = new Chaos(server, proxy, m);
    pool.lifecycle.on('retry', ({ phase }) => steadfastTracker.retry(phase));
    pool.lifecycle.on('evict', ({ reason }) => steadfastTracker.evict(reason));
    pool.lifecycle.on('connectError', ({ error }) => steadfastTracker.connectError(error));
    pool.lifecycle.on('breaker', ({ from, to }) => {
      m.log('steadfast', to === 'closed' ? 'good' : 'bad', `circuit breaker ${from} → ${to}`);
    });

    // Both pools are warmed up the same way, so neither begins the load by opening connections.
    await Promise.all([
      ...Array.from({ length: poolSize }, () => pool.query('SELECT 1')),
      ...Array.from({ length: poolSize }, () => plain!.query('SELECT 1')),
    ]);

    const registry = new Registry();
    prometheusCollector(pool, { registry });
    const requests = new Counter({
      name: 'web_demo_requests_total',
      help: "The demo load's requests, by pool and outcome.",
      labelNames: ['pool', 'outcome'],
      registers: [registry],
    });
    const pgPool = plain;
    new Gauge({
      name: 'web_demo_pg_pool_clients',
      help: 'The plain pg.Pool next to it, by state: idle, in_use, connecting, waiting (callers).',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const idle = pgPool.idleCount;
        this.set({ state: 'idle' }, idle);
        this.set({ state: 'in_use' }, Math.max(0, pgPool.totalCount - idle - pgConnecting));
        this.set({ state: 'connecting' }, pgConnecting);
        this.set({ state: 'waiting' }, pgPool.waitingCount);
      },
    });
    // Series that start at 0, so rate() and increase() see their first increment.
    for (const key of ['steadfast', 'pg'] satisfies PoolKey[]) {
      for (const outcome of ['ok', 'error']) requests.inc({ pool: key, outcome }, 0);
    }

    const signal = aborter.signal;
    const subjects: Record<
      PoolKey,
      { write(id: number): Promise<unknown>; read(id: number): Promise<unknown> }
    > = {
      // Reads are marked idempotent (safe to re-send); the INSERTs are not, so a write whose outcome is
      // unknown fails rather than risking a duplicate.
      steadfast: {
        write: (id) => pool.query(LOAD_INSERT_SQL, ['steadfast', id], { signal }),
        read: (id) => pool.query(LOAD_SELECT_SQL, ['steadfast', id], { idempotent: true, signal }),
      },
      pg: {
        write: (id) => pgPool.query(LOAD_INSERT_SQL, ['pg', id]),
        read: (id) => pgPool.query(LOAD_SELECT_SQL, ['pg', id]),
      },
    };
    for (const key of ['steadfast', 'pg'] satisfies PoolKey[]) {
      const tracker = m.pools[key];
      const subject = subjects[key];
      let lastWritten = 0;
      loads.push(
        new ContinuousLoad({
          ratePerSec: rate,
          request: async (seq) => {
            if (seq % 2 === 1) return subject.read(lastWritten);
            await subject.write(seq);
            lastWritten = Math.max(lastWritten, seq);
          },
          onStart: (seq) => tracker.started(seq),
          onSettle: (seq, error) => {
            tracker.settled(seq, error);
            requests.inc({ pool: key, outcome: error === undefined ? 'ok' : 'error' });
          },
        }),
      );
    }

    app = Fastify({ logger: false, forceCloseConnections: true });
    registerRoutes(app, { pool, monitor: m, chaos, registry, staticFiles, streams });
    await app.listen({ port: options.port ?? DEFAULT_PORT, host: options.host ?? DEFAULT_HOST });
    const address = app.server.address();
    if (address === null || typeof address === 'string')
      throw new Error('the HTTP server has no TCP address');

    m.log(
      'demo',
      'info',
      `PostgreSQL ${version} started; both pools (max ${poolSize}) connected through the chaos proxy; ` +
        `load: ${rate} requests/s per pool`,
    );
    for (const load of loads) load.start();
    m.start();
    return { url: `http://${displayHost(options.host ?? DEFAULT_HOST)}:${address.port}/`, close };
  } catch (error) {
    await close();
    throw error;
  }
}

interface RouteContext {
  pool: Pool;
  monitor: Monitor;
  chaos: Chaos;
  registry: Registry;
  staticFiles: Map<string, { body: string; type: string }>;
  streams: Set<ServerResponse>;
}

const idParams = {
  type: 'object',
  properties: { id: { type: 'integer', minimum: 1, maximum: 2_147_483_647 } },
  required: ['id'],
} as const;
const secondsQuery = {
  type: 'object',
  properties: {
    seconds: { type: 'number', exclusiveMinimum: 0, maximum: MAX_CHAOS_SECONDS, default: 5 },
    mode: { type: 'string', enum: ['fast', 'immediate'], default: 'fast' },
  },
} as const;

interface Item {
  id: number;
  name: string;
  quantity: number;
  updated_at: Date;
}

function registerRoutes(app: FastifyInstance, context: RouteContext): void {
  const { pool, monitor, chaos, registry, staticFiles, streams } = context;
  const call = { timeoutMs: ROUTE_TIMEOUT_MS };

  app.setErrorHandler((error: FastifyError, _request, reply) => {
    if (error instanceof ChaosConflictError)
      return reply.code(409).send({ error: 'conflict', message: error.message });
    if (error.validation || (error.statusCode !== undefined && error.statusCode < 500)) {
      return reply
        .code(error.statusCode ?? 400)
        .send({ error: error.code ?? 'bad_request', message: error.message });
    }
    // Errors with a code come from the database (SQLSTATE), the driver (ECONNRESET...) or the pool
    // (ERR_STEADFAST_...): the database is unavailable, the service is not broken.
    if (typeof error.code === 'string' || error.message.startsWith('Connection terminated')) {
      return reply.code(503).send({ error: error.code ?? 'unavailable', message: error.message });
    }
    return reply.code(500).send({ error: 'internal', message: error.message });
  });

  for (const [route, file] of staticFiles) {
    app.get(route, (_request, reply) =>
      reply.type(file.type).header('cache-control', 'no-store').send(file.body),
    );
  }

  app.get('/api/state', () => monitor.state());

  app.get('/api/events', (request, reply) => {
    reply.hijack();
    const response = reply.raw;
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
    });
    const send = (event: string, data: unknown) =>
      response.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    response.write('retry: 2000\n\n');
    send('state', monitor.state());
    const unsubscribe = monitor.subscribe((tick: Tick) => send('tick', tick));
    streams.add(response);
    request.raw.once('close', () => {
      unsubscribe();
      streams.delete(response);
    });
  });

  app.get('/pg_version', async () => {
    const result = await pool.query<{ version: string; full: string }>(
      "SELECT current_setting('server_version') AS version, version() AS full",
      [],
      { ...call, idempotent: true },
    );
    return result.rows[0];
  });

  app.get('/health/db', fastifyHealthHandler(pool));
  app.get('/health/live', fastifyHealthHandler(pool, { kind: 'liveness' }));

  app.get('/metrics', async (_request, reply) => {
    reply.type(registry.contentType);
    return registry.metrics();
  });

  // CRUD on `items`, through the steadfast pool.
  app.post<{ Body: { name: string; quantity?: number } }>(
    '/items',
    {
      schema: {
        body: {
          type: 'object',
          properties: {
            name: { type: 'string', minLength: 1, maxLength: 200 },
            quantity: { type: 'integer', minimum: 0, maximum: 2_147_483_647 },
          },
          required: ['name'],
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      const result = await pool.query<Item>(
        'INSERT INTO items (name, quantity) VALUES ($1, $2) RETURNING *',
        [request.body.name, request.body.quantity ?? 0],
        call,
      );
      return reply.code(201).send(result.rows[0]);
    },
  );

  app.get('/items', async () => {
    const result = await pool.query<Item>('SELECT * FROM items ORDER BY id DESC LIMIT 100', [], {
      ...call,
      idempotent: true,
    });
    return result.rows;
  });

  app.get<{ Params: { id: number } }>(
    '/items/:id',
    { schema: { params: idParams } },
    async (request, reply) => {
      const result = await pool.query<Item>('SELECT * FROM items WHERE id = $1', [request.params.id], {
        ...call,
        idempotent: true,
      });
      if (result.rows.length === 0) return reply.code(404).send({ error: 'not_found' });
      return result.rows[0];
    },
  );

  app.put<{ Params: { id: number }; Body: { name?: string; quantity?: number } }>(
    '/items/:id',
    {
      schema: {
        params: idParams,
        body: {
          type: 'object',
          properties: {
            name: { type: 'string', minLength: 1, maxLength: 200 },
            quantity: { type: 'integer', minimum: 0, maximum: 2_147_483_647 },
          },
          additionalProperties: false,
          minProperties: 1,
        },
      },
    },
    async (request, reply) => {
      // Sets absolute values, so running it twice changes nothing more: safe to re-send.
      const result = await pool.query<Item>(
        `UPDATE items SET name = coalesce($2, name), quantity = coalesce($3, quantity), updated_at = now()
          WHERE id = $1 RETURNING *`,
        [request.params.id, request.body.name ?? null, request.body.quantity ?? null],
        { ...call, idempotent: true },
      );
      if (result.rows.length === 0) return reply.code(404).send({ error: 'not_found' });
      return result.rows[0];
    },
  );

  app.delete<{ Params: { id: number } }>(
    '/items/:id',
    { schema: { params: idParams } },
    async (request, reply) => {
      const result = await pool.query('DELETE FROM items WHERE id = $1', [request.params.id], call);
      if (result.rowCount === 0) return reply.code(404).send({ error: 'not_found' });
      return reply.code(204).send();
    },
  );

  // Chaos controls.
  app.post('/chaos/restart', () => chaos.restart());
  app.post<{ Querystring: { seconds: number; mode: 'fast' | 'immediate' } }>(
    '/chaos/stop',
    { schema: { querystring: secondsQuery } },
    (request) => chaos.stop(request.query.seconds, request.query.mode),
  );
  app.post<{ Querystring: { how: 'terminate' | 'reset' } }>(
    '/chaos/kill-connections',
    {
      schema: {
        querystring: {
          type: 'object',
          properties: { how: { type: 'string', enum: ['terminate', 'reset'], default: 'terminate' } },
        },
      },
    },
    (request) => chaos.killConnections(request.query.how),
  );
  app.post<{ Querystring: { seconds: number } }>(
    '/chaos/freeze',
    { schema: { querystring: secondsQuery } },
    async (request) => chaos.freeze(request.query.seconds),
  );
}
