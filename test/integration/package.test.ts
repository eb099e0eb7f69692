/**
 * The built package, imported the way users import it: as an ES module and as CommonJS, through the
 * `exports` map. Also checks that a pool never holds the process open: a script that forgets `end()`
 * still exits once its idle connection times out.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresServer } from '../../testbed/postgres.js';

let server: PostgresServer;

beforeAll(async () => {
  server = await PostgresServer.start();
});

afterAll(async () => {
  await server?.destroy();
});

function runConsumer(
  file: string,
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const path = fileURLToPath(new URL(`../fixtures/${file}`, import.meta.url));
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path], {
      env: { ...process.env, DATABASE_URL: server.connectionString, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
  });
}

describe('the built package', () => {
  for (const [file, format] of [
    ['consumer.mjs', 'esm'],
    ['consumer.cjs', 'cjs'],
  ] as const) {
    it(`works when loaded as ${format}`, async () => {
      const result = await runConsumer(file, { END_POOL: '1' });
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout)).toEqual({
        subpaths: true,
        format,
        n: 1,
        isPgPool: true,
        name: 'Pool',
        typedError: true,
      });
    });

    it(`lets a ${format} process exit on its own without end()`, async () => {
      const result = await runConsumer(file, { END_POOL: '0' });
      expect(result.code).toBe(0);
      // The idle connection closes after 200 ms (checked every second); nothing else holds the process.
      expect(result.ms).toBeLessThan(10_000);
    });
  }
});

describe('allowExitOnIdle', () => {
  it('lets the process exit while an idle connection is still open', async () => {
    const result = await runConsumer('consumer.mjs', { END_POOL: '0', ALLOW_EXIT_ON_IDLE: '1' });
    expect(result.code).toBe(0);
    expect(result.ms).toBeLessThan(10_000);
  });
});

describe('the built type declarations', () => {
  it('type-check for a strict consumer with skipLibCheck off', async () => {
    const tsc = fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url));
    const fixture = fileURLToPath(new URL('../fixtures/consumer-types.ts', import.meta.url));
    const args = [tsc, '--noEmit', '--strict', '--skipLibCheck', 'false', '--module', 'nodenext'];
    const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn(process.execPath, [
        ...args,
        '--moduleResolution',
        'nodenext',
        '--types',
        'node',
        fixture,
      ]);
      let output = '';
      child.stdout.on('data', (chunk) => (output += chunk));
      child.stderr.on('data', (chunk) => (output += chunk));
      child.on('close', (code) => resolve({ code, output }));
    });
    expect(result.output).toBe('');
    expect(result.code).toBe(0);
  }, 60_000);
});
