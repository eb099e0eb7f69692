import net from 'node:net';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AbortedError,
  AcquireTimeoutError,
  ConnectFatalError,
  ConnectTimeoutError,
  DoubleReleaseError,
  ErrorCodes,
  InvalidOptionError,
  OutcomeUnknownError,
  PoolClosedError,
  TimeoutError,
} from '../../src/errors.js';
import {
  classifyConnectError,
  errorCode,
  errorLabel,
  isConnectionBroken,
  isReadOnlyFailover,
  isTransactionRetryable,
  provesNotRun,
} from '../../src/resilience/classify.js';

// ---------------------------------------------------------------------------------------------------
// Error factories
// ---------------------------------------------------------------------------------------------------

/** A real pg DatabaseError, built the way pg-protocol's parser builds one. */
function dbError(code: string, severity: string | null = 'ERROR', message = `server error ${code}`) {
  const err = new pg.DatabaseError(message, 0, 'error');
  err.code = code;
  if (severity !== null) err.severity = severity;
  return err;
}

/** A Node system error as net/dns produce it. */
function sysError(code: string, syscall = 'connect') {
  return Object.assign(new Error(`${syscall} ${code} 10.0.0.1:5432`), { code, errno: -1, syscall });
}

/** A hand-made error with only a code (no severity), as tests and wrappers often build them. */
function coded(code: string, message = 'hand-made') {
  return Object.assign(new Error(message), { code });
}

const samplePool = { total: 1, idle: 0, inUse: 1, connecting: 0, waiting: 2, max: 1 };

// ---------------------------------------------------------------------------------------------------
// Table-driven expectations
// ---------------------------------------------------------------------------------------------------

interface Row {
  name: string;
  err: () => unknown;
  connect: 'transient' | 'fatal';
  broken: boolean;
  notRun: boolean;
}

const row = (
  name: string,
  err: () => unknown,
  connect: 'transient' | 'fatal',
  broken: boolean,
  notRun: boolean,
): Row => ({ name, err, connect, broken, notRun });

