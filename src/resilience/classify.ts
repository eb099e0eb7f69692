/**
 * Failure classification: the one place that decides what an error means for the pool.
 *
 * Every other module asks these questions instead of looking at codes or messages itself:
 *
 * - {@link classifyConnectError}: opening a connection failed; is another attempt worth making?
 * - {@link isConnectionBroken}: must the connection that produced this error be destroyed?
 * - {@link provesNotRun}: does the error prove the statement did not run (or did not commit)?
 * - {@link isTransactionRetryable} / {@link isReadOnlyFailover}: the two SQLSTATEs that ask for a re-run.
 * - {@link errorCode} / {@link errorLabel}: a code for decisions and a safe label for metrics.
 *
 * Sources of the rules:
 *
 * - PostgreSQL sends an ErrorResponse whose `C` field is the SQLSTATE (Appendix A, "PostgreSQL Error
 *   Codes") and whose `S` field is the severity (protocol chapter, "Error and Notice Message Fields").
 *   `FATAL` "caused the current session to abort" and `PANIC` "caused all database sessions to abort"
 *   (table "Message Severity Levels"). pg-protocol copies these to `DatabaseError.code` and
 *   `DatabaseError.severity`. The `S` text is localized by `lc_messages`, so every rule that depends on
 *   "this always arrives as FATAL" also lists the SQLSTATE.
 * - node-postgres raises plain `Error`s without a code for failures it detects itself
 *   ('Connection terminated unexpectedly', 'Client was closed and is not queryable', ...). Those
 *   messages are fixed strings in `pg/lib/client.js` and `pg/lib/connection.js`, so they are matched
 *   exactly.
 * - Socket and TLS failures are Node errors with a `code` (`ECONNREFUSED`, `DEPTH_ZERO_SELF_SIGNED_CERT`,
 *   `ERR_TLS_CERT_ALTNAME_INVALID`, ...). With `autoSelectFamily` Node reports an `AggregateError` that
 *   carries the code of its first attempt.
 * - HikariCP evicts a connection when the SQLSTATE starts with `08` or is one of `0A000`, `57P01`,
 *   `57P02`, `57P03` (`ProxyConnection.checkException`), and keeps retrying connection creation on any
 *   failure until `connectionTimeout`. This module follows the same idea with more precise rules.
 *
 * Everything here runs only after a failure, reads a handful of properties once, and never throws:
 * the inputs are whatever was thrown, including `null`, strings and objects whose getters throw.
 */
import { type ErrorCode, ErrorCodes } from '../errors.js';

/** What a failed connection attempt means for the next attempt. */
export type ConnectFailure = 'transient' | 'fatal';

/**
 * How many `cause` links are followed. Wrappers rarely nest deeper than two, and the limit also ends
 * a cause cycle (`a.cause = b; b.cause = a`).
 */
const MAX_CAUSE_DEPTH = 4;

/** The properties the rules look at, read once from a thrown value. */
interface Facts {
  code: string | undefined;
  message: string | undefined;
  severity: string | undefined;
  name: string | undefined;
  cause: unknown;
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** Reads the fields of an error-like object; `undefined` for primitives, `null` and `undefined`. */
function facts(err: unknown): Facts | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as Record<string, unknown>;
  let code = str(e.code);
  if (code === undefined) {
    // Node's AggregateError for a multi-address connect (autoSelectFamily) normally copies the code of
    // its first error; a hand-built one may not, so look inside.
    const errors = e.errors;
    if (Array.isArray(errors) && errors.length > 0) {
      const first: unknown = errors[0];
      if (typeof first === 'object' && first !== null) code = str((first as Record<string, unknown>).code);
    }
  }
  return {
    code,
    message: str(e.message),
    severity: str(e.severity),
    name: str(e.name),
    cause: e.cause,
  };
}

// ---------------------------------------------------------------------------------------------------
// Codes
// ---------------------------------------------------------------------------------------------------

const STEADFAST_CODES: ReadonlySet<string> = new Set<string>(Object.values(ErrorCodes));

function isSteadfastCode(code: string): code is ErrorCode {
  return STEADFAST_CODES.has(code);
}

