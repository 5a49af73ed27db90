/**
 * The embedded store: one SQLite file in the data dir, through better-sqlite3. Calls are
 * synchronous underneath (microseconds for these small statements), wrapped in promises to
 * match `Store`. Each statement is prepared on first use and reused.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { ErrorCodes, FabricError } from '../errors/index.js'
import type {
  ClaimResult,
  HeartbeatRecord,
  KeyChanges,
  KeyKind,
  KeyRecord,
  ModelRecord,
  NewKey,
  NewModel,
  RequestLogRecord,
  Store,
  TelemetryBatch,
  TelemetryWrite,
  UsageDailyRecord,
  UsageFilter,
  UserRecord,
  WorkerClientStatus,
  WorkerRecord,
} from './index.js'
import { MIGRATIONS, MIGRATIONS_TABLE } from './migrations.js'
import {
  addExcluded,
  clampLimit,
  closedError,
  DAILY_COLUMNS,
  type DailyStatsRecord,
  type DayRange,
  DEVICE_DAILY_COLUMNS,
  DEVICE_INFO_COLUMNS,
  type DeviceDailyStatsRecord,
  type DeviceInfoRecord,
  dayBound,
  deviceRowValues,
  FOLD_SUMS,
  HEARTBEAT_COLUMNS,
  heartbeatExtra,
  heartbeatRowValues,
  KEY_COLUMNS,
  MODEL_COLUMNS,
  modelFilterValues,
  modelRowValues,
  newId,
  REQUEST_COLUMNS,
  type RequestRowValues,
  requestRowValues,
  type StoreTelemetry,
  SYSTEM_INFO_COLUMNS,
  type SystemInfoRecord,
  sinceMs,
  storableText,
  type TimeRange,
  takeExcluded,
  timeBoundMs,
  toDailyStats,
  toDeviceDaily,
  toDeviceInfo,
  toHeartbeat,
  toModel,
  toSystemInfo,
  toUsage,
  USAGE_COLUMNS,
  usageRowValues,
  WORKER_COLUMNS,
} from './shared.js'

/** Options of the SQLite adapter. */
export interface SqliteStoreOptions {
  /** Database file; its directory is created. `:memory:` for a private in-memory database. */
  readonly path: string
  /** Called once per statement execution (tests count them). */
  readonly onQuery?: ((sql: string) => void) | undefined
  /** How long a write waits for another process's lock before failing. Default 5000 ms. */
  readonly busyTimeoutMs?: number | undefined
}

/** Default for `busyTimeoutMs`. */
export const SQLITE_BUSY_TIMEOUT_MS = 5_000

/** Bound parameters per request-log row (every column but `id`). */
const REQUEST_PARAMS = 11
/**
 * Most rows in one multi-row INSERT: a power of two whose parameters stay under SQLite's
 * default SQLITE_MAX_VARIABLE_NUMBER (32 766; 2 048 × 11 = 22 528). A batch is split into
 * power-of-two chunks, so at most 12 distinct INSERT statements are ever prepared.
 */
const MAX_REQUEST_CHUNK = 2_048

/** The multi-row INSERT of `rows` request-log rows (placeholders only). */
function insertRequestsSql(rows: number): string {
  const tuple = `(${Array(REQUEST_PARAMS).fill('?').join(', ')})`
  return `INSERT INTO request_log (at, key_id, user_id, model, worker_id, path, status, duration_ms,
      prompt_tokens, completion_tokens, total_tokens)
    VALUES ${Array(rows).fill(tuple).join(', ')}`
}

