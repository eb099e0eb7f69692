/**
 * `npm run bench`: runs every benchmark against the built package and prints one report.
 *
 *   node --expose-gc bench/run.mjs [--quick] [--only=micro,e2e,scaling,memory] [--profile] [--no-save]
 *
 * --quick (or BENCH_QUICK=1)  a ~20 s smoke run: fewer rounds, shorter samples; results.md is kept
 * --only=...                  runs only the named sections
 * --profile                   instead of the report: CPU profiles (node --cpu-prof) of the steadfast
 *                             microbenchmark at 1 and 100 callers and of the steadfast Pool end to end,
 *                             written to bench/profiles/, and their hot spots mapped to src/
 * --no-save                   prints the report without writing bench/results.md
 * --no-pin                    end to end, leaves the benchmark process and PostgreSQL unpinned (by
 *                             default the client runs on CPU 0 and the server on the others; lib/pin.mjs)
 *
 * Each measurement runs in a fresh Node process (see lib/util.mjs) against a private copy of dist/, so a
 * rebuild while the benchmark runs cannot change what is measured halfway through.
 */
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CONTENDERS } from './lib/contenders.mjs';
import { formatSummary, profilesIn, summarize } from './lib/profile.mjs';
import {
  benchDir,
  formatBytes,
  formatNs,
  formatRate,
  formatRatio,
  machine,
  median,
  rootDir,
  runChild,
  spread,
  table,
} from './lib/util.mjs';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    profile: { type: 'boolean', default: false },
    'no-save': { type: 'boolean', default: false },
    'no-pin': { type: 'boolean', default: false },
  },
});
const quick = args.quick || process.env.BENCH_QUICK === '1';
const sections = new Set((args.only ?? 'micro,scaling,memory,e2e').split(',').map((s) => s.trim()));
const save = !quick && !args['no-save'] && sections.size === 4;

/** Durations and repetitions. The full run takes about 5 minutes on 2 cores, the quick one about 35 s. */
const plan = quick
  ? {
      micro: { rounds: 1, warmupMs: 100, sampleMs: 150, samples: 1 },
      scaling: {
        waiters: [10, 1_000, 100_000],
        cycles: 50_000,
        batch: 2_000,
        rounds: 1,
        passes: 1,
        anchors: false,
      },
      memory: { count: 20_000 },
      e2e: { rounds: 2, slotMs: 250, warmupMs: 50, firstPassMs: 100, callers: 64 },
    }
  : {
      // A second of warm-up: until then the JIT is still at work, and it flatters some pools and not
      // others (at 100 callers generic-pool reads about 10% above its steady rate in its first half
      // second, steadfast 15–20% below). Two samples per process, three processes per contender.
      micro: { rounds: 3, warmupMs: 1_000, sampleMs: 300, samples: 2 },
      scaling: {
        waiters: [10, 1_000, 100_000],
        cycles: 200_000,
        batch: 10_000,
        rounds: 2,
        passes: 2,
        anchors: true,
      },
      memory: { count: 100_000 },
      // Short turns, many rounds: contenders compared within a round run close together in time, so a
      // burst of other work on the machine is less likely to fall on one of them only.
      e2e: { rounds: 16, slotMs: 300, warmupMs: 50, firstPassMs: 200, callers: 64 },
    };

const MICRO_CONTENDERS = [
  'steadfast',
  'steadfast-novalidate',
  'steadfast-events',
  'steadfast-callback',
  'pg-pool',
  'tarn',
  'generic-pool',
  'bare',
  'bare-list',
];
const POOL_CONTENDERS = [
  'pool-steadfast',
  'pool-steadfast-prometheus',
  'pool-steadfast-otel',
  'pool-steadfast-otel-lean',
  'pool-pg',
  'pool-bare',
];
const MICRO_NAMES = {
  steadfast: 'steadfast Engine',
  'steadfast-novalidate': 'steadfast Engine, validation off',
  'steadfast-events': 'steadfast Engine + listeners',
  'steadfast-callback': 'steadfast Engine, callback API',
  'pg-pool': 'pg-pool',
  tarn: 'tarn',
  'generic-pool': 'generic-pool',
  bare: 'bare arrays (reference)',
  'bare-list': 'bare array + linked list (reference)',
  'pool-steadfast': 'steadfast Pool',
  'pool-steadfast-prometheus': 'steadfast Pool + Prometheus metrics',
  'pool-steadfast-otel': 'steadfast Pool + OpenTelemetry metrics',
  'pool-steadfast-otel-lean': 'steadfast Pool + OpenTelemetry, connectionTimings: false',
  'pool-pg': 'pg.Pool',
  'pool-bare': 'bare arrays + client.query()',
};
const CALLERS = [1, 100];

