/**
 * Graceful shutdown on SIGTERM / SIGINT (seeds 002, 004): stop taking new work, let the work already
 * in flight (statements running, callers already waiting) finish, then close, and exit.
 */
import type { Logger } from '../observability/logger.js';

export interface ShutdownOptions {
  /** Signals to handle. Default `['SIGTERM', 'SIGINT']`. */
  signals?: NodeJS.Signals[];
  /** How long in-flight work may take before connections are destroyed, in ms. Default 10000. */
  timeoutMs?: number;
  /** Where to report what happened. Default: the console. */
  logger?: Logger;
  /** Exit the process when done (code 0, or 1 if closing failed). Default true. */
  exit?: boolean;
  /** Runs before the pools close, e.g. to stop an HTTP server from accepting requests. */
  beforeClose?: () => void | Promise<void>;
}

interface Closable {
  readonly poolName: string;
  close(options: { timeoutMs: number; drain: boolean }): Promise<void>;
  stats(): { inUse: number; waiting: number };
}

/**
 * Installs signal handlers that drain and close the given pools. Idempotent per signal: a second
 * signal while shutting down does not start a second shutdown. Returns a function that removes the
 * handlers, and `shutdown()` to trigger the same sequence by hand.
 */
export function installGracefulShutdown(
  pools: Closable | Closable[],
  options: ShutdownOptions = {},
): { uninstall(): void; shutdown(reason?: string): Promise<void> } {
  const list = Array.isArray(pools) ? pools : [pools];
  const signals = options.signals ?? ['SIGTERM', 'SIGINT'];
  const timeoutMs = options.timeoutMs ?? 10_000;
  const logger = options.logger ?? {
    warn: (fields: Record<string, unknown>, message: string) =>
      console.warn(JSON.stringify({ msg: message, ...fields })),
  };
  const info = logger.info ?? logger.warn;
  let running: Promise<void> | undefined;

  const shutdown = (reason = 'shutdown requested'): Promise<void> => {
    running ??= (async () => {
      const inFlight = list.map((p) => ({ pool: p.poolName, ...pick(p.stats()) }));
      info({ reason, timeoutMs, inFlight }, 'Shutting down: draining database pools');
      let failed = false;
      try {
        await options.beforeClose?.();
      } catch (error) {
        failed = true;
        logger.warn({ err: { message: String((error as Error)?.message ?? error) } }, 'beforeClose failed');
      }
      await Promise.all(
        list.map((p) =>
          p.close({ timeoutMs, drain: true }).catch(() => {
            failed = true;
          }),
        ),
      );
      info({ pools: list.map((p) => p.poolName) }, 'Database pools closed');
      if (options.exit !== false) process.exit(failed ? 1 : 0);
    })();
    return running;
  };

  const handlers = signals.map((signal) => {
    const handler = () => void shutdown(signal);
    process.on(signal, handler);
    return [signal, handler] as const;
  });
  return {
    uninstall() {
      for (const [signal, handler] of handlers) process.off(signal, handler);
    },
    shutdown,
  };
}

function pick(stats: { inUse: number; waiting: number }) {
  return { inUse: stats.inUse, waiting: stats.waiting };
}
