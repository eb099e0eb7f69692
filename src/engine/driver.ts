/**
 * The engine's only view of a database connection. `src/pg/driver.ts` implements it with `pg.Client`;
 * unit tests implement it with fakes. Keeping it this small is what lets the state machine be tested
 * with a fake clock and no server.
 */

export interface ConnectContext {
  /**
   * Aborted when the attempt must stop (connect timeout, pool closing). The driver must then destroy
   * whatever it opened and reject.
   */
  signal: AbortSignal;
  /**
   * Call once when the connection breaks on its own (socket error or end, a FATAL from the server)
   * after `connect` resolved. The pool evicts it: never reused.
   */
  onBroken(error: unknown): void;
}

export interface Driver<C> {
  /** Opens one connection: TCP, TLS, startup and authentication. Must reject (never hang) once `signal` aborts. */
  connect(context: ConnectContext): Promise<C>;
  /** A cheap liveness check (one round trip). Rejects when the connection is not usable. */
  validate(connection: C, signal: AbortSignal): Promise<void>;
  /**
   * Whether a released connection is in a state the next user must not see (an open or failed
   * transaction, a statement still running). Synchronous and cheap: called on every release.
   */
  needsReset(connection: C): boolean;
  /** Brings such a connection back to a clean state (e.g. ROLLBACK). Rejects when that is not possible. */
  reset(connection: C, signal: AbortSignal): Promise<void>;
  /**
   * Told when a connection starts (`true`) and stops (`false`) idling, e.g. to let the process exit
   * while only idle connections remain (pg.Pool's `allowExitOnIdle`). Optional.
   */
  setIdle?(connection: C, idle: boolean): void;
  /** Closes the connection; resolves when its socket is gone. Never rejects. */
  destroy(connection: C): Promise<void>;
}
