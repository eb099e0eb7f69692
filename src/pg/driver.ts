/**
 * The engine's driver for node-postgres: the only module that touches `pg.Client`.
 */
import type pg from 'pg';
import type { ConnectContext, Driver } from '../engine/driver.js';

/** How long a polite close (Terminate message, wait for the server to hang up) may take before the socket is destroyed. */
const CLOSE_GRACE_MS = 1_000;

export type ClientConstructor = new (config: pg.ClientConfig) => pg.Client;

/** The socket under a client; pg keeps it on `client.connection.stream`. */
function socketOf(
  client: pg.Client,
): { destroy(): void; destroyed?: boolean; once(event: string, fn: () => void): void } | undefined {
  return (client as unknown as { connection?: { stream?: any } }).connection?.stream;
}

function destroySocket(client: pg.Client): void {
  try {
    socketOf(client)?.destroy();
  } catch {
    // Already gone.
  }
}

interface ClientState {
  /** ReadyForQuery status byte: 'I' idle, 'T' in a transaction, 'E' in a failed transaction. */
  status: string;
}

const states = new WeakMap<pg.Client, ClientState>();

/** Transaction status of a client: pg >= 8.19 reports it; older versions are tracked from the protocol. */
function transactionStatus(client: pg.Client): string | null {
  const report = (client as unknown as { getTransactionStatus?: () => string | null }).getTransactionStatus;
  if (typeof report === 'function') return report.call(client);
  return states.get(client)?.status ?? null;
}

/** Whether pg still has a statement running or queued on this client. */
function hasPendingQueries(client: pg.Client): boolean {
  const internals = client as unknown as { _activeQuery?: unknown; _queryQueue?: unknown[] };
  return internals._activeQuery != null || (internals._queryQueue?.length ?? 0) > 0;
}

/** Runs `text` on `client`; on abort, destroys the socket so the call cannot hang past its deadline. */
async function queryWithAbort(client: pg.Client, text: string, signal: AbortSignal): Promise<void> {
  const onAbort = () => destroySocket(client);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    await client.query(text);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

export interface PgDriverOptions {
  /** Idle connections do not hold the process open (pg.Pool's `allowExitOnIdle`). */
  allowExitOnIdle?: boolean;
}

export function createPgDriver(
  Client: ClientConstructor,
  clientConfig: pg.ClientConfig,
  options: PgDriverOptions = {},
): Driver<pg.Client> {
  return {
    ...(options.allowExitOnIdle
      ? {
          setIdle(client: pg.Client, idle: boolean) {
            // pg.Client has ref()/unref() (they act on its socket); its type declarations omit them.
            const socketHolder = client as unknown as { ref(): void; unref(): void };
            if (idle) socketHolder.unref();
            else socketHolder.ref();
          },
        }
      : {}),
    async connect({ signal, onBroken }: ConnectContext): Promise<pg.Client> {
      const client = new Client(clientConfig);
      let connected = false;
      // Attached for the client's whole life: an error on an idle connection must never reach the
      // process as an unhandled 'error' event (pg.Pool crashes the process there without a listener).
      client.on('error', (error: Error) => {
        if (connected) onBroken(error);
      });
      client.on('end', () => {
        if (connected) onBroken(new Error('Connection terminated'));
      });
      if (
        typeof (client as unknown as { getTransactionStatus?: unknown }).getTransactionStatus !== 'function'
      ) {
        const state: ClientState = { status: 'I' };
        states.set(client, state);
        (client as unknown as { connection: NodeJS.EventEmitter }).connection.on(
          'readyForQuery',
          (message: { status?: string }) => {
            if (message.status) state.status = message.status;
          },
        );
      }
      const onAbort = () => destroySocket(client);
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        await client.connect();
      } catch (error) {
        // A failed connect must not leave its socket open: pg does on some SASL failures, and under
        // load those sockets use up the server's connection slots.
        destroySocket(client);
        throw signal.aborted ? signal.reason : error;
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
      if (signal.aborted) {
        destroySocket(client);
        throw signal.reason;
      }
      connected = true;
      return client;
    },

    validate(client, signal) {
      // The empty statement is the cheapest full round trip: the server answers EmptyQueryResponse.
      return queryWithAbort(client, '', signal);
    },

    needsReset(client) {
      return transactionStatus(client) !== 'I' || hasPendingQueries(client);
    },

    async reset(client, signal) {
      // A statement still running means the holder let go too early: its state is unknown.
      if (hasPendingQueries(client)) throw new Error('Connection released with a statement still running');
      await queryWithAbort(client, 'ROLLBACK', signal);
      if (transactionStatus(client) !== 'I')
        throw new Error('Connection still inside a transaction after ROLLBACK');
    },

    destroy(client) {
      return new Promise<void>((resolve) => {
        const socket = socketOf(client);
        if (!socket || socket.destroyed) {
          resolve();
          return;
        }
        const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
        timer.unref();
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        client.end().catch(() => destroySocket(client));
      });
    },
  };
}
