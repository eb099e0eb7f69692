/**
 * Read/write splitting over a primary and read replicas (seeds 002 and 004).
 *
 * Writes and transactions go to the primary; `read()` goes to a healthy replica (round-robin, random
 * or least-busy). A replica that fails is taken out and probed back in; one whose replay lag is over
 * `maxReplicationLagMs` is skipped; with no healthy replica, reads fall back to the primary (unless
 * `fallbackToPrimary: false`). `{ role: 'primary' }` on a read gives read-your-writes.
 */
import type pg from 'pg';
import { booleanOption, durationOption, enumOption } from '../config/validate.js';
import { ErrorCodes, InvalidOptionError, SteadfastError } from '../errors.js';
import type { HealthReport } from '../ops/health.js';
import type { PoolConfig } from '../pg/config.js';
import { type CallOptions, Pool } from '../pg/pool.js';
import type { TransactionClient, TransactionOptions } from '../pg/transaction.js';
import { isConnectionBroken } from '../resilience/classify.js';

export type ReadStrategy = 'round-robin' | 'random' | 'least-busy';

export interface ClusterOptions {
  /** The primary: a pool config (may itself list several hosts with `targetSessionAttrs: 'read-write'`). */
  primary: PoolConfig | Pool;
  /** Read replicas. */
  replicas?: (PoolConfig | Pool)[];
  /** How reads pick a replica. Default `'round-robin'`. */
  readStrategy?: ReadStrategy;
  /** With no healthy replica, send reads to the primary. Default true. */
  fallbackToPrimary?: boolean;
  /** Skip a replica whose replay lag is over this, in ms. 0: no limit. Default 0. */
  maxReplicationLagMs?: number;
  /** How often replicas that are out (failed, or lagging) are probed, in ms. Default 1000. */
  checkIntervalMs?: number;
}

export type Role = 'primary' | 'replica';
export type ClusterCallOptions = CallOptions & { role?: Role };

interface Replica {
  pool: Pool;
  healthy: boolean;
  lagMs: number | undefined;
  reason?: string;
}

/** Errors that say a replica is unavailable, rather than that the statement was wrong. */
function isUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return (
    isConnectionBroken(error) ||
    code === 'ERR_STEADFAST_ACQUIRE_TIMEOUT' ||
    code === 'ERR_STEADFAST_CIRCUIT_OPEN' ||
    code === 'ERR_STEADFAST_CONNECT_FATAL' ||
    code === '57P03'
  );
}

const LAG_QUERY = `SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
  ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000, 0) END AS lag_ms`;

export class Cluster {
  readonly primary: Pool;
  readonly #replicas: Replica[];
  readonly #strategy: ReadStrategy;
  readonly #fallback: boolean;
  readonly #maxLagMs: number;
  readonly #timer: NodeJS.Timeout | undefined;
  #next = 0;
  #checking = false;

