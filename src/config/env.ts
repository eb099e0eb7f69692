/**
 * Pool configuration from environment variables, for twelve-factor deployments:
 * `new Pool(poolConfigFromEnv())`.
 *
 * | Variable             | Value                                   | Pool option                               |
 * |----------------------|-----------------------------------------|-------------------------------------------|
 * | `DATABASE_URL`       | `postgres://` or `postgresql://` URL, or a socket directory | `connectionString`    |
 * | `DB_PRESET`          | `development`, `staging`, `production`  | starting values (see `presets`)           |
 * | `DB_POOL_SIZE`       | integer 1-100: kept connections         | `max - maxOverflow`                       |
 * | `DB_MAX_OVERFLOW`    | integer 0-100: burst connections        | `maxOverflow`; `max = size + overflow`    |
 * | `DB_POOL_MIN`        | integer 0-size: idle connections kept   | `min`                                     |
 * | `DB_POOL_TIMEOUT`    | seconds 1-2147483 (decimals allowed)    | `acquireTimeoutMs`                        |
 * | `DB_POOL_RECYCLE`    | integer seconds -1-2147483; -1 or 0 off | `maxLifetimeMs` (0: off)                  |
 * | `DB_POOL_PRE_PING`   | true/false, 1/0, yes/no, on/off         | `validateAfterIdleMs` (false: -1)         |
 * | `DB_POOL_MODE`       | `queue` or `null` (no caching)          | `mode`                                    |
 * | `DB_POOL_NAME`       | 1-100 characters                        | `poolName`                                |
 * | `DB_CONNECT_TIMEOUT` | seconds 0.001-2147483                   | `connectTimeoutMs`                        |
 * | `DB_QUERY_TIMEOUT`   | seconds 0-2147483; 0 none               | `queryTimeoutMs`                          |
 * | `DB_MAX_WAITING`     | integer >= 0: callers allowed to queue  | `maxWaiting`                              |
 *
 * Unset variables leave the preset's value or, without a preset, the pool's default (10 kept connections,
 * no overflow, 30 s wait, 30 min lifetime, validation after 500 ms idle). A variable set to an empty
 * string counts as unset; values are trimmed. Any other `DB_POOL_*` name is rejected (with the closest
 * known name), and so is another `DB_*` name within two letters of one read here whose value that one
 * would accept (`DB_MAX_OVERFLOWS=5`), so a misspelt variable cannot be silently ignored.
 *
 * Server address and credentials beyond `DATABASE_URL` are left to pg, which reads them from
 * `process.env` for whatever the URL (or the absence of one) leaves open:
 * `PGHOST`, `PGPORT`, `PGUSER` (default: the OS user), `PGPASSWORD` (else `PGPASSFILE`/`~/.pgpass`),
 * `PGDATABASE` (default: the user name), `PGAPPNAME`, `PGSSLMODE`, `PGSSLNEGOTIATION`, `PGOPTIONS`,
 * `PGCLIENT_ENCODING`. pg does not read `PGSERVICE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` or
 * `PGTARGETSESSIONATTRS` (put those in the URL: `?sslrootcert=...`). In pg, `PGSSLMODE` values `prefer`,
 * `require`, `verify-ca` and `verify-full` all mean TLS with certificate verification (no plain-text
 * fallback), `no-verify` means TLS without verification, and `disable` and `allow` mean no TLS.
 * `PGCONNECT_TIMEOUT` only reaches pg-native; this pool bounds connecting with `connectTimeoutMs`. pg
 * reads these variables when a client is created. This module checks
 * `PGPORT` and `PGSSLMODE` because pg would silently misread bad values (a misspelt `PGSSLMODE`
 * means no TLS at all).
 */

import { engineDefaults } from '../engine/options.js';
import { InvalidOptionError } from '../errors.js';
import type { PoolConfig } from '../pg/config.js';
import { PRESET_NAMES, type PresetName, presetConfig, presets } from './presets.js';
import { distance, suggest } from './validate.js';

