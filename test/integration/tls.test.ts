/**
 * TLS against a real PostgreSQL with `ssl = on` and a throwaway CA (testbed/tls.ts): verification that
 * succeeds, verification that fails (wrong CA, wrong host name) as a typed error with no retry storm,
 * pg 8's meaning of `sslmode`, and proof from the server side (`pg_stat_ssl`) that a client that asked for
 * verification never ends up on a plain-text session.
 *
 * What pg 8.23 (pg-connection-string 2.x) does with `sslmode`, as these tests pin down:
 * - `prefer`, `require` and `verify-ca` are aliases of `verify-full` (with a one-time process warning):
 *   the certificate chain and the host name are verified, against `sslrootcert` or else Node's default
 *   CA store. So `sslmode=require` without `sslrootcert` fails against a private CA, and nothing ever
 *   falls back to plain text.
 * - `no-verify` (pg only): TLS without any verification.
 * - `uselibpqcompat=true` gives libpq's meanings: `require` encrypts without verifying (with
 *   `sslrootcert` it verifies the chain but not the host name, like `verify-ca`), `verify-ca` verifies the
 *   chain only, `verify-full` the chain and the host name. `prefer` does not verify, and unlike libpq it
 *   does not fall back to plain text either: against a server without TLS it fails.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConnectFatalError, ErrorCodes, Pool, type PoolConfig } from '../../src/index.js';
import { PostgresServer } from '../../testbed/postgres.js';
import { type ServerCertificate, sharedTlsMaterial, type TlsMaterial } from '../../testbed/tls.js';

let material: TlsMaterial;
/** TLS with the shared certificate for 127.0.0.1 and localhost. */
let server: PostgresServer;
/** TLS with a certificate (from the same CA) for another host name only. */
let wrongHostServer: PostgresServer;
/** ssl = off. */
let plainServer: PostgresServer;
let wrongHostCert: ServerCertificate;

const pools: Pool[] = [];
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

function newPool(config: PoolConfig): Pool {
  const pool = new Pool({ logger: false, ...config });
  pools.push(pool);
  return pool;
}