/**
 * A SQLSTATE is five characters from [0-9A-Z]. No SQLSTATE class starts with `E`, while every errno-style
 * Node code does (`EPIPE` is also five capital letters), which is what tells the two apart.
 */
const SQLSTATE = /^[0-9A-DF-Z][0-9A-Z]{4}$/;

function isSqlState(code: string): boolean {
  return code.length === 5 && SQLSTATE.test(code);
}

function sqlStateClass(code: string): string {
  return code.slice(0, 2);
}

/** `FATAL` ends the session and `PANIC` ends all of them ("Message Severity Levels"). */
function endsSession(severity: string | undefined): boolean {
  return severity === 'FATAL' || severity === 'PANIC';
}

/**
 * Network-level failures of a socket that was connecting or connected. Any of them leaves the socket
 * unusable; while connecting, each one can clear up on its own (server restarting, route flapping, DNS
 * resolver briefly unavailable).
 *
 * `ENOTFOUND` (the resolver answered "no such name") is here on purpose. A misspelt host never
 * resolves, but in container platforms a correct name is also missing for a while: a Docker Compose
 * service name while its container restarts, a Kubernetes headless-service record before the pod is
 * ready. Retrying costs at most the caller's acquire deadline, and the timeout error then names the last
 * cause, `getaddrinfo ENOTFOUND <host>`; failing fast would instead turn every such restart into an
 * outage. HikariCP makes the same trade by retrying every creation failure.
 */
const NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENETRESET',
  'ENOTCONN',
  'ESHUTDOWN',
  'EADDRNOTAVAIL',
  'EAI_AGAIN',
  'EAI_FAIL',
  'ENOTFOUND',
  'ERR_SOCKET_CLOSED',
  'ERR_SOCKET_CLOSED_BEFORE_CONNECTION',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
  'ERR_STREAM_DESTROYED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_STREAM_WRITE_AFTER_END',
  'ERR_TLS_HANDSHAKE_TIMEOUT',
  'ERR_SSL_UNEXPECTED_EOF_WHILE_READING',
]);

/**
 * Local resource shortages while opening a socket: no Unix socket file yet (the server removes it while
 * it restarts), out of file descriptors or buffers. They pass, so connecting is retried; they are not
 * in {@link NETWORK_CODES} because user code reading files raises the same codes, and that says
 * nothing about a connection.
 */
const LOCAL_TRANSIENT_CODES: ReadonlySet<string> = new Set([
  'ENOENT',
  'EMFILE',
  'ENFILE',
  'ENOBUFS',
  'ENOMEM',
]);

/**
 * Certificate verification failures, as OpenSSL names them in Node's `err.code`. The server's
 * certificate or the client's trust settings are wrong; the next attempt meets the same certificate.
 */
const CERT_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
]);

/**
 * Node codes that mean the configuration is wrong: a permission-denied Unix socket, a TLS protocol
 * mismatch (`EPROTO`, `ERR_SSL_WRONG_VERSION_NUMBER` when TLS meets a plain-text port), key or certificate
 * material that does not load (`ERR_OSSL_*`), or an argument Node rejected before any I/O (`ERR_INVALID_*`,
 * `ERR_SOCKET_BAD_PORT`).
 */
function isFatalNodeCode(code: string): boolean {
  return (
    code === 'EACCES' ||
    code === 'EPROTO' ||
    CERT_CODES.has(code) ||
    code.startsWith('ERR_TLS_') ||
    code.startsWith('ERR_SSL_') ||
    code.startsWith('ERR_OSSL_') ||
    code.startsWith('ERR_INVALID_') ||
    code === 'ERR_OUT_OF_RANGE' ||
    code === 'ERR_SOCKET_BAD_PORT' ||
    code === 'ERR_MISSING_ARGS' ||
    code === 'ERR_MISSING_OPTION'
  );
}

/** A Node code raised by the socket or TLS layer: the stream it came from is finished. */
function isSocketCode(code: string): boolean {
  return (
    NETWORK_CODES.has(code) ||
    code === 'EPROTO' ||
    CERT_CODES.has(code) ||
    code.startsWith('ERR_TLS_') ||
    code.startsWith('ERR_SSL_') ||
    code.startsWith('ERR_OSSL_') ||
    code.startsWith('ERR_SOCKET_') ||
    code.startsWith('ERR_STREAM_')
  );
}

