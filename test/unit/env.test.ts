/**
 * Configuration from the environment: every variable with good and bad values, presets and overrides,
 * unknown names, and connection strings whose password must never appear in an error.
 */
import { describe, expect, it } from 'vitest';
import { parseConnectionString, poolConfigFromEnv, redactConnectionString } from '../../src/config/env.js';
import { presetConfig, presets } from '../../src/config/presets.js';
import { resolveEngineOptions } from '../../src/engine/options.js';
import { ErrorCodes, InvalidOptionError } from '../../src/index.js';
import { resolvePoolConfig } from '../../src/pg/config.js';

const SECRET = 'Env-S3NT1NEL-pa55word-7f3a';

function errorOf(fn: () => unknown): InvalidOptionError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidOptionError);
    return error as InvalidOptionError;
  }
  throw new Error('expected an InvalidOptionError');
}

describe('poolConfigFromEnv: good values', () => {
  const cases: Array<[string, Record<string, string>, Record<string, unknown>]> = [
    ['nothing set', {}, {}],
    [
      'DATABASE_URL',
      { DATABASE_URL: 'postgres://u:p@db:5432/app' },
      { connectionString: 'postgres://u:p@db:5432/app' },
    ],
    [
      'postgresql:// scheme',
      { DATABASE_URL: 'postgresql://db/app' },
      { connectionString: 'postgresql://db/app' },
    ],
    [
      'socket directory',
      { DATABASE_URL: '/var/run/postgresql app' },
      { connectionString: '/var/run/postgresql app' },
    ],
    ['empty host (PGHOST)', { DATABASE_URL: 'postgres://u@/app' }, { connectionString: 'postgres://u@/app' }],
    ['DB_POOL_SIZE low', { DB_POOL_SIZE: '1' }, { max: 1, maxOverflow: 0 }],
    ['DB_POOL_SIZE high', { DB_POOL_SIZE: '100' }, { max: 100, maxOverflow: 0 }],
    ['DB_POOL_SIZE trimmed', { DB_POOL_SIZE: ' 20 ' }, { max: 20, maxOverflow: 0 }],
    ['DB_MAX_OVERFLOW alone: pool default 10 kept', { DB_MAX_OVERFLOW: '5' }, { max: 15, maxOverflow: 5 }],
    ['size + overflow', { DB_POOL_SIZE: '20', DB_MAX_OVERFLOW: '20' }, { max: 40, maxOverflow: 20 }],
    ['DB_MAX_OVERFLOW 0', { DB_POOL_SIZE: '5', DB_MAX_OVERFLOW: '0' }, { max: 5, maxOverflow: 0 }],
    ['DB_MAX_OVERFLOW 100', { DB_POOL_SIZE: '1', DB_MAX_OVERFLOW: '100' }, { max: 101, maxOverflow: 100 }],
    ['DB_POOL_MIN', { DB_POOL_SIZE: '5', DB_POOL_MIN: '5' }, { max: 5, maxOverflow: 0, min: 5 }],
    ['DB_POOL_MIN 0', { DB_POOL_MIN: '0' }, { min: 0 }],
    ['DB_POOL_TIMEOUT 1 s', { DB_POOL_TIMEOUT: '1' }, { acquireTimeoutMs: 1000 }],
    ['DB_POOL_TIMEOUT decimal', { DB_POOL_TIMEOUT: '2.5' }, { acquireTimeoutMs: 2500 }],
    ['DB_POOL_TIMEOUT max', { DB_POOL_TIMEOUT: '2147483' }, { acquireTimeoutMs: 2_147_483_000 }],
    ['DB_POOL_RECYCLE', { DB_POOL_RECYCLE: '1800' }, { maxLifetimeMs: 1_800_000 }],
    ['DB_POOL_RECYCLE -1 disables', { DB_POOL_RECYCLE: '-1' }, { maxLifetimeMs: 0 }],
    ['DB_POOL_RECYCLE 0 disables', { DB_POOL_RECYCLE: '0' }, { maxLifetimeMs: 0 }],
    ['DB_POOL_PRE_PING true', { DB_POOL_PRE_PING: 'true' }, {}],
    ['DB_POOL_PRE_PING false', { DB_POOL_PRE_PING: 'false' }, { validateAfterIdleMs: -1 }],
    ['DB_POOL_PRE_PING 0', { DB_POOL_PRE_PING: '0' }, { validateAfterIdleMs: -1 }],
    ['DB_POOL_PRE_PING no', { DB_POOL_PRE_PING: 'no' }, { validateAfterIdleMs: -1 }],
    ['DB_POOL_PRE_PING OFF', { DB_POOL_PRE_PING: 'OFF' }, { validateAfterIdleMs: -1 }],
    ['DB_POOL_PRE_PING yes', { DB_POOL_PRE_PING: 'yes' }, {}],
    ['DB_POOL_PRE_PING on', { DB_POOL_PRE_PING: 'on' }, {}],
    ['DB_POOL_PRE_PING 1', { DB_POOL_PRE_PING: '1' }, {}],
    ['DB_POOL_MODE null', { DB_POOL_MODE: 'null' }, { mode: 'null' }],
    ['DB_POOL_MODE queue', { DB_POOL_MODE: 'queue' }, { mode: 'queue' }],
    ['DB_POOL_NAME', { DB_POOL_NAME: 'orders-primary' }, { poolName: 'orders-primary' }],
    ['DB_CONNECT_TIMEOUT', { DB_CONNECT_TIMEOUT: '10' }, { connectTimeoutMs: 10_000 }],
    ['DB_CONNECT_TIMEOUT decimal', { DB_CONNECT_TIMEOUT: '0.25' }, { connectTimeoutMs: 250 }],
    ['DB_CONNECT_TIMEOUT 1 ms', { DB_CONNECT_TIMEOUT: '0.001' }, { connectTimeoutMs: 1 }],
    ['DB_QUERY_TIMEOUT', { DB_QUERY_TIMEOUT: '30' }, { queryTimeoutMs: 30_000 }],
    ['DB_QUERY_TIMEOUT 0: none', { DB_QUERY_TIMEOUT: '0' }, { queryTimeoutMs: 0 }],
    ['DB_MAX_WAITING', { DB_MAX_WAITING: '200' }, { maxWaiting: 200 }],
    ['DB_MAX_WAITING 0', { DB_MAX_WAITING: '0' }, { maxWaiting: 0 }],
    ['empty values count as unset', { DB_POOL_SIZE: '', DB_POOL_PRE_PING: '  ', DATABASE_URL: '' }, {}],
    ['PGPORT', { PGPORT: '5433' }, {}],
    ['PGSSLMODE', { PGSSLMODE: 'verify-full' }, {}],
    ['PGSSLMODE no-verify', { PGSSLMODE: 'no-verify' }, {}],
    ['other DB_ variables are not ours', { DB_HOST: 'x', DB_PASSWORD: 'y', DB_NAME: 'z' }, {}],
  ];
  it.each(cases)('%s', (_, env, expected) => {
    expect(poolConfigFromEnv(env)).toEqual(expected);
  });

  it('gives options the pool accepts', () => {
    const config = poolConfigFromEnv({
      DB_POOL_SIZE: '20',
      DB_MAX_OVERFLOW: '20',
      DB_POOL_MIN: '2',
      DB_POOL_TIMEOUT: '30',
      DB_POOL_RECYCLE: '-1',
      DB_POOL_PRE_PING: 'false',
      DB_CONNECT_TIMEOUT: '5',
      DB_MAX_WAITING: '100',
      DB_POOL_MODE: 'queue',
    });
    const engine = resolveEngineOptions(resolvePoolConfig(config).engine);
    expect(engine).toMatchObject({
      max: 40,
      maxOverflow: 20,
      min: 2,
      acquireTimeoutMs: 30_000,
      maxLifetimeMs: 0,
      validateAfterIdleMs: -1,
      connectTimeoutMs: 5_000,
      maxWaiting: 100,
    });
  });

  it('defaults to process.env', () => {
    const saved = process.env.DB_POOL_NAME;
    process.env.DB_POOL_NAME = 'from-process-env';
    try {
      expect(poolConfigFromEnv().poolName).toBe('from-process-env');
    } finally {
      if (saved === undefined) delete process.env.DB_POOL_NAME;
      else process.env.DB_POOL_NAME = saved;
    }
  });

  it('reads another prefix and URL variable', () => {
    const env = {
      REPLICA_POOL_SIZE: '3',
      REPLICA_URL: 'postgres://replica/app',
      DB_POOL_SIZE: '50',
      DATABASE_URL: 'postgres://primary/app',
    };
    expect(poolConfigFromEnv(env, { prefix: 'REPLICA_', urlVariable: 'REPLICA_URL' })).toEqual({
      max: 3,
      maxOverflow: 0,
      connectionString: 'postgres://replica/app',
    });
  });
});

