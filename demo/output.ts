/**
 * Console output of the demo: lines stamped with the time since the load started, optional colours.
 */

export type Tone = 'fault' | 'steadfast' | 'pg' | 'status' | 'dim' | 'plain' | 'good' | 'bad';

const COLOURS: Record<Tone, string> = {
  fault: '\x1b[33m',
  steadfast: '\x1b[36m',
  pg: '\x1b[35m',
  status: '\x1b[0m',
  dim: '\x1b[2m',
  plain: '',
  good: '\x1b[32m',
  bad: '\x1b[31m',
};
const RESET = '\x1b[0m';

export interface Output {
  /** A line stamped `[  4.02s]` relative to `start()`; unstamped before it. */
  line(tone: Tone, tag: string, text: string): void;
  /** A plain line, e.g. a part of the final table. */
  raw(text?: string, tone?: Tone): void;
  /** Marks time zero (the start of the load). */
  start(): void;
  /** Milliseconds since `start()` (0 before it). */
  elapsedMs(): number;
}

export function createOutput(write: (text: string) => void = (text) => process.stdout.write(text)): Output {
  const colour = process.stdout.isTTY === true && !process.env.NO_COLOR;
  let t0: number | undefined;
  const paint = (tone: Tone, text: string) =>
    colour && COLOURS[tone] ? `${COLOURS[tone]}${text}${RESET}` : text;
  return {
    start() {
      t0 = performance.now();
    },
    elapsedMs() {
      return t0 === undefined ? 0 : performance.now() - t0;
    },
    line(tone, tag, text) {
      const stamp =
        t0 === undefined ? '         ' : `[${((performance.now() - t0) / 1000).toFixed(2).padStart(6)}s]`;
      write(`${paint('dim', stamp)} ${paint(tone, `${tag.padEnd(9)} ${text}`)}\n`);
    },
    raw(text = '', tone = 'plain') {
      write(`${paint(tone, text)}\n`);
    },
  };
}

/** `1.2 ms`, `35 ms`, `2.41 s`. */
export function formatMs(ms: number): string {
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 10_000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** `a 3, b 1` from counts, largest first. */
export function formatCounts(counts: ReadonlyMap<string, number> | Record<string, number>): string {
  const entries = counts instanceof Map ? [...counts] : Object.entries(counts);
  return entries
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([key, n]) => `${key} ${n}`)
    .join(', ');
}