const serverErrors: Row[] = [
  // Server state: transient, session over, nothing ran.
  row('57P01 admin_shutdown FATAL', () => dbError('57P01', 'FATAL'), 'transient', true, true),
  row('57P01 without severity', () => dbError('57P01', null), 'transient', true, true),
  row('57P01 with a translated severity', () => dbError('57P01', 'ВАЖНО'), 'transient', true, true),
  row('57P02 crash_shutdown FATAL', () => dbError('57P02', 'FATAL'), 'transient', true, false),
  row('57P03 cannot_connect_now', () => dbError('57P03', 'FATAL'), 'transient', true, true),
  row('57P03 hand-made', () => coded('57P03'), 'transient', true, true),
  row('57P05 idle_session_timeout', () => dbError('57P05', 'FATAL'), 'transient', true, true),
  row('25P03 idle_in_transaction_session_timeout', () => dbError('25P03', 'FATAL'), 'transient', true, true),
  row('53300 too_many_connections', () => dbError('53300', 'FATAL'), 'transient', true, true),
  row('53300 without severity', () => dbError('53300', null), 'transient', true, true),
  row('53000 insufficient_resources', () => dbError('53000', 'ERROR'), 'transient', false, false),
  row('53100 disk_full', () => dbError('53100', 'ERROR'), 'transient', false, false),
  row('53200 out_of_memory', () => dbError('53200', 'ERROR'), 'transient', false, false),
  row('53400 configuration_limit_exceeded', () => dbError('53400', 'ERROR'), 'transient', false, false),
  row('58000 system_error', () => dbError('58000', 'ERROR'), 'transient', false, false),
  row('XX000 internal_error', () => dbError('XX000', 'ERROR'), 'transient', false, false),
  row('XX000 PANIC', () => dbError('XX000', 'PANIC'), 'transient', true, false),
  // Class 08.
  row('08000 connection_exception', () => dbError('08000', 'FATAL'), 'transient', true, true),
  row('08001 sqlclient_unable_to_establish', () => dbError('08001', 'FATAL'), 'transient', true, true),
  row('08003 connection_does_not_exist', () => dbError('08003', null), 'transient', true, true),
  row('08004 server rejected connection', () => dbError('08004', 'FATAL'), 'transient', true, true),
  row('08006 connection_failure', () => dbError('08006', 'FATAL'), 'transient', true, true),
  row('08006 at ERROR (postgres_fdw)', () => dbError('08006', 'ERROR'), 'transient', true, false),
  row('08007 transaction_resolution_unknown', () => dbError('08007', 'FATAL'), 'transient', true, false),
  row(
    '08P01 protocol_violation',
    () => dbError('08P01', 'FATAL', 'invalid frontend message type 88'),
    'transient',
    true,
    false,
  ),
  row(
    'older PgBouncer 08P01 query_wait_timeout at ERROR',
    () => dbError('08P01', 'ERROR', 'query_wait_timeout'),
    'transient',
    true,
    true,
  ),
  row(
    'PgBouncer 08P01 query_wait_timeout (FATAL)',
    () => dbError('08P01', 'FATAL', 'query_wait_timeout'),
    'transient',
    true,
    true,
  ),
  row(
    'PgBouncer 08P01 no more connections allowed',
    () => dbError('08P01', 'FATAL', 'no more connections allowed (max_client_conn)'),
    'transient',
    true,
    true,
  ),
  row(
    'PgBouncer 08P01 cannot connect to server',
    () => dbError('08P01', 'FATAL', 'pgbouncer cannot connect to server'),
    'transient',
    true,
    true,
  ),
  row(
    'PgBouncer 08P01 server login has been failing',
    () => dbError('08P01', 'FATAL', 'server login has been failing, try again later (server_login_retry)'),
    'transient',
    true,
    true,
  ),
  row(
    'PgBouncer 08P01 client_login_timeout',
    () => dbError('08P01', 'FATAL', 'client_login_timeout (server down)'),
    'transient',
    true,
    true,
  ),
  row(
    'PgBouncer 08P01 server conn crashed? (statement was running)',
    () => dbError('08P01', 'FATAL', 'server conn crashed?'),
    'transient',
    true,
    false,
  ),
  row(
    'PgBouncer 08P01 query timeout (statement was running)',
    () => dbError('08P01', 'FATAL', 'query timeout'),
    'transient',
    true,
    false,
  ),
  // Fatal at connect: the request itself is wrong.
  row('28000 invalid_authorization_specification', () => dbError('28000', 'FATAL'), 'fatal', true, false),
  row('28P01 invalid_password', () => dbError('28P01', 'FATAL'), 'fatal', true, false),
  row('28P01 without severity', () => coded('28P01'), 'fatal', true, false),
  row('3D000 invalid_catalog_name at connect', () => dbError('3D000', 'FATAL'), 'fatal', true, false),
  row('3D000 from DROP DATABASE', () => dbError('3D000', 'ERROR'), 'fatal', false, false),
  row('57P04 database_dropped', () => dbError('57P04', 'FATAL'), 'fatal', true, false),
  row('42501 insufficient_privilege at connect', () => dbError('42501', 'FATAL'), 'fatal', true, false),
  row('42501 insufficient_privilege in a query', () => dbError('42501', 'ERROR'), 'fatal', false, false),
  row('42704 unrecognized configuration parameter', () => dbError('42704', 'FATAL'), 'fatal', true, false),
  row('22023 invalid_parameter_value', () => dbError('22023', 'FATAL'), 'fatal', true, false),
  row('0A000 unsupported frontend protocol', () => dbError('0A000', 'FATAL'), 'fatal', true, false),
  // Ordinary SQL errors: the session survives.
  row('42601 syntax_error', () => dbError('42601'), 'fatal', false, false),
  row('42P01 undefined_table', () => dbError('42P01'), 'fatal', false, false),
  row('23505 unique_violation', () => dbError('23505'), 'transient', false, false),
  row('23505 hand-made', () => coded('23505'), 'transient', false, false),
  row('40001 serialization_failure', () => dbError('40001'), 'transient', false, false),
  row('40P01 deadlock_detected', () => dbError('40P01'), 'transient', false, false),
  row('25006 read_only_sql_transaction', () => dbError('25006'), 'transient', false, false),
  row('57014 query_canceled', () => dbError('57014'), 'transient', false, false),
  row('55000 object_not_in_prerequisite_state', () => dbError('55000'), 'transient', false, false),
  row('P0001 raise_exception', () => dbError('P0001'), 'transient', false, false),
  row('0A000 FOR UPDATE with aggregate', () => dbError('0A000'), 'fatal', false, false),
  row(
    '0A000 cached plan must not change result type',
    () => dbError('0A000', 'ERROR', 'cached plan must not change result type'),
    'fatal',
    true,
    false,
  ),
];

