import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from '../../src/errors.js';
import { PgBouncerGuard } from '../../src/pg/pgbouncer.js';

describe('PgBouncer transaction-mode guard', () => {
  const guard = new PgBouncerGuard(true);
  it.each([
    'SET search_path TO tenant_1',
    '  set statement_timeout = 1000',
    'RESET ALL',
    'LISTEN jobs',
    'PREPARE q AS SELECT 1',
    'CREATE TEMP TABLE t (id int)',
    'SELECT pg_advisory_lock(42)',
  ])('refuses session state: %s', (text) => {
    expect(() => guard.check(text)).toThrow(InvalidOptionError);
  });

  it.each([
    'SET LOCAL statement_timeout = 1000',
    'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
    'SELECT 1',
    'SELECT pg_advisory_xact_lock(1)',
    "SELECT 'SET x'",
  ])('allows: %s', (text) => {
    expect(() => guard.check(text)).not.toThrow();
  });

  it('refuses named prepared statements unless allowed', () => {
    expect(() => guard.check({ name: 'q1', text: 'SELECT 1' })).toThrow(/PgBouncer 1.21/);
    expect(() =>
      new PgBouncerGuard({ preparedStatements: true }).check({ name: 'q1', text: 'SELECT 1' }),
    ).not.toThrow();
  });
});
