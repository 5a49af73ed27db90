/**
 * The persistent store: users, API keys and worker tokens, workers, the telemetry
 * tables (heartbeats, daily statistics) and the request log of shared keys. Two adapters: SQLite (embedded default, a file in
 * the data dir) and PostgreSQL (`--database-url`). Every method takes and returns plain
 * values; adapters use prepared/parameterised statements only.
 */

/** What a key is for: a user's API key, or a worker token issued to a user. */
export type KeyKind = 'api' | 'worker'

/** Shared keys' requests are logged for tracking; dedicated keys only reach the listed workers. */
export type AccessLevel = 'shared' | 'dedicated'

/**
 * What an API key may do beyond inference (schema v4):
 * - `inference`: the public API only (the default);
 * - `read`: also read the management API, limited to its own user's workers, keys and usage;
 * - `manage`: `read`, and create, revoke and rotate its own user's keys.
 */
export type KeyScope = 'inference' | 'read' | 'manage'

export const KEY_SCOPES: readonly KeyScope[] = ['inference', 'read', 'manage']

/** A worker's state as an operator sets it (the original's `client_status`; schema v4). */
export type WorkerClientStatus = 'active' | 'online' | 'offline' | 'maintenance' | 'error'

export const WORKER_CLIENT_STATUSES: readonly WorkerClientStatus[] = [
  'active',
  'online',
  'offline',
  'maintenance',
  'error',
]

export interface UserRecord {
  readonly id: string
  readonly name: string
  readonly createdAt: Date
}

/** A stored key. The key itself is never stored: only `prefix` (public, for lookup) and `hash`. */
export interface KeyRecord {
  /** Public id, e.g. `key_3f9a…`; what `keys list/revoke` show and take. */
  readonly id: string
  /** Public lookup prefix, unique; part of the key the user holds. */
  readonly prefix: string
  /** SHA-256 of the whole key, hex. */
  readonly hash: string
  readonly kind: KeyKind
  readonly userId: string
  readonly name: string | null
  readonly accessLevel: AccessLevel
  /** What the key may do beyond inference (schema v4; keys made before it are `inference`). */
  readonly scope: KeyScope
  /** For dedicated keys: client ids of the workers its requests may go to. */
  readonly workerIds: readonly string[]
  /** Model allow-list; null = every model. */
  readonly models: readonly string[] | null
  /** Requests per minute; null = unlimited. */
  readonly rpmLimit: number | null
  /** Tokens per minute; null = unlimited. */
  readonly tpmLimit: number | null
  readonly expiresAt: Date | null
  readonly revokedAt: Date | null
  readonly createdAt: Date
}

/** Fields given when creating a key (id and createdAt are set by the store). */
/** What `updateKey` may change. */
export type KeyChanges = Partial<Pick<KeyRecord, 'name' | 'models' | 'rpmLimit' | 'tpmLimit' | 'expiresAt'>>

export type NewKey = Omit<KeyRecord, 'id' | 'createdAt' | 'revokedAt' | 'scope'> & {
  readonly id?: string
  /** @default 'inference' */
  readonly scope?: KeyScope | undefined
}

/** A worker as registered: the seed's clients / gpu_assets. */
export interface WorkerRecord {
  readonly clientId: string
  readonly userId: string
  readonly name: string | null
  readonly status: 'online' | 'offline'
  readonly os: string | null
  readonly hostname: string | null
  readonly engineType: string | null
  /** False when an operator has disabled the worker. */
  readonly valid: boolean
  /** Set by an operator (`edit_client_info`, `insert_client`); null when never set. */
  readonly clientStatus: WorkerClientStatus | null
  readonly models: readonly string[]
  readonly firstSeenAt: Date
  readonly lastSeenAt: Date
}

/** Result of claiming a client id for a user. */
export type ClaimResult = 'created' | 'owned' | 'taken'

/** One heartbeat row (raw telemetry). */
export interface HeartbeatRecord {
  /** The bus message's id (null for rows written before schema v3). */
  readonly msgId: string | null
  readonly clientId: string
  readonly at: Date
  readonly cpuPercent: number | null
  readonly memUsedBytes: number | null
  readonly memTotalBytes: number | null
  readonly memPercent: number | null
  readonly diskPercent: number | null
  /** Network bytes received / sent since the worker's previous heartbeat. */
  readonly netInBytes: number | null
  readonly netOutBytes: number | null
  readonly inflight: number
  /** The whole report (GPUs, network counters, models…), as JSON. */
  readonly extra: Record<string, unknown>
}

