/**
 * PostgreSQL's CancelRequest: asks the server, over a separate short-lived connection, to cancel the
 * statement a session is running. The server answers nothing and closes the connection; success shows
 * only as the statement failing with 57014 query_canceled on its own connection.
 * https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-CANCELING-REQUESTS
 */
import { connect } from 'node:net';
import type pg from 'pg';

/** The request code of a CancelRequest packet: 1234 in the high 16 bits, 5678 in the low. */
const CANCEL_REQUEST_CODE = 80877102;

interface CancelTarget {
  host?: string;
  port?: number;
  processID?: number | null;
  secretKey?: number | null;
}

/**
 * Sends a CancelRequest for the statement `client` is running. Resolves true once the request was
 * delivered (the server closed the cancel connection), false when it could not be delivered within
 * `timeoutMs` (e.g. the network path is frozen). Never rejects.
 */
export function sendCancelRequest(client: pg.Client, timeoutMs: number): Promise<boolean> {
  const target = client as unknown as CancelTarget;
  const { processID, secretKey } = target;
  if (typeof processID !== 'number' || typeof secretKey !== 'number') return Promise.resolve(false);
  const port = target.port ?? 5432;
  const host = target.host ?? 'localhost';
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  packet.writeInt32BE(processID, 8);
  packet.writeInt32BE(secretKey, 12);
  return new Promise((resolve) => {
    // A host starting with '/' is a Unix socket directory, as in libpq and pg.
    const socket = host.startsWith('/') ? connect(`${host}/.s.PGSQL.${port}`) : connect(port, host);
    let delivered = false;
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    timer.unref();
    socket.on('connect', () => socket.end(packet));
    // The server reads the request and hangs up: only that proves it arrived. A write that merely left
    // this machine proves nothing on a frozen path.
    socket.on('end', () => {
      delivered = true;
    });
    socket.resume();
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(delivered);
    });
  });
}