/** Every statement the adapter runs (besides migration DDL), by name. */
const SQL = {
  hasMigrationsTable:
    "SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
  schemaVersion: 'SELECT coalesce(max(version), 0) AS version FROM schema_migrations',
  hasMigration: 'SELECT 1 AS found FROM schema_migrations WHERE version = ?',
  recordMigration: 'INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)',

  insertUser: 'INSERT INTO users (id, name, created_at) VALUES (?, ?, ?) RETURNING id, name, created_at',
  insertUserIfMissing:
    'INSERT INTO users (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING id, name, created_at',
  getUser: 'SELECT id, name, created_at FROM users WHERE id = ?',
  getUserByName: 'SELECT id, name, created_at FROM users WHERE name = ?',
  listUsers: 'SELECT id, name, created_at FROM users ORDER BY name',

  insertKey: `INSERT INTO api_keys (${KEY_COLUMNS})
    VALUES (@id, @prefix, @hash, @kind, @userId, @name, @accessLevel, @scope, @workerIds, @models, @rpmLimit, @tpmLimit,
      @expiresAt, NULL, @createdAt)
    RETURNING ${KEY_COLUMNS}`,
  getKey: `SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = ?`,
  findKeyByPrefix: `SELECT ${KEY_COLUMNS} FROM api_keys WHERE prefix = ?`,
  // One statement for every filter combination: a NULL filter matches everything.
  listKeys: `SELECT ${KEY_COLUMNS} FROM api_keys
    WHERE (@userId IS NULL OR user_id = @userId) AND (@kind IS NULL OR kind = @kind)
    ORDER BY created_at, id`,
  revokeKey: 'UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL',
  // Flags say which fields were given (as in updateWorker), so NULL can clear a limit.
  updateKey: `UPDATE api_keys SET
      name = CASE WHEN @hasName THEN @name ELSE name END,
      models = CASE WHEN @hasModels THEN @models ELSE models END,
      rpm_limit = CASE WHEN @hasRpmLimit THEN @rpmLimit ELSE rpm_limit END,
      tpm_limit = CASE WHEN @hasTpmLimit THEN @tpmLimit ELSE tpm_limit END,
      expires_at = CASE WHEN @hasExpiresAt THEN @expiresAt ELSE expires_at END
    WHERE id = @id AND revoked_at IS NULL
    RETURNING ${KEY_COLUMNS}`,
  keysRevokedSince: `SELECT ${KEY_COLUMNS} FROM api_keys WHERE revoked_at >= ? ORDER BY revoked_at, id`,

  claimWorker: `INSERT INTO workers (client_id, user_id, first_seen_at, last_seen_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (client_id) DO NOTHING`,
  workerOwner: 'SELECT user_id FROM workers WHERE client_id = ?',
  // Flags say which fields were given, so one prepared statement serves every partial update
  // (and a field can be set to NULL, which COALESCE could not express).
  updateWorker: `UPDATE workers SET
      name = CASE WHEN @hasName THEN @name ELSE name END,
      status = CASE WHEN @hasStatus THEN @status ELSE status END,
      client_status = CASE WHEN @hasClientStatus THEN @clientStatus ELSE client_status END,
      os = CASE WHEN @hasOs THEN @os ELSE os END,
      hostname = CASE WHEN @hasHostname THEN @hostname ELSE hostname END,
      engine_type = CASE WHEN @hasEngineType THEN @engineType ELSE engine_type END,
      valid = CASE WHEN @hasValid THEN @valid ELSE valid END,
      models = CASE WHEN @hasModels THEN @models ELSE models END,
      last_seen_at = @now
    WHERE client_id = @clientId`,
  getWorker: `SELECT ${WORKER_COLUMNS} FROM workers WHERE client_id = ?`,
  listWorkers: `SELECT ${WORKER_COLUMNS} FROM workers WHERE (@userId IS NULL OR user_id = @userId) ORDER BY client_id`,

  // Schema v3, the consumer's batch. Every fold runs only for a message inserted now
  // (`changes` of its raw insert), so a redelivered message changes nothing.
  insertHeartbeat: `INSERT INTO heartbeats (msg_id, client_id, user_id, at, cpu_percent, mem_used_bytes,
      mem_total_bytes, mem_percent, disk_percent, net_in_bytes, net_out_bytes, inflight, extra)
    VALUES (@msgId, @clientId, @userId, @atMs, @cpu, @memUsed, @memTotal, @memPercent, @disk, @netIn, @netOut,
      @inflight, @extra)
    ON CONFLICT (msg_id) DO NOTHING`,
  // SQLite's two-argument max() is NULL when either side is: coalesce keeps the known value.
  foldDailyStats: `INSERT INTO daily_stats (client_id, day, heartbeats, cpu_sum, cpu_samples, max_cpu_percent,
      max_mem_used_bytes, max_inflight, mem_sum, mem_samples, disk_sum, disk_samples, net_in_bytes, net_out_bytes,
      last_heartbeat_at)
    VALUES (@clientId, @day, 1, coalesce(@cpu, 0), @cpu IS NOT NULL, @cpu, @memUsed, @inflight,
      coalesce(@memPercent, 0), @memPercent IS NOT NULL, coalesce(@disk, 0), @disk IS NOT NULL, @netIn, @netOut, @atMs)
    ON CONFLICT (client_id, day) DO UPDATE SET ${addExcluded(FOLD_SUMS.daily, 'daily_stats')},
      max_cpu_percent = max(coalesce(max_cpu_percent, excluded.max_cpu_percent), coalesce(excluded.max_cpu_percent, max_cpu_percent)),
      max_mem_used_bytes = max(coalesce(max_mem_used_bytes, excluded.max_mem_used_bytes), coalesce(excluded.max_mem_used_bytes, max_mem_used_bytes)),
      max_inflight = max(max_inflight, excluded.max_inflight),
      last_heartbeat_at = max(coalesce(last_heartbeat_at, excluded.last_heartbeat_at), excluded.last_heartbeat_at)`,
  foldDeviceDailyStats: `INSERT INTO device_daily_stats (client_id, device_index, day, name, samples, util_sum,
      util_samples, mem_util_sum, mem_util_samples, temp_sum, temp_samples, max_temp_c, power_sum, power_samples,
      max_power_w)
    VALUES (@clientId, @index, @day, @name, 1, coalesce(@util, 0), @util IS NOT NULL, coalesce(@memUtil, 0),
      @memUtil IS NOT NULL, coalesce(@temp, 0), @temp IS NOT NULL, @temp, coalesce(@power, 0), @power IS NOT NULL, @power)
    ON CONFLICT (client_id, device_index, day) DO UPDATE SET ${addExcluded(FOLD_SUMS.device, 'device_daily_stats')},
      name = excluded.name,
      max_temp_c = max(coalesce(max_temp_c, excluded.max_temp_c), coalesce(excluded.max_temp_c, max_temp_c)),
      max_power_w = max(coalesce(max_power_w, excluded.max_power_w), coalesce(excluded.max_power_w, max_power_w))`,
  // The latest readings: an older heartbeat (late or redelivered) never replaces a newer one.
  upsertSystemInfo: `INSERT INTO worker_system_info (client_id, at, cpu_percent, mem_percent, mem_used_bytes,
      mem_total_bytes, disk_percent, net_rx_bytes, net_tx_bytes, net_rx_rate, net_tx_rate, uptime_seconds,
      device_count, device_memory_total_bytes, total_tflops, inflight, link_bytes_in, link_bytes_out)
    VALUES (@clientId, @atMs, @cpu, @memPercent, @memUsed, @memTotal, @disk, @netRx, @netTx, @netRxRate, @netTxRate,
      @uptime, @deviceCount, @deviceMemory, @tflops, @inflight, @linkIn, @linkOut)
    ON CONFLICT (client_id) DO UPDATE SET ${takeExcluded(SYSTEM_INFO_COLUMNS, ['client_id'])}
    WHERE excluded.at >= worker_system_info.at`,
  upsertDeviceInfo: `INSERT INTO worker_device_info (client_id, device_index, at, vendor, name, uuid, util_percent,
      mem_util_percent, mem_used_bytes, mem_total_bytes, temp_c, power_w, power_limit_w, tflops)
    VALUES (@clientId, @index, @atMs, @vendor, @name, @uuid, @util, @memUtil, @memUsedDev, @memTotalDev, @temp, @power,
      @powerLimit, @tflopsDev)
    ON CONFLICT (client_id, device_index) DO UPDATE SET ${takeExcluded(DEVICE_INFO_COLUMNS, ['client_id', 'device_index'])}
    WHERE excluded.at >= worker_device_info.at`,
  insertUsage: `INSERT INTO request_log (msg_id, at, key_id, user_id, model, worker_id, path, status, duration_ms,
      prompt_tokens, completion_tokens, total_tokens, stream, ttfb_ms, bytes_in, bytes_out)
    VALUES (@msgId, @atMs, @keyId, @userId, @model, nullif(@workerId, ''), @path, @status, @duration, @prompt,
      @completion, @total, @stream, @ttfb, @bytesIn, @bytesOut)
    ON CONFLICT (msg_id) DO NOTHING`,
  foldUsage: `INSERT INTO usage_daily (day, key_id, model, worker_id, user_id, requests, errors, metered,
      prompt_tokens, completion_tokens, total_tokens, duration_ms_sum, ttfb_ms_sum, ttfb_samples, bytes_in, bytes_out)
    VALUES (@day, @keyId, @model, @workerId, @userId, 1, @error, @metered, coalesce(@prompt, 0),
      coalesce(@completion, 0), coalesce(@total, 0), @duration, coalesce(@ttfb, 0), @ttfb IS NOT NULL, @bytesIn,
      @bytesOut)
    ON CONFLICT (day, key_id, model, worker_id) DO UPDATE SET ${addExcluded(FOLD_SUMS.usage, 'usage_daily')},
      user_id = coalesce(excluded.user_id, user_id)`,
  pruneHeartbeats: 'DELETE FROM heartbeats WHERE at < ?',
  pruneRequests: 'DELETE FROM request_log WHERE at < ?',
  listUsage: `SELECT ${USAGE_COLUMNS} FROM usage_daily
    WHERE (@keyId IS NULL OR key_id = @keyId) AND (@userId IS NULL OR user_id = @userId)
      AND (@model IS NULL OR model = @model) AND (@workerId IS NULL OR worker_id = @workerId)
      AND day >= @from AND day <= @to
    ORDER BY day, key_id, model, worker_id LIMIT @limit`,
  // Absent bounds are the widest days, so one statement (and the primary key's range scan) serves every range.
  listDailyStats: `SELECT ${DAILY_COLUMNS} FROM daily_stats
    WHERE client_id = @clientId AND day >= @from AND day <= @to ORDER BY day`,
  listDeviceDailyStats: `SELECT ${DEVICE_DAILY_COLUMNS} FROM device_daily_stats
    WHERE client_id = ? ORDER BY day, device_index`,
  // Absent bounds are the widest instants: one statement, one range scan of (client_id, at).
  listHeartbeats: `SELECT ${HEARTBEAT_COLUMNS} FROM heartbeats
    WHERE client_id = @clientId AND at >= @from AND at <= @to ORDER BY at DESC, id DESC LIMIT @limit`,
  getSystemInfo: `SELECT ${SYSTEM_INFO_COLUMNS} FROM worker_system_info WHERE client_id = ?`,
  listDeviceInfo: `SELECT ${DEVICE_INFO_COLUMNS} FROM worker_device_info d
    WHERE client_id = ? AND at >= (SELECT at FROM worker_system_info s WHERE s.client_id = d.client_id)
    ORDER BY device_index`,

  // No `since`: the caller passes the earliest Date, so one range scan serves both cases.
  // (id is the rowid, which every SQLite index ends with: the index alone gives the order.)
  // A user filter is checked on the rows the index yields (no user index: it would cost
  // every request-log write, and a user's listing stops at its limit).
  listRequests: `SELECT ${REQUEST_COLUMNS} FROM request_log
    WHERE at >= @since AND (@userId IS NULL OR user_id = @userId) ORDER BY at DESC, id DESC LIMIT @limit`,
  listRequestsByKey: `SELECT ${REQUEST_COLUMNS} FROM request_log
    WHERE key_id = @keyId AND at >= @since AND (@userId IS NULL OR user_id = @userId)
    ORDER BY at DESC, id DESC LIMIT @limit`,

  // Schema v4. An update replaces every field but the key (name, version) and created_at.
  upsertModel: `INSERT INTO models (name, version, version_code, engine_type, is_active, min_memory_mb,
      min_gpu_memory_gb, download_url, checksum, expected_size, created_at, updated_at)
    VALUES (@name, @version, @versionCode, @engineType, @isActive, @minMemoryMb, @minGpuMemoryGb, @downloadUrl,
      @checksum, @expectedSize, @now, @now)
    ON CONFLICT (name, version) DO UPDATE SET ${takeExcluded(MODEL_COLUMNS, ['id', 'name', 'version', 'created_at'])}
    RETURNING ${MODEL_COLUMNS}`,
  // A NULL filter matches everything; a model without a GPU memory figure fits any device.
  listModels: `SELECT ${MODEL_COLUMNS} FROM models
    WHERE (@isActive IS NULL OR is_active = @isActive)
      AND (@minGpuMemoryGb IS NULL OR min_gpu_memory_gb IS NULL OR min_gpu_memory_gb <= @minGpuMemoryGb)
    ORDER BY name, version`,

  getSetting: 'SELECT value FROM settings WHERE key = ?',
  setSetting:
    'INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
} as const

