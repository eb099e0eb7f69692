/**
 * `steadfast doctor`: one look at a PostgreSQL server from the pool's point of view. It connects once
 * (timed), reads the version and the connection limits, checks the connection budget of the pools that
 * will use it, and lists the sessions that usually explain a starving pool: sessions idle inside a
 * transaction (a connection not given back, or a transaction left open), long-running queries, and
 * queries waiting on locks, plus the connections each application holds.
 *
 * All of it comes from one `pg_stat_activity` snapshot, so the lists agree with each other. A role
 * without `pg_read_all_stats` sees the state and query text of its own sessions only; the report
 * counts the others it could not inspect.
 *
 * The password is never part of the report: the target is shown with `***` in its place, and it is
 * also removed from any error message.
 */
import pg from 'pg';
import { parseConnectionString } from '../config/env.js';
import { durationOption, integerOption } from '../config/validate.js';
import { InvalidOptionError } from '../errors.js';
import { errorCode } from '../resilience/classify.js';
import {
  type ConnectionBudget,
  connectionLimitProblems,
  readServerLimits,
  type ServerConnectionLimits,
  serverBudget,
} from './sizing.js';

/** Options of {@link doctor}. */
export interface DoctorOptions {
  /** Longest the connection attempt, and then each query, may take, in ms. Default 5000. */
  timeoutMs?: number;
  /** Application instances, each with one pool, for the budget; integer >= 1. Default 1. */
  instances?: number;
  /** Kept connections per pool (`DB_POOL_SIZE`); integer >= 1. Default 10 (the pool's default). */
  poolSize?: number;
  /** Burst connections per pool (`DB_MAX_OVERFLOW`); integer >= 0. Default 0. */
  maxOverflow?: number;
  /** Slots to keep free on top of the server's reserves (administration, migrations). Default 0. */
  reserved?: number;
  /** An active query running longer than this (seconds) is listed and reported. Default 30. */
  longQuerySeconds?: number;
  /**
   * Every session idle in a transaction is listed; one idle in it longer than this (seconds) is
   * reported as a problem. Default 60.
   */
  idleInTransactionSeconds?: number;
  /** Every lock wait is listed; one waiting longer than this (seconds) is reported. Default 5. */
  lockWaitSeconds?: number;
  /** `application_name` of the doctor's own session. Default `'steadfast-doctor'`. */
  applicationName?: string;
}

/** One server session, from `pg_stat_activity`. Durations are in seconds; null when unknown. */
export interface SessionInfo {
  pid: number;
  database: string | null;
  user: string | null;
  applicationName: string;
  clientAddress: string | null;
  /** `active`, `idle`, `idle in transaction`, ...; null when the role may not see it. */
  state: string | null;
  waitEventType: string | null;
  waitEvent: string | null;
  /** Time since the state last changed (for a session idle in transaction: how long it has idled). */
  stateSeconds: number | null;
  /** Time since the current (or last) query started. */
  querySeconds: number | null;
  /** Time since the open transaction started; null outside a transaction. */
  transactionSeconds: number | null;
  /** The current (or last) statement, at most 500 characters, with `PASSWORD '...'` literals masked. */
  query: string | null;
  /** Sessions holding the lock this one waits for (`pg_blocking_pids`). */
  blockedBy: number[];
}

/** Connections per database, application and state. */
export interface ApplicationConnections {
  database: string | null;
  applicationName: string;
  state: string | null;
  count: number;
}

export type ProblemSeverity = 'error' | 'warning' | 'info';

/** Something the report found. `error` and `warning` make the report not ok; `info` does not. */
export interface DoctorProblem {
  severity: ProblemSeverity;
  /** Stable identifier: `connect-failed`, `budget-exceeded`, `connection-limit`, `near-capacity`, `idle-in-transaction`, `long-running-query`, `lock-wait`, `query-failed`, `hidden-sessions`. */
  code: string;
  message: string;
}

