/**
 * Throwaway TLS material for tests: certificate authorities and server certificates made with the
 * `openssl` command-line tool (Debian's `openssl` package), in a private temporary directory that is
 * removed when the process exits.
 *
 * - {@link createTlsMaterial} makes a CA, a server certificate it signs for `127.0.0.1` and `localhost`
 *   (CN and subjectAltName), and a second, unrelated CA (a client that trusts only that one must refuse
 *   the server).
 * - {@link TlsMaterial.issue} signs further server certificates, e.g. one for a host name the client does
 *   not connect to.
 * - {@link sharedTlsMaterial} is one set per process, for `PostgresServer.start({ tls: true })`.
 *
 * Keys are ECDSA P-256 (fast to make, accepted by PostgreSQL and Node). Every key file has mode 0600.
 * Directories of processes that died without their exit hook (killed by a signal) are removed by the next
 * process that makes material.
 * The `openssl` binary is taken from `STEADFAST_OPENSSL` when set, else from `PATH`.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';

/** A certificate authority: its self-signed certificate and its key. */
export interface CertificateAuthority {
  /** Common name of the CA, unique per CA. */
  name: string;
  /** PEM file of the CA certificate (what a client passes as `sslrootcert` / `ssl.ca`). */
  certFile: string;
  /** PEM file of the CA's private key (mode 0600). */
  keyFile: string;
  /** The CA certificate, PEM. */
  pem: string;
}

/** A server certificate and its key, as PostgreSQL's `ssl_cert_file` and `ssl_key_file` take them. */
export interface ServerCertificate {
  /** PEM file of the certificate. */
  certFile: string;
  /** PEM file of the private key (mode 0600). */
  keyFile: string;
  /** The certificate, PEM. */
  pem: string;
  /** Names the certificate is valid for (the first is its CN); IP addresses are IP SANs, others DNS SANs. */
  names: readonly string[];
  /** The CA that signed it. */
  issuer: CertificateAuthority;
}

/** A directory of TLS material made by {@link createTlsMaterial}. */
export interface TlsMaterial {
  /** The directory holding every file (mode 0700). */
  dir: string;
  /** The CA that signed {@link server}. */
  ca: CertificateAuthority;
  /** A CA that has nothing to do with {@link ca}: trusting only it must make verification fail. */
  otherCa: CertificateAuthority;
  /** Signed by {@link ca} for `127.0.0.1` (CN) and `localhost`. */
  server: ServerCertificate;
  /** Signs another server certificate with {@link ca} for `names` (the first becomes the CN). */
  issue(names: readonly string[]): Promise<ServerCertificate>;
  /** Removes the directory. Idempotent. */
  destroy(): Promise<void>;
}

/** Days the certificates are valid; they live as long as a test run. */
const VALID_DAYS = 7;
const DIR_PREFIX = 'steadfast-tls-';

/** File in each directory naming the process that owns it, so that leftovers of dead processes are reaped. */
const OWNER_MARKER = 'owner.json';

const directories = new Set<string>();
let exitHookInstalled = false;
let reaped: Promise<void> | undefined;
let shared: Promise<TlsMaterial> | undefined;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes directories left by processes of this host that died without running their exit hook (killed
 * by a signal, as test runners do with their workers).
 */
async function reapStale(): Promise<void> {
  const names = await readdir(tmpdir()).catch(() => [] as string[]);
  await Promise.all(
    names
      .filter((name) => name.startsWith(DIR_PREFIX))
      .map(async (name) => {
        const dir = join(tmpdir(), name);
        try {
          const owner = JSON.parse(await readFile(join(dir, OWNER_MARKER), 'utf8')) as {
            pid?: unknown;
            host?: unknown;
          };
          if (owner.host !== hostname() || typeof owner.pid !== 'number') return;
          if (owner.pid === process.pid || processAlive(owner.pid)) return;
          await rm(dir, { recursive: true, force: true });
        } catch {
          // No marker (being created, or not ours): left alone.
        }
      }),
  );
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const dir of directories) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // Nothing more can be done while the process exits.
      }
    }
  });
}

function openssl(args: readonly string[]): Promise<void> {
  const file = process.env.STEADFAST_OPENSSL || 'openssl';
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'ENOENT'
          ? new Error(
              `${file} not found: install the openssl command-line tool (Debian: apt-get install openssl) ` +
                'or set STEADFAST_OPENSSL to its path',
              { cause: error },
            )
          : error,
      );
    });
    child.once('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${file} ${args.join(' ')} exited with code ${code}:\n${output.trim()}`));
    });
  });
}

