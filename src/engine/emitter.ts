/**
 * A small typed event emitter whose listeners cannot break the pool.
 *
 * A listener that throws is reported as a process warning and the remaining listeners still run
 * (tarn.js does the same): a bug in a metrics hook must never cost a query. Emitting with no listener
 * costs one property read.
 */

type Listener<A> = (payload: A) => void;

export class TypedEmitter<Events extends { [K in keyof Events]: any }> {
  #listeners: { [K in keyof Events]?: Listener<Events[K]>[] } = {};

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const list = this.#listeners[event];
    // Copy on write, so a listener that adds or removes listeners does not disturb an emit in progress.
    this.#listeners[event] = list ? [...list, listener] : [listener];
    return this;
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const list = this.#listeners[event];
    if (list) {
      const next = list.filter((l) => l !== listener);
      this.#listeners[event] = next.length > 0 ? next : undefined;
    }
    return this;
  }

  /** True when at least one listener is attached, so callers can skip building a payload. */
  has<K extends keyof Events>(event: K): boolean {
    return this.#listeners[event] !== undefined;
  }

  emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const list = this.#listeners[event];
    if (list === undefined) return;
    for (const listener of list) {
      try {
        listener(payload);
      } catch (err) {
        // A broken listener must not break the pool's state machine: report it and carry on.
        process.emitWarning(
          `A listener for the pool event "${String(event)}" threw: ${(err as Error)?.message ?? String(err)}`,
          'SteadfastListenerWarning',
        );
      }
    }
  }
}
