/**
 * Multi-host connection settings, libpq style: several hosts in one connection string
 * (`postgres://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write&load_balance_hosts=random`) or a
 * `hosts` list, with `target_session_attrs` and `load_balance_hosts`. pg cannot parse such a string
 * (`new URL` throws); this module splits it into one ordinary connection string per host, which pg
 * then parses as usual (TLS settings and all).
 * https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-MULTIPLE-HOSTS
 */
import { show } from '../config/validate.js';
import { InvalidOptionError } from '../errors.js';

export type TargetSessionAttrs =
  | 'any'
  | 'read-write'
  | 'read-only'
  | 'primary'
  | 'standby'
  | 'prefer-standby';
export const TARGET_SESSION_ATTRS: readonly TargetSessionAttrs[] = [
  'any',
  'read-write',
  'read-only',
  'primary',
  'standby',
  'prefer-standby',
];
export type LoadBalanceHosts = 'disable' | 'random';

export interface HostAddress {
  host: string;
  port?: number;
}

export interface HostPlan {
  /** One client config overlay per host, in the order to try them (unless load balancing shuffles them). */
  hosts: { host: string; port: number; connectionString?: string }[];
  targetSessionAttrs: TargetSessionAttrs;
  loadBalanceHosts: LoadBalanceHosts;
}

const DEFAULT_PORT = 5432;

function redacted(url: string): string {
  return url.replace(/(:\/\/[^:/@]*):[^@/]*@/, '$1:***@');
}

function parseTarget(value: unknown, source: string): TargetSessionAttrs {
  if (value === undefined || value === null || value === '') return 'any';
  if (typeof value !== 'string' || !TARGET_SESSION_ATTRS.includes(value as TargetSessionAttrs)) {
    throw new InvalidOptionError(
      source,
      `got ${show(value)}, expected one of ${TARGET_SESSION_ATTRS.map((t) => `"${t}"`).join(', ')}`,
    );
  }
  return value as TargetSessionAttrs;
}

function parseBalance(value: unknown, source: string): LoadBalanceHosts {
  if (value === undefined || value === null || value === '') return 'disable';
  if (value !== 'disable' && value !== 'random') {
    throw new InvalidOptionError(source, `got ${show(value)}, expected "disable" or "random"`);
  }
  return value;
}

/**
 * `"host"`, `"host:port"`, `"[ipv6]"`, `"[ipv6]:port"`, or a bare IPv6 address (more than one colon, no
 * port). A port that is present but not a number comes back as NaN, for the caller to refuse.
 */
function splitHostPort(entry: string): { host: string; port: number | undefined } {
  const toPort = (text: string | undefined) => (text === undefined || text === '' ? undefined : Number(text));
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(entry);
  if (bracketed) return { host: bracketed[1]!, port: toPort(bracketed[2]) };
  const colon = entry.indexOf(':');
  if (colon < 0 || entry.indexOf(':', colon + 1) >= 0) return { host: entry, port: undefined };
  return { host: entry.slice(0, colon), port: toPort(entry.slice(colon + 1)) };
}

/**
 * Splits `postgres://user:pass@h1:p1,h2:p2/db?params` into one URL per host, removing the multi-host
 * parameters (pg would otherwise pass them on). Returns undefined for a single-host string: pg handles it.
 */
