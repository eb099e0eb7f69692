/**
 * Pool sizing: calculators for how many connections a workload needs, and the check that every
 * instance's pool, added up, fits into the server's `max_connections`.
 *
 * The calculators answer different questions. {@link hikariSize} is what the database server can use
 * (more connections than it has cores and disks to run them only queue inside the server);
 * {@link littleSize} is what the traffic needs on average. A pool sized far above either mostly adds
 * idle backends, each costing the server memory (roughly 10 MB) and a slot out of `max_connections`.
 */
import type pg from 'pg';
import { InvalidOptionError } from '../errors.js';
import type { PoolConfig } from '../pg/config.js';

function positiveInteger(name: string, value: unknown, min = 1): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidOptionError(name, `got ${String(value)}, expected an integer >= ${min}`);
  }
  return value;
}

function positiveNumber(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new InvalidOptionError(name, `got ${String(value)}, expected a number > 0`);
  }
  return value;
}

/** Input of {@link hikariSize}. */
export interface HikariSizeInput {
  /** CPU cores of the database server (not of the application host); integer >= 1. */
  cores: number;
  /**
   * Effective disk spindles of the database server; integer >= 0. 0 when the working set is cached in
   * memory (or on SSD), approaching the real number of disks as the cache hit rate falls. Default 0.
   */
  spindles?: number;
}

/**
 * HikariCP's rule (from the PostgreSQL project's guidance): `cores × 2 + spindles` connections keep a
 * database server busy; more only queue inside it. The result is for the whole server, shared by every
 * instance of every application using it: divide with {@link perInstance}.
 *
 * @returns Connections in total, for the server.
 */
export function hikariSize({ cores, spindles = 0 }: HikariSizeInput): number {
  return positiveInteger('cores', cores) * 2 + positiveInteger('spindles', spindles, 0);
}

/** Input of {@link littleSize}. */
export interface LittleSizeInput {
  /** Requests per second arriving (at all instances together, or at one to size that one); > 0. */
  requestsPerSecond: number;
  /** Mean time one query holds a connection, in seconds, round trip included; > 0. */
  queryTimeSeconds: number;
  /** Queries per request, each taking a connection for `queryTimeSeconds`; > 0. Default 1. */
  queriesPerRequest?: number;
}

/**
 * Little's law: connections busy at once on average = arrival rate × time each one is held, i.e.
 * `requestsPerSecond × queriesPerRequest × queryTimeSeconds`, rounded up. This is the mean; bursts need
 * headroom on top (overflow connections, `maxOverflow`).
 *
 * @returns Connections busy on average (at least 1).
 */
export function littleSize({
  requestsPerSecond,
  queryTimeSeconds,
  queriesPerRequest = 1,
}: LittleSizeInput): number {
  const busy =
    positiveNumber('requestsPerSecond', requestsPerSecond) *
    positiveNumber('queriesPerRequest', queriesPerRequest) *
    positiveNumber('queryTimeSeconds', queryTimeSeconds);
  // Rounded to 1e-9 first so that 0.1 × 30 (3.0000000000000004 in floating point) gives 3, not 4.
  return Math.max(1, Math.ceil(Math.round(busy * 1e9) / 1e9));
}

/** Input of {@link podPoolSize}. */
export interface PodPoolSizeInput {
  /** Application instances (pods); integer >= 1. */
  pods: number;
  /** Requests in flight at once in each pod; > 0. */
  concurrentRequestsPerPod: number;
  /** Expected query time in seconds; > 0. */
  queryTimeSeconds: number;
}

/**
 * The per-pod rule of a common SQLAlchemy deployment template:
 * `total = pods × concurrentRequestsPerPod / queryTimeSeconds`, `perPod = total / pods` (3 pods, 10
 * concurrent requests, 0.1 s queries: 300 in total, 100 per pod).
 *
 * Kept to compare with configurations sized by it. Dividing requests by seconds gives a rate (queries
 * per second when each request runs one query back to back), not a count of connections: a pod with
 * `concurrentRequestsPerPod` requests in flight never has more connections busy than that, which
 * `concurrencyBoundPerPod` reports. {@link littleSize} gives the number of busy connections.
 */