type SqlName = keyof typeof SQL

interface UserRow {
  id: string
  name: string
  created_at: number
}

interface KeyRow {
  id: string
  prefix: string
  hash: string
  kind: KeyKind
  user_id: string
  name: string | null
  access_level: KeyRecord['accessLevel']
  scope: KeyRecord['scope']
  worker_ids: string
  models: string | null
  rpm_limit: number | null
  tpm_limit: number | null
  expires_at: number | null
  revoked_at: number | null
  created_at: number
}

interface WorkerRow {
  client_id: string
  user_id: string
  name: string | null
  status: WorkerRecord['status']
  client_status: WorkerClientStatus | null
  os: string | null
  hostname: string | null
  engine_type: string | null
  valid: number
  models: string
  first_seen_at: number
  last_seen_at: number
}

interface RequestRow {
  id: number
  at: number
  key_id: string
  user_id: string | null
  model: string
  worker_id: string | null
  path: string
  status: number
  duration_ms: number
  prompt_tokens: number | null
  completion_tokens: number | null
  total_tokens: number | null
}

/** Before any valid `Date` (±8.64e15 ms): `since` when none is given. */
const NO_LOWER_BOUND_MS = Number.MIN_SAFE_INTEGER
/** After any valid `Date`: the upper bound of a time range when none is given. */
const NO_UPPER_BOUND_MS = Number.MAX_SAFE_INTEGER
/** Before and after every `YYYY-MM-DD` day (text order): a day range's missing bounds. */
const FIRST_DAY = '0000-00-00'
const LAST_DAY = '9999-99-99'

