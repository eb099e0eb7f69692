/**
 * A TCP proxy that injects network faults between a client and a server: partitions, resets, refused and
 * hanging connects, and latency. Every fault is real TCP behaviour seen by the client's socket.
 *
 * @module
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { getFreeServerPort } from './ports.js';

/** Where a {@link ChaosProxy} forwards connections to. */
export interface ProxyTarget {
  host: string;
  port: number;
}

/** Options for {@link ChaosProxy.start}. */
export interface ChaosProxyOptions {
  /**
   * Port to listen on at `127.0.0.1`. Default: a free port below the ephemeral range (see
   * `getFreeServerPort` in `./ports.ts`), so that a proxy closed and started again on the same port
   * does not find it taken by an outgoing connection. `0` lets the kernel choose.
   */
  port?: number;
}

/** Options for {@link ChaosProxy.refuse}. */
export interface RefuseOptions {
  /** Close new connections with a TCP RST (`ECONNRESET` at the client) instead of a FIN. Default: `false`. */
  reset?: boolean;
}

/**
 * How the proxy treats traffic; see the methods of the same name on {@link ChaosProxy}.
 * Latency is independent of the mode.
 */
export type ChaosMode = 'pass' | 'freeze' | 'refuse' | 'blackhole';

/** Bytes a lane may hold back (while delaying) before it stops reading from its source. */
const LANE_HIGH_WATER_MARK = 1024 * 1024;
/** Milliseconds a refused connection is given to read the FIN and close before it is destroyed. */
const REFUSE_LINGER_MS = 1_000;

/** One direction of a proxied connection: reads `src`, delays as configured, writes `dst` in order. */
class Lane {
  readonly #link: Link;
  readonly #src: Socket;
  readonly #dst: Socket;
  readonly #queue: Array<{ chunk: Buffer; due: number }> = [];
  #queuedBytes = 0;
  #timer: NodeJS.Timeout | undefined;
  #awaitingDrain = false;
  #srcDone = false;
  #finished = false;

  constructor(link: Link, src: Socket, dst: Socket) {
    this.#link = link;
    this.#src = src;
    this.#dst = dst;
    src.on('data', (chunk: Buffer) => {
      this.#queue.push({ chunk, due: Date.now() + link.proxy.latencyMs });
      this.#queuedBytes += chunk.length;
      this.pump();
    });
    // With allowHalfOpen off, 'end' is followed by 'close'; both just mean no more data will come.
    const done = (): void => {
      this.#srcDone = true;
      this.pump();
    };
    src.on('end', done);
    src.on('close', done);
  }

  /**
   * Writes every chunk that is due, unless the link is frozen. Once the source is done and everything
   * queued has been written, ends the destination, so a close propagates after the data before it.
   */
  pump(): void {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#link.frozen || this.#finished) {
      this.#updateFlow();
      return;
    }
    if (this.#dst.destroyed) {
      this.#queue.length = 0;
      this.#queuedBytes = 0;
    }
    while (this.#queue.length > 0 && !this.#awaitingDrain) {
      const wait = this.#queue[0]!.due - Date.now();
      if (wait > 0) {
        this.#timer = setTimeout(() => this.pump(), wait);
        break;
      }
      const { chunk } = this.#queue.shift()!;
      this.#queuedBytes -= chunk.length;
      if (!this.#dst.write(chunk)) {
        this.#awaitingDrain = true;
        this.#dst.once('drain', () => {
          this.#awaitingDrain = false;
          this.pump();
        });
      }
    }
    if (this.#srcDone && this.#queue.length === 0 && !this.#finished) {
      this.#finished = true;
      // Destroying once the FIN has been written also covers a peer that never closes its side.
      if (this.#dst.destroyed) return;
      this.#dst.end(() => this.#dst.destroy());
      return;
    }
    this.#updateFlow();
  }

  /** Drops pending data and timers; the sockets are being destroyed. */
  discard(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#finished = true;
  }

  /** Reads from the source only while data can move on: not frozen, not backed up. */
  #updateFlow(): void {
    if (this.#src.destroyed) return;
    const hold = this.#link.frozen || this.#awaitingDrain || this.#queuedBytes > LANE_HIGH_WATER_MARK;
    if (hold) this.#src.pause();
    else this.#src.resume();
  }
}

/** A client connection and, once it is being forwarded, its upstream connection. */
class Link {
  readonly proxy: ChaosProxy;
  readonly client: Socket;
  upstream: Socket | undefined;
  frozen: boolean;
  readonly #lanes: Lane[] = [];
  #clientClosed = false;
  #upstreamClosed = false;
  #released = false;
  readonly #onRelease: (link: Link) => void;

  constructor(proxy: ChaosProxy, client: Socket, frozen: boolean, onRelease: (link: Link) => void) {
    this.proxy = proxy;
    this.client = client;
    this.frozen = frozen;
    this.#onRelease = onRelease;
    client.on('error', () => undefined);
    client.once('close', () => {
      this.#clientClosed = true;
      // A connection that never reached upstream has nothing to propagate its close to.
      if (!this.upstream) this.#release();
      this.#maybeRelease();
    });
  }

