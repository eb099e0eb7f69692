/**
 * Many databases (seed 004's `DatabasePool`): named pools created from config, each with its own
 * options, looked up by name, checked and closed together.
 */
import { suggest } from '../config/validate.js';
import { InvalidOptionError } from '../errors.js';
import type { HealthOptions, HealthReport } from '../ops/health.js';
import type { PoolConfig } from '../pg/config.js';
import { Pool } from '../pg/pool.js';

export class PoolRegistry {
  readonly #pools = new Map<string, Pool>();

  /** Creates a pool per entry: `new PoolRegistry({ orders: { connectionString: ... }, reports: {...} })`. */
  constructor(config: Record<string, PoolConfig> = {}) {
    for (const [name, options] of Object.entries(config)) this.add(name, options);
  }

  /** Adds a pool (or creates one from config, named `name` in metrics unless it has its own `poolName`). */
  add(name: string, poolOrConfig: Pool | PoolConfig): Pool {
    if (typeof name !== 'string' || name === '')
      throw new InvalidOptionError('name', 'expected a non-empty string');
    if (this.#pools.has(name))
      throw new InvalidOptionError(name, 'a pool with this name is already registered');
    const pool = poolOrConfig instanceof Pool ? poolOrConfig : new Pool({ poolName: name, ...poolOrConfig });
    this.#pools.set(name, pool);
    return pool;
  }

  /** The pool registered as `name`; an unknown name throws with a did-you-mean. */
  get(name: string): Pool {
    const pool = this.#pools.get(name);
    if (pool === undefined) {
      const hint = suggest(name, this.#pools.keys());
      throw new InvalidOptionError(name, `no pool with this name${hint ? `; did you mean "${hint}"?` : ''}`);
    }
    return pool;
  }

  has(name: string): boolean {
    return this.#pools.has(name);
  }

  names(): string[] {
    return [...this.#pools.keys()];
  }

  /** Health of every pool, checked in parallel. */
  async health(options?: HealthOptions): Promise<Record<string, HealthReport>> {
    const entries = await Promise.all(
      [...this.#pools].map(async ([name, pool]) => [name, await pool.health(options)] as const),
    );
    return Object.fromEntries(entries);
  }

  /** Closes every pool (in parallel); `drain: true` lets callers already waiting finish first. */
  async closeAll(options?: { timeoutMs?: number; drain?: boolean }): Promise<void> {
    await Promise.all([...this.#pools.values()].map((pool) => pool.close(options)));
  }
}
