/**
 * Deadlines for many waiters with one timer.
 *
 * A timer per waiter costs a timer-list insert and removal on every acquire that has to wait. Waiters
 * with the same timeout reach their deadlines in the order they arrived (time only moves forward), so
 * each distinct timeout keeps a FIFO list, and a single timer is armed for the earliest head of any
 * list. Adding, removing and expiring a waiter are O(1) (plus the number of distinct timeouts, which is
 * small: usually one).
 */
import type { Clock, TimerHandle } from './clock.js';

export interface DeadlineNode<T> {
  deadline: number;
  dPrev: T | undefined;
  dNext: T | undefined;
  /** The timeout whose list this node is in, or undefined when in none. */
  dKey: number | undefined;
}

interface DeadlineList<T> {
  head: T | undefined;
  tail: T | undefined;
}

export class Deadlines<T extends DeadlineNode<T>> {
  readonly #lists = new Map<number, DeadlineList<T>>();
  // The list used last, kept at hand: nearly every waiter of a pool has the same timeout.
  #lastKey: number | undefined = undefined;
  #lastList: DeadlineList<T> | undefined = undefined;
  readonly #clock: Clock;
  readonly #onExpire: (node: T) => void;
  #timer: TimerHandle = undefined;
  #timerAt = Number.POSITIVE_INFINITY;

  constructor(clock: Clock, onExpire: (node: T) => void) {
    this.#clock = clock;
    this.#onExpire = onExpire;
  }

  /** Tracks `node` until `now + timeoutMs`; `onExpire(node)` runs then unless it was removed first. */
  add(node: T, timeoutMs: number, now: number): void {
    node.deadline = now + timeoutMs;
    let list = this.#listOf(timeoutMs);
    if (list === undefined) {
      list = { head: undefined, tail: undefined };
      this.#lists.set(timeoutMs, list);
    }
    node.dKey = timeoutMs;
    node.dNext = undefined;
    node.dPrev = list.tail;
    if (list.tail) list.tail.dNext = node;
    else list.head = node;
    list.tail = node;
    if (node.deadline < this.#timerAt) this.#arm(node.deadline, now);
  }

  remove(node: T): void {
    const key = node.dKey;
    if (key === undefined) return;
    const list = this.#listOf(key)!;
    if (node.dPrev) node.dPrev.dNext = node.dNext;
    else list.head = node.dNext;
    if (node.dNext) node.dNext.dPrev = node.dPrev;
    else list.tail = node.dPrev;
    node.dPrev = undefined;
    node.dNext = undefined;
    node.dKey = undefined;
    // An emptied list goes, so the map holds only timeouts in use. While other waiters remain the timer
    // stays armed (firing with nothing due costs one pass and re-arms); with none left it is stopped, as
    // it keeps the process alive.
    if (list.head === undefined) {
      this.#lists.delete(key);
      if (this.#lastKey === key) {
        this.#lastKey = undefined;
        this.#lastList = undefined;
      }
      if (this.#lists.size === 0) this.clear();
    }
  }

  #listOf(key: number): DeadlineList<T> | undefined {
    if (key === this.#lastKey) return this.#lastList;
    const list = this.#lists.get(key);
    if (list !== undefined) {
      this.#lastKey = key;
      this.#lastList = list;
    }
    return list;
  }

  /** Stops the timer (when the pool closes). */
  clear(): void {
    this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
  }

  #arm(at: number, now: number): void {
    this.#clock.clearTimeout(this.#timer);
    this.#timerAt = at;
    // A caller is waiting on this timer: it keeps the process alive, as a per-waiter timer would.
    this.#timer = this.#clock.setTimeout(() => this.#fire(), Math.max(0, at - now), true);
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const now = this.#clock.now();
    for (const list of [...this.#lists.values()]) {
      for (let node = list.head; node !== undefined && node.deadline <= now; node = list.head) {
        this.remove(node);
        this.#onExpire(node);
      }
    }
    let earliest = Number.POSITIVE_INFINITY;
    for (const list of this.#lists.values()) {
      if (list.head !== undefined && list.head.deadline < earliest) earliest = list.head.deadline;
    }
    if (earliest !== Number.POSITIVE_INFINITY && this.#timer === undefined) this.#arm(earliest, now);
  }
}