  /** Opens the upstream connection and starts forwarding in both directions. */
  forward(target: ProxyTarget): void {
    if (this.upstream || this.#released || this.#clientClosed) return;
    const upstream = tcpConnect({ host: target.host, port: target.port });
    this.upstream = upstream;
    upstream.setNoDelay(true);
    this.client.setNoDelay(true);
    // Errors (refused, reset) surface as 'close'; the lanes turn that into a close of the client.
    upstream.on('error', () => undefined);
    upstream.once('close', () => {
      this.#upstreamClosed = true;
      this.#maybeRelease();
    });
    this.#lanes.push(new Lane(this, this.client, upstream), new Lane(this, upstream, this.client));
    // The client socket starts paused; pumping resumes it unless the link is frozen.
    for (const lane of this.#lanes) lane.pump();
  }

  setFrozen(frozen: boolean): void {
    this.frozen = frozen;
    for (const lane of this.#lanes) lane.pump();
    if (frozen) this.client.pause();
  }

  /** Aborts both sides with a TCP RST. */
  reset(): void {
    for (const lane of this.#lanes) lane.discard();
    for (const socket of [this.client, this.upstream]) {
      if (socket && !socket.destroyed) socket.resetAndDestroy();
    }
    this.#release();
  }

  /** Closes both sides without ceremony. */
  destroy(): void {
    for (const lane of this.#lanes) lane.discard();
    this.client.destroy();
    this.upstream?.destroy();
    this.#release();
  }

  #maybeRelease(): void {
    if (this.#clientClosed && this.#upstreamClosed) this.#release();
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#onRelease(this);
  }
}

/**
 * A fault-injecting TCP proxy listening on `127.0.0.1`, forwarding to one target (typically a
 * `PostgresServer` from `./postgres.ts`). Point the client at {@link host}:{@link port} and switch modes at any time:
 *
 * | mode          | existing connections       | new connections                                   |
 * |---------------|----------------------------|---------------------------------------------------|
 * | {@link pass}      | flow                       | forwarded                                         |
 * | {@link freeze}    | stalled, kept open         | accepted, stalled, kept open                      |
 * | {@link refuse}    | flow                       | accepted, then closed at once (FIN, or RST)       |
 * | {@link blackhole} | flow                       | accepted, never answered                          |
 *
 * {@link resetAll} and {@link latency} apply on top of any mode. Socket errors on either side are
 * absorbed; when one side of a connection closes, the other is closed after any data still in flight.
 *
 * @example
 * ```ts
 * const proxy = await ChaosProxy.start({ host: server.host, port: server.port });
 * const pool = new Pool({ ...server.clientConfig(), host: proxy.host, port: proxy.port });
 * proxy.freeze(); // partition
 * proxy.pass();   // heal
 * await proxy.close();
 * ```
 */
export class ChaosProxy {
  /** Address the proxy listens on; always `'127.0.0.1'`. */
  readonly host = '127.0.0.1';
  readonly #server: Server;
  readonly #port: number;
  #target: ProxyTarget;
  #mode: ChaosMode = 'pass';
  #refuseWithReset = false;
  #latencyMs = 0;
  #accepted = 0;
  readonly #links = new Set<Link>();
  /** Connections accepted in blackhole mode; they are never forwarded. */
  readonly #blackholed = new WeakSet<Link>();
  /** Refused sockets that are still being closed. */
  readonly #closing = new Set<Socket>();
  #closed: Promise<void> | undefined;

  private constructor(server: Server, port: number, target: ProxyTarget) {
    this.#server = server;
    this.#port = port;
    this.#target = { ...target };
  }

  /**
   * Starts a proxy in `pass` mode with no latency.
   *
   * @param target - Host and port every accepted connection is forwarded to.
   * @param options - See {@link ChaosProxyOptions}.
   */
  static async start(target: ProxyTarget, options: ChaosProxyOptions = {}): Promise<ChaosProxy> {
    if (options.port !== undefined) return ChaosProxy.#listen(target, options.port);
    for (let attempt = 1; ; attempt++) {
      try {
        return await ChaosProxy.#listen(target, await getFreeServerPort());
      } catch (error) {
        // The port was free when probed but someone else bound it first; pick another.
        if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 10) throw error;
      }
    }
  }

  static #listen(target: ProxyTarget, port: number): Promise<ChaosProxy> {
    // Paused sockets read nothing until the mode decides what happens to them.
    const server = createServer({ pauseOnConnect: true, noDelay: true });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port }, () => {
        server.off('error', reject);
        // Errors after listening (e.g. EMFILE on accept) must not crash the process.
        server.on('error', () => undefined);
        const address = server.address();
        if (address === null || typeof address === 'string') {
          server.close();
          reject(new Error('could not read the address of the proxy listener'));
          return;
        }
        const proxy = new ChaosProxy(server, address.port, target);
        server.on('connection', (socket) => proxy.#accept(socket));
        resolve(proxy);
      });
    });
  }

  /** Port the proxy listens on. */
  get port(): number {
    return this.#port;
  }

