/**
 * The chaos controls: faults produced by the real server and the real network path, never simulated.
 * Both pools reach the server through the same {@link ChaosProxy}, so every fault hits them alike.
 */
import type { ChaosProxy } from '../testbed/chaos-proxy.js';
import type { PostgresServer, StopMode } from '../testbed/postgres.js';
import type { Monitor } from './monitor.js';

export type DatabaseState = 'up' | 'down' | 'restarting' | 'stopping' | 'starting';

/** Longest stop or freeze the controls accept, in seconds. */
export const MAX_CHAOS_SECONDS = 60;

export interface ChaosStatus {
  database: DatabaseState;
  network: 'pass' | 'frozen';
  /** Epoch ms when a stopped database is started again or a freeze heals; `null` when nothing is scheduled. */
  databaseBackAt: number | null;
  networkBackAt: number | null;
}

/** Thrown when an action does not fit the current state; the route answers 409. */
export class ChaosConflictError extends Error {}

function elapsed(since: number): string {
  const ms = performance.now() - since;
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export class Chaos {
  readonly #server: PostgresServer;
  readonly #proxy: ChaosProxy;
  readonly #monitor: Monitor;
  /** What the server is going through right now, if anything. */
  #transition: DatabaseState | undefined;
  #startTimer: NodeJS.Timeout | undefined;
  #databaseBackAt: number | null = null;
  #endStopMark: (() => void) | undefined;
  #thawTimer: NodeJS.Timeout | undefined;
  #networkBackAt: number | null = null;
  #endFreezeMark: (() => void) | undefined;
  #closed = false;

  constructor(server: PostgresServer, proxy: ChaosProxy, monitor: Monitor) {
    this.#server = server;
    this.#proxy = proxy;
    this.#monitor = monitor;
  }

  status(): ChaosStatus {
    return {
      database: this.#transition ?? (this.#server.isRunning() ? 'up' : 'down'),
      network: this.#proxy.mode === 'freeze' ? 'frozen' : 'pass',
      databaseBackAt: this.#databaseBackAt,
      networkBackAt: this.#networkBackAt,
    };
  }

  /** A fast restart: sessions are terminated (57P01), the server shuts down and starts again. */
  async restart(): Promise<{ durationMs: number }> {
    this.#assertOpen();
    if (this.#transition !== undefined) {
      throw new ChaosConflictError(`the database is ${this.#transition}; try again in a moment`);
    }
    // A restart while stopped starts the server now; the pending start then has nothing to do.
    this.#cancelScheduledStart();
    const began = performance.now();
    const endMark = this.#monitor.mark('restart', 'restart');
    this.#monitor.log('chaos', 'warn', 'Restart database: pg_ctl restart -m fast (sessions get 57P01)');
    this.#transition = 'restarting';
    try {
      await this.#server.restart('fast');
    } catch (error) {
      this.#monitor.log('chaos', 'bad', `Restart failed: ${(error as Error).message}`);
      throw error;
    } finally {
      this.#transition = undefined;
      endMark();
    }
    const durationMs = Math.round(performance.now() - began);
    this.#monitor.log('chaos', 'info', `Database is back after ${elapsed(began)} (restart)`);
    return { durationMs };
  }

  /**
   * Stops the server (`fast`: sessions are told 57P01; `immediate`: every process is killed, as in a
   * crash, and the start runs crash recovery) and starts it again after `seconds`.
   */
  async stop(seconds: number, mode: StopMode = 'fast'): Promise<{ backAt: number }> {
    this.#assertOpen();
    if (this.#transition !== undefined) {
      throw new ChaosConflictError(`the database is ${this.#transition}; try again in a moment`);
    }
    if (!this.#server.isRunning()) throw new ChaosConflictError('the database is already down');
    this.#endStopMark = this.#monitor.mark('stop', `stopped ${seconds} s`);
    this.#monitor.log('chaos', 'warn', `Stop database for ${seconds} s: pg_ctl stop -m ${mode}`);
    this.#transition = 'stopping';
    try {
      await this.#server.stop(mode);
    } catch (error) {
      this.#monitor.log('chaos', 'bad', `Stop failed: ${(error as Error).message}`);
      this.#endStopMark();
      this.#endStopMark = undefined;
      throw error;
    } finally {
      this.#transition = undefined;
    }
    this.#monitor.log('chaos', 'info', `Database is down; it starts again in ${seconds} s`);
    this.#databaseBackAt = Date.now() + seconds * 1000;
    this.#startTimer = setTimeout(() => void this.#startAgain(), seconds * 1000);
    return { backAt: this.#databaseBackAt };
  }

  /**
   * Ends every client session of the pools: `terminate` with pg_terminate_backend() on the server
   * (clients read 57P01), `reset` with a TCP RST on every proxied connection (clients see ECONNRESET).
   */
  async killConnections(how: 'terminate' | 'reset' = 'terminate'): Promise<{ killed: number }> {
    this.#assertOpen();
    const endMark = this.#monitor.mark('kill', 'kill');
    try {
      if (how === 'reset') {
        const killed = this.#proxy.resetAll();
        this.#monitor.log('chaos', 'warn', `Kill connections: TCP RST on ${killed} proxied connection(s)`);
        return { killed };
      }
      if (!this.#server.isRunning() || this.#transition !== undefined) {
        throw new ChaosConflictError('the database is not up, so there are no sessions to terminate');
      }
      this.#monitor.log('chaos', 'warn', 'Kill connections: pg_terminate_backend() on every client session');
      const killed = await this.#server.terminateBackends();
      this.#monitor.log('chaos', 'info', `${killed} session(s) terminated`);
      return { killed };
    } finally {
      endMark();
    }
  }

  /**
   * A network partition for `seconds`: no byte moves on existing or new connections and nothing is
   * closed, until it heals. Freezing again while frozen moves the end.
   */
  freeze(seconds: number): { backAt: number } {
    this.#assertOpen();
    if (this.#thawTimer) clearTimeout(this.#thawTimer);
    if (this.#proxy.mode !== 'freeze') {
      this.#proxy.freeze();
      this.#endFreezeMark = this.#monitor.mark('freeze', `network frozen ${seconds} s`);
      this.#monitor.log('chaos', 'warn', `Freeze network for ${seconds} s: no byte moves either way`);
    } else {
      this.#monitor.log('chaos', 'warn', `Network stays frozen for another ${seconds} s`);
    }
    this.#networkBackAt = Date.now() + seconds * 1000;
    this.#thawTimer = setTimeout(() => this.#thaw(), seconds * 1000);
    return { backAt: this.#networkBackAt };
  }

  /** Cancels what is scheduled and heals the network; a stopped server stays down (it is destroyed next). */
  close(): void {
    this.#closed = true;
    this.#cancelScheduledStart();
    if (this.#thawTimer) clearTimeout(this.#thawTimer);
    this.#thawTimer = undefined;
    if (this.#proxy.mode === 'freeze') this.#proxy.pass();
  }

  #thaw(): void {
    this.#thawTimer = undefined;
    this.#networkBackAt = null;
    this.#proxy.pass();
    this.#endFreezeMark?.();
    this.#endFreezeMark = undefined;
    this.#monitor.log('chaos', 'info', 'Network heals: held-back data flows again');
  }

  async #startAgain(): Promise<void> {
    this.#startTimer = undefined;
    if (this.#closed) return;
    const began = performance.now();
    this.#transition = 'starting';
    try {
      await this.#server.start();
      this.#monitor.log('chaos', 'info', `Database accepts connections again (start took ${elapsed(began)})`);
    } catch (error) {
      if (!this.#closed) this.#monitor.log('chaos', 'bad', `Start failed: ${(error as Error).message}`);
    } finally {
      this.#transition = undefined;
      this.#databaseBackAt = null;
      this.#endStopMark?.();
      this.#endStopMark = undefined;
    }
  }

  #cancelScheduledStart(): void {
    if (this.#startTimer === undefined) return;
    clearTimeout(this.#startTimer);
    this.#startTimer = undefined;
    this.#databaseBackAt = null;
    this.#endStopMark?.();
    this.#endStopMark = undefined;
  }

  #assertOpen(): void {
    if (this.#closed) throw new ChaosConflictError('the demo is shutting down');
  }
}