  constructor(options: ClusterOptions) {
    if (typeof options !== 'object' || options === null || options.primary === undefined) {
      throw new InvalidOptionError('primary', 'a cluster needs a primary');
    }
    this.#strategy = enumOption('readStrategy', options.readStrategy, 'round-robin', [
      'round-robin',
      'random',
      'least-busy',
    ]);
    this.#fallback = booleanOption('fallbackToPrimary', options.fallbackToPrimary, true);
    this.#maxLagMs = durationOption('maxReplicationLagMs', options.maxReplicationLagMs, 0, 0);
    const interval = durationOption('checkIntervalMs', options.checkIntervalMs, 1_000, 10);
    this.primary =
      options.primary instanceof Pool
        ? options.primary
        : new Pool({ poolName: 'primary', ...options.primary });
    this.#replicas = (options.replicas ?? []).map((replica, i) => ({
      pool: replica instanceof Pool ? replica : new Pool({ poolName: `replica-${i + 1}`, ...replica }),
      healthy: true,
      lagMs: undefined,
    }));
    if (this.#replicas.length > 0) {
      // Probing never keeps the process alive.
      this.#timer = setInterval(() => void this.checkReplicas(), interval);
      this.#timer.unref();
    }
  }

  /** A statement on the primary (or on a replica with `{ role: 'replica' }`). */
  query<R extends pg.QueryResultRow = any>(
    text: string | pg.QueryConfig,
    values?: unknown[],
    options: ClusterCallOptions = {},
  ): Promise<pg.QueryResult<R>> {
    return options.role === 'replica'
      ? this.read<R>(text, values, options)
      : this.primary.query<R>(text as string, values, options);
  }

  /** A read: on a healthy replica unless `{ role: 'primary' }`, retried on another server if one is down. */
  async read<R extends pg.QueryResultRow = any>(
    text: string | pg.QueryConfig,
    values?: unknown[],
    options: ClusterCallOptions = {},
  ): Promise<pg.QueryResult<R>> {
    if (options.role === 'primary') return this.primary.query<R>(text as string, values, options);
    const tried = new Set<Replica>();
    for (;;) {
      const replica = this.#pick(tried);
      if (replica === undefined) {
        if (!this.#fallback) throw new NoReplicaError(this.#replicas.length);
        return this.primary.query<R>(text as string, values, { idempotent: true, ...options });
      }
      tried.add(replica);
      try {
        return await replica.pool.query<R>(text as string, values, { idempotent: true, ...options });
      } catch (error) {
        if (!isUnavailable(error)) throw error;
        this.#markDown(replica, error);
      }
    }
  }

  /** A transaction on the primary; `{ role: 'replica', readOnly: true }` runs a read-only one on a replica. */
  transaction<T>(
    fn: (tx: TransactionClient) => Promise<T>,
    options: TransactionOptions & { role?: Role } = {},
  ): Promise<T> {
    if (options.role === 'replica') {
      const replica = this.#pick(new Set());
      if (replica !== undefined) return replica.pool.transaction(fn, { readOnly: true, ...options });
      if (!this.#fallback) return Promise.reject(new NoReplicaError(this.#replicas.length));
    }
    return this.primary.transaction(fn, options);
  }

  /** Probes the replicas that are out, and measures every replica's lag when a limit is set. */
  async checkReplicas(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    try {
      await Promise.all(
        this.#replicas.map(async (replica) => {
          if (replica.healthy && this.#maxLagMs === 0) return;
          try {
            const { rows } = await replica.pool.query(LAG_QUERY, [], {
              timeoutMs: 1_000,
              priority: 'high',
              idempotent: true,
            });
            replica.lagMs = Number(rows[0]?.lag_ms ?? 0);
            const lagging = this.#maxLagMs > 0 && replica.lagMs > this.#maxLagMs;
            replica.healthy = !lagging;
            replica.reason = lagging ? `replay lag ${Math.round(replica.lagMs)}ms` : undefined;
          } catch (error) {
            this.#markDown(replica, error);
          }
        }),
      );
    } finally {
      this.#checking = false;
    }
  }

  stats() {
    return {
      primary: this.primary.stats(),
      replicas: this.#replicas.map((r) => ({
        pool: r.pool.poolName,
        healthy: r.healthy,
        lagMs: r.lagMs,
        ...(r.reason === undefined ? {} : { reason: r.reason }),
        stats: r.pool.stats(),
      })),
    };
  }

  async health(): Promise<{ primary: HealthReport; replicas: HealthReport[] }> {
    const [primary, ...replicas] = await Promise.all([
      this.primary.health(),
      ...this.#replicas.map((r) => r.pool.health()),
    ]);
    return { primary: primary!, replicas };
  }

  async end(options?: { timeoutMs?: number; drain?: boolean }): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await Promise.all(
      [this.primary, ...this.#replicas.map((r) => r.pool)].map((pool) => pool.close(options)),
    );
  }

  #markDown(replica: Replica, error: unknown): void {
    replica.healthy = false;
    replica.reason = `unavailable: ${(error as { code?: string })?.code ?? (error as Error)?.message ?? 'error'}`;
  }

  #pick(exclude: Set<Replica>): Replica | undefined {
    const candidates = this.#replicas.filter((r) => r.healthy && !exclude.has(r));
    if (candidates.length === 0) return undefined;
    switch (this.#strategy) {
      case 'random':
        return candidates[Math.floor(Math.random() * candidates.length)];
      case 'least-busy':
        return candidates.reduce((best, r) => {
          const load = (p: Pool) => p.stats().inUse + p.stats().waiting;
          return load(r.pool) < load(best.pool) ? r : best;
        });
      default:
        return candidates[this.#next++ % candidates.length];
    }
  }
}

/** No healthy replica and `fallbackToPrimary: false`. */
export class NoReplicaError extends SteadfastError {
  constructor(replicas: number) {
    super(ErrorCodes.NO_REPLICA, `No healthy replica among ${replicas} (fallbackToPrimary is off)`);
  }
}
