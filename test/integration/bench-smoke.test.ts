/**
 * Keeps `npm run bench` working: every benchmark child runs once, on tiny settings, against the build in
 * dist/, and must report results of the right shape. Speed is not asserted here (benchmarks are not
 * tests); that a benchmark still runs, and still measures what its report says, is.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const dist = join(root, 'dist', 'index.js');

type RunChild = (script: string, config: object) => Promise<any>;

async function runChild(script: string, config: object): Promise<any> {
  if (!existsSync(dist)) throw new Error('dist/ is missing: run `npm run build` first (npm test does)');
  const util = (await import(join(root, 'bench', 'lib', 'util.mjs') as string)) as { runChild: RunChild };
  return util.runChild(script, config);
}

const positive = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value > 0;

describe('benchmark smoke run', () => {
  it('micro: every kind of contender completes cycles (engine, callback API, anchors, pool face, metrics on)', async () => {
    for (const contender of [
      'steadfast',
      'steadfast-callback',
      'generic-pool',
      'bare-list',
      'pool-steadfast',
      'pool-steadfast-prometheus',
      'pool-steadfast-otel',
    ]) {
      for (const callers of [1, 4]) {
        const result = await runChild('micro.mjs', {
          contender,
          callers,
          warmupMs: 10,
          sampleMs: 30,
          samples: 1,
        });
        expect(result.rates, `${contender} × ${callers}`).toHaveLength(1);
        expect(positive(result.rates[0]), `${contender} × ${callers}`).toBe(true);
      }
    }
  });

  it('scaling and memory: each measure reports a cost per operation, and no waiter is left behind', async () => {
    for (const measure of ['acquireRelease', 'acquireReleaseParked', 'timeout', 'abort']) {
      const result = await runChild('scaling.mjs', {
        contender: 'steadfast',
        measure,
        waiters: 10,
        cycles: 2_000,
        batch: 200,
        passes: 1,
      });
      expect(positive(result[measure].ns), measure).toBe(true);
      expect(result[measure].nsWithoutGc).toBeLessThanOrEqual(result[measure].ns);
    }
    const memory = await runChild('memory.mjs', { count: 2_000 });
    for (const key of ['aborted', 'timedOut', 'sharedSignal']) expect(typeof memory[key], key).toBe('number');
    expect(memory.waitingAfter).toBe(0);
  });

  it('e2e: every contender runs SELECT 1 and INSERT against a real server without a failed query, pinned to CPUs', async () => {
    const result = await runChild('e2e.mjs', {
      rounds: 1,
      slotMs: 40,
      warmupMs: 10,
      firstPassMs: 20,
      callers: 8,
      workloads: ['select', 'insert'],
      pin: true,
    });
    expect(result.errors).toBe(0);
    // Pinned where taskset and two CPUs exist (as on CI); elsewhere the report gives the reason.
    if (result.pinned.reason === undefined)
      expect(result.pinned).toEqual({ client: '0', server: expect.any(String) });
    else expect(result.pinned.reason).toMatch(/Linux|CPU|taskset/);
    const names = new Set(result.rows.map((row: { name: string }) => row.name));
    for (const name of [
      'raw pg.Client ×10 (ceiling)',
      'steadfast Pool',
      'steadfast Pool + Prometheus metrics',
      'steadfast Pool + OpenTelemetry metrics',
      'pg.Pool',
      'postgres.js',
      'postgres.js, a new instance each turn',
    ]) {
      expect(names.has(name), name).toBe(true);
    }
    for (const row of result.rows) expect(positive(row.rate), `${row.workload} ${row.name}`).toBe(true);
  });
});