describe('poolConfigFromEnv: bad values name the variable, the value and the range', () => {
  const cases: Array<[Record<string, string>, string, string, string]> = [
    // env, variable, value as shown, expected range (a substring of the message)
    [{ DB_POOL_SIZE: '0' }, 'DB_POOL_SIZE', '"0"', 'an integer from 1 to 100'],
    [{ DB_POOL_SIZE: '101' }, 'DB_POOL_SIZE', '"101"', 'an integer from 1 to 100'],
    [{ DB_POOL_SIZE: '-3' }, 'DB_POOL_SIZE', '"-3"', 'an integer from 1 to 100'],
    [{ DB_POOL_SIZE: '2.5' }, 'DB_POOL_SIZE', '"2.5"', 'an integer from 1 to 100'],
    [{ DB_POOL_SIZE: 'ten' }, 'DB_POOL_SIZE', '"ten"', 'an integer from 1 to 100'],
    [{ DB_POOL_SIZE: '0x10' }, 'DB_POOL_SIZE', '"0x10"', 'an integer from 1 to 100'],
    [{ DB_POOL_SIZE: '1e1' }, 'DB_POOL_SIZE', '"1e1"', 'an integer from 1 to 100'],
    [{ DB_MAX_OVERFLOW: '-1' }, 'DB_MAX_OVERFLOW', '"-1"', 'an integer from 0 to 100'],
    [{ DB_MAX_OVERFLOW: '101' }, 'DB_MAX_OVERFLOW', '"101"', 'an integer from 0 to 100'],
    [{ DB_MAX_OVERFLOW: 'lots' }, 'DB_MAX_OVERFLOW', '"lots"', 'an integer from 0 to 100'],
    [{ DB_POOL_SIZE: '5', DB_POOL_MIN: '6' }, 'DB_POOL_MIN', '"6"', 'from 0 to the kept pool size (5)'],
    [{ DB_POOL_MIN: '-1' }, 'DB_POOL_MIN', '"-1"', 'from 0 to the kept pool size (10)'],
    [{ DB_POOL_TIMEOUT: '0' }, 'DB_POOL_TIMEOUT', '"0"', 'a number of seconds from 1 to 2147483'],
    [{ DB_POOL_TIMEOUT: '0.5' }, 'DB_POOL_TIMEOUT', '"0.5"', 'a number of seconds from 1 to 2147483'],
    [{ DB_POOL_TIMEOUT: '30s' }, 'DB_POOL_TIMEOUT', '"30s"', 'a number of seconds from 1 to 2147483'],
    [{ DB_POOL_TIMEOUT: '2147484' }, 'DB_POOL_TIMEOUT', '"2147484"', 'a number of seconds from 1 to 2147483'],
    [{ DB_POOL_TIMEOUT: 'Infinity' }, 'DB_POOL_TIMEOUT', '"Infinity"', 'a number of seconds from 1'],
    [{ DB_POOL_RECYCLE: '-2' }, 'DB_POOL_RECYCLE', '"-2"', 'whole seconds from -1 to 2147483'],
    [{ DB_POOL_RECYCLE: '1.5' }, 'DB_POOL_RECYCLE', '"1.5"', 'whole seconds from -1 to 2147483'],
    [{ DB_POOL_RECYCLE: 'never' }, 'DB_POOL_RECYCLE', '"never"', 'whole seconds from -1 to 2147483'],
    [
      { DB_POOL_PRE_PING: 'maybe' },
      'DB_POOL_PRE_PING',
      '"maybe"',
      'one of true, false, 1, 0, yes, no, on, off',
    ],
    [{ DB_POOL_PRE_PING: '2' }, 'DB_POOL_PRE_PING', '"2"', 'one of true, false, 1, 0, yes, no, on, off'],
    [{ DB_POOL_MODE: 'nullpool' }, 'DB_POOL_MODE', '"nullpool"', 'one of queue, null'],
    [
      { DB_POOL_NAME: 'x'.repeat(101) },
      'DB_POOL_NAME',
      `"${'x'.repeat(101)}"`,
      'a name of 1 to 100 characters',
    ],
    [{ DB_CONNECT_TIMEOUT: '0' }, 'DB_CONNECT_TIMEOUT', '"0"', 'a number of seconds from 0.001 to 2147483'],
    [{ DB_CONNECT_TIMEOUT: '-5' }, 'DB_CONNECT_TIMEOUT', '"-5"', 'a number of seconds from 0.001 to 2147483'],
    [
      { DB_QUERY_TIMEOUT: '-1' },
      'DB_QUERY_TIMEOUT',
      '"-1"',
      'a number of seconds from 0 (no deadline) to 2147483',
    ],
    [{ DB_QUERY_TIMEOUT: '5m' }, 'DB_QUERY_TIMEOUT', '"5m"', 'a number of seconds from 0 (no deadline)'],
    [{ DB_MAX_WAITING: '-1' }, 'DB_MAX_WAITING', '"-1"', 'an integer >= 0'],
    [{ DB_MAX_WAITING: 'unlimited' }, 'DB_MAX_WAITING', '"unlimited"', 'an integer >= 0'],
    [{ DB_PRESET: 'prod' }, 'DB_PRESET', '"prod"', 'one of development, staging, production'],
    [{ PGPORT: '0' }, 'PGPORT', '"0"', 'an integer from 1 to 65535'],
    [{ PGPORT: 'postgres' }, 'PGPORT', '"postgres"', 'an integer from 1 to 65535'],
    [{ PGSSLMODE: 'required' }, 'PGSSLMODE', '"required"', 'one of disable, allow, prefer, require'],
  ];
  it.each(cases)('%o → %s', (env, variable, shown, range) => {
    const error = errorOf(() => poolConfigFromEnv(env));
    expect(error.code).toBe(ErrorCodes.INVALID_OPTION);
    expect(error.option).toBe(variable);
    expect(error.message).toContain(variable);
    expect(error.message).toContain(`got ${shown}`);
    expect(error.message).toContain(range);
  });

  it('rejects unknown DB_POOL_* variables with the closest known name, without echoing the value', () => {
    const typo = errorOf(() => poolConfigFromEnv({ DB_POOL_SIZ: '20' }));
    expect(typo.option).toBe('DB_POOL_SIZ');
    expect(typo.message).toContain('did you mean DB_POOL_SIZE?');

    const prePing = errorOf(() => poolConfigFromEnv({ DB_POOL_PREPING: 'true' }));
    expect(prePing.message).toContain('did you mean DB_POOL_PRE_PING?');

    const secret = errorOf(() => poolConfigFromEnv({ DB_POOL_PASSWORD: SECRET }));
    expect(secret.option).toBe('DB_POOL_PASSWORD');
    expect(secret.message).not.toContain(SECRET);
    expect(secret.message).toContain('DB_POOL_SIZE');

    // With another prefix, the reserved names move with it.
    const prefixed = errorOf(() => poolConfigFromEnv({ APP_POOL_SZE: '1' }, { prefix: 'APP_' }));
    expect(prefixed.message).toContain('did you mean APP_POOL_SIZE?');
    expect(poolConfigFromEnv({ DB_POOL_SZE: '1' }, { prefix: 'APP_' })).toEqual({});
  });
});

