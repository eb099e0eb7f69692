import { describe, expect, it } from 'vitest';
import { type BackoffOptions, fullJitterDelay } from '../../src/resilience/backoff.js';

const opts: BackoffOptions = { initialDelayMs: 100, maxDelayMs: 10_000 };
/** The largest value Math.random can return. */
const ALMOST_ONE = 1 - Number.EPSILON;
const top = () => ALMOST_ONE;
const bottom = () => 0;

/** A seeded generator (mulberry32), so the distribution test is reproducible. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('fullJitterDelay', () => {
  it.each([
    [1, 100],
    [2, 200],
    [3, 400],
    [4, 800],
    [5, 1600],
    [6, 3200],
    [7, 6400],
    [8, 10_000],
    [9, 10_000],
    [50, 10_000],
  ])('attempt %i has ceiling %i', (attempt, ceiling) => {
    expect(fullJitterDelay(attempt, opts, top)).toBe(ceiling);
    expect(fullJitterDelay(attempt, opts, bottom)).toBe(0);
  });

  it('maps random() linearly onto [0, ceiling]', () => {
    expect(fullJitterDelay(1, opts, () => 0.5)).toBe(50); // floor(0.5 * 101)
    expect(fullJitterDelay(3, opts, () => 0.25)).toBe(100); // floor(0.25 * 401)
    expect(fullJitterDelay(3, opts, () => 0.999)).toBe(400); // floor(0.999 * 401)
    expect(fullJitterDelay(20, opts, () => 0.5)).toBe(5000); // floor(0.5 * 10001)
  });

  it('is deterministic for an injected random source', () => {
    const a = seeded(42);
    const b = seeded(42);
    const first = Array.from({ length: 20 }, (_, i) => fullJitterDelay(i + 1, opts, a));
    const second = Array.from({ length: 20 }, (_, i) => fullJitterDelay(i + 1, opts, b));
    expect(first).toEqual(second);
    expect(new Set(first).size).toBeGreaterThan(1);
  });

  it('uses a custom multiplier', () => {
    const o = { initialDelayMs: 10, maxDelayMs: 1000, multiplier: 3 };
    expect([1, 2, 3, 4, 5, 6].map((n) => fullJitterDelay(n, o, top))).toEqual([10, 30, 90, 270, 810, 1000]);
  });

  it('keeps a constant ceiling with multiplier 1, even for an infinite attempt', () => {
    const o = { initialDelayMs: 250, maxDelayMs: 1000, multiplier: 1 };
    expect(fullJitterDelay(1, o, top)).toBe(250);
    expect(fullJitterDelay(1000, o, top)).toBe(250);
    expect(fullJitterDelay(Number.POSITIVE_INFINITY, o, top)).toBe(250);
  });

  it('has a ceiling that never decreases and stops at maxDelayMs', () => {
    let previous = 0;
    for (let attempt = 1; attempt <= 2000; attempt++) {
      const ceiling = fullJitterDelay(attempt, opts, top);
      expect(ceiling).toBeGreaterThanOrEqual(previous);
      expect(ceiling).toBeLessThanOrEqual(opts.maxDelayMs);
      previous = ceiling;
    }
    expect(previous).toBe(opts.maxDelayMs);
  });

  it('returns finite integers for huge attempts (no overflow to Infinity or NaN)', () => {
    for (const attempt of [1024, 1025, 5000, 1e9, Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Infinity]) {
      expect(fullJitterDelay(attempt, opts, top)).toBe(10_000);
      expect(fullJitterDelay(attempt, opts, () => 0.5)).toBe(5000);
      expect(fullJitterDelay(attempt, { initialDelayMs: 0, maxDelayMs: 10_000 }, top)).toBe(0);
    }
  });

  it('stays within [0, ceiling] and spreads evenly over it', () => {
    const random = seeded(7);
    const buckets = new Array<number>(10).fill(0);
    const samples = 20_000;
    for (let i = 0; i < samples; i++) {
      const d = fullJitterDelay(4, opts, random); // ceiling 800
      expect(Number.isInteger(d)).toBe(true);
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(800);
      buckets[Math.min(9, Math.floor(d / 80))]! += 1;
    }
    for (const count of buckets) {
      // 2000 expected per bucket; 10% is about 7 standard deviations.
      expect(count).toBeGreaterThan(1800);
      expect(count).toBeLessThan(2200);
    }
  });

  it('gives each integer in [0, ceiling] an equal share of [0, 1), the ends included', () => {
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 1000; i++) {
      counts[fullJitterDelay(1, { initialDelayMs: 3, maxDelayMs: 3 }, () => i / 1000)]! += 1;
    }
    expect(counts).toEqual([250, 250, 250, 250]);
  });

  it('reaches both ends of the range with Math.random', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 5000; i++) seen.add(fullJitterDelay(1, { initialDelayMs: 3, maxDelayMs: 3 }));
    expect([...seen].sort()).toEqual([0, 1, 2, 3]);
  });

  it('returns integers for fractional ceilings', () => {
    const o = { initialDelayMs: 100, maxDelayMs: 10_000, multiplier: 1.5 };
    expect(fullJitterDelay(2, o, top)).toBe(150);
    expect(fullJitterDelay(3, o, top)).toBe(225); // 225
    expect(fullJitterDelay(4, o, top)).toBe(337); // 337.5
    expect(fullJitterDelay(4, o, () => 0.5)).toBe(169); // floor(0.5 * 338)
  });

  it('treats attempts below 1, NaN and fractions as documented', () => {
    expect(fullJitterDelay(0, opts, top)).toBe(100);
    expect(fullJitterDelay(-5, opts, top)).toBe(100);
    expect(fullJitterDelay(Number.NaN, opts, top)).toBe(100);
    expect(fullJitterDelay(2.9, opts, top)).toBe(200);
  });

  it('repairs out-of-range options instead of throwing', () => {
    expect(fullJitterDelay(3, { initialDelayMs: -1, maxDelayMs: 1000 }, top)).toBe(0);
    expect(fullJitterDelay(3, { initialDelayMs: Number.NaN, maxDelayMs: 1000 }, top)).toBe(0);
    expect(fullJitterDelay(3, { initialDelayMs: 100, maxDelayMs: -1 }, top)).toBe(0);
    expect(fullJitterDelay(3, { initialDelayMs: 100, maxDelayMs: Number.NaN }, top)).toBe(0);
    // Invalid multipliers fall back to 2.
    for (const multiplier of [0, 0.5, -2, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(fullJitterDelay(3, { initialDelayMs: 100, maxDelayMs: 1000, multiplier }, top)).toBe(400);
    }
    // Initial above max: the max wins from the first attempt.
    expect(fullJitterDelay(1, { initialDelayMs: 5000, maxDelayMs: 1000 }, top)).toBe(1000);
  });

  it('caps at the largest delay setTimeout honours', () => {
    const huge = { initialDelayMs: 1000, maxDelayMs: Number.POSITIVE_INFINITY };
    expect(fullJitterDelay(100, huge, top)).toBe(2_147_483_647);
    expect(fullJitterDelay(100, { initialDelayMs: 1000, maxDelayMs: 1e15 }, top)).toBe(2_147_483_647);
    expect(fullJitterDelay(1, { initialDelayMs: Number.POSITIVE_INFINITY, maxDelayMs: 500 }, top)).toBe(500);
  });

  it('clamps a random source that leaves [0, 1)', () => {
    expect(fullJitterDelay(1, opts, () => 1)).toBe(100);
    expect(fullJitterDelay(1, opts, () => 7)).toBe(100);
    expect(fullJitterDelay(1, opts, () => -0.5)).toBe(0);
    expect(fullJitterDelay(1, opts, () => Number.NaN)).toBe(0);
  });

  it('returns 0 when the ceiling is 0', () => {
    expect(fullJitterDelay(1, { initialDelayMs: 0, maxDelayMs: 0 }, top)).toBe(0);
    expect(fullJitterDelay(10, { initialDelayMs: 0, maxDelayMs: 100 }, top)).toBe(0);
  });
});