function splitConnectionString(
  connectionString: string,
): { urls: { host: string; port: number; url: string }[]; target?: string; balance?: string } | undefined {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*@)?([^/?#]*)(.*)$/i.exec(connectionString);
  if (!match) return undefined;
  const [, scheme, userinfo = '', hostList = '', rest = ''] = match;
  const [path = '', query = ''] = rest.split('?', 2) as [string, string?];
  const params = new URLSearchParams(query);
  const target = params.get('target_session_attrs') ?? undefined;
  const balance = params.get('load_balance_hosts') ?? undefined;
  if (!hostList.includes(',') && target === undefined && balance === undefined) return undefined;
  params.delete('target_session_attrs');
  params.delete('load_balance_hosts');
  const remaining = params.toString();
  const suffix = `${path}${remaining ? `?${remaining}` : ''}`;
  const urls = hostList.split(',').map((entry) => {
    const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
    const [host, port] = bracketed
      ? [bracketed[1]!, bracketed[2]]
      : (entry.split(':', 2) as [string, string | undefined]);
    if (!host) {
      throw new InvalidOptionError('connectionString', `an empty host in ${redacted(connectionString)}`);
    }
    const portNumber = port === undefined || port === '' ? DEFAULT_PORT : Number(port);
    if (!Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65_535) {
      throw new InvalidOptionError(
        'connectionString',
        `bad port ${JSON.stringify(port)} in ${redacted(connectionString)}`,
      );
    }
    const hostPart = host.includes(':') ? `[${host}]` : host;
    return { host, port: portNumber, url: `${scheme}${userinfo}${hostPart}:${portNumber}${suffix}` };
  });
  return { urls, ...(target === undefined ? {} : { target }), ...(balance === undefined ? {} : { balance }) };
}

/** `connectionString` pointed at one host, without the multi-host parameters. */
function withHost(connectionString: string, host: string, port: number): string {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*@)?([^/?#]*)(.*)$/i.exec(connectionString);
  if (!match) return connectionString;
  const [, scheme, userinfo = '', , rest = ''] = match;
  const [path = '', query = ''] = rest.split('?', 2) as [string, string?];
  const params = new URLSearchParams(query);
  params.delete('target_session_attrs');
  params.delete('load_balance_hosts');
  const remaining = params.toString();
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return `${scheme}${userinfo}${hostPart}:${port}${path}${remaining ? `?${remaining}` : ''}`;
}

/**
 * The hosts to try, from `hosts` / `connectionString` / `host`+`port`, with the session attributes. A
 * single host with no attributes gives a plan of one entry and 'any'.
 */
export function planHosts(config: {
  connectionString?: string;
  host?: string;
  port?: number;
  hosts?: (string | HostAddress)[];
  targetSessionAttrs?: TargetSessionAttrs;
  loadBalanceHosts?: LoadBalanceHosts;
}): HostPlan | undefined {
  const split =
    typeof config.connectionString === 'string' ? splitConnectionString(config.connectionString) : undefined;
  let hosts: HostPlan['hosts'];
  if (config.hosts !== undefined) {
    if (!Array.isArray(config.hosts) || config.hosts.length === 0) {
      throw new InvalidOptionError(
        'hosts',
        `got ${Array.isArray(config.hosts) ? '[]' : show(config.hosts)}, expected a non-empty array of "host:port" strings or { host, port }`,
      );
    }
    hosts = config.hosts.map((entry, i) => {
      const { host, port } = typeof entry === 'string' ? splitHostPort(entry) : (entry ?? {});
      if (typeof host !== 'string' || host === '') {
        throw new InvalidOptionError(
          `hosts[${i}]`,
          `got ${show(entry)}, expected "host", "host:port", "[ipv6]:port" or { host, port }`,
        );
      }
      const p = port ?? config.port ?? DEFAULT_PORT;
      if (!Number.isInteger(p) || p < 1 || p > 65_535) {
        throw new InvalidOptionError(
          `hosts[${i}]`,
          `got ${show(entry)}, whose port ${show(port)} is not an integer from 1 to 65535`,
        );
      }
      return { host, port: p };
    });
    if (typeof config.connectionString === 'string') {
      // Everything else (user, database, TLS settings) still comes from the connection string.
      const base = config.connectionString;
      hosts = hosts.map((h) => ({ ...h, connectionString: withHost(base, h.host, h.port) }));
    }
  } else if (split !== undefined) {
    hosts = split.urls.map(({ host, port, url }) => ({ host, port, connectionString: url }));
  } else {
    return config.targetSessionAttrs || config.loadBalanceHosts
      ? {
          hosts: [{ host: config.host ?? 'localhost', port: config.port ?? DEFAULT_PORT }],
          targetSessionAttrs: parseTarget(config.targetSessionAttrs, 'targetSessionAttrs'),
          loadBalanceHosts: parseBalance(config.loadBalanceHosts, 'loadBalanceHosts'),
        }
      : undefined;
  }
  return {
    hosts,
    targetSessionAttrs: parseTarget(config.targetSessionAttrs ?? split?.target, 'targetSessionAttrs'),
    loadBalanceHosts: parseBalance(config.loadBalanceHosts ?? split?.balance, 'loadBalanceHosts'),
  };
}

/** The order to try the hosts in for one connection attempt. */
export function hostOrder<T>(
  hosts: readonly T[],
  balance: LoadBalanceHosts,
  random: () => number = Math.random,
): T[] {
  const order = [...hosts];
  if (balance === 'random') {
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
  }
  return order;
}

/** What the server says about itself, for target_session_attrs. */
export interface SessionState {
  readOnly: boolean;
  inRecovery: boolean;
}

/** Whether a server in `state` satisfies `target` (prefer-standby is handled by the caller's second pass). */
export function satisfies(target: TargetSessionAttrs, state: SessionState): boolean {
  switch (target) {
    case 'any':
    case 'prefer-standby':
      return true;
    case 'read-write':
      return !state.readOnly;
    case 'read-only':
      return state.readOnly;
    case 'primary':
      return !state.inRecovery;
    case 'standby':
      return state.inRecovery;
  }
}