// ---------------------------------------------------------------------------------------------------
// node-postgres' own messages
// ---------------------------------------------------------------------------------------------------

/** What one of node-postgres' own error messages means. */
interface MessageMeaning {
  connect: ConnectFailure;
  broken: boolean;
  notRun: boolean;
}

const TRANSIENT_BROKEN: MessageMeaning = { connect: 'transient', broken: true, notRun: false };
const FATAL_BROKEN: MessageMeaning = { connect: 'fatal', broken: true, notRun: false };
const NOT_SENT: MessageMeaning = { connect: 'transient', broken: true, notRun: true };

/** Exact messages from `pg/lib/client.js`, `pg/lib/connection.js` and `pg-pool/index.js`. */
const PG_MESSAGES: ReadonlyMap<string, MessageMeaning> = new Map([
  // The socket closed without the client asking. While connecting this is typically a proxy (PgBouncer,
  // a cloud proxy, a load balancer) whose backend is gone; it accepts TCP and then hangs up.
  ['Connection terminated unexpectedly', TRANSIENT_BROKEN],
  // client.end() was called while the statement was queued or in flight.
  ['Connection terminated', TRANSIENT_BROKEN],
  // pg's own connectionTimeoutMillis destroys the socket with this error.
  ['timeout expired', TRANSIENT_BROKEN],
  // pg-pool's wrapper of the same timeout.
  ['Connection terminated due to connection timeout', TRANSIENT_BROKEN],
  // query_timeout fired: pg stops waiting but the statement may still be running and its reply will
  // arrive later, so the protocol state of the connection is unknown.
  ['Query read timeout', TRANSIENT_BROKEN],
  // Raised by client.query() before anything is written: the statement was never sent.
  ['Client has encountered a connection error and is not queryable', NOT_SENT],
  ['Client was closed and is not queryable', NOT_SENT],
  // The server answered 'N' to SSLRequest: it has ssl = off, which no retry changes.
  ['The server does not support SSL connections', FATAL_BROKEN],
  // Any other answer to SSLRequest. A postmaster that cannot fork answers the startup packet with a bare
  // error message ('E') before reading it, so this can be a passing resource shortage.
  ['There was an error establishing an SSL connection', TRANSIENT_BROKEN],
  // The password callback returned something other than a string: a configuration bug.
  ['Password must be a string', FATAL_BROKEN],
  // connect() on a client that was already connected: a bug in the caller.
  ['Client has already been connected. You cannot reuse a client.', FATAL_BROKEN],
]);

/**
 * Startup refusals recognised by text when no SQLSTATE came with them (a proxy that forwards only the
 * message). PostgreSQL itself sends them as 57P03 ("the database system is starting up", "... is shutting
 * down", "... is in recovery mode", "... is not yet accepting connections") and 53300 ("sorry, too many
 * clients already").
 */
function isServerBusyText(message: string): boolean {
  return message.includes('the database system is ') || message.includes('too many clients already');
}

function messageMeaning(message: string): MessageMeaning | undefined {
  const exact = PG_MESSAGES.get(message);
  if (exact !== undefined) return exact;
  // pg/lib/crypto/sasl.js: the SCRAM exchange failed on the client side (no password or a non-string
  // one, an unsupported mechanism, a server signature that does not match). The same password and the same
  // server give the same result.
  if (message.startsWith('SASL: ') || message.includes('client password must be a')) return FATAL_BROKEN;
  // pg/lib/client.js: a message arrived that the protocol state does not allow; the stream is out of step.
  if (message.startsWith('Received unexpected ') && message.endsWith(' message from backend.')) {
    return TRANSIENT_BROKEN;
  }
  if (isServerBusyText(message)) return TRANSIENT_BROKEN;
  return undefined;
}

/** Programming errors. A bug does not go away on the next attempt. */
function isProgrammingErrorName(name: string | undefined): boolean {
  return name === 'TypeError' || name === 'RangeError' || name === 'SyntaxError' || name === 'ReferenceError';
}

// ---------------------------------------------------------------------------------------------------
// classifyConnectError
// ---------------------------------------------------------------------------------------------------

