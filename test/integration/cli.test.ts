/**
 * The built `steadfast` command, run as users run it (`node dist/cli.js ...`): help, the size
 * calculator, doctor against a real server, and the exit codes scripts rely on (0 ok, 1 problems,
 * 2 usage error, 3 cannot connect). Needs `npm run build` first (`npm test` does it).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreeServerPort } from '../../testbed/ports.js';
import { PostgresServer } from '../../testbed/postgres.js';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const PASSWORD = 'Cli-S3NT1NEL-b71c';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment without anything that would change what the command reads. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'DATABASE_URL' || key.startsWith('DB_') || key.startsWith('PG')) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

function run(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: cleanEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr });
    });
  });
}

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first`);
});

describe('help', () => {
  it('prints the commands and exits 0', async () => {
    for (const args of [['--help'], ['-h']]) {
      const result = await run(args);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('Usage: steadfast <command>');
      for (const command of ['demo', 'doctor [url]', 'size']) expect(result.stdout).toContain(command);
      expect(result.stdout).toContain('3 cannot connect');
    }
  });

  it.each([
    [['doctor', '--help'], 'Usage: steadfast doctor [url] [options]'],
    [['help', 'doctor'], 'Usage: steadfast doctor [url] [options]'],
    [['size', '-h'], 'Usage: steadfast size --cores <N>'],
    [['demo', '--help'], 'Usage: steadfast demo [options]'],
    [['--help', 'size'], 'Usage: steadfast size --cores <N>'],
  ])('%o prints that command’s options', async (args, heading) => {
    const result = await run(args);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(heading);
  });
});

describe('size', () => {
  it('computes cores × 2 + spindles', async () => {
    const result = await run(['size', '--cores', '4', '--spindles', '1']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('4 cores × 2 + 1 spindle = 9 connections');
    expect(result.stdout).toContain('DB_POOL_SIZE=9');
  });

  it('computes the traffic size per pod, as JSON', async () => {
    const result = await run(['size', '--rps', '400', '--query-ms', '50', '--pods', '4', '--json']);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({
      pods: 4,
      demand: { requestsPerSecond: 400, queryMs: 50, queriesPerRequest: 1, connections: 20 },
      total: 20,
      perPod: 5,
    });
  });

  it('takes the smaller of capacity and demand', async () => {
    const result = await run(['size', '--cores', '4', '--rps', '1000', '--query-ms', '20', '--json']);
    expect(JSON.parse(result.stdout)).toMatchObject({ total: 8, perPod: 8 });
  });

  it('exits 1 when the pods do not fit max_connections', async () => {
    const fits = await run(['size', '--cores', '8', '--pods', '3', '--max-connections', '100']);
    expect(fits.code).toBe(0);
    expect(fits.stdout).toContain('within max_connections 100');
    const short = await run([
      'size',
      '--cores',
      '8',
      '--pods',
      '3',
      '--max-overflow',
      '4',
      '--max-connections',
      '30',
    ]);
    expect(short.code).toBe(1);
    expect(short.stdout).toContain('3 instances × (6 + 4 overflow) + 3 reserved = 33 connections');
  });
});

describe('usage errors exit 2', () => {
  it.each([
    [[], 'No command given'],
    [['frobnicate'], 'Unknown command "frobnicate"'],
    [['help', 'frobnicate'], 'Unknown command "frobnicate"'],
    [['size'], 'size needs --cores, or --rps with --query-ms'],
    [['size', '--rps', '10'], '--rps and --query-ms go together'],
    [['size', '--cores', 'four'], '--cores must be an integer >= 1, got "four"'],
    [['size', '--cores', '4', '--pods', '0'], '--pods must be an integer >= 1'],
    [['size', '--spindles', '2'], '--spindles needs --cores'],
    [['size', '--cores', '4', '--bogus'], "Unknown option '--bogus'"],
    [['doctor'], 'doctor needs a connection URL'],
    [['doctor', 'postgres://a/b', 'extra'], 'Unexpected argument "extra"'],
    [['doctor', 'postgres://a/b', '--instances', '0'], '--instances must be an integer >= 1, got "0"'],
    [['doctor', 'postgres://a/b', '--timeout-ms=-5'], '--timeout-ms must be an integer >= 1, got "-5"'],
    [['doctor', 'postgres://a/b', '--rate', '5'], "Unknown option '--rate'"],
    [['demo', '--rate', '0'], '--rate must be a positive number'],
  ])('%o', async (args, message) => {
    const result = await run(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
    expect(result.stdout).toBe('');
  });

  it('rejects a malformed URL without printing its password', async () => {
    const result = await run(['doctor', `postgresql+asyncpg://app:${PASSWORD}@db/app`]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('Invalid option url');
    expect(result.stderr).toContain('postgresql+asyncpg://app:***@db/app');
    expect(result.stderr).not.toContain(PASSWORD);
  });

  it('rejects a bad pool configuration in the environment, naming the variable', async () => {
    const result = await run(['doctor', 'postgres://127.0.0.1:1/x'], { DB_POOL_SIZE: '0' });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('DB_POOL_SIZE: got "0", expected an integer from 1 to 100');
  });
});

describe('doctor against a server', () => {
  let server: PostgresServer;
  let leaky: pg.Client;
  let leakyPid: number;

  beforeAll(async () => {
    server = await PostgresServer.start({ password: PASSWORD });
    leaky = new pg.Client({ ...server.clientConfig(), application_name: 'cli-leaky' });
    leaky.on('error', () => undefined);
    await leaky.connect();
    leakyPid = (await leaky.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    await leaky.query('BEGIN');
    await leaky.query('SELECT 1');
  });

  afterAll(async () => {
    await leaky?.end().catch(() => undefined);
    await server?.destroy();
  });

  it('--json lists the session idle in a transaction and exits 0', async () => {
    const result = await run(['doctor', server.connectionString, '--json', '--instances', '2']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout);
    expect(report).toMatchObject({
      connected: true,
      ok: true,
      target: expect.stringContaining(':***@127.0.0.1:'),
      budget: { instances: 2, poolSize: 10, maxOverflow: 0, ok: true },
    });
    expect(report.idleInTransaction).toContainEqual(
      expect.objectContaining({ pid: leakyPid, applicationName: 'cli-leaky', state: 'idle in transaction' }),
    );
    expect(result.stdout).not.toContain(PASSWORD);
  });

  it('reads the URL and the pool size from the environment, and exits 1 on problems', async () => {
    const result = await run(['doctor', '--idle-in-transaction-s', '0'], {
      DATABASE_URL: server.connectionString,
      DB_PRESET: 'production',
    });
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(`pid ${leakyPid}`);
    expect(result.stdout).toContain('WARNING idle-in-transaction');
    expect(result.stdout).toContain('1 instance × (20 + 20 overflow)');
    expect(result.stdout).toMatch(/Result: \d+ problems?/);
    expect(result.stdout + result.stderr).not.toContain(PASSWORD);
  });

  it('exits 3 when the server cannot be reached', async () => {
    const port = await getFreeServerPort();
    const result = await run([
      'doctor',
      `postgres://app:${PASSWORD}@127.0.0.1:${port}/app`,
      '--timeout-ms',
      '3000',
    ]);
    expect(result.code).toBe(3);
    expect(result.stdout).toContain('Cannot connect');
    expect(result.stdout).toContain('ECONNREFUSED');
    expect(result.stdout).toContain(`postgres://app:***@127.0.0.1:${port}/app`);
    expect(result.stdout + result.stderr).not.toContain(PASSWORD);

    const json = await run(['doctor', `postgres://app@127.0.0.1:${port}/app`, '--json']);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stdout)).toMatchObject({
      connected: false,
      connectError: { code: 'ECONNREFUSED' },
    });
  });
});
