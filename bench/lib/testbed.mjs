/**
 * Loads the test bed (`testbed/postgres.ts`, TypeScript) for the end-to-end benchmark. It is bundled
 * with esbuild (installed with tsup) into node_modules/.cache, where its bare imports such as `pg` still
 * resolve to the project's node_modules; packages stay external so the bench and the test bed share one
 * `pg`.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { rootDir } from './util.mjs';

export async function loadTestbed() {
  const outDir = join(rootDir, 'node_modules', '.cache', 'pg-steadfast-bench');
  mkdirSync(outDir, { recursive: true });
  const outfile = join(outDir, 'testbed-postgres.mjs');
  await build({
    entryPoints: [join(rootDir, 'testbed', 'postgres.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'warning',
  });
  return import(pathToFileURL(outfile).href);
}
