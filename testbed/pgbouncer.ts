/**
 * Disposable, real PgBouncer instances in front of test bed PostgreSQL servers.
 *
 * Each instance is the system's `pgbouncer` binary (Debian package `pgbouncer`; `.ci/run` installs it) with
 * a generated configuration in a private directory under `os.tmpdir()`, listening on a private loopback
 * port. Faults are produced by PgBouncer itself: its own shutdowns and restarts, and `PAUSE`/`RESUME`,
 * `RELOAD` and the other commands of its admin console.
 *
 * The binary is `STEADFAST_PGBOUNCER_BIN` when set, otherwise `/usr/sbin/pgbouncer`, otherwise `pgbouncer`
 * on the `PATH`. PgBouncer refuses to run as root, so when this process is root it runs as the same
 * unprivileged OS user as the PostgreSQL servers (see `serverOsUser` in `./postgres.ts`).
 *
 * @module
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, openSync, readFileSync, rmSync } from 'node:fs';
import { chown, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import pg from 'pg';
import { getFreeServerPort } from './ports.js';
import { type ClientConfig, type OsIdentity, onTestbedExit, serverOsUser } from './postgres.js';

/** Where PgBouncer sends its server connections, and the credentials clients log in with. */
export interface PgBouncerTarget {
  host: string;
  port: number;
  /** Role clients log in as, through PgBouncer, and that PgBouncer logs in to the server as. */
  user: string;
  password: string;
  /** Database on the server. */
  database: string;
}

/**
 * PgBouncer's `pool_mode`: when a server connection goes back to the pool. `'transaction'` is the mode
 * most deployments use, and the one in which session state (`SET`, named prepared statements,
 * advisory locks) leaks between clients.
 */
export type PoolMode = 'session' | 'transaction' | 'statement';

/** A value for a `pgbouncer.ini` setting. Booleans are written as `1`/`0`. */
export type PgBouncerSettingValue = string | number | boolean;

/**
 * How {@link PgBouncer.stop} ends the process, named after PostgreSQL's shutdown modes:
 * - `'smart'`: SIGINT, PgBouncer's safe shutdown (`PAUSE`, then `SHUTDOWN`): waits until no client holds
 *   a server connection (in transaction mode, until running transactions end; in session mode, until
 *   clients disconnect), then closes every connection. After 30 s the process is killed.
 * - `'fast'`: SIGTERM, an immediate `SHUTDOWN`: every client and server connection is closed at once.
 * - `'immediate'`: SIGKILL, a crash: the kernel closes the sockets, nothing is sent to anyone.
 */
export type PgBouncerStopMode = 'smart' | 'fast' | 'immediate';

/** Options for {@link PgBouncer.start}. */
export interface PgBouncerOptions {
  /** The server and the credentials that clients use; e.g. `server.clientConfig()` of a `PostgresServer`. */
  target: PgBouncerTarget;
  /** Default: `'transaction'`. */
  poolMode?: PoolMode;
  /** `default_pool_size`: server connections per user and database. Default: 20 (PgBouncer's). */
  defaultPoolSize?: number;
  /** `max_client_conn`: client connections PgBouncer accepts in all. Default: 100 (PgBouncer's). */
  maxClientConn?: number;
  /**
   * Database name clients connect to; PgBouncer maps it to {@link PgBouncerTarget.database}.
   * Default: the same name.
   */
  database?: string;
  /**
   * Port to listen on at `127.0.0.1`. Default: a free port below the ephemeral range (`getFreeServerPort`),
   * so that the same port is free again for {@link PgBouncer.restart}.
   */
  port?: number;
  /**
   * Extra `[pgbouncer]` settings, written after the test bed's so that they override them; e.g.
   * `{ query_wait_timeout: 5, server_reset_query: '' }`. Names are validated.
   */
  settings?: Record<string, PgBouncerSettingValue>;
}

