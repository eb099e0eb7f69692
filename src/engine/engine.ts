/**
 * The pool's state machine, independent of any database driver.
 *
 * Connections live in slots. A slot is in exactly one state: connecting, idle, validating, in use or
 * resetting; `total` counts them all (a destroyed slot leaves every count at once). Idle slots sit on a
 * LIFO stack (the most recently used is handed out first, so surplus connections age out); callers wait
 * in a FIFO queue. Both are linked lists, so a waiter that gives up and a connection that breaks leave
 * in O(1).
 *
 * The rules that make it fault tolerant:
 * - Every acquire settles by its deadline: with a connection or a typed error. A waiter that gives up
 *   never leaks the connection meant for it: that connection goes back to idle.
 * - New connections are opened only for callers who wait, at most `maxConnectConcurrency` at a time,
 *   and after a failure the next attempt waits a backoff with full jitter: no reconnect storm.
 * - A connection that breaks is never handed out again; one idle for a while is validated first.
 * - Timers that only keep house never hold the process open.
 */

import { durationOption, enumOption } from '../config/validate.js';
import {
  AbortedError,
  AcquireTimeoutError,
  ConnectFatalError,
  ConnectTimeoutError,
  DoubleReleaseError,
  PoolClosedError,
  type PoolSnapshot,
  QueueFullError,
} from '../errors.js';
import { fullJitterDelay } from '../resilience/backoff.js';
import { classifyConnectError, errorCode } from '../resilience/classify.js';

import { type Clock, systemClock, type TimerHandle } from './clock.js';
import { type DeadlineGroup, type DeadlineNode, Deadlines } from './deadlines.js';
import type { Driver } from './driver.js';
import { type EventSlot, TypedEmitter } from './emitter.js';
import { LinkedList, type ListNode } from './list.js';
import { type EngineOptions, type ResolvedEngineOptions, resolveEngineOptions } from './options.js';

/**
 * Schedules microtasks: `RESOLVED.then(fn)` costs a fraction of Node's `queueMicrotask(fn)`, which builds
 * an async resource per call. (`fn` must not throw: nothing would catch it.)
 */
const RESOLVED = Promise.resolve();

/** SQLSTATE too_many_connections. */
const TOO_MANY_CONNECTIONS = '53300';
/** Least time between connection attempts after a fatal connect error, in ms. */
const FATAL_HOLD_MS = 1_000;
/** First backoff ceiling after the server said it has no connection slot left, in ms. */
const CAPACITY_BACKOFF_INITIAL_MS = 200;

export type SlotState = 'connecting' | 'idle' | 'validating' | 'in-use' | 'resetting' | 'closed';

/** Why a connection was closed. */
export type EvictReason =
  /** It broke on its own: socket error or end, a FATAL from the server. */
  | 'broken'
  /** It failed its validation round trip. */
  | 'validation-failed'
  /** It came back in a state that could not be reset (e.g. ROLLBACK failed). */
  | 'reset-failed'
  /** Its holder released it with an error, or asked for it to be destroyed. */
  | 'released-with-error'
  /** It reached its maximum lifetime. */
  | 'expired'
  /** It was checked out `maxUses` times. */
  | 'max-uses'
  /** It stayed idle longer than the idle timeout. */
  | 'idle-timeout'
  /** It was a burst connection beyond the kept size, and nobody needed it any more. */
  | 'overflow'
  /** The pool caches nothing (`mode: 'null'`). */
  | 'null-pool'
  /** The pool is closing. */
  | 'closed'
  /** The pool retired every connection at once (e.g. the server they lead to is no longer the primary). */
  | 'retired';

export interface EngineEvents<C> {
  /** A new connection opened. */
  connect: { id: number; connection: C; durationMs: number };
  /** A connection attempt failed. `fatal` means retrying cannot help (bad password, no such database). */
  connectError: { error: unknown; attempt: number; fatal: boolean; durationMs: number };
  /** The next connection attempt waits `delayMs` after `attempt` consecutive failures. */
  retry: { phase: 'connect' | 'query' | 'transaction'; attempt: number; delayMs: number; error: unknown };
  /** A connection was handed out after `waitMs`. */
  acquire: { id: number; seq: number; connection: C; waitMs: number };
  /** A connection came back after `useMs` of use. */
  release: { id: number; seq: number; connection: C; useMs: number };
  /** An idle connection was checked with a round trip before checkout. */
  validate: { id: number; connection: C; ok: boolean; durationMs: number; error?: unknown };
  /** A connection was closed, and why. */
  evict: { id: number; connection: C; reason: EvictReason; error?: unknown };
  /**
   * A connection reported an error of its own (it is evicted: at once when idle, on release otherwise).
   * Informational only.
   */
  error: { id: number; connection: C; error: unknown; idle: boolean };
  /** An acquire gave up at its deadline. */
  timeout: { waitMs: number; error: AcquireTimeoutError };
  /** The pool finished closing. */
  close: Record<string, never>;
}

/** Counters since the pool started. */
export interface EngineCounters {
  connectsStarted: number;
  connectsSucceeded: number;
  connectsFailed: number;
  acquires: number;
  releases: number;
  timeouts: number;
  aborts: number;
  /** Acquires rejected at once because the wait queue was full (`maxWaiting`). */
  shed: number;
  validations: number;
  validationFailures: number;
  resets: number;
  evictions: Record<EvictReason, number>;
}

/** A snapshot of the pool, from `stats()`. */
export interface EngineStats extends PoolSnapshot {
  validating: number;
  resetting: number;
  /** Connections kept when idle: `max - maxOverflow`. */
  keptSize: number;
  /** Connections open beyond the kept size. */
  overflow: number;
  min: number;
  closing: boolean;
  /** Consecutive failed connection attempts (0 after a success). */
  consecutiveConnectFailures: number;
  /** After the server ran out of slots (53300): connections the pool currently limits itself to (plus one probe). */
  capacityLimit: number | undefined;
  counters: EngineCounters;
}

