import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { ephemeralPortRange, getFreePort, getFreeServerPort } from '../../testbed/ports.js';

/** Listens on `port` at 127.0.0.1 and closes again; rejects if the port cannot be bound. */
function bindOnce(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve()));
  });
}

describe('ports', () => {
  it('ephemeralPortRange() is a sane, ordered range', () => {
    const [low, high] = ephemeralPortRange();
    expect(low).toBeGreaterThan(1023);
    expect(high).toBeGreaterThanOrEqual(low);
    expect(high).toBeLessThanOrEqual(65_535);
  });

  it('getFreePort() returns a kernel-chosen port that can be bound', async () => {
    const port = await getFreePort();
    const [low, high] = ephemeralPortRange();
    expect(port).toBeGreaterThanOrEqual(low);
    expect(port).toBeLessThanOrEqual(high);
    await bindOnce(port);
  });

  it('getFreeServerPort() returns a bindable port below the ephemeral range', async () => {
    const ports = await Promise.all(Array.from({ length: 5 }, () => getFreeServerPort()));
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(15_000);
      expect(port).toBeLessThan(ephemeralPortRange()[0]);
      await bindOnce(port);
    }
  });
});