/** Login for PgBouncer's admin console (database `pgbouncer`); exists in PgBouncer's user list only. */
const ADMIN_USER = 'steadfast_pgbouncer_admin';
/** Prefix of every directory this module creates in `os.tmpdir()`. */
const DIR_PREFIX = 'steadfast-pgbouncer-';
/** File in each directory naming the process that owns it and the PgBouncer it runs. */
const OWNER_MARKER = 'steadfast-owner.json';
const CONFIG_FILE = 'pgbouncer.ini';
const USERLIST_FILE = 'userlist.txt';
const LOG_FILE = 'pgbouncer.log';
const DEFAULT_BINARY = '/usr/sbin/pgbouncer';
/** Milliseconds PgBouncer may take to accept admin connections after it was launched. */
const START_TIMEOUT_MS = 10_000;
/** Milliseconds to wait for the process to exit after a SIGINT or SIGTERM before killing it. */
const STOP_TIMEOUT_MS = 30_000;
const PORT_ATTEMPTS = 10;
const ADMIN_CONNECT_TIMEOUT_MS = 5_000;
/** Milliseconds one readiness probe may take to connect while PgBouncer starts. */
const READY_PROBE_TIMEOUT_MS = 1_000;
const POLL_INTERVAL_MS = 20;

/**
 * Settings every instance starts with, before the per-instance ones (listen address, port, files, pool
 * mode and sizes) and the caller's.
 */
const BASE_SETTINGS: Readonly<Record<string, PgBouncerSettingValue>> = {
  // PostgreSQL 17 stores SCRAM verifiers, so MD5 logins to it are impossible; with plain-text passwords in
  // the user list PgBouncer runs SCRAM on both sides: as the server towards clients, as the client
  // towards PostgreSQL.
  auth_type: 'scram-sha-256',
  // No Unix socket: instances would otherwise contend for /tmp/.s.PGSQL.<port>.
  unix_socket_dir: '',
  // After a failed server login PgBouncer fails every new client at once for this long (default 15 s),
  // which would turn a server restart of a few hundred milliseconds into 15 s of errors.
  server_login_retry: 0.5,
  // How long a client's query waits for a server connection before PgBouncer fails it with 08P01
  // (default 120 s, twice a test's time limit): a test whose server stays down sees the error instead of
  // a timeout of its own.
  query_wait_timeout: 10,
  // Some drivers send this startup parameter, which PgBouncer otherwise rejects.
  ignore_startup_parameters: 'extra_float_digits',
};

const SETTING_NAME = /^[a-z_][a-z0-9_]*$/;
/** Database and role names written into the configuration unquoted. */
const SAFE_NAME = /^[A-Za-z0-9_]+$/;

/** Instances of this process that may be running, for the exit hook. */
const live = new Set<PgBouncer>();
let reapPromise: Promise<void> | undefined;
let exitHookInstalled = false;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function findBinary(): string | undefined {
  const candidates = [process.env.STEADFAST_PGBOUNCER_BIN, DEFAULT_BINARY];
  for (const dir of (process.env.PATH ?? '').split(delimiter))
    if (dir) candidates.push(join(dir, 'pgbouncer'));
  for (const candidate of candidates) {
    if (!candidate) continue;
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Try the next one.
    }
  }
  return undefined;
}

function renderValue(name: string, value: PgBouncerSettingValue): string {
  if (typeof value === 'boolean') return value ? '1' : '0';
  if (typeof value === 'number') {
    if (!Number.isFinite(value))
      throw new RangeError(`PgBouncer setting ${name} must be finite, got ${value}`);
    return String(value);
  }
  if (/[\r\n]/.test(value)) throw new Error(`PgBouncer setting ${name} must be a single line`);
  return value;
}