export interface AcquireOptions {
  /** Gives up when this signal aborts, with an `AbortedError`. */
  signal?: AbortSignal | undefined;
  /** Deadline for this acquire in ms; defaults to the pool's `acquireTimeoutMs`. */
  timeoutMs?: number | undefined;
  /**
   * Lane in the wait queue: `'high'` waiters are served before `'normal'` ones, and those before
   * `'low'`; FIFO within a lane. When the queue is full, the newest waiter of a lower lane is shed to
   * make room. Default `'normal'`.
   */
  priority?: Priority | undefined;
}

export type Priority = 'high' | 'normal' | 'low';
const PRIORITIES: readonly Priority[] = ['high', 'normal', 'low'];

export interface ReleaseOptions {
  /** Close the connection instead of reusing it (pg's `release(err)` / `release(true)`). */
  destroy?: boolean;
  /** The error that made the holder give the connection up; reported in the `evict` event. */
  error?: unknown;
}

class Slot<C> implements ListNode<Slot<C>> {
  prev: Slot<C> | undefined = undefined;
  next: Slot<C> | undefined = undefined;
  list: LinkedList<Slot<C>> | undefined = undefined;
  connection!: C;
  state: SlotState = 'connecting';
  createdAt = 0;
  expiresAt = Number.POSITIVE_INFINITY;
  /** When the connection was last known good: released, validated or created. */
  lastUsedAt = 0;
  broken: unknown = undefined;
  isBroken = false;
  /** The caller a validation in progress is for. */
  validatingFor: Waiter<C> | undefined = undefined;
  /** How many times it has been checked out. */
  uses = 0;
  lease: Lease<C> | undefined = undefined;

  constructor(readonly id: number) {}
}

/** A checked-out connection. Give it back with `engine.release(lease)` exactly once. */
export class Lease<C> {
  /** @internal */ released = false;
  /** When it was given back (`clock.now()`); NaN until then. */
  releasedAt = Number.NaN;

  constructor(
    /** @internal */ readonly slot: Slot<C>,
    readonly connection: C,
    /** When the caller asked for it (`clock.now()`): the start of its wait. */
    readonly requestedAt: number,
    readonly acquiredAt: number,
    /** This checkout's number (1, 2, ... per pool): a correlation id for the acquire and its release. */
    readonly seq: number,
  ) {}

  /** The connection's id, stable for its life (also in events). */
  get id(): number {
    return this.slot.id;
  }
}

class Waiter<C> implements ListNode<Waiter<C>>, DeadlineNode<Waiter<C>> {
  prev: Waiter<C> | undefined = undefined;
  next: Waiter<C> | undefined = undefined;
  list: LinkedList<Waiter<C>> | undefined = undefined;
  settled = false;
  /** Index into the wait queue's lanes: 0 high, 1 normal, 2 low. */
  lane = 1;
  dGroup: DeadlineGroup<Waiter<C>> | undefined = undefined;
  dIndex = 0;
  onAbort: (() => void) | undefined = undefined;

  constructor(
    readonly resolve: (lease: Lease<C>) => void,
    readonly reject: (error: unknown) => void,
    /** When it started waiting (`clock.now()`); NaN until stamped (see `Engine#stampWaiters`). */
    public enqueuedAt: number,
    readonly timeoutMs: number,
    readonly signal: AbortSignal | undefined,
  ) {}
}

/** Three FIFO lanes; `shift` serves the highest non-empty lane. Every operation is O(1). */
class WaitQueue<C> {
  readonly #lanes = [new LinkedList<Waiter<C>>(), new LinkedList<Waiter<C>>(), new LinkedList<Waiter<C>>()];
  size = 0;

  pushTail(waiter: Waiter<C>): void {
    this.#lanes[waiter.lane]!.pushTail(waiter);
    this.size++;
  }

  /** Back to the front of its lane (a caller whose connection failed validation keeps its place). */
  pushHead(waiter: Waiter<C>): void {
    this.#lanes[waiter.lane]!.pushHead(waiter);
    this.size++;
  }

  shift(): Waiter<C> | undefined {
    // Called on every release: nobody waiting is the common case.
    if (this.size === 0) return undefined;
    for (const lane of this.#lanes) {
      const waiter = lane.shift();
      if (waiter !== undefined) {
        this.size--;
        return waiter;
      }
    }
    return undefined;
  }

  remove(waiter: Waiter<C>): boolean {
    const removed = waiter.list?.remove(waiter) === true;
    if (removed) this.size--;
    return removed;
  }

  /** The newest waiter of the lowest lane below `lane`, if any: the one to shed for a more urgent caller. */
  newestBelow(lane: number): Waiter<C> | undefined {
    for (let i = this.#lanes.length - 1; i > lane; i--) {
      const tail = this.#lanes[i]!.tail;
      if (tail !== undefined) return tail;
    }
    return undefined;
  }
}

export class Engine<C> {
  readonly events: TypedEmitter<EngineEvents<C>>;
  readonly options: ResolvedEngineOptions;
  // The events of every checkout, kept at hand: the hot path asks them whether anyone listens.
  readonly #acquireEvent: EventSlot<EngineEvents<C>['acquire']>;
  readonly #releaseEvent: EventSlot<EngineEvents<C>['release']>;