const STEADFAST_CONNECT: Readonly<Record<ErrorCode, ConnectFailure>> = {
  [ErrorCodes.CONNECT_TIMEOUT]: 'transient',
  [ErrorCodes.TIMEOUT]: 'transient',
  [ErrorCodes.ACQUIRE_TIMEOUT]: 'transient',
  [ErrorCodes.OUTCOME_UNKNOWN]: 'transient',
  [ErrorCodes.CONNECT_FATAL]: 'fatal',
  [ErrorCodes.INVALID_OPTION]: 'fatal',
  [ErrorCodes.DOUBLE_RELEASE]: 'fatal',
  // The pool or the caller asked to stop; another attempt would be unwanted, not just futile.
  [ErrorCodes.POOL_CLOSED]: 'fatal',
  [ErrorCodes.ABORTED]: 'fatal',
  // Load-shedding answers: the database may be fine, try again later.
  [ErrorCodes.CIRCUIT_OPEN]: 'transient',
  [ErrorCodes.QUEUE_FULL]: 'transient',
  [ErrorCodes.RATE_LIMITED]: 'transient',
  [ErrorCodes.RECLAIMED]: 'fatal',
  [ErrorCodes.NO_REPLICA]: 'transient',
};

/**
 * Connect-time meaning of a SQLSTATE. Fatal are the answers that depend only on the request: who logs in
 * (class 28: 28000 no pg_hba.conf entry or role cannot log in, 28P01 wrong password), where (3D000 no such
 * database, 57P04 database dropped), whether they may (42501 no CONNECT privilege; the rest of class 42,
 * e.g. 42704 unknown setting in `options`) and with what (class 22, a bad startup parameter value; 0A000,
 * an unsupported protocol version). Everything else is transient, in particular class 08 (including
 * PgBouncer's 08P01 pooler errors), class 53 (53300 too many connections and other resource limits),
 * class 57 (57P01/57P02 shutting down, 57P03 starting up or in recovery) and class 58 (system errors):
 * they describe the server's state, which changes.
 */
function connectFailureForSqlState(code: string): ConnectFailure {
  switch (sqlStateClass(code)) {
    case '28':
    case '3D':
    case '42':
    case '22':
    case '0A':
      return 'fatal';
    default:
      return code === '57P04' ? 'fatal' : 'transient';
  }
}

function connectFailureForNodeCode(code: string): ConnectFailure | undefined {
  if (NETWORK_CODES.has(code) || LOCAL_TRANSIENT_CODES.has(code)) return 'transient';
  if (isFatalNodeCode(code)) return 'fatal';
  return undefined;
}

function connectVerdict(err: unknown, depth: number): ConnectFailure | undefined {
  const f = facts(err);
  if (f === undefined) return undefined;
  if (f.code !== undefined) {
    if (isSteadfastCode(f.code)) return STEADFAST_CONNECT[f.code];
    if (isSqlState(f.code)) return connectFailureForSqlState(f.code);
    const byCode = connectFailureForNodeCode(f.code);
    if (byCode !== undefined) return byCode;
  }
  if (f.message !== undefined) {
    const meaning = messageMeaning(f.message);
    if (meaning !== undefined) return meaning.connect;
  }
  // A wrapper such as undici's TypeError('fetch failed') from a password callback is as transient as the
  // network error inside it, so the cause decides before the wrapper's class does.
  if (f.cause !== undefined && depth < MAX_CAUSE_DEPTH) {
    const inner = connectVerdict(f.cause, depth + 1);
    if (inner !== undefined) return inner;
  }
  if (isProgrammingErrorName(f.name)) return 'fatal';
  return undefined;
}

