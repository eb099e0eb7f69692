/**
 * Named pool configurations for the usual deployment stages, in the terms operators set through the
 * environment (kept size, overflow, wait timeout, recycle age, pre-ping). `poolConfigFromEnv` starts from
 * one of them and lets each explicitly set variable override its field.
 */
import { InvalidOptionError } from '../errors.js';
import type { PoolConfig } from '../pg/config.js';

/** The names accepted by `DB_PRESET` and by the `preset` option of `poolConfigFromEnv`. */
export type PresetName = 'development' | 'staging' | 'production';

export const PRESET_NAMES: readonly PresetName[] = ['development', 'staging', 'production'];

/** A preset in environment-variable terms; every duration is in seconds, as the variables take them. */
export interface PoolPreset {
  /** Kept connections (`DB_POOL_SIZE`). */
  poolSize: number;
  /** Burst connections on top of the kept ones (`DB_MAX_OVERFLOW`); `max` is `poolSize + maxOverflow`. */
  maxOverflow: number;
  /** Longest wait for a connection, in seconds (`DB_POOL_TIMEOUT`). */
  poolTimeoutSeconds: number;
  /** Connection age after which it is closed when next idle, in seconds; -1 disables (`DB_POOL_RECYCLE`). */
  recycleSeconds: number;
  /** Validate a connection that sat idle before handing it out (`DB_POOL_PRE_PING`). */
  prePing: boolean;
}

/**
 * - `development`: 2 kept + 3 overflow (5 at most): one developer, little concurrency.
 * - `staging`: 10 + 10 (20 per instance): production's topology at lower traffic.
 * - `production`: 20 + 20 (40 per instance), connections recycled after 30 minutes, inside the idle
 *   limits of managed databases and the firewalls in front of them.
 *
 * Every preset waits up to 30 s for a connection and validates connections that sat idle. Check
 * `instances × (poolSize + maxOverflow)` plus reserved slots against the server's `max_connections`
 * (`checkConnectionBudget`, `steadfast doctor`).
 */
export const presets: Readonly<Record<PresetName, Readonly<PoolPreset>>> = Object.freeze({
  development: Object.freeze({
    poolSize: 2,
    maxOverflow: 3,
    poolTimeoutSeconds: 30,
    recycleSeconds: 3600,
    prePing: true,
  }),
  staging: Object.freeze({
    poolSize: 10,
    maxOverflow: 10,
    poolTimeoutSeconds: 30,
    recycleSeconds: 3600,
    prePing: true,
  }),
  production: Object.freeze({
    poolSize: 20,
    maxOverflow: 20,
    poolTimeoutSeconds: 30,
    recycleSeconds: 1800,
    prePing: true,
  }),
});

/**
 * Translates a preset (or any {@link PoolPreset}) into pool options: `max = poolSize + maxOverflow`,
 * `acquireTimeoutMs`, `maxLifetimeMs` (0 when recycling is off) and, when pre-ping is off,
 * `validateAfterIdleMs: -1`. With pre-ping on, the pool's own validation default applies (connections
 * idle longer than 500 ms are checked with a round trip before they are handed out).
 */
export function presetConfig(preset: PresetName | PoolPreset): PoolConfig {
  if (typeof preset === 'string' && !Object.hasOwn(presets, preset)) {
    throw new InvalidOptionError(
      'preset',
      `got ${JSON.stringify(preset)}, expected one of ${PRESET_NAMES.map((n) => `"${n}"`).join(', ')}`,
    );
  }
  const p = typeof preset === 'string' ? presets[preset] : preset;
  const config: PoolConfig = {
    max: p.poolSize + p.maxOverflow,
    maxOverflow: p.maxOverflow,
    acquireTimeoutMs: p.poolTimeoutSeconds * 1000,
    maxLifetimeMs: p.recycleSeconds <= 0 ? 0 : p.recycleSeconds * 1000,
  };
  if (!p.prePing) config.validateAfterIdleMs = -1;
  return config;
}