describe('DATABASE_URL', () => {
  const bad: Array<[string, string]> = [
    [`postgresql+asyncpg://app:${SECRET}@db/app`, 'names a driver'],
    [`mysql://app:${SECRET}@db/app`, 'the scheme is "mysql"'],
    [`postgres://app:${SECRET}@db:99999/app`, 'the port "99999" is not a number from 1 to 65535'],
    [`postgres://app:${SECRET}@db:port/app`, 'the port "port" is not a number from 1 to 65535'],
    [`postgres://app:${SECRET}@db:0/app`, 'the port "0" is not a number from 1 to 65535'],
    [`postgres://app:${SECRET}%C3@db/app`, 'not valid percent-encoding'],
    [`db.example.com:5432/app?password=${SECRET}`, 'the scheme is "db.example.com"'],
    [`postgres://app:${SECRET}@db/app?port=abc`, 'the port "abc"'],
    [`postgres://app:${SECRET}@[::1/app`, 'not a URL'],
  ];
  it.each(bad)('%s is rejected without its password', (url, why) => {
    const error = errorOf(() => poolConfigFromEnv({ DATABASE_URL: url }));
    expect(error.option).toBe('DATABASE_URL');
    expect(error.message).toContain(why);
    expect(error.message).toContain('expected a postgres:// or postgresql:// URL');
    expect(error.message).not.toContain(SECRET);
    expect(error.message).not.toContain(encodeURIComponent(SECRET));
    expect(error.message).toContain('***');
  });

  it('names the URL variable it read', () => {
    const error = errorOf(() =>
      poolConfigFromEnv({ PRIMARY_URL: 'mysql://x' }, { urlVariable: 'PRIMARY_URL' }),
    );
    expect(error.option).toBe('PRIMARY_URL');
  });

  it('redacts passwords in every place pg reads them from', () => {
    const encoded = encodeURIComponent(`${SECRET}@/:?#`);
    for (const url of [
      `postgres://app:${SECRET}@db:5432/app`,
      `postgres://app:${encoded}@db/app?sslmode=require`,
      `postgres://app@db/app?password=${SECRET}&sslmode=require`,
      `postgres://app:${SECRET}@/app`,
      `socket://app:${SECRET}@/var/run/postgresql?db=app`,
      `not a url app:${SECRET}@db`,
      `postgres://app:${SECRET}@db:99999/app`,
      `mysql://app:${SECRET}@db/app`,
    ]) {
      const redacted = redactConnectionString(url);
      expect(redacted, url).not.toContain(SECRET);
      expect(redacted, url).not.toContain(encoded);
      expect(redacted, url).toContain('***');
    }
    expect(redactConnectionString(`postgres://app:${SECRET}@db:5432/app?sslmode=require`)).toBe(
      'postgres://app:***@db:5432/app?sslmode=require',
    );
    expect(redactConnectionString(`postgres://app:${SECRET}@/app`)).toBe('postgres://app:***@/app');
    expect(redactConnectionString('postgres://db/app')).toBe('postgres://db/app');
  });

  it('parses what pg parses', () => {
    expect(
      parseConnectionString(`postgres://a%40b:${SECRET}@db.example:6432/my%20db?sslmode=require`),
    ).toEqual({
      redacted: 'postgres://a%40b:***@db.example:6432/my%20db?sslmode=require',
      kind: 'url',
      host: 'db.example',
      port: 6432,
      database: 'my db',
      user: 'a@b',
      hasPassword: true,
    });
    expect(parseConnectionString('postgres://[::1]:5433/app')).toMatchObject({ host: '::1', port: 5433 });
    expect(parseConnectionString('/tmp app')).toMatchObject({
      kind: 'socket',
      host: '/tmp',
      database: 'app',
    });
    expect(parseConnectionString('socket://u@/var/run/pg?db=app')).toMatchObject({
      kind: 'socket',
      host: '/var/run/pg',
      database: 'app',
    });
    expect(parseConnectionString('postgres://db')).toMatchObject({ database: undefined, port: undefined });
  });
});