/** The outcome of {@link doctor}. Durations in ms unless the name says seconds. */
export interface DoctorReport {
  /** The connection string with its password replaced by `***`. */
  target: string;
  /** When the check started (ISO 8601). */
  checkedAt: string;
  connected: boolean;
  /** Time to open the connection (DNS, TCP, TLS, startup, authentication), in ms. */
  connectMs: number | null;
  /** One `SELECT 1` round trip after connecting, in ms. */
  roundTripMs: number | null;
  /** Why connecting failed; `code` is a SQLSTATE or a Node error code when there is one. */
  connectError: { code: string | undefined; message: string } | null;
  server: ServerConnectionLimits | null;
  /** The pools' connection budget against `max_connections`. */
  budget: ConnectionBudget | null;
  /** Client sessions other than the doctor's own. */
  connections: {
    total: number;
    /** Sessions of other roles whose state this role may not see. */
    hidden: number;
    byApplication: ApplicationConnections[];
  } | null;
  /** Sessions idle inside a transaction (including aborted ones), longest first. */
  idleInTransaction: SessionInfo[];
  /** Active queries running longer than `longQuerySeconds`, longest first. */
  longRunning: SessionInfo[];
  /** Sessions waiting for a lock, longest first. */
  waitingOnLocks: SessionInfo[];
  thresholds: { longQuerySeconds: number; idleInTransactionSeconds: number; lockWaitSeconds: number };
  problems: DoctorProblem[];
  /** Connected, and no problem of severity `error` or `warning`. */
  ok: boolean;
}

/** Most sessions listed per section; the counts in the problems cover all of them. */
const LIST_LIMIT = 50;
/** Share of the usable slots in use at which the report warns. */
const NEAR_CAPACITY = 0.8;

/**
 * One snapshot of the client sessions, without the doctor's own. The groupings of the usual diagnostic
 * queries (connections per application and state; idle transactions by duration; long queries; lock
 * waits) are made from it, so that every section describes the same instant.
 */
const ACTIVITY_SQL = `
SELECT pid,
       datname,
       usename,
       coalesce(application_name, '') AS application_name,
       host(client_addr) AS client_addr,
       state,
       wait_event_type,
       wait_event,
       extract(epoch FROM now() - state_change)::float8 AS state_seconds,
       extract(epoch FROM now() - query_start)::float8 AS query_seconds,
       extract(epoch FROM now() - xact_start)::float8 AS xact_seconds,
       left(query, 500) AS query,
       CASE WHEN wait_event_type = 'Lock' THEN pg_blocking_pids(pid) ELSE '{}'::int[] END AS blocked_by
  FROM pg_stat_activity
 WHERE backend_type = 'client backend'
   AND pid <> pg_backend_pid()`;

interface Secrets {
  values: string[];
}

/** The password in its raw and decoded forms, to remove it from any text the report carries. */
function secretsOf(connectionString: string): Secrets {
  const values = new Set<string>();
  try {
    const url = new URL(connectionString);
    for (const raw of [url.password, url.searchParams.get('password') ?? '']) {
      if (raw === '') continue;
      values.add(raw);
      try {
        values.add(decodeURIComponent(raw));
      } catch {
        // Left encoded only; parseConnectionString has already rejected bad encodings.
      }
    }
  } catch {
    // Not a URL (a socket path): it has no password.
  }
  return { values: [...values].filter((v) => v.length > 0) };
}

function scrub(text: string, secrets: Secrets): string {
  let out = text;
  for (const secret of secrets.values) out = out.split(secret).join('***');
  return out;
}

function maskPasswords(query: string | null): string | null {
  return query === null ? null : query.replace(/(password\s+)'(?:[^']|'')*'/gi, "$1'***'");
}

function seconds(value: unknown): number | null {
  if (value === null || value === undefined) return null;
  const n = Number(value);
  return Number.isFinite(n) ? Math.max(0, Math.round(n * 1000) / 1000) : null;
}

function toSession(row: Record<string, unknown>): SessionInfo {
  return {
    pid: Number(row.pid),
    database: (row.datname as string | null) ?? null,
    user: (row.usename as string | null) ?? null,
    applicationName: String(row.application_name ?? ''),
    clientAddress: (row.client_addr as string | null) ?? null,
    state: (row.state as string | null) ?? null,
    waitEventType: (row.wait_event_type as string | null) ?? null,
    waitEvent: (row.wait_event as string | null) ?? null,
    stateSeconds: seconds(row.state_seconds),
    querySeconds: seconds(row.query_seconds),
    transactionSeconds: seconds(row.xact_seconds),
    query: maskPasswords((row.query as string | null) ?? null),
    blockedBy: Array.isArray(row.blocked_by) ? row.blocked_by.map(Number) : [],
  };
}

