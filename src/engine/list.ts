/**
 * An intrusive doubly linked list: O(1) push, pop and removal of any member.
 *
 * The pool keeps its idle connections and its waiters in these, so that an aborted waiter or an idle
 * connection that breaks leaves its list without a scan (no `indexOf`/`splice` on the hot path).
 */

export interface ListNode<T extends ListNode<T>> {
  prev: T | undefined;
  next: T | undefined;
  /** The list this node is in, or undefined. Guards against removing a node from the wrong list. */
  list: LinkedList<T> | undefined;
}

export class LinkedList<T extends ListNode<T>> {
  head: T | undefined = undefined;
  tail: T | undefined = undefined;
  size = 0;

  /** Adds `node` at the tail (FIFO order when taken from the head). */
  pushTail(node: T): void {
    node.list = this;
    node.next = undefined;
    node.prev = this.tail;
    if (this.tail) this.tail.next = node;
    else this.head = node;
    this.tail = node;
    this.size++;
  }

  /** Adds `node` at the head (LIFO order when taken from the head). */
  pushHead(node: T): void {
    node.list = this;
    node.prev = undefined;
    node.next = this.head;
    if (this.head) this.head.prev = node;
    else this.tail = node;
    this.head = node;
    this.size++;
  }

  /** Removes and returns the head, or undefined when empty. */
  shift(): T | undefined {
    const node = this.head;
    if (node) this.remove(node);
    return node;
  }

  /** Removes `node` if it is in this list; returns whether it was. */
  remove(node: T): boolean {
    if (node.list !== this) return false;
    if (node.prev) node.prev.next = node.next;
    else this.head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.tail = node.prev;
    node.prev = undefined;
    node.next = undefined;
    node.list = undefined;
    this.size--;
    return true;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    let node = this.head;
    while (node) {
      const next = node.next;
      yield node;
      node = next;
    }
  }
}
