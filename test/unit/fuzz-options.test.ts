/**
 * Property-based tests (fast-check) of every way configuration enters the pool: option objects given to
 * `new Pool(...)`, `resolvePoolConfig` and `resolveEngineOptions`, connection strings given to
 * `parseConnectionString`, `redactConnectionString` and `new Pool`, and environments given to
 * `poolConfigFromEnv`.
 *
 * The properties: any input either works or is refused with `InvalidOptionError` (never another
 * exception, never a crash later in the constructor) whose message names the option and shows the value
 * it refused; no message and no printed form of a pool ever contains a password from the input (every
 * generated config carries a sentinel password, in `password` and in connection strings, that includes
 * the test run's redaction marker); a misspelt pool option is refused with a "did you mean".
 *
 * Replay a failure with the seed and path fast-check prints: STEADFAST_FUZZ_SEED=<seed>.
 */
import { inspect } from 'node:util';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveEngineOptions } from '../../src/engine/options.js';
import {
  InvalidOptionError,
  Pool,
  type PoolConfig,
  parseConnectionString,
  poolConfigFromEnv,
  redactConnectionString,
} from '../../src/index.js';
import { CLIENT_KEYS as CLIENT_KEYS_SET, POOL_ONLY_KEYS, resolvePoolConfig } from '../../src/pg/config.js';
import { SENTINEL_MARKER } from '../../testbed/postgres.js';

const seed =
  process.env.STEADFAST_FUZZ_SEED === undefined ? undefined : Number(process.env.STEADFAST_FUZZ_SEED);
const runs = (n: number) => ({ numRuns: n, ...(seed === undefined ? {} : { seed }) });

// ---------------------------------------------------------------------------------------------------
// Secrets

/** Passwords that must never be shown. Each holds the marker the run watches the console for. */
const PASSWORDS = [
  `pw-${SENTINEL_MARKER}-fuzz`,
  // Characters that need percent-encoding in a URL, so the encoded and raw forms differ.
  `${SENTINEL_MARKER}:p@ss w%rd&x=1`,
  `${SENTINEL_MARKER}'"\\\`$;--`,
];
const passwordArb = fc.constantFrom(...PASSWORDS);

/** Every form in which a password may leak: raw, percent-encoded, and the marker itself. */
function secretForms(password: string): string[] {
  return [password, encodeURIComponent(password), encodeURI(password), SENTINEL_MARKER];
}

function expectNoSecret(text: string, password: string, where: string): void {
  for (const form of secretForms(password)) {
    if (text.includes(form))
      throw new Error(`${where} shows the password (${JSON.stringify(form)}): ${text}`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Option names and values

/** The pool's own option names (pg.Pool's and steadfast's), and pg.Client's, as the pool knows them. */
const POOL_KEYS = [...POOL_ONLY_KEYS];
const CLIENT_KEYS = [...CLIENT_KEYS_SET];

const BREAKER_KEYS = [
  'failureThreshold',
  'minOutageMs',
  'windowMs',
  'minThroughput',
  'failureRatio',
  'openMs',
  'probeTimeoutMs',
];
const RATE_LIMIT_KEYS = ['perSecond', 'burst'];
const KNOWN = new Set<string>([...POOL_KEYS, ...CLIENT_KEYS]);

/** Numbers that sit on or past every boundary: zero, negative zero, fractions, 1e9, 2^31, non-finite. */
const nastyNumber = fc.oneof(
  fc.constantFrom(
    0,
    -0,
    -1,
    0.5,
    1.5,
    1,
    2,
    10,
    100,
    1e4,
    10_001,
    1e9,
    1e21,
    2 ** 31 - 1,
    2 ** 31,
    2 ** 53,
    Number.MAX_VALUE,
    Number.MIN_VALUE,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
  ),
  fc.integer({ min: -1_000, max: 100_000 }),
  fc.double(),
);

/** Values of every type, including the ones that break naive formatting (symbols, bigints, cycles). */
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  nastyNumber,
  fc.boolean(),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 6 }),
  fc.constantFrom('queue', 'null', 'random', 'disable', 'read-write', 'any', '', ' ', '10', '1e9', 'NaN'),
  fc.constant(null),
  fc.constant(undefined),
  fc.bigInt({ min: -10n, max: 10n ** 12n }),
  fc.constant(Symbol('fuzz')),
  fc.array(fc.oneof(fc.integer(), fc.string({ maxLength: 5 })), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(fc.integer(), fc.boolean()), { maxKeys: 3 }),
  fc.constant(() => undefined),
  fc.constant(Object.create(null) as object),
  fc.constant(new Date(0)),
  fc.constant(
    (() => {
      const cycle: Record<string, unknown> = {};
      cycle.self = cycle;
      return cycle;
    })(),
  ),
);

