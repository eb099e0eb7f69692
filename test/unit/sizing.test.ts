/**
 * The sizing calculators and the connection budget, with the worked examples they are known by.
 */
import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from '../../src/index.js';
import { connectionBudget, hikariSize, littleSize, perInstance, podPoolSize } from '../../src/ops/sizing.js';

describe('hikariSize: cores × 2 + spindles', () => {
  it.each([
    [{ cores: 4, spindles: 1 }, 9], // HikariCP's example: a 4-core server with one disk
    [{ cores: 4 }, 8],
    [{ cores: 16, spindles: 4 }, 36],
    [{ cores: 1, spindles: 0 }, 2],
  ])('%o → %i', (input, expected) => {
    expect(hikariSize(input)).toBe(expected);
  });

  it.each([
    [{ cores: 0 }, 'cores'],
    [{ cores: 2.5 }, 'cores'],
    [{ cores: Number.NaN }, 'cores'],
    [{ cores: 4, spindles: -1 }, 'spindles'],
    [{ cores: 4, spindles: 0.5 }, 'spindles'],
  ])('rejects %o', (input, option) => {
    expect(() => hikariSize(input)).toThrow(InvalidOptionError);
    expect(() => hikariSize(input)).toThrow(new RegExp(`Invalid option ${option}: got`));
  });
});

describe("littleSize: Little's law", () => {
  it.each([
    [{ requestsPerSecond: 200, queryTimeSeconds: 0.05 }, 10],
    [{ requestsPerSecond: 100, queryTimeSeconds: 0.03 }, 3], // 3.0000000000000004 in floating point
    [{ requestsPerSecond: 1000, queryTimeSeconds: 0.002, queriesPerRequest: 5 }, 10],
    [{ requestsPerSecond: 7, queryTimeSeconds: 0.1 }, 1], // 0.7 busy: at least one connection
    [{ requestsPerSecond: 150, queryTimeSeconds: 0.01, queriesPerRequest: 2 }, 3],
    [{ requestsPerSecond: 101, queryTimeSeconds: 0.1 }, 11], // 10.1 rounds up
  ])('%o → %i', (input, expected) => {
    expect(littleSize(input)).toBe(expected);
  });

  it.each([
    { requestsPerSecond: 0, queryTimeSeconds: 1 },
    { requestsPerSecond: 10, queryTimeSeconds: -1 },
    { requestsPerSecond: 10, queryTimeSeconds: 1, queriesPerRequest: 0 },
    { requestsPerSecond: Number.POSITIVE_INFINITY, queryTimeSeconds: 1 },
  ])('rejects %o', (input) => {
    expect(() => littleSize(input)).toThrow(/expected a number > 0/);
  });
});

describe('podPoolSize: the pod formula of the SQLAlchemy template', () => {
  it('reproduces its worked example and reports the concurrency bound beside it', () => {
    expect(podPoolSize({ pods: 3, concurrentRequestsPerPod: 10, queryTimeSeconds: 0.1 })).toEqual({
      total: 300,
      perPod: 100,
      concurrencyBoundPerPod: 10,
    });
    expect(podPoolSize({ pods: 4, concurrentRequestsPerPod: 5, queryTimeSeconds: 1 })).toEqual({
      total: 20,
      perPod: 5,
      concurrencyBoundPerPod: 5,
    });
  });

  it('rejects bad input', () => {
    expect(() => podPoolSize({ pods: 0, concurrentRequestsPerPod: 1, queryTimeSeconds: 1 })).toThrow(/pods/);
    expect(() => podPoolSize({ pods: 1, concurrentRequestsPerPod: 1, queryTimeSeconds: 0 })).toThrow(
      /queryTimeSeconds/,
    );
  });
});

describe('perInstance', () => {
  it('rounds up', () => {
    expect(perInstance(17, 3)).toBe(6);
    expect(perInstance(300, 3)).toBe(100);
    expect(perInstance(0, 3)).toBe(0);
    expect(() => perInstance(10, 0)).toThrow(/instances/);
  });
});

describe('connectionBudget: instances × (size + overflow) + reserved <= max_connections', () => {
  it('fits: the worked example with max_connections 250', () => {
    const budget = connectionBudget({
      instances: 5,
      poolSize: 20,
      maxOverflow: 20,
      reserved: 10,
      serverMaxConnections: 250,
    });
    expect(budget).toMatchObject({ needed: 210, available: 250, spare: 40, ok: true });
    expect(budget.message).toBe(
      '5 instances × (20 + 20 overflow) + 10 reserved = 210 connections, within max_connections 250 (40 spare)',
    );
  });

  it('does not fit: the default max_connections of 100', () => {
    const budget = connectionBudget({
      instances: 5,
      poolSize: 20,
      maxOverflow: 20,
      reserved: 10,
      serverMaxConnections: 100,
    });
    expect(budget).toMatchObject({ needed: 210, spare: -110, ok: false });
    expect(budget.message).toContain('more than max_connections 100 (110 short)');
    expect(budget.message).toContain('raise max_connections to at least 210');
  });

  it('is exact at the boundary and defaults overflow and reserved to 0', () => {
    expect(connectionBudget({ instances: 2, poolSize: 50, serverMaxConnections: 100 })).toMatchObject({
      needed: 100,
      spare: 0,
      ok: true,
      maxOverflow: 0,
      reserved: 0,
    });
    expect(connectionBudget({ instances: 1, poolSize: 98, reserved: 3, serverMaxConnections: 100 }).ok).toBe(
      false,
    );
    expect(connectionBudget({ instances: 1, poolSize: 10, serverMaxConnections: 100 }).message).toMatch(
      /^1 instance × /,
    );
  });

  it.each([
    [{ instances: 0, poolSize: 1, serverMaxConnections: 10 }, 'instances'],
    [{ instances: 1, poolSize: 0, serverMaxConnections: 10 }, 'poolSize'],
    [{ instances: 1, poolSize: 1, maxOverflow: -1, serverMaxConnections: 10 }, 'maxOverflow'],
    [{ instances: 1, poolSize: 1, reserved: 1.5, serverMaxConnections: 10 }, 'reserved'],
    [{ instances: 1, poolSize: 1, serverMaxConnections: 0 }, 'serverMaxConnections'],
  ])('rejects %o', (input, option) => {
    expect(() => connectionBudget(input)).toThrow(new RegExp(`Invalid option ${option}: got`));
  });
});
