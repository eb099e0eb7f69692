/**
 * End-to-end benchmark (child process): `SELECT 1` and a one-row INSERT against one disposable
 * PostgreSQL server, closed loop, `callers` callers sharing 10 connections per contender.
 *
 * Contenders: steadfast's Pool (default options; also with Prometheus or OpenTelemetry metrics on),
 * pg.Pool, postgres.js (long-lived, and new for every turn), and the ceiling: 10 raw
 * `pg.Client`s handed out from a bare array (what any pool over pg adds its cost to). A second, identical
 * ceiling runs as a control: its ratio to the first is pure measurement noise. The
 * "steadfast + listeners" contender is the same steadfast Pool with a listener on every pool event it
 * emits per query, attached only for its own turn.
 *
 * All pools but the per-turn postgres.js stay open for the whole run and take turns: each round runs
 * every contender once, in an order shuffled from round to round, so drift of the machine (or of the
 * server: autovacuum, WAL) hits all alike and no contender always follows the same one. (No forced GC
 * between turns: a full collection resets V8's heap sizing, and the next turn then pays for collections
 * it would not otherwise have.)
 * Ratios are taken against the raw ceiling within the same round, then their median is reported.
 *
 * With `pin`, the benchmark process runs on CPU 0 and the server on the others (lib/pin.mjs says why).
 *
 * Config: { rounds, slotMs, warmupMs, firstPassMs, callers, workloads: ['select', 'insert'],
 * contenders?, exclude?, pin? }, where `contenders` limits the run to the named keys and `exclude` leaves some
 * out; the ceiling always runs.
 */
import pg from 'pg';
import postgres from 'postgres';
import { attachOpenTelemetry, attachPrometheus } from './lib/contenders.mjs';
import { pinClientAndServer } from './lib/pin.mjs';
import { loadTestbed } from './lib/testbed.mjs';
import { childConfig, distEntry, median, report } from './lib/util.mjs';

const POOL_SIZE = 10;

/** `items` in an order drawn from `seed` (mulberry32): the same seed, the same order. */
function shuffled(items, seed) {
  let state = (seed + 1) * 0x9e3779b9;
  const random = () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const order = [...items];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}
const config = childConfig();
const { Pool } = await import(distEntry);
const { PostgresServer } = await loadTestbed();

