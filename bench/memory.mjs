/**
 * Memory benchmark (child process, needs --expose-gc): heap growth after 100,000 acquires that gave
 * up, measured after garbage collection. A waiter that gives up must leave nothing behind: not in the
 * queue, not as a timer, not as a listener on the caller's signal.
 *
 * The engine has 1 fake connection, held for the whole run, so every acquire queues and gives up:
 * - aborted: each with its own AbortSignal, aborted while it waits;
 * - timed out: each with a 1 ms deadline;
 * - timed out on a shared signal: each with a 1 ms deadline and the same long-lived, never-aborted
 *   AbortSignal (a request- or process-scoped signal), so a listener left on it would pile up.
 *
 * Acquires run in batches of 10,000 that settle before the next starts, so the benchmark's own bookkeeping
 * stays small; a warm-up pass runs first so compiled code and interned strings are not counted as growth,
 * and the reported growth is the median of three rounds of `count`.
 *
 * Config: { count }.
 */
import { setMaxListeners } from 'node:events';
import { fakeDriver } from './lib/fakes.mjs';
import { childConfig, distEntry, report, settleHeap } from './lib/util.mjs';

const { Engine } = await import(distEntry);
const config = childConfig();
const BATCH = 10_000;

const engine = new Engine(fakeDriver(), { max: 1 });
const held = await engine.acquire();
const shared = new AbortController();
// 10,000 waiters on one signal at once is the point here; Node would warn past 10 listeners.
setMaxListeners(BATCH + 1, shared.signal);
const noop = () => {};

const scenarios = {
  async aborted(n) {
    const controllers = Array.from({ length: n }, () => new AbortController());
    const pending = controllers.map((c) => engine.acquire({ signal: c.signal }).catch(noop));
    for (const c of controllers) c.abort();
    await Promise.all(pending);
  },
  async timedOut(n) {
    const pending = [];
    for (let i = 0; i < n; i++) pending.push(engine.acquire({ timeoutMs: 1 }).catch(noop));
    await Promise.all(pending);
  },
  async sharedSignal(n) {
    const pending = [];
    for (let i = 0; i < n; i++) {
      pending.push(engine.acquire({ timeoutMs: 1, signal: shared.signal }).catch(noop));
    }
    await Promise.all(pending);
  },
};

async function run(scenario, total) {
  for (let done = 0; done < total; done += BATCH) await scenario(Math.min(BATCH, total - done));
}

// Three rounds of `count` each, and the median growth of a round: a leak grows the heap every round by
// the same amount, while V8's own bookkeeping (code, feedback, internal tables) moves it now and then.
const ROUNDS = 3;
const result = {};
for (const [name, scenario] of Object.entries(scenarios)) {
  await run(scenario, 2 * BATCH);
  let previous = await settleHeap();
  const growth = [];
  for (let round = 0; round < ROUNDS; round++) {
    await run(scenario, config.count);
    const now = await settleHeap();
    growth.push(now - previous);
    previous = now;
  }
  result[name] = growth.sort((a, b) => a - b)[Math.floor(ROUNDS / 2)];
}
result.waitingAfter = engine.waitingCount;
engine.release(held);
await engine.close();
report(result);