  /** The current mode. */
  get mode(): ChaosMode {
    return this.#mode;
  }

  /** Delay added to every chunk in each direction, in milliseconds (0 = none). */
  get latencyMs(): number {
    return this.#latencyMs;
  }

  /** Where new connections are forwarded to (a copy). */
  get target(): ProxyTarget {
    return { ...this.#target };
  }

  /** Connections accepted since start, in every mode (refused and blackholed ones included). */
  get connectionsAccepted(): number {
    return this.#accepted;
  }

  /**
   * Connections the proxy currently holds: forwarded, frozen or blackholed, until both of their sides
   * are closed. Refused connections are not included.
   */
  get activeConnections(): number {
    return this.#links.size;
  }

  /**
   * Normal forwarding. Heals a {@link freeze}: data held back flows again, connections accepted during the
   * freeze are connected upstream, and closes that happened during the freeze reach the other side.
   * Connections accepted in {@link blackhole} mode stay unanswered.
   */
  pass(): void {
    this.#setMode('pass');
  }

  /**
   * A network partition: no byte moves in either direction, on existing and on new connections, and
   * nothing is closed. New connections are accepted at the TCP level, as a kernel does, but are not
   * connected upstream until the partition heals. A side that closes during the partition is not seen
   * by the other side until then, as a FIN or RST would be lost.
   */
  freeze(): void {
    this.#setMode('freeze');
  }

  /**
   * New connections are accepted and immediately closed, as a proxy or load balancer does when its
   * backend is gone: the client's connect succeeds and its first read sees end-of-stream (or `ECONNRESET`
   * with `{ reset: true }`). Existing connections keep flowing.
   */
  refuse(options: RefuseOptions = {}): void {
    this.#refuseWithReset = options.reset ?? false;
    this.#setMode('refuse');
  }

  /**
   * New connections are accepted and then never answered nor closed (a hanging connect, as when packets
   * are dropped after the handshake); they stay that way even after the mode changes, until the client
   * gives up or the proxy closes. Existing connections keep flowing.
   */
  blackhole(): void {
    this.#setMode('blackhole');
  }

  /**
   * Aborts every connection the proxy holds with a TCP RST on both sides; clients see `ECONNRESET`.
   * A one-shot action: the mode is unchanged and new connections are handled as before.
   *
   * @returns The number of connections reset.
   */
  resetAll(): number {
    const links = [...this.#links];
    for (const link of links) link.reset();
    return links.length;
  }

  /**
   * Delays every chunk in both directions by `ms` milliseconds, preserving order (a round trip gains
   * about `2 * ms`). Applies to data received from now on; `0` disables it.
   */
  latency(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0)
      throw new RangeError(`latency must be a non-negative number, got ${ms}`);
    this.#latencyMs = ms;
  }

  /** Forwards connections accepted from now on to `target`, e.g. a new primary; existing ones are untouched. */
  retarget(target: ProxyTarget): void {
    this.#target = { ...target };
  }

  /**
   * Stops listening and destroys every connection. Idempotent; resolves once the listener is closed.
   */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      for (const link of [...this.#links]) link.destroy();
      for (const socket of this.#closing) socket.destroy();
      this.#closing.clear();
    });
    return this.#closed;
  }

  #setMode(mode: ChaosMode): void {
    this.#mode = mode;
    const frozen = mode === 'freeze';
    for (const link of this.#links) {
      // Connections accepted during a freeze have no upstream yet; blackholed ones never get one.
      if (!frozen && !link.upstream && !this.#blackholed.has(link)) link.forward(this.#target);
      link.setFrozen(frozen);
    }
  }

  #accept(socket: Socket): void {
    this.#accepted++;
    socket.on('error', () => undefined);
    if (this.#closed) {
      socket.destroy();
      return;
    }
    switch (this.#mode) {
      case 'refuse':
        this.#refuseSocket(socket);
        return;
      case 'blackhole': {
        const link = this.#track(socket, false);
        this.#blackholed.add(link);
        return;
      }
      case 'freeze':
        this.#track(socket, true);
        return;
      case 'pass':
        this.#track(socket, false).forward(this.#target);
        return;
    }
  }

  #track(socket: Socket, frozen: boolean): Link {
    const link = new Link(this, socket, frozen, (released) => this.#links.delete(released));
    this.#links.add(link);
    return link;
  }

  #refuseSocket(socket: Socket): void {
    if (this.#refuseWithReset) {
      socket.resetAndDestroy();
      return;
    }
    // Closing a socket with unread data makes the kernel send RST, not FIN, and clients usually send
    // right after connecting. So the write side is shut down (FIN) and whatever arrives is drained until
    // the client closes its side.
    this.#closing.add(socket);
    const timer = setTimeout(() => socket.destroy(), REFUSE_LINGER_MS);
    timer.unref();
    socket.once('close', () => {
      clearTimeout(timer);
      this.#closing.delete(socket);
    });
    socket.on('data', () => undefined);
    socket.on('end', () => socket.destroy());
    socket.resume();
    socket.end();
  }
}