const nodeErrors: Row[] = [
  row('ECONNREFUSED', () => sysError('ECONNREFUSED'), 'transient', true, false),
  row('ECONNRESET', () => sysError('ECONNRESET', 'read'), 'transient', true, false),
  row('ECONNABORTED', () => sysError('ECONNABORTED'), 'transient', true, false),
  row('EPIPE', () => sysError('EPIPE', 'write'), 'transient', true, false),
  row('ETIMEDOUT', () => sysError('ETIMEDOUT'), 'transient', true, false),
  row('EHOSTUNREACH', () => sysError('EHOSTUNREACH'), 'transient', true, false),
  row('EHOSTDOWN', () => sysError('EHOSTDOWN'), 'transient', true, false),
  row('ENETUNREACH', () => sysError('ENETUNREACH'), 'transient', true, false),
  row('ENETDOWN', () => sysError('ENETDOWN'), 'transient', true, false),
  row('EADDRNOTAVAIL', () => sysError('EADDRNOTAVAIL'), 'transient', true, false),
  row('EAI_AGAIN', () => sysError('EAI_AGAIN', 'getaddrinfo'), 'transient', true, false),
  row('EAI_FAIL', () => sysError('EAI_FAIL', 'getaddrinfo'), 'transient', true, false),
  row('ENOTFOUND (chosen: transient)', () => sysError('ENOTFOUND', 'getaddrinfo'), 'transient', true, false),
  row('ENOENT (no Unix socket yet)', () => sysError('ENOENT'), 'transient', false, false),
  row('EMFILE', () => sysError('EMFILE'), 'transient', false, false),
  row('EACCES (Unix socket permissions)', () => sysError('EACCES'), 'fatal', false, false),
  row('EPROTO (TLS protocol mismatch)', () => sysError('EPROTO', 'write'), 'fatal', true, false),
  row('ERR_TLS_HANDSHAKE_TIMEOUT', () => coded('ERR_TLS_HANDSHAKE_TIMEOUT'), 'transient', true, false),
  row(
    'ERR_SOCKET_CONNECTION_TIMEOUT',
    () => coded('ERR_SOCKET_CONNECTION_TIMEOUT'),
    'transient',
    true,
    false,
  ),
  row('ERR_STREAM_DESTROYED', () => coded('ERR_STREAM_DESTROYED'), 'transient', true, false),
  row(
    'ERR_SSL_UNEXPECTED_EOF_WHILE_READING',
    () => coded('ERR_SSL_UNEXPECTED_EOF_WHILE_READING'),
    'transient',
    true,
    false,
  ),
  // TLS configuration and certificate verification.
  row(
    'DEPTH_ZERO_SELF_SIGNED_CERT',
    () => coded('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate'),
    'fatal',
    true,
    false,
  ),
  row('SELF_SIGNED_CERT_IN_CHAIN', () => coded('SELF_SIGNED_CERT_IN_CHAIN'), 'fatal', true, false),
  row(
    'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    () => coded('UNABLE_TO_VERIFY_LEAF_SIGNATURE'),
    'fatal',
    true,
    false,
  ),
  row(
    'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
    () => coded('UNABLE_TO_GET_ISSUER_CERT_LOCALLY'),
    'fatal',
    true,
    false,
  ),
  row('CERT_HAS_EXPIRED', () => coded('CERT_HAS_EXPIRED'), 'fatal', true, false),
  row('ERR_TLS_CERT_ALTNAME_INVALID', () => coded('ERR_TLS_CERT_ALTNAME_INVALID'), 'fatal', true, false),
  row('ERR_SSL_WRONG_VERSION_NUMBER', () => coded('ERR_SSL_WRONG_VERSION_NUMBER'), 'fatal', true, false),
  row('ERR_OSSL_PEM_NO_START_LINE', () => coded('ERR_OSSL_PEM_NO_START_LINE'), 'fatal', true, false),
  // Programming errors.
  row(
    'ERR_INVALID_ARG_TYPE',
    () =>
      Object.assign(new TypeError('The "path" argument must be of type string'), {
        code: 'ERR_INVALID_ARG_TYPE',
      }),
    'fatal',
    false,
    false,
  ),
  row(
    'ERR_SOCKET_BAD_PORT',
    () => Object.assign(new RangeError('bad port'), { code: 'ERR_SOCKET_BAD_PORT' }),
    'fatal',
    true,
    false,
  ),
  row(
    'TypeError',
    () => new TypeError("Cannot read properties of undefined (reading 'x')"),
    'fatal',
    false,
    false,
  ),
  row('RangeError', () => new RangeError('Invalid array length'), 'fatal', false, false),
  row('SyntaxError', () => new SyntaxError('Unexpected token'), 'fatal', false, false),
  row('ReferenceError', () => new ReferenceError('x is not defined'), 'fatal', false, false),
];

