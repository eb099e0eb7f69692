/**
 * Splits a `pg.Pool`-style config into the engine's options and the config every `pg.Client` gets.
 *
 * pg's own keys keep their meaning where it is safe: `max`, `min`, `idleTimeoutMillis`,
 * `connectionTimeoutMillis` (the acquire deadline) and `maxLifetimeSeconds`. Where pg's default is
 * dangerous it is not kept: pg waits forever for a connection by default (`connectionTimeoutMillis: 0`);
 * this pool waits 30 s, like HikariCP and SQLAlchemy. Keys this pool does not know go to the client,
 * as pg.Pool does.
 */
import type pg from 'pg';
import { durationOption } from '../config/validate.js';
import type { EngineOptions } from '../engine/options.js';
import type { ClientConstructor } from './driver.js';

/** Options this pool adds to `pg.PoolConfig`. Each has its unit and default in the TSDoc. */
export interface SteadfastOptions extends EngineOptions {
  /**
   * Statement retries for `pool.query()`: when the connection turns out dead before the statement
   * could run, it is sent again on a fresh connection within the call's deadline. Default true.
   */
  retryQueries?: boolean;
  /** Treat every `pool.query()` as idempotent (safe to re-run when its outcome is unknown). Default false. */
  idempotent?: boolean;
}

export interface PoolConfig extends pg.PoolConfig, SteadfastOptions {}

/** Keys that belong to the pool (pg's and ours); everything else is handed to `pg.Client`. */
const POOL_ONLY_KEYS = new Set<string>([
  // pg.Pool's own
  'max',
  'min',
  'idleTimeoutMillis',
  'connectionTimeoutMillis',
  'maxLifetimeSeconds',
  'maxUses',
  'allowExitOnIdle',
  'log',
  'Client',
  'Promise',
  'verify',
  'poolSize',
  // ours
  'maxOverflow',
  'mode',
  'acquireTimeoutMs',
  'connectTimeoutMs',
  'maxConnectConcurrency',
  'connectBackoffInitialMs',
  'connectBackoffMaxMs',
  'validateAfterIdleMs',
  'validationTimeoutMs',
  'resetTimeoutMs',
  'maxLifetimeMs',
  'idleTimeoutMs',
  'overflowIdleTimeoutMs',
  'housekeepingIntervalMs',
  'closeTimeoutMs',
  'retryQueries',
  'idempotent',
]);

export interface ResolvedPoolConfig {
  engine: EngineOptions;
  client: pg.ClientConfig;
  Client: ClientConstructor | undefined;
  retryQueries: boolean;
  idempotent: boolean;
  allowExitOnIdle: boolean;
}

export function resolvePoolConfig(config: PoolConfig = {}): ResolvedPoolConfig {
  const client: Record<string, unknown> = { keepAlive: true, keepAliveInitialDelayMillis: 10_000 };
  for (const [key, value] of Object.entries(config)) {
    if (!POOL_ONLY_KEYS.has(key) && value !== undefined) client[key] = value;
  }
  // pg.Pool marks the password non-enumerable on its own copy; read it directly so it is never lost.
  if (config.password !== undefined) client.password = config.password;

  const pgTimeout = durationOption('connectionTimeoutMillis', config.connectionTimeoutMillis, 0);
  const pgIdle = durationOption('idleTimeoutMillis', config.idleTimeoutMillis, 10_000);
  const pgLifetime = durationOption('maxLifetimeSeconds', config.maxLifetimeSeconds, 0, 0, 2_147_483);
  const engine: EngineOptions = {
    ...pick(config),
    max: config.max ?? (config as { poolSize?: number }).poolSize,
    // pg.Pool spells "no limit" as Infinity.
    maxUses: config.maxUses === Number.POSITIVE_INFINITY ? 0 : config.maxUses,
    acquireTimeoutMs: config.acquireTimeoutMs ?? (pgTimeout > 0 ? pgTimeout : undefined),
    idleTimeoutMs: config.idleTimeoutMs ?? pgIdle,
    // pg's maxLifetimeSeconds: 0 (its default) means no limit when given explicitly; when absent, this
    // pool's 30-minute default applies (connections are recycled, as HikariCP and SQLAlchemy do).
    maxLifetimeMs:
      config.maxLifetimeMs ?? (config.maxLifetimeSeconds === undefined ? undefined : pgLifetime * 1_000),
  };
  return {
    engine,
    client: client as pg.ClientConfig,
    Client: config.Client as ClientConstructor | undefined,
    retryQueries: config.retryQueries ?? true,
    idempotent: config.idempotent ?? false,
    allowExitOnIdle: config.allowExitOnIdle ?? false,
  };
}

function pick(config: PoolConfig): EngineOptions {
  const {
    min,
    maxOverflow,
    maxUses,
    mode,
    connectTimeoutMs,
    maxConnectConcurrency,
    connectBackoffInitialMs,
    connectBackoffMaxMs,
    validateAfterIdleMs,
    validationTimeoutMs,
    resetTimeoutMs,
    overflowIdleTimeoutMs,
    housekeepingIntervalMs,
    closeTimeoutMs,
  } = config;
  const picked: EngineOptions = {
    min,
    maxOverflow,
    maxUses,
    mode,
    connectTimeoutMs,
    maxConnectConcurrency,
    connectBackoffInitialMs,
    connectBackoffMaxMs,
    validateAfterIdleMs,
    validationTimeoutMs,
    resetTimeoutMs,
    overflowIdleTimeoutMs,
    housekeepingIntervalMs,
    closeTimeoutMs,
  };
  return picked;
}
