import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from '../../src/errors.js';
import { resolvePoolConfig } from '../../src/pg/config.js';

describe('pg.Pool config mapping', () => {
  it('keeps pg semantics where they are safe and replaces waiting forever with 30 s', () => {
    expect(resolvePoolConfig({}).engine).toMatchObject({
      acquireTimeoutMs: undefined,
      idleTimeoutMs: 10_000,
    });
    const { engine } = resolvePoolConfig({
      max: 20,
      min: 2,
      connectionTimeoutMillis: 12_000,
      idleTimeoutMillis: 500,
    });
    // connectionTimeoutMillis bounds the wait for a client and each connection attempt, as in pg.
    expect(engine).toMatchObject({
      max: 20,
      min: 2,
      acquireTimeoutMs: 12_000,
      connectTimeoutMs: 12_000,
      idleTimeoutMs: 500,
    });
  });

  it('reads pg spellings of "no limit"', () => {
    expect(resolvePoolConfig({ idleTimeoutMillis: null as never }).engine.idleTimeoutMs).toBe(0);
    expect(resolvePoolConfig({ maxUses: Number.POSITIVE_INFINITY }).engine.maxUses).toBe(0);
    expect(resolvePoolConfig({ maxLifetimeSeconds: 0 }).engine.maxLifetimeMs).toBe(0);
    expect(resolvePoolConfig({ maxLifetimeSeconds: 60 }).engine.maxLifetimeMs).toBe(60_000);
    expect(resolvePoolConfig({}).engine.maxLifetimeMs).toBeUndefined();
  });

  it('native options win over pg ones', () => {
    const { engine } = resolvePoolConfig({
      connectionTimeoutMillis: 1_000,
      acquireTimeoutMs: 9_000,
      connectTimeoutMs: 700,
    });
    expect(engine).toMatchObject({ acquireTimeoutMs: 9_000, connectTimeoutMs: 700 });
  });

  it('hands every other key to pg.Client, with TCP keepalive on, and keeps pool keys out of it', () => {
    const { client } = resolvePoolConfig({
      host: 'db',
      password: 'secret',
      statement_timeout: 1_000,
      max: 3,
      maxOverflow: 1,
      connectionTimeoutMillis: 5_000,
    } as never);
    expect(client).toMatchObject({
      host: 'db',
      password: 'secret',
      statement_timeout: 1_000,
      keepAlive: true,
    });
    expect(client).not.toHaveProperty('max');
    expect(client).not.toHaveProperty('maxOverflow');
    // The engine enforces the connect timeout itself; pg's own timer is not needed.
    expect(client).not.toHaveProperty('connectionTimeoutMillis');
  });

  it('rejects wrong types with the option named', () => {
    expect(() => resolvePoolConfig({ idempotent: 'false' as never })).toThrow(InvalidOptionError);
    expect(() => resolvePoolConfig({ idempotent: 'false' as never })).toThrow(/idempotent: got "false"/);
    expect(() => resolvePoolConfig({ connectionTimeoutMillis: -1 })).toThrow(/connectionTimeoutMillis/);
    expect(() => resolvePoolConfig({ verify: 42 as never })).toThrow(
      /verify: got number, expected a function/,
    );
  });
});

describe('unknown options', () => {
  it('refuses a misspelt pool option with a did-you-mean, and hands other unknown keys to pg.Client', () => {
    expect(() => resolvePoolConfig({ maxOverFlow: 2 } as never)).toThrow(
      /maxOverFlow: unknown option; did you mean "maxOverflow"\?/,
    );
    expect(() => resolvePoolConfig({ acquireTimeout: 2 } as never)).toThrow(
      /did you mean "acquireTimeoutMs"/,
    );
    expect(() => resolvePoolConfig({ idleTimeoutMilis: 2 } as never)).toThrow(
      /did you mean "idleTimeoutMillis"/,
    );
    // Regression: @fastify/postgres passes its own `pg` key, which is two edits from `log`.
    expect(resolvePoolConfig({ pg: {} } as never).client).toHaveProperty('pg');
    // pg's own client keys and keys that resemble nothing of the pool's pass through, as with pg.Pool.
    expect(resolvePoolConfig({ application_name: 'x', tenantId: 7 } as never).client).toMatchObject({
      application_name: 'x',
      tenantId: 7,
    });
  });
});