/**
 * For an error raised while opening a connection (TCP, TLS, startup, authentication, or setup statements
 * run on the new connection): may another attempt succeed?
 *
 * `'fatal'` for answers that depend only on what was asked: authentication (class 28), no such database
 * (3D000, 57P04), no CONNECT privilege (42501), bad startup parameters (classes 22, 42, 0A), TLS
 * configuration and certificate verification failures, SASL/password errors raised by node-postgres, and
 * programming errors (`TypeError`, `RangeError`, `SyntaxError`, `ReferenceError` and Node's `ERR_INVALID_*`).
 *
 * `'transient'` for everything else, including errors never seen before: a pool should keep trying until
 * the caller's deadline, as HikariCP does. That covers refused and reset connections, timeouts,
 * unreachable hosts and networks, DNS failures (`EAI_AGAIN` and `ENOTFOUND`, see below), 'Connection
 * terminated unexpectedly' (a proxy whose backend is gone), `ConnectTimeoutError`, class 08
 * (including PgBouncer's 08P01), class 53 (53300 too many connections), 57P01/57P02 (shutting down) and
 * 57P03 (starting up, in recovery).
 *
 * `ENOTFOUND` is transient because container platforms briefly lose correct names while a service
 * restarts; a misspelt host costs one acquire deadline and the resulting timeout error names it.
 *
 * When an error carries no code or known message of its own, its `cause` chain is consulted.
 *
 * @param err - whatever the connection attempt threw or rejected with.
 * @returns `'fatal'` when retrying cannot help, otherwise `'transient'`. Never throws.
 */
export function classifyConnectError(err: unknown): ConnectFailure {
  try {
    return connectVerdict(err, 0) ?? 'transient';
  } catch {
    // An error object whose properties throw when read: nothing is known, so keep trying until the
    // deadline like any other unknown failure.
    return 'transient';
  }
}

// ---------------------------------------------------------------------------------------------------
// isConnectionBroken
// ---------------------------------------------------------------------------------------------------

const STEADFAST_BROKEN: Readonly<Record<ErrorCode, boolean>> = {
  // The connection never finished opening.
  [ErrorCodes.CONNECT_TIMEOUT]: true,
  [ErrorCodes.CONNECT_FATAL]: true,
  // The connection was lost, or the statement outlived its deadline or was abandoned while running: the
  // reply may still arrive, so the protocol state is unknown.
  [ErrorCodes.OUTCOME_UNKNOWN]: true,
  [ErrorCodes.TIMEOUT]: true,
  [ErrorCodes.ABORTED]: true,
  // Raised by the pool's bookkeeping, not by a connection's I/O.
  [ErrorCodes.ACQUIRE_TIMEOUT]: false,
  [ErrorCodes.POOL_CLOSED]: false,
  [ErrorCodes.DOUBLE_RELEASE]: false,
  [ErrorCodes.INVALID_OPTION]: false,
  // Shed before any connection was involved.
  [ErrorCodes.CIRCUIT_OPEN]: false,
  [ErrorCodes.QUEUE_FULL]: false,
  [ErrorCodes.RATE_LIMITED]: false,
  // The pool closed the connection under its holder.
  [ErrorCodes.RECLAIMED]: true,
  [ErrorCodes.NO_REPLICA]: false,
};

/**
 * SQLSTATEs that PostgreSQL only ever sends with severity FATAL, so the session is over even when the
 * severity is missing (a hand-made error) or translated (`lc_messages`): 57P01 admin_shutdown
 * (pg_terminate_backend, fast shutdown), 57P02 crash_shutdown, 57P03 cannot_connect_now, 57P04
 * database_dropped, 57P05 idle_session_timeout, 25P03 idle_in_transaction_session_timeout, 53300
 * too_many_connections, and class 28 (authentication).
 */
const SESSION_ENDING_SQLSTATES: ReadonlySet<string> = new Set([
  '57P01',
  '57P02',
  '57P03',
  '57P04',
  '57P05',
  '25P03',
  '53300',
  '28000',
  '28P01',
]);

function brokenForSqlState(f: Facts, code: string): boolean {
  if (endsSession(f.severity)) return true;
  if (SESSION_ENDING_SQLSTATES.has(code)) return true;
  // PostgreSQL ends the session after its own class 08 errors, and PgBouncer closes the client after its
  // 08P01 pooler errors, which older versions sent at severity ERROR. So severity does not matter
  // here, as in HikariCP. An 08 error that postgres_fdw or dblink raises about a foreign connection
  // leaves this session usable; replacing it costs one reconnect, while keeping a closed one would fail
  // the next caller.
  if (sqlStateClass(code) === '08') return true;
  // A prepared statement invalidated by DDL fails with 0A000 every time it is executed on this
  // connection (pg keeps named statements per connection); HikariCP evicts on 0A000 for this reason.
  // Other 0A000 errors (unsupported SQL) leave the connection healthy.
  if (code === '0A000') return f.message === 'cached plan must not change result type';
  return false;
}