/** The server's view of the session the query runs on. */
async function sslOfBackend(pool: Pool): Promise<{ ssl: boolean; version: string | null }> {
  const result = await pool.query('SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
  return result.rows[0];
}

/** A connection string for `target` with the given query parameters (the password is percent-encoded). */
function url(target: PostgresServer, params: string, host: string = target.host): string {
  const base = target.connectionString.replace(`@${target.host}:`, `@${host}:`);
  return `${base}?${params}`;
}

interface Hammered {
  errors: unknown[];
  /** Connection attempts the pool started during the run. */
  attempts: number;
  /** How long each failed call took, in ms. */
  latencies: number[];
}

/**
 * Keeps `concurrency` queries in flight for `ms` (each caller queries again 5 ms after its query settles)
 * and counts the pool's connection attempts.
 */
async function hammer(pool: Pool, ms: number, concurrency = 20): Promise<Hammered> {
  const errors: unknown[] = [];
  const latencies: number[] = [];
  const before = pool.stats().counters.connectsStarted;
  const end = performance.now() + ms;
  const caller = async () => {
    while (performance.now() < end) {
      const started = performance.now();
      try {
        await pool.query('SELECT 1');
      } catch (error) {
        errors.push(error);
        latencies.push(performance.now() - started);
      }
      await sleep(5);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, caller));
  return { errors, attempts: pool.stats().counters.connectsStarted - before, latencies };
}

/** The error is the pool's typed fatal connect error, wrapping an error with `causeCode`. */
function expectFatal(error: unknown, causeCode: string | RegExp): void {
  expect(error).toBeInstanceOf(ConnectFatalError);
  expect((error as ConnectFatalError).code).toBe(ErrorCodes.CONNECT_FATAL);
  const cause = (error as ConnectFatalError).cause as { code?: string; message?: string };
  if (typeof causeCode === 'string') expect(cause.code).toBe(causeCode);
  else expect(cause.message).toMatch(causeCode);
}

/** The first call fails fast with the fatal error; every call fails with it. */
async function expectFastFatal(pool: Pool, causeCode: string | RegExp): Promise<void> {
  const started = performance.now();
  const error = await pool.query('SELECT 1').then(
    () => undefined,
    (e: unknown) => e,
  );
  const elapsed = performance.now() - started;
  expectFatal(error, causeCode);
  // "At once": one handshake, far from the 30 s acquire deadline.
  expect(elapsed).toBeLessThan(2_000);
  expect(pool.stats().counters.connectsStarted).toBe(1);
  expect(pool.stats().counters.connectsSucceeded).toBe(0);
}

beforeAll(async () => {
  material = await sharedTlsMaterial();
  wrongHostCert = await material.issue(['db.wrong-host.example']);
  [server, wrongHostServer, plainServer] = await Promise.all([
    PostgresServer.start({ tls: true }),
    PostgresServer.start({ tls: wrongHostCert }),
    PostgresServer.start(),
  ]);
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
  await Promise.all([server?.destroy(), wrongHostServer?.destroy(), plainServer?.destroy()]);
});

describe('TLS verification', () => {
  it('verify-full with the right CA and host name connects over TLS (options and connection string)', async () => {
    const byOptions = newPool({ ...server.clientConfig(), ssl: { ca: material.ca.pem } });
    expect(await sslOfBackend(byOptions)).toEqual({
      ssl: true,
      version: expect.stringMatching(/^TLSv1\.[23]$/),
    });

    const byName = newPool({ ...server.clientConfig(), host: 'localhost', ssl: { ca: material.ca.pem } });
    expect((await sslOfBackend(byName)).ssl).toBe(true);

    const byUrl = newPool({
      connectionString: url(server, `sslmode=verify-full&sslrootcert=${material.ca.certFile}`, 'localhost'),
    });
    expect((await sslOfBackend(byUrl)).ssl).toBe(true);
  });

  it('a wrong CA fails at once with ERR_STEADFAST_CONNECT_FATAL wrapping the certificate error', async () => {
    const pool = newPool({ ...server.clientConfig(), ssl: { ca: material.otherCa.pem } });
    await expectFastFatal(pool, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });

  it('a certificate for another host name fails at once the same way', async () => {
    const pool = newPool({
      ...wrongHostServer.clientConfig(),
      host: 'localhost',
      ssl: { ca: material.ca.pem },
    });
    await expectFastFatal(pool, 'ERR_TLS_CERT_ALTNAME_INVALID');
    // The chain itself is fine: only the host name check refused it (libpq's verify-ca would accept it).
    const verifyCa = newPool({
      connectionString: url(
        wrongHostServer,
        `uselibpqcompat=true&sslmode=verify-ca&sslrootcert=${material.ca.certFile}`,
        'localhost',
      ),
    });
    expect((await sslOfBackend(verifyCa)).ssl).toBe(true);
  });

  it('every caller gets the certificate error, and the pool does not dial in a loop', async () => {
    // Verification failures are fatal: callers are told at once. The engine still backs off between
    // attempts as it would for a transient failure, starting at 10 ms, so under constant demand the
    // number of handshakes grows with the backoff schedule; this test bounds it loosely (see the next).
    for (const [target, ssl, code] of [
      [server, { ca: material.otherCa.pem }, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'],
      [wrongHostServer, { ca: material.ca.pem }, 'ERR_TLS_CERT_ALTNAME_INVALID'],
    ] as const) {
      const pool = newPool({ ...target.clientConfig(), host: 'localhost', ssl });
      const run = await hammer(pool, 2_000);
      expect(run.errors.length).toBeGreaterThan(20);
      for (const error of run.errors) expectFatal(error, code);
      expect(Math.max(...run.latencies)).toBeLessThan(2_500);
      expect(run.attempts).toBeLessThanOrEqual(30);
      expect(pool.stats().counters.connectsSucceeded).toBe(0);
    }
  });

  // FAILS today: 20 callers that keep retrying for 2 s make the pool start ~10-20 TLS handshakes against a
  // certificate that can never verify. src/engine/engine.ts #onConnectFailed applies the ordinary
  // full-jitter backoff (10 ms doubling to connectBackoffMaxMs = 2 s) to fatal errors too, and the next
  // caller's acquire re-opens the gate; see the report for the suggested fix (hold a fatal error for an
  // interval and answer new callers with it without dialling).
  it('a misconfigured certificate makes at most a couple of attempts in 2 s under 20 concurrent callers', async () => {
    const pool = newPool({ ...server.clientConfig(), ssl: { ca: material.otherCa.pem } });
    const run = await hammer(pool, 2_000);
    expect(run.errors.length).toBeGreaterThan(20);
    expect(run.attempts).toBeLessThanOrEqual(3);
  });
});

describe('sslmode in pg 8.23', () => {
  it('sslmode=require verifies (an alias of verify-full): it fails against a private CA without sslrootcert', async () => {
    const pool = newPool({ connectionString: url(server, 'sslmode=require') });
    await expectFastFatal(pool, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    const withRoot = newPool({
      connectionString: url(server, `sslmode=require&sslrootcert=${material.ca.certFile}`),
    });
    expect((await sslOfBackend(withRoot)).ssl).toBe(true);
  });

  it('uselibpqcompat=true&sslmode=require encrypts without verifying, as libpq does', async () => {
    // A certificate for another name, from a CA the client was never told about: still TLS.
    const pool = newPool({
      connectionString: url(wrongHostServer, 'uselibpqcompat=true&sslmode=require', 'localhost'),
    });
    expect(await sslOfBackend(pool)).toEqual({ ssl: true, version: expect.any(String) });
  });

  it('ssl: { rejectUnauthorized: false } and sslmode=no-verify connect over TLS', async () => {
    const byOptions = newPool({ ...wrongHostServer.clientConfig(), ssl: { rejectUnauthorized: false } });
    expect((await sslOfBackend(byOptions)).ssl).toBe(true);
    const byUrl = newPool({ connectionString: url(wrongHostServer, 'sslmode=no-verify') });
    expect((await sslOfBackend(byUrl)).ssl).toBe(true);
  });

  it('a server without TLS: sslmode=require fails with "The server does not support SSL connections", fatal, not retried', async () => {
    const pool = newPool({ connectionString: url(plainServer, 'sslmode=require') });
    await expectFastFatal(pool, /^The server does not support SSL connections$/);
    const run = await hammer(pool, 1_000, 5);
    for (const error of run.errors) expectFatal(error, /^The server does not support SSL connections$/);
    // pg 8 has no plain-text fallback, not even for libpq-compatible `prefer`.
    const prefer = newPool({ connectionString: url(plainServer, 'uselibpqcompat=true&sslmode=prefer') });
    await expectFastFatal(prefer, /^The server does not support SSL connections$/);
    expect(await plainServer.countConnections()).toBe(0);
  });
});

describe('no silent downgrade', () => {
  it('every session of a pool that asked for verification is encrypted, as the server sees it', async () => {
    const pool = newPool({
      ...server.clientConfig(),
      ssl: { ca: material.ca.pem },
      application_name: 'tls-downgrade-check',
      max: 5,
      // Churn connections so that many handshakes happen.
      maxUses: 2,
    });
    await Promise.all(Array.from({ length: 40 }, () => pool.query('SELECT pg_sleep(0.01)')));
    // The server accepts plain text too (its pg_hba.conf has a `host` line after the `hostssl` one), so
    // only the client's choice keeps these sessions encrypted.
    const sessions = await server.query<{ ssl: boolean }>(
      `SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
        WHERE a.application_name = 'tls-downgrade-check'`,
    );
    expect(sessions.rows.length).toBeGreaterThan(0);
    expect(sessions.rows.every((row) => row.ssl)).toBe(true);
    const plain = newPool({ ...server.clientConfig(), application_name: 'tls-plain-check' });
    expect((await sslOfBackend(plain)).ssl).toBe(false);
  });

  it('a server that cannot do TLS is refused when verification was asked for, never used in plain text', async () => {
    for (const config of [
      { ...plainServer.clientConfig(), ssl: { ca: material.ca.pem } },
      { connectionString: url(plainServer, `sslmode=verify-full&sslrootcert=${material.ca.certFile}`) },
      {
        connectionString: url(
          plainServer,
          `uselibpqcompat=true&sslmode=verify-ca&sslrootcert=${material.ca.certFile}`,
        ),
      },
    ]) {
      const pool = newPool({ ...config, application_name: 'tls-refused' });
      await expectFastFatal(pool, /^The server does not support SSL connections$/);
    }
    expect(await plainServer.countConnections({ applicationName: 'tls-refused' })).toBe(0);
  });
});
