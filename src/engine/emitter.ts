/**
 * A small typed event emitter whose listeners cannot break the pool, mirrored onto
 * `node:diagnostics_channel` for tools that subscribe process-wide.
 *
 * A listener that throws is reported as a process warning and the remaining listeners still run
 * (tarn.js does the same): a bug in a metrics hook must never cost a query. Each event has one
 * {@link EventSlot} holding its listeners and its channel; hot paths keep the slot and ask
 * `slot.active` (two property reads) before building a payload nobody would see.
 */
import diagnostics from 'node:diagnostics_channel';

type Listener<A> = (payload: A) => void;

export interface ChannelOptions {
  /** Channel names are `${prefix}${event}`, e.g. `pg-steadfast:acquire`. */
  prefix: string;
  /** Added to every published message as `pool`, so subscribers can tell pools apart. */
  source: string;
}

/** One event of one emitter: its listeners and its diagnostics channel. */
export class EventSlot<A> {
  /** Copied on write, so a listener that adds or removes listeners does not disturb an emit in progress. */
  listeners: Listener<A>[] | undefined = undefined;

  constructor(
    readonly name: string,
    readonly channel: diagnostics.Channel | undefined,
    readonly source: string | undefined,
  ) {}

  /** True when a listener or a channel subscriber would see the event, so callers can skip building it. */
  get active(): boolean {
    return this.listeners !== undefined || this.channel?.hasSubscribers === true;
  }

  emit(payload: A): void {
    const list = this.listeners;
    if (list !== undefined) {
      for (const listener of list) {
        try {
          listener(payload);
        } catch (err) {
          // A broken listener must not break the pool's state machine: report it and carry on.
          process.emitWarning(
            `A listener for the pool event "${this.name}" threw: ${(err as Error)?.message ?? String(err)}`,
            'SteadfastListenerWarning',
          );
        }
      }
    }
    const channel = this.channel;
    if (channel?.hasSubscribers) {
      try {
        channel.publish({ pool: this.source, ...payload });
      } catch {
        // diagnostics_channel already reports subscriber errors on its own; nothing more to do here.
      }
    }
  }
}

export class TypedEmitter<Events extends { [K in keyof Events]: any }> {
  readonly #slots = new Map<keyof Events, EventSlot<any>>();
  readonly #channelOptions: ChannelOptions | undefined;

  constructor(channels?: ChannelOptions) {
    this.#channelOptions = channels;
  }

  /** The event's slot, made on first use; it stays the same object for the emitter's life. */
  slot<K extends keyof Events>(event: K): EventSlot<Events[K]> {
    let slot = this.#slots.get(event);
    if (slot === undefined) {
      const options = this.#channelOptions;
      slot = new EventSlot(
        String(event),
        options === undefined ? undefined : diagnostics.channel(`${options.prefix}${String(event)}`),
        options?.source,
      );
      this.#slots.set(event, slot);
    }
    return slot;
  }

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const slot = this.slot(event);
    const list = slot.listeners;
    slot.listeners = list ? [...list, listener] : [listener];
    return this;
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const slot = this.#slots.get(event);
    const list = slot?.listeners;
    if (list) {
      const next = list.filter((l) => l !== listener);
      slot.listeners = next.length > 0 ? next : undefined;
    }
    return this;
  }

  /** True when a listener or a channel subscriber would see the event, so callers can skip building it. */
  has<K extends keyof Events>(event: K): boolean {
    return this.slot(event).active;
  }

  emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    this.slot(event).emit(payload);
  }
}

/** Listeners attached through one handle, so that all of them can be removed with one call. */
export interface Subscriptions<Events extends { [K in keyof Events]: any }> {
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void;
  /** Removes every listener attached through this handle. */
  detach(): void;
}

export function subscribe<Events extends { [K in keyof Events]: any }>(
  emitter: TypedEmitter<Events>,
): Subscriptions<Events> {
  const detachers: (() => void)[] = [];
  return {
    on(event, listener) {
      emitter.on(event, listener);
      detachers.push(() => emitter.off(event, listener));
    },
    detach() {
      for (const detach of detachers.splice(0)) detach();
    },
  };
}