export function podPoolSize({ pods, concurrentRequestsPerPod, queryTimeSeconds }: PodPoolSizeInput): {
  total: number;
  perPod: number;
  concurrencyBoundPerPod: number;
} {
  positiveInteger('pods', pods);
  positiveNumber('concurrentRequestsPerPod', concurrentRequestsPerPod);
  positiveNumber('queryTimeSeconds', queryTimeSeconds);
  const total = Math.ceil(Math.round(((pods * concurrentRequestsPerPod) / queryTimeSeconds) * 1e9) / 1e9);
  return {
    total,
    perPod: Math.ceil(total / pods),
    concurrencyBoundPerPod: Math.ceil(concurrentRequestsPerPod),
  };
}

/** A total split over `instances`, rounded up: `ceil(total / instances)`. */
export function perInstance(total: number, instances: number): number {
  return Math.ceil(positiveInteger('total', total, 0) / positiveInteger('instances', instances));
}

/** Input of {@link connectionBudget}. */
export interface ConnectionBudgetInput {
  /** Application instances (pods, processes) with one pool each; integer >= 1. */
  instances: number;
  /** Kept connections per pool (`DB_POOL_SIZE`, `max - maxOverflow`); integer >= 1. */
  poolSize: number;
  /** Burst connections per pool (`DB_MAX_OVERFLOW`); integer >= 0. Default 0. */
  maxOverflow?: number;
  /**
   * Slots that must stay free for others: the server's reserved slots (`superuser_reserved_connections`,
   * `reserved_connections`) plus what administration, monitoring and migrations need; integer >= 0.
   * Default 0.
   */
  reserved?: number;
  /** The server's `max_connections`; integer >= 1. */
  serverMaxConnections: number;
}

/** The outcome of {@link connectionBudget}. */
export interface ConnectionBudget {
  instances: number;
  poolSize: number;
  maxOverflow: number;
  reserved: number;
  /** `instances × (poolSize + maxOverflow) + reserved`. */
  needed: number;
  /** The server's `max_connections`. */
  available: number;
  /** `available - needed`; negative when the pools can ask for more connections than the server has. */
  spare: number;
  /** Whether `needed <= available`. */
  ok: boolean;
  /** One line for logs and reports, with what to change when it does not fit. */
  message: string;
}

/**
 * Checks `max_connections >= instances × (poolSize + maxOverflow) + reserved`. When it fails, the pools
 * can together open more connections than the server accepts, and under load some connection attempts
 * fail with "too many clients" (SQLSTATE 53300) instead of waiting in a pool.
 */
export function connectionBudget(input: ConnectionBudgetInput): ConnectionBudget {
  const instances = positiveInteger('instances', input.instances);
  const poolSize = positiveInteger('poolSize', input.poolSize);
  const maxOverflow = positiveInteger('maxOverflow', input.maxOverflow ?? 0, 0);
  const reserved = positiveInteger('reserved', input.reserved ?? 0, 0);
  const available = positiveInteger('serverMaxConnections', input.serverMaxConnections);
  const needed = instances * (poolSize + maxOverflow) + reserved;
  const spare = available - needed;
  const ok = spare >= 0;
  const sum =
    `${instances} instance${instances === 1 ? '' : 's'} × (${poolSize} + ${maxOverflow} overflow) + ` +
    `${reserved} reserved = ${needed} connections`;
  const message = ok
    ? `${sum}, within max_connections ${available} (${spare} spare)`
    : `${sum}, more than max_connections ${available} (${-spare} short): lower the pool size or ` +
      `overflow, run fewer instances, put PgBouncer in front, or raise max_connections to at least ${needed}`;
  return { instances, poolSize, maxOverflow, reserved, needed, available, spare, ok, message };
}

// ---------------------------------------------------------------------------------------------------
// Reading the server