/** Time per query above the bare arrays; negative when a pool is cheaper than the reference. */
const formatAdded = (ns) => (ns < 0 ? `−${formatNs(-ns)}` : `+${formatNs(ns)}`);
const rotate = (list, by) => [...list.slice(by % list.length), ...list.slice(0, by % list.length)];
const progress = (text) => process.stderr.write(`  … ${text}\n`);

// A private copy of the build: other work may rebuild dist/ while this runs.
const distCopy = join(rootDir, 'node_modules', '.cache', 'pg-steadfast-bench', `dist-${process.pid}`);
rmSync(distCopy, { recursive: true, force: true });
mkdirSync(distCopy, { recursive: true });
cpSync(join(rootDir, 'dist'), distCopy, { recursive: true });
process.env.BENCH_DIST = join(distCopy, 'index.js');

const host = machine();
const startedAt = new Date();
const loadBefore = loadavg()[0];
const flags = [
  quick && '--quick',
  args.profile && '--profile',
  args.only && `--only=${args.only}`,
  args['no-pin'] && '--no-pin',
].filter(Boolean);
const command = flags.length > 0 ? `npm run bench -- ${flags.join(' ')}` : 'npm run bench';
const header = [
  `Machine: ${host.cores} cores, ${host.cpu}, ${host.memoryGb} GB RAM, ${host.os}`,
  `Node.js ${host.node}, PostgreSQL ${host.postgres}; pg 8.23, postgres.js 3.4, tarn 3.1, generic-pool 3.9`,
  `Command: ${command}${quick ? ' (smoke run: few samples, figures are rough)' : ''}`,
  `Date: ${startedAt.toISOString()}; load average at start ${loadBefore.toFixed(2)}`,
];
console.log(`pg-steadfast benchmarks\n${header.join('\n')}\n`);
if (loadBefore > host.cores * 0.75) {
  console.log('Warning: the machine is busy with other work; figures will be noisy (ratios suffer least).\n');
}

if (args.profile) {
  await profile();
  rmSync(distCopy, { recursive: true, force: true });
  process.exit(0);
}