/** The store. Methods reject with a retryable FabricError (GPUF_STORE_UNAVAILABLE) when the database is down. */
export interface Store {
  /** `sqlite` or `postgres`. */
  readonly kind: 'sqlite' | 'postgres'
  /** Applies pending migrations; resolves with the versions applied now (empty when up to date). */
  migrate(): Promise<number[]>
  /** The schema version in the database. */
  schemaVersion(): Promise<number>

  createUser(name: string): Promise<UserRecord>
  /** The user with this name, created if missing. */
  ensureUser(name: string): Promise<UserRecord>
  getUser(id: string): Promise<UserRecord | undefined>
  listUsers(): Promise<UserRecord[]>

  createKey(key: NewKey): Promise<KeyRecord>
  getKey(id: string): Promise<KeyRecord | undefined>
  findKeyByPrefix(prefix: string): Promise<KeyRecord | undefined>
  listKeys(filter?: { userId?: string; kind?: KeyKind }): Promise<KeyRecord[]>
  /** Marks a key revoked; false when no such key or already revoked. */
  revokeKey(id: string, at?: Date): Promise<boolean>
  /**
   * Changes an active key's label and limits (fields absent stay; null clears). Resolves with
   * the key as it is now, or undefined when there is no such active key.
   */
  updateKey(id: string, fields: KeyChanges): Promise<KeyRecord | undefined>
  /** Keys revoked after `since` (for invalidating caches without a message bus). */
  keysRevokedSince(since: Date): Promise<KeyRecord[]>

  /** Registers `clientId` to `userId` if free; 'owned' if already theirs; 'taken' if another user's. */
  claimWorker(clientId: string, userId: string): Promise<ClaimResult>
  /** Updates a registered worker's details on login/heartbeat. */
  updateWorker(
    clientId: string,
    fields: Partial<
      Pick<
        WorkerRecord,
        'status' | 'os' | 'hostname' | 'engineType' | 'name' | 'valid' | 'models' | 'clientStatus'
      >
    >,
  ): Promise<void>
  getWorker(clientId: string): Promise<WorkerRecord | undefined>
  listWorkers(filter?: { userId?: string }): Promise<WorkerRecord[]>

  /**
   * Writes one consumer batch in one transaction: raw heartbeats and request-log rows
   * (skipping messages whose id is already stored: a redelivery changes nothing), the latest
   * system and device info per worker (never replaced by older readings), and the daily
   * statistics per worker, per device and per key / model / worker, folded from the rows
   * actually inserted.
   */
  applyTelemetry(batch: TelemetryBatch): Promise<TelemetryWrite>
  /** Deletes raw heartbeats and request-log rows older than `before`; daily statistics stay. */
  pruneTelemetry(before: Date): Promise<{ heartbeats: number; requests: number }>
  /** Daily usage rows, oldest day first; `from`/`to` are inclusive UTC days (`YYYY-MM-DD`). */
  listUsage(filter?: UsageFilter): Promise<UsageDailyRecord[]>

  /**
   * Appends request-log rows (the requests of `shared` keys, logged for tracking). The whole
   * batch is written atomically: in one transaction (SQLite, as few multi-row INSERTs as
   * the parameter limit allows) or one multi-row INSERT (PostgreSQL). An empty list sends
   * no query. Token counts are rounded to whole numbers.
   */
  recordRequests(rows: readonly Omit<RequestLogRecord, 'id'>[]): Promise<void>
  /**
   * Logged requests, newest first (same instant: last recorded first). `keyId` keeps one
   * key's requests, `since` those at or after that instant (inclusive); `limit` defaults to
   * 100 and is capped at 10 000.
   */
  listRequests(filter?: {
    keyId?: string
    /** Requests of this user's keys only. */
    userId?: string
    since?: Date
    limit?: number
  }): Promise<RequestLogRecord[]>

  /** Creates or updates the catalogue entry of `name` + `version` (the original's `/api/models/insert`). */
  upsertModel(model: NewModel): Promise<ModelRecord>
  /**
   * The catalogue, by name then version. `minGpuMemoryGb`: only models that need at most that
   * much GPU memory (those a device of that size can run; models without a figure included).
   */
  listModels(filter?: { isActive?: boolean; minGpuMemoryGb?: number }): Promise<ModelRecord[]>

  /** Small key/value settings (e.g. the admin key's hash). */
  getSetting(key: string): Promise<string | undefined>
  setSetting(key: string, value: string): Promise<void>