const server = await PostgresServer.start();
try {
  // Before any connection opens, so that every backend inherits the server's side.
  const pinned = config.pin ? pinClientAndServer(server.dataDir) : { reason: 'not asked for' };
  await server.query(
    'CREATE TABLE bench_rows (id bigserial PRIMARY KEY, n integer NOT NULL, note text NOT NULL)',
  );
  const connection = server.clientConfig();
  const [{ server_version: serverVersion }] = (await server.query('SHOW server_version')).rows;

  const INSERT = 'INSERT INTO bench_rows (n, note) VALUES ($1, $2)';
  const NOTE = 'steadfast bench';

  /** The ceiling: connected clients in an array, waiters in another; nothing else. */
  const rawCeiling = async () => {
    const clients = [];
    for (let i = 0; i < POOL_SIZE; i++) {
      const client = new pg.Client(connection);
      await client.connect();
      clients.push(client);
    }
    const idle = [...clients];
    const waiting = [];
    const take = () => idle.pop() ?? new Promise((resolve) => waiting.push(resolve));
    const give = (client) => {
      const next = waiting.shift();
      if (next) next(client);
      else idle.push(client);
    };
    return {
      query: async (text, values) => {
        const client = await take();
        try {
          return await client.query(text, values);
        } finally {
          give(client);
        }
      },
      close: () => Promise.all(clients.map((c) => c.end())),
    };
  };
  const raw = await rawCeiling();
  // A second, identical ceiling: its ratio to the first shows how much of any ratio is noise.
  const control = await rawCeiling();

  const pgPool = new pg.Pool({ ...connection, max: POOL_SIZE });
  const steadfast = new Pool({ ...connection, max: POOL_SIZE });
  // The same pool with metrics on, as an application would run it: one with the Prometheus collector,
  // one with OpenTelemetry (the SDK's MeterProvider).
  const withPrometheus = new Pool({ ...connection, max: POOL_SIZE, poolName: 'bench-prometheus' });
  await attachPrometheus(withPrometheus);
  const withOpenTelemetry = new Pool({ ...connection, max: POOL_SIZE, poolName: 'bench-otel' });
  await attachOpenTelemetry(withOpenTelemetry);
  const sql = postgres({ ...connection, max: POOL_SIZE, onnotice: () => {} });
  // postgres.js again, new for every turn. Its connection queues (src/queue.js in 3.4) leave a hole for
  // every connection they hand on until they run empty, which under sustained load they never do, and
  // remove() scans them with indexOf: a long-lived instance slows down turn after turn. A new one shows
  // its speed before that.
  let freshSql;

  const noop = () => {};
  const pgEvents = ['connect', 'acquire', 'release', 'remove', 'evict', 'timeout', 'retry'];
  const lifecycleEvents = ['connect', 'acquire', 'release', 'evict', 'timeout', 'operation'];
  const setListeners = (attach) => {
    for (const event of pgEvents) (attach ? steadfast.on : steadfast.off).call(steadfast, event, noop);
    // The lifecycle emitter (full payloads for metrics), where this build has it.
    const lifecycle = steadfast.lifecycle;
    if (lifecycle) for (const event of lifecycleEvents) lifecycle[attach ? 'on' : 'off'](event, noop);
  };

  const allContenders = [
    {
      key: 'raw',
      name: 'raw pg.Client ×10 (ceiling)',
      select: () => raw.query('SELECT 1'),
      insert: (n) => raw.query(INSERT, [n, NOTE]),
    },
    {
      key: 'control',
      name: 'raw pg.Client ×10 again (control)',
      select: () => control.query('SELECT 1'),
      insert: (n) => control.query(INSERT, [n, NOTE]),
    },
    {
      key: 'steadfast',
      name: 'steadfast Pool',
      select: () => steadfast.query('SELECT 1'),
      insert: (n) => steadfast.query(INSERT, [n, NOTE]),
    },
    {
      key: 'steadfast-listeners',
      name: 'steadfast Pool + listeners',
      only: ['select'],
      before: () => setListeners(true),
      after: () => setListeners(false),
      select: () => steadfast.query('SELECT 1'),
    },
    {
      key: 'steadfast-prometheus',
      name: 'steadfast Pool + Prometheus metrics',
      only: ['select'],
      select: () => withPrometheus.query('SELECT 1'),
    },
    {
      key: 'steadfast-otel',
      name: 'steadfast Pool + OpenTelemetry metrics',
      only: ['select'],
      select: () => withOpenTelemetry.query('SELECT 1'),
    },
    {
      key: 'pg-pool',
      name: 'pg.Pool',
      select: () => pgPool.query('SELECT 1'),
      insert: (n) => pgPool.query(INSERT, [n, NOTE]),
    },
    {
      key: 'postgres.js',
      name: 'postgres.js',
      select: () => sql`SELECT 1`,
      insert: (n) => sql`INSERT INTO bench_rows (n, note) VALUES (${n}, ${NOTE})`,
    },
    {
      key: 'postgres.js-fresh',
      name: 'postgres.js, a new instance each turn',
      before: async () => {
        freshSql = postgres({ ...connection, max: POOL_SIZE, onnotice: () => {} });
        // Every connection open before the turn's clock starts.
        await Promise.all(Array.from({ length: POOL_SIZE }, () => freshSql`SELECT 1`));
      },
      after: () => freshSql.end({ timeout: 1 }),
      select: () => freshSql`SELECT 1`,
      insert: (n) => freshSql`INSERT INTO bench_rows (n, note) VALUES (${n}, ${NOTE})`,
    },
  ];

  const contenders = allContenders.filter(
    (c) =>
      c.key === 'raw' ||
      ((!config.contenders || config.contenders.includes(c.key)) && !config.exclude?.includes(c.key)),
  );

  let seq = 0;
  /** `callers` callers run `op` back to back for `ms`; returns operations per second and errors. */
  const closedLoop = async (op, ms) => {
    const end = performance.now() + ms;
    let stop = false;
    let ops = 0;
    let errors = 0;
    let lastError;
    const caller = async () => {
      while (!stop) {
        try {
          await op(seq++);
          ops++;
        } catch (error) {
          errors++;
          lastError = error;
        }
        if (performance.now() >= end) stop = true;
      }
    };
    const started = performance.now();
    const cpu = process.cpuUsage();
    await Promise.all(Array.from({ length: config.callers }, caller));
    const { user, system } = process.cpuUsage(cpu);
    return {
      rate: (ops * 1000) / (performance.now() - started),
      cpuUsPerOp: (user + system) / ops,
      errors,
      lastError,
    };
  };

  const runSlot = async (contender, workload, ms) => {
    await contender.before?.();
    try {
      await closedLoop(contender[workload], config.warmupMs);
      return await closedLoop(contender[workload], ms);
    } finally {
      await contender.after?.();
    }
  };

  // One pass to open every pool's connections and let the JIT settle before anything counts.
  for (const workload of config.workloads)
    for (const contender of contenders)
      if (!contender.only || contender.only.includes(workload))
        await runSlot(contender, workload, config.firstPassMs ?? 200);

  const results = {};
  for (const workload of config.workloads) {
    results[workload] = Object.fromEntries(
      contenders.map((c) => [c.name, { rates: [], ratios: [], cpuUs: [], cpuRatios: [] }]),
    );
  }
  let errorCount = 0;
  for (let round = 0; round < config.rounds; round++) {
    for (const workload of config.workloads) {
      const order = contenders.filter((c) => !c.only || c.only.includes(workload));
      // A different order every round (seeded, so runs repeat): whoever runs before a contender changes,
      // and so does what that leaves behind in the caches and on the server.
      const rotated = shuffled(order, round * 2 + (workload === 'select' ? 0 : 1));
      const rates = {};
      const cpus = {};
      for (const contender of rotated) {
        const { rate, cpuUsPerOp, errors, lastError } = await runSlot(contender, workload, config.slotMs);
        results[workload][contender.name].cpuUs.push(cpuUsPerOp);
        cpus[contender.name] = cpuUsPerOp;
        if (errors > 0) {
          errorCount += errors;
          process.stderr.write(`${contender.name} ${workload}: ${errors} errors, last: ${lastError}\n`);
        }
        rates[contender.name] = rate;
      }
      const ceiling = rates[contenders[0].name];
      for (const [name, rate] of Object.entries(rates)) {
        results[workload][name].rates.push(rate);
        results[workload][name].ratios.push(rate / ceiling);
        // Paired within the round, as the rates are: the ceiling's CPU per query over this contender's.
        results[workload][name].cpuRatios.push(cpus[contenders[0].name] / cpus[name]);
      }
    }
  }

  await Promise.all([
    steadfast.end(),
    withPrometheus.end(),
    withOpenTelemetry.end(),
    pgPool.end(),
    sql.end({ timeout: 1 }),
    raw.close(),
    control.close(),
  ]);
  const rows = [];
  for (const workload of config.workloads) {
    for (const [name, { rates, ratios, cpuUs, cpuRatios }] of Object.entries(results[workload])) {
      if (rates.length === 0) continue;
      const sorted = [...ratios].sort((a, b) => a - b);
      const quartile = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
      rows.push({
        workload,
        name,
        rate: median(rates),
        ratio: median(ratios),
        cpuUs: median(cpuUs),
        cpuRatio: median(cpuRatios),
        ratioLow: quartile(0.25),
        ratioHigh: quartile(0.75),
        rates,
        ratios,
      });
    }
  }
  report({ serverVersion, pinned, errors: errorCount, rows });
} finally {
  await server.destroy();
}
