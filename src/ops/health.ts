/**
 * Health checks (seed 004's `/health/db`): readiness asks the database, liveness asks only the pool.
 *
 * Readiness runs one statement (`SHOW server_version`) at high priority under a short deadline, so a
 * health probe is not stuck behind ordinary work and never waits longer than it was given. While the
 * circuit breaker is open it answers at once from the breaker, without touching the database.
 * Liveness never touches the database: a process whose database is down is not dead, and restarting
 * it would not help.
 *
 * Payloads hold no credentials: errors are reported by code and redacted message.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PoolSnapshot } from '../errors.js';
import { errorLabel } from '../resilience/classify.js';

export interface HealthOptions {
  /** `'readiness'` (default) checks the database; `'liveness'` checks only that the pool can take work. */
  kind?: 'readiness' | 'liveness';
  /** Deadline of the readiness check in ms. Default 2000. */
  timeoutMs?: number;
}

export interface HealthReport {
  status: 'ok' | 'unavailable';
  kind: 'readiness' | 'liveness';
  pool: string;
  /** Round trip of the check statement in ms (readiness). */
  latencyMs?: number;
  /** The server's version, e.g. "17.10" (readiness). */
  serverVersion?: string;
  connections: PoolSnapshot;
  breaker?: string;
  error?: { code: string; message: string };
}

/** What a health check needs from a pool. `Pool` provides it. */
export interface HealthTarget {
  readonly poolName: string;
  readonly ended: boolean;
  readonly ending: boolean;
  query(
    text: string,
    values: unknown[],
    options: { timeoutMs: number; priority: 'high'; idempotent: true },
  ): Promise<{
    rows: { server_version?: string }[];
  }>;
  stats(): PoolSnapshot & { breaker?: { state: string } | undefined };
}

export async function checkHealth(
  target: HealthTarget,
  redact: (text: string) => string,
  options: HealthOptions = {},
): Promise<HealthReport> {
  const kind = options.kind ?? 'readiness';
  const stats = target.stats();
  const base = {
    kind,
    pool: target.poolName,
    connections: {
      total: stats.total,
      idle: stats.idle,
      inUse: stats.inUse,
      connecting: stats.connecting,
      waiting: stats.waiting,
      max: stats.max,
    },
    ...(stats.breaker ? { breaker: stats.breaker.state } : {}),
  };
  if (target.ended || target.ending) {
    return {
      status: 'unavailable',
      ...base,
      error: { code: 'ERR_STEADFAST_POOL_CLOSED', message: 'The pool is closed' },
    };
  }
  if (kind === 'liveness') return { status: 'ok', ...base };
  const started = performance.now();
  try {
    const result = await target.query('SHOW server_version', [], {
      timeoutMs: options.timeoutMs ?? 2_000,
      priority: 'high',
      idempotent: true,
    });
    return {
      status: 'ok',
      ...base,
      latencyMs: Math.round((performance.now() - started) * 100) / 100,
      serverVersion: String(result.rows[0]?.server_version ?? ''),
    };
  } catch (error) {
    const message = typeof (error as Error)?.message === 'string' ? (error as Error).message : String(error);
    return { status: 'unavailable', ...base, error: { code: errorLabel(error), message: redact(message) } };
  }
}

type Checker = (options?: HealthOptions) => Promise<HealthReport>;

/**
 * A `node:http` / Express handler: 200 with the report when healthy, 503 otherwise. Pass
 * `{ kind: 'liveness' }` for a liveness endpoint.
 */
export function httpHealthHandler(
  pool: { health: Checker },
  options?: HealthOptions,
): (request: IncomingMessage, response: ServerResponse) => void {
  return (_request, response) => {
    void pool.health(options).then((report) => {
      response.statusCode = report.status === 'ok' ? 200 : 503;
      response.setHeader('content-type', 'application/json; charset=utf-8');
      response.setHeader('cache-control', 'no-store');
      response.end(JSON.stringify(report));
    });
  };
}

/** A Fastify route handler: `fastify.get('/health/db', fastifyHealthHandler(pool))`. */
export function fastifyHealthHandler(
  pool: { health: Checker },
  options?: HealthOptions,
): (
  request: unknown,
  reply: { code(status: number): { send(body: unknown): unknown }; header(k: string, v: string): unknown },
) => Promise<unknown> {
  return async (_request, reply) => {
    const report = await pool.health(options);
    reply.header('cache-control', 'no-store');
    return reply.code(report.status === 'ok' ? 200 : 503).send(report);
  };
}