const pgMessages: Row[] = [
  row(
    'Connection terminated unexpectedly',
    () => new Error('Connection terminated unexpectedly'),
    'transient',
    true,
    false,
  ),
  row('Connection terminated', () => new Error('Connection terminated'), 'transient', true, false),
  row(
    'Connection terminated due to connection timeout',
    () =>
      new Error('Connection terminated due to connection timeout', { cause: new Error('timeout expired') }),
    'transient',
    true,
    false,
  ),
  row('timeout expired', () => new Error('timeout expired'), 'transient', true, false),
  row('Query read timeout', () => new Error('Query read timeout'), 'transient', true, false),
  row(
    'not queryable (connection error)',
    () => new Error('Client has encountered a connection error and is not queryable'),
    'transient',
    true,
    true,
  ),
  row(
    'not queryable (closed)',
    () => new Error('Client was closed and is not queryable'),
    'transient',
    true,
    true,
  ),
  row(
    'The server does not support SSL connections',
    () => new Error('The server does not support SSL connections'),
    'fatal',
    true,
    false,
  ),
  row(
    'There was an error establishing an SSL connection',
    () => new Error('There was an error establishing an SSL connection'),
    'transient',
    true,
    false,
  ),
  row(
    'SASL client password must be a string',
    () => new Error('SASL: SCRAM-SERVER-FIRST-MESSAGE: client password must be a string'),
    'fatal',
    true,
    false,
  ),
  row(
    'SASL client password must be a non-empty string',
    () => new Error('SASL: SCRAM-SERVER-FIRST-MESSAGE: client password must be a non-empty string'),
    'fatal',
    true,
    false,
  ),
  row(
    'client password must be a string',
    () => new Error('client password must be a string'),
    'fatal',
    true,
    false,
  ),
  row(
    'SASL server signature does not match',
    () => new Error('SASL: SCRAM-SERVER-FINAL-MESSAGE: server signature does not match'),
    'fatal',
    true,
    false,
  ),
  row(
    'SASL unsupported mechanism',
    () => new Error('SASL: Only mechanism(s) SCRAM-SHA-256 are supported'),
    'fatal',
    true,
    false,
  ),
  row(
    'Password must be a string (TypeError)',
    () => new TypeError('Password must be a string'),
    'fatal',
    true,
    false,
  ),
  row(
    'Client has already been connected',
    () => new Error('Client has already been connected. You cannot reuse a client.'),
    'fatal',
    true,
    false,
  ),
  row(
    'Received unexpected dataRow message',
    () => new Error('Received unexpected dataRow message from backend.'),
    'transient',
    true,
    false,
  ),
  row(
    'starting up, text only',
    () => new Error('the database system is starting up'),
    'transient',
    true,
    false,
  ),
  row(
    'too many clients, text only',
    () => new Error('sorry, too many clients already'),
    'transient',
    true,
    false,
  ),
  row(
    'FATAL severity without code',
    () => Object.assign(new Error('x'), { severity: 'FATAL' }),
    'transient',
    true,
    false,
  ),
  row('plain unknown Error', () => new Error('something odd'), 'transient', false, false),
  row('Error with empty message', () => new Error(''), 'transient', false, false),
];

const steadfastErrors: Row[] = [
  row('ConnectTimeoutError', () => new ConnectTimeoutError(5000), 'transient', true, true),
  row(
    'ConnectTimeoutError wrapping a fatal cause',
    () => new ConnectTimeoutError(5000, dbError('28P01', 'FATAL')),
    'transient',
    true,
    true,
  ),
  row('ConnectFatalError', () => new ConnectFatalError(dbError('28P01', 'FATAL')), 'fatal', true, true),
  row(
    'OutcomeUnknownError',
    () => new OutcomeUnknownError(new Error('Connection terminated unexpectedly')),
    'transient',
    true,
    false,
  ),
  row('TimeoutError', () => new TimeoutError('query', 100), 'transient', true, false),
  row('AbortedError', () => new AbortedError('query'), 'fatal', true, false),
  row(
    'AcquireTimeoutError (cause is a socket error)',
    () => new AcquireTimeoutError(100, samplePool, sysError('ECONNREFUSED')),
    'transient',
    false,
    true,
  ),
  row('PoolClosedError', () => new PoolClosedError(), 'fatal', false, true),
  row('InvalidOptionError', () => new InvalidOptionError('max', 'must be positive'), 'fatal', false, true),
  row('DoubleReleaseError', () => new DoubleReleaseError(), 'fatal', false, false),
];