function brokenVerdict(err: unknown, depth: number): boolean | undefined {
  const f = facts(err);
  if (f === undefined) return undefined;
  if (f.code !== undefined) {
    if (isSteadfastCode(f.code)) return STEADFAST_BROKEN[f.code];
    if (isSqlState(f.code)) return brokenForSqlState(f, f.code);
    if (isSocketCode(f.code)) return true;
  }
  if (endsSession(f.severity)) return true;
  if (f.message !== undefined) {
    const meaning = messageMeaning(f.message);
    if (meaning !== undefined) return meaning.broken;
  }
  if (f.cause !== undefined && depth < MAX_CAUSE_DEPTH) return brokenVerdict(f.cause, depth + 1);
  return undefined;
}

/**
 * The connection that produced this error is dead or in an unknown state and must never be reused.
 *
 * True for socket and TLS errors, node-postgres' 'Connection terminated...', 'not queryable', 'timeout
 * expired' and 'Query read timeout' errors, any server error of severity FATAL or PANIC (PostgreSQL closes
 * the session after sending it), the SQLSTATEs that only arrive as FATAL (57P01, 57P02, 57P03, 57P04, 57P05,
 * 25P03, 53300, class 28), class 08 whatever its severity (as HikariCP), 0A000 'cached plan must not change result type', `OutcomeUnknownError`,
 * `ConnectTimeoutError`, `ConnectFatalError`, `TimeoutError` and `AbortedError`.
 *
 * False for ordinary SQL errors, after which PostgreSQL keeps the session: 42601 syntax error, 23505 unique
 * violation, 40001 serialization failure, 40P01 deadlock, 25006 read-only transaction, 57014 query canceled,
 * and so on. Also false for errors that say nothing about a connection: `null`, primitives, and errors
 * with no code, no known message and no such cause.
 *
 * @param err - the error a statement, a transaction or a connection event produced.
 * @returns whether the connection must be destroyed. Never throws.
 */
export function isConnectionBroken(err: unknown): boolean {
  try {
    return brokenVerdict(err, 0) ?? false;
  } catch {
    // An error whose fields cannot be read gives no grounds to trust the connection it came from.
    return true;
  }
}

// ---------------------------------------------------------------------------------------------------
// provesNotRun
// ---------------------------------------------------------------------------------------------------

const STEADFAST_NOT_RUN: Readonly<Record<ErrorCode, boolean>> = {
  // Raised before the statement was handed to any connection.
  [ErrorCodes.ACQUIRE_TIMEOUT]: true,
  [ErrorCodes.POOL_CLOSED]: true,
  [ErrorCodes.INVALID_OPTION]: true,
  [ErrorCodes.CONNECT_TIMEOUT]: true,
  [ErrorCodes.CONNECT_FATAL]: true,
  // The statement may have been sent.
  [ErrorCodes.OUTCOME_UNKNOWN]: false,
  [ErrorCodes.TIMEOUT]: false,
  [ErrorCodes.ABORTED]: false,
  [ErrorCodes.DOUBLE_RELEASE]: false,
  // Shed before the statement reached any connection.
  [ErrorCodes.CIRCUIT_OPEN]: true,
  [ErrorCodes.QUEUE_FULL]: true,
  [ErrorCodes.RATE_LIMITED]: true,
  // Refused before anything was sent.
  [ErrorCodes.RECLAIMED]: true,
  [ErrorCodes.NO_REPLICA]: true,
};