/** A plausible (often valid) value for a known option, so construction gets past the first check. */
function plausible(key: string): fc.Arbitrary<unknown> {
  if (/(Ms|Millis)$/.test(key)) return fc.integer({ min: 0, max: 120_000 });
  if (key === 'maxLifetimeSeconds') return fc.integer({ min: 0, max: 3_600 });
  if (['max', 'poolSize', 'maxConnectConcurrency'].includes(key)) return fc.integer({ min: 1, max: 20 });
  if (['min', 'maxOverflow', 'maxUses'].includes(key)) return fc.integer({ min: 0, max: 5 });
  if (key === 'maxWaiting')
    return fc.oneof(fc.integer({ min: 0, max: 100 }), fc.constant(Number.POSITIVE_INFINITY));
  if (['retryQueries', 'idempotent', 'allowExitOnIdle', 'echo', 'echoPool', 'pgbouncer'].includes(key)) {
    return fc.boolean();
  }
  if (key === 'mode') return fc.constantFrom('queue', 'null');
  if (key === 'poolName') return fc.string({ minLength: 1, maxLength: 20 });
  if (key === 'logger') return fc.constant(false);
  if (key === 'circuitBreaker') return fc.oneof(fc.constant(false), optionObject(BREAKER_KEYS));
  if (key === 'rateLimit') return fc.oneof(fc.constant(false), optionObject(RATE_LIMIT_KEYS));
  if (key === 'targetSessionAttrs') {
    return fc.constantFrom('any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby');
  }
  if (key === 'loadBalanceHosts') return fc.constantFrom('disable', 'random');
  if (key === 'hosts') {
    return fc.array(
      fc.oneof(
        fc.constantFrom('127.0.0.1', 'localhost:5433', '[::1]:5432', 'db.example:1'),
        fc.record({ host: fc.constantFrom('a', 'b.example'), port: fc.integer({ min: 1, max: 65_535 }) }),
      ),
      { minLength: 1, maxLength: 3 },
    );
  }
  if (['verify', 'onConnect', 'log'].includes(key)) return fc.constant(() => undefined);
  if (key === 'host') return fc.constantFrom('127.0.0.1', 'localhost', '/tmp', 'db.example');
  if (key === 'port') return fc.integer({ min: 1, max: 65_535 });
  if (key === 'ssl') return fc.oneof(fc.boolean(), fc.constant({ rejectUnauthorized: false }));
  return anyValue;
}

/** An options object for a nested option (`circuitBreaker`, `rateLimit`), with typos and bad values. */
function optionObject(keys: readonly string[]): fc.Arbitrary<Record<string, unknown>> {
  const key = fc.oneof(
    { arbitrary: fc.constantFrom(...keys), weight: 4 },
    { arbitrary: typoOf(keys), weight: 1 },
  );
  return fc
    .array(
      key.chain((k) => fc.tuple(fc.constant(k), fc.oneof(nastyNumber, anyValue))),
      { maxLength: 3 },
    )
    .map((entries) => Object.fromEntries(entries));
}

