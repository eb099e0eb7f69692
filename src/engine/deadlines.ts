/**
 * Deadlines for many waiters with one timer.
 *
 * A timer per waiter costs a timer-list insert and removal on every acquire that has to wait. Waiters
 * with the same timeout reach their deadlines in the order they arrived (time only moves forward), so
 * each distinct timeout keeps a FIFO list, and a single timer is armed for the earliest head of any
 * list. Waiters added one after another with the same deadline (the engine starts the clocks of all the
 * callers that joined a queue in one turn with one reading) share one entry of that list, a group:
 * joining or leaving a group is a few stores, and only a group's first member and its last leaver touch
 * the list. Adding, removing and expiring a waiter are O(1) (plus the number of distinct timeouts, which
 * is small: usually one).
 */
import type { Clock, TimerHandle } from './clock.js';
import { LinkedList, type ListNode } from './list.js';

export interface DeadlineNode<T> {
  /** The group this node waits in, or undefined when in none. */
  dGroup: DeadlineGroup<T> | undefined;
  /** Its place in the group's members. */
  dIndex: number;
}

/** Waiters sharing one deadline: an entry of a timeout's FIFO list. */
export class DeadlineGroup<T> implements ListNode<DeadlineGroup<T>> {
  prev: DeadlineGroup<T> | undefined = undefined;
  next: DeadlineGroup<T> | undefined = undefined;
  list: LinkedList<DeadlineGroup<T>> | undefined = undefined;
  /** Members in the order they joined; a member that left is a hole, so no other member moves. */
  readonly members: (T | undefined)[] = [];
  /** Members still in the group; at 0 the group leaves its list. */
  live = 0;

  constructor(
    readonly deadline: number,
    readonly timeoutMs: number,
  ) {}
}

type DeadlineList<T> = LinkedList<DeadlineGroup<T>>;

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
    const deadline = now + timeoutMs;
    let list = this.#listOf(timeoutMs);
    if (list === undefined) {
      list = new LinkedList<DeadlineGroup<T>>();
      this.#lists.set(timeoutMs, list);
      this.#lastKey = timeoutMs;
      this.#lastList = list;
    }
    let group = list.tail;
    if (group === undefined || group.deadline !== deadline) {
      group = new DeadlineGroup<T>(deadline, timeoutMs);
      list.pushTail(group);
      if (deadline < this.#timerAt) this.#arm(deadline, now);
    }
    node.dGroup = group;
    node.dIndex = group.members.push(node) - 1;
    group.live++;
  }

  remove(node: T): void {
    const group = node.dGroup;
    if (group === undefined) return;
    group.members[node.dIndex] = undefined;
    node.dGroup = undefined;
    if (--group.live > 0) return;
    const key = group.timeoutMs;
    const list = this.#listOf(key)!;
    list.remove(group);
    // An emptied list goes, so the map holds only timeouts in use. While other waiters remain the timer
    // stays armed (firing with nothing due costs one pass and re-arms); with none left it is stopped, as
    // it keeps the process alive.
    if (list.size === 0) {
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
      for (let group = list.head; group !== undefined && group.deadline <= now; group = list.head) {
        // Each member leaves before it hears, so whatever its callback does to others finds it gone; the
        // last one out takes the group off the list. (No one can join: a new deadline is later.)
        const { members } = group;
        for (let i = 0; i < members.length; i++) {
          const node = members[i];
          if (node === undefined) continue;
          this.remove(node);
          this.#onExpire(node);
        }
      }
    }
    let earliest = Number.POSITIVE_INFINITY;
    for (const list of this.#lists.values()) {
      if (list.head !== undefined && list.head.deadline < earliest) earliest = list.head.deadline;
    }
    if (earliest !== Number.POSITIVE_INFINITY && this.#timer === undefined) this.#arm(earliest, now);
  }
}
