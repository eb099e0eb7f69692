/**
 * Reads V8 CPU profiles (`node --cpu-prof`) and lists where the time went: self time per function,
 * with functions of the built package mapped back to their TypeScript source through dist's source map,
 * so a hot spot reads `src/engine/engine.ts:412` rather than a line of the bundle.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { rootDir } from './util.mjs';

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Decodes a source map's `mappings` into, per generated line, sorted [column, source, line] entries. */
function decodeMappings(mappings) {
  const lines = [];
  let source = 0;
  let sourceLine = 0;
  for (const lineText of mappings.split(';')) {
    const entries = [];
    let column = 0;
    for (const segment of lineText.split(',')) {
      if (segment === '') continue;
      const values = [];
      let value = 0;
      let shift = 0;
      for (const char of segment) {
        const digit = BASE64.indexOf(char);
        value += (digit & 31) << shift;
        if (digit & 32) {
          shift += 5;
        } else {
          values.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      column += values[0];
      // Only the generated column, source and source line matter here; the source column is skipped.
      if (values.length >= 4) {
        source += values[1];
        sourceLine += values[2];
        entries.push([column, source, sourceLine]);
      }
    }
    lines.push(entries);
  }
  return lines;
}

const mapCache = new Map();

/** Maps a generated position of a bundled file to `src/...ts:line`, when the file has a source map. */
function originalPosition(path, line, column) {
  if (!mapCache.has(path)) {
    const mapPath = `${path}.map`;
    if (existsSync(mapPath)) {
      const map = JSON.parse(readFileSync(mapPath, 'utf8'));
      mapCache.set(path, { sources: map.sources, lines: decodeMappings(map.mappings) });
    } else {
      mapCache.set(path, undefined);
    }
  }
  const map = mapCache.get(path);
  const entries = map?.lines[line];
  if (!entries || entries.length === 0) return undefined;
  let best = entries[0];
  for (const entry of entries) {
    if (entry[0] > column) break;
    best = entry;
  }
  return `${map.sources[best[1]].replace(/^(\.\.\/)+/, '')}:${best[2] + 1}`;
}

/** Where steadfast's build lives: dist/ and the runner's private copies of it (`dist-<pid>`). */
const STEADFAST_DIRS = [
  `${pathToFileURL(join(rootDir, 'dist')).href}/`,
  `${pathToFileURL(join(rootDir, 'node_modules', '.cache', 'pg-steadfast-bench')).href}/dist-`,
];

function category(url) {
  if (url === '') return 'V8 / native';
  if (url.startsWith('node:')) return 'Node.js';
  if (STEADFAST_DIRS.some((dir) => url.startsWith(dir))) return 'steadfast (dist)';
  if (/node_modules\/(pg|pg-protocol|pg-pool|pg-types|pg-connection-string)\//.test(url)) return 'pg';
  if (/node_modules\/postgres\//.test(url)) return 'postgres.js';
  if (url.includes('/node_modules/')) return 'other packages';
  if (url.includes('/bench/')) return 'benchmark harness';
  return 'other';
}

function label(node) {
  const { functionName, url, lineNumber, columnNumber } = node.callFrame;
  const name = functionName || '(anonymous)';
  if (url === '') return name;
  if (url.startsWith('file://')) {
    const path = fileURLToPath(url);
    const original = originalPosition(path, lineNumber, columnNumber);
    if (original) return `${name} ${original}`;
    return `${name} ${path.split('/').slice(-2).join('/')}:${lineNumber + 1}`;
  }
  return `${name} ${url}:${lineNumber + 1}`;
}

/**
 * Self time per function and per category of one profile, idle time excluded. `top` limits each list.
 */
export function summarize(profilePath, top = 15) {
  const profile = JSON.parse(readFileSync(profilePath, 'utf8'));
  const selfTime = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    selfTime.set(id, (selfTime.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const byFunction = new Map();
  const byCategory = new Map();
  let busy = 0;
  for (const node of profile.nodes) {
    const time = selfTime.get(node.id) ?? 0;
    if (time === 0 || node.callFrame.functionName === '(idle)') continue;
    busy += time;
    const key = label(node);
    const cat =
      node.callFrame.functionName === '(garbage collector)'
        ? 'garbage collector'
        : category(node.callFrame.url);
    const entry = byFunction.get(key) ?? { time: 0, category: cat };
    entry.time += time;
    byFunction.set(key, entry);
    byCategory.set(cat, (byCategory.get(cat) ?? 0) + time);
  }
  const share = (t) => t / busy;
  return {
    busyMs: busy / 1000,
    categories: [...byCategory].sort((a, b) => b[1] - a[1]).map(([name, t]) => ({ name, share: share(t) })),
    functions: [...byFunction]
      .sort((a, b) => b[1].time - a[1].time)
      .slice(0, top)
      .map(([name, e]) => ({ name, category: e.category, share: share(e.time) })),
    steadfast: [...byFunction]
      .filter(([, e]) => e.category === 'steadfast (dist)')
      .sort((a, b) => b[1].time - a[1].time)
      .slice(0, top)
      .map(([name, e]) => ({ name, share: share(e.time) })),
  };
}

export function profilesIn(dir) {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => join(dir, f));
}

export function formatSummary(title, summary) {
  const pct = (s) => `${(s * 100).toFixed(1).padStart(5)} %`;
  const lines = [`${title} (busy ${summary.busyMs.toFixed(0)} ms)`, '  by area:'];
  for (const c of summary.categories) lines.push(`    ${pct(c.share)}  ${c.name}`);
  lines.push('  hottest functions (self time):');
  for (const f of summary.functions) lines.push(`    ${pct(f.share)}  ${f.name}  [${f.category}]`);
  lines.push('  hottest steadfast functions:');
  for (const f of summary.steadfast) lines.push(`    ${pct(f.share)}  ${f.name}`);
  return lines.join('\n');
}
