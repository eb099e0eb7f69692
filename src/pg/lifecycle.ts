/**
 * The pool's lifecycle events: everything the engine reports, plus what the pg face adds. Metrics, logs
 * and leak detection subscribe here (`pool.lifecycle`); each event is also published on
 * `node:diagnostics_channel` as `pg-steadfast:<event>` with the pool's name, at no cost without
 * subscribers.
 */
import type pg from 'pg';
import type { EngineEvents } from '../engine/engine.js';
import type { BreakerStateChange } from '../resilience/breaker.js';
import type { LeakEvents } from './leaks.js';

export const CHANNEL_PREFIX = 'pg-steadfast:';

export interface PoolLifecycleEvents extends EngineEvents<pg.Client>, LeakEvents {
  /**
   * A running statement was interrupted by its deadline or its caller's signal and cancelled on the
   * server. `delivered`: the CancelRequest reached the server; `healthy`: the statement came back, so
   * the connection is reused (otherwise it is destroyed).
   */
  cancel: { reason: 'timeout' | 'abort'; delivered: boolean; healthy: boolean };
  /** The circuit breaker changed state; `cause` is the failure that opened it. */
  breaker: BreakerStateChange;
  /** A host of a multi-host pool turned out to be something else than last seen (e.g. a promoted standby). */
  topology: { host: string; port: number; role: HostRole; previous: HostRole | undefined };
  /** A `pool.query()` or `pool.transaction()` call finished, with its duration (retries included). */
  operation: { kind: 'query' | 'transaction'; durationMs: number; error?: unknown };
}

export type HostRole = 'primary' | 'standby' | 'read-only' | 'unknown';

/** A multi-host pool's view of its servers, in `stats().topology`. */
export interface Topology {
  targetSessionAttrs: string;
  hosts: { host: string; port: number; role: HostRole }[];
}