const oddInputs: Row[] = [
  row('null', () => null, 'transient', false, false),
  row('undefined', () => undefined, 'transient', false, false),
  row('string', () => 'boom', 'transient', false, false),
  row('number', () => 42, 'transient', false, false),
  row('boolean', () => false, 'transient', false, false),
  row('symbol', () => Symbol('x'), 'transient', false, false),
  row('function', () => () => 1, 'transient', false, false),
  row('empty object', () => ({}), 'transient', false, false),
  row('array', () => [1, 2], 'transient', false, false),
  row('numeric code', () => ({ code: 5432, message: 7 }), 'transient', false, false),
  row('empty code', () => ({ code: '' }), 'transient', false, false),
  row('null-prototype object', () => Object.create(null), 'transient', false, false),
];

const allRows = [...serverErrors, ...nodeErrors, ...pgMessages, ...steadfastErrors, ...oddInputs];

describe.each(allRows)('$name', ({ err, connect, broken, notRun }) => {
  it(`classifyConnectError is ${connect}`, () => {
    expect(classifyConnectError(err())).toBe(connect);
  });
  it(`isConnectionBroken is ${broken}`, () => {
    expect(isConnectionBroken(err())).toBe(broken);
  });
  it(`provesNotRun is ${notRun}`, () => {
    expect(provesNotRun(err())).toBe(notRun);
  });
  it('errorLabel is a safe identifier', () => {
    expect(errorLabel(err())).toMatch(/^[A-Za-z0-9_]{1,64}$/);
  });
});

// ---------------------------------------------------------------------------------------------------
// Specific behaviours
// ---------------------------------------------------------------------------------------------------

describe('classifyConnectError', () => {
  it('reads the code of an AggregateError from a multi-address connect', () => {
    const refused = new AggregateError([sysError('ECONNREFUSED'), sysError('ECONNREFUSED')], '');
    expect(classifyConnectError(refused)).toBe('transient');
    expect(errorCode(refused)).toBe('ECONNREFUSED');
    const withCode = Object.assign(new AggregateError([coded('CERT_HAS_EXPIRED')], ''), {
      code: 'CERT_HAS_EXPIRED',
    });
    expect(classifyConnectError(withCode)).toBe('fatal');
  });

  it('lets the cause decide for a wrapper such as fetch failed', () => {
    const fetchFailed = new TypeError('fetch failed', { cause: sysError('ECONNREFUSED') });
    expect(classifyConnectError(fetchFailed)).toBe('transient');
    const wrappedBug = new Error('password callback failed', { cause: new TypeError('x is not a function') });
    expect(classifyConnectError(wrappedBug)).toBe('fatal');
    const wrappedAuth = new Error('login failed', { cause: dbError('28P01', 'FATAL') });
    expect(classifyConnectError(wrappedAuth)).toBe('fatal');
  });

  it('survives a cause cycle', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(classifyConnectError(a)).toBe('transient');
    expect(isConnectionBroken(a)).toBe(false);
    expect(errorLabel(a)).toBe('unknown');
    expect(isTransactionRetryable(a)).toBe(false);
  });

  it('tells an errno-style Node code from a SQLSTATE', () => {
    // EPIPE is five capital letters, like a SQLSTATE; no SQLSTATE class starts with E.
    expect(classifyConnectError(coded('EPIPE'))).toBe('transient');
    expect(isConnectionBroken(coded('EPIPE'))).toBe(true);
  });
});

describe('isConnectionBroken', () => {
  it('follows the cause of an application error', () => {
    const wrapped = new Error('saving the order failed', {
      cause: new Error('Connection terminated unexpectedly'),
    });
    expect(isConnectionBroken(wrapped)).toBe(true);
    const sqlWrapped = new Error('saving the order failed', { cause: dbError('23505') });
    expect(isConnectionBroken(sqlWrapped)).toBe(false);
  });

  it('treats FATAL and PANIC severities as the end of the session whatever the code', () => {
    expect(isConnectionBroken(dbError('XX000', 'FATAL'))).toBe(true);
    expect(isConnectionBroken(dbError('42601', 'FATAL'))).toBe(true);
    expect(isConnectionBroken(dbError('42601', 'ERROR'))).toBe(false);
    expect(isConnectionBroken(dbError('42601', 'PANIC'))).toBe(true);
    expect(isConnectionBroken(dbError('01000', 'WARNING'))).toBe(false);
  });
});

