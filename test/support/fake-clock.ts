/**
 * A fake clock for the engine's unit tests: time moves only when the test says so.
 */
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import type { Clock, TimerHandle } from '../../src/engine/clock.js';

interface FakeTimer {
  id: number;
  at: number;
  fn: () => void;
  keepAlive: boolean;
}

export class FakeClock implements Clock {
  #now: number;
  #nextId = 1;
  readonly #timers = new Map<number, FakeTimer>();

  /** `start`: the first reading; a clock's scale may begin anywhere, below zero included. */
  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number, keepAlive: boolean): TimerHandle {
    const timer = { id: this.#nextId++, at: this.#now + Math.max(0, ms), fn, keepAlive };
    this.#timers.set(timer.id, timer);
    return timer.id;
  }

  clearTimeout(handle: TimerHandle): void {
    if (typeof handle === 'number') this.#timers.delete(handle);
  }

  /** Timers still pending, and how many of them would hold a real process open. */
  pending(): { total: number; keepAlive: number } {
    let keepAlive = 0;
    for (const t of this.#timers.values()) if (t.keepAlive) keepAlive++;
    return { total: this.#timers.size, keepAlive };
  }

  /** Lets promise callbacks run without moving time. */
  async flush(): Promise<void> {
    for (let i = 0; i < 3; i++) await nextMacrotask();
  }

  /**
   * Moves time forward by `ms` at once, firing nothing and letting nothing run: what a long stretch of
   * synchronous work looks like to the code around it.
   */
  jump(ms: number): void {
    this.#now += ms;
  }

  /** Moves time forward by `ms`, firing due timers in order and letting promises settle in between. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await this.flush();
    for (;;) {
      let next: FakeTimer | undefined;
      for (const t of this.#timers.values()) {
        if (
          t.at <= target &&
          (next === undefined || t.at < next.at || (t.at === next.at && t.id < next.id))
        ) {
          next = t;
        }
      }
      if (next === undefined) break;
      this.#timers.delete(next.id);
      this.#now = next.at;
      next.fn();
      await this.flush();
    }
    this.#now = target;
    await this.flush();
  }
}