/**
 * SQLSTATEs that replace the statement's result and prove it did not commit:
 *
 * - 57P01 admin_shutdown: a backend ends on SIGTERM only at an interrupt check, and commit holds
 *   interrupts (`HOLD_INTERRUPTS` in `CommitTransaction`), so the FATAL arrives with the transaction
 *   rolled back. Caveat: an interrupt check can run after commit and before ReadyForQuery (for example
 *   while logging `log_min_duration_statement`); node-postgres then rejects a statement that did commit,
 *   and only the caller can tell, by having seen its CommandComplete.
 * - 57P03 cannot_connect_now and 53300 too_many_connections: refused while the session was being set up.
 * - 57P05 idle_session_timeout and 25P03 idle_in_transaction_session_timeout: the server gave up on an idle
 *   session, so a statement that crossed the timeout on the wire was never read (and an open transaction
 *   was rolled back).
 *
 * 57P02 crash_shutdown is deliberately absent: the postmaster's SIGQUIT can land right after a commit
 * record is flushed, and crash recovery then keeps that commit. (PostgreSQL reports it as a WARNING
 * notice before closing the socket, so the statement normally fails with 'Connection terminated
 * unexpectedly', which proves nothing either.)
 */
const NOT_RUN_SQLSTATES: ReadonlySet<string> = new Set(['57P01', '57P03', '53300', '57P05', '25P03']);

/**
 * PgBouncer reports all of its own refusals as 08P01 (`disconnect_client` without an explicit SQLSTATE),
 * including those where the server died under a running statement ('server conn crashed?', 'query
 * timeout', 'transaction timeout'), whose outcome is unknown. Only these reasons prove the statement
 * never reached a server: the client was still waiting for one, still logging in, or idle.
 */
const PGBOUNCER_NOT_SENT_PREFIXES = [
  'query_wait_timeout',
  'query_timeout',
  'client_login_timeout',
  'client_idle_timeout',
  'idle transaction timeout',
  'server shutting down',
  'no more connections allowed',
  'pgbouncer cannot connect to server',
  'server login has been failing',
] as const;

function isPgBouncerNotSent(message: string | undefined): boolean {
  if (message === undefined) return false;
  for (const prefix of PGBOUNCER_NOT_SENT_PREFIXES) {
    if (message.startsWith(prefix)) return true;
  }
  return false;
}

function notRunForSqlState(f: Facts, code: string): boolean {
  if (NOT_RUN_SQLSTATES.has(code)) return true;
  if (sqlStateClass(code) !== '08') return false;
  // 08007 transaction_resolution_unknown says the opposite: nobody knows whether it committed.
  if (code === '08007') return false;
  // PostgreSQL raises 08P01 for a malformed message it refused to execute, but the same code is
  // PgBouncer's catch-all (at severity ERROR in older versions, FATAL in newer ones when it closes the
  // connection), so only the PgBouncer reasons above count, whatever the severity.
  if (code === '08P01') return isPgBouncerNotSent(f.message);
  // PostgreSQL sends the other class 08 codes as FATAL, and only while a session is being set up. At
  // severity ERROR the error is about a foreign connection the statement used (postgres_fdw, dblink),
  // which may have done remote work before failing.
  return f.severity !== 'ERROR';
}

/**
 * The error proves the statement did not run, or did not commit, so sending it again cannot apply it
 * twice.
 *
 * True for: 57P01 admin_shutdown, 57P03 cannot_connect_now,
 * 53300 too_many_connections, 57P05 and 25P03 (idle timeouts), class 08 connection exceptions except 08007
 * transaction_resolution_unknown and except 08P01 unless it carries a PgBouncer reason that means the
 * statement never reached a server ('query_wait_timeout', 'pgbouncer cannot connect to server', ...);
 * node-postgres' 'not queryable' errors, raised before anything is written; and the pool's own
 * `AcquireTimeoutError`, `PoolClosedError`, `InvalidOptionError`, `ConnectTimeoutError` and
 * `ConnectFatalError`, raised before the statement reached a connection.
 *
 * False for everything else, including socket errors and 'Connection terminated unexpectedly' (the
 * statement may have run), 57P02 crash_shutdown, `OutcomeUnknownError` and ordinary SQL errors (those
 * did run and failed; whether to retry them is a different question, see {@link isTransactionRetryable}).
 * Only the error itself is examined, not its `cause`: a wrapper may have been raised after more happened.
 *
 * Caveat for 57P01: node-postgres settles a statement on ReadyForQuery, so a FATAL that arrives after the
 * statement's CommandComplete (a backend terminated while logging `log_min_duration_statement` after a
 * commit) rejects a statement that did commit. The error alone cannot show this.
 *
 * @param err - the error the statement failed with.
 * @returns whether the statement certainly did not take effect. Never throws.
 */