/** Near-misses of real names: a letter dropped, doubled, swapped or changed, case or suffix changed. */
function typoOf(names: readonly string[]): fc.Arbitrary<string> {
  return fc
    .tuple(fc.constantFrom(...names), fc.nat(), fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz'), fc.nat(7))
    .map(([name, position, letter, kind]) => {
      const i = position % name.length;
      switch (kind) {
        case 0:
          return name.slice(0, i) + name.slice(i + 1);
        case 1:
          return name.slice(0, i) + name[i] + name.slice(i);
        case 2:
          return i + 1 < name.length
            ? name.slice(0, i) + name[i + 1] + name[i] + name.slice(i + 2)
            : `${name}s`;
        case 3:
          return name.slice(0, i) + letter + name.slice(i + 1);
        case 4:
          return name.slice(0, i) + name[i]!.toUpperCase() + name.slice(i + 1) === name
            ? name.slice(0, i) + name[i]!.toLowerCase() + name.slice(i + 1)
            : name.slice(0, i) + name[i]!.toUpperCase() + name.slice(i + 1);
        case 5:
          return name.replace(/Ms$/, '').replace(/Millis$/, 'Ms') || `${name}Ms`;
        case 6:
          return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
        default:
          return name + letter;
      }
    })
    .filter((typo) => typo.length > 0 && !names.includes(typo));
}

/** Keys of every kind: real ones, near-misses, random strings and prototype names. */
const keyArb = fc.oneof(
  { arbitrary: fc.constantFrom(...POOL_KEYS), weight: 6 },
  { arbitrary: fc.constantFrom(...CLIENT_KEYS.filter((k) => k !== 'password' && k !== 'stream')), weight: 2 },
  { arbitrary: typoOf(POOL_KEYS).filter((k) => !KNOWN.has(k)), weight: 2 },
  { arbitrary: fc.string({ minLength: 1, maxLength: 12 }), weight: 1 },
  {
    arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString', 'valueOf', 'hasOwnProperty'),
    weight: 1,
  },
);

const entryArb = keyArb.chain((key) =>
  fc.tuple(
    fc.constant(key),
    fc.oneof(
      { arbitrary: plausible(key), weight: 3 },
      { arbitrary: nastyNumber, weight: 1 },
      { arbitrary: anyValue, weight: 1 },
    ),
  ),
);

/** A URL carrying `password` in its userinfo (percent-encoded) or in a `password=` parameter. */
const urlWithPassword = fc
  .tuple(
    fc.constantFrom('postgres', 'postgresql'),
    fc.constantFrom('127.0.0.1', 'localhost', 'h1:5432,h2:5433', '[::1]', 'db.example'),
    fc.constantFrom('', ':5432', ':1'),
    fc.constantFrom('/app', '', '/'),
    fc.constantFrom('', '?sslmode=require', '?application_name=x&target_session_attrs=read-write'),
    fc.boolean(),
    passwordArb,
  )
  .map(([scheme, host, port, path, query, inParam, password]) => {
    const e = encodeURIComponent(password);
    const url = inParam
      ? `${scheme}://app@${host}${port}${path}${query}${query ? '&' : '?'}password=${e}`
      : `${scheme}://app:${e}@${host}${port}${path}${query}`;
    return { url, password };
  });

interface Fuzzed {
  config: Record<string, unknown>;
  password: string;
}

const configArb: fc.Arbitrary<Fuzzed> = fc
  .tuple(
    fc.array(entryArb, { maxLength: 5 }),
    passwordArb,
    fc.option(urlWithPassword, { nil: undefined }),
    fc.boolean(),
  )
  .map(([entries, password, url, passwordAsFunction]) => {
    const config: Record<string, unknown> = {};
    // defineProperty, so that keys such as __proto__ become own properties as JSON would make them.
    for (const [key, value] of entries) {
      Object.defineProperty(config, key, { value, enumerable: true, writable: true, configurable: true });
    }
    config.password = passwordAsFunction ? async () => password : password;
    if (url !== undefined) config.connectionString = url.url;
    return { config, password };
  });

// ---------------------------------------------------------------------------------------------------
// Checks

/** The ways a refusal may show the value it refused: the value itself, its JSON, or its type. */
function renderings(value: unknown): string[] {
  const forms: string[] = [typeof value];
  if (typeof value === 'string') forms.push(JSON.stringify(value));
  if (['number', 'boolean', 'bigint'].includes(typeof value)) forms.push(String(value));
  if (value === null || value === undefined) forms.push(String(value));
  try {
    const json = JSON.stringify(value);
    if (typeof json === 'string') forms.push(json);
  } catch {
    // Cycles and BigInts have no JSON form.
  }
  return forms;
}

/** The value at an option path such as `circuitBreaker.failureThreshold`, if the config has it. */
function valueAt(config: Record<string, unknown>, path: string): { found: boolean; value?: unknown } {
  let current: unknown = config;
  for (const part of path.replace(/\[(\d+)\]/g, '.$1').split('.')) {
    if (typeof current !== 'object' || current === null || !Object.hasOwn(current, part))
      return { found: false };
    current = (current as Record<string, unknown>)[part];
  }
  return { found: true, value: current };
}

/** Option names that stand for another one in messages (pg's spelling maps onto the pool's). */
const ALIASES: Record<string, string[]> = { max: ['poolSize'] };

/**
 * `error` is an `InvalidOptionError` whose message names its option and shows no password. Anything
 * else (a TypeError from deep inside the constructor, a leaked password) fails the property.
 */
function checkRefusal(error: unknown, passwords: string[]): asserts error is InvalidOptionError {
  if (!(error instanceof InvalidOptionError)) {
    const e = error as Error;
    throw new Error(`expected InvalidOptionError, got ${e?.constructor?.name}: ${e?.message}\n${e?.stack}`);
  }
  for (const password of passwords) expectNoSecret(error.message, password, 'the error message');
  expect(error.message).toContain(error.option);
}

/**
 * The refusal also shows what it refused ("got 1000000000", "got \"lifo\"", "got function"), unless it
 * refuses the name itself (unknown option) or a combination of options it cannot pin on one value.
 */
function checkShowsValue(error: InvalidOptionError, config: Record<string, unknown>): void {
  if (/unknown option|not a variable/.test(error.message)) return;
  const candidates = [error.option, ...(ALIASES[error.option] ?? [])];
  const at = candidates.map((path) => valueAt(config, path)).find((v) => v.found);
  if (at === undefined) return;
  const forms = renderings(at.value);
  if (!forms.some((form) => error.message.includes(`got ${form}`))) {
    throw new Error(
      `the refusal of ${error.option} does not show the value (${forms.join(' | ')}): ${error.message}`,
    );
  }
}

/** The password of a fuzzed config, in every form it was given (option and connection string). */
function passwordsOf(fuzzed: Fuzzed): string[] {
  const url = fuzzed.config.connectionString;
  const inUrl = typeof url === 'string' ? PASSWORDS.filter((p) => url.includes(encodeURIComponent(p))) : [];
  return [fuzzed.password, ...inUrl];
}

const opened: Pool[] = [];

afterAll(async () => {
  await Promise.all(opened.splice(0).map((pool) => pool.end()));
});

// ---------------------------------------------------------------------------------------------------
// Properties

describe('fuzzing option objects', () => {
  it('new Pool(options) constructs or throws InvalidOptionError naming the option, never showing a password', async () => {
    let constructed = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(configArb, async (fuzzed) => {
        let pool: Pool | undefined;
        try {
          pool = new Pool(fuzzed.config as PoolConfig);
        } catch (error) {
          refused++;
          checkRefusal(error, passwordsOf(fuzzed));
          return;
        }
        constructed++;
        try {
          // The printed forms of a pool never carry its password.
          for (const password of passwordsOf(fuzzed)) {
            expectNoSecret(inspect(pool, { depth: 5 }), password, 'util.inspect(pool)');
            expectNoSecret(JSON.stringify(pool), password, 'JSON.stringify(pool)');
            expectNoSecret(String(pool), password, 'String(pool)');
          }
          // Constructing opened nothing.
          expect(pool.totalCount).toBe(0);
        } finally {
          await pool.end();
        }
      }),
      runs(500),
    );
    // Both outcomes were exercised.
    expect(constructed).toBeGreaterThan(20);
    expect(refused).toBeGreaterThan(20);
  }, 60_000);

  it('resolvePoolConfig and resolveEngineOptions only ever throw InvalidOptionError; resolved values are sane', () => {
    fc.assert(
      fc.property(configArb, (fuzzed) => {
        try {
          resolvePoolConfig(fuzzed.config as PoolConfig);
        } catch (error) {
          checkRefusal(error, passwordsOf(fuzzed));
        }
        let engine: ReturnType<typeof resolveEngineOptions>;
        try {
          engine = resolveEngineOptions(fuzzed.config);
        } catch (error) {
          checkRefusal(error, passwordsOf(fuzzed));
          checkShowsValue(error, fuzzed.config);
          return;
        }
        expect(Number.isInteger(engine.max) && engine.max >= 1 && engine.max <= 10_000).toBe(true);
        expect(engine.maxOverflow).toBeGreaterThanOrEqual(0);
        expect(engine.maxOverflow).toBeLessThan(engine.max);
        expect(engine.min).toBeLessThanOrEqual(engine.max - engine.maxOverflow);
        expect(['queue', 'null']).toContain(engine.mode);
        expect(engine.maxWaiting === Number.POSITIVE_INFINITY || Number.isInteger(engine.maxWaiting)).toBe(
          true,
        );
        for (const [key, value] of Object.entries(engine)) {
          if (key === 'mode' || key === 'maxWaiting') continue;
          expect(Number.isFinite(value), key).toBe(true);
          expect(value as number, key).toBeGreaterThanOrEqual(key === 'validateAfterIdleMs' ? -1 : 0);
          // Every duration fits a Node timer (a larger one fires at once, with a warning).
          if (key.endsWith('Ms')) expect(value as number, key).toBeLessThanOrEqual(2_147_483_647);
        }
      }),
      runs(2_000),
    );
  });

  it('sizes, durations, booleans and enums are refused showing the value, before any connection is made', () => {
    for (const [key, value] of [
      ['max', 1e9],
      ['max', 0],
      ['max', Number.NaN],
      ['max', 2.5],
      ['poolSize', -3],
      ['maxOverflow', -1],
      ['min', Number.POSITIVE_INFINITY],
      ['acquireTimeoutMs', Number.POSITIVE_INFINITY],
      ['acquireTimeoutMs', -1],
      ['connectTimeoutMs', Number.NaN],
      ['idleTimeoutMillis', 1e12],
      ['connectionTimeoutMillis', '5000'],
      ['maxLifetimeSeconds', 1e9],
      ['mode', 'lifo'],
      ['retryQueries', 'yes'],
      ['poolName', ''],
      ['maxWaiting', -5],
      ['queryTimeoutMs', -0.5],
      ['rateLimit', 'fast'],
    ] as const) {
      const config = { password: PASSWORDS[0], [key]: value };
      let error: unknown;
      try {
        new Pool(config as PoolConfig);
      } catch (e) {
        error = e;
      }
      expect(error, `${key}: ${String(value)}`).toBeInstanceOf(InvalidOptionError);
      checkRefusal(error, [PASSWORDS[0]!]);
      checkShowsValue(error, config);
      expect(error.message).toMatch(/expected/);
    }
  });

  it('every refusal shows the value it refused', () => {
    fc.assert(
      fc.property(configArb, (fuzzed) => {
        try {
          resolvePoolConfig(fuzzed.config as PoolConfig);
        } catch (error) {
          checkRefusal(error, passwordsOf(fuzzed));
          checkShowsValue(error, fuzzed.config);
        }
      }),
      runs(2_000),
    );
  });

  // A refusal that formatted the value with JSON.stringify threw TypeError for these instead.
  it('a BigInt or a cyclic object where a string option belongs is refused with InvalidOptionError', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const key of ['targetSessionAttrs', 'loadBalanceHosts']) {
      for (const value of [3n, cyclic]) {
        let error: unknown;
        try {
          new Pool({ password: PASSWORDS[0], [key]: value } as unknown as PoolConfig);
        } catch (e) {
          error = e;
        }
        expect(error, key).toBeInstanceOf(InvalidOptionError);
      }
    }
  });

  // Spread into the defaults unchecked, 5 or null would pass as "the defaults" and [1] would be refused as
  // an unknown option "circuitBreaker.0".
  it('a circuitBreaker that is not an options object or false is refused showing the value', () => {
    for (const value of [5, 'on', null, [1]]) {
      let error: unknown;
      try {
        new Pool({ password: PASSWORDS[0], circuitBreaker: value } as unknown as PoolConfig);
      } catch (e) {
        error = e;
      }
      expect(error, String(value)).toBeInstanceOf(InvalidOptionError);
      expect((error as InvalidOptionError).option).toBe('circuitBreaker');
    }
  });
});