const toDate = (ms: number | null): Date | null => (ms === null ? null : new Date(ms))
const toMs = (date: Date | null | undefined): number | null => (date == null ? null : date.getTime())

function toUser(row: UserRow): UserRecord {
  return { id: row.id, name: row.name, createdAt: new Date(row.created_at) }
}

function toKey(row: KeyRow): KeyRecord {
  return {
    id: row.id,
    prefix: row.prefix,
    hash: row.hash,
    kind: row.kind,
    userId: row.user_id,
    name: row.name,
    accessLevel: row.access_level,
    scope: row.scope,
    workerIds: JSON.parse(row.worker_ids) as string[],
    models: row.models === null ? null : (JSON.parse(row.models) as string[]),
    rpmLimit: row.rpm_limit,
    tpmLimit: row.tpm_limit,
    expiresAt: toDate(row.expires_at),
    revokedAt: toDate(row.revoked_at),
    createdAt: new Date(row.created_at),
  }
}

function toWorker(row: WorkerRow): WorkerRecord {
  return {
    clientId: row.client_id,
    userId: row.user_id,
    name: row.name,
    status: row.status,
    clientStatus: row.client_status,
    os: row.os,
    hostname: row.hostname,
    engineType: row.engine_type,
    valid: row.valid === 1,
    models: JSON.parse(row.models) as string[],
    firstSeenAt: new Date(row.first_seen_at),
    lastSeenAt: new Date(row.last_seen_at),
  }
}

