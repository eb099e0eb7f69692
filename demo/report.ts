/**
 * The final table: what each pool's callers saw, and whether the acknowledged writes are in the table.
 */
import { errorCodeOf, type LoadReport, percentile, type verifyWrites } from '../testbed/load.js';
import { explainLabel } from './failures.js';
import { formatMs, type Output } from './output.js';

export interface PoolResult {
  /** Column heading, e.g. `steadfast Pool`. */
  name: string;
  writes: LoadReport;
  reads: LoadReport;
  verification: ReturnType<typeof verifyWrites>;
}

/** Latency percentiles over several reports together. */
function combinedLatency(reports: LoadReport[]): { p50: number; p99: number } {
  const all = reports.flatMap((r) => r.outcomes.map((o) => o.endedAt - o.startedAt)).sort((a, b) => a - b);
  return { p50: percentile(all, 50), p99: percentile(all, 99) };
}

function sentOkFailed(r: { sent: number; succeeded: number; failed: number }): string {
  return `${r.sent} / ${r.succeeded} / ${r.failed}`;
}

function idList(ids: number[], limit = 5): string {
  if (ids.length === 0) return '0';
  const shown = ids.slice(0, limit).join(', ');
  return `${ids.length}  (${shown}${ids.length > limit ? ', ...' : ''})`;
}

export interface ReportContext {
  durationMs: number;
  /** `performance.now()` at the start of the load, to say when failures happened. */
  t0: number;
}

export function printReport(output: Output, results: PoolResult[], context: ReportContext): void {
  const rows: Array<[string, ...string[]]> = [];
  const row = (label: string, cell: (r: PoolResult) => string) => rows.push([label, ...results.map(cell)]);
  const all = (r: PoolResult) => ({
    sent: r.writes.sent + r.reads.sent,
    succeeded: r.writes.succeeded + r.reads.succeeded,
    failed: r.writes.failed + r.reads.failed,
  });

  row('requests sent / succeeded / failed', (r) => sentOkFailed(all(r)));
  row('  writes (INSERT)', (r) => sentOkFailed(r.writes));
  row('  reads (SELECT)', (r) => sentOkFailed(r.reads));
  row('latency p50 / p99, all requests', (r) => {
    const l = combinedLatency([r.writes, r.reads]);
    return `${formatMs(l.p50)} / ${formatMs(l.p99)}`;
  });
  row('  writes', (r) => `${formatMs(r.writes.latencyMs.p50)} / ${formatMs(r.writes.latencyMs.p99)}`);
  row('  reads', (r) => `${formatMs(r.reads.latencyMs.p50)} / ${formatMs(r.reads.latencyMs.p99)}`);
  row('  slowest request', (r) => formatMs(Math.max(r.writes.latencyMs.max, r.reads.latencyMs.max)));
  row('acknowledged writes missing', (r) => idList(r.verification.missing));
  row('duplicate ids in the table', (r) => idList(r.verification.duplicates));
  row('rows present, write not acknowledged', (r) => idList(r.verification.unacknowledgedPresent));

  const widths = [
    Math.max(...rows.map((r) => r[0].length)),
    ...results.map((_, i) => columnWidth(rows, i + 1)),
  ];
  const format = (cells: string[]) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join('   ')
      .trimEnd();
  const heading = format(['', ...results.map((r) => r.name)]);
  const rule = '-'.repeat(heading.length);

  output.raw();
  output.raw(`Results after ${formatMs(context.durationMs)} of load`, 'status');
  output.raw(rule);
  output.raw(heading, 'status');
  output.raw(rule);
  for (const cells of rows) output.raw(format(cells));
  output.raw(rule);

  output.raw();
  output.raw('Failures by code (writes + reads)', 'status');
  const seen = new Set<string>();
  for (const r of results) {
    const codes = mergeCounts(r.writes.failuresByCode, r.reads.failuresByCode);
    if (codes.length === 0) {
      output.raw(`  ${r.name}: none`, 'good');
      continue;
    }
    output.raw(`  ${r.name}:`);
    for (const [code, n] of codes) {
      const w = r.writes.failuresByCode[code] ?? 0;
      const when = failureWindow([r.writes, r.reads], code, context.t0);
      output.raw(`    ${String(n).padStart(6)}  ${code}  (writes ${w}, reads ${n - w}; ${when})`, 'bad');
      seen.add(code);
    }
  }
  const notes = [...seen].map((code) => [code, explainLabel(code)] as const).filter(([, text]) => text);
  if (notes.length > 0) {
    output.raw();
    output.raw('What the codes mean', 'status');
    for (const [code, text] of notes) output.raw(`  ${code}: ${text}`, 'dim');
  }
  output.raw();
  output.raw(
    'Rows present but not acknowledged are writes that committed while their caller got an error (outcome\n' +
      'unknown); acknowledged writes that are missing would be lost writes. The comparison is information,\n' +
      'not a pass/fail verdict.',
    'dim',
  );
}

/** `at 9.01 s, after waiting 0.6 ms` or `at 9.01-12.10 s, after waiting 0.3 ms to 2.1 ms`. */
function failureWindow(reports: LoadReport[], code: string, t0: number): string {
  const failures = reports.flatMap((r) => r.outcomes).filter((o) => !o.ok && errorCodeOf(o.error) === code);
  const ends = failures.map((o) => (o.endedAt - t0) / 1000);
  const waits = failures.map((o) => o.endedAt - o.startedAt);
  const range = (values: number[], show: (v: number) => string, separator: string) => {
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    return show(lo) === show(hi) ? show(lo) : `${show(lo)}${separator}${show(hi)}`;
  };
  return `at ${range(ends, (v) => v.toFixed(2), '-')} s, after waiting ${range(waits, formatMs, ' to ')}`;
}

function columnWidth(rows: Array<string[]>, column: number): number {
  return Math.max(14, ...rows.map((r) => r[column]!.length));
}

function mergeCounts(...records: Array<Record<string, number>>): Array<[string, number]> {
  const merged = new Map<string, number>();
  for (const record of records) {
    for (const [key, n] of Object.entries(record)) merged.set(key, (merged.get(key) ?? 0) + n);
  }
  return [...merged].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}
