/**
 * The production store: PostgreSQL through a small `pg.Pool`. Queries are parameterised
 * and named (prepared once per connection). When the database is down or restarting,
 * calls fail fast with a retryable GPUF_STORE_UNAVAILABLE and the pool reconnects on its
 * own once it is back: broken connections are discarded, never reused.
 */
import { DatabaseError, Pool, type PoolClient, type QueryResultRow } from 'pg'
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
  dayAsText,
  dayBound,
  FOLD_SUMS,
  HEARTBEAT_COLUMNS,
  KEY_COLUMNS,
  MODEL_COLUMNS,
  modelFilterValues,
  modelRowValues,
  newId,
  REQUEST_COLUMNS,
  requestRowValues,
  type StoreTelemetry,
  SYSTEM_INFO_COLUMNS,
  type SystemInfoRecord,
  sinceMs,
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
  uniqueById,
  usageRowValues,
  WORKER_COLUMNS,
} from './shared.js'

/** Options of the PostgreSQL adapter. Defaults are the exported `PG_*` constants. */
export interface PostgresStoreOptions {
  /** `postgres://user@host:port/database`. */
  readonly url: string
  /** Called once per query sent (tests count them). */
  readonly onQuery?: ((sql: string) => void) | undefined
  /** Connections kept at most. */
  readonly poolSize?: number | undefined
  /** Time to open a connection before the call fails. */
  readonly connectTimeoutMs?: number | undefined
  /** Server-side limit on one statement. */
  readonly statementTimeoutMs?: number | undefined
  /** Told about errors on idle connections (e.g. the server restarted); they are already handled. */
  readonly onIdleError?: ((err: Error) => void) | undefined
}

/** Default pool size: the store's queries are short, a few connections serve a whole server. */
export const PG_POOL_SIZE = 10
/** Default connect timeout: a dead database must fail the call quickly. */
export const PG_CONNECT_TIMEOUT_MS = 2_000
/** Default statement timeout (server side). */
export const PG_STATEMENT_TIMEOUT_MS = 5_000
/** Client-side read timeout: catches a server that stopped answering without closing the socket. */
const PG_QUERY_TIMEOUT_MS = 10_000