function toRequest(row: RequestRow): RequestLogRecord {
  return {
    id: row.id,
    at: new Date(row.at),
    keyId: row.key_id,
    userId: row.user_id,
    model: row.model,
    workerId: row.worker_id,
    path: row.path,
    status: row.status,
    durationMs: row.duration_ms,
    promptTokens: row.prompt_tokens,
    completionTokens: row.completion_tokens,
    totalTokens: row.total_tokens,
  }
}

/** Maps a better-sqlite3 error to a FabricError the callers understand. */
function toStoreError(err: unknown): FabricError {
  if (err instanceof FabricError) return err
  const code = (err as { code?: unknown } | null)?.code
  const message = err instanceof Error ? err.message : String(err)
  if (typeof code === 'string') {
    if (code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG') {
      return new FabricError(ErrorCodes.BAD_REQUEST, `sqlite: ${message}`, { cause: err })
    }
    // Lock contention and disk trouble can clear up: let the caller retry.
    if (/^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|READONLY|NOMEM|PROTOCOL)/.test(code)) {
      return new FabricError(ErrorCodes.STORE_UNAVAILABLE, `sqlite: ${message}`, {
        cause: err,
        retryable: true,
      })
    }
  }
  return new FabricError(ErrorCodes.INTERNAL, `sqlite: ${message}`, { cause: err })
}

/** The SQLite `Store`. Open with `new SqliteStore({ path })`, then `migrate()`. */
export class SqliteStore implements Store, StoreTelemetry {
  readonly kind = 'sqlite' as const
  readonly #db: Database.Database
  readonly #onQuery: ((sql: string) => void) | undefined
  readonly #statements = new Map<SqlName, Database.Statement>()
  readonly #applyTelemetry: (batch: TelemetryBatch) => TelemetryWrite
  /** Multi-row request-log INSERTs, by row count (powers of two up to MAX_REQUEST_CHUNK). */
  readonly #insertRequests = new Map<number, { sql: string; statement: Database.Statement }>()
  readonly #recordRequests: (rows: readonly RequestRowValues[]) => void
  #closed = false

