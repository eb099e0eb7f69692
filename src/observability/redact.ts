/**
 * Keeps secrets out of everything the pool prints: log lines, health payloads, error texts it builds.
 */

/** `scheme://user:password@host` → `scheme://user:***@host`, for any URL-shaped text. */
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/\s]*)@/gi;
/** `password=secret` in a libpq key/value string or a query string. */
const PASSWORD_PAIR = /(password\s*=\s*)('[^']*'|[^\s&]+)/gi;

export type Redactor = (text: string) => string;

/**
 * A redactor for the given secrets (the pool's password, if it is a string) plus the generic patterns.
 * Secrets shorter than 4 characters are still replaced: a short password is still a password.
 */
export function createRedactor(secrets: readonly (string | undefined)[]): Redactor {
  const known = secrets.filter((s): s is string => typeof s === 'string' && s.length > 0);
  return (text) => {
    let out = text.replace(URL_CREDENTIALS, '$1:***@').replace(PASSWORD_PAIR, '$1***');
    for (const secret of known) out = out.split(secret).join('***');
    return out;
  };
}

/** The password in a connection string, if any, so it can be redacted even when it is not in `password`. */
export function passwordOf(connectionString: unknown): string | undefined {
  if (typeof connectionString !== 'string') return undefined;
  try {
    const password = new URL(connectionString).password;
    return password ? decodeURIComponent(password) : undefined;
  } catch {
    const match = /:\/\/[^:/@\s]*:([^@\s]*)@/.exec(connectionString);
    return match?.[1];
  }
}