describe('presets', () => {
  it('match the documented environments', () => {
    expect(presetConfig('development')).toEqual({
      max: 5,
      maxOverflow: 3,
      acquireTimeoutMs: 30_000,
      maxLifetimeMs: 3_600_000,
    });
    expect(presetConfig('staging')).toEqual({
      max: 20,
      maxOverflow: 10,
      acquireTimeoutMs: 30_000,
      maxLifetimeMs: 3_600_000,
    });
    expect(presetConfig('production')).toEqual({
      max: 40,
      maxOverflow: 20,
      acquireTimeoutMs: 30_000,
      maxLifetimeMs: 1_800_000,
    });
    for (const preset of Object.values(presets)) expect(preset.prePing).toBe(true);
    expect(presetConfig({ ...presets.production, prePing: false, recycleSeconds: -1 })).toMatchObject({
      validateAfterIdleMs: -1,
      maxLifetimeMs: 0,
    });
    expect(() => presetConfig('prod' as never)).toThrow(/preset: got "prod", expected one of "development"/);
  });

  it('come from DB_PRESET or the preset option', () => {
    expect(poolConfigFromEnv({ DB_PRESET: 'production' })).toEqual(presetConfig('production'));
    expect(poolConfigFromEnv({}, { preset: 'staging' })).toEqual(presetConfig('staging'));
    // The deployment's variable wins over the code's default.
    expect(poolConfigFromEnv({ DB_PRESET: 'development' }, { preset: 'production' })).toEqual(
      presetConfig('development'),
    );
  });

  it('are overridden field by field by explicit variables', () => {
    expect(poolConfigFromEnv({ DB_PRESET: 'production', DB_POOL_SIZE: '8' })).toMatchObject({
      max: 28,
      maxOverflow: 20,
    });
    expect(poolConfigFromEnv({ DB_PRESET: 'production', DB_MAX_OVERFLOW: '0' })).toMatchObject({
      max: 20,
      maxOverflow: 0,
    });
    expect(
      poolConfigFromEnv({
        DB_PRESET: 'staging',
        DB_POOL_TIMEOUT: '5',
        DB_POOL_RECYCLE: '-1',
        DB_POOL_PRE_PING: 'off',
      }),
    ).toEqual({
      max: 20,
      maxOverflow: 10,
      acquireTimeoutMs: 5_000,
      maxLifetimeMs: 0,
      validateAfterIdleMs: -1,
    });
    // DB_POOL_MIN is checked against the preset's kept size.
    expect(
      errorOf(() => poolConfigFromEnv({ DB_PRESET: 'development', DB_POOL_MIN: '3' })).message,
    ).toContain('kept pool size (2)');
  });
});
