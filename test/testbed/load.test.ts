import { describe, expect, it } from 'vitest';
import {
  errorCodeOf,
  percentile,
  type RequestOutcome,
  runOpenLoop,
  UNSETTLED,
  verifyWrites,
} from '../../testbed/load.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function codedError(code: string): Error {
  return Object.assign(new Error(code), { code });
}

describe('runOpenLoop', () => {
  it('starts requests at the requested rate, independent of how long they take', async () => {
    const starts: number[] = [];
    const t0 = performance.now();
    const report = await runOpenLoop({
      ratePerSec: 200,
      durationMs: 1000,
      // Each request takes far longer than the interval: a closed loop would fall far behind.
      request: async (seq) => {
        starts[seq] = performance.now() - t0;
        await sleep(50);
      },
    });
    expect(report.sent).toBe(200);
    expect(report.succeeded).toBe(200);
    expect(report.failed).toBe(0);
    // Request i is due at i * 5 ms; timers fire late (by a few ms on an idle machine), never early.
    for (let i = 0; i < 200; i++) {
      expect(starts[i]).toBeGreaterThanOrEqual(i * 5 - 1);
      expect(starts[i]).toBeLessThan(i * 5 + 150);
    }
    const elapsed = report.outcomes[199]!.startedAt - report.outcomes[0]!.startedAt;
    expect(elapsed).toBeGreaterThan(990 - 5);
    expect(elapsed).toBeLessThan(990 + 150);
  });

  it('catches up after the event loop stalls instead of lowering the rate', async () => {
    const starts: number[] = [];
    const report = await runOpenLoop({
      ratePerSec: 100,
      durationMs: 500,
      request: async (seq) => {
        starts[seq] = performance.now();
        if (seq === 5) {
          // Block the event loop for 200 ms: about 20 requests fall due meanwhile.
          const until = performance.now() + 200;
          while (performance.now() < until) {
            // busy wait
          }
        }
      },
    });
    expect(report.sent).toBe(50);
    expect(report.succeeded).toBe(50);
    // The requests that fell due during the stall (6 to 24 at least) start together right after it.
    expect(starts[6]! - starts[5]!).toBeGreaterThanOrEqual(199);
    expect(starts[24]! - starts[6]!).toBeLessThan(5);
    // And the run still ends on schedule.
    expect(starts[49]! - starts[0]!).toBeGreaterThanOrEqual(489);
    expect(starts[49]! - starts[0]!).toBeLessThan(490 + 150);
  });

  it('runs a fractional number of requests per interval correctly', async () => {
    const report = await runOpenLoop({ ratePerSec: 3, durationMs: 1000, request: async () => undefined });
    // Due at 0, 333 and 667 ms.
    expect(report.sent).toBe(3);
    const zero = await runOpenLoop({ ratePerSec: 10, durationMs: 0, request: async () => undefined });
    expect(zero.sent).toBe(0);
    expect(zero.latencyMs).toEqual({ p50: 0, p95: 0, p99: 0, max: 0 });
  });

  it('groups failures by code, then name, then unknown, and lists acknowledged seqs', async () => {
    const settled: RequestOutcome[] = [];
    const report = await runOpenLoop({
      ratePerSec: 500,
      durationMs: 40,
      request: async (seq) => {
        await sleep(1);
        switch (seq % 5) {
          case 0:
            return 'ok';
          case 1:
            throw codedError('57P01');
          case 2:
            throw new TypeError('no code');
          case 3:
            // A rejection without a reason.
            throw undefined;
          default:
            throw codedError('ERR_STEADFAST_ACQUIRE_TIMEOUT');
        }
      },
      onSettle: (outcome) => settled.push(outcome),
    });
    expect(report.sent).toBe(20);
    expect(report.succeeded).toBe(4);
    expect(report.failed).toBe(16);
    expect(report.failuresByCode).toEqual({
      '57P01': 4,
      TypeError: 4,
      unknown: 4,
      ERR_STEADFAST_ACQUIRE_TIMEOUT: 4,
    });
    expect(report.acknowledged).toEqual([0, 5, 10, 15]);
    expect(report.outcomes.map((o) => o.seq)).toEqual([...Array(20).keys()]);
    expect(settled).toHaveLength(20);
    for (const outcome of report.outcomes) {
      expect(outcome.ok).toBe(outcome.seq % 5 === 0);
      expect(outcome.endedAt).toBeGreaterThanOrEqual(outcome.startedAt);
    }
  });

  it('counts a request that throws synchronously as failed', async () => {
    const report = await runOpenLoop({
      ratePerSec: 100,
      durationMs: 30,
      request: (seq) => {
        if (seq === 1) throw codedError('SYNC');
        return Promise.resolve();
      },
    });
    expect(report.sent).toBe(3);
    expect(report.failuresByCode).toEqual({ SYNC: 1 });
    expect(report.acknowledged).toEqual([0, 2]);
  });

  it('reports latency percentiles', async () => {
    // Latencies 1..100 ms by seq (shuffled in start order by the modulo).
    const report = await runOpenLoop({
      ratePerSec: 1000,
      durationMs: 100,
      request: (seq) => sleep(((seq * 37) % 100) + 1),
    });
    expect(report.sent).toBe(100);
    const { p50, p95, p99, max } = report.latencyMs;
    // Timers fire late, never early: a few ms late on an idle machine, more on a busy one.
    expect(p50).toBeGreaterThanOrEqual(49);
    expect(p50).toBeLessThan(50 + 60);
    expect(p95).toBeGreaterThanOrEqual(94);
    expect(p95).toBeLessThan(95 + 60);
    expect(p99).toBeGreaterThanOrEqual(98);
    expect(p99).toBeGreaterThanOrEqual(p95);
    expect(max).toBeGreaterThanOrEqual(p99);
    expect(max).toBeLessThan(100 + 80);
  });

  it('gives up on requests that do not settle in time and counts them as UNSETTLED', async () => {
    const settled: RequestOutcome[] = [];
    const started = performance.now();
    const report = await runOpenLoop({
      ratePerSec: 100,
      durationMs: 50,
      request: (seq) => (seq === 2 ? new Promise(() => undefined) : sleep(5)),
      settleTimeoutMs: 100,
      onSettle: (outcome) => settled.push(outcome),
    });
    expect(performance.now() - started).toBeLessThan(50 + 100 + 100);
    expect(report.sent).toBe(5);
    expect(report.failed).toBe(1);
    expect(report.failuresByCode).toEqual({ [UNSETTLED]: 1 });
    expect(report.outcomes[2]!.ok).toBe(false);
    expect(report.latencyMs.max).toBeGreaterThanOrEqual(100);
    expect(settled.map((o) => o.seq).sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it('stops starting requests when the signal aborts', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const report = await runOpenLoop({
      ratePerSec: 100,
      durationMs: 10_000,
      request: () => sleep(20),
      signal: controller.signal,
    });
    expect(report.sent).toBeGreaterThanOrEqual(8);
    expect(report.sent).toBeLessThanOrEqual(14);
    expect(report.succeeded).toBe(report.sent);
  });

  it('rejects nonsensical options', async () => {
    const request = async () => undefined;
    await expect(runOpenLoop({ ratePerSec: 0, durationMs: 10, request })).rejects.toThrow(RangeError);
    await expect(runOpenLoop({ ratePerSec: Number.NaN, durationMs: 10, request })).rejects.toThrow(
      RangeError,
    );
    await expect(runOpenLoop({ ratePerSec: 1, durationMs: -1, request })).rejects.toThrow(RangeError);
  });
});

describe('errorCodeOf and percentile', () => {
  it('prefers the code, then the name', () => {
    expect(errorCodeOf(codedError('23505'))).toBe('23505');
    expect(errorCodeOf(Object.assign(new RangeError('x'), { code: '' }))).toBe('RangeError');
    expect(errorCodeOf({ code: 42 })).toBe('42');
    expect(errorCodeOf('a string')).toBe('unknown');
    expect(errorCodeOf(null)).toBe('unknown');
  });

  it('uses the nearest rank', () => {
    expect(percentile([], 50)).toBe(0);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([1, 2, 3, 4], 50)).toBe(2);
    expect(percentile([1, 2, 3, 4], 75)).toBe(3);
    expect(percentile([1, 2, 3, 4], 76)).toBe(4);
    expect(percentile([1, 2, 3, 4], 0)).toBe(1);
    expect(percentile([1, 2, 3, 4], 100)).toBe(4);
  });
});

describe('verifyWrites', () => {
  it('finds nothing when the table holds exactly the acknowledged ids', () => {
    expect(verifyWrites([3, 1, 2], [1, 2, 3])).toEqual({
      missing: [],
      duplicates: [],
      unacknowledgedPresent: [],
    });
    expect(verifyWrites([], [])).toEqual({ missing: [], duplicates: [], unacknowledgedPresent: [] });
  });

  it('reports acknowledged writes that are missing', () => {
    expect(verifyWrites([1, 2, 3, 4], [1, 3]).missing).toEqual([2, 4]);
  });

  it('reports ids present more than once, once each', () => {
    const result = verifyWrites([1, 2], [2, 1, 2, 2, 5, 5]);
    expect(result.duplicates).toEqual([2, 5]);
    expect(result.missing).toEqual([]);
  });

  it('reports ids present but never acknowledged, which outcome-unknown writes may leave', () => {
    const result = verifyWrites([1], [9, 1, 7]);
    expect(result.unacknowledgedPresent).toEqual([7, 9]);
    expect(result.missing).toEqual([]);
    expect(result.duplicates).toEqual([]);
  });

  it('handles everything at once and repeated acknowledgements', () => {
    expect(verifyWrites([1, 1, 2, 3], [1, 3, 3, 4])).toEqual({
      missing: [2],
      duplicates: [3],
      unacknowledgedPresent: [4],
    });
  });
});