/** The server's connection limits and the numbers that go with them. */
export interface ServerConnectionLimits {
  /** `server_version`, e.g. `"17.2"`. */
  serverVersion: string;
  /** `server_version_num`, e.g. `170002`. */
  serverVersionNum: number;
  maxConnections: number;
  /** `superuser_reserved_connections`: slots only superusers may take. */
  superuserReservedConnections: number;
  /** `reserved_connections` (PostgreSQL 16+; 0 before): slots for roles with `pg_use_reserved_connections`. */
  reservedConnections: number;
  /** Slots an ordinary role can take: `max_connections` minus both reserves. */
  usableConnections: number;
  /** The role's `CONNECTION LIMIT` (`rolconnlimit`); -1 when unlimited. */
  roleConnectionLimit: number;
  /** The database's `CONNECTION LIMIT` (`datconnlimit`); -1 when unlimited. */
  databaseConnectionLimit: number;
  /** Client sessions open on the whole server, the asking one included. */
  clientConnections: number;
  user: string;
  database: string;
  isSuperuser: boolean;
}

const LIMITS_SQL = `
SELECT current_setting('server_version') AS server_version,
       current_setting('server_version_num')::int AS server_version_num,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved_connections,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved_connections,
       r.rolconnlimit AS role_connection_limit,
       d.datconnlimit AS database_connection_limit,
       (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend') AS client_connections,
       current_user AS role_name,
       current_database() AS database_name,
       r.rolsuper AS is_superuser
  FROM pg_roles r, pg_database d
 WHERE r.rolname = current_user AND d.datname = current_database()`;

/** Reads {@link ServerConnectionLimits} over an open client (PostgreSQL 10 or later). */
export async function readServerLimits(client: pg.ClientBase): Promise<ServerConnectionLimits> {
  const { rows } = await client.query(LIMITS_SQL);
  const row = rows[0];
  if (row === undefined) throw new Error('could not read the role and database of this session');
  const maxConnections = Number(row.max_connections);
  const superuserReservedConnections = Number(row.superuser_reserved_connections);
  const reservedConnections = Number(row.reserved_connections);
  return {
    serverVersion: String(row.server_version),
    serverVersionNum: Number(row.server_version_num),
    maxConnections,
    superuserReservedConnections,
    reservedConnections,
    usableConnections: maxConnections - superuserReservedConnections - reservedConnections,
    roleConnectionLimit: Number(row.role_connection_limit),
    databaseConnectionLimit: Number(row.database_connection_limit),
    clientConnections: Number(row.client_connections),
    user: String(row.role_name),
    database: String(row.database_name),
    isSuperuser: row.is_superuser === true,
  };
}

/**
 * The role's and the database's `CONNECTION LIMIT` against `instances` pools of `perPool` connections:
 * one message for each limit the pools can exceed (the server answers the connection beyond it with
 * "too many connections for role", SQLSTATE 53300). Empty when both fit or are unlimited.
 */
export function connectionLimitProblems(
  server: Pick<
    ServerConnectionLimits,
    'user' | 'database' | 'roleConnectionLimit' | 'databaseConnectionLimit'
  >,
  instances: number,
  perPool: number,
): string[] {
  const needed = instances * perPool;
  const problems: string[] = [];
  for (const [what, limit] of [
    [`role ${server.user}`, server.roleConnectionLimit],
    [`database ${server.database}`, server.databaseConnectionLimit],
  ] as const) {
    if (limit >= 0 && needed > limit) {
      problems.push(
        `${instances} × ${perPool} = ${needed} connections exceed the CONNECTION LIMIT ${limit} of ${what}`,
      );
    }
  }
  return problems;
}

/** Options of {@link checkConnectionBudget}. */
export interface BudgetCheckOptions {
  /** Application instances running this pool; integer >= 1. Default 1. */
  instances?: number;
  /** Kept connections per pool. Default: from the pool or config (`max - maxOverflow`; pool default 10). */
  poolSize?: number;
  /** Burst connections per pool. Default: from the pool or config (`maxOverflow`; default 0). */
  maxOverflow?: number;
  /**
   * Slots to keep free on top of the server's own reserves, for administration, monitoring and
   * migrations; integer >= 0. Default 0.
   */
  reserved?: number;
  /** Longest the check may take to connect, and then to run its query, in ms. Default 5000. */
  timeoutMs?: number;
  /**
   * Called with the message when the budget does not fit. Default: `process.emitWarning` (type
   * `SteadfastWarning`, code `STEADFAST_CONNECTION_BUDGET`). `false`: no warning, only the result.
   */
  onWarning?: ((message: string) => void) | false;
}

