/**
 * The web demo, in process: its HTTP routes against its own PostgreSQL, and its dashboard in a real
 * browser (Debian's chromium driven by playwright-core; never a downloaded browser), which must show a
 * database restart as an outage of pg.Pool and the recovery of both pools.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWebDemo, type WebDemo } from '../../web/server.js';

const CHROMIUM = '/usr/bin/chromium';
const HAS_CHROMIUM = existsSync(CHROMIUM);
const SKIP_NOTE =
  `${CHROMIUM} is missing (install it with: ` +
  'apt-get install -y --no-install-recommends chromium fonts-liberation)';
if (!HAS_CHROMIUM) console.warn(`Skipping the dashboard's browser test: ${SKIP_NOTE}`);
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const RATE = 50;

let demo: WebDemo;

async function request(
  path: string,
  init?: RequestInit,
): Promise<{ status: number; body: any; text: string }> {
  const response = await fetch(new URL(path, demo.url), init);
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: response.status, body, text };
}

const json = (method: string, body: unknown): RequestInit => ({
  method,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

beforeAll(async () => {
  demo = await startWebDemo({ port: 0, rate: RATE });
});

afterAll(async () => {
  await demo?.close();
});

describe('web demo routes', () => {
  it('serves the server version through the steadfast pool', async () => {
    const { status, body } = await request('/pg_version');
    expect(status).toBe(200);
    expect(body.version).toMatch(/^\d+\.\d+/);
    expect(body.full).toMatch(/^PostgreSQL /);
  });

  it('answers /health/db with 200 and a readiness report', async () => {
    const { status, body } = await request('/health/db');
    expect(status).toBe(200);
    expect(body).toMatchObject({ status: 'ok', kind: 'readiness', pool: 'steadfast', breaker: 'closed' });
    expect(JSON.stringify(body)).not.toContain('password');
  });

  it('exposes Prometheus metrics with the steadfast series', async () => {
    const response = await fetch(new URL('/metrics', demo.url));
    expect(response.headers.get('content-type')).toContain('text/plain');
    const text = await response.text();
    expect(text).toMatch(/^steadfast_connections\{pool="steadfast",state="idle"\} \d+$/m);
    expect(text).toMatch(
      /^steadfast_operation_duration_seconds_count\{pool="steadfast",kind="query",outcome="ok"\} [1-9]/m,
    );
    expect(text).toContain('steadfast_breaker_state{pool="steadfast"} 0');
    expect(text).toMatch(/^web_demo_requests_total\{pool="pg",outcome="ok"\} [1-9]/m);
  });

  it('round-trips an item through the CRUD routes', async () => {
    const created = await request('/items', json('POST', { name: 'widget', quantity: 3 }));
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'widget', quantity: 3 });
    const id = created.body.id as number;

    expect((await request(`/items/${id}`)).body).toMatchObject({ id, name: 'widget', quantity: 3 });
    const updated = await request(`/items/${id}`, json('PUT', { quantity: 7 }));
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ id, name: 'widget', quantity: 7 });
    const list = await request('/items');
    expect(list.body.map((item: { id: number }) => item.id)).toContain(id);

    expect((await request(`/items/${id}`, { method: 'DELETE' })).status).toBe(204);
    expect((await request(`/items/${id}`)).status).toBe(404);
    expect((await request(`/items/${id}`, { method: 'DELETE' })).status).toBe(404);
    expect((await request('/items', json('POST', { quantity: 1 }))).status).toBe(400);
    expect((await request('/items/abc')).status).toBe(400);
  });

  it('serves the dashboard and a state with both pools', async () => {
    const page = await request('/');
    expect(page.status).toBe(200);
    expect(page.text).toContain('Restart database');
    const state = await request('/api/state');
    expect(state.status).toBe(200);
    expect(Object.keys(state.body.pools)).toEqual(['steadfast', 'pg']);
    // One sample per second, from the moment the demo started.
    await expect
      .poll(async () => (await request('/api/state')).body.pools.steadfast.series.length, { timeout: 5_000 })
      .toBeGreaterThan(0);
    expect(state.body.status).toMatchObject({ database: 'up', network: 'pass', rate: RATE });
  });

  it('answers the chaos controls', async () => {
    const restart = await request('/chaos/restart', { method: 'POST' });
    expect(restart.status).toBe(200);
    expect(restart.body.durationMs).toBeGreaterThan(0);
    expect((await request('/health/db')).status).toBe(200);

    const kill = await request('/chaos/kill-connections', { method: 'POST' });
    expect(kill.status).toBe(200);
    expect(kill.body.killed).toBeGreaterThan(0);

    expect((await request('/chaos/freeze?seconds=0.5', { method: 'POST' })).status).toBe(200);
    expect((await request('/chaos/stop?seconds=100', { method: 'POST' })).status).toBe(400);
    expect((await request('/chaos/stop?seconds=0.5', { method: 'POST' })).status).toBe(200);
    // A second stop while the first is still down is refused rather than queued.
    const again = await request('/chaos/stop?seconds=0.5', { method: 'POST' });
    expect(again.status).toBe(409);

    // The database comes back on its own; the steadfast pool's callers see it as a slow second at most.
    await expect
      .poll(async () => (await request('/api/state')).body.status, { timeout: 15_000, interval: 250 })
      .toMatchObject({ database: 'up', network: 'pass' });
    expect((await request('/health/db')).status).toBe(200);
  });
});

describe('dashboard in a real browser', () => {
  let browser: Browser | undefined;

  afterAll(async () => {
    await browser?.close();
  });

  const stat = async (page: Page, id: string) => Number(await page.getByTestId(id).textContent());

  it.skipIf(!HAS_CHROMIUM)(
    HAS_CHROMIUM
      ? 'shows the outage and the recovery after "Restart database"'
      : `shows the outage and the recovery (skipped: ${SKIP_NOTE})`,
    async () => {
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      });
      const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
      const pageErrors: string[] = [];
      page.on('pageerror', (error) => pageErrors.push(error.message));

      await page.goto(demo.url);
      await expect.poll(() => page.getByTestId('feed').textContent(), { timeout: 10_000 }).toBe('live');
      // The charts are drawn from real samples: several seconds of lines in every chart of both pools.
      for (const pool of ['steadfast', 'pg']) {
        for (const chart of ['connections', 'requests', 'latency']) {
          const svg = page.getByTestId(`${pool}-chart-${chart}`);
          await expect
            .poll(async () => Number(await svg.getAttribute('data-points')), { timeout: 15_000 })
            .toBeGreaterThanOrEqual(3);
          expect(await svg.locator('polyline, polygon').count()).toBeGreaterThan(0);
        }
      }
      await expect.poll(() => stat(page, 'steadfast-okRate'), { timeout: 5_000 }).toBeGreaterThan(0);
      // Some steady load on the charts before the outage, for the screenshot.
      await page.waitForTimeout(4_000);

      // The log already holds the HTTP tests' chaos: only entries that appear after the click count.
      const entries = (selector: string, text?: string) =>
        page.locator(`#events li${selector}`, text === undefined ? {} : { hasText: text }).count();
      const before = {
        pgFailed: await stat(page, 'pg-failed'),
        steadfastFailed: await stat(page, 'steadfast-failed'),
        restart: await entries('[data-source="chaos"]', 'Restart database: pg_ctl restart -m fast'),
        back: await entries('[data-source="chaos"]', 'Database is back after'),
        pgBad: await entries('[data-source="pg"][data-level="bad"]'),
        pgRecovered: await entries('[data-source="pg"][data-level="good"]', 'requests succeed again'),
      };
      await page.getByRole('button', { name: 'Restart database' }).click();

      // The outage: the restart in the event log, and pg.Pool's callers seeing failures.
      await expect
        .poll(() => entries('[data-source="chaos"]', 'Restart database: pg_ctl restart -m fast'), {
          timeout: 10_000,
        })
        .toBeGreaterThan(before.restart);
      await expect
        .poll(() => entries('[data-source="chaos"]', 'Database is back after'), { timeout: 15_000 })
        .toBeGreaterThan(before.back);
      await expect.poll(() => stat(page, 'pg-failed'), { timeout: 10_000 }).toBeGreaterThan(before.pgFailed);
      await expect
        .poll(() => entries('[data-source="pg"][data-level="bad"]'), { timeout: 5_000 })
        .toBeGreaterThan(before.pgBad);

      // The recovery: both pools' requests succeed again, at the full rate.
      await expect
        .poll(() => entries('[data-source="pg"][data-level="good"]', 'requests succeed again'), {
          timeout: 15_000,
        })
        .toBeGreaterThan(before.pgRecovered);
      const steadfastOk = await stat(page, 'steadfast-ok');
      await expect
        .poll(() => stat(page, 'steadfast-ok'), { timeout: 10_000 })
        .toBeGreaterThan(steadfastOk + RATE / 2);
      await expect
        .poll(() => stat(page, 'steadfast-okRate'), { timeout: 5_000 })
        .toBeGreaterThanOrEqual(RATE * 0.8);
      await expect.poll(() => page.getByTestId('db-state').textContent(), { timeout: 5_000 }).toBe('up');
      const steadfastFailed = (await stat(page, 'steadfast-failed')) - before.steadfastFailed;
      const pgFailed = (await stat(page, 'pg-failed')) - before.pgFailed;
      console.log(
        `restart from the dashboard: pg.Pool ${pgFailed} failed requests, steadfast ${steadfastFailed}`,
      );
      expect(pgFailed).toBeGreaterThan(steadfastFailed);

      // A few seconds of recovery on the charts, then the artifact.
      await page.waitForTimeout(5_000);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: `${ARTIFACTS}dashboard.png`, fullPage: true });
      expect(pageErrors).toEqual([]);
    },
  );
});