const report = [];
const targets = [];
const failures = [];
/** Runs one section; a failure is reported and the others still run (and results.md is not written). */
const section = async (name, run) => {
  if (!sections.has(name)) return undefined;
  const started = Date.now();
  try {
    const result = await run();
    progress(`${name} took ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return result;
  } catch (error) {
    failures.push(name);
    console.log(`## ${name}: failed\n\n${error?.stack ?? error}\n`);
    return undefined;
  }
};
const out = (title, intro, body) => {
  const text = `## ${title}\n\n${intro ? `${intro}\n\n` : ''}${body}\n`;
  report.push(text);
  console.log(text);
};

// ---------------------------------------------------------------------------------------------------
// 1 and 5: engine microbenchmark, with and without event listeners

const micro = await section('micro', async () => {
  const p = plan.micro;
  const micro = {};
  const all = [...MICRO_CONTENDERS, ...POOL_CONTENDERS];
  const total = p.rounds * CALLERS.length * all.length;
  let done = 0;
  for (let round = 0; round < p.rounds; round++) {
    for (const callers of CALLERS) {
      for (const contender of rotate(all, round)) {
        progress(`microbenchmarks ${++done}/${total}: ${contender}, ${callers} caller(s)`);
        const { rates } = await runChild('micro.mjs', {
          contender,
          callers,
          warmupMs: p.warmupMs,
          sampleMs: p.sampleMs,
          samples: p.samples,
        });
        const key = `${contender}@${callers}`;
        micro[key] = [...(micro[key] ?? []), ...rates];
      }
    }
  }
  const rate = (contender, callers) => median(micro[`${contender}@${callers}`]);
  const rows = MICRO_CONTENDERS.map((c) => [
    MICRO_NAMES[c],
    ...CALLERS.flatMap((n) => [
      formatRate(rate(c, n)),
      formatRatio(rate(c, n) / rate('generic-pool', n)),
      micro[`${c}@${n}`].length > 1 ? `±${((spread(micro[`${c}@${n}`]) * 100) / 2).toFixed(0)}%` : '',
    ]),
  ]);
  out(
    'Engine microbenchmark: acquire + release cycles per second, fake connections',
    [
      `10 connections; each caller loops acquire, one microtask of work (\`await\`), release. Cycles per second`,
      `of CPU time (on a busy machine, time given to other processes is not counted). Median of`,
      `${p.rounds * p.samples} samples of ${p.sampleMs} ms after ${p.warmupMs} ms of warm-up, each contender in its own`,
      'process, rounds interleaved.',
      'Ratios are against generic-pool, the fastest anchor; ± is half the spread (max - min) / median.',
      'The callback API row runs the same cycle on callbacks (acquire, one queued microtask of work,',
      'release); the pools that only offer promises cannot. With 100 callers every promise-based pool is',
      "bound by the harness's own cost (one pending promise and one resumed async function per cycle): the",
      'bare arrays, which do nothing else, show that floor.',
      '',
      ...MICRO_CONTENDERS.map((c) => `- ${MICRO_NAMES[c]}: ${CONTENDERS[c]}`),
    ].join('\n'),
    table(['pool', '1 caller', '× generic-pool', '±', '100 callers', '× generic-pool', '±'], rows, ['left']),
  );
  for (const [contender, api] of [
    ['steadfast', 'acquire()'],
    ['steadfast-callback', 'acquireWith()'],
  ]) {
    for (const n of CALLERS) {
      const ratio = rate(contender, n) / rate('generic-pool', n);
      targets.push([
        `Engine ${api} ≥ 2 × generic-pool, ${n} caller${n > 1 ? 's' : ''}`,
        formatRatio(ratio),
        ratio >= 2,
      ]);
    }
  }

  const nsPer = (c, n) => 1e9 / rate(c, n);
  out(
    'Pool face microbenchmark: `pool.query()` over a fake pg Client',
    [
      "Each caller loops `await pool.query('SELECT 1')`; the fake Client answers on the next microtask, so",
      "this is each pool's own CPU per query, which an end-to-end run cannot separate from socket work.",
      '"Added" is the time per query above the bare arrays; divide it by the time per query end to end',
      'to see what it costs there.',
    ].join('\n'),
    table(
      ['pool', '1 caller', 'per query', 'added', '100 callers', 'per query', 'added'],
      POOL_CONTENDERS.map((c) => [
        MICRO_NAMES[c],
        ...CALLERS.flatMap((n) => [
          formatRate(rate(c, n)),
          formatNs(nsPer(c, n)),
          c === 'pool-bare' ? '' : formatAdded(nsPer(c, n) - nsPer('pool-bare', n)),
        ]),
      ]),
      ['left'],
    ),
  );
  return micro;
});

// ---------------------------------------------------------------------------------------------------
// 3: scaling with the length of the wait queue

await section('scaling', async () => {
  const p = plan.scaling;
  // generic-pool for scale, and the linked-list reference: the least any promise-based pool can do.
  const contenders = p.anchors ? ['steadfast', 'generic-pool', 'bare-list'] : ['steadfast'];
  const runs = {};
  // Each measure in a process of its own; generic-pool only has the first.
  const jobs = [
    ...['acquireRelease', 'acquireReleaseParked', 'timeout', 'abort'].map((measure) => [
      'steadfast',
      measure,
    ]),
    ...contenders.filter((c) => c !== 'steadfast').map((c) => [c, 'acquireRelease']),
  ];
  const total = p.rounds * p.waiters.length * jobs.length;
  let done = 0;
  for (let round = 0; round < p.rounds; round++) {
    for (const waiters of rotate(p.waiters, round)) {
      const merged = {};
      for (const [contender, measure] of jobs) {
        progress(`scaling ${++done}/${total}: ${contender}, ${measure}, ${waiters} waiters`);
        const result = await runChild('scaling.mjs', {
          contender,
          measure,
          waiters,
          cycles: p.cycles,
          batch: p.batch,
          passes: p.passes,
        });
        merged[contender] = { ...merged[contender], ...result };
      }
      for (const [contender, result] of Object.entries(merged)) {
        const key = `${contender}@${waiters}`;
        runs[key] = [...(runs[key] ?? []), result];
      }
    }
  }
  const pick = (contender, waiters, get) => median(runs[`${contender}@${waiters}`].map(get));
  const columns = [
    ['acquire+release', (r) => r.acquireRelease.ns, 'steadfast'],
    ['w/o GC', (r) => r.acquireRelease.nsWithoutGc, 'steadfast'],
    ['past parked waiters', (r) => r.acquireReleaseParked.ns, 'steadfast'],
    ['w/o GC', (r) => r.acquireReleaseParked.nsWithoutGc, 'steadfast'],
    ['timeout', (r) => r.timeout.ns, 'steadfast'],
    ['w/o GC', (r) => r.timeout.nsWithoutGc, 'steadfast'],
    ['abort', (r) => r.abort.ns, 'steadfast'],
    ['w/o GC', (r) => r.abort.nsWithoutGc, 'steadfast'],
  ];
  if (p.anchors) {
    columns.push(
      ['generic-pool acquire+release', (r) => r.acquireRelease.ns, 'generic-pool'],
      ['linked-list reference acquire+release', (r) => r.acquireRelease.ns, 'bare-list'],
    );
  }
  const first = p.waiters[0];
  const last = p.waiters[p.waiters.length - 1];
  const rows = p.waiters.map((w) => [
    w.toLocaleString('en-US'),
    ...columns.map(([, get, c]) => formatNs(pick(c, w, get))),
  ]);
  rows.push([
    `${last.toLocaleString('en-US')} ÷ ${first}`,
    ...columns.map(([, get, c]) => formatRatio(pick(c, last, get) / pick(c, first, get))),
  ]);
  out(
    'Scaling: cost per operation against the number of waiters',
    [
      'steadfast Engine, 10 fake connections, all busy, `waiters` callers queued; CPU time per operation.',
      '',
      '- acquire+release: `waiters + 10` callers loop, so each release serves the oldest waiter and each',
      '  acquire joins the tail: every waiter is touched in turn. "w/o GC" subtracts the collector\'s',
      "  pauses; a long queue is a large live heap (each waiter is a caller's suspended async function, a",
      '  promise and a waiter record), which costs the same in any pool: generic-pool is shown for scale,',
      '  and so is the least a promise-based pool can do (a bare array of connections and a linked list of',
      '  resolvers, nothing else), which grows with the queue as well.',
      '- past parked waiters: the waiters sit in the normal lane while 20 high-priority callers loop: the',
      '  queue is as long, but only the cost of its length is measured.',
      '- timeout: acquires with a 1 ms deadline join the tail and time out (enqueue + expiry, no idle wait).',
      "- abort: acquires whose AbortSignal is aborted while queued (Node's own abort() dominates).",
    ].join('\n'),
    table(['waiters', ...columns.map(([name]) => name)], rows, ['left']),
  );
  for (const [name, get] of [columns[0], columns[2], columns[4], columns[6]]) {
    const ratio = pick('steadfast', last, get) / pick('steadfast', first, get);
    let met = ratio <= 1.5;
    if (!met && name === 'acquire+release' && p.anchors) {
      // Touching every waiter in turn is bound by the heap a long queue is, in any pool: say how the least
      // possible pool fares, so the miss reads against what is reachable.
      const reference = pick('bare-list', last, get) / pick('bare-list', first, get);
      met = `NO (linked-list reference: ${formatRatio(reference)})`;
    }
    targets.push([
      `Scaling: ${name} at ${last.toLocaleString('en-US')} ≤ 1.5 × at ${first}`,
      formatRatio(ratio),
      met,
    ]);
  }
});

// ---------------------------------------------------------------------------------------------------
// 4: memory after acquires that gave up

await section('memory', async () => {
  progress('memory');
  const r = await runChild('memory.mjs', plan.memory);
  const count = plan.memory.count.toLocaleString('en-US');
  const rows = [
    [`${count} aborted acquires (own AbortSignal each)`, formatBytes(r.aborted)],
    [`${count} timed-out acquires (1 ms deadline)`, formatBytes(r.timedOut)],
    [`${count} timed-out acquires sharing one long-lived signal`, formatBytes(r.sharedSignal)],
  ];
  out(
    'Memory: heap growth after acquires that gave up',
    [
      'steadfast Engine with its one connection held; heap used after full GC, minus the same before, for',
      'each of three rounds of the count; the median round. A leak would grow the heap by the same amount',
      'every round.',
    ].join('\n'),
    table(['scenario', 'heap growth'], rows, ['left']),
  );
  for (const [name, bytes] of [
    ['aborted', r.aborted],
    ['timed out', r.timedOut],
    ['timed out, shared signal', r.sharedSignal],
  ]) {
    targets.push([`Memory after ${count} ${name} acquires < 1 MB`, formatBytes(bytes), bytes < 2 ** 20]);
  }
});

// ---------------------------------------------------------------------------------------------------
// 2 and 5: end to end against PostgreSQL

const e2e = await section('e2e', async () => {
  const p = plan.e2e;
  progress(`end to end: ${p.rounds} rounds of ${p.slotMs} ms turns against one PostgreSQL server`);
  // The OpenTelemetry pool runs in a process of its own: the SDK's garbage (it builds strings on every
  // record) would otherwise be collected during the other contenders' turns and charged to them.
  const pin = !args['no-pin'];
  const e2e = await runChild('e2e.mjs', {
    ...p,
    pin,
    workloads: ['select', 'insert'],
    exclude: ['steadfast-otel'],
  });
  progress('end to end: the OpenTelemetry pool, in a process of its own');
  const otel = await runChild('e2e.mjs', {
    ...p,
    pin,
    workloads: ['select'],
    contenders: ['control', 'steadfast-otel'],
  });
  e2e.rows.push(...otel.rows.filter((r) => r.name === 'steadfast Pool + OpenTelemetry metrics'));
  e2e.errors += otel.errors;
  const find = (workload, name) => e2e.rows.find((r) => r.workload === workload && r.name === name);
  const names = [...new Set(e2e.rows.map((r) => r.name))];
  const rows = names.map((name) => {
    const select = find('select', name);
    const insert = find('insert', name);
    const middle = (r) => (r.ratios.length >= 4 ? `${r.ratioLow.toFixed(2)}–${r.ratioHigh.toFixed(2)}` : '');
    const cells = (r) =>
      r
        ? [
            formatRate(r.rate),
            formatRatio(r.ratio),
            middle(r),
            `${r.cpuUs.toFixed(1)} µs`,
            formatRatio(r.cpuRatio),
          ]
        : ['', '', '', '', ''];
    return [name, ...cells(select), ...cells(insert)];
  });
  out(
    'End to end: queries per second against PostgreSQL',
    [
      `One PostgreSQL ${e2e.serverVersion} server on the same machine; ${p.callers} callers in a closed loop, 10`,
      'connections per pool, default options otherwise.',
      e2e.pinned.client !== undefined
        ? `The benchmark process runs on CPU ${e2e.pinned.client} and the server on CPU ${e2e.pinned.server} (\`taskset\`), as if on a machine of`
        : `Not pinned to CPUs (${e2e.pinned.reason}): the server's work shares the client's cores, and every`,
      e2e.pinned.client !== undefined
        ? "its own: the server's work does not interleave with the client's on one core (`--no-pin` to share). Each of"
        : 'figure here moves more from run to run. Each of',
      `${p.rounds} rounds runs every contender for ${p.slotMs} ms, in an order shuffled from round to round; the`,
      'table shows the median rate and the median of the per-round ratios to the ceiling: 10 raw `pg.Client`s',
      'from a bare array.',
      '"Middle half" spans the 25th to 75th percentile of those ratios. The control is a second, identical',
      'ceiling: how far its ratio strays from 1.00 is how much any ratio here can be trusted. "CPU/query" is',
      "the benchmark process's CPU time (user + system) per query, median over rounds: on a small machine the",
      'client process is the bottleneck, so what a pool adds there is what it costs in throughput. "CPU ÷" is',
      "the median of the per-round ratios of the ceiling's CPU per query to the contender's (above 1: less",
      'CPU than the ceiling).',
      'INSERT is `INSERT INTO bench_rows (n, note) VALUES ($1, $2)` (bigserial primary key). The OpenTelemetry',
      "row comes from a second run in a process of its own, against that run's ceiling: in the same process",
      "the SDK's garbage would be collected during the other contenders' turns.",
      ...(e2e.errors > 0 ? ['', `**${e2e.errors} queries failed during the run (see stderr).**`] : []),
    ].join('\n'),
    table(
      [
        'pool',
        'SELECT 1 /s',
        '× ceiling',
        'middle half',
        'CPU/query',
        'CPU ÷',
        'INSERT /s',
        '× ceiling',
        'middle half',
        'CPU/query',
        'CPU ÷',
      ],
      rows,
      ['left'],
    ),
  );
  // Sustained load: a pool whose cost grows with the work it has done reads lower round after round.
  // Turns of the main run (the OpenTelemetry row comes from a run of its own).
  const turnsPerRound = e2e.rows.filter((r) => r.name !== 'steadfast Pool + OpenTelemetry metrics').length;
  const runSeconds = Math.round((p.rounds * turnsPerRound * (p.slotMs + p.warmupMs)) / 1000);
  const drift = (r) => {
    if (!r || r.ratios.length < 2) return '';
    const third = Math.max(1, Math.floor(r.ratios.length / 3));
    return formatRatio(median(r.ratios.slice(-third)) / median(r.ratios.slice(0, third)));
  };
  out(
    'End to end: sustained load',
    [
      "Each contender's ratio to the ceiling in the last third of the rounds, over the same in the first",
      `third (the run lasts about ${runSeconds} s, every pool but the per-turn postgres.js open`,
      'throughout). 1.00 is a pool that costs as much at the end of the run as at its start.',
      'postgres.js 3.4 keeps a hole in its connection queues for every connection they hand on until they',
      'run empty, which under sustained load they never do, and removes from them with `indexOf`: the',
      'long-lived instance slows down turn after turn, and a new instance each turn shows its speed before.',
    ].join('\n'),
    table(
      ['pool', 'SELECT 1: late ÷ early', 'INSERT: late ÷ early'],
      names.map((name) => [name, drift(find('select', name)), drift(find('insert', name))]),
      ['left'],
    ),
  );
  const checks = [
    ['select', 'steadfast Pool', ''],
    ['insert', 'steadfast Pool', ''],
    ['select', 'steadfast Pool + Prometheus metrics', ', Prometheus metrics on'],
    ['select', 'steadfast Pool + OpenTelemetry metrics', ', OpenTelemetry metrics on'],
  ];
  for (const [workload, contender, what] of checks) {
    if (!find(workload, contender)) continue;
    const ratio = find(workload, contender).ratio;
    const control = find(workload, 'raw pg.Client ×10 again (control)')?.ratio ?? 1;
    const label = workload === 'select' ? 'SELECT 1' : 'INSERT';
    // A 1% target cannot be judged when identical contenders already differ by more than that.
    const met = Math.abs(control - 1) > 0.01 ? `unclear (control ${formatRatio(control)})` : ratio >= 0.99;
    // Three decimals: at two, a ratio of 0.986 would read "0.99×" beside "NO".
    const exact = (value) => `${value.toFixed(3)}×`;
    targets.push([`End to end ${label}${what} ≥ 0.99 × raw pg.Client ceiling`, exact(ratio), met]);
    // The same target read off CPU per query, which a busy machine disturbs far less than throughput: the
    // client process is the bottleneck, so throughput goes as the inverse of its CPU per query.
    const cpuRatio = find(workload, contender).cpuRatio;
    const controlCpu = find(workload, 'raw pg.Client ×10 again (control)')?.cpuRatio ?? 1;
    targets.push([
      `End to end ${label}${what} by CPU/query: ceiling ÷ steadfast ≥ 0.99 (control ${formatRatio(controlCpu)})`,
      exact(cpuRatio),
      cpuRatio >= 0.99,
    ]);
  }
  return e2e;
});

// ---------------------------------------------------------------------------------------------------
// 5: what listeners cost

if (micro || e2e) {
  const rows = [];
  if (micro) {
    for (const n of CALLERS) {
      const without = median(micro[`steadfast@${n}`]);
      const withListeners = median(micro[`steadfast-events@${n}`]);
      rows.push([
        `Engine, ${n} caller${n > 1 ? 's' : ''} (cycles/s)`,
        formatRate(without),
        formatRate(withListeners),
        formatRatio(withListeners / without),
      ]);
    }
  }
  if (e2e) {
    const plain = e2e.rows.find((r) => r.workload === 'select' && r.name === 'steadfast Pool');
    const listened = e2e.rows.find((r) => r.workload === 'select' && r.name === 'steadfast Pool + listeners');
    const paired = median(listened.ratios.map((r, i) => r / plain.ratios[i]));
    rows.push([
      'Pool, SELECT 1 (queries/s)',
      formatRate(plain.rate),
      formatRate(listened.rate),
      formatRatio(paired),
    ]);
  }
  out(
    'Events: cost of listeners',
    [
      'Engine: a counting listener on `engine.events` acquire, release, connect and evict. Pool: a no-op',
      "listener on the pool's connect, acquire, release, remove, evict, timeout and retry events and, where",
      'the build has it, on `pool.lifecycle` (connect, acquire, release, evict, timeout, operation). The Pool',
      "row's ratio is the median of per-round ratios.",
    ].join('\n'),
    table(['measure', 'without listeners', 'with listeners', 'ratio'], rows, ['left']),
  );
}

if (targets.length > 0) {
  out(
    'Targets (issue 7)',
    '',
    table(
      ['target', 'measured', 'met'],
      targets.map(([name, value, met]) => [name, value, typeof met === 'string' ? met : met ? 'yes' : 'NO']),
      ['left'],
    ),
  );
}

const loadAfter = loadavg()[0];
const elapsedS = (Date.now() - startedAt.getTime()) / 1000;
console.log(`Finished in ${elapsedS.toFixed(0)} s; load average at the end ${loadAfter.toFixed(2)}.`);

if (failures.length > 0) {
  console.log(`Failed sections: ${failures.join(', ')}`);
  process.exitCode = 1;
}

if (save && failures.length === 0) {
  const markdown = [
    '# Benchmark results',
    '',
    'Produced by `npm run bench` (bench/run.mjs); the latest full run replaces this file. Absolute',
    'figures move with the machine and whatever else runs on it; the ratios, taken within interleaved',
    'rounds, are what to compare.',
    '',
    ...header.map((line) => `- ${line}`),
    `- Took ${elapsedS.toFixed(0)} s; load average at the end ${loadAfter.toFixed(2)}`,
    '',
    ...report,
  ]
    .join('\n')
    .trimEnd();
  writeFileSync(join(benchDir, 'results.md'), `${markdown}\n`);
  console.log('Saved bench/results.md');
}

rmSync(distCopy, { recursive: true, force: true });

/**
 * Profiles steadfast alone: the engine microbenchmark at 1 and 100 callers (and generic-pool at 100, for
 * comparison), the Pool's `query()` over a fake Client, and the Pool end to end (SELECT 1 and INSERT; the
 * raw ceiling runs too, as the reference every round needs). Prints where the busy time went, with
 * steadfast's functions mapped to their TypeScript source.
 */
async function profile() {
  const root = join(benchDir, 'profiles', new Date().toISOString().replace(/[:.]/g, '-'));
  const flags = (name) => ['--cpu-prof', `--cpu-prof-dir=${join(root, name)}`];
  const runs = [
    ['micro-steadfast-1', 'micro.mjs', { contender: 'steadfast', callers: 1 }],
    ['micro-steadfast-100', 'micro.mjs', { contender: 'steadfast', callers: 100 }],
    ['micro-generic-pool-100', 'micro.mjs', { contender: 'generic-pool', callers: 100 }],
    ['pool-steadfast-1', 'micro.mjs', { contender: 'pool-steadfast', callers: 1 }],
    ['pool-steadfast-100', 'micro.mjs', { contender: 'pool-steadfast', callers: 100 }],
  ];
  for (const [name, script, config] of runs) {
    progress(`profiling ${name}`);
    await runChild(
      script,
      { ...config, warmupMs: 300, sampleMs: 1_000, samples: 2 },
      { nodeArgs: flags(name) },
    );
  }
  progress('profiling e2e-steadfast');
  await runChild(
    'e2e.mjs',
    {
      rounds: 3,
      slotMs: 1_500,
      warmupMs: 100,
      callers: 64,
      workloads: ['select', 'insert'],
      contenders: ['steadfast'],
    },
    { nodeArgs: flags('e2e-steadfast') },
  );
  console.log(`CPU profiles in ${root}\n`);
  for (const name of [...runs.map(([n]) => n), 'e2e-steadfast']) {
    for (const file of profilesIn(join(root, name)))
      console.log(`${formatSummary(name, summarize(file, 20))}\n`);
  }
}
