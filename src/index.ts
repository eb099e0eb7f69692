/**
 * pg-steadfast: a fault-tolerant, observable PostgreSQL connection pool that is a drop-in `pg.Pool`.
 */

export {
  type ConnectionStringInfo,
  checkConnectionString,
  type EnvConfigOptions,
  parseConnectionString,
  poolConfigFromEnv,
  redactConnectionString,
} from './config/env.js';
export { type PoolPreset, PRESET_NAMES, type PresetName, presetConfig, presets } from './config/presets.js';
export type { Clock } from './engine/clock.js';
export type { ConnectContext, Driver } from './engine/driver.js';
export { TypedEmitter } from './engine/emitter.js';
export type {
  AcquireOptions,
  EngineCounters,
  EngineEvents,
  EngineStats,
  EvictReason,
  Priority,
  ReleaseOptions,
  SlotState,
} from './engine/engine.js';
export { Engine, Lease } from './engine/engine.js';
export type { EngineOptions } from './engine/options.js';
export { engineDefaults } from './engine/options.js';
export * from './errors.js';
export { consoleLogger, type Logger, type LogLevel } from './observability/logger.js';
export {
  type ApplicationConnections,
  type DoctorOptions,
  type DoctorProblem,
  type DoctorReport,
  doctor,
  formatDoctorReport,
  type ProblemSeverity,
  type SessionInfo,
} from './ops/doctor.js';
export {
  fastifyHealthHandler,
  type HealthOptions,
  type HealthReport,
  httpHealthHandler,
} from './ops/health.js';
export { installGracefulShutdown, type ShutdownOptions } from './ops/shutdown.js';
export {
  type BudgetCheckOptions,
  type ConnectionBudget,
  type ConnectionBudgetCheck,
  type ConnectionBudgetInput,
  checkConnectionBudget,
  connectionBudget,
  connectionLimitProblems,
  type HikariSizeInput,
  hikariSize,
  type LittleSizeInput,
  littleSize,
  type PodPoolSizeInput,
  perInstance,
  podPoolSize,
  readServerLimits,
  type ServerConnectionLimits,
} from './ops/sizing.js';
export type { PoolConfig, SteadfastOptions } from './pg/config.js';
export type { LeakEvents } from './pg/leaks.js';
export type { HostRole, PoolLifecycleEvents, Topology } from './pg/lifecycle.js';
export { CHANNEL_PREFIX } from './pg/lifecycle.js';
export type { PgBouncerOptions } from './pg/pgbouncer.js';
export type { CallOptions, PoolClient, PoolEventPayloads, QueryConfig } from './pg/pool.js';
export { Pool } from './pg/pool.js';
export type { IsolationLevel, TransactionClient, TransactionOptions } from './pg/transaction.js';
export type {
  BreakerOptions,
  BreakerSnapshot,
  BreakerState,
  BreakerStateChange,
} from './resilience/breaker.js';
export {
  classifyConnectError,
  errorCode,
  errorLabel,
  isConnectionBroken,
  isReadOnlyFailover,
  isTransactionRetryable,
  provesNotRun,
} from './resilience/classify.js';
export type { RateLimitOptions } from './resilience/rate-limit.js';
export {
  Cluster,
  type ClusterCallOptions,
  type ClusterOptions,
  NoReplicaError,
  type ReadStrategy,
  type Role,
} from './topology/cluster.js';
export type { HostAddress, LoadBalanceHosts, TargetSessionAttrs } from './topology/hosts.js';
export { PoolRegistry } from './topology/registry.js';