describe('misspelt option names', () => {
  // Names shorter than 5 characters are handed to pg.Client unchecked by design (src/pg/config.ts
  // MIN_TYPO_LENGTH: frameworks pass short keys of their own, and a two-letter name is close to too many
  // options), so `maxx` or `mn` are not caught; every longer near-miss is.
  it('a near-miss (5 characters or more) of a pool option is refused with a did-you-mean', () => {
    fc.assert(
      fc.property(typoOf(POOL_KEYS), anyValue, passwordArb, (typo, value, password) => {
        fc.pre(!KNOWN.has(typo) && typo.length >= 5);
        const config = { password, [typo]: value };
        let error: unknown;
        try {
          new Pool(config as PoolConfig);
        } catch (e) {
          error = e;
        }
        expect(error, `typo ${JSON.stringify(typo)}`).toBeInstanceOf(InvalidOptionError);
        expect((error as InvalidOptionError).option).toBe(typo);
        expect((error as Error).message).toMatch(/did you mean "?[A-Za-z]+"?\?/);
        expectNoSecret((error as Error).message, password, 'the error message');
      }),
      runs(1_000),
    );
  });

  it('the usual suspects name the intended option', () => {
    for (const [typo, meant] of [
      ['maxOverFlow', 'maxOverflow'],
      ['acquireTimeout', 'acquireTimeoutMs'],
      ['acquireTimeoutMillis', 'acquireTimeoutMs'],
      ['idleTimeoutMilis', 'idleTimeoutMillis'],
      ['max_overflow', 'maxOverflow'],
      ['connectTimeout', 'connectTimeoutMs'],
      ['poolname', 'poolName'],
    ]) {
      expect(() => new Pool({ password: PASSWORDS[0], [typo!]: 1 } as PoolConfig), typo).toThrow(
        new RegExp(`did you mean "?${meant}"?`),
      );
    }
  });

  it('near-misses inside circuitBreaker and rateLimit are refused with a did-you-mean', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(['circuitBreaker', BREAKER_KEYS] as const, ['rateLimit', RATE_LIMIT_KEYS] as const),
        fc.nat(),
        (which, n) => {
          const [option, keys] = which;
          const typo = fc.sample(typoOf(keys), { numRuns: 1, seed: n })[0]!;
          fc.pre(!keys.includes(typo));
          const config = {
            password: PASSWORDS[0],
            [option]: { [typo]: 1, ...(option === 'rateLimit' ? { perSecond: 5 } : {}) },
          };
          expect(() => new Pool(config as PoolConfig)).toThrow(InvalidOptionError);
          expect(() => new Pool(config as PoolConfig)).toThrow(new RegExp(`${option}\\.`));
        },
      ),
      runs(300),
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Connection strings and the environment

/** Connection strings with a password in its place, well-formed or broken in every part. */
function connectionStrings(schemes: readonly string[]) {
  return fc
    .tuple(
      fc.constantFrom(...schemes),
      fc.constantFrom('app', '', 'u%20x', 'us er', '%zz'),
      passwordArb,
      fc.constantFrom('encoded', 'raw', 'param', 'param-raw'),
      fc.constantFrom(
        'localhost',
        '127.0.0.1',
        '',
        '[::1]',
        'h1,h2:5433',
        'host with space',
        'ex%ample',
        'h%',
        'h%4',
        '%/',
      ),
      fc.constantFrom('', ':5432', ':0', ':65536', ':99999', ':abc', ':-1', ':', ':5432:5433'),
      fc.constantFrom('/db', '', '/', '/d%20b', '/%zz', '/a/b', '/db?'),
      fc.constantFrom(
        '',
        '?sslmode=require',
        '?port=abc',
        '?host=/tmp',
        '?sslmode=bogus&x=1',
        '#frag',
        '?a=%zz',
      ),
    )
    .map(([scheme, user, password, how, host, port, path, query]) => {
      const e = encodeURIComponent(password);
      const credentials =
        how === 'encoded' ? `${user}:${e}@` : how === 'raw' ? `${user}:${password}@` : user ? `${user}@` : '';
      const param =
        how === 'param'
          ? `password=${e}`
          : how === 'param-raw'
            ? `password=${password.replaceAll('&', '%26')}`
            : '';
      // The parameter goes before any fragment, where a URL's parameters are.
      const [beforeHash = '', hash] = `${path}${query}`.split('#');
      let tail = beforeHash;
      if (param) tail += tail.includes('?') ? `&${param}` : `?${param}`;
      if (hash !== undefined) tail += `#${hash}`;
      return { text: `${scheme}${credentials}${host}${port}${tail}`, password };
    });
}

/** Schemes with an authority (`//`): well-formed, or with a scheme pg does not take. */
const connectionStringArb = connectionStrings([
  'postgres://',
  'postgresql://',
  'postgres+psycopg://',
  'mysql://',
  'socket://',
  'http://',
  '',
]);

/** A scheme missing its slashes, so that the user and password land in the path: `postgres:/u:pw@h/db`. */
const slashlessArb = connectionStrings(['postgres:/', 'postgres:', 'postgresql:']);

/**
 * Whether the password is where a password belongs, so the redaction can know it: percent-encoded in a
 * URL's userinfo or `password=` parameter. A raw password with URL delimiters in it changes how the rest
 * of the string parses, so only its leading part up to the first delimiter is certain to be "the
 * password" (it starts with the marker, which must never show).
 */
function protectedForms(text: string, password: string): string[] {
  const e = encodeURIComponent(password);
  return text.includes(e) ? [password, e, SENTINEL_MARKER] : [SENTINEL_MARKER];
}

describe('fuzzing connection strings', () => {
  it('parseConnectionString and redactConnectionString never echo the password', () => {
    fc.assert(
      fc.property(connectionStringArb, ({ text, password }) => {
        const forms = protectedForms(text, password);
        const redacted = redactConnectionString(text);
        for (const form of forms) expect(redacted, `redacted ${JSON.stringify(text)}`).not.toContain(form);
        try {
          const info = parseConnectionString(text);
          const printed = JSON.stringify(info);
          for (const form of forms) expect(printed, `parsed ${JSON.stringify(text)}`).not.toContain(form);
        } catch (error) {
          if (!(error instanceof InvalidOptionError)) throw error;
          for (const form of forms)
            expect(error.message, `error for ${JSON.stringify(text)}`).not.toContain(form);
          expect(error.option).toBe('connectionString');
        }
      }),
      runs(3_000),
    );
  });

  it('arbitrary text never makes the parsers throw anything but InvalidOptionError', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.webUrl()),
        (text) => {
          redactConnectionString(text);
          try {
            parseConnectionString(text);
          } catch (error) {
            if (!(error instanceof InvalidOptionError)) throw error;
          }
        },
      ),
      runs(3_000),
    );
  });

  it('new Pool({ connectionString }) constructs or refuses without echoing the password', async () => {
    await fc.assert(
      fc.asyncProperty(connectionStringArb, async ({ text, password }) => {
        const forms = protectedForms(text, password);
        let pool: Pool | undefined;
        try {
          pool = new Pool({ connectionString: text, logger: false });
        } catch (error) {
          if (!(error instanceof InvalidOptionError)) throw error;
          for (const form of forms)
            expect(error.message, `error for ${JSON.stringify(text)}`).not.toContain(form);
          return;
        }
        try {
          for (const printed of [inspect(pool, { depth: 5 }), JSON.stringify(pool), String(pool)]) {
            for (const form of forms)
              expect(printed, `printed pool for ${JSON.stringify(text)}`).not.toContain(form);
          }
        } finally {
          await pool.end();
        }
      }),
      runs(1_000),
    );
  });

  it("poolConfigFromEnv refuses bad variables with InvalidOptionError naming them, never echoing DATABASE_URL's password", () => {
    const variables = [
      'DB_PRESET',
      'DB_POOL_SIZE',
      'DB_MAX_OVERFLOW',
      'DB_POOL_MIN',
      'DB_POOL_TIMEOUT',
      'DB_POOL_RECYCLE',
      'DB_POOL_PRE_PING',
      'DB_POOL_MODE',
      'DB_POOL_NAME',
      'DB_CONNECT_TIMEOUT',
      'DB_QUERY_TIMEOUT',
      'DB_MAX_WAITING',
      'PGPORT',
      'PGSSLMODE',
      'DB_POOL_SIZ',
      'DB_POOL_TIMOUT',
      'DB_POOL_EXTRA',
    ];
    const envValue = fc.oneof(
      fc.constantFrom(
        '',
        ' ',
        '0',
        '1',
        '5',
        '-1',
        '1.5',
        '1e9',
        'NaN',
        'Infinity',
        '0x10',
        ' 7 ',
        'true',
        'off',
        'yes',
      ),
      fc.constantFrom(
        'development',
        'staging',
        'production',
        'prod',
        'queue',
        'null',
        'require',
        'verify-full',
        'bogus',
      ),
      fc.integer({ min: -5, max: 200 }).map(String),
      fc.string({ maxLength: 8 }),
    );
    fc.assert(
      fc.property(
        fc.dictionary(fc.constantFrom(...variables), envValue, { maxKeys: 4 }),
        fc.option(connectionStringArb, { nil: undefined }),
        (vars, url) => {
          const env: NodeJS.ProcessEnv = { ...vars, ...(url ? { DATABASE_URL: url.text } : {}) };
          const forms = url ? protectedForms(url.text, url.password) : [SENTINEL_MARKER];
          try {
            poolConfigFromEnv(env);
          } catch (error) {
            if (!(error instanceof InvalidOptionError)) throw error;
            expect(Object.keys(env)).toContain(error.option);
            for (const form of forms) expect(error.message).not.toContain(form);
            const value = env[error.option]!.trim();
            if (!/not a variable/.test(error.message) && error.option !== 'DATABASE_URL') {
              expect(error.message).toContain(JSON.stringify(value));
            }
          }
        },
      ),
      runs(3_000),
    );
  });

  // A host ending in an incomplete percent-escape (`postgres://app:pw@h%`, `...@h%4`) once made
  // parseConnectionString throw URIError ("URI malformed").
  it('a host with an incomplete percent-escape is refused with InvalidOptionError', () => {
    for (const text of ['postgres://app@h%', `postgres://app:${encodeURIComponent(PASSWORDS[0]!)}@h%4`]) {
      let error: unknown;
      try {
        poolConfigFromEnv({ DATABASE_URL: text });
      } catch (e) {
        error = e;
      }
      expect(error, text).toBeInstanceOf(InvalidOptionError);
      expect((error as Error).message).not.toContain(SENTINEL_MARKER);
    }
  });

  // A connection string missing the slashes after its scheme (`postgres:/app:pw@host/db`,
  // `postgres:app:pw@host/db`) parses as a URL without an authority: user and password land in its path,
  // which a URL-based redaction would print as it is.
  it('a connection string missing the slashes after its scheme never echoes the password', () => {
    fc.assert(
      fc.property(slashlessArb, ({ text, password }) => {
        const forms = protectedForms(text, password);
        for (const form of forms) expect(redactConnectionString(text)).not.toContain(form);
        try {
          const info = parseConnectionString(text);
          for (const form of forms) expect(JSON.stringify(info)).not.toContain(form);
        } catch (error) {
          if (!(error instanceof InvalidOptionError)) throw error;
          for (const form of forms) expect(error.message).not.toContain(form);
        }
      }),
      runs(500),
    );
  });

  // A `password=` that ended up in the fragment (`postgres://app@h/db#x?password=secret`): pg does not read
  // it as a password, but it is one.
  it('a password= parameter after a fragment is masked too', () => {
    const text = `postgres://app@localhost/db#frag?password=${encodeURIComponent(PASSWORDS[0]!)}`;
    expect(redactConnectionString(text)).not.toContain(SENTINEL_MARKER);
  });

  it("parseConnectionString's redacted form of a socket path masks a password= in it", () => {
    const text = `/db?password=${encodeURIComponent(PASSWORDS[0]!)}`;
    expect(redactConnectionString(text)).not.toContain(SENTINEL_MARKER);
    expect(parseConnectionString(text).redacted).not.toContain(SENTINEL_MARKER);
  });

  it('a near-miss of any DB_* variable the pool reads is refused with a did-you-mean', () => {
    for (const [typo, value] of [
      ['DB_MAX_OVERFLOWS', '5'],
      ['DB_CONECT_TIMEOUT', '5'],
      ['DB_QUERY_TIMOUT', '2.5'],
      ['DB_MAX_WATING', '100'],
      ['DB_PRESETS', 'production'],
      ['DB_POOLSIZE', '20'],
    ] as const) {
      expect(() => poolConfigFromEnv({ [typo]: value }), typo).toThrow(/did you mean/);
    }
  });

  it("leaves the application's own DB_* variables alone, near names whose values the pool would refuse included", () => {
    for (const [variable, value] of [
      ['DB_HOST', 'db.internal'],
      ['DB_USER', 'app'],
      ['DB_RESET', 'true'], // one letter from DB_PRESET, but no preset is called "true"
      ['DB_CONNECTION_TIMEOUT', '5'],
      ['DB_MAX_CONNECTIONS', '20'],
    ] as const) {
      expect(() => poolConfigFromEnv({ [variable]: value }), variable).not.toThrow();
    }
  });
});