describe('provesNotRun', () => {
  it('does not look through wrappers', () => {
    const wrapped = new Error('x', { cause: new Error('Client was closed and is not queryable') });
    expect(provesNotRun(wrapped)).toBe(false);
  });
});

describe('isTransactionRetryable', () => {
  it.each([
    ['40001', true],
    ['40P01', true],
    ['40000', false],
    ['40002', false],
    ['25006', false],
    ['23505', false],
    ['57P01', false],
  ])('%s -> %s', (code, expected) => {
    expect(isTransactionRetryable(dbError(code))).toBe(expected);
    expect(isTransactionRetryable(coded(code))).toBe(expected);
  });

  it('looks through application wrappers but not through pool errors', () => {
    expect(isTransactionRetryable(new Error('transfer failed', { cause: dbError('40001') }))).toBe(true);
    expect(
      isTransactionRetryable(new Error('a', { cause: new Error('b', { cause: dbError('40P01') }) })),
    ).toBe(true);
    expect(isTransactionRetryable(new OutcomeUnknownError(dbError('40001')))).toBe(false);
    expect(
      isTransactionRetryable(Object.assign(new Error('x'), { code: 'ECONNRESET', cause: dbError('40001') })),
    ).toBe(false);
  });

  it('is false for odd input', () => {
    for (const value of [null, undefined, 'x', 1, {}, new Error('40001'), { code: 40001 }]) {
      expect(isTransactionRetryable(value)).toBe(false);
    }
  });
});

describe('isReadOnlyFailover', () => {
  it('is true only for 25006', () => {
    expect(
      isReadOnlyFailover(dbError('25006', 'ERROR', 'cannot execute INSERT in a read-only transaction')),
    ).toBe(true);
    expect(isReadOnlyFailover(coded('25006'))).toBe(true);
    expect(isReadOnlyFailover(new Error('wrapped', { cause: dbError('25006') }))).toBe(true);
    for (const code of ['25001', '25P02', '40001', '57P03', '08006']) {
      expect(isReadOnlyFailover(dbError(code))).toBe(false);
    }
    for (const value of [null, undefined, 'x', {}, new Error('read-only')]) {
      expect(isReadOnlyFailover(value)).toBe(false);
    }
  });
});

describe('errorCode', () => {
  it('returns the SQLSTATE, Node code or steadfast code', () => {
    expect(errorCode(dbError('23505'))).toBe('23505');
    expect(errorCode(sysError('ECONNREFUSED'))).toBe('ECONNREFUSED');
    expect(errorCode(new ConnectTimeoutError(10))).toBe(ErrorCodes.CONNECT_TIMEOUT);
    expect(errorCode(new ConnectFatalError(dbError('28P01')))).toBe('ERR_STEADFAST_CONNECT_FATAL');
  });

  it('returns undefined when there is no string code', () => {
    for (const value of [null, undefined, 'ECONNRESET', 3, {}, new Error('x'), { code: 1 }, { code: '' }]) {
      expect(errorCode(value)).toBeUndefined();
    }
  });

  it('returns only the error’s own code, not its cause’s', () => {
    expect(errorCode(new Error('x', { cause: dbError('23505') }))).toBeUndefined();
  });
});

describe('errorLabel', () => {
  it.each([
    [dbError('23505', 'ERROR', 'duplicate key value violates unique constraint "users_email_key"'), '23505'],
    [sysError('ECONNRESET'), 'ECONNRESET'],
    [new OutcomeUnknownError(new Error('x')), 'ERR_STEADFAST_OUTCOME_UNKNOWN'],
    [new AcquireTimeoutError(10, samplePool, sysError('ECONNREFUSED')), 'ERR_STEADFAST_ACQUIRE_TIMEOUT'],
    [new TypeError('fetch failed', { cause: sysError('ECONNREFUSED') }), 'ECONNREFUSED'],
    [new Error('Connection terminated unexpectedly'), 'unknown'],
    [null, 'unknown'],
    ['ECONNRESET', 'unknown'],
    [{ code: 'user@example.com' }, 'unknown'],
    [{ code: 'has space' }, 'unknown'],
    [{ code: 'x'.repeat(65) }, 'unknown'],
    [{ code: 'x'.repeat(64) }, 'x'.repeat(64)],
  ])('%#: %s', (err, label) => {
    expect(errorLabel(err)).toBe(label);
  });

  it('never contains the message', () => {
    const err = dbError('23505', 'ERROR', 'Key (email)=(alice@example.com) already exists.');
    expect(errorLabel(err)).not.toContain('alice');
  });
});

