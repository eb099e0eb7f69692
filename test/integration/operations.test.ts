/**
 * Operations: leak detection, logging with redaction, health checks, graceful shutdown.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ConnectionReclaimedError,
  ErrorCodes,
  fastifyHealthHandler,
  httpHealthHandler,
  type LeakEvents,
  type Logger,
  Pool,
} from '../../src/index.js';
import { PostgresServer, SENTINEL_MARKER } from '../../testbed/postgres.js';

let server: PostgresServer;
const pools: Pool[] = [];

function newPool(config: Record<string, unknown> = {}): Pool {
  const pool = new Pool({ ...server.clientConfig(), logger: false, ...config });
  pools.push(pool);
  return pool;
}

function captureLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const write = (level: string) => (fields: Record<string, unknown>, message: string) =>
    lines.push(JSON.stringify({ level, message, ...fields }));
  return {
    lines,
    logger: { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') },
  };
}

beforeAll(async () => {
  server = await PostgresServer.start();
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
  if (!server.isRunning()) await server.start();
});

afterAll(async () => {
  await server?.destroy();
});

describe('leak detection', () => {
  it('reports a client held past the threshold with the stack of the line that acquired it, and its return', async () => {
    const pool = newPool({ leakDetectionThresholdMs: 150 });
    const leaks: LeakEvents['leak'][] = [];
    const returned: LeakEvents['leakReturned'][] = [];
    pool.lifecycle.on('leak', (event) => leaks.push(event));
    pool.lifecycle.on('leakReturned', (event) => returned.push(event));
    const client = await pool.connect(); // the line the report must point at
    await new Promise((r) => setTimeout(r, 250));
    expect(leaks).toHaveLength(1);
    // Timers may fire a fraction of a millisecond early against performance.now().
    expect(leaks[0]!.heldMs).toBeGreaterThanOrEqual(145);
    expect(leaks[0]!.stack).toContain('operations.test.ts');
    client.release();
    expect(returned).toHaveLength(1);
    // A client returned in time is never reported.
    const quick = await pool.connect();
    quick.release();
    await new Promise((r) => setTimeout(r, 200));
    expect(leaks).toHaveLength(1);
  });

  it('takes back a client held past leakReclaimMs; its holder gets a typed error, the pool goes on', async () => {
    const pool = newPool({ max: 1, leakReclaimMs: 200 });
    const client = await pool.connect();
    await new Promise((r) => setTimeout(r, 300));
    const error = await client.query('SELECT 1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionReclaimedError);
    expect((error as ConnectionReclaimedError).code).toBe(ErrorCodes.RECLAIMED);
    expect(() => client.release()).not.toThrow();
    expect((await pool.query('SELECT 1 AS n')).rows[0].n).toBe(1);
  });
});

describe('logging', () => {
  it('logs failing connects once per interval, breaker and timeouts, and never the password', async () => {
    const { logger, lines } = captureLogger();
    const pool = newPool({
      password: `wrong-${SENTINEL_MARKER}`,
      logger,
      acquireTimeoutMs: 300,
      circuitBreaker: false,
    });
    for (let i = 0; i < 5; i++) await pool.query('SELECT 1').catch(() => undefined);
    const connectErrors = lines.filter((l) => l.includes('Connecting to the database failed'));
    expect(connectErrors.length).toBe(1);
    expect(connectErrors[0]).toContain('28P01');
    expect(lines.join('\n')).not.toContain(SENTINEL_MARKER);
  });

  it('echoes statements and pool events when asked', async () => {
    const { logger, lines } = captureLogger();
    const pool = newPool({ logger, echo: true, echoPool: true, connectionString: server.connectionString });
    await pool.query('SELECT 1');
    expect(lines.some((l) => l.includes('"kind":"query"'))).toBe(true);
    expect(lines.some((l) => l.includes('"event":"acquire"'))).toBe(true);
    expect(lines.join('\n')).not.toContain(SENTINEL_MARKER);
  });

  it('never shows the password in printed forms or in errors it builds', async () => {
    const { inspect } = await import('node:util');
    const pool = newPool({ connectionString: server.connectionString, acquireTimeoutMs: 200 });
    expect(inspect(pool)).not.toContain(SENTINEL_MARKER);
    expect(JSON.stringify(pool)).not.toContain(SENTINEL_MARKER);
    expect(JSON.stringify(pool.stats())).not.toContain(SENTINEL_MARKER);
    await server.stop('fast');
    const error = (await pool.query('SELECT 1').catch((e: unknown) => e)) as Error;
    expect(`${error.message} ${String((error.cause as Error)?.message)}`).not.toContain(SENTINEL_MARKER);
    expect(JSON.stringify(await pool.health())).not.toContain(SENTINEL_MARKER);
  });
});

describe('health', () => {
  it('answers readiness from the database and liveness from the pool', async () => {
    const pool = newPool({ poolName: 'health-probe', acquireTimeoutMs: 500, connectTimeoutMs: 300 });
    const ready = await pool.health();
    expect(ready).toMatchObject({ status: 'ok', kind: 'readiness', pool: 'health-probe', breaker: 'closed' });
    expect(ready.serverVersion).toMatch(/^\d+\.\d+/);
    expect(ready.latencyMs).toBeGreaterThan(0);
    await server.stop('fast');
    const started = performance.now();
    const down = await pool.health({ timeoutMs: 500 });
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(down.status).toBe('unavailable');
    expect(down.error?.code).toBe(ErrorCodes.ACQUIRE_TIMEOUT);
    expect((await pool.health({ kind: 'liveness' })).status).toBe('ok');
    await pool.end();
    expect((await pool.health({ kind: 'liveness' })).status).toBe('unavailable');
  });

  it('serves 200 / 503 over node:http and Fastify', async () => {
    const pool = newPool({ connectTimeoutMs: 300 });
    const http = createServer(httpHealthHandler(pool, { timeoutMs: 500 }));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const app = Fastify();
    app.get('/health/db', fastifyHealthHandler(pool, { timeoutMs: 500 }));
    try {
      const { port } = http.address() as { port: number };
      const ok = await fetch(`http://127.0.0.1:${port}/health/db`);
      expect(ok.status).toBe(200);
      expect(((await ok.json()) as { status: string }).status).toBe('ok');
      expect((await app.inject({ method: 'GET', url: '/health/db' })).statusCode).toBe(200);
      await server.stop('fast');
      expect((await fetch(`http://127.0.0.1:${port}/health/db`)).status).toBe(503);
      const viaFastify = await app.inject({ method: 'GET', url: '/health/db' });
      expect(viaFastify.statusCode).toBe(503);
      expect(viaFastify.body).not.toContain(SENTINEL_MARKER);
    } finally {
      http.close();
      await app.close();
    }
  });
});

describe('graceful shutdown', () => {
  it('on SIGTERM mid-load lets every in-flight request finish, exits 0 and leaves no connection', async () => {
    const fixture = fileURLToPath(new URL('../fixtures/shutdown-child.mjs', import.meta.url));
    const child = spawn(process.execPath, [fixture], {
      env: { ...process.env, DATABASE_URL: server.connectionString },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    await expect.poll(() => stdout.includes('ready'), { timeout: 10_000 }).toBe(true);
    await new Promise((r) => setTimeout(r, 500));
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const counts = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(counts.started).toBeGreaterThan(50);
    expect(counts.failed).toBe(0);
    expect(counts.succeeded).toBe(counts.started);
    expect(await server.countConnections({ applicationName: 'shutdown-child' })).toBe(0);
  });
});
