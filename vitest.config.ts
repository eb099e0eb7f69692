import { defineConfig } from 'vitest/config';

/**
 * The test bed's default password carries this marker (testbed/postgres.ts). Any console line that
 * shows it means the pool printed a password: the run fails.
 */
const SENTINEL_MARKER = 'S3NT1NEL';
const leaks: string[] = [];

process.on('exit', () => {
  if (leaks.length > 0) {
    console.error(
      `Redaction sweep: ${leaks.length} console line(s) contained the password marker:\n${leaks.join('\n')}`,
    );
    process.exitCode = 1;
  }
});

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration suites start their own PostgreSQL servers; two cores cannot run many at once.
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ['default'],
    onConsoleLog(log) {
      if (log.includes(SENTINEL_MARKER)) leaks.push(log.trim().slice(0, 500));
    },
  },
});