function renderSettings(settings: Readonly<Record<string, PgBouncerSettingValue>>): string {
  return Object.entries(settings)
    .map(([name, value]) => {
      if (!SETTING_NAME.test(name)) throw new Error(`invalid PgBouncer setting name: ${name}`);
      return `${name} = ${renderValue(name, value)}`;
    })
    .join('\n');
}

/** A value for PgBouncer's libpq-style connection string, quoted when it needs to be. */
function connValue(value: string | number): string {
  const text = String(value);
  return /^[A-Za-z0-9_.-]+$/.test(text) ? text : `'${text.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/** A field of the user list: double-quoted, with double quotes doubled. */
function userlistField(value: string): string {
  if (/[\r\n]/.test(value)) throw new Error('PgBouncer user names and passwords must be single lines');
  return `"${value.replaceAll('"', '""')}"`;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
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

/**
 * Removes directories (and kills PgBouncers) left behind by processes of this host that died without
 * running their exit hooks, e.g. after SIGKILL.
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
            bouncerPid?: unknown;
          };
          if (owner.hostname !== hostname() || typeof owner.pid !== 'number') return;
          if (owner.pid === process.pid || processAlive(owner.pid)) return;
          const pid = owner.bouncerPid;
          // The command line names the configuration file, which guards against a recycled pid.
          if (typeof pid === 'number' && processAlive(pid)) {
            const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
            if (cmdline.includes('pgbouncer') && cmdline.includes(dir)) process.kill(pid, 'SIGKILL');
          }
          await rm(dir, { recursive: true, force: true });
        } catch {
          // Not ours to judge, or already removed.
        }
      }),
  );
}

/**
 * A real PgBouncer listening on `127.0.0.1`, pooling connections to one database of one server.
 *
 * Create one with {@link PgBouncer.start} (or {@link withPgBouncer}) and always {@link destroy} it.
 * Instances that are not destroyed are killed and removed when the process exits (including on SIGINT,
 * SIGTERM and SIGHUP); directories of processes that were killed outright are removed by the next process
 * that starts one.
 *
 * Clients log in with the target's user and password ({@link clientConfig}, {@link connectionString});
 * the admin console (database `pgbouncer`) has a login of its own ({@link adminConfig}), used by
 * {@link admin}, {@link pause}, {@link resume}, {@link reload} and {@link show}.
 *
 * Lifecycle methods ({@link start}, {@link stop}, {@link restart}) are serialised.
 */
export class PgBouncer {
  /** Address PgBouncer listens on; always `'127.0.0.1'`. */
  readonly host = '127.0.0.1';
  /** Database name clients connect to. */
  readonly database: string;
  /** Pool mode the instance started with. */
  readonly poolMode: PoolMode;
  /** Private directory holding the configuration, the user list and the log. */
  readonly dir: string;
  /** File receiving everything PgBouncer logs. */
  readonly logFile: string;

  #port = 0;
  #target: PgBouncerTarget;
  readonly #options: PgBouncerOptions;
  readonly #binary: string;
  readonly #identity: OsIdentity | undefined;
  readonly #adminPassword = randomBytes(18).toString('base64url');
  #child: ChildProcess | undefined;
  /** Cleared by the child's 'exit' or 'error' event; a child that failed to spawn has no exit code. */
  #alive = false;
  #exited: Promise<void> = Promise.resolve();
  #lifecycle: Promise<unknown> = Promise.resolve();
  #destroying: Promise<void> | undefined;

  private constructor(
    dir: string,
    binary: string,
    identity: OsIdentity | undefined,
    options: PgBouncerOptions,
  ) {
    this.dir = dir;
    this.logFile = join(dir, LOG_FILE);
    this.#binary = binary;
    this.#identity = identity;
    this.#options = options;
    this.#target = { ...options.target };
    this.database = options.database ?? options.target.database;
    this.poolMode = options.poolMode ?? 'transaction';
  }

  /** Whether a PgBouncer binary was found; tests that need one skip when it is missing. */
  static available(): boolean {
    return findBinary() !== undefined;
  }

  /**
   * Writes a configuration and a user list, starts PgBouncer and resolves once its admin console accepts
   * connections. Server connections are opened lazily, when the first client needs one.
   *
   * @param options - See {@link PgBouncerOptions}; `target` is required.
   * @throws If the binary is missing (see {@link available}), an option is invalid, or PgBouncer does not
   *   start (the message includes its log).
   */
  static async start(options: PgBouncerOptions): Promise<PgBouncer> {
    const binary = findBinary();
    if (!binary) {
      throw new Error(
        'pgbouncer not found: install the pgbouncer package (apt-get install pgbouncer) ' +
          'or set STEADFAST_PGBOUNCER_BIN to the binary',
      );
    }
    const { target } = options;
    const database = options.database ?? target.database;
    for (const [what, name] of [
      ['database', database],
      ['target database', target.database],
      ['user', target.user],
    ] as const) {
      if (!SAFE_NAME.test(name)) throw new Error(`PgBouncer ${what} name must match ${SAFE_NAME}: ${name}`);
    }
    if (target.user === ADMIN_USER) {
      throw new Error(`the user name ${ADMIN_USER} is reserved by the test bed`);
    }
    for (const [name, value] of [
      ['defaultPoolSize', options.defaultPoolSize],
      ['maxClientConn', options.maxClientConn],
    ] as const) {
      if (value !== undefined && (!Number.isInteger(value) || value < 1)) {
        throw new RangeError(`${name} must be a positive integer, got ${value}`);
      }
    }
    if (
      options.port !== undefined &&
      (!Number.isInteger(options.port) || options.port < 1 || options.port > 65_535)
    ) {
      throw new RangeError(`port must be an integer from 1 to 65535, got ${options.port}`);
    }
    renderSettings(options.settings ?? {});

    reapPromise ??= reapStale();
    await reapPromise;
    const identity = await serverOsUser();
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      // Runs from the test bed's single set of exit and signal hooks (see onTestbedExit).
      onTestbedExit(() => {
        for (const bouncer of live) bouncer.#killSync();
        live.clear();
      });
    }
    const dir = await mkdtemp(join(tmpdir(), DIR_PREFIX));
    const bouncer = new PgBouncer(dir, binary, identity, options);
    live.add(bouncer);
    try {
      if (identity) await chown(dir, identity.uid, identity.gid);
      await bouncer.#writeMarker();
      await bouncer.#serial(() => bouncer.#launch(options.port === undefined ? 'pick' : 'fixed'));
      return bouncer;
    } catch (error) {
      await bouncer.destroy();
      throw error;
    }
  }

  /** TCP port on `127.0.0.1`; stays the same across {@link stop}, {@link start} and {@link restart}. */
  get port(): number {
    return this.#port;
  }

  /** The server PgBouncer currently sends connections to (changed by {@link retarget}). */
  get target(): PgBouncerTarget {
    return { ...this.#target };
  }

  /** `postgres://user:password@127.0.0.1:port/database` through PgBouncer, each part percent-encoded. */
  get connectionString(): string {
    const e = encodeURIComponent;
    const { user, password } = this.#target;
    return `postgres://${e(user)}:${e(password)}@${this.host}:${this.#port}/${e(this.database)}`;
  }

  /** Parameters for `pg.Client`/`pg.Pool` that connect through PgBouncer. A new object on every call. */
  clientConfig(): ClientConfig {
    return {
      host: this.host,
      port: this.#port,
      user: this.#target.user,
      password: this.#target.password,
      database: this.database,
    };
  }

  /**
   * Parameters for a `pg.Client` on the admin console (database `pgbouncer`). The console understands the
   * simple query protocol only: send commands without parameters.
   */
  adminConfig(): ClientConfig {
    return {
      host: this.host,
      port: this.#port,
      user: ADMIN_USER,
      password: this.#adminPassword,
      database: 'pgbouncer',
    };
  }

  /** Whether the PgBouncer process is running. */
  isRunning(): boolean {
    return this.#alive;
  }

  /** Process id of the running PgBouncer, or undefined when it is not running. */
  get pid(): number | undefined {
    return this.isRunning() ? this.#child?.pid : undefined;
  }

  /**
   * Starts a stopped PgBouncer on the same port and configuration, resolving once it accepts connections.
   * Does nothing if it is running.
   */
  start(): Promise<void> {
    return this.#serial(async () => {
      this.#assertUsable();
      if (!this.isRunning()) await this.#launch('keep');
    });
  }

  /**
   * Stops PgBouncer and waits until the process has exited; see {@link PgBouncerStopMode} for what clients
   * see. Does nothing if it is not running.
   *
   * @param mode - Default `'fast'`.
   */
  stop(mode: PgBouncerStopMode = 'fast'): Promise<void> {
    return this.#serial(() => this.#halt(mode));
  }

  /** {@link stop} followed by {@link start}, keeping the port. Clients must reconnect. */
  restart(mode: PgBouncerStopMode = 'fast'): Promise<void> {
    return this.#serial(async () => {
      this.#assertUsable();
      await this.#halt(mode);
      await this.#launch('keep');
    });
  }

  /**
   * Runs one command on the admin console (`SHOW POOLS`, `PAUSE`, `KILL db`, ...) over a short-lived
   * connection and returns its rows.
   */
  async admin<R extends pg.QueryResultRow = any>(command: string): Promise<R[]> {
    return this.#admin<R>(command, ADMIN_CONNECT_TIMEOUT_MS);
  }

  async #admin<R extends pg.QueryResultRow>(command: string, connectTimeoutMs: number): Promise<R[]> {
    const client = new pg.Client({ ...this.adminConfig(), connectionTimeoutMillis: connectTimeoutMs });
    client.on('error', () => undefined);
    await client.connect();
    try {
      // Without parameters pg uses the simple query protocol, the only one the console understands.
      const result = await client.query<R>(command);
      return result.rows;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /**
   * `PAUSE`: waits for running queries (in transaction mode, open transactions) to finish, then closes
   * every server connection; queries of clients arriving meanwhile wait until {@link resume}. Resolves
   * once PgBouncer holds no server connection.
   *
   * @param database - Only this database; default every database.
   */
  async pause(database?: string): Promise<void> {
    await this.admin(database === undefined ? 'PAUSE' : `PAUSE ${pg.escapeIdentifier(database)}`);
  }

  /** `RESUME` after {@link pause}: waiting clients get server connections again. */
  async resume(database?: string): Promise<void> {
    await this.admin(database === undefined ? 'RESUME' : `RESUME ${pg.escapeIdentifier(database)}`);
  }

  /** `RELOAD`: re-reads the configuration and user list. */
  async reload(): Promise<void> {
    await this.admin('RELOAD');
  }

  /** `SHOW <what>`, e.g. `show('POOLS')`, `show('CLIENTS')`, `show('DATABASES')`. */
  async show<R extends pg.QueryResultRow = any>(what: string): Promise<R[]> {
    if (!/^[A-Za-z_]+$/.test(what)) throw new Error(`not a SHOW subject: ${what}`);
    return this.admin<R>(`SHOW ${what}`);
  }

  /**
   * Points the database at another server (e.g. a promoted standby) and reloads. Server connections to the
   * old one are closed once released; new ones go to `target`. The client-facing credentials stay the same
   * unless `target` changes them too.
   */
  async retarget(target: Partial<PgBouncerTarget>): Promise<void> {
    const next = { ...this.#target, ...target };
    if (!SAFE_NAME.test(next.user) || !SAFE_NAME.test(next.database)) {
      throw new Error(`PgBouncer user and database names must match ${SAFE_NAME}`);
    }
    this.#target = next;
    await this.#writeConfig();
    if (this.isRunning()) await this.reload();
  }

  /** PgBouncer's log so far (empty if nothing was logged yet). Useful in failure messages. */
  async readLog(): Promise<string> {
    return readFrom(this.logFile, 0);
  }

  /**
   * Kills PgBouncer and removes its directory. Idempotent and never rejects; concurrent and later calls
   * share the first call's work.
   */
  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      await this.#kill();
      // A start may have been in flight; once it settles nothing else can launch PgBouncer.
      await this.#lifecycle;
      await this.#kill();
      live.delete(this);
      await rm(this.dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
    })();
    return this.#destroying;
  }

  /** Kills the process and removes the directory synchronously, for the exit hook. */
  #killSync(): void {
    try {
      if (this.isRunning()) this.#child?.kill('SIGKILL');
    } catch {
      // Already gone.
    }
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch {
      // Nothing more can be done while the process exits.
    }
  }

  async #kill(): Promise<void> {
    if (this.isRunning()) this.#child?.kill('SIGKILL');
    await this.#exited;
  }

  #assertUsable(): void {
    if (this.#destroying) throw new Error(`PgBouncer on port ${this.#port} has been destroyed`);
  }

  #serial<T>(operation: () => Promise<T>): Promise<T> {
    const next = this.#lifecycle.then(operation, operation);
    this.#lifecycle = next.catch(() => undefined);
    return next;
  }

  async #writeMarker(): Promise<void> {
    await writeFile(
      join(this.dir, OWNER_MARKER),
      JSON.stringify({ pid: process.pid, hostname: hostname(), bouncerPid: this.pid ?? null }),
    );
  }

  /**
   * Writes `pgbouncer.ini` and the user list, owned by the user PgBouncer runs as, which re-reads them on
   * `RELOAD`.
   */
  async #writeConfig(): Promise<void> {
    const target = this.#target;
    const options = this.#options;
    const server = [
      `host=${connValue(target.host)}`,
      `port=${target.port}`,
      `dbname=${connValue(target.database)}`,
    ].join(' ');
    const ini = [
      '[databases]',
      `${this.database} = ${server}`,
      '',
      '[pgbouncer]',
      renderSettings({
        listen_addr: this.host,
        listen_port: this.#port,
        auth_file: join(this.dir, USERLIST_FILE),
        admin_users: ADMIN_USER,
        pool_mode: this.poolMode,
        ...BASE_SETTINGS,
        ...(options.defaultPoolSize === undefined ? {} : { default_pool_size: options.defaultPoolSize }),
        ...(options.maxClientConn === undefined ? {} : { max_client_conn: options.maxClientConn }),
      }),
      '; caller settings',
      renderSettings(options.settings ?? {}),
      '',
    ].join('\n');
    const userlist = [
      `${userlistField(target.user)} ${userlistField(target.password)}`,
      `${userlistField(ADMIN_USER)} ${userlistField(this.#adminPassword)}`,
      '',
    ].join('\n');
    for (const [name, content] of [
      [CONFIG_FILE, ini],
      [USERLIST_FILE, userlist],
    ] as const) {
      const path = join(this.dir, name);
      await writeFile(path, content, { mode: 0o600 });
      if (this.#identity) await chown(path, this.#identity.uid, this.#identity.gid);
    }
  }

  /**
   * Starts PgBouncer and waits until its admin console answers. When the port turns out to be taken, a
   * port the test bed picked (`'pick'`) is replaced, the port of a restart (`'keep'`) is retried after a
   * pause, since clients expect PgBouncer back where it was, and a port the caller chose (`'fixed'`) fails.
   */
  async #launch(port: 'pick' | 'keep' | 'fixed'): Promise<void> {
    if (port === 'pick') this.#port = await getFreeServerPort();
    else if (port === 'fixed') this.#port = this.#options.port!;
    for (let attempt = 1; ; attempt++) {
      this.#assertUsable();
      await this.#writeConfig();
      const logOffset = await fileSize(this.logFile);
      this.#spawn();
      await this.#writeMarker();
      const error = await this.#waitReady();
      if (!error) return;
      await this.#kill();
      const log = await readFrom(this.logFile, logOffset);
      if (port !== 'fixed' && /Address already in use/i.test(log) && attempt < PORT_ATTEMPTS) {
        if (port === 'pick') this.#port = await getFreeServerPort();
        else await delay(200);
        continue;
      }
      throw new Error(
        `PgBouncer failed to start on port ${this.#port} (${this.dir}): ${error}\n--- log ---\n${log.trim()}`,
      );
    }
  }

  #spawn(): void {
    // stdout and stderr go straight to the log file, so that no pipe ties PgBouncer's lifetime to ours.
    const log = openSync(this.logFile, 'a');
    try {
      const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, LANG: 'C', LC_ALL: 'C' };
      const child = spawn(this.#binary, [join(this.dir, CONFIG_FILE)], {
        ...(this.#identity ? { uid: this.#identity.uid, gid: this.#identity.gid } : {}),
        cwd: this.dir,
        env,
        // Its own process group: a Ctrl-C meant for the test run does not reach it; the exit hook kills it.
        detached: true,
        stdio: ['ignore', log, log],
      });
      child.unref();
      this.#child = child;
      this.#alive = true;
      this.#exited = new Promise((resolve) => {
        const onEnd = (): void => {
          if (this.#child === child) this.#alive = false;
          resolve();
        };
        child.once('exit', onEnd);
        child.once('error', onEnd);
      });
    } finally {
      closeSync(log);
    }
  }

  /** Resolves with undefined once the admin console answers, or with the reason it never will. */
  async #waitReady(): Promise<string | undefined> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let lastError = 'timed out';
    for (;;) {
      if (!this.isRunning()) {
        await this.#exited;
        const child = this.#child;
        return `process exited (code ${child?.exitCode ?? 'none'}, signal ${child?.signalCode ?? 'none'})`;
      }
      try {
        // Whatever else may listen on the port cannot answer with this instance's admin password; the
        // race notices a PgBouncer that exits (say, because the port was taken) while the probe waits.
        const exited = this.#exited.then(() => Promise.reject(new Error('process exited')));
        exited.catch(() => undefined);
        await Promise.race([this.#admin('SHOW VERSION', READY_PROBE_TIMEOUT_MS), exited]);
        return undefined;
      } catch (error) {
        lastError = (error as Error).message;
      }
      if (Date.now() >= deadline) return `not ready within ${START_TIMEOUT_MS} ms (${lastError})`;
      await delay(POLL_INTERVAL_MS);
    }
  }

  async #halt(mode: PgBouncerStopMode): Promise<void> {
    if (!this.isRunning()) return;
    const signal = mode === 'smart' ? 'SIGINT' : mode === 'fast' ? 'SIGTERM' : 'SIGKILL';
    this.#child!.kill(signal);
    const exited = await Promise.race([
      this.#exited.then(() => true),
      delay(STOP_TIMEOUT_MS).then(() => false),
    ]);
    if (!exited) {
      this.#child!.kill('SIGKILL');
      await this.#exited;
    }
  }
}

/**
 * Starts a PgBouncer, passes it to `fn`, and destroys it afterwards whether `fn` resolves or throws.
 *
 * @param fn - Work to do with the instance; its result is returned.
 * @param options - Passed to {@link PgBouncer.start}.
 */
export async function withPgBouncer<T>(
  fn: (bouncer: PgBouncer) => Promise<T>,
  options: PgBouncerOptions,
): Promise<T> {
  const bouncer = await PgBouncer.start(options);
  try {
    return await fn(bouncer);
  } finally {
    await bouncer.destroy();
  }
}
