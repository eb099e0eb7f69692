/**
 * A small typed event emitter whose listeners cannot break the pool, mirrored onto
 * `node:diagnostics_channel` for tools that subscribe process-wide.
 *
 * A listener that throws is reported as a process warning and the remaining listeners still run
 * (tarn.js does the same): a bug in a metrics hook must never cost a query. Emitting with no listener
 * and no channel subscriber costs two property reads, and {@link TypedEmitter.has} lets callers skip
 * building a payload nobody will see.
 */
import diagnostics from 'node:diagnostics_channel';

type Listener<A> = (payload: A) => void;

export interface ChannelOptions {
  /** Channel names are `${prefix}${event}`, e.g. `pg-steadfast:acquire`. */
  prefix: string;
  /** Added to every published message as `pool`, so subscribers can tell pools apart. */
  source: string;
}

export class TypedEmitter<Events extends { [K in keyof Events]: any }> {
  #listeners: { [K in keyof Events]?: Listener<Events[K]>[] } = {};
  readonly #channels: { [K in keyof Events]?: diagnostics.Channel } = {};
  readonly #channelOptions: ChannelOptions | undefined;

  constructor(channels?: ChannelOptions) {
    this.#channelOptions = channels;
  }

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

  /** True when a listener or a channel subscriber would see the event, so callers can skip building it. */
  has<K extends keyof Events>(event: K): boolean {
    return this.#listeners[event] !== undefined || this.#channel(event)?.hasSubscribers === true;
  }

  emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const list = this.#listeners[event];
    if (list !== undefined) {
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
    const channel = this.#channel(event);
    if (channel?.hasSubscribers) {
      try {
        channel.publish({ pool: this.#channelOptions!.source, ...payload });
      } catch {
        // diagnostics_channel already reports subscriber errors on its own; nothing more to do here.
      }
    }
  }

  #channel<K extends keyof Events>(event: K): diagnostics.Channel | undefined {
    const options = this.#channelOptions;
    if (options === undefined) return undefined;
    let channel = this.#channels[event];
    if (channel === undefined) {
      channel = diagnostics.channel(`${options.prefix}${String(event)}`);
      this.#channels[event] = channel;
    }
    return channel;
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
