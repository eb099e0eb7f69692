/**
 * The foundation's fault acceptance, run once directly against the server and once through a TCP proxy
 * (two files, so the two runs go in parallel).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AcquireTimeoutError, ConnectTimeoutError, ErrorCodes } from '../../src/index.js';
import { ChaosProxy } from '../../testbed/chaos-proxy.js';
import { PostgresServer } from '../../testbed/postgres.js';
import {
  describeResult,
  runScenario,
  type ScenarioResult,
  scenarios,
  sleep,
} from '../support/fault-harness.js';

function expectClean(result: ScenarioResult) {
  const sf = result.steadfast;
  expect(result.crashes, 'no uncaught exception or unhandled rejection').toEqual([]);
  expect(sf.missing, 'acknowledged writes missing from the table').toEqual([]);
  expect(sf.duplicates, 'writes present twice').toEqual([]);
  expect(sf.connectionsAfterEnd, 'server connections left after end()').toBe(0);
}

export function defineFaultSuite(path: 'direct' | 'proxy') {
  describe(`faults under load (${path})`, () => {
    let server: PostgresServer;
    let proxy: ChaosProxy | undefined;

    beforeAll(async () => {
      server = await PostgresServer.start();
      if (path === 'proxy') proxy = await ChaosProxy.start({ host: server.host, port: server.port });
    });

    afterAll(async () => {
      await proxy?.close();
      await server?.destroy();
    });

    const context = () => ({ server, proxy });

    it('survives a fast restart with no failed request', async () => {
      const result = await runScenario(scenarios.restart, context());
      console.log(describeResult(`${scenarios.restart.name} (${path})`, result));
      expectClean(result);
      expect(result.steadfast.writes.failuresByCode).toEqual({});
      expect(result.steadfast.reads.failuresByCode).toEqual({});
    });

    it('survives a 3 s immediate stop: only writes in flight at the kill may fail, as outcome unknown', async () => {
      const result = await runScenario(scenarios.immediateStop, context());
      console.log(describeResult(`${scenarios.immediateStop.name} (${path})`, result));
      expectClean(result);
      expect(result.steadfast.reads.failuresByCode).toEqual({});
      const failed = result.steadfast.writes.outcomes.filter((o) => !o.ok);
      for (const outcome of failed) {
        expect((outcome.error as { code?: string }).code).toBe(ErrorCodes.OUTCOME_UNKNOWN);
        expect(outcome.startedAt).toBeLessThan(result.marks.killed!);
      }
      expect(failed.length).toBeLessThanOrEqual(10);
    });

    it('survives pg_terminate_backend of every connection with no failed request', async () => {
      const result = await runScenario(scenarios.terminate, context());
      console.log(describeResult(`${scenarios.terminate.name} (${path})`, result));
      expectClean(result);
      expect(result.steadfast.writes.failuresByCode).toEqual({});
      expect(result.steadfast.reads.failuresByCode).toEqual({});
    });

    it('survives refused connections for 3 s with no failed request', async () => {
      const result = await runScenario(scenarios.refuse, context());
      console.log(describeResult(`${scenarios.refuse.name} (${path})`, result));
      expectClean(result);
      expect(result.steadfast.writes.failuresByCode).toEqual({});
      expect(result.steadfast.reads.failuresByCode).toEqual({});
      expect(result.steadfastStats.counters.connectsFailed).toBeGreaterThan(0);
    });

    if (path === 'proxy') {
      it('settles every request by its 2 s deadline through an 8 s partition, and recovers within 1 s', async () => {
        const deadlineMs = 2_000;
        const result = await runScenario(
          {
            name: 'network partition for 8 s (nothing flows, nothing closes)',
            inject: async ({ proxy }, marks) => {
              proxy!.freeze();
              await sleep(8_000);
              proxy!.pass();
              marks.healed = performance.now();
            },
          },
          context(),
          {
            writesPerSec: 140,
            readsPerSec: 60,
            durationMs: 12_000,
            steadfastOptions: { queryTimeoutMs: deadlineMs },
          },
        );
        console.log(describeResult(`network partition for 8 s (${path})`, result));
        expectClean(result);
        const outcomes = [...result.steadfast.writes.outcomes, ...result.steadfast.reads.outcomes];
        const late = outcomes.filter((o) => o.endedAt - o.startedAt > deadlineMs + 250);
        expect(late, 'requests that outlived their deadline').toEqual([]);
        for (const outcome of outcomes.filter((o) => !o.ok)) {
          expect(['ERR_STEADFAST_TIMEOUT', 'ERR_STEADFAST_ACQUIRE_TIMEOUT']).toContain(
            (outcome.error as { code?: string }).code,
          );
        }
        const healed = result.marks.healed!;
        const firstSuccess = Math.min(
          ...outcomes.filter((o) => o.ok && o.endedAt > healed).map((o) => o.endedAt),
        );
        console.log(`  first success ${Math.round(firstSuccess - healed)} ms after the path healed`);
        expect(firstSuccess - healed).toBeLessThan(1_000);
      }, 120_000);

      it('fails requests by their deadline when connects hang, with the connect timeout as cause', async () => {
        const deadlineMs = 3_000;
        const result = await runScenario(
          {
            name: 'connects hang for 4 s (proxy accepts, never answers)',
            inject: async ({ server, proxy }) => {
              proxy!.blackhole();
              await server.terminateBackends();
              await sleep(4_000);
              proxy!.pass();
            },
          },
          context(),
          { steadfastOptions: { acquireTimeoutMs: deadlineMs, connectTimeoutMs: 1_000 } },
        );
        console.log(describeResult(`connects hang for 4 s (${path})`, result));
        expectClean(result);
        const failed = [...result.steadfast.writes.outcomes, ...result.steadfast.reads.outcomes].filter(
          (o) => !o.ok,
        );
        expect(failed.length).toBeGreaterThan(0);
        for (const outcome of failed) {
          expect(outcome.error).toBeInstanceOf(AcquireTimeoutError);
          expect((outcome.error as AcquireTimeoutError).cause).toBeInstanceOf(ConnectTimeoutError);
          // Settled by the deadline (plus scheduling slack on a busy two-core machine), never later.
          expect(outcome.endedAt - outcome.startedAt).toBeLessThan(deadlineMs + 1_000);
        }
        // Work resumes once the path heals.
        expect(result.steadfast.writes.outcomes.at(-1)?.ok).toBe(true);
      }, 90_000);
    }
  });
}