  readonly #driver: Driver<C>;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #slots = new Set<Slot<C>>();
  readonly #idle = new LinkedList<Slot<C>>();
  /** Waiters by priority: high, normal, low. FIFO within each lane. */
  readonly #waiters = new WaitQueue<C>();
  /** Every waiter's deadline, on one timer. */
  readonly #deadlines: Deadlines<Waiter<C>>;
  /** Waiters queued in this turn of the microtask queue, waiting for `#stampWaiters` to start their clocks. */
  readonly #unstamped: Waiter<C>[] = [];
  readonly #stampWaiters = (): void => this.#stamp();
  /** `acquire()`'s promise executor, with the call's options passed through `#executorOptions`. */
  #executorOptions: AcquireOptions | undefined = undefined;
  readonly #executor = (resolve: (lease: Lease<C>) => void, reject: (error: unknown) => void): void => {
    const options = this.#executorOptions;
    this.#executorOptions = undefined;
    this.acquireWith(options, resolve, reject);
  };
  /** Connection attempts in flight: aborting one settles it as failed at once, whatever the driver does. */
  readonly #attempts = new Map<AbortController, (error: unknown) => void>();
  readonly #pendingDestroys = new Set<Promise<void>>();
  #nextId = 1;
  #connecting = 0;
  #inUse = 0;
  #validating = 0;
  #resetting = 0;
  #consecutiveConnectFailures = 0;
  #lastConnectError: unknown = undefined;
  /** No connection attempt starts before this time (backoff after a failure). A clock may read below 0. */
  #connectGateAt = Number.NEGATIVE_INFINITY;
  #gateTimer: TimerHandle = undefined;
  /**
   * Set when the server said it has no slot left (53300): the pool then grows one connection at a time
   * above what it has, instead of asking for every connection it wants at once.
   */
  #capacityLimit: number | undefined = undefined;
  /**
   * After a fatal connect error (wrong password, no such database): while the backoff gate is closed,
   * callers that would need a new connection get this error at once instead of waiting, and attempts
   * go one at a time. Cleared by the next successful connect.
   */
  #fatalError: ConnectFatalError | undefined = undefined;
  #housekeepingTimer: TimerHandle = undefined;
  /** Set first thing in close(), so nothing started during teardown sees an open pool. */
  #isClosing = false;
  /** close({ drain: true }): callers already waiting are still served until the close timeout. */
  #draining = false;
  #closed: Promise<void> | undefined = undefined;
  #onSettledChange: (() => void) | undefined = undefined;
  readonly #counters: EngineCounters = {
    connectsStarted: 0,
    connectsSucceeded: 0,
    connectsFailed: 0,
    acquires: 0,
    releases: 0,
    timeouts: 0,
    aborts: 0,
    shed: 0,
    validations: 0,
    validationFailures: 0,
    resets: 0,
    evictions: {
      broken: 0,
      'validation-failed': 0,
      'reset-failed': 0,
      'released-with-error': 0,
      expired: 0,
      'max-uses': 0,
      'idle-timeout': 0,
      overflow: 0,
      'null-pool': 0,
      closed: 0,
      retired: 0,
    },
  };

  constructor(
    driver: Driver<C>,
    options?: EngineOptions,
    deps?: { clock?: Clock; random?: () => number; events?: TypedEmitter<EngineEvents<C>> },
  ) {
    this.events = deps?.events ?? new TypedEmitter<EngineEvents<C>>();
    this.#acquireEvent = this.events.slot('acquire');
    this.#releaseEvent = this.events.slot('release');
    this.#driver = driver;
    this.options = resolveEngineOptions(options);
    this.#clock = deps?.clock ?? systemClock;
    this.#deadlines = new Deadlines<Waiter<C>>(this.#clock, (waiter) => this.#onWaiterTimeout(waiter));
    this.#random = deps?.random ?? Math.random;
  }

  /** Connections kept when idle; the rest of `max` are overflow. */
  get keptSize(): number {
    return this.options.max - this.options.maxOverflow;
  }

  get total(): number {
    return this.#slots.size;
  }

  get idleCount(): number {
    return this.#idle.size;
  }

  get waitingCount(): number {
    return this.#waiters.size;
  }

  get closed(): boolean {
    return this.#isClosing;
  }

  /** The last connection error since the last successful connect, if any. */
  get lastConnectError(): unknown {
    return this.#lastConnectError;
  }

  /** Checked-out connections already past their lifetime (closed when released). O(total). */
  expiredInUseCount(): number {
    const now = this.#clock.now();
    let count = 0;
    for (const slot of this.#slots) if (slot.state === 'in-use' && now >= slot.expiresAt) count++;
    return count;
  }

  snapshot(): PoolSnapshot {
    return {
      total: this.#slots.size,
      idle: this.#idle.size,
      inUse: this.#inUse,
      connecting: this.#connecting,
      waiting: this.#waiters.size,
      max: this.options.max,
    };
  }

  stats(): EngineStats {
    const total = this.#slots.size;
    return {
      ...this.snapshot(),
      validating: this.#validating,
      resetting: this.#resetting,
      keptSize: this.keptSize,
      overflow: Math.max(0, total - this.keptSize),
      min: this.options.min,
      closing: this.#isClosing,
      consecutiveConnectFailures: this.#consecutiveConnectFailures,
      capacityLimit: this.#capacityLimit,
      counters: { ...this.#counters, evictions: { ...this.#counters.evictions } },
    };
  }

  /** Checks out a connection: an idle one (validated if it idled long), a new one, or one released later. */
  acquire(options?: AcquireOptions): Promise<Lease<C>> {
    // Fast path: nobody queued ahead and a trusted idle connection at hand.
    if (
      !this.#isClosing &&
      this.#waiters.size === 0 &&
      this.#idle.size > 0 &&
      options?.signal?.aborted !== true
    ) {
      const lease = this.#takeIdle(this.#clock.now());
      if (lease !== undefined) return Promise.resolve(lease);
    }
    // One executor for every call: the Promise constructor runs it at once, before anything else can
    // set #executorOptions again.
    this.#executorOptions = options;
    return new Promise<Lease<C>>(this.#executor);
  }

  /**
   * `acquire()` without a promise: calls `onLease` with the lease or `onError` with the refusal, at once
   * when the answer is known now, otherwise when a connection comes free (from inside `release()` or
   * the event that freed it). For callers that start work on the connection right away, such as the
   * pool's `query()`, this saves a promise and a turn of the microtask queue per checkout. The callbacks
   * must not throw, and must not release the lease synchronously from `onLease`.
   */
  acquireWith(
    options: AcquireOptions | undefined,
    onLease: (lease: Lease<C>) => void,
    onError: (error: unknown) => void,
  ): void {
    if (this.#isClosing) {
      onError(new PoolClosedError());
      return;
    }
    const signal = options?.signal;
    if (signal?.aborted) {
      this.#counters.aborts++;
      onError(new AbortedError('Acquiring a connection', signal.reason));
      return;
    }
    // Read only when needed: a caller who joins a queue has its clock started by #stampWaiters.
    let now = Number.NaN;
    if (this.#waiters.size === 0) {
      now = this.#clock.now();
      const lease = this.#takeIdle(now);
      if (lease !== undefined) {
        onLease(lease);
        return;
      }
    }
    let timeoutMs = this.options.acquireTimeoutMs;
    let lane = 1;
    try {
      if (options?.timeoutMs !== undefined)
        timeoutMs = durationOption('timeoutMs', options.timeoutMs, timeoutMs, 1);
      if (options?.priority !== undefined) {
        lane = PRIORITIES.indexOf(enumOption('priority', options.priority, 'normal', PRIORITIES));
      }
    } catch (error) {
      onError(error);
      return;
    }
    if (this.#fatalError !== undefined && this.#slots.size === this.#connecting) {
      if (Number.isNaN(now)) now = this.#clock.now();
      if (now < this.#connectGateAt) {
        // The database just refused us for a reason retrying cannot fix, and no connection is open that
        // could come back: answer at once rather than queue for the next attempt.
        onError(this.#fatalError);
        return;
      }
    }
    if (this.#waiters.size >= this.options.maxWaiting) {
      // Full: shed the newest waiter of a less urgent lane, or else this caller, at once.
      const victim = this.#waiters.newestBelow(lane);
      const error = new QueueFullError(this.options.maxWaiting, this.snapshot());
      this.#counters.shed++;
      if (victim === undefined) {
        onError(error);
        return;
      }
      this.#settleWaiter(victim);
      victim.reject(error);
    }
    if (Number.isNaN(now) && this.#acquireEvent.active) now = this.#clock.now(); // wait times are observed: exact
    const waiter = new Waiter<C>(onLease, onError, now, timeoutMs, signal);
    waiter.lane = lane;
    if (Number.isNaN(now)) {
      // Joining a queue that is already there, which is when a pool is busiest: one clock reading at the
      // end of this turn starts every such caller's clock (#stamp). The deadline can only come later than
      // a reading here would put it, by the rest of the microtasks queued ahead, during which no timer could
      // fire anyway: never earlier.
      if (this.#unstamped.length === 0) RESOLVED.then(this.#stampWaiters);
      this.#unstamped.push(waiter);
    } else {
      this.#deadlines.add(waiter, timeoutMs, now);
    }
    if (signal) {
      waiter.onAbort = () => this.#onWaiterAbort(waiter);
      signal.addEventListener('abort', waiter.onAbort, { once: true });
    }
    this.#waiters.pushTail(waiter);
    // An idle connection with a caller queued is one due for validation (any other was taken above).
    if (this.#idle.size > 0) this.#pump(Number.isNaN(now) ? this.#clock.now() : now);
    else this.#openConnections();
  }

  /** Starts the clock of every caller queued since the last call: their wait and their deadline. */
  #stamp(): void {
    const now = this.#clock.now();
    const waiters = this.#unstamped;
    for (let i = 0; i < waiters.length; i++) {
      const waiter = waiters[i]!;
      waiter.enqueuedAt = now;
      // One already served, aborted, shed or refused at close needs no deadline.
      if (!waiter.settled) this.#deadlines.add(waiter, waiter.timeoutMs, now);
    }
    waiters.length = 0;
  }

  /**
   * Checks out the most recently used idle connection that can be trusted without a round trip, closing
   * any past their lifetime on the way; undefined when none can (one due for validation stays on top,
   * for the queued path to validate).
   */
  #takeIdle(now: number): Lease<C> | undefined {
    for (let slot = this.#idle.shift(); slot !== undefined; slot = this.#idle.shift()) {
      if (this.#retireIfDue(slot, now)) continue;
      if (!this.#needsValidation(slot, now)) return this.#checkout(slot, now, now);
      this.#idle.pushHead(slot);
      return undefined;
    }
    return undefined;
  }

  /**
   * Gives a connection back. A broken one, one released with `destroy`, an expired one, or any in
   * null mode is closed; one inside a transaction is reset first. Throws `DoubleReleaseError` on a
   * second release of the same lease.
   */
  release(lease: Lease<C>, options?: ReleaseOptions): void {
    if (lease.released) throw new DoubleReleaseError();
    lease.released = true;
    const slot = lease.slot;
    if (slot.lease !== lease || slot.state !== 'in-use') return; // already destroyed by close()
    slot.lease = undefined;
    this.#counters.releases++;
    const now = this.#clock.now();
    lease.releasedAt = now;
    slot.lastUsedAt = now;
    if (this.#releaseEvent.active) {
      this.#releaseEvent.emit({
        id: slot.id,
        seq: lease.seq,
        connection: slot.connection,
        useMs: now - lease.acquiredAt,
      });
    }
    if (slot.isBroken) {
      this.#destroy(slot, 'broken', slot.broken);
    } else if (options?.destroy) {
      this.#destroy(slot, 'released-with-error', options.error);
    } else if (!this.#serving()) {
      this.#destroy(slot, 'closed');
    } else if (this.options.mode === 'null') {
      this.#destroy(slot, 'null-pool');
    } else if (now >= slot.expiresAt) {
      this.#destroy(slot, 'expired');
    } else if (this.options.maxUses > 0 && slot.uses >= this.options.maxUses) {
      this.#destroy(slot, 'max-uses');
    } else if (this.#driver.needsReset(slot.connection)) {
      this.#reset(slot);
      return;
    } else {
      this.#makeAvailable(slot, now);
      return;
    }
    this.#pump(now);
  }

  /**
   * Stops taking work: rejects every waiter with `PoolClosedError`, closes idle connections, lets
   * checked-out ones finish for up to `timeoutMs` (default `closeTimeoutMs`) and then destroys them.
   * Resolves when every connection is closed. Calling it again returns the same promise.
   */
  close(options?: { timeoutMs?: number; drain?: boolean }): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#isClosing = true;
    this.#draining = options?.drain === true;
    const timeoutMs = options?.timeoutMs ?? this.options.closeTimeoutMs;
    if (this.#draining) {
      // Graceful: callers already waiting still get connections; only new callers are refused.
      this.#pump();
    } else {
      this.#stopServing();
    }
    for (const slot of [...this.#slots]) {
      if (slot.state === 'idle') this.#destroy(slot, 'closed');
    }
    this.#clearTimer('housekeeping');
    let closeTimer: TimerHandle;
    const drained = new Promise<void>((resolve) => {
      const check = () => {
        if (this.#slots.size === 0 && this.#waiters.size === 0) {
          this.#onSettledChange = undefined;
          resolve();
        }
      };
      this.#onSettledChange = check;
      closeTimer = this.#clock.setTimeout(
        () => {
          // Time is up: refuse whoever still waits and destroy whatever is left (checked out, resetting).
          // A holder's next query fails.
          this.#stopServing();
          for (const slot of [...this.#slots]) if (slot.state !== 'connecting') this.#destroy(slot, 'closed');
          check();
        },
        timeoutMs,
        true,
      );
      check();
    });
    this.#closed = (async () => {
      await drained;
      this.#clock.clearTimeout(closeTimer);
      await Promise.all([...this.#pendingDestroys]);
      this.events.emit('close', {});
    })();
    return this.#closed;
  }

  /**
   * Retires every connection: idle ones close now, the others close when they come back instead of
   * being reused. Connections opened from now on are unaffected. Returns how many were retired.
   */
  retireAll(error?: unknown): number {
    let count = 0;
    for (const slot of [...this.#slots]) {
      if (slot.state === 'connecting' || slot.state === 'closed') continue;
      count++;
      if (slot.state === 'idle') {
        this.#destroy(slot, 'retired', error);
      } else {
        slot.isBroken = true;
        slot.broken = error;
      }
    }
    this.#pump();
    return count;
  }

  /**
   * Rejects every queued caller with the error `make()` returns (e.g. the circuit breaker opened, so
   * waiting is pointless). Callers whose connection is being validated are left to finish. Returns
   * how many were rejected.
   */
  rejectWaiters(make: () => unknown): number {
    let count = 0;
    for (let waiter = this.#waiters.shift(); waiter; waiter = this.#waiters.shift()) {
      this.#settleWaiter(waiter);
      waiter.reject(make());
      count++;
    }
    return count;
  }

  /** Whether connections are still handed to waiters: while open, and while draining with callers queued. */
  #serving(): boolean {
    return !this.#isClosing || (this.#draining && this.#waiters.size > 0);
  }

  /** Ends all serving during close: refuses every waiter, stops connection attempts and validations. */
  #stopServing(): void {
    this.#draining = false;
    const error = new PoolClosedError('The pool was closed while this caller waited for a connection');
    for (let waiter = this.#waiters.shift(); waiter; waiter = this.#waiters.shift()) {
      this.#settleWaiter(waiter);
      waiter.reject(error);
    }
    for (const [controller, fail] of [...this.#attempts]) {
      const closed = new PoolClosedError();
      controller.abort(closed);
      fail(closed);
    }
    for (const slot of [...this.#slots]) {
      // A validation in progress ends now too, and its caller is told.
      if (slot.state === 'idle' || slot.state === 'validating') this.#destroy(slot, 'closed');
    }
    this.#clearTimer('gate');
  }

  // ---------------------------------------------------------------------------------------------
  // Matching waiters with connections

  /** Hands idle connections to waiters in FIFO order, then opens connections for those still waiting. */
  #pump(now = this.#clock.now()): void {
    if (!this.#serving()) return;
    while (this.#waiters.size > 0 && this.#idle.size > 0) {
      const slot = this.#idle.shift()!;
      if (this.#retireIfDue(slot, now)) continue;
      const waiter = this.#waiters.shift()!;
      if (this.#needsValidation(slot, now)) this.#validateFor(slot, waiter);
      else this.#handOut(slot, waiter, now);
    }
    this.#openConnections(now);
  }

  /** Starts connection attempts for waiters not yet covered by one; `now` is read when not given. */
  #openConnections(now?: number): void {
    // The common case on every pump: every waiter is covered, or the pool is at its size.
    if (this.#waiters.size <= this.#connecting || this.#slots.size >= this.options.max) return;
    now ??= this.#clock.now();
    const capacity = this.#capacityLimit;
    const limit = capacity === undefined ? this.options.max : Math.min(this.options.max, capacity + 1);
    const concurrency =
      capacity === undefined && this.#fatalError === undefined ? this.options.maxConnectConcurrency : 1;
    // Only waiters not already covered by an attempt in flight ask for a new connection: attempts stop
    // when nobody waits.
    while (
      this.#waiters.size > this.#connecting &&
      this.#slots.size < limit &&
      this.#connecting < concurrency
    ) {
      if (now < this.#connectGateAt) {
        this.#armGate(this.#connectGateAt - now);
        return;
      }
      this.#startAttempt(now);
    }
  }

  #armGate(delayMs: number): void {
    if (this.#gateTimer !== undefined) return;
    // The backoff timer keeps the process alive: someone is waiting for the connection it will open.
    this.#gateTimer = this.#clock.setTimeout(
      () => {
        this.#gateTimer = undefined;
        this.#pump();
      },
      delayMs,
      true,
    );
  }

  #startAttempt(startedAt: number): void {
    const slot = new Slot<C>(this.#nextId++);
    this.#slots.add(slot);
    this.#connecting++; // a new slot starts in 'connecting'
    this.#counters.connectsStarted++;
    const controller = new AbortController();
    let settled = false;
    const { connectTimeoutMs } = this.options;
    const timer = this.#clock.setTimeout(
      () => {
        const error = new ConnectTimeoutError(connectTimeoutMs);
        controller.abort(error);
        finish(undefined, error);
      },
      connectTimeoutMs,
      true,
    );
    const finish = (connection: C | undefined, error: unknown) => {
      if (settled) {
        // The attempt already failed (timeout, close): a connection that arrives late is closed.
        if (connection !== undefined) this.#track(this.#driver.destroy(connection));
        return;
      }
      settled = true;
      this.#clock.clearTimeout(timer);
      this.#attempts.delete(controller);
      const now = this.#clock.now();
      if (connection === undefined) this.#onConnectFailed(slot, error, now - startedAt, now);
      else this.#onConnected(slot, connection, now - startedAt, now);
    };
    this.#attempts.set(controller, (error) => finish(undefined, error));
    let promise: Promise<C>;
    try {
      promise = this.#driver.connect({
        signal: controller.signal,
        onBroken: (error) => this.#onBroken(slot, error),
      });
    } catch (error) {
      promise = Promise.reject(error);
    }
    promise.then(
      (connection) => finish(connection, undefined),
      (error: unknown) => finish(undefined, controller.signal.aborted ? controller.signal.reason : error),
    );
  }

  #onConnected(slot: Slot<C>, connection: C, durationMs: number, now: number): void {
    slot.connection = connection;
    slot.createdAt = now;
    slot.lastUsedAt = now;
    const { maxLifetimeMs } = this.options;
    if (maxLifetimeMs > 0) {
      // Shorten each lifetime by up to 2.5% so connections opened together do not all retire together.
      slot.expiresAt = now + maxLifetimeMs * (1 - 0.025 * this.#random());
    }
    this.#counters.connectsSucceeded++;
    if (this.#capacityLimit !== undefined) {
      // Slots are freeing up: grow back one connection per success.
      this.#capacityLimit = this.#slots.size - this.#connecting + 1;
      if (this.#capacityLimit >= this.options.max) this.#capacityLimit = undefined;
    }
    this.#consecutiveConnectFailures = 0;
    this.#lastConnectError = undefined;
    this.#fatalError = undefined;
    this.#connectGateAt = Number.NEGATIVE_INFINITY;
    this.events.emit('connect', { id: slot.id, connection, durationMs });
    if (slot.isBroken) {
      this.#destroy(slot, 'broken', slot.broken);
      this.#pump();
      return;
    }
    this.#makeAvailable(slot, now);
    // One attempt fewer in flight: under maxConnectConcurrency the next may start.
    this.#openConnections(now);
  }

  #onConnectFailed(slot: Slot<C>, error: unknown, durationMs: number, now: number): void {
    this.#slots.delete(slot);
    this.#setState(slot, 'closed');
    this.#onSettledChange?.();
    if (!this.#serving()) return;
    this.#counters.connectsFailed++;
    this.#lastConnectError = error;
    const attempt = ++this.#consecutiveConnectFailures;
    const fatal = classifyConnectError(error) === 'fatal';
    const outOfSlots = errorCode(error) === TOO_MANY_CONNECTIONS;
    if (outOfSlots) {
      // The server is out of connection slots: stop asking for more than it has given us.
      this.#capacityLimit = this.#slots.size - this.#connecting;
    }
    const { connectBackoffInitialMs, connectBackoffMaxMs } = this.options;
    const delayMs = fullJitterDelay(
      attempt,
      {
        // A server out of slots will not have one in 10 ms: start the backoff higher.
        initialDelayMs: outOfSlots
          ? Math.max(connectBackoffInitialMs, CAPACITY_BACKOFF_INITIAL_MS)
          : connectBackoffInitialMs,
        maxDelayMs: Math.max(connectBackoffMaxMs, outOfSlots ? CAPACITY_BACKOFF_INITIAL_MS : 0),
      },
      this.#random,
    );
    // The backoff is in force before any listener runs, so a listener that acquires cannot skip it.
    // After a fatal error it lasts at least a second: a wrong password must not become a login storm.
    this.#connectGateAt = now + (fatal ? Math.max(FATAL_HOLD_MS, delayMs) : delayMs);
    if (fatal) {
      // Retrying cannot fix a wrong password or a missing database: tell the callers now.
      const fatalError = new ConnectFatalError(error);
      this.#fatalError = fatalError;
      for (let waiter = this.#waiters.shift(); waiter; waiter = this.#waiters.shift()) {
        this.#settleWaiter(waiter);
        waiter.reject(fatalError);
      }
    }
    const willRetry = this.#waiters.size > 0;
    this.#pump();
    this.events.emit('connectError', { error, attempt, fatal, durationMs });
    if (willRetry) this.events.emit('retry', { phase: 'connect', attempt, delayMs, error });
  }

  #onBroken(slot: Slot<C>, error: unknown): void {
    if (slot.isBroken || slot.state === 'closed') return;
    slot.isBroken = true;
    slot.broken = error;
    if (slot.state === 'connecting') return; // the attempt's own result decides
    // In use, validating or resetting: whoever holds it sees the failure and the release destroys it.
    const idle = slot.state === 'idle';
    if (idle) this.#destroy(slot, 'broken', error);
    this.events.emit('error', { id: slot.id, connection: slot.connection, error, idle });
    if (idle) this.#pump();
  }

  /** A clean connection nobody holds: to the first waiter, else onto the idle stack (or closed if surplus). */
  #makeAvailable(slot: Slot<C>, now: number): void {
    const waiter = this.#serving() ? this.#waiters.shift() : undefined;
    if (waiter !== undefined) {
      // No pump after this: the idle list is as it was (empty, or nobody would have been waiting) and one
      // waiter fewer needs no new connection.
      this.#handOut(slot, waiter, now);
      if (this.#isClosing) this.#onSettledChange?.();
      return;
    }
    if (this.#isClosing) {
      this.#destroy(slot, 'closed');
      return;
    }
    if (this.options.mode === 'null') {
      this.#destroy(slot, 'null-pool');
      return;
    }
    if (this.#slots.size > this.keptSize && this.options.overflowIdleTimeoutMs === 0) {
      this.#destroy(slot, 'overflow');
      return;
    }
    this.#setState(slot, 'idle');
    this.#idle.pushHead(slot);
    this.#driver.setIdle?.(slot.connection, true);
    this.#armHousekeeping();
  }

  /** Every state change goes through here, so the per-state counts can never drift. */
  #setState(slot: Slot<C>, next: SlotState): void {
    if (slot.state === next) return; // in use, and handed straight to the next caller
    if (slot.state === 'idle' && next !== 'closed') this.#driver.setIdle?.(slot.connection, false);
    switch (slot.state) {
      case 'connecting':
        this.#connecting--;
        break;
      case 'validating':
        this.#validating--;
        break;
      case 'in-use':
        this.#inUse--;
        break;
      case 'resetting':
        this.#resetting--;
        break;
    }
    switch (next) {
      case 'connecting':
        this.#connecting++;
        break;
      case 'validating':
        this.#validating++;
        break;
      case 'in-use':
        this.#inUse++;
        break;
      case 'resetting':
        this.#resetting++;
        break;
    }
    slot.state = next;
  }

  #handOut(slot: Slot<C>, waiter: Waiter<C>, now: number): void {
    this.#settleWaiter(waiter);
    // Served in the turn it queued, before its clock was started: it waited no measurable time.
    const requestedAt = Number.isNaN(waiter.enqueuedAt) ? now : waiter.enqueuedAt;
    waiter.resolve(this.#checkout(slot, requestedAt, now));
  }

  #checkout(slot: Slot<C>, requestedAt: number, now: number): Lease<C> {
    this.#setState(slot, 'in-use');
    slot.uses++;
    this.#counters.acquires++;
    const lease = new Lease(slot, slot.connection, requestedAt, now, this.#counters.acquires);
    slot.lease = lease;
    if (this.#acquireEvent.active) {
      this.#acquireEvent.emit({
        id: slot.id,
        seq: lease.seq,
        connection: slot.connection,
        waitMs: now - requestedAt,
      });
    }
    return lease;
  }

  #needsValidation(slot: Slot<C>, now: number): boolean {
    const window = this.options.validateAfterIdleMs;
    return window >= 0 && now - slot.lastUsedAt > window;
  }

  /** Closes an idle slot that reached its lifetime; returns whether it did. */
  #retireIfDue(slot: Slot<C>, now: number): boolean {
    if (now < slot.expiresAt) return false;
    this.#destroy(slot, 'expired');
    return true;
  }

  #validateFor(slot: Slot<C>, waiter: Waiter<C>): void {
    this.#setState(slot, 'validating');
    slot.validatingFor = waiter;
    this.#counters.validations++;
    const startedAt = this.#clock.now();
    this.#guarded(
      (signal) => this.#driver.validate(slot.connection, signal),
      this.options.validationTimeoutMs,
      'Validating a connection',
      (error) => {
        // Destroyed meanwhile (close, or it broke): #destroy already dealt with the waiter.
        if (slot.state !== 'validating') return;
        const now = this.#clock.now();
        const ok = error === undefined && !slot.isBroken;
        const event = { id: slot.id, connection: slot.connection, ok, durationMs: now - startedAt };
        if (ok) {
          slot.validatingFor = undefined;
          slot.lastUsedAt = now;
          if (waiter.settled) this.#makeAvailable(slot, now);
          else this.#handOut(slot, waiter, now);
        } else {
          this.#counters.validationFailures++;
          // #destroy puts the caller back at the front of the queue; the pump finds it another connection.
          this.#destroy(slot, 'validation-failed', error ?? slot.broken);
          this.#pump();
        }
        this.events.emit('validate', ok ? event : { ...event, error: error ?? slot.broken });
      },
    );
  }

  #reset(slot: Slot<C>): void {
    this.#setState(slot, 'resetting');
    this.#counters.resets++;
    this.#guarded(
      (signal) => this.#driver.reset(slot.connection, signal),
      this.options.resetTimeoutMs,
      'Resetting a connection',
      (error) => {
        if (slot.state !== 'resetting') return;
        if (error !== undefined || slot.isBroken || !this.#serving()) {
          this.#destroy(slot, error === undefined && !slot.isBroken ? 'closed' : 'reset-failed', error);
          this.#pump();
        } else {
          this.#makeAvailable(slot, this.#clock.now());
        }
      },
    );
  }

  /** Runs a driver operation under a timeout; `done` gets undefined on success, the error otherwise. */
  #guarded(
    operation: (signal: AbortSignal) => Promise<void>,
    timeoutMs: number,
    what: string,
    done: (error: unknown) => void,
  ): void {
    const controller = new AbortController();
    let settled = false;
    const finish = (error: unknown) => {
      if (settled) return;
      settled = true;
      this.#clock.clearTimeout(timer);
      done(error);
    };
    const timer = this.#clock.setTimeout(
      () => {
        const error = new AbortedError(`${what} (timed out after ${timeoutMs}ms)`);
        controller.abort(error);
        finish(error);
      },
      timeoutMs,
      false,
    );
    let promise: Promise<void>;
    try {
      promise = operation(controller.signal);
    } catch (error) {
      promise = Promise.reject(error);
    }
    promise.then(
      () => finish(undefined),
      (error: unknown) => finish(error ?? new Error(`${what} failed`)),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Waiters giving up

  #settleWaiter(waiter: Waiter<C>): void {
    waiter.settled = true;
    this.#waiters.remove(waiter);
    this.#deadlines.remove(waiter);
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
  }

  #onWaiterTimeout(waiter: Waiter<C>): void {
    if (waiter.settled) return;
    this.#settleWaiter(waiter);
    this.#counters.timeouts++;
    let cause = this.#lastConnectError;
    if (cause === undefined && this.#connecting > 0) {
      // An attempt is still hanging: say so, rather than blame an exhausted pool.
      cause = new ConnectTimeoutError(waiter.timeoutMs);
    }
    const error = new AcquireTimeoutError(waiter.timeoutMs, this.snapshot(), cause);
    this.events.emit('timeout', { waitMs: this.#clock.now() - waiter.enqueuedAt, error });
    waiter.reject(error);
    if (this.#isClosing) this.#onSettledChange?.();
  }

  #onWaiterAbort(waiter: Waiter<C>): void {
    if (waiter.settled) return;
    this.#settleWaiter(waiter);
    this.#counters.aborts++;
    waiter.reject(new AbortedError('Acquiring a connection', waiter.signal?.reason));
    if (this.#isClosing) this.#onSettledChange?.();
  }

  // ---------------------------------------------------------------------------------------------
  // Closing connections and keeping house

  #destroy(slot: Slot<C>, reason: EvictReason, error?: unknown, alreadyUnlinked = false): void {
    if (slot.state === 'closed') return;
    if (!alreadyUnlinked) this.#idle.remove(slot);
    const waiter = slot.validatingFor;
    slot.validatingFor = undefined;
    this.#setState(slot, 'closed');
    if (waiter !== undefined && !waiter.settled) {
      // The caller whose connection was being validated keeps its place, or learns the pool closed.
      if (this.#isClosing && !this.#draining) {
        this.#settleWaiter(waiter);
        waiter.reject(new PoolClosedError('The pool was closed while this caller waited for a connection'));
      } else {
        this.#waiters.pushHead(waiter);
      }
    }
    slot.lease = undefined;
    this.#slots.delete(slot);
    this.#counters.evictions[reason]++;
    this.events.emit(
      'evict',
      error === undefined
        ? { id: slot.id, connection: slot.connection, reason }
        : { id: slot.id, connection: slot.connection, reason, error },
    );
    this.#track(this.#driver.destroy(slot.connection));
    this.#onSettledChange?.();
  }

  #track(promise: Promise<void>): void {
    const tracked = promise.then(
      () => undefined,
      () => undefined,
    );
    this.#pendingDestroys.add(tracked);
    void tracked.then(() => this.#pendingDestroys.delete(tracked));
  }

  #armHousekeeping(): void {
    if (this.#housekeepingTimer !== undefined || this.#isClosing) return;
    this.#housekeepingTimer = this.#clock.setTimeout(
      () => {
        this.#housekeepingTimer = undefined;
        this.#keepHouse();
      },
      this.options.housekeepingIntervalMs,
      false,
    );
  }

  /** Closes idle connections past their lifetime or idle timeout, oldest first; never touches one in use. */
  #keepHouse(): void {
    if (this.#isClosing) return;
    const now = this.#clock.now();
    const { idleTimeoutMs, overflowIdleTimeoutMs, min } = this.options;
    let closedAny = false;
    // The tail of the LIFO stack holds the connections idle the longest. Decide on a copy: an 'evict'
    // listener may check a connection out while we go.
    const candidates: Slot<C>[] = [];
    for (let slot = this.#idle.tail; slot !== undefined; slot = slot.prev) candidates.push(slot);
    for (const slot of candidates) {
      if (slot.state !== 'idle') continue;
      const idleFor = now - slot.lastUsedAt;
      if (now >= slot.expiresAt) {
        this.#destroy(slot, 'expired');
        closedAny = true;
      } else if (
        overflowIdleTimeoutMs > 0 &&
        this.#slots.size > this.keptSize &&
        idleFor >= overflowIdleTimeoutMs
      ) {
        this.#destroy(slot, 'overflow');
        closedAny = true;
      } else if (idleTimeoutMs > 0 && idleFor >= idleTimeoutMs && this.#slots.size > min) {
        this.#destroy(slot, 'idle-timeout');
        closedAny = true;
      }
    }
    if (closedAny) this.#pump();
    if (this.#idle.size > 0) this.#armHousekeeping();
  }

  #clearTimer(which: 'gate' | 'housekeeping'): void {
    if (which === 'gate') {
      this.#clock.clearTimeout(this.#gateTimer);
      this.#gateTimer = undefined;
    } else {
      this.#clock.clearTimeout(this.#housekeepingTimer);
      this.#housekeepingTimer = undefined;
    }
  }
}
