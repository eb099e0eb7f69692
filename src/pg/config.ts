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
import { booleanOption, durationOption, show, suggest } from '../config/validate.js';
import type { EngineOptions } from '../engine/options.js';
import { InvalidOptionError } from '../errors.js';
import { consoleLogger, type Logger } from '../observability/logger.js';
import { passwordOf } from '../observability/redact.js';
import type { BreakerOptions } from '../resilience/breaker.js';
import type { RateLimitOptions } from '../resilience/rate-limit.js';
import {
  type HostAddress,
  type HostPlan,
  type LoadBalanceHosts,
  planHosts,
  type TargetSessionAttrs,
} from '../topology/hosts.js';
import type { ClientConstructor, PasswordSource } from './driver.js';
import { PgBouncerGuard, type PgBouncerOptions } from './pgbouncer.js';

/** Options this pool adds to `pg.PoolConfig`. Each has its unit and default in the TSDoc. */
export interface SteadfastOptions extends EngineOptions {
  /**
   * Statement retries for `pool.query()`: when the connection turns out dead before the statement
   * could run, it is sent again on a fresh connection within the call's deadline. Default true.
   */
  retryQueries?: boolean;
  /** Treat every `pool.query()` as idempotent (safe to re-run when its outcome is unknown). Default false. */
  idempotent?: boolean;
  /**
   * Default deadline of a whole `pool.query()` call in ms (wait, statement and retries) when the call
   * gives no `timeoutMs`. A statement still running at the deadline is cancelled on the server. 0: no
   * statement deadline (the wait is still bounded by `acquireTimeoutMs`). Default 0.
   */
  queryTimeoutMs?: number;
  /**
   * After a statement is interrupted, how long to wait for the CancelRequest to be delivered and then
   * for the statement to come back, in ms, before the connection is destroyed. Default 2000.
   */
  cancelGraceMs?: number;
  /**
   * The circuit breaker, fed by connection attempts: after `failureThreshold` consecutive failures
   * spanning at least `minOutageMs` (default 5 failures over 10 s) it opens, and calls fail at once with
   * `CircuitOpenError` instead of waiting; every `openMs` (default 1000) one call probes, and a success
   * closes it. `false` turns it off. See {@link BreakerOptions}.
   */
  circuitBreaker?: BreakerOptions | false;
  /** A token-bucket limit on acquisitions (calls beyond it fail at once with `RateLimitedError`). Default none. */
  rateLimit?: RateLimitOptions | false;
  /**
   * The pool's name in metrics (`db.client.connection.pool.name`), logs and diagnostics channels. Never
   * derived from the connection string, so it cannot carry a password. Default `steadfast-<n>`.
   */
  poolName?: string;
  /**
   * Several servers to try, libpq style (also accepted as `h1:p1,h2:p2` in `connectionString`): in order,
   * or shuffled with `loadBalanceHosts: 'random'`, skipping any that does not match `targetSessionAttrs`.
   */
  hosts?: (string | HostAddress)[];
  /**
   * libpq's target_session_attrs (also read from the connection string): `any` (default), `read-write`,
   * `read-only`, `primary`, `standby`, `prefer-standby`. With `read-write` or `primary`, a server that
   * answers 25006 (it became a standby) makes the pool drop its connections and find the new primary.
   */
  targetSessionAttrs?: TargetSessionAttrs;
  /** libpq's load_balance_hosts: `disable` (default, hosts in order) or `random`. */
  loadBalanceHosts?: LoadBalanceHosts;
  /**
   * Behind PgBouncer in transaction pooling: statements that leave session state behind (SET, RESET,
   * LISTEN, SQL PREPARE, session advisory locks, temp tables) and named prepared statements are refused
   * with a clear error instead of leaking into other clients' sessions. `{ preparedStatements: true }`
   * allows named prepared statements (PgBouncer 1.21+). Default off.
   */
  pgbouncer?: boolean | PgBouncerOptions;
  /**
   * A client from `pool.connect()` held longer than this (ms) is reported (event `leak`, a warning in
   * the log) with the stack of the line that acquired it, and again when it comes back. 0: off. Default 0.
   */
  leakDetectionThresholdMs?: number;
  /**
   * A client held longer than this (ms) is taken back by force: its connection is closed and its
   * holder's next query fails with `ConnectionReclaimedError`. 0: never. Default 0.
   */
  leakReclaimMs?: number;
  /** Where the pool logs (pino-shaped `warn(fields, message)`...). `false`: nowhere. Default: the console, warn and above. */
  logger?: Logger | false;
  /** Log every `pool.query()` and `pool.transaction()` with its duration, at info (SQLAlchemy's `echo`). Default false. */
  echo?: boolean;
  /** Log every pool lifecycle event at debug (SQLAlchemy's `echo_pool`). Default false. */
  echoPool?: boolean;
}

