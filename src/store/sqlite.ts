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
  KeyKind,
  KeyRecord,
  NewKey,
  RequestLogRecord,
  Store,
  UserRecord,
  WorkerRecord,
} from './index.js'
import { MIGRATIONS, MIGRATIONS_TABLE } from './migrations.js'
import {
  clampLimit,
  closedError,
  type DailyStatsRecord,
  KEY_COLUMNS,
  newId,
  REQUEST_COLUMNS,
  type RequestRowValues,
  requestRowValues,
  type StoreTelemetry,
  sinceMs,
  utcDay,
  WORKER_COLUMNS,
  wholeOrNull,
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
    VALUES (@id, @prefix, @hash, @kind, @userId, @name, @accessLevel, @workerIds, @models, @rpmLimit, @tpmLimit, @expiresAt, NULL, @createdAt)
    RETURNING ${KEY_COLUMNS}`,
  getKey: `SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = ?`,
  findKeyByPrefix: `SELECT ${KEY_COLUMNS} FROM api_keys WHERE prefix = ?`,
  // One statement for every filter combination: a NULL filter matches everything.
  listKeys: `SELECT ${KEY_COLUMNS} FROM api_keys
    WHERE (@userId IS NULL OR user_id = @userId) AND (@kind IS NULL OR kind = @kind)
    ORDER BY created_at, id`,
  revokeKey: 'UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL',
  keysRevokedSince: `SELECT ${KEY_COLUMNS} FROM api_keys WHERE revoked_at >= ? ORDER BY revoked_at, id`,

  claimWorker: `INSERT INTO workers (client_id, user_id, first_seen_at, last_seen_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (client_id) DO NOTHING`,
  workerOwner: 'SELECT user_id FROM workers WHERE client_id = ?',
  // Flags say which fields were given, so one prepared statement serves every partial update
  // (and a field can be set to NULL, which COALESCE could not express).
  updateWorker: `UPDATE workers SET
      name = CASE WHEN @hasName THEN @name ELSE name END,
      status = CASE WHEN @hasStatus THEN @status ELSE status END,
      os = CASE WHEN @hasOs THEN @os ELSE os END,
      hostname = CASE WHEN @hasHostname THEN @hostname ELSE hostname END,
      engine_type = CASE WHEN @hasEngineType THEN @engineType ELSE engine_type END,
      valid = CASE WHEN @hasValid THEN @valid ELSE valid END,
      models = CASE WHEN @hasModels THEN @models ELSE models END,
      last_seen_at = @now
    WHERE client_id = @clientId`,
  getWorker: `SELECT ${WORKER_COLUMNS} FROM workers WHERE client_id = ?`,
  listWorkers: `SELECT ${WORKER_COLUMNS} FROM workers WHERE (@userId IS NULL OR user_id = @userId) ORDER BY client_id`,

  insertHeartbeat: `INSERT INTO heartbeats (client_id, at, cpu_percent, mem_used_bytes, mem_total_bytes, inflight, extra)
    VALUES (@clientId, @at, @cpu, @memUsed, @memTotal, @inflight, @extra)`,
  // SQLite's two-argument max() is NULL when either side is: coalesce keeps the known value.
  foldDailyStats: `INSERT INTO daily_stats
      (client_id, day, heartbeats, cpu_sum, cpu_samples, max_cpu_percent, max_mem_used_bytes, max_inflight)
    VALUES (@clientId, @day, 1, coalesce(@cpu, 0), @cpu IS NOT NULL, @cpu, @memUsed, @inflight)
    ON CONFLICT (client_id, day) DO UPDATE SET
      heartbeats = heartbeats + 1,
      cpu_sum = cpu_sum + excluded.cpu_sum,
      cpu_samples = cpu_samples + excluded.cpu_samples,
      max_cpu_percent = max(coalesce(max_cpu_percent, excluded.max_cpu_percent), coalesce(excluded.max_cpu_percent, max_cpu_percent)),
      max_mem_used_bytes = max(coalesce(max_mem_used_bytes, excluded.max_mem_used_bytes), coalesce(excluded.max_mem_used_bytes, max_mem_used_bytes)),
      max_inflight = max(max_inflight, excluded.max_inflight)`,
  listDailyStats: `SELECT client_id, day, heartbeats, avg_cpu_percent, max_cpu_percent, max_mem_used_bytes, max_inflight
    FROM daily_stats WHERE client_id = ? ORDER BY day`,
  listHeartbeats: `SELECT client_id, at, cpu_percent, mem_used_bytes, mem_total_bytes, inflight, extra
    FROM heartbeats WHERE client_id = ? ORDER BY at DESC, id DESC LIMIT ?`,

  // No `since`: the caller passes the earliest Date, so one range scan serves both cases.
  // (id is the rowid, which every SQLite index ends with: the index alone gives the order.)
  listRequests: `SELECT ${REQUEST_COLUMNS} FROM request_log WHERE at >= ? ORDER BY at DESC, id DESC LIMIT ?`,
  listRequestsByKey: `SELECT ${REQUEST_COLUMNS} FROM request_log
    WHERE key_id = ? AND at >= ? ORDER BY at DESC, id DESC LIMIT ?`,

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
  os: string | null
  hostname: string | null
  engine_type: string | null
  valid: number
  models: string
  first_seen_at: number
  last_seen_at: number
}

interface DailyStatsRow {
  client_id: string
  day: string
  heartbeats: number
  avg_cpu_percent: number | null
  max_cpu_percent: number | null
  max_mem_used_bytes: number | null
  max_inflight: number
}

interface HeartbeatRow {
  client_id: string
  at: number
  cpu_percent: number | null
  mem_used_bytes: number | null
  mem_total_bytes: number | null
  inflight: number
  extra: string
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
  readonly #recordHeartbeats: (rows: readonly HeartbeatRecord[]) => void
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
    this.#recordHeartbeats = this.#db.transaction((rows: readonly HeartbeatRecord[]) => {
      for (const row of rows) {
        const params = {
          clientId: row.clientId,
          at: row.at.getTime(),
          day: utcDay(row.at),
          cpu: row.cpuPercent ?? null,
          memUsed: wholeOrNull(row.memUsedBytes),
          memTotal: wholeOrNull(row.memTotalBytes),
          inflight: Math.round(row.inflight ?? 0),
          extra: JSON.stringify(row.extra ?? {}),
        }
        // better-sqlite3 ignores named parameters a statement does not use: one object serves both.
        this.#statement('insertHeartbeat').run(params)
        this.#statement('foldDailyStats').run(params)
      }
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
      Pick<WorkerRecord, 'status' | 'os' | 'hostname' | 'engineType' | 'name' | 'valid' | 'models'>
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

  async recordHeartbeats(rows: readonly HeartbeatRecord[]): Promise<void> {
    if (rows.length === 0) return
    return this.#call(() => this.#recordHeartbeats(rows))
  }

  async listDailyStats(clientId: string): Promise<DailyStatsRecord[]> {
    return this.#call(() =>
      (this.#statement('listDailyStats').all(clientId) as DailyStatsRow[]).map((row) => ({
        clientId: row.client_id,
        day: row.day,
        heartbeats: row.heartbeats,
        avgCpuPercent: row.avg_cpu_percent,
        maxCpuPercent: row.max_cpu_percent,
        maxMemUsedBytes: row.max_mem_used_bytes,
        maxInflight: row.max_inflight,
      })),
    )
  }

  async listHeartbeats(clientId: string, limit?: number): Promise<HeartbeatRecord[]> {
    return this.#call(() =>
      (this.#statement('listHeartbeats').all(clientId, clampLimit(limit)) as HeartbeatRow[]).map((row) => ({
        clientId: row.client_id,
        at: new Date(row.at),
        cpuPercent: row.cpu_percent,
        memUsedBytes: row.mem_used_bytes,
        memTotalBytes: row.mem_total_bytes,
        inflight: row.inflight,
        extra: JSON.parse(row.extra) as Record<string, unknown>,
      })),
    )
  }

  async recordRequests(rows: readonly Omit<RequestLogRecord, 'id'>[]): Promise<void> {
    if (rows.length === 0) return
    return this.#call(() => this.#recordRequests(rows.map(requestRowValues)))
  }

  async listRequests(
    filter: { keyId?: string; since?: Date; limit?: number } = {},
  ): Promise<RequestLogRecord[]> {
    return this.#call(() => {
      const since = filter.since == null ? NO_LOWER_BOUND_MS : sinceMs(filter.since)
      const limit = clampLimit(filter.limit)
      const rows =
        filter.keyId == null
          ? this.#statement('listRequests').all(since, limit)
          : this.#statement('listRequestsByKey').all(filter.keyId, since, limit)
      return (rows as RequestRow[]).map(toRequest)
    })
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