  close(): Promise<void>
}

/** One entry of the model catalogue (schema v4), unique by name + version. */
export interface ModelRecord {
  readonly id: number
  readonly name: string
  readonly version: string
  readonly versionCode: number
  readonly engineType: number
  readonly isActive: boolean
  readonly minMemoryMb: number | null
  readonly minGpuMemoryGb: number | null
  readonly downloadUrl: string | null
  /** `sha256:<64 hex>` */
  readonly checksum: string | null
  readonly expectedSize: number | null
  readonly createdAt: Date
  readonly updatedAt: Date
}

export type NewModel = Omit<ModelRecord, 'id' | 'createdAt' | 'updatedAt' | 'isActive'> & {
  /** @default true */
  readonly isActive?: boolean | undefined
}

/** One consumer batch. */
export interface TelemetryBatch {
  readonly heartbeats: readonly HeartbeatEvent[]
  readonly usage: readonly UsageEvent[]
  /**
   * The heartbeats as the bus carried them (their JSON encoding), when the caller has it: the
   * PostgreSQL adapter sends those bytes as they are instead of serialising the events again.
   */
  readonly encoded?: ReadonlyMap<HeartbeatEvent, Buffer> | undefined
}

/** What one batch changed. */
export interface TelemetryWrite {
  /** Messages written now. */
  readonly heartbeats: number
  readonly usage: number
  /** Messages already stored (redelivered): skipped. */
  readonly duplicates: number
}

/** Which daily usage rows to read. */
export interface UsageFilter {
  readonly keyId?: string | undefined
  readonly userId?: string | undefined
  readonly model?: string | undefined
  readonly workerId?: string | undefined
  readonly from?: string | undefined
  readonly to?: string | undefined
  /** Rows at most (default 1,000, at most 10,000). */
  readonly limit?: number | undefined
}

/** Requests of one key, model and worker on one UTC day. */
export interface UsageDailyRecord {
  readonly day: string
  readonly keyId: string
  readonly userId: string | null
  readonly model: string
  /** '' for requests no worker answered. */
  readonly workerId: string
  readonly requests: number
  /** Answers with status 400 or more. */
  readonly errors: number
  /** Requests whose engine reported token usage (the rest count no tokens). */
  readonly metered: number
  readonly promptTokens: number
  readonly completionTokens: number
  readonly totalTokens: number
  readonly avgDurationMs: number
  /** Mean time to first byte over the requests that had one; null when none did. */
  readonly avgTtfbMs: number | null
  readonly bytesIn: number
  readonly bytesOut: number
}

/** Options to open a store. */
export interface StoreOptions {
  /** `postgres://…` for PostgreSQL; otherwise SQLite at `sqlitePath`. */
  readonly databaseUrl?: string | undefined
  readonly sqlitePath?: string | undefined
  /** Called for every query the adapter sends (tests count them). */
  readonly onQuery?: ((sql: string) => void) | undefined
}

/**
 * One logged request (table `request_log`, schema v2). No foreign keys: the log outlives
 * keys, users and workers, and one stale id must not fail a whole batch.
 */
export interface RequestLogRecord {
  /** Assigned by the store, increasing in the order rows were recorded; only on read. */
  readonly id: number
  /** When the request arrived. */
  readonly at: Date
  /** The API key's public id (`key_…`). */
  readonly keyId: string
  readonly userId: string | null
  /** The model requested. */
  readonly model: string
  /** Client id of the worker that served it; null when none did. */
  readonly workerId: string | null
  /** The API path, e.g. `/v1/chat/completions`. */
  readonly path: string
  /** HTTP status returned. */
  readonly status: number
  readonly durationMs: number
  readonly promptTokens: number | null
  readonly completionTokens: number | null
  readonly totalTokens: number | null
}

import type { HeartbeatEvent, UsageEvent } from '../protocol/events.js'

export { createStore } from './factory.js'
export type { Migration } from './migrations.js'
export { LATEST_VERSION, MIGRATIONS } from './migrations.js'
export type { PostgresStoreOptions } from './postgres.js'
export { PostgresStore } from './postgres.js'
export type {
  DailyStatsRecord,
  DayRange,
  DeviceDailyStatsRecord,
  DeviceInfoRecord,
  StoreTelemetry,
  SystemInfoRecord,
  TimeRange,
} from './shared.js'
export type { SqliteStoreOptions } from './sqlite.js'
export { SqliteStore } from './sqlite.js'