export interface PoolConfig extends pg.PoolConfig, SteadfastOptions {}

/** Keys that belong to the pool (pg's and ours); everything else is handed to `pg.Client`. */
/** Keys that belong to the pool (pg.Pool's and this pool's own); exported for tests. */
export const POOL_ONLY_KEYS: ReadonlySet<string> = new Set<string>([
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
  'onConnect',
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
  'queryTimeoutMs',
  'cancelGraceMs',
  'circuitBreaker',
  'rateLimit',
  'poolName',
  'hosts',
  'targetSessionAttrs',
  'loadBalanceHosts',
  'pgbouncer',
  'leakDetectionThresholdMs',
  'leakReclaimMs',
  'logger',
  'echo',
  'echoPool',
  'maxWaiting',
]);

export interface ResolvedPoolConfig {
  engine: EngineOptions;
  client: pg.ClientConfig;
  Client: ClientConstructor | undefined;
  retryQueries: boolean;
  idempotent: boolean;
  allowExitOnIdle: boolean;
  queryTimeoutMs: number;
  cancelGraceMs: number;
  circuitBreaker: BreakerOptions | false | undefined;
  poolName: string;
  hostPlan: HostPlan | undefined;
  pgbouncer: PgBouncerGuard | undefined;
  leakDetectionThresholdMs: number;
  leakReclaimMs: number;
  logger: Logger | false;
  echo: boolean;
  echoPool: boolean;
  /** Secrets the redactor removes from everything the pool prints. */
  secrets: string[];
  rateLimit: RateLimitOptions | false | undefined;
  afterConnect: ((client: pg.Client) => Promise<void>) | undefined;
  /**
   * An explicit `password` next to a connection string that has none: pg would let the string's empty
   * password win (and a password function would never be called), so the driver sets it on each client.
   */
  password: PasswordSource | undefined;
}

function loggerOption(value: unknown): Logger | false {
  if (value === undefined) return consoleLogger('warn');
  if (value === false) return false;
  if (typeof value !== 'object' || value === null || typeof (value as Logger).warn !== 'function') {
    throw new InvalidOptionError(
      'logger',
      `got ${show(value)}, expected false or an object with at least a warn(fields, message) method`,
    );
  }
  return value as Logger;
}

function pgbouncerOption(value: unknown): PgBouncerGuard | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return new PgBouncerGuard(true);
  if (typeof value !== 'object' || value === null) {
    throw new InvalidOptionError(
      'pgbouncer',
      `got ${typeof value}, expected true, false or { preparedStatements }`,
    );
  }
  booleanOption('pgbouncer.preparedStatements', (value as PgBouncerOptions).preparedStatements, false);
  return new PgBouncerGuard(value as PgBouncerOptions);
}

let poolCounter = 0;