function byLongest(key: 'stateSeconds' | 'querySeconds') {
  return (a: SessionInfo, b: SessionInfo) => (b[key] ?? 0) - (a[key] ?? 0);
}

function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}

function describeSession(s: SessionInfo): string {
  return `pid ${s.pid} (${s.user ?? '?'}@${s.database ?? '?'}${s.applicationName ? `, ${s.applicationName}` : ''})`;
}

/**
 * Checks a server: connection time, version, `max_connections` against the budget of `instances` pools
 * of `poolSize + maxOverflow`, and the sessions idle in a transaction, running long, or waiting on
 * locks. Never throws for a server problem: an unreachable server gives a report with
 * `connected: false` and the reason; a query that fails is reported as a `query-failed` problem.
 *
 * The connection string may leave parts to pg's `PG*` environment variables (`PGPASSWORD`, ...).
 *
 * @throws InvalidOptionError when `connectionString` is not a postgres URL (shown without its password),
 *   or an option is out of range.
 */
export async function doctor(connectionString: string, options: DoctorOptions = {}): Promise<DoctorReport> {
  const info = parseConnectionString(connectionString, 'connectionString');
  const secrets = secretsOf(connectionString);
  // Checked before connecting: a bad option must not surface later as a failed diagnostic.
  const timeoutMs = durationOption('timeoutMs', options.timeoutMs, 5_000, 1);
  integerOption('instances', options.instances, 1, 1);
  integerOption('poolSize', options.poolSize, 10, 1);
  integerOption('maxOverflow', options.maxOverflow, 0, 0);
  integerOption('reserved', options.reserved, 0, 0);
  const thresholds = {
    longQuerySeconds: secondsOption('longQuerySeconds', options.longQuerySeconds, 30),
    idleInTransactionSeconds: secondsOption('idleInTransactionSeconds', options.idleInTransactionSeconds, 60),
    lockWaitSeconds: secondsOption('lockWaitSeconds', options.lockWaitSeconds, 5),
  };
  const report: DoctorReport = {
    target: info.redacted,
    checkedAt: new Date().toISOString(),
    connected: false,
    connectMs: null,
    roundTripMs: null,
    connectError: null,
    server: null,
    budget: null,
    connections: null,
    idleInTransaction: [],
    longRunning: [],
    waitingOnLocks: [],
    thresholds,
    problems: [],
    ok: false,
  };
  const problem = (severity: ProblemSeverity, code: string, message: string) =>
    report.problems.push({ severity, code, message: scrub(message, secrets) });

  const client = new pg.Client({
    connectionString,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: options.applicationName ?? 'steadfast-doctor',
  });
  // A server going away between queries rejects the query; the 'error' event must not crash the process.
  client.on('error', () => undefined);
  const started = performance.now();
  try {
    await client.connect();
  } catch (error) {
    const message = scrub(String((error as Error)?.message ?? error), secrets);
    report.connectError = { code: errorCode(error), message };
    problem('error', 'connect-failed', `cannot connect to ${report.target}: ${message}`);
    await client.end().catch(() => undefined);
    return report;
  }
  report.connected = true;
  report.connectMs = round(performance.now() - started);
  try {
    const ping = performance.now();
    await client.query('SELECT 1');
    report.roundTripMs = round(performance.now() - ping);
    await inspect(client, report, options, thresholds, problem);
  } catch (error) {
    problem(
      'error',
      'query-failed',
      `a diagnostic query failed: ${(error as Error)?.message ?? String(error)}`,
    );
  } finally {
    await client.end().catch(() => undefined);
  }
  report.ok = report.connected && !report.problems.some((p) => p.severity !== 'info');
  return report;
}

function secondsOption(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new InvalidOptionError(name, `got ${String(value)}, expected seconds >= 0`);
  }
  return value;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

