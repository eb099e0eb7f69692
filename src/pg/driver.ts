/**
 * The engine's driver for node-postgres: the only module that touches `PgClient`.
 */
import type { Client as PgClient, ClientConfig as PgClientConfig } from 'pg';
import type { ConnectContext, Driver } from '../engine/driver.js';
import {
  type HostPlan,
  hostOrder,
  type SessionState,
  satisfies,
  type TargetSessionAttrs,
} from '../topology/hosts.js';

/** How long a polite close (Terminate message, wait for the server to hang up) may take before the socket is destroyed. */
const CLOSE_GRACE_MS = 1_000;

export type ClientConstructor = new (config: PgClientConfig) => PgClient;

/** A password, or pg's function form that is called for every new connection. */
export type PasswordSource = string | (() => string | Promise<string>);

interface Socket {
  destroy(): void;
  destroyed?: boolean;
  once(event: string, fn: () => void): void;
}

/** pg's internals this driver reads; each is checked before use, so another client class degrades safely. */
interface ClientInternals {
  connection?: { stream?: Socket; on(event: string, fn: (message: { status?: string }) => void): void };
  getTransactionStatus?: () => string | null;
  _activeQuery?: unknown;
  _queryQueue?: unknown[];
  /** pg-native's way of saying a statement is running. */
  _hasActiveQuery?: () => boolean;
  _queryable?: boolean;
  _ended?: boolean;
}

const internals = (client: PgClient) => client as unknown as ClientInternals;

/** The socket under a client (pg keeps it on `client.connection.stream`; pg-native has none). */
function socketOf(client: PgClient): Socket | undefined {
  return internals(client).connection?.stream;
}

function destroySocket(client: PgClient): void {
  try {
    socketOf(client)?.destroy();
  } catch {
    // Already gone.
  }
}

/** ReadyForQuery status byte tracked from the protocol, for pg versions without getTransactionStatus(). */
const trackedStatus = new WeakMap<PgClient, { status: string }>();

/** Transaction status: 'I' idle, 'T' in a transaction, 'E' in a failed transaction. */
function transactionStatus(client: PgClient): string | null {
  const report = internals(client).getTransactionStatus;
  if (typeof report === 'function') return report.call(client);
  return trackedStatus.get(client)?.status ?? null;
}

/** Whether the client still has a statement running or queued. */
function hasPendingQueries(client: PgClient): boolean {
  const c = internals(client);
  if (typeof c._hasActiveQuery === 'function') return c._hasActiveQuery();
  return c._activeQuery != null || (c._queryQueue?.length ?? 0) > 0;
}