describe('hostile input', () => {
  const throwing = () =>
    new Proxy(
      {},
      {
        get() {
          throw new Error('getter exploded');
        },
      },
    );
  const throwingCode = () =>
    Object.defineProperty(new Error('x'), 'code', {
      get() {
        throw new Error('getter exploded');
      },
    });

  it.each([
    ['proxy', throwing],
    ['throwing code getter', throwingCode],
  ])('%s: every function answers conservatively without throwing', (_name, make) => {
    expect(classifyConnectError(make())).toBe('transient');
    expect(isConnectionBroken(make())).toBe(true);
    expect(provesNotRun(make())).toBe(false);
    expect(isTransactionRetryable(make())).toBe(false);
    expect(isReadOnlyFailover(make())).toBe(false);
    expect(errorCode(make())).toBeUndefined();
    expect(errorLabel(make())).toBe('unknown');
  });

  it('a throwing cause getter does not escape either', () => {
    const err = Object.defineProperty(new Error('x'), 'cause', {
      get() {
        throw new Error('getter exploded');
      },
    });
    expect(classifyConnectError(err)).toBe('transient');
    expect(isConnectionBroken(err)).toBe(true);
    expect(errorLabel(err)).toBe('unknown');
  });
});

// ---------------------------------------------------------------------------------------------------
// Errors produced by real node-postgres clients against a scripted server
// ---------------------------------------------------------------------------------------------------

/** Encodes one backend message: type byte, Int32 length (including itself), body. */
function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

/** ErrorResponse with the given fields (S severity, V non-localized severity, C code, M message). */
function errorResponse(fields: Record<string, string>): Buffer {
  const parts = Object.entries(fields).map(([k, v]) => Buffer.from(`${k}${v}\0`, 'utf8'));
  return message('E', Buffer.concat([...parts, Buffer.from([0])]));
}

const authOk = message('R', Buffer.from([0, 0, 0, 0]));
const readyForQuery = message('Z', Buffer.from('I'));

/** Answers each chunk the client writes: `onData(socket, index)` where index counts chunks. */
type Script = (socket: net.Socket, index: number) => void;

const servers: net.Server[] = [];
const clients: pg.Client[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.end().catch(() => {});
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
        }),
    ),
  );
});

async function scriptedServer(script: Script): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    let index = 0;
    socket.on('data', () => script(socket, index++));
  });
  const close = server.close.bind(server);
  server.close = ((cb?: (err?: Error) => void) => {
    for (const s of sockets) s.destroy();
    return close(cb);
  }) as typeof server.close;
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

function newClient(port: number, extra: Partial<pg.ClientConfig> = {}): pg.Client {
  const client = new pg.Client({
    host: '127.0.0.1',
    port,
    user: 'u',
    database: 'd',
    password: 'p',
    ...extra,
  });
  client.on('error', () => {});
  clients.push(client);
  return client;
}

async function connectError(port: number, extra: Partial<pg.ClientConfig> = {}): Promise<unknown> {
  return newClient(port, extra)
    .connect()
    .then(
      () => {
        throw new Error('expected the connection to fail');
      },
      (err: unknown) => err,
    );
}

/** A connected client whose server answers queries with `onQuery`. */
async function connected(onQuery: Script, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const port = await scriptedServer((socket, index) => {
    if (index === 0) socket.write(Buffer.concat([authOk, readyForQuery]));
    else onQuery(socket, index);
  });
  const client = newClient(port, extra);
  await client.connect();
  return client;
}

const queryError = (client: pg.Client) =>
  client.query('SELECT 1').then(
    () => {
      throw new Error('expected the query to fail');
    },
    (err: unknown) => err,
  );

