/**
 * Scaling benchmark (child process): what one operation costs while `waiters` callers wait on a pool
 * of 10 fake connections, in CPU time of the process per operation. Every operation must be O(1): a
 * cost that grows with the queue means a scan (`indexOf`/`splice`) somewhere on the hot path.
 *
 * - acquire/release: `waiters + 10` callers loop acquire, release; each release hands the connection to
 *   the head of the queue and each acquire joins its tail, so the queue stays `waiters` long. Garbage
 *   collection time inside the measured window is reported apart: a large queue is a large live heap,
 *   and that cost grows with it whatever the algorithm. So does the cost of touching each waiter's
 *   objects in turn once they no longer fit in the CPU caches.
 * - acquire/release past parked waiters (steadfast only): `waiters` callers wait in the normal lane
 *   while 20 high-priority callers loop acquire, release on the 10 connections. The queue is as long,
 *   but the loop touches only its own objects: this isolates what the queue's length costs each
 *   operation, which is what O(1) is about.
 * - timeout (steadfast only): with `waiters` callers queued (long deadlines), `batch` more acquires with
 *   a 1 ms deadline join the tail and time out; the cost is the CPU time from the first enqueue to the
 *   last rejection (the idle wait for the timer costs none), median of 5 batches on the same queue.
 * - abort (steadfast only): the same with AbortSignals aborted right after enqueueing. Node's own
 *   `AbortController.abort()` (event dispatch, a DOMException per signal) is most of it.
 *
 * Config: { contender, measure, waiters, cycles, batch, passes }; `measure` is one of acquireRelease,
 * acquireReleaseParked, timeout, abort (the last three for steadfast only).
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { createContender, POOL_SIZE } from './lib/contenders.mjs';
import { fakeDriver } from './lib/fakes.mjs';
import { childConfig, distEntry, median, report } from './lib/util.mjs';

const { Engine } = await import(distEntry);
const config = childConfig();
const LONG_MS = 3_600_000;

const gcEntries = [];
const observer = new PerformanceObserver((list) => gcEntries.push(...list.getEntries()));
observer.observe({ entryTypes: ['gc'] });

/**
 * A measured stretch: CPU time of the process (so time the scheduler gives to other work on a busy
 * machine is not counted) and the garbage collector's pauses within it.
 */
class Window {
  #cpu;
  #cpuMs = 0;
  #from = 0;
  #to = 0;

  open() {
    this.#from = performance.now();
    this.#cpu = process.cpuUsage();
  }

  close() {
    const { user, system } = process.cpuUsage(this.#cpu);
    this.#to = performance.now();
    this.#cpuMs = (user + system) / 1000;
  }

  /** Nanoseconds per operation, with and without the GC pauses inside the window. */
  async perOperation(operations) {
    // GC entries are delivered asynchronously, after the busy loop yields: give the observer time to run.
    await new Promise((resolve) => setTimeout(resolve, 20));
    let gcMs = 0;
    for (const entry of gcEntries) {
      if (entry.startTime >= this.#from && entry.startTime + entry.duration <= this.#to)
        gcMs += entry.duration;
    }
    gcEntries.length = 0;
    return {
      ns: (this.#cpuMs * 1e6) / operations,
      nsWithoutGc: (Math.max(0, this.#cpuMs - gcMs) * 1e6) / operations,
    };
  }
}

async function acquireRelease() {
  const pool = await createContender(config.contender);
  // Steady state first: every caller has been through the queue once before the clock starts.
  const warm = config.waiters + POOL_SIZE + config.cycles / 4;
  const target = warm + config.cycles;
  let done = 0;
  const window = new Window();
  const caller = async () => {
    while (done < target) {
      const handle = await pool.acquire();
      pool.release(handle);
      done++;
      if (done === warm) window.open();
      else if (done === target) window.close();
    }
  };
  await Promise.all(Array.from({ length: config.waiters + POOL_SIZE }, caller));
  const result = await window.perOperation(config.cycles);
  await pool.close();
  return result;
}

/** An engine whose connections are all checked out, with `waiters` callers queued behind them. */
async function saturated() {
  const engine = new Engine(fakeDriver(), { max: POOL_SIZE, acquireTimeoutMs: LONG_MS });
  const held = [];
  for (let i = 0; i < POOL_SIZE; i++) held.push(engine.acquire());
  await Promise.all(held);
  const background = [];
  for (let i = 0; i < config.waiters; i++) background.push(engine.acquire().catch(() => undefined));
  const close = async () => {
    await engine.close({ timeoutMs: 0 });
    await Promise.all(background);
  };
  close.held = await Promise.all(held);
  return { engine, close };
}

async function acquireReleaseParked() {
  const { engine, close } = await saturated();
  const warm = config.cycles / 4;
  const target = warm + config.cycles;
  let done = 0;
  const window = new Window();
  const caller = async () => {
    while (done < target) {
      const lease = await engine.acquire({ priority: 'high' });
      engine.release(lease);
      done++;
      if (done === warm) window.open();
      else if (done === target) window.close();
    }
  };
  // The 10 held leases go to the first high-priority callers; the loop keeps them circulating.
  const callers = Array.from({ length: 2 * POOL_SIZE }, caller);
  for (const lease of close.held) engine.release(lease);
  await Promise.all(callers);
  const result = await window.perOperation(config.cycles);
  await close();
  return result;
}

/** Batches measured on one saturated engine: the median, as one batch of timers or aborts is noisy. */
const BATCHES = 5;

async function medianOfBatches(runBatch) {
  const { engine, close } = await saturated();
  const results = [];
  for (let i = 0; i < BATCHES; i++) results.push(await runBatch(engine));
  await close();
  return {
    ns: median(results.map((r) => r.ns)),
    nsWithoutGc: median(results.map((r) => r.nsWithoutGc)),
  };
}

function timeouts() {
  const noop = () => {};
  return medianOfBatches(async (engine) => {
    const pending = [];
    const window = new Window();
    window.open();
    for (let i = 0; i < config.batch; i++) pending.push(engine.acquire({ timeoutMs: 1 }).catch(noop));
    // The 1 ms the timers wait costs no CPU time, so it drops out of the measure by itself.
    await Promise.all(pending);
    window.close();
    return window.perOperation(config.batch);
  });
}

function aborts() {
  const noop = () => {};
  return medianOfBatches(async (engine) => {
    const controllers = Array.from({ length: config.batch }, () => new AbortController());
    const pending = [];
    const window = new Window();
    window.open();
    for (const controller of controllers)
      pending.push(engine.acquire({ signal: controller.signal }).catch(noop));
    for (const controller of controllers) controller.abort();
    await Promise.all(pending);
    window.close();
    return window.perOperation(config.batch);
  });
}

const measure = async (fn) => {
  for (let pass = 1; pass < (config.passes ?? 2); pass++) await fn();
  return fn();
};
// One measure per process (`config.measure`): a measure run after another inherits its heap (a queue of
// 100,000 leaves a large, fragmented old generation behind), which would be charged to the wrong line.
const measures = { acquireRelease, acquireReleaseParked, timeout: timeouts, abort: aborts };
const result = { [config.measure]: await measure(measures[config.measure]) };
observer.disconnect();
report(result);