/** Runs `text` on `client`; on abort, destroys the socket so the call cannot hang past its deadline. */
async function queryWithAbort(client: PgClient, text: string, signal: AbortSignal): Promise<void> {
  const onAbort = () => destroySocket(client);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    await client.query(text);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** Resolves when the statements a holder left running have finished; rejects if the connection ends first. */
function waitForDrain(client: PgClient, signal: AbortSignal): Promise<void> {
  if (!hasPendingQueries(client)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      client.off('drain', onDrain);
      client.off('end', onEnd);
      signal.removeEventListener('abort', onAbort);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onEnd = () => {
      cleanup();
      reject(new Error('Connection ended while statements released with it were still running'));
    };
    const onAbort = () => {
      cleanup();
      reject(signal.reason);
    };
    client.on('drain', onDrain);
    client.on('end', onEnd);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Which host each client of a multi-host pool is connected to, as "host:port". */
export const hostOf = new WeakMap<PgClient, string>();

/** One round trip telling whether the server is read-only and whether it is a standby. */
async function readSessionState(client: PgClient): Promise<SessionState> {
  const { rows } = await client.query(
    "SELECT pg_is_in_recovery() AS in_recovery, current_setting('transaction_read_only') AS read_only",
  );
  return { inRecovery: rows[0]?.in_recovery === true, readOnly: rows[0]?.read_only === 'on' };
}

export interface PgDriverOptions {
  /** Several hosts and target_session_attrs (libpq style); undefined for an ordinary single host. */
  hostPlan?: HostPlan | undefined;
  /** Told what each host turned out to be whenever a connection to it is opened. */
  onHostState?: ((host: string, port: number, state: SessionState) => void) | undefined;
  /** Idle connections do not hold the process open (pg.Pool's `allowExitOnIdle`). */
  allowExitOnIdle?: boolean;
  /**
   * Runs on every new connection before it is handed out (pg.Pool's `onConnect` and `verify` hooks).
   * A failure fails the connection attempt.
   */
  afterConnect?: (client: PgClient) => Promise<void>;
  /** Set on every client after it is built, over whatever pg took from the connection string. */
  password?: PasswordSource | undefined;
}

export function createPgDriver(
  Client: ClientConstructor,
  clientConfig: PgClientConfig,
  options: PgDriverOptions = {},
): Driver<PgClient> {
  const { afterConnect, hostPlan, onHostState, password } = options;

  /** Opens one client; error and end reports reach `onBroken` only once `markConnected()` was called. */
  async function open(
    config: PgClientConfig,
    signal: AbortSignal,
    onBroken: ConnectContext['onBroken'],
  ): Promise<{ client: PgClient; markConnected(): void }> {
    const client = new Client(config);
    // pg keeps the password as a writable, non-enumerable property read at authentication time.
    if (password !== undefined) (client as unknown as { password: unknown }).password = password;
    let connected = false;
    // Attached for the client's whole life: an error on an idle connection must never reach the
    // process as an unhandled 'error' event (pg.Pool crashes the process there without a listener).
    client.on('error', (error: Error) => {
      if (connected) onBroken(error);
    });
    client.on('end', () => {
      if (connected) onBroken(new Error('Connection terminated'));
    });
    const connection = internals(client).connection;
    if (typeof internals(client).getTransactionStatus !== 'function' && connection) {
      const state = { status: 'I' };
      trackedStatus.set(client, state);
      connection.on('readyForQuery', (message) => {
        if (message.status) state.status = message.status;
      });
    }
    // Destroying the socket makes pg fail the pending connect. (Calling client.end() here would not:
    // pg then treats the hang-up as expected and never settles the connect.)
    const onAbort = () => destroySocket(client);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await client.connect();
      if (afterConnect) await afterConnect(client);
      // The server or a proxy may hang up right after authentication, before this line: pg reports
      // that on a later tick, so look now rather than hand out a dead connection.
      const c = internals(client);
      if (c._queryable === false || c._ended === true) throw new Error('Connection terminated unexpectedly');
      if (signal.aborted) throw signal.reason;
    } catch (error) {
      // A failed connect must not leave its socket open: pg does on some SASL failures, and under
      // load those sockets use up the server's connection slots.
      destroySocket(client);
      client.end().catch(() => undefined);
      throw signal.aborted ? signal.reason : error;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    return {
      client,
      markConnected: () => {
        connected = true;
      },
    };
  }

  /**
   * libpq's multi-host connect: hosts in order (or shuffled), skipping a host that fails to connect or
   * that connects but does not match target_session_attrs; prefer-standby makes a second pass that
   * takes any server when no standby was found.
   */
  async function connectToTarget(
    plan: HostPlan,
    signal: AbortSignal,
    onBroken: ConnectContext['onBroken'],
  ): Promise<PgClient> {
    const order = hostOrder(plan.hosts, plan.loadBalanceHosts);
    const passes: TargetSessionAttrs[] =
      plan.targetSessionAttrs === 'prefer-standby' ? ['standby', 'any'] : [plan.targetSessionAttrs];
    const failures: string[] = [];
    let lastError: unknown;
    for (const target of passes) {
      for (const entry of order) {
        if (signal.aborted) throw signal.reason;
        let opened: Awaited<ReturnType<typeof open>>;
        try {
          opened = await open({ ...clientConfig, ...entry }, signal, onBroken);
        } catch (error) {
          if (signal.aborted) throw signal.reason;
          lastError = error;
          failures.push(`${entry.host}:${entry.port}: ${(error as Error)?.message ?? String(error)}`);
          continue;
        }
        if (target !== 'any' || onHostState !== undefined) {
          let state: SessionState;
          try {
            state = await readSessionState(opened.client);
          } catch (error) {
            destroySocket(opened.client);
            lastError = error;
            failures.push(`${entry.host}:${entry.port}: ${(error as Error)?.message ?? String(error)}`);
            continue;
          }
          onHostState?.(entry.host, entry.port, state);
          if (!satisfies(target, state)) {
            destroySocket(opened.client);
            opened.client.end().catch(() => undefined);
            const role = state.inRecovery ? 'a standby' : state.readOnly ? 'read-only' : 'a primary';
            failures.push(`${entry.host}:${entry.port}: is ${role}, not ${target}`);
            continue;
          }
        }
        hostOf.set(opened.client, `${entry.host}:${entry.port}`);
        opened.markConnected();
        return opened.client;
      }
    }
    // Transient by design: a failover in progress makes no host match for a while.
    const error = new Error(
      `No host matched target_session_attrs=${plan.targetSessionAttrs} (${failures.join('; ')})`,
      { cause: lastError },
    );
    throw error;
  }

  return {
    ...(options.allowExitOnIdle
      ? {
          setIdle(client: PgClient, idle: boolean) {
            // PgClient has ref()/unref() (they act on its socket); its type declarations omit them.
            const socketHolder = client as unknown as { ref?(): void; unref?(): void };
            if (idle) socketHolder.unref?.();
            else socketHolder.ref?.();
          },
        }
      : {}),

    async connect({ signal, onBroken }: ConnectContext): Promise<PgClient> {
      if (hostPlan === undefined) {
        const opened = await open(clientConfig, signal, onBroken);
        opened.markConnected();
        return opened.client;
      }
      return connectToTarget(hostPlan, signal, onBroken);
    },

    validate(client, signal) {
      // The empty statement is the cheapest full round trip: the server answers EmptyQueryResponse.
      return queryWithAbort(client, '', signal);
    },

    needsReset(client) {
      return transactionStatus(client) !== 'I' || hasPendingQueries(client);
    },

    async reset(client, signal) {
      // Statements the holder left running finish first (pg.Pool lets them), then any open
      // transaction is rolled back.
      await waitForDrain(client, signal);
      if (transactionStatus(client) !== 'I') await queryWithAbort(client, 'ROLLBACK', signal);
      if (transactionStatus(client) !== 'I') {
        throw new Error('Connection still inside a transaction after ROLLBACK');
      }
    },

    destroy(client) {
      return new Promise<void>((resolve) => {
        const socket = socketOf(client);
        if (socket?.destroyed) {
          resolve();
          return;
        }
        // end() sends Terminate and waits for the server to hang up; a frozen network would make it
        // wait forever, so the socket is destroyed after a grace period.
        const timer = setTimeout(() => {
          destroySocket(client);
          resolve();
        }, CLOSE_GRACE_MS);
        timer.unref();
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        if (socket) socket.once('close', done);
        client.end().then(socket ? undefined : done, () => {
          destroySocket(client);
          done();
        });
      });
    },
  };
}
