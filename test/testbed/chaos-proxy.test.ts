import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChaosProxy } from '../../testbed/chaos-proxy.js';
import { ephemeralPortRange } from '../../testbed/ports.js';
import { PostgresServer, withPostgres } from '../../testbed/postgres.js';

/** Clients opened by a test; ended after it whatever happened. */
const openClients = new Set<pg.Client>();
/** 'error' events each client emitted. */
const clientErrors = new WeakMap<pg.Client, Error[]>();

function newClient(config: pg.ClientConfig): pg.Client {
  const client = new pg.Client({ connectionTimeoutMillis: 5_000, ...config });
  const errors: Error[] = [];
  clientErrors.set(client, errors);
  client.on('error', (error) => errors.push(error));
  openClients.add(client);
  return client;
}

async function connect(config: pg.ClientConfig): Promise<pg.Client> {
  const client = newClient(config);
  await client.connect();
  return client;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** 'settled' if `promise` settles within `ms`, else 'pending'. Never rejects. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<'settled' | 'pending'> {
  return Promise.race([
    promise.then(
      () => 'settled' as const,
      () => 'settled' as const,
    ),
    sleep(ms).then(() => 'pending' as const),
  ]);
}

async function timed<T>(work: () => Promise<T>): Promise<{ result: T; ms: number }> {
  const startedAt = performance.now();
  const result = await work();
  return { result, ms: performance.now() - startedAt };
}

describe('ChaosProxy', () => {
  let server: PostgresServer;
  let proxy: ChaosProxy;

  const viaProxy = (): pg.ClientConfig => ({ ...server.clientConfig(), host: proxy.host, port: proxy.port });

  beforeAll(async () => {
    server = await PostgresServer.start();
  });

  afterAll(async () => {
    await server?.destroy();
  });

  beforeEach(async () => {
    proxy = await ChaosProxy.start({ host: server.host, port: server.port });
  });

  afterEach(async () => {
    await proxy.close();
    await Promise.all([...openClients].map((client) => client.end().catch(() => undefined)));
    openClients.clear();
    // Every session must be gone before the next test counts them.
    await server.terminateBackends();
  });

  it('forwards traffic in pass mode and counts connections', async () => {
    expect(proxy.host).toBe('127.0.0.1');
    expect(proxy.port).not.toBe(server.port);
    expect(proxy.mode).toBe('pass');
    expect(proxy.target).toEqual({ host: server.host, port: server.port });

    const client = await connect(viaProxy());
    expect((await client.query('SELECT 40 + 2 AS n')).rows).toEqual([{ n: 42 }]);
    expect(proxy.connectionsAccepted).toBe(1);
    expect(proxy.activeConnections).toBe(1);
    expect(await server.countConnections()).toBe(1);

    await client.end();
    await vi.waitFor(() => expect(proxy.activeConnections).toBe(0));
    await vi.waitFor(async () => expect(await server.countConnections()).toBe(0));
    expect(proxy.connectionsAccepted).toBe(1);
  });

  it('freeze() stalls an in-flight query without closing anything; pass() lets it finish', async () => {
    const client = await connect(viaProxy());
    proxy.freeze();
    expect(proxy.mode).toBe('freeze');

    const query = client.query('SELECT 42 AS n');
    expect(await settlesWithin(query, 500)).toBe('pending');
    expect(proxy.activeConnections).toBe(1);
    expect(await server.countConnections()).toBe(1);
    expect(clientErrors.get(client)).toEqual([]);

    proxy.pass();
    expect((await query).rows).toEqual([{ n: 42 }]);
  });

  it('freeze() stalls new connections, which are connected upstream only after pass()', async () => {
    proxy.freeze();
    const connecting = connect(viaProxy());
    expect(await settlesWithin(connecting, 500)).toBe('pending');
    expect(proxy.connectionsAccepted).toBe(1);
    expect(proxy.activeConnections).toBe(1);
    expect(await server.countConnections()).toBe(0);

    proxy.pass();
    const client = await connecting;
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('freeze() holds back a close until the partition heals', async () => {
    const client = await connect(viaProxy());
    proxy.freeze();
    const ending = client.end();
    await sleep(300);
    // The server never hears of the client leaving while partitioned.
    expect(await server.countConnections()).toBe(1);

    proxy.pass();
    await ending;
    await vi.waitFor(async () => expect(await server.countConnections()).toBe(0));
    await vi.waitFor(() => expect(proxy.activeConnections).toBe(0));
  });

  it('resetAll() aborts every connection with ECONNRESET and keeps the mode', async () => {
    const idle = await connect(viaProxy());
    const busy = await connect(viaProxy());
    const sleeping = busy.query('SELECT pg_sleep(5)');
    sleeping.catch(() => undefined);
    await sleep(50);

    expect(proxy.resetAll()).toBe(2);
    expect(proxy.activeConnections).toBe(0);
    await expect(sleeping).rejects.toMatchObject({ code: 'ECONNRESET' });
    await vi.waitFor(() =>
      expect(clientErrors.get(idle)).toContainEqual(expect.objectContaining({ code: 'ECONNRESET' })),
    );
    await expect(idle.query('SELECT 1')).rejects.toThrow();

    expect(proxy.mode).toBe('pass');
    const fresh = await connect(viaProxy());
    expect((await fresh.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('refuse() closes new connections right after accepting them; existing ones keep flowing', async () => {
    const existing = await connect(viaProxy());
    proxy.refuse();
    expect(proxy.mode).toBe('refuse');

    const { result: refused, ms } = await timed(() =>
      connect(viaProxy()).then(
        () => 'connected',
        (error) => error,
      ),
    );
    expect(refused).toBeInstanceOf(Error);
    expect((refused as Error).message).toMatch(/Connection terminated unexpectedly/);
    expect(ms).toBeLessThan(1_000);
    expect(proxy.connectionsAccepted).toBe(2);
    expect((await existing.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);

    proxy.refuse({ reset: true });
    await expect(connect(viaProxy())).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(proxy.activeConnections).toBe(1);

    proxy.pass();
    const client = await connect(viaProxy());
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('blackhole() leaves new connects hanging; existing ones keep flowing', async () => {
    const existing = await connect(viaProxy());
    proxy.blackhole();
    expect(proxy.mode).toBe('blackhole');

    const hanging = connect({ ...viaProxy(), connectionTimeoutMillis: 0 });
    hanging.catch(() => undefined);
    expect(await settlesWithin(hanging, 500)).toBe('pending');
    expect(proxy.connectionsAccepted).toBe(2);
    expect(proxy.activeConnections).toBe(2);
    expect(await server.countConnections()).toBe(1);
    expect((await existing.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);

    // A client-side connect timeout is what ends such an attempt.
    await expect(connect({ ...viaProxy(), connectionTimeoutMillis: 200 })).rejects.toThrow(/timeout/i);

    // Healing does not answer connections that were blackholed.
    proxy.pass();
    expect(await settlesWithin(hanging, 300)).toBe('pending');
    const client = await connect(viaProxy());
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);

    await proxy.close();
    await expect(hanging).rejects.toThrow();
  });

  it('latency() delays both directions and preserves byte order', async () => {
    const client = await connect(viaProxy());
    const baseline = await timed(() => client.query('SELECT 1'));
    expect(baseline.ms).toBeLessThan(250);

    proxy.latency(150);
    expect(proxy.latencyMs).toBe(150);
    // One chunk each way: the round trip gains about twice the latency.
    const delayed = await timed(() => client.query('SELECT 1'));
    expect(delayed.ms).toBeGreaterThanOrEqual(280);
    expect(delayed.ms).toBeLessThan(1_000);

    // A large, order-sensitive result arrives in many chunks; change the latency while it streams.
    proxy.latency(5);
    const big = client.query(
      "SELECT string_agg(i::text, ',' ORDER BY i) AS s FROM generate_series(1, 300000) AS i",
    );
    setTimeout(() => proxy.latency(0), 20);
    const expected = Array.from({ length: 300_000 }, (_, i) => i + 1).join(',');
    expect((await big).rows[0].s === expected).toBe(true);

    proxy.latency(0);
    const fast = await timed(() => client.query('SELECT 1'));
    expect(fast.ms).toBeLessThan(250);
    expect(() => proxy.latency(-1)).toThrow(RangeError);
  });

  it('carries large payloads in both directions under backpressure', async () => {
    const client = await connect(viaProxy());
    proxy.latency(1);
    const payload = 'x'.repeat(8 * 1024 * 1024);
    const { rows } = await client.query('SELECT length($1::text) AS n, md5($1::text) AS h', [payload]);
    const echoed = await client.query('SELECT $1::text AS s', [payload]);
    expect(rows[0].n).toBe(payload.length);
    expect(echoed.rows[0].s === payload).toBe(true);
  });

  it('closes the client side when the server goes away, and refuses while the server is down', async () => {
    const client = await connect(viaProxy());
    await server.stop('fast');
    try {
      await vi.waitFor(() =>
        expect(clientErrors.get(client)).toContainEqual(expect.objectContaining({ code: '57P01' })),
      );
      await vi.waitFor(() => expect(proxy.activeConnections).toBe(0));
      // The proxy accepts, cannot reach its target, and closes: the client sees the connection end.
      await expect(connect(viaProxy())).rejects.toThrow(/Connection terminated unexpectedly/);
    } finally {
      await server.start();
    }
    const fresh = await connect(viaProxy());
    expect((await fresh.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('retarget() sends new connections to another server and leaves existing ones alone', async () => {
    await withPostgres(async (other) => {
      const before = await connect(viaProxy());
      proxy.retarget({ host: other.host, port: other.port });
      const after = await connect(viaProxy());
      const port = async (client: pg.Client) =>
        (await client.query('SELECT inet_server_port() AS p')).rows[0].p;
      expect(await port(before)).toBe(server.port);
      expect(await port(after)).toBe(other.port);
    });
  });

  it('close() destroys every connection and stops listening; it is idempotent', async () => {
    const client = await connect(viaProxy());
    proxy.blackhole();
    const hanging = connect({ ...viaProxy(), connectionTimeoutMillis: 0 });
    hanging.catch(() => undefined);
    await vi.waitFor(() => expect(proxy.activeConnections).toBe(2));

    await Promise.all([proxy.close(), proxy.close()]);
    await proxy.close();
    expect(proxy.activeConnections).toBe(0);
    await expect(hanging).rejects.toThrow();
    await expect(client.query('SELECT 1')).rejects.toThrow();
    await expect(connect(viaProxy())).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('listens below the ephemeral range by default, so it can be started again on the same port', async () => {
    const port = proxy.port;
    expect(port).toBeLessThan(ephemeralPortRange()[0]);
    await proxy.close();
    await expect(connect(viaProxy())).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    proxy = await ChaosProxy.start({ host: server.host, port: server.port }, { port });
    expect(proxy.port).toBe(port);
    const client = await connect(viaProxy());
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('keeps every query correct while modes and latency change under load', async () => {
    const clients = await Promise.all(Array.from({ length: 8 }, () => connect(viaProxy())));
    let chaos = true;
    const chaosLoop = (async () => {
      for (let round = 0; chaos; round++) {
        if (round % 2 === 0) proxy.freeze();
        else proxy.pass();
        proxy.latency(round % 3 === 0 ? 0 : 5);
        await sleep(20);
      }
      proxy.pass();
      proxy.latency(0);
    })();
    try {
      await Promise.all(
        clients.map(async (client, c) => {
          for (let i = 0; i < 25; i++) {
            const { rows } = await client.query('SELECT $1::int * 1000 + $2::int AS v', [c, i]);
            expect(rows[0].v).toBe(c * 1000 + i);
          }
        }),
      );
    } finally {
      chaos = false;
      await chaosLoop;
    }
    expect(clients.every((client) => clientErrors.get(client)?.length === 0)).toBe(true);
  });
});