/** Every statement of the adapter, by name (also the prepared statement's name). */
const SQL = {
  hasMigrationsTable: "SELECT to_regclass('schema_migrations') IS NOT NULL AS found",
  schemaVersion: 'SELECT coalesce(max(version), 0)::int AS version FROM schema_migrations',

  insertUser: 'INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3) RETURNING id, name, created_at',
  insertUserIfMissing:
    'INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING id, name, created_at',
  getUser: 'SELECT id, name, created_at FROM users WHERE id = $1',
  getUserByName: 'SELECT id, name, created_at FROM users WHERE name = $1',
  listUsers: 'SELECT id, name, created_at FROM users ORDER BY name',

  insertKey: `INSERT INTO api_keys (id, prefix, hash, kind, user_id, name, access_level, worker_ids, models,
      rpm_limit, tpm_limit, expires_at, created_at, scope)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text[], $9::text[], $10, $11, $12, $13, $14)
    RETURNING ${KEY_COLUMNS}`,
  getKey: `SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = $1`,
  findKeyByPrefix: `SELECT ${KEY_COLUMNS} FROM api_keys WHERE prefix = $1`,
  // One statement for every filter combination: a NULL filter matches everything.
  listKeys: `SELECT ${KEY_COLUMNS} FROM api_keys
    WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR kind = $2)
    ORDER BY created_at, id`,
  revokeKey: 'UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL',
  // Flags say which fields were given (as in updateWorker), so NULL can clear a limit.
  updateKey: `UPDATE api_keys SET
      name = CASE WHEN $2::boolean THEN $3::text ELSE name END,
      models = CASE WHEN $4::boolean THEN $5::text[] ELSE models END,
      rpm_limit = CASE WHEN $6::boolean THEN $7::integer ELSE rpm_limit END,
      tpm_limit = CASE WHEN $8::boolean THEN $9::bigint ELSE tpm_limit END,
      expires_at = CASE WHEN $10::boolean THEN $11::timestamptz ELSE expires_at END
    WHERE id = $1 AND revoked_at IS NULL
    RETURNING ${KEY_COLUMNS}`,
  keysRevokedSince: `SELECT ${KEY_COLUMNS} FROM api_keys WHERE revoked_at >= $1 ORDER BY revoked_at, id`,

  claimWorker: `INSERT INTO workers (client_id, user_id, first_seen_at, last_seen_at) VALUES ($1, $2, $3, $3)
    ON CONFLICT (client_id) DO NOTHING`,
  // A separate statement on purpose: it sees a row a concurrent claim committed while ours waited.
  workerOwner: 'SELECT user_id FROM workers WHERE client_id = $1',
  // Flags say which fields were given, so one prepared statement serves every partial update.
  updateWorker: `UPDATE workers SET
      name = CASE WHEN $3::boolean THEN $4::text ELSE name END,
      status = CASE WHEN $5::boolean THEN $6::text ELSE status END,
      os = CASE WHEN $7::boolean THEN $8::text ELSE os END,
      hostname = CASE WHEN $9::boolean THEN $10::text ELSE hostname END,
      engine_type = CASE WHEN $11::boolean THEN $12::text ELSE engine_type END,
      valid = CASE WHEN $13::boolean THEN $14::boolean ELSE valid END,
      models = CASE WHEN $15::boolean THEN $16::text[] ELSE models END,
      client_status = CASE WHEN $17::boolean THEN $18::text ELSE client_status END,
      last_seen_at = $2
    WHERE client_id = $1`,
  getWorker: `SELECT ${WORKER_COLUMNS} FROM workers WHERE client_id = $1`,
  listWorkers: `SELECT ${WORKER_COLUMNS} FROM workers WHERE ($1::text IS NULL OR user_id = $1) ORDER BY client_id`,

  // The consumer's batch in one statement, hence one transaction and one round trip: heartbeats
  // ($1) and usage events ($2) arrive as JSON arrays (ids unique within the batch). Raw rows are
  // inserted unless their msg_id is already stored; everything else is folded from `fresh`, the
  // rows inserted now, so a redelivered message changes nothing. GROUP BY gives each upserted
  // row once per statement; ORDER BY locks rows in a fixed order, so concurrent consumers
  // cannot deadlock. greatest() ignores NULLs.
  applyTelemetry: `WITH hb AS (
      -- The heartbeat events themselves (their bus encoding): flattened here, not in JS, so a
      -- batch goes from the bus to the database without being serialised again. The figures
      -- derived when a worker did not send them match the SQLite adapter's (shared.ts).
      SELECT e.id AS msg_id, e."clientId" AS client_id, e."userId" AS user_id,
        timestamptz 'epoch' + e.at * interval '1 millisecond' AS at,
        m."cpuPercent" AS cpu, round(m."memUsedBytes")::bigint AS mem_used,
        round(m."memTotalBytes")::bigint AS mem_total,
        coalesce(m."memPercent", CASE WHEN m."memTotalBytes" > 0
          THEN least(100, m."memUsedBytes" / m."memTotalBytes" * 100) END) AS mem_percent,
        m."diskPercent" AS disk, e."netInBytes" AS net_in, e."netOutBytes" AS net_out, e.inflight,
        e.metrics || jsonb_build_object('models', e.models, 'linkBytesIn', e."linkBytesIn",
          'linkBytesOut', e."linkBytesOut") AS extra,
        round(m."netRxBytes")::bigint AS net_rx, round(m."netTxBytes")::bigint AS net_tx,
        m."netRxRate" AS net_rx_rate, m."netTxRate" AS net_tx_rate, m."uptimeSeconds" AS uptime,
        coalesce(m."deviceCount", jsonb_array_length(coalesce(e.metrics->'gpus', '[]'))) AS device_count,
        round(coalesce(m."deviceMemoryTotalBytes", (SELECT sum((g->>'memoryTotalBytes')::double precision)
          FROM jsonb_array_elements(coalesce(e.metrics->'gpus', '[]')) AS g), 0))::bigint AS device_memory,
        coalesce(m."totalTflops", (SELECT sum((g->>'tflops')::double precision)
          FROM jsonb_array_elements(coalesce(e.metrics->'gpus', '[]')) AS g), 0) AS tflops,
        e."linkBytesIn" AS link_in, e."linkBytesOut" AS link_out
      FROM jsonb_to_recordset($1::jsonb) AS e(id text, "clientId" text, "userId" text, at bigint, inflight integer,
        models integer, "linkBytesIn" bigint, "linkBytesOut" bigint, "netInBytes" bigint, "netOutBytes" bigint,
        metrics jsonb)
      CROSS JOIN LATERAL jsonb_to_record(e.metrics) AS m("cpuPercent" double precision,
        "memUsedBytes" double precision, "memTotalBytes" double precision, "memPercent" double precision,
        "diskPercent" double precision, "netRxBytes" double precision, "netTxBytes" double precision,
        "netRxRate" double precision, "netTxRate" double precision, "uptimeSeconds" double precision,
        "deviceCount" integer, "deviceMemoryTotalBytes" double precision, "totalTflops" double precision)
    ), hb_inserted AS (
      INSERT INTO heartbeats (msg_id, client_id, user_id, at, cpu_percent, mem_used_bytes, mem_total_bytes,
        mem_percent, disk_percent, net_in_bytes, net_out_bytes, inflight, extra)
      SELECT msg_id, client_id, user_id, at, cpu, mem_used, mem_total, mem_percent, disk, net_in, net_out, inflight,
        extra FROM hb
      ON CONFLICT (msg_id) DO NOTHING
      RETURNING msg_id
    ), fresh AS (
      SELECT hb.*, (hb.at AT TIME ZONE 'UTC')::date AS day FROM hb JOIN hb_inserted USING (msg_id)
    ), daily AS (
      INSERT INTO daily_stats AS d (client_id, day, heartbeats, cpu_sum, cpu_samples, max_cpu_percent,
        max_mem_used_bytes, max_inflight, mem_sum, mem_samples, disk_sum, disk_samples, net_in_bytes, net_out_bytes,
        last_heartbeat_at)
      SELECT client_id, day, count(*), coalesce(sum(cpu), 0), count(cpu), max(cpu), max(mem_used), max(inflight),
        coalesce(sum(mem_percent), 0), count(mem_percent), coalesce(sum(disk), 0), count(disk), sum(net_in),
        sum(net_out), max(at)
      FROM fresh GROUP BY 1, 2 ORDER BY 1, 2
      ON CONFLICT (client_id, day) DO UPDATE SET ${addExcluded(FOLD_SUMS.daily, 'd')},
        max_cpu_percent = greatest(d.max_cpu_percent, excluded.max_cpu_percent),
        max_mem_used_bytes = greatest(d.max_mem_used_bytes, excluded.max_mem_used_bytes),
        max_inflight = greatest(d.max_inflight, excluded.max_inflight),
        last_heartbeat_at = greatest(d.last_heartbeat_at, excluded.last_heartbeat_at)
    ), devices AS (
      -- The first device of each index in a report, as the SQLite adapter keeps.
      SELECT DISTINCT ON (f.msg_id, g."index") f.msg_id, f.client_id, f.day, f.at, g."index", g.vendor,
        left(g.name, 256) AS name, g.uuid, g."utilizationPercent" AS util,
        g."memoryUtilizationPercent" AS "memUtil", g."memoryUsedBytes"::bigint AS "memUsed",
        g."memoryTotalBytes"::bigint AS "memTotal", g."temperatureC" AS temp, g."powerDrawW" AS power,
        g."powerLimitW" AS "powerLimit", g.tflops
      FROM fresh f CROSS JOIN LATERAL jsonb_to_recordset(coalesce(f.extra->'gpus', '[]')) AS g("index" integer,
        vendor text, name text, uuid text, "utilizationPercent" double precision,
        "memoryUtilizationPercent" double precision, "memoryUsedBytes" double precision,
        "memoryTotalBytes" double precision, "temperatureC" double precision, "powerDrawW" double precision,
        "powerLimitW" double precision, tflops double precision)
      ORDER BY f.msg_id, g."index"
    ), device_daily AS (
      INSERT INTO device_daily_stats AS d (client_id, device_index, day, name, samples, util_sum, util_samples,
        mem_util_sum, mem_util_samples, temp_sum, temp_samples, max_temp_c, power_sum, power_samples, max_power_w)
      SELECT client_id, "index", day, (array_agg(name ORDER BY at DESC))[1], count(*), coalesce(sum(util), 0),
        count(util), coalesce(sum("memUtil"), 0), count("memUtil"), coalesce(sum(temp), 0), count(temp), max(temp),
        coalesce(sum(power), 0), count(power), max(power)
      FROM devices GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
      ON CONFLICT (client_id, device_index, day) DO UPDATE SET ${addExcluded(FOLD_SUMS.device, 'd')},
        name = excluded.name,
        max_temp_c = greatest(d.max_temp_c, excluded.max_temp_c),
        max_power_w = greatest(d.max_power_w, excluded.max_power_w)
    ), latest AS (
      SELECT DISTINCT ON (client_id) * FROM fresh ORDER BY client_id, at DESC
    ), system_info AS (
      INSERT INTO worker_system_info AS w (client_id, at, cpu_percent, mem_percent, mem_used_bytes, mem_total_bytes,
        disk_percent, net_rx_bytes, net_tx_bytes, net_rx_rate, net_tx_rate, uptime_seconds, device_count,
        device_memory_total_bytes, total_tflops, inflight, link_bytes_in, link_bytes_out)
      SELECT client_id, at, cpu, mem_percent, mem_used, mem_total, disk, net_rx, net_tx, net_rx_rate, net_tx_rate,
        uptime, device_count, device_memory, tflops, inflight, link_in, link_out
      FROM latest ORDER BY client_id
      ON CONFLICT (client_id) DO UPDATE SET ${takeExcluded(SYSTEM_INFO_COLUMNS, ['client_id'])}
      WHERE excluded.at >= w.at
    ), device_info AS (
      INSERT INTO worker_device_info AS w (client_id, device_index, at, vendor, name, uuid, util_percent,
        mem_util_percent, mem_used_bytes, mem_total_bytes, temp_c, power_w, power_limit_w, tflops)
      SELECT d.client_id, d."index", d.at, d.vendor, d.name, d.uuid, d.util, d."memUtil", d."memUsed", d."memTotal",
        d.temp, d.power, d."powerLimit", d.tflops
      FROM latest l JOIN devices d USING (msg_id)
      ORDER BY 1, 2
      ON CONFLICT (client_id, device_index) DO UPDATE SET ${takeExcluded(DEVICE_INFO_COLUMNS, ['client_id', 'device_index'])}
      WHERE excluded.at >= w.at
    ), usage AS (
      SELECT * FROM jsonb_to_recordset($2::jsonb) AS r(msg_id text, at timestamptz, key_id text, user_id text,
        model text, worker_id text, path text, status integer, stream boolean, prompt integer, completion integer,
        total integer, ttfb double precision, duration double precision, bytes_in bigint, bytes_out bigint,
        error integer, metered integer)
    ), usage_inserted AS (
      INSERT INTO request_log (msg_id, at, key_id, user_id, model, worker_id, path, status, duration_ms,
        prompt_tokens, completion_tokens, total_tokens, stream, ttfb_ms, bytes_in, bytes_out)
      SELECT msg_id, at, key_id, user_id, model, nullif(worker_id, ''), path, status, duration, prompt, completion,
        total, stream, ttfb, bytes_in, bytes_out FROM usage
      ON CONFLICT (msg_id) DO NOTHING
      RETURNING msg_id
    ), usage_daily_fold AS (
      INSERT INTO usage_daily AS u (day, key_id, model, worker_id, user_id, requests, errors, metered, prompt_tokens,
        completion_tokens, total_tokens, duration_ms_sum, ttfb_ms_sum, ttfb_samples, bytes_in, bytes_out)
      SELECT (at AT TIME ZONE 'UTC')::date, key_id, model, worker_id, max(user_id), count(*), sum(error),
        sum(metered), coalesce(sum(prompt), 0), coalesce(sum(completion), 0), coalesce(sum(total), 0), sum(duration),
        coalesce(sum(ttfb), 0), count(ttfb), sum(bytes_in), sum(bytes_out)
      FROM usage JOIN usage_inserted USING (msg_id) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
      ON CONFLICT (day, key_id, model, worker_id) DO UPDATE SET ${addExcluded(FOLD_SUMS.usage, 'u')},
        user_id = coalesce(excluded.user_id, u.user_id)
    )
    SELECT (SELECT count(*) FROM hb_inserted)::int AS heartbeats, (SELECT count(*) FROM usage_inserted)::int AS usage`,
  pruneHeartbeats: 'DELETE FROM heartbeats WHERE at < $1',
  pruneRequests: 'DELETE FROM request_log WHERE at < $1',
  listUsage: `SELECT ${dayAsText(USAGE_COLUMNS)} FROM usage_daily
    WHERE ($1::text IS NULL OR key_id = $1) AND ($2::text IS NULL OR user_id = $2)
      AND ($3::text IS NULL OR model = $3) AND ($4::text IS NULL OR worker_id = $4)
      AND ($5::date IS NULL OR day >= $5) AND ($6::date IS NULL OR day <= $6)
    ORDER BY day, key_id, model, worker_id LIMIT $7`,
  listDailyStats: `SELECT ${dayAsText(DAILY_COLUMNS)} FROM daily_stats
    WHERE client_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) ORDER BY day`,
  listDeviceDailyStats: `SELECT ${dayAsText(DEVICE_DAILY_COLUMNS)} FROM device_daily_stats
    WHERE client_id = $1 ORDER BY day, device_index`,
  // Absent bounds are '-infinity' / 'infinity': one range condition serves every case.
  listHeartbeats: `SELECT ${HEARTBEAT_COLUMNS} FROM heartbeats
    WHERE client_id = $1 AND at >= $3 AND at <= $4 ORDER BY at DESC, id DESC LIMIT $2`,
  getSystemInfo: `SELECT ${SYSTEM_INFO_COLUMNS} FROM worker_system_info WHERE client_id = $1`,
  // Devices older than the system info were not in the newest report: gone.
  listDeviceInfo: `SELECT ${DEVICE_INFO_COLUMNS} FROM worker_device_info d
    WHERE client_id = $1 AND at >= (SELECT at FROM worker_system_info s WHERE s.client_id = d.client_id)
    ORDER BY device_index`,

  // One statement for a batch of any size: one typed array per column (11 parameters, so no
  // parameter limit to chunk around), zipped back into rows by unnest. ORDINALITY keeps
  // the batch's order, so ids increase in the order the rows were given.
  recordRequests: `INSERT INTO request_log (at, key_id, user_id, model, worker_id, path, status, duration_ms,
      prompt_tokens, completion_tokens, total_tokens)
    SELECT at, key_id, user_id, model, worker_id, path, status, duration_ms,
      prompt_tokens, completion_tokens, total_tokens
    FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::integer[], $8::double precision[], $9::integer[], $10::integer[], $11::integer[])
      WITH ORDINALITY AS r (at, key_id, user_id, model, worker_id, path, status, duration_ms,
        prompt_tokens, completion_tokens, total_tokens, n)
    ORDER BY n`,
  // No `since`: the caller passes '-infinity', so one range condition serves both cases.
  // A NULL user matches every row.
  listRequests: `SELECT ${REQUEST_COLUMNS} FROM request_log
    WHERE at >= $1 AND ($3::text IS NULL OR user_id = $3) ORDER BY at DESC, id DESC LIMIT $2`,
  listRequestsByKey: `SELECT ${REQUEST_COLUMNS} FROM request_log
    WHERE key_id = $1 AND at >= $2 AND ($4::text IS NULL OR user_id = $4) ORDER BY at DESC, id DESC LIMIT $3`,

  // Schema v4. An update replaces every field but the key (name, version) and created_at. (Each
  // conflict still draws an identity value: ids have gaps, which nothing relies on.)
  upsertModel: `INSERT INTO models (name, version, version_code, engine_type, is_active, min_memory_mb,
      min_gpu_memory_gb, download_url, checksum, expected_size, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
    ON CONFLICT (name, version) DO UPDATE SET ${takeExcluded(MODEL_COLUMNS, ['id', 'name', 'version', 'created_at'])}
    RETURNING ${MODEL_COLUMNS}`,
  // A NULL filter matches everything; a model without a GPU memory figure fits any device.
  // COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
  listModels: `SELECT ${MODEL_COLUMNS} FROM models
    WHERE ($1::boolean IS NULL OR is_active = $1)
      AND ($2::double precision IS NULL OR min_gpu_memory_gb IS NULL OR min_gpu_memory_gb <= $2)
    ORDER BY name COLLATE "C", version COLLATE "C"`,

  getSetting: 'SELECT value FROM settings WHERE key = $1',
  setSetting:
    'INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
} as const

