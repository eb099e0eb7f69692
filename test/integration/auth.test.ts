/**
 * Authentication failures against a real PostgreSQL (SCRAM-SHA-256, `log_connections = on`): a wrong
 * password under load must give every caller a typed error promptly without turning into a connection
 * storm the server has to log (or an account lockout policy would count), and a pool whose password
 * comes from an async function must recover on its own once the password is rotated. A missing database
 * and a role that may not log in are fatal too. Counts of attempts come from the server's own log.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConnectFatalError, ErrorCodes, Pool, type PoolConfig } from '../../src/index.js';
import { runOpenLoop } from '../../testbed/load.js';
import { PostgresServer, SENTINEL_MARKER } from '../../testbed/postgres.js';

/** Wrong passwords carry the redaction marker too: printing one fails the run. */
const WRONG_PASSWORD = `wrong-${SENTINEL_MARKER}-password`;
const AUTH_FAILED = /FATAL:\s+password authentication failed for user/;

let server: PostgresServer;
const pools: Pool[] = [];
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

function newPool(config: PoolConfig): Pool {
  const pool = new Pool(config);
  pools.push(pool);
  return pool;
}

/** Milliseconds since the epoch of each server log line matching `pattern` after byte `offset`. */
async function logTimes(offset: number, pattern: RegExp): Promise<number[]> {
  const log = (await server.readLog()).slice(offset);
  const times: number[] = [];
  for (const line of log.split('\n')) {
    if (!pattern.test(line)) continue;
    // log_line_prefix starts with %m: "2026-01-01 12:00:00.123 UTC".
    const stamp = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d{3}) UTC/.exec(line);
    if (stamp) times.push(Date.parse(`${stamp[1]}T${stamp[2]}Z`));
  }
  return times;
}

/** Counts per whole second from the first time, over `seconds` seconds. */
function perSecond(times: number[], from: number, seconds: number): number[] {
  const buckets = Array.from({ length: seconds }, () => 0);
  for (const t of times) {
    const i = Math.floor((t - from) / 1000);
    if (i >= 0 && i < seconds) buckets[i]!++;
  }
  return buckets;
}

/** Client-side TCP sockets of this machine connected to `port` (ESTABLISHED), from /proc/net/tcp. */
function socketsTo(port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .filter((line) => {
      const fields = line.trim().split(/\s+/);
      return fields[2]?.endsWith(hex) === true && fields[3] === '01';
    }).length;
}

/** Backends of `server` still in the authentication phase (they hold a connection slot), from /proc. */
function backendsAuthenticating(target: PostgresServer): number {
  const postmaster = Number.parseInt(readFileSync(join(target.dataDir, 'postmaster.pid'), 'utf8'), 10);
  let count = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== postmaster) continue;
      if (/ authentication\b/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'))) count++;
    } catch {
      // The process ended meanwhile.
    }
  }
  return count;
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (error: unknown) => error,
  );
}

function expectFatal(error: unknown, sqlState: string): void {
  expect(error).toBeInstanceOf(ConnectFatalError);
  expect((error as ConnectFatalError).code).toBe(ErrorCodes.CONNECT_FATAL);
  expect(((error as ConnectFatalError).cause as { code?: string }).code).toBe(sqlState);
}

/** Time of a call that must fail, and its error. */
async function timedFailure(promise: Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = performance.now();
  const error = await failure(promise);
  return { error, ms: performance.now() - started };
}

beforeAll(async () => {
  server = await PostgresServer.start({ settings: { log_connections: true } });
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
  expect(uncaught).toEqual([]);
});

afterAll(async () => {
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
  await server?.destroy();
});

