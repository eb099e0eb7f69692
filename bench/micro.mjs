/**
 * Engine microbenchmark (child process): acquire + release cycles per second of one pool over fake
 * connections, with `callers` concurrent callers sharing 10 connections.
 *
 * Each caller loops: acquire, one microtask of "work" (an `await`, as the shortest possible use of a
 * connection), release. The loop checks the clock every 32 cycles, not on a timer: a pool that hands
 * out connections with already-resolved promises never yields to the event loop, so a timer would not
 * fire.
 *
 * The `pool-*` contenders measure the pg face instead: each caller loops `await pool.query('SELECT 1')`
 * over a fake pg Client that answers on the next microtask, so what is left is each pool's own CPU cost
 * per query, the part that end-to-end runs cannot separate from the socket work.
 *
 * Config: { contender, callers, warmupMs, sampleMs, samples }.
 */
import { createContender } from './lib/contenders.mjs';
import { childConfig, report } from './lib/util.mjs';

const config = childConfig();
const pool = await createContender(config.contender);

/**
 * Runs `callers` callers for about `ms` and returns completed cycles per second of CPU time used by the
 * process. The loop never waits on anything outside the process, so on an idle machine CPU time equals
 * wall time; on a busy one, CPU time leaves out the slices the scheduler gave to other work, which would
 * otherwise land on whichever contender ran at that moment.
 */
async function phase(ms) {
  const end = performance.now() + ms;
  let stop = false;
  // Pools measured through their query() (the pg face) run the query loop instead; a pool measured
  // through its callback API runs the same cycle on callbacks: acquire, one microtask of work, release.
  const callbackCaller = () =>
    new Promise((done) => {
      let cycles = 0;
      const cycle = () =>
        pool.acquireWith((handle) =>
          queueMicrotask(() => {
            pool.release(handle);
            cycles++;
            if ((cycles & 31) === 0 && performance.now() >= end) stop = true;
            if (stop) done(cycles);
            else cycle();
          }),
        );
      cycle();
    });
  const caller = pool.acquireWith
    ? callbackCaller
    : pool.query
      ? async () => {
          let cycles = 0;
          while (!stop) {
            await pool.query();
            cycles++;
            if ((cycles & 31) === 0 && performance.now() >= end) stop = true;
          }
          return cycles;
        }
      : async () => {
          let cycles = 0;
          while (!stop) {
            const handle = await pool.acquire();
            await undefined;
            pool.release(handle);
            cycles++;
            if ((cycles & 31) === 0 && performance.now() >= end) stop = true;
          }
          return cycles;
        };
  const cpu = process.cpuUsage();
  const counts = await Promise.all(Array.from({ length: config.callers }, caller));
  const { user, system } = process.cpuUsage(cpu);
  return (counts.reduce((a, b) => a + b, 0) * 1e6) / (user + system);
}

await phase(config.warmupMs);
const rates = [];
for (let i = 0; i < config.samples; i++) rates.push(await phase(config.sampleMs));
await pool.close();
report({ rates });