async function inspect(
  client: pg.Client,
  report: DoctorReport,
  options: DoctorOptions,
  thresholds: DoctorReport['thresholds'],
  problem: (severity: ProblemSeverity, code: string, message: string) => void,
): Promise<void> {
  const server = await readServerLimits(client);
  report.server = server;

  const instances = options.instances ?? 1;
  const poolSize = options.poolSize ?? 10;
  const maxOverflow = options.maxOverflow ?? 0;
  const budget = serverBudget(server, { instances, poolSize, maxOverflow, reserved: options.reserved });
  report.budget = budget;
  if (!budget.ok) problem('error', 'budget-exceeded', budget.message);
  for (const message of connectionLimitProblems(server, instances, poolSize + maxOverflow)) {
    problem('error', 'connection-limit', message);
  }

  const { rows } = await client.query(ACTIVITY_SQL);
  const sessions = rows.map(toSession);
  const groups = new Map<string, ApplicationConnections>();
  let hidden = 0;
  for (const s of sessions) {
    // A role without pg_read_all_stats sees other roles' sessions with their state and query withheld.
    if (s.state === null) hidden++;
    const key = JSON.stringify([s.database, s.applicationName, s.state]);
    const group = groups.get(key);
    if (group) group.count++;
    else
      groups.set(key, { database: s.database, applicationName: s.applicationName, state: s.state, count: 1 });
  }
  report.connections = {
    total: sessions.length,
    hidden,
    byApplication: [...groups.values()].sort(
      (a, b) => b.count - a.count || (a.applicationName < b.applicationName ? -1 : 1),
    ),
  };
  // The doctor's own session counts too: it takes a slot like any other.
  const inUse = sessions.length + 1;
  if (inUse >= server.usableConnections * NEAR_CAPACITY) {
    problem(
      'warning',
      'near-capacity',
      `${inUse} of ${server.usableConnections} usable connection slots are in use (max_connections ${server.maxConnections} minus reserved slots)`,
    );
  }
  if (hidden > 0) {
    problem(
      'info',
      'hidden-sessions',
      `${plural(hidden, 'session')} of other roles could not be inspected (grant pg_read_all_stats to see them)`,
    );
  }

  const idle = sessions
    .filter((s) => s.state === 'idle in transaction' || s.state === 'idle in transaction (aborted)')
    .sort(byLongest('stateSeconds'));
  report.idleInTransaction = idle.slice(0, LIST_LIMIT);
  const stale = idle.filter((s) => (s.stateSeconds ?? 0) > thresholds.idleInTransactionSeconds);
  if (stale.length > 0) {
    problem(
      'warning',
      'idle-in-transaction',
      `${plural(stale.length, 'session')} idle in a transaction for more than ${thresholds.idleInTransactionSeconds} s ` +
        `(longest: ${describeSession(stale[0]!)}, ${stale[0]!.stateSeconds} s): each holds a connection and its locks ` +
        `(a connection not released, or a transaction left open)`,
    );
  }

  const long = sessions
    .filter((s) => s.state === 'active' && (s.querySeconds ?? 0) > thresholds.longQuerySeconds)
    .sort(byLongest('querySeconds'));
  report.longRunning = long.slice(0, LIST_LIMIT);
  if (long.length > 0) {
    problem(
      'warning',
      'long-running-query',
      `${plural(long.length, 'query', 'queries')} running longer than ${thresholds.longQuerySeconds} s ` +
        `(longest: ${describeSession(long[0]!)}, ${long[0]!.querySeconds} s)`,
    );
  }

  const waiting = sessions.filter((s) => s.waitEventType === 'Lock').sort(byLongest('stateSeconds'));
  report.waitingOnLocks = waiting.slice(0, LIST_LIMIT);
  const stuck = waiting.filter((s) => (s.stateSeconds ?? 0) > thresholds.lockWaitSeconds);
  if (stuck.length > 0) {
    problem(
      'warning',
      'lock-wait',
      `${plural(stuck.length, 'session')} waiting on a lock for more than ${thresholds.lockWaitSeconds} s ` +
        `(longest: ${describeSession(stuck[0]!)}, blocked by ${stuck[0]!.blockedBy.join(', ') || 'unknown'})`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// Text report

function ms(value: number | null): string {
  return value === null ? '?' : `${value.toFixed(1)} ms`;
}

function secs(value: number | null): string {
  return value === null ? '?' : `${value.toFixed(1)} s`;
}

function oneLine(query: string | null, width = 100): string {
  if (query === null) return '(query not visible)';
  const flat = query.replace(/\s+/g, ' ').trim();
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat;
}

function sessionLines(sessions: SessionInfo[], detail: (s: SessionInfo) => string): string[] {
  return sessions.flatMap((s) => [
    `  pid ${s.pid}  ${s.user ?? '?'}@${s.database ?? '?'}  app ${JSON.stringify(s.applicationName)}` +
      `${s.clientAddress ? `  from ${s.clientAddress}` : ''}  ${detail(s)}`,
    `    ${oneLine(s.query)}`,
  ]);
}

/** The report as readable text, one section per finding, ending with the problems and the verdict. */
export function formatDoctorReport(report: DoctorReport): string {
  const lines: string[] = [`steadfast doctor: ${report.target}`];
  if (!report.connected) {
    lines.push(`Cannot connect: ${report.connectError?.message ?? 'unknown error'}`);
    if (report.connectError?.code) lines.push(`  code: ${report.connectError.code}`);
    lines.push('', 'Result: cannot connect');
    return `${lines.join('\n')}\n`;
  }
  lines.push(`Connected in ${ms(report.connectMs)} (round trip ${ms(report.roundTripMs)})`);
  const s = report.server;
  if (s) {
    lines.push(
      `Server: PostgreSQL ${s.serverVersion} (${s.serverVersionNum}), database ${s.database}, role ${s.user}${s.isSuperuser ? ' (superuser)' : ''}`,
      `Connection slots: max_connections ${s.maxConnections}, ${s.superuserReservedConnections} reserved for superusers` +
        `${s.reservedConnections ? `, ${s.reservedConnections} reserved_connections` : ''}, ${s.clientConnections} client sessions open`,
    );
    const limits = [
      s.roleConnectionLimit >= 0 ? `role limit ${s.roleConnectionLimit}` : '',
      s.databaseConnectionLimit >= 0 ? `database limit ${s.databaseConnectionLimit}` : '',
    ].filter(Boolean);
    if (limits.length > 0) lines.push(`Connection limits: ${limits.join(', ')}`);
  }
  if (report.budget) lines.push(`Budget: ${report.budget.message}`);

  const c = report.connections;
  if (c) {
    lines.push('', `Connections by database / application / state (${plural(c.total, 'other session')}):`);
    if (c.byApplication.length === 0) lines.push('  none');
    for (const g of c.byApplication) {
      lines.push(
        `  ${String(g.count).padStart(5)}  ${g.database ?? '?'} / ${g.applicationName || '(no name)'} / ${g.state ?? '(not visible)'}`,
      );
    }
  }
  const t = report.thresholds;
  lines.push('', `Idle in transaction (${report.idleInTransaction.length}):`);
  if (report.idleInTransaction.length === 0) lines.push('  none');
  lines.push(
    ...sessionLines(
      report.idleInTransaction,
      (x) =>
        `idle ${secs(x.stateSeconds)}, transaction open ${secs(x.transactionSeconds)}` +
        `${x.state === 'idle in transaction (aborted)' ? ' (aborted)' : ''}`,
    ),
  );
  lines.push('', `Long-running queries (> ${t.longQuerySeconds} s) (${report.longRunning.length}):`);
  if (report.longRunning.length === 0) lines.push('  none');
  lines.push(...sessionLines(report.longRunning, (x) => `running ${secs(x.querySeconds)}`));
  lines.push('', `Waiting on locks (${report.waitingOnLocks.length}):`);
  if (report.waitingOnLocks.length === 0) lines.push('  none');
  lines.push(
    ...sessionLines(
      report.waitingOnLocks,
      (x) =>
        `waiting ${secs(x.stateSeconds)} on ${x.waitEvent ?? 'a lock'}, blocked by ${x.blockedBy.join(', ') || '?'}`,
    ),
  );

  lines.push('');
  if (report.problems.length === 0) lines.push('Problems: none');
  else {
    lines.push('Problems:');
    for (const p of report.problems) lines.push(`  ${p.severity.toUpperCase()} ${p.code}: ${p.message}`);
  }
  const count = report.problems.filter((p) => p.severity !== 'info').length;
  lines.push('', `Result: ${report.ok ? 'OK' : plural(count, 'problem')}`);
  return `${lines.join('\n')}\n`;
}