describe('wrong password (28P01)', () => {
  it('under 200 calls/s for 5 s: a typed error for every caller, and a bounded number of attempts', async () => {
    const pool = newPool({
      ...server.clientConfig(),
      password: WRONG_PASSWORD,
      application_name: 'auth-load',
    });
    const offset = (await server.readLog()).length;
    const startedAt = Date.now();

    const first = await timedFailure(pool.query('SELECT 1'));
    expectFatal(first.error, '28P01');
    expect(first.ms).toBeLessThan(1_000);
    expect((first.error as Error).message).toContain('password authentication failed');
    expect((first.error as Error).message).not.toContain(WRONG_PASSWORD);

    const report = await runOpenLoop({
      ratePerSec: 200,
      durationMs: 5_000,
      request: () => pool.query('SELECT 1'),
      settleTimeoutMs: 10_000,
    });
    await sleep(200); // let the server flush its log
    const failures = await logTimes(offset, AUTH_FAILED);
    const buckets = perSecond(failures, startedAt, 6);
    const attempts = pool.stats().counters.connectsStarted;
    console.info(
      `[auth] wrong password, 200 calls/s for 5 s: ${report.sent} calls, ${report.failed} failed ` +
        `(${JSON.stringify(report.failuresByCode)}); server saw ${failures.length} failed authentications ` +
        `(per second: ${buckets.join(', ')}); pool started ${attempts} attempts; caller latency ms ` +
        `p50 ${report.latencyMs.p50.toFixed(0)}, p99 ${report.latencyMs.p99.toFixed(0)}, max ${report.latencyMs.max.toFixed(0)}`,
    );

    expect(report.sent).toBe(1_000);
    expect(report.failed).toBe(1_000);
    for (const outcome of report.outcomes) expectFatal(outcome.error, '28P01');
    // Promptly: no caller waits anywhere near the acquire deadline (30 s); the longest wait is one backoff
    // step (connectBackoffMaxMs, 2 s) plus a handshake.
    expect(report.latencyMs.max).toBeLessThan(3_000);
    // The server saw exactly the attempts the pool made (each one a failed authentication)...
    expect(failures.length).toBe(attempts);
    // ...and far fewer than one per call (pg.Pool makes ~200/s here). The backoff schedule gives 13-25 in
    // 5 s (fake-clock simulation, 200 seeds; measured 16-21 here), so 35 leaves room for jitter.
    expect(failures.length).toBeLessThanOrEqual(35);
  });

  // FAILS today: the first second after the failure sees ~10 failed authentications on the server (the
  // backoff after a fatal error starts at 10 ms and doubles; two attempts may run at once), so "a handful
  // per second" holds on average but not in every second. See the report: src/engine/engine.ts
  // #onConnectFailed treats fatal errors with the transient backoff.
  it('at most 5 failed authentications in any second', async () => {
    const pool = newPool({ ...server.clientConfig(), password: WRONG_PASSWORD, logger: false });
    const offset = (await server.readLog()).length;
    const startedAt = Date.now();
    await runOpenLoop({
      ratePerSec: 200,
      durationMs: 3_000,
      request: () => pool.query('SELECT 1'),
      settleTimeoutMs: 10_000,
    });
    await sleep(200);
    const buckets = perSecond(await logTimes(offset, AUTH_FAILED), startedAt, 4);
    expect(Math.max(...buckets)).toBeLessThanOrEqual(5);
  });

  // FAILS today: a caller that arrives after the pool has learnt the password is wrong waits for the next
  // attempt, which the backoff delays by up to connectBackoffMaxMs (2 s): p50 ~0.8 s, p99 ~1.9 s measured.
  // "Promptly" should mean at once with the error already known (see the report).
  it('callers that arrive after a fatal error get it promptly (p95 under 250 ms)', async () => {
    const pool = newPool({ ...server.clientConfig(), password: WRONG_PASSWORD });
    expectFatal(await failure(pool.query('SELECT 1')), '28P01');
    const report = await runOpenLoop({
      ratePerSec: 200,
      durationMs: 2_000,
      request: () => pool.query('SELECT 1'),
      settleTimeoutMs: 10_000,
    });
    expect(report.failed).toBe(report.sent);
    expect(report.latencyMs.p95).toBeLessThan(250);
  });

  it('recovers on its own after the password is rotated, with an async password function', async () => {
    const role = pg.escapeIdentifier(server.user);
    // The application's secret store: the pool asks it on every new connection.
    let stored = server.password;
    let asked = 0;
    const pool = newPool({
      ...server.clientConfig(),
      password: async () => {
        asked++;
        return stored;
      },
      application_name: 'auth-rotation',
    });
    try {
      expect((await pool.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);

      // The database rotates the password first; the secret store lags behind.
      const rotated = `rotated-${SENTINEL_MARKER}-${Date.now()}`;
      await server.query(`ALTER ROLE ${role} PASSWORD ${pg.escapeLiteral(rotated)}`);
      await server.terminateBackends({ applicationName: 'auth-rotation' });
      await sleep(100);
      const error = await failure(pool.query('SELECT 1'));
      expectFatal(error, '28P01');

      // The store catches up. Nothing is done to the pool: the next attempt reads the new secret.
      stored = rotated;
      const askedBefore = asked;
      const started = performance.now();
      let recovered: pg.QueryResult | undefined;
      while (recovered === undefined && performance.now() - started < 10_000) {
        recovered = await pool.query('SELECT 1 AS ok').catch(() => undefined);
        if (recovered === undefined) await sleep(50);
      }
      const recoveryMs = performance.now() - started;
      console.info(`[auth] recovered ${recoveryMs.toFixed(0)} ms after the secret store was updated`);
      expect(recovered?.rows).toEqual([{ ok: 1 }]);
      expect(asked).toBeGreaterThan(askedBefore);
      // Within one backoff step (2 s) plus a handshake.
      expect(recoveryMs).toBeLessThan(3_000);
    } finally {
      await server.query(`ALTER ROLE ${role} PASSWORD ${pg.escapeLiteral(server.password)}`);
    }
  });
});

describe('other fatal connect errors', () => {
  it('a missing database (3D000) fails at once with a typed error', async () => {
    const pool = newPool({ ...server.clientConfig(), database: 'no_such_database' });
    const { error, ms } = await timedFailure(pool.query('SELECT 1'));
    expectFatal(error, '3D000');
    expect(ms).toBeLessThan(1_000);
    expect(pool.stats().counters.connectsStarted).toBe(1);
    // Concurrent callers share the answer.
    const many = await Promise.all(Array.from({ length: 20 }, () => failure(pool.query('SELECT 1'))));
    for (const e of many) expectFatal(e, '3D000');
  });

  it('a role that may not log in (28000) fails at once with a typed error', async () => {
    await server.query(`DROP ROLE IF EXISTS no_login; CREATE ROLE no_login NOLOGIN PASSWORD 'x-nologin'`);
    const pool = newPool({ ...server.clientConfig(), user: 'no_login', password: 'x-nologin' });
    const { error, ms } = await timedFailure(pool.query('SELECT 1'));
    expectFatal(error, '28000');
    expect(ms).toBeLessThan(1_000);
  });
});

describe('connectionString plus a password function (node-postgres bug)', () => {
  /** The URL carries no password, so the function is meant to supply it. */
  const passwordlessUrl = () =>
    `postgres://${encodeURIComponent(server.user)}@${server.host}:${server.port}/${server.database}`;

  it('every attempt fails client-side in SASL and steadfast leaves no socket or half-authenticated backend behind', async () => {
    // The detector works: a bare pg.Client leaks its socket on this failure.
    const bare = new pg.Client({
      connectionString: passwordlessUrl(),
      password: async () => server.password,
    });
    bare.on('error', () => undefined);
    const bareError = await failure(bare.connect());
    expect((bareError as Error).message).toMatch(/^SASL: /);
    await sleep(100);
    expect(socketsTo(server.port)).toBeGreaterThanOrEqual(1);
    expect(backendsAuthenticating(server)).toBeGreaterThanOrEqual(1);
    (bare as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    await sleep(200);
    const baseline = socketsTo(server.port);

    // steadfast hands the function to each client itself, so this combination connects; to fail in
    // SASL the same way, the function here returns something that is not a string.
    const pool = newPool({
      connectionString: passwordlessUrl(),
      password: async () => 42 as unknown as string,
    });
    const report = await runOpenLoop({
      ratePerSec: 100,
      durationMs: 2_000,
      request: () => pool.query('SELECT 1'),
      settleTimeoutMs: 10_000,
    });
    expect(report.failed).toBe(report.sent);
    for (const outcome of report.outcomes) {
      expect(outcome.error).toBeInstanceOf(ConnectFatalError);
      expect(((outcome.error as ConnectFatalError).cause as Error).message).toMatch(
        /SASL|password must be a string/i,
      );
    }
    await sleep(200);
    expect(socketsTo(server.port)).toBe(baseline);
    expect(backendsAuthenticating(server)).toBe(0);
  });

  // pg copies the connection string's empty password over the explicit `password`
  // (pg/lib/connection-parameters.js: Object.assign({}, config, parse(connectionString))), so with pg
  // alone the function is never called; steadfast sets it on each client (src/pg/config.ts, driver.ts).
  it('the password function is used when the connection string has no password', async () => {
    const pool = newPool({ connectionString: passwordlessUrl(), password: async () => server.password });
    expect((await pool.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
  });
});