function poolNameOption(value: unknown): string {
  if (value === undefined) return `steadfast-${++poolCounter}`;
  if (typeof value !== 'string' || value.trim() === '' || value.length > 100) {
    throw new InvalidOptionError(
      'poolName',
      `got ${typeof value === 'string' ? JSON.stringify(value) : typeof value}, expected a non-empty string of at most 100 characters`,
    );
  }
  return value;
}

type VerifyHook = (client: pg.Client, done: (error?: Error) => void) => void;
type OnConnectHook = (client: pg.Client) => unknown;

/** pg.Pool's hooks for new clients: `onConnect(client)` (may return a promise), then `verify(client, cb)`. */
function connectHooks(config: PoolConfig): ResolvedPoolConfig['afterConnect'] {
  const { onConnect, verify } = config as { onConnect?: OnConnectHook; verify?: VerifyHook };
  for (const [name, hook] of [
    ['onConnect', onConnect],
    ['verify', verify],
  ] as const) {
    if (hook !== undefined && typeof hook !== 'function') {
      throw new InvalidOptionError(name, `got ${typeof hook}, expected a function`);
    }
  }
  if (!onConnect && !verify) return undefined;
  return async (client) => {
    if (onConnect) await onConnect(client);
    if (verify) {
      await new Promise<void>((resolve, reject) =>
        verify(client, (error) => (error ? reject(error) : resolve())),
      );
    }
  };
}

/**
 * pg.Client's own config keys (pg 8.x: connection-parameters.js, client.js). Keys outside this list and
 * the pool's are still handed to the client, as pg.Pool does, unless they look like a misspelling of a
 * pool option: then the pool refuses them with a did-you-mean instead of ignoring a setting silently.
 */
export const CLIENT_KEYS: ReadonlySet<string> = new Set<string>([
  'user',
  'database',
  'password',
  'port',
  'host',
  'connectionString',
  'ssl',
  'types',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'query_timeout',
  'application_name',
  'fallback_application_name',
  'keepAlive',
  'keepAliveInitialDelayMillis',
  'stream',
  'client_encoding',
  'options',
  'binary',
  'enableChannelBinding',
  'replication',
  'parseInputDatesAsUTC',
  'rows',
  'pipeline',
  'sslnegotiation',
  'nativeConnectionString',
]);

/** Unknown keys shorter than this are handed to pg.Client without a did-you-mean check. */
const MIN_TYPO_LENGTH = 5;

