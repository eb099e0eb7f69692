/**
 * Safety checks for running behind PgBouncer in transaction pooling mode, where consecutive
 * transactions of one client may run on different server connections: any session state a statement
 * leaves behind lands on some other client's session. https://www.pgbouncer.org/features.html
 */
import { InvalidOptionError } from '../errors.js';

export interface PgBouncerOptions {
  /**
   * Allow named (protocol-level) prepared statements: PgBouncer 1.21+ tracks them when
   * `max_prepared_statements` > 0. Default false.
   */
  preparedStatements?: boolean;
}

/** Statements that leave session state behind: SET (not SET LOCAL), RESET, LISTEN, SQL PREPARE, session advisory locks, temp tables. */
const SESSION_STATE =
  /^\s*(?:SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b)|RESET\s|LISTEN\s|PREPARE\s|CREATE\s+(?:GLOBAL\s+|LOCAL\s+)?TEMP(?:ORARY)?\s)|pg_advisory_lock\s*\(/i;

export class PgBouncerGuard {
  readonly #preparedStatements: boolean;

  constructor(options: PgBouncerOptions | true) {
    this.#preparedStatements = options !== true && options.preparedStatements === true;
  }

  /** Throws `InvalidOptionError` for a statement that is unsafe in transaction pooling. */
  check(config: unknown): void {
    const text = typeof config === 'string' ? config : (config as { text?: unknown } | null)?.text;
    const name =
      typeof config === 'object' && config !== null ? (config as { name?: unknown }).name : undefined;
    if (name !== undefined && !this.#preparedStatements) {
      throw new InvalidOptionError(
        'name',
        'named prepared statements are not safe behind PgBouncer in transaction mode; with PgBouncer 1.21+ and max_prepared_statements > 0, set pgbouncer: { preparedStatements: true }',
      );
    }
    if (typeof text === 'string' && SESSION_STATE.test(text)) {
      throw new InvalidOptionError(
        'text',
        'this statement leaves session state behind, which PgBouncer in transaction mode hands to other clients; use SET LOCAL inside pool.transaction(), or connection options',
      );
    }
  }
}