/** An `openssl req` configuration with the extensions of a CA and of a TLS server. */
function opensslConfig(commonName: string, names: readonly string[] = []): string {
  const ipPattern = /^(\d{1,3}\.){3}\d{1,3}$|:/;
  let ip = 0;
  let dns = 0;
  const alt = names.map((name) => (ipPattern.test(name) ? `IP.${++ip} = ${name}` : `DNS.${++dns} = ${name}`));
  return [
    '[req]',
    'distinguished_name = dn',
    'prompt = no',
    'utf8 = yes',
    '[dn]',
    'O = pg-steadfast test bed',
    `CN = ${commonName}`,
    '[v3_ca]',
    'basicConstraints = critical, CA:TRUE',
    'keyUsage = critical, keyCertSign, cRLSign',
    'subjectKeyIdentifier = hash',
    '[v3_server]',
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature, keyEncipherment',
    'extendedKeyUsage = serverAuth',
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid',
    ...(alt.length > 0 ? ['subjectAltName = @alt', '[alt]', ...alt] : []),
    '',
  ].join('\n');
}

const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function serial(): string {
  // Positive (leading 1), 121 random bits: no two certificates of a run share a serial.
  return `0x1${randomBytes(15).toString('hex')}`;
}

async function makeCa(dir: string, label: string): Promise<CertificateAuthority> {
  const name = `steadfast test ${label} ${randomBytes(4).toString('hex')}`;
  const config = join(dir, `${label}.cnf`);
  const certFile = join(dir, `${label}.crt`);
  const keyFile = join(dir, `${label}.key`);
  await writeFile(config, opensslConfig(name));
  await openssl([
    'req',
    '-x509',
    '-config',
    config,
    '-extensions',
    'v3_ca',
    ...NEW_KEY,
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    String(VALID_DAYS),
    '-sha256',
    '-set_serial',
    serial(),
  ]);
  await chmod(keyFile, 0o600);
  return { name, certFile, keyFile, pem: await readFile(certFile, 'utf8') };
}

let issued = 0;

async function issueServer(
  dir: string,
  ca: CertificateAuthority,
  names: readonly string[],
): Promise<ServerCertificate> {
  if (names.length === 0) throw new Error('a server certificate needs at least one name');
  for (const name of names) {
    if (!/^[A-Za-z0-9.:-]+$/.test(name)) throw new Error(`invalid certificate name: ${JSON.stringify(name)}`);
  }
  const base = join(dir, `server-${++issued}`);
  const config = `${base}.cnf`;
  const request = `${base}.csr`;
  const certFile = `${base}.crt`;
  const keyFile = `${base}.key`;
  await writeFile(config, opensslConfig(names[0]!, names));
  await openssl(['req', '-new', '-config', config, ...NEW_KEY, '-keyout', keyFile, '-out', request]);
  await chmod(keyFile, 0o600);
  await openssl([
    'x509',
    '-req',
    '-in',
    request,
    '-CA',
    ca.certFile,
    '-CAkey',
    ca.keyFile,
    '-set_serial',
    serial(),
    '-days',
    String(VALID_DAYS),
    '-sha256',
    '-extfile',
    config,
    '-extensions',
    'v3_server',
    '-out',
    certFile,
  ]);
  return { certFile, keyFile, pem: await readFile(certFile, 'utf8'), names: [...names], issuer: ca };
}

/**
 * Makes a fresh CA, a server certificate it signs for `127.0.0.1` and `localhost`, and an unrelated
 * second CA, in a new private directory under `os.tmpdir()`. Takes well under a second.
 *
 * @throws If `openssl` is missing or fails (the message includes its output).
 */
export async function createTlsMaterial(): Promise<TlsMaterial> {
  installExitHook();
  reaped ??= reapStale();
  await reaped;
  const dir = await mkdtemp(join(tmpdir(), DIR_PREFIX));
  directories.add(dir);
  try {
    await writeFile(join(dir, OWNER_MARKER), JSON.stringify({ pid: process.pid, host: hostname() }));
    const [ca, otherCa] = await Promise.all([makeCa(dir, 'ca'), makeCa(dir, 'other-ca')]);
    const server = await issueServer(dir, ca, ['127.0.0.1', 'localhost']);
    let destroyed: Promise<void> | undefined;
    return {
      dir,
      ca,
      otherCa,
      server,
      issue: (names) => issueServer(dir, ca, names),
      destroy: () => {
        destroyed ??= rm(dir, { recursive: true, force: true }).then(() => {
          directories.delete(dir);
        });
        return destroyed;
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    directories.delete(dir);
    throw error;
  }
}

/** One {@link TlsMaterial} per process, made on first use and removed at exit. */
export function sharedTlsMaterial(): Promise<TlsMaterial> {
  shared ??= createTlsMaterial().catch((error: unknown) => {
    shared = undefined;
    throw error;
  });
  return shared;
}