describe('real node-postgres errors', () => {
  it('refused TCP connection', async () => {
    const port = await scriptedServer(() => {});
    await new Promise<void>((resolve) => servers.pop()!.close(() => resolve()));
    const err = await connectError(port);
    expect(errorCode(err)).toBe('ECONNREFUSED');
    expect(classifyConnectError(err)).toBe('transient');
    expect(isConnectionBroken(err)).toBe(true);
    expect(provesNotRun(err)).toBe(false);
  });

  it('server hangs up during startup (a proxy without a backend)', async () => {
    const port = await scriptedServer((socket) => socket.destroy());
    const err = await connectError(port);
    expect((err as Error).message).toBe('Connection terminated unexpectedly');
    expect(classifyConnectError(err)).toBe('transient');
    expect(isConnectionBroken(err)).toBe(true);
  });

  it('57P03 the database system is starting up', async () => {
    const port = await scriptedServer((socket) => {
      socket.end(
        errorResponse({ S: 'FATAL', V: 'FATAL', C: '57P03', M: 'the database system is starting up' }),
      );
    });
    const err = await connectError(port);
    expect(err).toBeInstanceOf(pg.DatabaseError);
    expect(errorCode(err)).toBe('57P03');
    expect(classifyConnectError(err)).toBe('transient');
    expect(isConnectionBroken(err)).toBe(true);
    expect(provesNotRun(err)).toBe(true);
    expect(errorLabel(err)).toBe('57P03');
  });

  it('28P01 password authentication failed', async () => {
    const port = await scriptedServer((socket) => {
      socket.end(
        errorResponse({
          S: 'FATAL',
          V: 'FATAL',
          C: '28P01',
          M: 'password authentication failed for user "u"',
        }),
      );
    });
    const err = await connectError(port);
    expect(classifyConnectError(err)).toBe('fatal');
    expect(isConnectionBroken(err)).toBe(true);
  });

  it('server without TLS answers N to SSLRequest', async () => {
    const port = await scriptedServer((socket) => socket.write('N'));
    const err = await connectError(port, { ssl: { rejectUnauthorized: false } });
    expect((err as Error).message).toBe('The server does not support SSL connections');
    expect(classifyConnectError(err)).toBe('fatal');
  });

  it('pg connectionTimeoutMillis against a silent server', async () => {
    const port = await scriptedServer(() => {});
    const err = await connectError(port, { connectionTimeoutMillis: 50 });
    expect((err as Error).message).toBe('timeout expired');
    expect(classifyConnectError(err)).toBe('transient');
    expect(isConnectionBroken(err)).toBe(true);
  });

  it('an ordinary SQL error leaves the connection usable', async () => {
    const client = await connected((socket) => {
      socket.write(
        Buffer.concat([
          errorResponse({
            S: 'ERROR',
            V: 'ERROR',
            C: '23505',
            M: 'duplicate key value violates unique constraint',
          }),
          readyForQuery,
        ]),
      );
    });
    const err = await queryError(client);
    expect(errorCode(err)).toBe('23505');
    expect(isConnectionBroken(err)).toBe(false);
    expect(provesNotRun(err)).toBe(false);
  });

  it('57P01 terminating connection due to administrator command', async () => {
    const client = await connected((socket) => {
      socket.end(
        errorResponse({
          S: 'FATAL',
          V: 'FATAL',
          C: '57P01',
          M: 'terminating connection due to administrator command',
        }),
      );
    });
    const ended = new Promise((resolve) => client.once('end', resolve));
    const err = await queryError(client);
    await ended;
    expect(errorCode(err)).toBe('57P01');
    expect(isConnectionBroken(err)).toBe(true);
    expect(provesNotRun(err)).toBe(true);
    // The client refuses further work without sending it.
    const next = await queryError(client);
    expect((next as Error).message).toBe('Client has encountered a connection error and is not queryable');
    expect(provesNotRun(next)).toBe(true);
    expect(isConnectionBroken(next)).toBe(true);
  });

  it('connection lost while the statement was in flight', async () => {
    const client = await connected((socket) => socket.destroy());
    const err = await queryError(client);
    expect((err as Error).message).toBe('Connection terminated unexpectedly');
    expect(isConnectionBroken(err)).toBe(true);
    expect(provesNotRun(err)).toBe(false);
  });

  it('query_timeout fires while the server is silent', async () => {
    const client = await connected(() => {}, { query_timeout: 30 });
    const err = await queryError(client);
    expect((err as Error).message).toBe('Query read timeout');
    expect(isConnectionBroken(err)).toBe(true);
    expect(provesNotRun(err)).toBe(false);
  });

  it('query after end()', async () => {
    const client = await connected(() => {});
    const ending = client.end();
    const err = await queryError(client);
    await ending;
    expect((err as Error).message).toBe('Client was closed and is not queryable');
    expect(provesNotRun(err)).toBe(true);
    expect(isConnectionBroken(err)).toBe(true);
  });
});
