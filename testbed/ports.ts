import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Lowest port {@link getFreeServerPort} picks: above the registered ports most local services use. */
const SERVER_PORT_FLOOR = 15_000;
/** Attempts {@link getFreeServerPort} makes before falling back to a kernel-chosen port. */
const SERVER_PORT_ATTEMPTS = 50;

/**
 * Finds a TCP port that is free on a loopback address right now.
 *
 * The kernel picks the port: a listener is bound to port 0, its assigned port is read back and the
 * listener is closed again. The port is only known to be free at that instant, so a caller that binds
 * it later must still be ready for `EADDRINUSE` (another process may take it in between).
 *
 * @param host - Address to probe; defaults to `'127.0.0.1'`, the address every test bed server uses.
 * @returns A port number in the kernel's ephemeral range.
 */
export function getFreePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    // The probe must never keep the process alive on its own.
    probe.unref();
    probe.once('error', reject);
    probe.listen({ host, port: 0, exclusive: true }, () => {
      const address = probe.address();
      if (address === null || typeof address === 'string') {
        probe.close();
        reject(new Error(`could not read the port assigned on ${host}`));
        return;
      }
      probe.close(() => resolve(address.port));
    });
  });
}

/**
 * The range the kernel draws local ports of outgoing connections from, as `[low, high]` (inclusive).
 * Read from `/proc/sys/net/ipv4/ip_local_port_range` on Linux; elsewhere the IANA range 49152-65535.
 */
export function ephemeralPortRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    if (Number.isInteger(low) && Number.isInteger(high)) return [low!, high!];
  } catch {
    // Not Linux.
  }
  return [49_152, 65_535];
}

/** Whether `port` can be listened on at `host` right now. */
function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.unref();
    probe.once('error', () => resolve(false));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

/**
 * Finds a free TCP port below the ephemeral range, for a server that will be stopped and started again
 * on the same port.
 *
 * A port from {@link getFreePort} lies in the ephemeral range, so while its server is down the kernel
 * may hand it to an outgoing connection (a client retrying through a proxy, say), and the restart then
 * fails with `EADDRINUSE` for as long as that connection (or its TIME_WAIT) lasts. Ports below the range
 * are never used that way. Like {@link getFreePort}, the port is only known to be free at that instant.
 *
 * @param host - Address to probe; default `'127.0.0.1'`.
 * @returns A port in `[15000, low end of the ephemeral range)`, or a {@link getFreePort} port if that
 *   range is empty or no free port was found in 50 random tries.
 */
export async function getFreeServerPort(host = '127.0.0.1'): Promise<number> {
  const [ephemeralLow] = ephemeralPortRange();
  const span = ephemeralLow - SERVER_PORT_FLOOR;
  if (span > 0) {
    for (let attempt = 0; attempt < SERVER_PORT_ATTEMPTS; attempt++) {
      const port = SERVER_PORT_FLOOR + Math.floor(Math.random() * span);
      if (await canListen(host, port)) return port;
    }
  }
  return getFreePort(host);
}