export function provesNotRun(err: unknown): boolean {
  try {
    const f = facts(err);
    if (f === undefined) return false;
    if (f.code !== undefined) {
      if (isSteadfastCode(f.code)) return STEADFAST_NOT_RUN[f.code];
      if (isSqlState(f.code)) return notRunForSqlState(f, f.code);
      return false;
    }
    return f.message !== undefined && messageMeaning(f.message)?.notRun === true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------
// SQLSTATE predicates
// ---------------------------------------------------------------------------------------------------

/**
 * Finds the SQLSTATE of a server error, looking through wrappers (an application error whose `cause` is
 * the pg error). Stops at the first code that is not a SQLSTATE: a pool error or a Node error is its own
 * answer, and an `AcquireTimeoutError`'s cause is a connect failure, not the statement's error.
 */
function sqlStateOf(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth <= MAX_CAUSE_DEPTH; depth++) {
    const f = facts(current);
    if (f === undefined) return undefined;
    if (f.code !== undefined) return isSqlState(f.code) ? f.code : undefined;
    current = f.cause;
  }
  return undefined;
}

/**
 * 40001 serialization_failure or 40P01 deadlock_detected: PostgreSQL rolled the transaction back and
 * documents that the whole transaction should be re-run from the start ("Serialization Failure
 * Handling"). 40001 is also how a hot standby cancels a query that conflicts with recovery.
 *
 * The error's `cause` chain is followed, so an application error wrapping the pg error still counts.
 *
 * @param err - the error the transaction failed with.
 * @returns whether re-running the whole transaction may succeed. Never throws.
 */
export function isTransactionRetryable(err: unknown): boolean {
  try {
    const code = sqlStateOf(err);
    return code === '40001' || code === '40P01';
  } catch {
    return false;
  }
}

/**
 * 25006 read_only_sql_transaction: a write reached a server that only accepts reads, which after a
 * failover means this host is (now) a standby and the primary is elsewhere. The same SQLSTATE is raised
 * inside a transaction the application itself declared READ ONLY; callers that act on it (reconnecting,
 * for instance) can confirm with `SELECT pg_is_in_recovery()`.
 *
 * The error's `cause` chain is followed, as for {@link isTransactionRetryable}.
 *
 * @param err - the error a statement failed with.
 * @returns whether the error is 25006. Never throws.
 */
export function isReadOnlyFailover(err: unknown): boolean {
  try {
    return sqlStateOf(err) === '25006';
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------
// Codes and labels
// ---------------------------------------------------------------------------------------------------

/**
 * The error's own code: the SQLSTATE for server errors (`'23505'`), the Node code for socket and system
 * errors (`'ECONNREFUSED'`, also for Node's multi-address `AggregateError`), the stable code for this
 * package's errors (`'ERR_STEADFAST_CONNECT_TIMEOUT'`).
 *
 * @param err - any thrown value.
 * @returns the code, or `undefined` when there is no non-empty string code. Never throws.
 */
export function errorCode(err: unknown): string | undefined {
  try {
    return facts(err)?.code;
  } catch {
    return undefined;
  }
}

/** Codes are identifiers; anything else in a `code` field is not trusted into a metric label. */
const SAFE_LABEL = /^[A-Za-z0-9_]{1,64}$/;

/**
 * A short label for events and metrics: the SQLSTATE, the Node error code or the steadfast code of the
 * error, or of the first error in its `cause` chain that has one; `'unknown'` otherwise. Messages are
 * never used, because server messages quote user data ('Key (email)=(...) already exists'), and a code
 * that is not a plain identifier of at most 64 characters is replaced by `'unknown'`.
 *
 * @param err - any thrown value.
 * @returns a label made of letters, digits and underscores, or `'unknown'`. Never throws.
 */
export function errorLabel(err: unknown): string {
  try {
    let current: unknown = err;
    for (let depth = 0; depth <= MAX_CAUSE_DEPTH; depth++) {
      const f = facts(current);
      if (f === undefined) return 'unknown';
      if (f.code !== undefined) return SAFE_LABEL.test(f.code) ? f.code : 'unknown';
      current = f.cause;
    }
    return 'unknown';
  } catch {
    return 'unknown';
  }
}