type SqlName = keyof typeof SQL

/** bigint columns arrive as strings (they may exceed 2^53; ours never do). */
type Int8 = string | number

interface UserRow {
  id: string
  name: string
  created_at: Date
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
  worker_ids: string[]
  models: string[] | null
  rpm_limit: number | null
  tpm_limit: Int8 | null
  expires_at: Date | null
  revoked_at: Date | null
  created_at: Date
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
  valid: boolean
  models: string[]
  first_seen_at: Date
  last_seen_at: Date
}

interface RequestRow {
  id: Int8
  at: Date
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

const int8 = (value: Int8 | null): number | null => (value === null ? null : Number(value))

function toUser(row: UserRow): UserRecord {
  return { id: row.id, name: row.name, createdAt: row.created_at }
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
    workerIds: row.worker_ids,
    models: row.models,
    rpmLimit: row.rpm_limit,
    tpmLimit: int8(row.tpm_limit),
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    createdAt: row.created_at,
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
    valid: row.valid,
    models: row.models,
    firstSeenAt: row.first_seen_at,
    lastSeenAt: row.last_seen_at,
  }
}

function toRequest(row: RequestRow): RequestLogRecord {
  return {
    id: Number(row.id),
    at: row.at,
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

/** SQLSTATE classes after which trying again can succeed: connection, resources, shutdown/cancel, serialization. */
const RETRYABLE_CLASSES = new Set(['08', '40', '53', '57', '58'])

/**
 * Maps a `pg` error to a FabricError. Server errors are classified by SQLSTATE; anything
 * else the driver raises (refused/reset sockets, connect and read timeouts, "Connection
 * terminated") means the database cannot be reached.
 */
function toStoreError(err: unknown): FabricError {
  if (err instanceof FabricError) return err
  const message = err instanceof Error ? err.message || String((err as { code?: unknown }).code) : String(err)
  if (err instanceof DatabaseError) {
    const sqlState = err.code ?? ''
    const cls = sqlState.slice(0, 2)
    if (cls === '22' || cls === '23') {
      return new FabricError(ErrorCodes.BAD_REQUEST, `postgres: ${message}`, { cause: err })
    }
    if (RETRYABLE_CLASSES.has(cls)) {
      return new FabricError(ErrorCodes.STORE_UNAVAILABLE, `PostgreSQL unavailable: ${message}`, {
        cause: err,
        retryable: true,
      })
    }
    return new FabricError(ErrorCodes.INTERNAL, `postgres: ${message} (${sqlState})`, { cause: err })
  }
  if (err instanceof TypeError || err instanceof RangeError) {
    return new FabricError(ErrorCodes.INTERNAL, `postgres: ${message}`, { cause: err })
  }
  return new FabricError(ErrorCodes.STORE_UNAVAILABLE, `PostgreSQL unavailable: ${message}`, {
    cause: err,
    retryable: true,
  })
}

/** The PostgreSQL `Store`. Connects lazily: constructing it never fails on a down database. */
export class PostgresStore implements Store, StoreTelemetry {
  readonly kind = 'postgres' as const
  readonly #pool: Pool
  readonly #onQuery: ((sql: string) => void) | undefined
  #closed = false

  constructor(options: PostgresStoreOptions) {
    this.#onQuery = options.onQuery
    this.#pool = new Pool({
      connectionString: options.url,
      max: options.poolSize ?? PG_POOL_SIZE,
      connectionTimeoutMillis: options.connectTimeoutMs ?? PG_CONNECT_TIMEOUT_MS,
      statement_timeout: options.statementTimeoutMs ?? PG_STATEMENT_TIMEOUT_MS,
      query_timeout: PG_QUERY_TIMEOUT_MS,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: 'gpufabric',
      // Idle connections alone must not keep a CLI command alive.
      allowExitOnIdle: true,
    })
    // An idle connection dies when the server restarts. pg-pool already drops it; without a
    // listener the 'error' event would crash the process.
    this.#pool.on('error', (err) => options.onIdleError?.(err))
  }

  /** Runs the named statement `name` on any pooled connection. */
  async #query<R extends QueryResultRow>(
    name: SqlName,
    values: unknown[] = [],
  ): Promise<{ rows: R[]; rowCount: number }> {
    if (this.#closed) throw closedError('postgres')
    this.#onQuery?.(SQL[name])
    try {
      const result = await this.#pool.query<R>({ name, text: SQL[name], values })
      return { rows: result.rows, rowCount: result.rowCount ?? 0 }
    } catch (err) {
      throw toStoreError(err)
    }
  }

  async #one<R extends QueryResultRow>(name: SqlName, values: unknown[] = []): Promise<R | undefined> {
    return (await this.#query<R>(name, values)).rows[0]
  }

  /**
   * Applies pending migrations. `upTo` (tests and tooling) stops after that version, e.g.
   * to build an older schema and then migrate it forward.
   */
  async migrate(upTo = Number.POSITIVE_INFINITY): Promise<number[]> {
    if (this.#closed) throw closedError('postgres')
    let client: PoolClient
    try {
      client = await this.#pool.connect()
    } catch (err) {
      throw toStoreError(err)
    }
    // While checked out, the pool does not listen for this connection's errors: we must.
    const onError = () => undefined
    client.on('error', onError)
    let failure: Error | undefined
    const run = async (sql: string, values: unknown[] = []) => {
      this.#onQuery?.(sql)
      return client.query(sql, values)
    }
    try {
      // A session lock: servers starting together apply each migration exactly once.
      await run("SELECT pg_advisory_lock(hashtext('gpufabric:migrate'))")
      await run(MIGRATIONS_TABLE.postgres)
      const { rows } = await run('SELECT coalesce(max(version), 0)::int AS version FROM schema_migrations')
      const current = (rows[0] as { version: number }).version
      const applied: number[] = []
      for (const migration of MIGRATIONS) {
        if (migration.version <= current) continue
        if (migration.version > upTo) break
        await run('BEGIN')
        try {
          for (const sql of migration.postgres) await run(sql)
          await run('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [
            migration.version,
            migration.name,
          ])
          await run('COMMIT')
        } catch (err) {
          await run('ROLLBACK').catch(() => undefined)
          throw err
        }
        applied.push(migration.version)
      }
      await run("SELECT pg_advisory_unlock(hashtext('gpufabric:migrate'))")
      return applied
    } catch (err) {
      // Destroying the connection also frees the advisory lock.
      failure = err instanceof Error ? err : new Error(String(err))
      throw toStoreError(err)
    } finally {
      client.off('error', onError)
      client.release(failure)
    }
  }

  async schemaVersion(): Promise<number> {
    const table = await this.#one<{ found: boolean }>('hasMigrationsTable')
    if (table?.found !== true) return 0
    return (await this.#one<{ version: number }>('schemaVersion'))?.version ?? 0
  }

  async createUser(name: string): Promise<UserRecord> {
    return toUser((await this.#one<UserRow>('insertUser', [newId('usr'), name, new Date()]))!)
  }

  async ensureUser(name: string): Promise<UserRecord> {
    // Existing users are the common case: one read, no write.
    const found = await this.#one<UserRow>('getUserByName', [name])
    if (found !== undefined) return toUser(found)
    const created = await this.#one<UserRow>('insertUserIfMissing', [newId('usr'), name, new Date()])
    // Lost a race with another server: its row is committed, so a new statement sees it.
    return toUser(created ?? (await this.#one<UserRow>('getUserByName', [name]))!)
  }

  async getUser(id: string): Promise<UserRecord | undefined> {
    const row = await this.#one<UserRow>('getUser', [id])
    return row === undefined ? undefined : toUser(row)
  }

  async listUsers(): Promise<UserRecord[]> {
    return (await this.#query<UserRow>('listUsers')).rows.map(toUser)
  }

  async createKey(key: NewKey): Promise<KeyRecord> {
    const row = await this.#one<KeyRow>('insertKey', [
      key.id ?? newId('key'),
      key.prefix,
      key.hash,
      key.kind,
      key.userId,
      key.name ?? null,
      key.accessLevel,
      key.workerIds ?? [],
      key.models ?? null,
      key.rpmLimit ?? null,
      key.tpmLimit ?? null,
      key.expiresAt ?? null,
      new Date(),
      key.scope ?? 'inference',
    ])
    return toKey(row!)
  }

  async getKey(id: string): Promise<KeyRecord | undefined> {
    const row = await this.#one<KeyRow>('getKey', [id])
    return row === undefined ? undefined : toKey(row)
  }

  async findKeyByPrefix(prefix: string): Promise<KeyRecord | undefined> {
    const row = await this.#one<KeyRow>('findKeyByPrefix', [prefix])
    return row === undefined ? undefined : toKey(row)
  }

  async listKeys(filter: { userId?: string; kind?: KeyKind } = {}): Promise<KeyRecord[]> {
    const { rows } = await this.#query<KeyRow>('listKeys', [filter.userId ?? null, filter.kind ?? null])
    return rows.map(toKey)
  }

  async revokeKey(id: string, at: Date = new Date()): Promise<boolean> {
    return (await this.#query('revokeKey', [at, id])).rowCount === 1
  }

  async updateKey(id: string, fields: KeyChanges): Promise<KeyRecord | undefined> {
    const row = await this.#one<KeyRow>('updateKey', [
      id,
      fields.name !== undefined,
      fields.name ?? null,
      fields.models !== undefined,
      fields.models ?? null,
      fields.rpmLimit !== undefined,
      fields.rpmLimit ?? null,
      fields.tpmLimit !== undefined,
      fields.tpmLimit ?? null,
      fields.expiresAt !== undefined,
      fields.expiresAt ?? null,
    ])
    return row === undefined ? undefined : toKey(row)
  }

  /** Keys revoked at or after `since` (inclusive: a poller cannot miss one revoked in the same millisecond). */
  async keysRevokedSince(since: Date): Promise<KeyRecord[]> {
    return (await this.#query<KeyRow>('keysRevokedSince', [since])).rows.map(toKey)
  }

  async claimWorker(clientId: string, userId: string): Promise<ClaimResult> {
    if ((await this.#query('claimWorker', [clientId, userId, new Date()])).rowCount === 1) return 'created'
    const owner = await this.#one<{ user_id: string }>('workerOwner', [clientId])
    if (owner === undefined)
      throw new FabricError(ErrorCodes.INTERNAL, `worker ${clientId} vanished while claimed`)
    return owner.user_id === userId ? 'owned' : 'taken'
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
    const pair = <K extends keyof typeof fields>(field: K) => [
      fields[field] !== undefined,
      fields[field] ?? null,
    ]
    const { rowCount } = await this.#query('updateWorker', [
      clientId,
      new Date(),
      ...pair('name'),
      ...pair('status'),
      ...pair('os'),
      ...pair('hostname'),
      ...pair('engineType'),
      ...pair('valid'),
      ...pair('models'),
      ...pair('clientStatus'),
    ])
    if (rowCount === 0) throw new FabricError(ErrorCodes.NOT_FOUND, `worker ${clientId} is not registered`)
  }

  async getWorker(clientId: string): Promise<WorkerRecord | undefined> {
    const row = await this.#one<WorkerRow>('getWorker', [clientId])
    return row === undefined ? undefined : toWorker(row)
  }

  async listWorkers(filter: { userId?: string } = {}): Promise<WorkerRecord[]> {
    return (await this.#query<WorkerRow>('listWorkers', [filter.userId ?? null])).rows.map(toWorker)
  }

  async applyTelemetry(batch: TelemetryBatch): Promise<TelemetryWrite> {
    // One row per id: a message the producer sent twice must not be folded twice by the
    // set-based statement (which joins the batch to the rows it inserted, by id).
    // The events as the bus carried them when the caller has that (no second serialisation).
    const heartbeats = uniqueById(batch.heartbeats)
    const heartbeatJson = `[${heartbeats.map((e) => batch.encoded?.get(e)?.toString('utf8') ?? JSON.stringify(e)).join(',')}]`
    const usage = uniqueById(batch.usage).map((e) => {
      const r = usageRowValues(e)
      return {
        msg_id: r.msgId,
        at: new Date(r.atMs).toISOString(),
        key_id: r.keyId,
        user_id: r.userId,
        model: r.model,
        worker_id: r.workerId,
        path: r.path,
        status: r.status,
        stream: r.stream,
        prompt: r.prompt,
        completion: r.completion,
        total: r.total,
        ttfb: r.ttfb,
        duration: r.duration,
        bytes_in: r.bytesIn,
        bytes_out: r.bytesOut,
        error: r.error,
        metered: r.metered,
      }
    })
    if (heartbeats.length === 0 && usage.length === 0) return { heartbeats: 0, usage: 0, duplicates: 0 }
    const row = await this.#one<{ heartbeats: number; usage: number }>('applyTelemetry', [
      withoutNul(heartbeatJson),
      withoutNul(JSON.stringify(usage)),
    ])
    const written = { heartbeats: row?.heartbeats ?? 0, usage: row?.usage ?? 0 }
    return {
      ...written,
      duplicates: batch.heartbeats.length + batch.usage.length - written.heartbeats - written.usage,
    }
  }

  async pruneTelemetry(before: Date): Promise<{ heartbeats: number; requests: number }> {
    const at = new Date(sinceMs(before))
    const heartbeats = (await this.#query('pruneHeartbeats', [at])).rowCount
    const requests = (await this.#query('pruneRequests', [at])).rowCount
    return { heartbeats, requests }
  }

  async listUsage(filter: UsageFilter = {}): Promise<UsageDailyRecord[]> {
    const { rows } = await this.#query('listUsage', [
      filter.keyId ?? null,
      filter.userId ?? null,
      filter.model ?? null,
      filter.workerId ?? null,
      filter.from ?? null,
      filter.to ?? null,
      clampLimit(filter.limit, 1_000),
    ])
    return rows.map(toUsage)
  }

  async listDailyStats(clientId: string, range: DayRange = {}): Promise<DailyStatsRecord[]> {
    const from = dayBound(range.from, 'from')
    const to = dayBound(range.to, 'to')
    return (await this.#query('listDailyStats', [clientId, from, to])).rows.map(toDailyStats)
  }

  async listDeviceDailyStats(clientId: string): Promise<DeviceDailyStatsRecord[]> {
    return (await this.#query('listDeviceDailyStats', [clientId])).rows.map(toDeviceDaily)
  }

  async listHeartbeats(clientId: string, limit?: number, range: TimeRange = {}): Promise<HeartbeatRecord[]> {
    const bound = (at: Date | undefined, none: string, what: string) =>
      at == null ? none : new Date(timeBoundMs(at, 0, what)).toISOString()
    const from = bound(range.from, '-infinity', 'from')
    const to = bound(range.to, 'infinity', 'to')
    return (await this.#query('listHeartbeats', [clientId, clampLimit(limit), from, to])).rows.map(
      toHeartbeat,
    )
  }

  async getSystemInfo(clientId: string): Promise<SystemInfoRecord | undefined> {
    const row = await this.#one('getSystemInfo', [clientId])
    return row === undefined ? undefined : toSystemInfo(row)
  }

  async listDeviceInfo(clientId: string): Promise<DeviceInfoRecord[]> {
    return (await this.#query('listDeviceInfo', [clientId])).rows.map(toDeviceInfo)
  }

  async recordRequests(rows: readonly Omit<RequestLogRecord, 'id'>[]): Promise<void> {
    if (rows.length === 0) return
    if (this.#closed) throw closedError('postgres')
    const columns: unknown[][] = Array.from({ length: 11 }, () => [])
    rows.forEach((input, index) => {
      const row = requestRowValues(input, index)
      const values = [
        new Date(row.atMs).toISOString(),
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
      ]
      for (const [i, value] of values.entries()) columns[i]!.push(value)
    })
    await this.#query('recordRequests', columns)
  }

  async listRequests(
    filter: { keyId?: string; userId?: string; since?: Date; limit?: number } = {},
  ): Promise<RequestLogRecord[]> {
    if (this.#closed) throw closedError('postgres')
    const since = filter.since == null ? '-infinity' : new Date(sinceMs(filter.since)).toISOString()
    const limit = clampLimit(filter.limit)
    const userId = filter.userId ?? null
    const { rows } =
      filter.keyId == null
        ? await this.#query<RequestRow>('listRequests', [since, limit, userId])
        : await this.#query<RequestRow>('listRequestsByKey', [filter.keyId, since, limit, userId])
    return rows.map(toRequest)
  }

  async upsertModel(model: NewModel): Promise<ModelRecord> {
    const m = modelRowValues(model)
    const row = await this.#one('upsertModel', [
      m.name,
      m.version,
      m.versionCode,
      m.engineType,
      m.isActive,
      m.minMemoryMb,
      m.minGpuMemoryGb,
      m.downloadUrl,
      m.checksum,
      m.expectedSize,
      new Date(),
    ])
    return toModel(row!)
  }

  async listModels(filter: { isActive?: boolean; minGpuMemoryGb?: number } = {}): Promise<ModelRecord[]> {
    const { isActive, minGpuMemoryGb } = modelFilterValues(filter)
    return (await this.#query('listModels', [isActive, minGpuMemoryGb])).rows.map(toModel)
  }

  async getSetting(key: string): Promise<string | undefined> {
    return (await this.#one<{ value: string }>('getSetting', [key]))?.value
  }

  async setSetting(key: string, value: string): Promise<void> {
    await this.#query('setSetting', [key, value])
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#pool.end()
  }
}

/** An escaped NUL in JSON text (`\u0000` after an even number of backslashes). */
const ESCAPED_NUL = /(?<!\\)((?:\\\\)*)\\u0000/g

/**
 * JSON text with every escaped NUL as U+FFFD: jsonb and `text` cannot hold NUL, and the
 * SQLite adapter stores U+FFFD as well (`storableText`).
 */
function withoutNul(json: string): string {
  return json.includes('\\u0000') ? json.replace(ESCAPED_NUL, '$1\\uFFFD') : json
}
