/**
 * A fake driver for the engine's unit tests: connections are plain objects whose behaviour the test
 * scripts (connect succeeds, fails, hangs; validation and reset fail; the connection breaks).
 */
import type { Clock } from '../../src/engine/clock.js';
import type { ConnectContext, Driver } from '../../src/engine/driver.js';

export interface FakeConnection {
  id: number;
  /** Not yet destroyed by the pool. */
  open: boolean;
  /** Broke on its own (socket gone); the pool has not necessarily noticed the consequences yet. */
  broken: boolean;
  inTransaction: boolean;
  failValidation: boolean;
  failReset: boolean;
  /** Makes the connection break on its own, as a socket error would. */
  breakNow(error?: unknown): void;
}

export type ConnectBehaviour =
  | { kind: 'ok'; delayMs?: number }
  | { kind: 'fail'; error: unknown; delayMs?: number }
  | { kind: 'hang'; ignoreAbort?: boolean };

export class FakeDriver implements Driver<FakeConnection> {
  /** What the next connects do; when empty, `defaultBehaviour` applies. */
  readonly script: ConnectBehaviour[] = [];
  defaultBehaviour: ConnectBehaviour = { kind: 'ok' };
  validateDelayMs = 0;
  connectCalls = 0;
  inFlight = 0;
  maxInFlight = 0;
  readonly connections: FakeConnection[] = [];
  #nextId = 1;

  constructor(readonly clock: Clock) {}

  get openConnections(): number {
    return this.connections.filter((c) => c.open).length;
  }

  connect(context: ConnectContext): Promise<FakeConnection> {
    this.connectCalls++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const behaviour = this.script.shift() ?? this.defaultBehaviour;
    return new Promise<FakeConnection>((resolve, reject) => {
      let done = false;
      const settle = (fn: () => void) => {
        if (done) return;
        done = true;
        this.inFlight--;
        fn();
      };
      context.signal.addEventListener('abort', () => settle(() => reject(context.signal.reason)), {
        once: true,
      });
      if (behaviour.kind === 'hang') return;
      const delay = behaviour.delayMs ?? 0;
      const run = () =>
        settle(() => {
          if (behaviour.kind === 'fail') {
            reject(behaviour.error);
            return;
          }
          const connection: FakeConnection = {
            id: this.#nextId++,
            open: true,
            broken: false,
            inTransaction: false,
            failValidation: false,
            failReset: false,
            breakNow: (error = new Error('Connection terminated unexpectedly')) => {
              connection.broken = true;
              context.onBroken(error);
            },
          };
          this.connections.push(connection);
          resolve(connection);
        });
      if (delay > 0) this.clock.setTimeout(run, delay, true);
      else queueMicrotask(run);
    });
  }

  validate(connection: FakeConnection, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
      const run = () => {
        if (connection.broken || connection.failValidation) reject(new Error('validation failed'));
        else resolve();
      };
      if (this.validateDelayMs > 0) this.clock.setTimeout(run, this.validateDelayMs, true);
      else queueMicrotask(run);
    });
  }

  needsReset(connection: FakeConnection): boolean {
    return connection.inTransaction;
  }

  async reset(connection: FakeConnection): Promise<void> {
    if (connection.failReset || connection.broken) throw new Error('ROLLBACK failed');
    connection.inTransaction = false;
  }

  async destroy(connection: FakeConnection): Promise<void> {
    connection.open = false;
  }
}
