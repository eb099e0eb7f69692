import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from '../../src/errors.js';
import { resolvePoolConfig } from '../../src/pg/config.js';
import { hostOrder, planHosts, satisfies } from '../../src/topology/hosts.js';

describe('multi-host connection strings', () => {
  it('splits hosts into one single-host connection string each and reads the libpq parameters', () => {
    const plan = planHosts({
      connectionString:
        'postgres://app:pw-S3NT1NEL@db1:5432,db2,[::1]:6000/orders?sslmode=disable&target_session_attrs=read-write&load_balance_hosts=random',
    });
    expect(plan?.targetSessionAttrs).toBe('read-write');
    expect(plan?.loadBalanceHosts).toBe('random');
    expect(plan?.hosts).toEqual([
      {
        host: 'db1',
        port: 5432,
        connectionString: 'postgres://app:pw-S3NT1NEL@db1:5432/orders?sslmode=disable',
      },
      {
        host: 'db2',
        port: 5432,
        connectionString: 'postgres://app:pw-S3NT1NEL@db2:5432/orders?sslmode=disable',
      },
      {
        host: '::1',
        port: 6000,
        connectionString: 'postgres://app:pw-S3NT1NEL@[::1]:6000/orders?sslmode=disable',
      },
    ]);
  });

  it('leaves an ordinary single-host string to pg', () => {
    expect(planHosts({ connectionString: 'postgres://app:pw@db:5432/orders' })).toBeUndefined();
    expect(
      resolvePoolConfig({ connectionString: 'postgres://app:pw@db:5432/orders' }).hostPlan,
    ).toBeUndefined();
  });

  it('takes a hosts list, with the connection string supplying everything else', () => {
    const plan = planHosts({
      connectionString: 'postgres://app:pw@ignored:1/orders',
      hosts: ['a:1', { host: 'b', port: 2 }],
      targetSessionAttrs: 'primary',
    });
    expect(plan?.hosts.map((h) => h.connectionString)).toEqual([
      'postgres://app:pw@a:1/orders',
      'postgres://app:pw@b:2/orders',
    ]);
    // pg never sees the multi-host string.
    const resolved = resolvePoolConfig({ connectionString: 'postgres://app:pw@a:1,b:2/orders' });
    expect(resolved.client.connectionString).toBeUndefined();
  });

  it('reads IPv6 addresses in a hosts list, bracketed with a port or bare without one', () => {
    const plan = planHosts({
      connectionString: 'postgres://app:pw@ignored/orders',
      hosts: ['[::1]:5433', '[fe80::2]', '::3', 'db:5434', 'plain'],
    });
    expect(plan?.hosts.map(({ host, port }) => [host, port])).toEqual([
      ['::1', 5433],
      ['fe80::2', 5432],
      ['::3', 5432],
      ['db', 5434],
      ['plain', 5432],
    ]);
    expect(plan?.hosts[0]?.connectionString).toBe('postgres://app:pw@[::1]:5433/orders');
    expect(() => planHosts({ hosts: ['db:abc'] })).toThrow(/hosts\[0\]: got "db:abc", whose port NaN/);
    expect(() => planHosts({ hosts: ['[::1]:0'] })).toThrow(/hosts\[0\]: got "\[::1\]:0"/);
    expect(() => planHosts({ hosts: [':5432'] })).toThrow(/hosts\[0\]: got ":5432", expected "host"/);
    expect(() => planHosts({ hosts: [] })).toThrow(/hosts: got \[\], expected a non-empty array/);
  });

  it('rejects bad attributes and ports without echoing the password', () => {
    expect(() =>
      planHosts({ connectionString: 'postgres://u:S3NT1NEL@a,b/db?target_session_attrs=writable' }),
    ).toThrow(/targetSessionAttrs: got "writable"/);
    let message = '';
    try {
      planHosts({ connectionString: 'postgres://u:S3NT1NEL@a:99999,b/db' });
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidOptionError);
      message = (error as Error).message;
    }
    expect(message).toMatch(/bad port/);
    expect(message).not.toContain('S3NT1NEL');
  });
});

describe('target_session_attrs', () => {
  const primary = { readOnly: false, inRecovery: false };
  const standby = { readOnly: true, inRecovery: true };
  it('matches libpq', () => {
    expect([satisfies('any', primary), satisfies('any', standby)]).toEqual([true, true]);
    expect([satisfies('read-write', primary), satisfies('read-write', standby)]).toEqual([true, false]);
    expect([satisfies('read-only', primary), satisfies('read-only', standby)]).toEqual([false, true]);
    expect([satisfies('primary', primary), satisfies('primary', standby)]).toEqual([true, false]);
    expect([satisfies('standby', primary), satisfies('standby', standby)]).toEqual([false, true]);
  });

  it('tries hosts in order, or shuffled', () => {
    expect(hostOrder([1, 2, 3], 'disable')).toEqual([1, 2, 3]);
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) seen.add(hostOrder([1, 2, 3], 'random').join(','));
    expect(seen.size).toBeGreaterThan(1);
  });
});