  constructor(options: SqliteStoreOptions) {
    this.#onQuery = options.onQuery
    let db: Database.Database | undefined
    try {
      if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true })
      db = new Database(options.path)
      // WAL: readers never block the writer; NORMAL sync is durable across app crashes in WAL mode.
      db.pragma('journal_mode = WAL')
      db.pragma('synchronous = NORMAL')
      db.pragma(`busy_timeout = ${Math.trunc(options.busyTimeoutMs ?? SQLITE_BUSY_TIMEOUT_MS)}`)
      db.pragma('foreign_keys = ON')
      this.#db = db
    } catch (err) {
      // Opened but unusable (not a database, read-only directory): do not keep the handle.
      db?.close()
      throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, `cannot open SQLite database ${options.path}`, {
        cause: err,
      })
    }
    this.#applyTelemetry = this.#db.transaction((batch: TelemetryBatch): TelemetryWrite => {
      let heartbeats = 0
      let usage = 0
      let duplicates = 0
      for (const event of batch.heartbeats) {
        const row = {
          ...heartbeatRowValues(event),
          extra: storableText(JSON.stringify(heartbeatExtra(event))),
        }
        const devices = deviceRowValues(event)
        // better-sqlite3 ignores named parameters a statement does not use: one object serves all.
        if (this.#statement('insertHeartbeat').run(row).changes === 0) {
          duplicates++
          continue
        }
        heartbeats++
        this.#statement('foldDailyStats').run(row)
        for (const d of devices) {
          this.#statement('foldDeviceDailyStats').run({ clientId: row.clientId, day: row.day, ...d })
        }
        if (this.#statement('upsertSystemInfo').run(row).changes === 0) continue
        // The newest heartbeat so far: its devices are the worker's devices now (reads skip
        // devices older than the system info: a device the newest report lacks is gone).
        for (const d of devices) {
          this.#statement('upsertDeviceInfo').run({
            ...d,
            clientId: row.clientId,
            atMs: row.atMs,
            memUsedDev: d.memUsed,
            memTotalDev: d.memTotal,
            tflopsDev: d.tflops,
          })
        }
      }
      for (const event of batch.usage) {
        const row = { ...usageRowValues(event), stream: event.stream ? 1 : 0 }
        if (this.#statement('insertUsage').run(row).changes === 0) {
          duplicates++
          continue
        }
        usage++
        this.#statement('foldUsage').run(row)
      }
      return { heartbeats, usage, duplicates }
    })
    // One transaction for the whole batch, written in power-of-two chunks (largest first).
    this.#recordRequests = this.#db.transaction((rows: readonly RequestRowValues[]) => {
      let start = 0
      while (start < rows.length) {
        let size = MAX_REQUEST_CHUNK
        while (size > rows.length - start) size /= 2
        const params: unknown[] = []
        for (const row of rows.slice(start, start + size)) {
          params.push(
            row.atMs,
            row.keyId,
            row.userId,
            row.model,
            row.workerId,
            row.path,
            row.status,
            row.durationMs,
            row.promptTokens,
            row.completionTokens,
            row.totalTokens,
          )
        }
        this.#insertRequestsStatement(size).run(params)
        start += size
      }
    })
  }

  /** The prepared multi-row INSERT of `rows` request-log rows, counted as one query. */
  #insertRequestsStatement(rows: number): Database.Statement {
    let entry = this.#insertRequests.get(rows)
    if (entry === undefined) {
      const sql = insertRequestsSql(rows)
      entry = { sql, statement: this.#db.prepare(sql) }
      this.#insertRequests.set(rows, entry)
    }
    this.#onQuery?.(entry.sql)
    return entry.statement
  }

  /** The prepared statement `name` (prepared on first use), counted as one query. */
  #statement(name: SqlName): Database.Statement {
    let statement = this.#statements.get(name)
    if (statement === undefined) {
      statement = this.#db.prepare(SQL[name])
      this.#statements.set(name, statement)
    }
    this.#onQuery?.(SQL[name])
    return statement
  }

  /** Runs `fn` with errors mapped to FabricErrors (the async callers turn throws into rejections). */
  #call<T>(fn: () => T): T {
    if (this.#closed) throw closedError('sqlite')
    try {
      return fn()
    } catch (err) {
      throw toStoreError(err)
    }
  }

  #version(): number {
    if (this.#statement('hasMigrationsTable').get() === undefined) return 0
    return (this.#statement('schemaVersion').get() as { version: number }).version
  }

  /**
   * Applies pending migrations. `upTo` (tests and tooling) stops after that version, e.g.
   * to build an older schema and then migrate it forward.
   */
  async migrate(upTo = Number.POSITIVE_INFINITY): Promise<number[]> {
    return this.#call(() => {
      this.#onQuery?.(MIGRATIONS_TABLE.sqlite)
      this.#db.exec(MIGRATIONS_TABLE.sqlite)
      const current = this.#version()
      const applied: number[] = []
      for (const migration of MIGRATIONS) {
        if (migration.version <= current) continue
        if (migration.version > upTo) break
        // IMMEDIATE takes the write lock first, so two processes cannot both apply a version.
        const done = this.#db
          .transaction(() => {
            if (this.#statement('hasMigration').get(migration.version) !== undefined) return false
            for (const sql of migration.sqlite) {
              this.#onQuery?.(sql)
              this.#db.exec(sql)
            }
            this.#statement('recordMigration').run(migration.version, migration.name, Date.now())
            return true
          })
          .immediate()
        if (done) applied.push(migration.version)
      }
      return applied
    })
  }

  async schemaVersion(): Promise<number> {
    return this.#call(() => this.#version())
  }

  async createUser(name: string): Promise<UserRecord> {
    return this.#call(() => {
      const row = this.#statement('insertUser').get(newId('usr'), name, Date.now()) as UserRow
      return toUser(row)
    })
  }

  async ensureUser(name: string): Promise<UserRecord> {
    return this.#call(() => {
      // Existing users are the common case: one read, no write.
      const found = this.#statement('getUserByName').get(name) as UserRow | undefined
      if (found !== undefined) return toUser(found)
      const created = this.#statement('insertUserIfMissing').get(newId('usr'), name, Date.now()) as
        | UserRow
        | undefined
      return toUser(created ?? (this.#statement('getUserByName').get(name) as UserRow))
    })
  }

  async getUser(id: string): Promise<UserRecord | undefined> {
    return this.#call(() => {
      const row = this.#statement('getUser').get(id) as UserRow | undefined
      return row === undefined ? undefined : toUser(row)
    })
  }

  async listUsers(): Promise<UserRecord[]> {
    return this.#call(() => (this.#statement('listUsers').all() as UserRow[]).map(toUser))
  }

  async createKey(key: NewKey): Promise<KeyRecord> {
    return this.#call(() => {
      const row = this.#statement('insertKey').get({
        id: key.id ?? newId('key'),
        prefix: key.prefix,
        hash: key.hash,
        kind: key.kind,
        userId: key.userId,
        name: key.name ?? null,
        accessLevel: key.accessLevel,
        scope: key.scope ?? 'inference',
        workerIds: JSON.stringify(key.workerIds ?? []),
        models: key.models == null ? null : JSON.stringify(key.models),
        rpmLimit: key.rpmLimit ?? null,
        tpmLimit: key.tpmLimit ?? null,
        expiresAt: toMs(key.expiresAt),
        createdAt: Date.now(),
      }) as KeyRow
      return toKey(row)
    })
  }

  async getKey(id: string): Promise<KeyRecord | undefined> {
    return this.#call(() => {
      const row = this.#statement('getKey').get(id) as KeyRow | undefined
      return row === undefined ? undefined : toKey(row)
    })
  }

  async findKeyByPrefix(prefix: string): Promise<KeyRecord | undefined> {
    return this.#call(() => {
      const row = this.#statement('findKeyByPrefix').get(prefix) as KeyRow | undefined
      return row === undefined ? undefined : toKey(row)
    })
  }

  async listKeys(filter: { userId?: string; kind?: KeyKind } = {}): Promise<KeyRecord[]> {
    return this.#call(() => {
      const params = { userId: filter.userId ?? null, kind: filter.kind ?? null }
      return (this.#statement('listKeys').all(params) as KeyRow[]).map(toKey)
    })
  }

  async revokeKey(id: string, at: Date = new Date()): Promise<boolean> {
    return this.#call(() => this.#statement('revokeKey').run(at.getTime(), id).changes === 1)
  }

  async updateKey(id: string, fields: KeyChanges): Promise<KeyRecord | undefined> {
    return this.#call(() => {
      const row = this.#statement('updateKey').get({
        id,
        hasName: fields.name === undefined ? 0 : 1,
        name: fields.name ?? null,
        hasModels: fields.models === undefined ? 0 : 1,
        models: fields.models == null ? null : JSON.stringify(fields.models),
        hasRpmLimit: fields.rpmLimit === undefined ? 0 : 1,
        rpmLimit: fields.rpmLimit ?? null,
        hasTpmLimit: fields.tpmLimit === undefined ? 0 : 1,
        tpmLimit: fields.tpmLimit ?? null,
        hasExpiresAt: fields.expiresAt === undefined ? 0 : 1,
        expiresAt: toMs(fields.expiresAt),
      }) as KeyRow | undefined
      return row === undefined ? undefined : toKey(row)
    })
  }

  /** Keys revoked at or after `since` (inclusive: a poller cannot miss one revoked in the same millisecond). */
  async keysRevokedSince(since: Date): Promise<KeyRecord[]> {
    return this.#call(() => (this.#statement('keysRevokedSince').all(since.getTime()) as KeyRow[]).map(toKey))
  }

  async claimWorker(clientId: string, userId: string): Promise<ClaimResult> {
    return this.#call(() => {
      const now = Date.now()
      if (this.#statement('claimWorker').run(clientId, userId, now, now).changes === 1) return 'created'
      const owner = this.#statement('workerOwner').get(clientId) as { user_id: string } | undefined
      if (owner === undefined)
        throw new FabricError(ErrorCodes.INTERNAL, `worker ${clientId} vanished while claimed`)
      return owner.user_id === userId ? 'owned' : 'taken'
    })
  }

  async updateWorker(
    clientId: string,
    fields: Partial<
      Pick<
        WorkerRecord,
        'status' | 'os' | 'hostname' | 'engineType' | 'name' | 'valid' | 'models' | 'clientStatus'
      >
    >,
  ): Promise<void> {
    return this.#call(() => {
      const has = (field: keyof typeof fields) => (fields[field] === undefined ? 0 : 1)
      const { changes } = this.#statement('updateWorker').run({
        clientId,
        now: Date.now(),
        hasName: has('name'),
        name: fields.name ?? null,
        hasStatus: has('status'),
        status: fields.status ?? null,
        hasClientStatus: has('clientStatus'),
        clientStatus: fields.clientStatus ?? null,
        hasOs: has('os'),
        os: fields.os ?? null,
        hasHostname: has('hostname'),
        hostname: fields.hostname ?? null,
        hasEngineType: has('engineType'),
        engineType: fields.engineType ?? null,
        hasValid: has('valid'),
        valid: fields.valid === undefined ? null : fields.valid ? 1 : 0,
        hasModels: has('models'),
        models: fields.models === undefined ? null : JSON.stringify(fields.models),
      })
      if (changes === 0) throw new FabricError(ErrorCodes.NOT_FOUND, `worker ${clientId} is not registered`)
    })
  }

  async getWorker(clientId: string): Promise<WorkerRecord | undefined> {
    return this.#call(() => {
      const row = this.#statement('getWorker').get(clientId) as WorkerRow | undefined
      return row === undefined ? undefined : toWorker(row)
    })
  }

  async listWorkers(filter: { userId?: string } = {}): Promise<WorkerRecord[]> {
    return this.#call(() =>
      (this.#statement('listWorkers').all({ userId: filter.userId ?? null }) as WorkerRow[]).map(toWorker),
    )
  }

  async applyTelemetry(batch: TelemetryBatch): Promise<TelemetryWrite> {
    if (batch.heartbeats.length === 0 && batch.usage.length === 0)
      return { heartbeats: 0, usage: 0, duplicates: 0 }
    return this.#call(() => this.#applyTelemetry(batch))
  }

  async pruneTelemetry(before: Date): Promise<{ heartbeats: number; requests: number }> {
    const ms = sinceMs(before)
    return this.#call(() => ({
      heartbeats: this.#statement('pruneHeartbeats').run(ms).changes,
      requests: this.#statement('pruneRequests').run(ms).changes,
    }))
  }

  async listUsage(filter: UsageFilter = {}): Promise<UsageDailyRecord[]> {
    return this.#call(() =>
      this.#statement('listUsage')
        .all({
          keyId: filter.keyId ?? null,
          userId: filter.userId ?? null,
          model: filter.model ?? null,
          workerId: filter.workerId ?? null,
          from: filter.from ?? FIRST_DAY,
          to: filter.to ?? LAST_DAY,
          limit: clampLimit(filter.limit, 1_000),
        })
        .map((row) => toUsage(row as Record<string, unknown>)),
    )
  }

  async listDailyStats(clientId: string, range: DayRange = {}): Promise<DailyStatsRecord[]> {
    const from = dayBound(range.from, 'from') ?? FIRST_DAY
    const to = dayBound(range.to, 'to') ?? LAST_DAY
    return this.#call(() =>
      this.#statement('listDailyStats')
        .all({ clientId, from, to })
        .map((row) => toDailyStats(row as Record<string, unknown>)),
    )
  }

  async listDeviceDailyStats(clientId: string): Promise<DeviceDailyStatsRecord[]> {
    return this.#call(() =>
      this.#statement('listDeviceDailyStats')
        .all(clientId)
        .map((row) => toDeviceDaily(row as Record<string, unknown>)),
    )
  }

  async listHeartbeats(clientId: string, limit?: number, range: TimeRange = {}): Promise<HeartbeatRecord[]> {
    const from = timeBoundMs(range.from, NO_LOWER_BOUND_MS, 'from')
    const to = timeBoundMs(range.to, NO_UPPER_BOUND_MS, 'to')
    return this.#call(() =>
      this.#statement('listHeartbeats')
        .all({ clientId, from, to, limit: clampLimit(limit) })
        .map((row) => toHeartbeat(row as Record<string, unknown>)),
    )
  }

  async getSystemInfo(clientId: string): Promise<SystemInfoRecord | undefined> {
    return this.#call(() => {
      const row = this.#statement('getSystemInfo').get(clientId)
      return row === undefined ? undefined : toSystemInfo(row as Record<string, unknown>)
    })
  }

  async listDeviceInfo(clientId: string): Promise<DeviceInfoRecord[]> {
    return this.#call(() =>
      this.#statement('listDeviceInfo')
        .all(clientId)
        .map((row) => toDeviceInfo(row as Record<string, unknown>)),
    )
  }

  async recordRequests(rows: readonly Omit<RequestLogRecord, 'id'>[]): Promise<void> {
    if (rows.length === 0) return
    return this.#call(() => this.#recordRequests(rows.map(requestRowValues)))
  }

  async listRequests(
    filter: { keyId?: string; userId?: string; since?: Date; limit?: number } = {},
  ): Promise<RequestLogRecord[]> {
    return this.#call(() => {
      const since = filter.since == null ? NO_LOWER_BOUND_MS : sinceMs(filter.since)
      const params = { since, userId: filter.userId ?? null, limit: clampLimit(filter.limit) }
      const rows =
        filter.keyId == null
          ? this.#statement('listRequests').all(params)
          : this.#statement('listRequestsByKey').all({ ...params, keyId: filter.keyId })
      return (rows as RequestRow[]).map(toRequest)
    })
  }

  async upsertModel(model: NewModel): Promise<ModelRecord> {
    const values = modelRowValues(model)
    return this.#call(() => {
      const row = this.#statement('upsertModel').get({
        ...values,
        isActive: values.isActive ? 1 : 0,
        now: Date.now(),
      })
      return toModel(row as Record<string, unknown>)
    })
  }

  async listModels(filter: { isActive?: boolean; minGpuMemoryGb?: number } = {}): Promise<ModelRecord[]> {
    const { isActive, minGpuMemoryGb } = modelFilterValues(filter)
    return this.#call(() =>
      this.#statement('listModels')
        .all({ isActive: isActive === null ? null : isActive ? 1 : 0, minGpuMemoryGb })
        .map((row) => toModel(row as Record<string, unknown>)),
    )
  }

  async getSetting(key: string): Promise<string | undefined> {
    return this.#call(() => (this.#statement('getSetting').get(key) as { value: string } | undefined)?.value)
  }

  async setSetting(key: string, value: string): Promise<void> {
    return this.#call(() => {
      this.#statement('setSetting').run(key, value)
    })
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#statements.clear()
    this.#insertRequests.clear()
    this.#db.close()
  }
}