/** The outcome of {@link checkConnectionBudget}: the budget, with the server's limits it was checked against. */
export interface ConnectionBudgetCheck extends ConnectionBudget {
  server: ServerConnectionLimits;
}

function isPool(target: unknown): target is pg.Pool {
  const candidate = target as { options?: unknown; connect?: unknown } | null;
  return typeof candidate?.connect === 'function' && typeof candidate.options === 'object';
}

/**
 * Reads the server's `max_connections` and reserved slots over one short-lived connection (not taken
 * from the pool), and checks that `instances` pools of this size fit:
 * `instances × (size + overflow) + superuser_reserved_connections + reserved_connections + reserved
 * <= max_connections`. Also checks the role's and the database's `CONNECTION LIMIT`. Warns when any of
 * them does not fit; meant to run once at startup.
 *
 * @param target - A pool (its connection settings and size are used), a pool config, or a connection
 *   string.
 * @throws When the server cannot be reached or the query fails; the pool itself is not affected.
 */
/** The budget against what a server reports: its `max_connections` and reserved slots, plus `reserved` of the caller's. */
export function serverBudget(
  server: ServerConnectionLimits,
  pools: { instances: number; poolSize: number; maxOverflow: number; reserved?: number | undefined },
): ConnectionBudget {
  return connectionBudget({
    instances: pools.instances,
    poolSize: pools.poolSize,
    maxOverflow: pools.maxOverflow,
    reserved: server.superuserReservedConnections + server.reservedConnections + (pools.reserved ?? 0),
    serverMaxConnections: server.maxConnections,
  });
}

export async function checkConnectionBudget(
  target: pg.Pool | PoolConfig | string,
  options: BudgetCheckOptions = {},
): Promise<ConnectionBudgetCheck> {
  const config: PoolConfig & { poolSize?: number } =
    typeof target === 'string'
      ? { connectionString: target }
      : isPool(target)
        ? (target.options as PoolConfig)
        : target;
  const max = config.max ?? config.poolSize ?? 10;
  const maxOverflow = options.maxOverflow ?? config.maxOverflow ?? 0;
  const poolSize = options.poolSize ?? max - (config.maxOverflow ?? 0);
  const instances = options.instances ?? 1;
  // Checked before connecting, so a bad argument costs no round trip.
  positiveInteger('instances', instances);
  positiveInteger('poolSize', poolSize);
  positiveInteger('maxOverflow', maxOverflow, 0);
  positiveInteger('reserved', options.reserved ?? 0, 0);
  const timeoutMs = options.timeoutMs ?? 5_000;
  positiveNumber('timeoutMs', timeoutMs);

  // Loaded here so that the calculators work where pg is not installed.
  const { default: pgModule } = await import('pg');
  const client = new pgModule.Client({
    ...(config as pg.ClientConfig),
    // pg.Pool keeps the password non-enumerable on its options; the spread above loses it.
    password: config.password,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'pg-steadfast budget check',
  });
  // An error after the query (the server going away) must not become an uncaught 'error' event.
  client.on('error', () => undefined);
  let server: ServerConnectionLimits;
  await client.connect();
  try {
    server = await readServerLimits(client);
  } finally {
    await client.end().catch(() => undefined);
  }

  const budget = serverBudget(server, { instances, poolSize, maxOverflow, reserved: options.reserved });
  const notes = [budget.message, ...connectionLimitProblems(server, instances, poolSize + maxOverflow)];
  const ok = notes.length === 1 && budget.ok;
  const result: ConnectionBudgetCheck = { ...budget, ok, message: notes.join('; '), server };
  if (!ok && options.onWarning !== false) {
    const warn =
      options.onWarning ??
      ((message: string) =>
        process.emitWarning(message, { type: 'SteadfastWarning', code: 'STEADFAST_CONNECTION_BUDGET' }));
    warn(`pg-steadfast connection budget: ${result.message}`);
  }
  return result;
}