export function resolvePoolConfig(config: PoolConfig = {}): ResolvedPoolConfig {
  if (typeof config !== 'object' || config === null) {
    throw new InvalidOptionError(
      'config',
      `got ${config === null ? 'null' : typeof config}, expected an object`,
    );
  }
  const client: Record<string, unknown> = { keepAlive: true, keepAliveInitialDelayMillis: 10_000 };
  for (const [key, value] of Object.entries(config)) {
    if (POOL_ONLY_KEYS.has(key)) continue;
    // Short keys are left alone: frameworks pass their own (e.g. @fastify/postgres passes `pg`), and a
    // two-letter name is "close" to too many options to call it a typo.
    if (!CLIENT_KEYS.has(key) && key.length >= MIN_TYPO_LENGTH) {
      const hint = suggest(key, POOL_ONLY_KEYS);
      if (hint !== undefined) throw new InvalidOptionError(key, `unknown option; did you mean "${hint}"?`);
    }
    if (value !== undefined) client[key] = value;
  }
  // pg.Pool marks the password non-enumerable on its own copy; read it directly so it is never lost.
  if (config.password !== undefined) client.password = config.password;
  const hostPlan = planHosts(config);
  // pg cannot parse a multi-host string: each host then brings its own single-host connection string.
  if (hostPlan?.hosts.some((h) => h.connectionString !== undefined)) delete client.connectionString;

  const pgTimeout = durationOption('connectionTimeoutMillis', config.connectionTimeoutMillis, 0);
  // pg.Pool treats a null (or 0) idleTimeoutMillis as "never close idle clients".
  const pgIdle = durationOption('idleTimeoutMillis', config.idleTimeoutMillis ?? undefined, 10_000);
  const pgLifetime = durationOption('maxLifetimeSeconds', config.maxLifetimeSeconds, 0, 0, 2_147_483);
  const engine: EngineOptions = {
    ...pick(config),
    max: config.max ?? (config as { poolSize?: number }).poolSize,
    // pg.Pool spells "no limit" as Infinity.
    maxUses: config.maxUses === Number.POSITIVE_INFINITY ? 0 : config.maxUses,
    // pg's connectionTimeoutMillis bounds both the wait for a client and each connection attempt.
    acquireTimeoutMs: config.acquireTimeoutMs ?? (pgTimeout > 0 ? pgTimeout : undefined),
    connectTimeoutMs: config.connectTimeoutMs ?? (pgTimeout > 0 ? pgTimeout : undefined),
    idleTimeoutMs: config.idleTimeoutMs ?? (config.idleTimeoutMillis === null ? 0 : pgIdle),
    // pg's maxLifetimeSeconds: 0 (its default) means no limit when given explicitly; when absent, this
    // pool's 30-minute default applies (connections are recycled, as HikariCP and SQLAlchemy do).
    maxLifetimeMs:
      config.maxLifetimeMs ?? (config.maxLifetimeSeconds === undefined ? undefined : pgLifetime * 1_000),
  };
  return {
    engine,
    client: client as pg.ClientConfig,
    Client: config.Client as ClientConstructor | undefined,
    retryQueries: booleanOption('retryQueries', config.retryQueries, true),
    idempotent: booleanOption('idempotent', config.idempotent, false),
    allowExitOnIdle: booleanOption('allowExitOnIdle', config.allowExitOnIdle, false),
    queryTimeoutMs: durationOption('queryTimeoutMs', config.queryTimeoutMs, 0, 0),
    cancelGraceMs: durationOption('cancelGraceMs', config.cancelGraceMs, 2_000, 1),
    circuitBreaker: config.circuitBreaker,
    poolName: poolNameOption(config.poolName),
    hostPlan,
    pgbouncer: pgbouncerOption(config.pgbouncer),
    leakDetectionThresholdMs: durationOption(
      'leakDetectionThresholdMs',
      config.leakDetectionThresholdMs,
      0,
      0,
    ),
    leakReclaimMs: durationOption('leakReclaimMs', config.leakReclaimMs, 0, 0),
    logger: loggerOption(config.logger),
    echo: booleanOption('echo', config.echo, false),
    echoPool: booleanOption('echoPool', config.echoPool, false),
    secrets: [config.password, passwordOf(config.connectionString)].filter(
      (secret): secret is string => typeof secret === 'string' && secret.length > 0,
    ),
    rateLimit: config.rateLimit,
    afterConnect: connectHooks(config),
    password:
      config.password !== undefined &&
      typeof config.connectionString === 'string' &&
      passwordOf(config.connectionString) === undefined
        ? (config.password as PasswordSource)
        : undefined,
  };
}

/** Native engine options that pass through unchanged (the pg-named ones are mapped above). */
const ENGINE_KEYS = [
  'min',
  'maxOverflow',
  'maxUses',
  'maxWaiting',
  'mode',
  'connectTimeoutMs',
  'maxConnectConcurrency',
  'connectBackoffInitialMs',
  'connectBackoffMaxMs',
  'validateAfterIdleMs',
  'validationTimeoutMs',
  'resetTimeoutMs',
  'overflowIdleTimeoutMs',
  'housekeepingIntervalMs',
  'closeTimeoutMs',
] as const satisfies readonly (keyof EngineOptions)[];

function pick(config: PoolConfig): EngineOptions {
  const picked: Record<string, unknown> = {};
  for (const key of ENGINE_KEYS) picked[key] = config[key];
  return picked as EngineOptions;
}