/** Options of {@link poolConfigFromEnv}. */
export interface EnvConfigOptions {
  /** Starting values when `DB_PRESET` is unset. Explicit variables override single fields. */
  preset?: PresetName;
  /** Prefix of the pool variables, for several pools in one process (`REPLICA_POOL_SIZE`). Default `'DB_'`. */
  prefix?: string;
  /** The variable holding the connection string. Default `'DATABASE_URL'`. */
  urlVariable?: string;
}

/** Largest whole number of seconds a Node timer can wait (2^31 - 1 ms). */
const MAX_SECONDS = 2_147_483;
const MAX_POOL_SIZE = 100;
const MAX_OVERFLOW = 100;
const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/;
const TRUE_WORDS = new Set(['true', '1', 'yes', 'on']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off']);
const PASSWORD_PARAM = /([?&]password=)[^&#]*/gi;
const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify'];

/** Name suffixes of the pool variables, after the prefix. */
const SUFFIXES = [
  'PRESET',
  'POOL_SIZE',
  'MAX_OVERFLOW',
  'POOL_MIN',
  'POOL_TIMEOUT',
  'POOL_RECYCLE',
  'POOL_PRE_PING',
  'POOL_MODE',
  'POOL_NAME',
  'CONNECT_TIMEOUT',
  'QUERY_TIMEOUT',
  'MAX_WAITING',
] as const;

type Env = Readonly<Record<string, string | undefined>>;

function fail(variable: string, value: string, expected: string): never {
  throw new InvalidOptionError(variable, `got ${JSON.stringify(value)}, expected ${expected}`);
}

function read(env: Env, variable: string): string | undefined {
  const value = env[variable]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

function integerVar(env: Env, variable: string, min: number, max: number, expected?: string) {
  const value = read(env, variable);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!INTEGER.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    fail(
      variable,
      value,
      expected ??
        (max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`),
    );
  }
  return n;
}

/** Seconds (decimals allowed) in [min, max], returned as whole milliseconds. */
function secondsVar(env: Env, variable: string, min: number, max: number, expected: string) {
  const value = read(env, variable);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!DECIMAL.test(value) || !Number.isFinite(n) || n < min || n > max) fail(variable, value, expected);
  // A positive value never rounds down to 0, which would mean "off" for some options.
  return n > 0 ? Math.max(1, Math.round(n * 1000)) : 0;
}

function booleanVar(env: Env, variable: string) {
  const value = read(env, variable);
  if (value === undefined) return undefined;
  const word = value.toLowerCase();
  if (TRUE_WORDS.has(word)) return true;
  if (FALSE_WORDS.has(word)) return false;
  return fail(variable, value, 'one of true, false, 1, 0, yes, no, on, off');
}

function enumVar<T extends string>(env: Env, variable: string, allowed: readonly T[]): T | undefined {
  const value = read(env, variable);
  if (value === undefined) return undefined;
  if (!allowed.includes(value as T)) fail(variable, value, `one of ${allowed.join(', ')}`);
  return value as T;
}

/**
 * Builds pool options from environment variables (see the table in this module's documentation).
 *
 * Order: the preset (`DB_PRESET`, else `options.preset`), then each variable that is set. Nothing set
 * gives `{}`, so the pool's defaults and pg's own `PG*` handling apply.
 *
 * @param env - The variables to read. Default `process.env`. pg itself reads the `PG*` connection
 *   variables from `process.env` only, whatever is passed here.
 * @throws InvalidOptionError naming the variable, its value and the allowed range, for a bad value or
 *   an unknown `DB_POOL_*` variable or a near-miss of a known one. A bad `DATABASE_URL` is shown with its
 *   password replaced by `***`.
 */
export function poolConfigFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  options: EnvConfigOptions = {},
): PoolConfig {
  const prefix = options.prefix ?? 'DB_';
  const urlVariable = options.urlVariable ?? 'DATABASE_URL';
  const name = (suffix: (typeof SUFFIXES)[number]) => `${prefix}${suffix}`;
  rejectUnknown(env, prefix);

  const presetName = enumVar(env, name('PRESET'), PRESET_NAMES) ?? options.preset;
  const config: PoolConfig = presetName === undefined ? {} : presetConfig(presetName);
  const preset = presetName === undefined ? undefined : presets[presetName];

  const url = read(env, urlVariable);
  if (url !== undefined) {
    checkConnectionString(url, urlVariable);
    config.connectionString = url;
  }

  const size = integerVar(env, name('POOL_SIZE'), 1, MAX_POOL_SIZE);
  const overflow = integerVar(env, name('MAX_OVERFLOW'), 0, MAX_OVERFLOW);
  if (size !== undefined || overflow !== undefined) {
    const kept = size ?? preset?.poolSize ?? engineDefaults.max - engineDefaults.maxOverflow;
    const extra = overflow ?? preset?.maxOverflow ?? engineDefaults.maxOverflow;
    config.max = kept + extra;
    config.maxOverflow = extra;
  }
  const kept = (config.max ?? engineDefaults.max) - (config.maxOverflow ?? engineDefaults.maxOverflow);
  const min = integerVar(env, name('POOL_MIN'), 0, kept, `an integer from 0 to the kept pool size (${kept})`);
  if (min !== undefined) config.min = min;

  const timeoutMs = secondsVar(
    env,
    name('POOL_TIMEOUT'),
    1,
    MAX_SECONDS,
    `a number of seconds from 1 to ${MAX_SECONDS}`,
  );
  if (timeoutMs !== undefined) config.acquireTimeoutMs = timeoutMs;

  const recycle = integerVar(
    env,
    name('POOL_RECYCLE'),
    -1,
    MAX_SECONDS,
    `whole seconds from -1 to ${MAX_SECONDS} (-1 or 0: never recycle)`,
  );
  if (recycle !== undefined) config.maxLifetimeMs = recycle <= 0 ? 0 : recycle * 1000;

  const prePing = booleanVar(env, name('POOL_PRE_PING'));
  if (prePing === false) config.validateAfterIdleMs = -1;
  else if (prePing === true) delete config.validateAfterIdleMs;

  const mode = enumVar(env, name('POOL_MODE'), ['queue', 'null'] as const);
  if (mode !== undefined) config.mode = mode;

  const poolName = read(env, name('POOL_NAME'));
  if (poolName !== undefined) {
    if (poolName.length > 100) fail(name('POOL_NAME'), poolName, 'a name of 1 to 100 characters');
    config.poolName = poolName;
  }

  const connectMs = secondsVar(
    env,
    name('CONNECT_TIMEOUT'),
    0.001,
    MAX_SECONDS,
    `a number of seconds from 0.001 to ${MAX_SECONDS}`,
  );
  if (connectMs !== undefined) config.connectTimeoutMs = connectMs;

  const queryMs = secondsVar(
    env,
    name('QUERY_TIMEOUT'),
    0,
    MAX_SECONDS,
    `a number of seconds from 0 (no deadline) to ${MAX_SECONDS}`,
  );
  if (queryMs !== undefined) config.queryTimeoutMs = queryMs;

  const maxWaiting = integerVar(env, name('MAX_WAITING'), 0, Number.MAX_SAFE_INTEGER);
  if (maxWaiting !== undefined) config.maxWaiting = maxWaiting;

  integerVar(env, 'PGPORT', 1, 65_535);
  enumVar(env, 'PGSSLMODE', SSL_MODES);
  return config;
}

/**
 * Refuses what can only be a mistake: any unknown `DB_POOL_*` variable (that name space is the pool's),
 * and an unknown `DB_*` variable one or two letters away from one the pool reads whose value that one
 * would accept (`DB_MAX_OVERFLOWS=5`). Other `DB_*` variables belong to the application (`DB_HOST`,
 * `DB_USER`, a `DB_RESET=true` that is not a misspelt `DB_PRESET`) and pass.
 */
function rejectUnknown(env: Env, prefix: string): void {
  const known = SUFFIXES.map((suffix) => `${prefix}${suffix}`);
  const reserved = `${prefix}POOL_`;
  for (const variable of Object.keys(env)) {
    const value = read(env, variable);
    if (!variable.startsWith(prefix) || known.includes(variable) || value === undefined) continue;
    const nearMiss = SUFFIXES.some(
      (suffix) => distance(variable, `${prefix}${suffix}`) <= 2 && plausibleFor(suffix, value),
    );
    if (!variable.startsWith(reserved) && !nearMiss) continue;
    const hint = suggest(variable, known);
    // The value is not shown: an unknown variable may hold anything, a password included.
    throw new InvalidOptionError(
      variable,
      `not a variable pg-steadfast reads${hint ? `; did you mean ${hint}?` : ''} (known: ${known.join(', ')})`,
    );
  }
}

/** Whether `value` is something the variable with this suffix would accept (by its shape). */
function plausibleFor(suffix: (typeof SUFFIXES)[number], value: string): boolean {
  switch (suffix) {
    case 'PRESET':
      return (PRESET_NAMES as readonly string[]).includes(value);
    case 'POOL_MODE':
      return value === 'queue' || value === 'null';
    case 'POOL_PRE_PING':
      return TRUE_WORDS.has(value.toLowerCase()) || FALSE_WORDS.has(value.toLowerCase());
    case 'POOL_NAME':
      return true;
    default:
      return /^-?\d+(\.\d+)?$/.test(value);
  }
}

// ---------------------------------------------------------------------------------------------------
// Connection strings

/** What {@link parseConnectionString} found; the password itself is never part of it. */
export interface ConnectionStringInfo {
  /** The connection string with its password (userinfo and `password=` parameter) replaced by `***`. */
  redacted: string;
  /** `'url'` for `postgres://` and `postgresql://`, `'socket'` for `socket:` URLs and `/dir dbname`. */
  kind: 'url' | 'socket';
  host: string | undefined;
  port: number | undefined;
  database: string | undefined;
  user: string | undefined;
  hasPassword: boolean;
}

/**
 * Replaces the password of a connection string (in the userinfo and in a `password=` parameter) with
 * `***`. Works on strings that are not valid URLs too, masking generously rather than leaking: for those,
 * everything between the user name and the last `@` is masked.
 */
export function redactConnectionString(connectionString: string): string {
  const parsed = tryParse(connectionString);
  return parsed && isPostgresScheme(parsed.url.protocol) && hasAuthority(connectionString)
    ? formatRedacted(parsed.url, parsed.dummyHost)
    : maskByText(connectionString);
}

/**
 * Whether `//` follows the scheme. Without it (`postgres:app:pw@host/db`) a URL parser reads no user,
 * password or host: all of it lands in the path, which is printed as it is, so only text masking is safe.
 */
function hasAuthority(connectionString: string): boolean {
  const colon = connectionString.indexOf(':');
  return colon >= 0 && connectionString.startsWith('//', colon + 1);
}

function maskByText(connectionString: string): string {
  let text = connectionString.replace(PASSWORD_PARAM, '$1***');
  const scheme = text.indexOf('://');
  const start = scheme < 0 ? 0 : scheme + 3;
  const at = text.lastIndexOf('@');
  if (at > start) {
    const colon = text.indexOf(':', start);
    if (colon >= 0 && colon < at) text = `${text.slice(0, colon)}:***${text.slice(at)}`;
  }
  return text;
}

function isPostgresScheme(protocol: string): boolean {
  return protocol === 'postgres:' || protocol === 'postgresql:' || protocol === 'socket:';
}

/** pg's leniencies, reproduced so that everything pg accepts is accepted here (pg-connection-string 2.x). */
function tryParse(text: string): { url: URL; dummyHost: boolean } | undefined {
  let str = text;
  if (/ |%[^a-f0-9]|%[a-f0-9][^a-f0-9]/i.test(str)) str = encodeURI(str).replace(/%25(\d\d)/g, '%$1');
  try {
    return { url: new URL(str), dummyHost: false };
  } catch {
    // pg retries an empty host (`postgres://user@/db`, host from PGHOST) with a placeholder.
  }
  try {
    return { url: new URL(str.replace('@/', '@___DUMMY___/')), dummyHost: true };
  } catch {
    return undefined;
  }
}

function formatRedacted(url: URL, dummyHost: boolean): string {
  const userinfo = url.username || url.password ? `${url.username}${url.password ? ':***' : ''}@` : '';
  const host = dummyHost ? '' : url.host;
  const search = url.search.replace(PASSWORD_PARAM, '$1***');
  // pg does not read a fragment, but a `password=` that ended up there is a password all the same.
  const hash = url.hash.replace(PASSWORD_PARAM, '$1***');
  return `${url.protocol}//${userinfo}${host}${url.pathname}${search}${hash}`;
}

/**
 * Parses a connection string the way pg does and checks what pg would misread or reject later: the
 * scheme, the port, and the percent-encoding of user and password. Accepts `postgres://` and
 * `postgresql://` URLs, `socket:` URLs and pg's `/socket/dir dbname` form.
 *
 * @param variable - Named in the error, e.g. `'DATABASE_URL'`. Default `'connectionString'`.
 * @throws InvalidOptionError showing the string with its password replaced by `***`.
 */
export function parseConnectionString(
  connectionString: string,
  variable = 'connectionString',
): ConnectionStringInfo {
  if (connectionString.startsWith('/')) {
    const [host = '', database] = connectionString.split(' ');
    return {
      redacted: redactConnectionString(connectionString),
      kind: 'socket',
      // pg takes the whole first word as the socket directory; a `password=` in it is masked all the same.
      host: redactConnectionString(host),
      port: undefined,
      database: database || undefined,
      user: undefined,
      hasPassword: false,
    };
  }
  const bad = (why: string): never => {
    throw new InvalidOptionError(
      variable,
      `got ${JSON.stringify(redactConnectionString(connectionString))}, expected a postgres:// or postgresql:// URL (${why})`,
    );
  };
  const parsed = tryParse(connectionString);
  if (!parsed) return bad(portProblem(connectionString) ?? 'not a URL');
  const { url, dummyHost } = parsed;
  const protocol = url.protocol;
  if (protocol.startsWith('postgres') && protocol.includes('+')) {
    return bad(`"${protocol.slice(0, -1)}" names a driver; use postgres://`);
  }
  if (!isPostgresScheme(protocol)) return bad(`the scheme is "${protocol.slice(0, -1)}"`);
  if (protocol !== 'socket:' && !hasAuthority(connectionString)) {
    return bad(`"//" must follow "${protocol}"`);
  }
  const hostname = (dummyHost ? '' : url.hostname).replace(/^\[(.+)\]$/, '$1');
  let user: string | undefined;
  let password: string;
  let path: string;
  let host: string;
  try {
    user = decodeURIComponent(url.username) || undefined;
    password = decodeURIComponent(url.password);
    path = decodeURI(url.pathname);
    host = decodeURIComponent(hostname);
  } catch {
    return bad('the user name, password, host or database name is not valid percent-encoding');
  }
  const hasPassword = password !== '' || url.searchParams.has('password');
  const redacted = redactConnectionString(connectionString);
  if (protocol === 'socket:') {
    return {
      redacted,
      kind: 'socket',
      host: path,
      port: undefined,
      database: url.searchParams.get('db') ?? undefined,
      user,
      hasPassword,
    };
  }
  const portText = url.searchParams.get('port') ?? url.port;
  let port: number | undefined;
  if (portText !== '') {
    port = Number(portText);
    if (!INTEGER.test(portText) || port < 1 || port > 65_535) {
      return bad(`the port ${JSON.stringify(portText)} is not a number from 1 to 65535`);
    }
  }
  return {
    redacted,
    kind: 'url',
    host: url.searchParams.get('host') ?? (host === '' ? undefined : host),
    port,
    database: path.length > 1 ? path.slice(1) : undefined,
    user: url.searchParams.get('user') ?? user,
    hasPassword,
  };
}

/** Why the port of an unparsable URL is wrong, when that is the reason. */
function portProblem(connectionString: string): string | undefined {
  const scheme = connectionString.indexOf('://');
  const authority = connectionString.slice(scheme < 0 ? 0 : scheme + 3).split(/[/?#]/, 1)[0] ?? '';
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  const port = /\]?:([^:\]]*)$/.exec(hostPort)?.[1];
  return port === undefined || (INTEGER.test(port) && Number(port) <= 65_535)
    ? undefined
    : `the port ${JSON.stringify(port)} is not a number from 1 to 65535`;
}

/** {@link parseConnectionString} for its checks only. */
export function checkConnectionString(connectionString: string, variable = 'connectionString'): void {
  parseConnectionString(connectionString, variable);
}
