/**
 * Short, stable labels for the errors callers see, so that failures can be counted by kind.
 */

/** SQLSTATEs and driver messages the demo's faults produce, with a few words on each. */
const SQLSTATE_NAMES: Record<string, string> = {
  '57P01': 'admin_shutdown',
  '57P02': 'crash_shutdown',
  '57P03': 'cannot_connect_now',
  '53300': 'too_many_connections',
  '23505': 'unique_violation',
  '08000': 'connection_exception',
  '08001': 'sqlclient_unable_to_establish_sqlconnection',
  '08003': 'connection_does_not_exist',
  '08006': 'connection_failure',
  '25P02': 'in_failed_sql_transaction',
};

/** What a label means, for the notes under the final table. */
const EXPLANATIONS: Array<[RegExp, string]> = [
  [
    /^ERR_STEADFAST_OUTCOME_UNKNOWN/,
    'the connection died after a write was sent; not re-sent, as it may have run',
  ],
  [/^ERR_STEADFAST_ACQUIRE_TIMEOUT/, 'no connection could be had before the acquire deadline'],
  [/^ERR_STEADFAST_TIMEOUT/, "the call's own deadline passed"],
  [/^ERR_STEADFAST_/, 'an error raised by the steadfast pool'],
  [/^57P01/, 'the server ended the session (fast shutdown or pg_terminate_backend)'],
  [/^57P02/, 'the server ended the session because another server process crashed'],
  [/^57P03/, 'the server is starting up or shutting down'],
  [/^23505/, 'the same id was inserted twice: a write was re-sent after it had run'],
  [/^ECONNREFUSED/, 'nothing listens on the port: the server is down'],
  [/^ECONNRESET|^EPIPE/, 'the TCP connection was cut'],
  [/^Connection terminated/, 'the server closed the connection while the query ran or waited'],
  [/not queryable/, 'the client was already broken by an earlier error when the query was sent'],
  [/^UNSETTLED/, 'the request had not finished when the demo stopped waiting'],
];

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code !== '' ? code : undefined;
}

function messageOf(error: unknown): string {
  const message = (error as { message?: unknown } | null)?.message;
  return typeof message === 'string' ? message : String(error);
}

/**
 * A label for one failure: `ERR_STEADFAST_OUTCOME_UNKNOWN (cause 57P01 admin_shutdown)`,
 * `57P01 admin_shutdown`, `ECONNREFUSED`, or the first words of the message when there is no code.
 */
export function failureLabel(error: unknown): string {
  if (error instanceof LabelledFailure) return error.code;
  const code = codeOf(error);
  if (code?.startsWith('ERR_STEADFAST_')) {
    const cause = (error as { cause?: unknown }).cause;
    return cause === undefined ? code : `${code} (cause ${failureLabel(cause)})`;
  }
  if (code !== undefined) {
    const name = SQLSTATE_NAMES[code];
    return name ? `${code} ${name}` : code;
  }
  const message = messageOf(error).split('\n', 1)[0]!.replace(/\s+/g, ' ').trim();
  return message.length > 60 ? `${message.slice(0, 57)}...` : message || 'unknown';
}

/** One line on what a label means, if known. */
export function explainLabel(label: string): string | undefined {
  return EXPLANATIONS.find(([pattern]) => pattern.test(label))?.[1];
}

/** A rejection whose `code` is the failure's label, so that the load report groups by it. */
export class LabelledFailure extends Error {
  readonly code: string;

  constructor(error: unknown) {
    const label = failureLabel(error);
    super(label, { cause: error });
    this.name = 'LabelledFailure';
    this.code = label;
  }
}

/** Runs `work`, turning a rejection into a {@link LabelledFailure}. */
export async function labelled<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw new LabelledFailure(error);
  }
}
