/**
 * Pieces both store adapters share: id generation, the telemetry read-back both adapters
 * offer beyond the `Store` interface, and the bookkeeping of "one query per call".
 */
import { randomBytes } from 'node:crypto'
import { ErrorCodes, FabricError } from '../errors/index.js'
import type { HeartbeatEvent, UsageEvent } from '../protocol/events.js'
import type { HeartbeatRecord, ModelRecord, NewModel, RequestLogRecord, UsageDailyRecord } from './index.js'

/** Column lists both dialects select (the schemas in migrations.ts share the names). */
export const KEY_COLUMNS =
  'id, prefix, hash, kind, user_id, name, access_level, scope, worker_ids, models, rpm_limit, tpm_limit, expires_at, revoked_at, created_at'
export const WORKER_COLUMNS =
  'client_id, user_id, name, status, client_status, os, hostname, engine_type, valid, models, first_seen_at, last_seen_at'
export const MODEL_COLUMNS = `id, name, version, version_code, engine_type, is_active, min_memory_mb,
  min_gpu_memory_gb, download_url, checksum, expected_size, created_at, updated_at`
export const REQUEST_COLUMNS =
  'id, at, key_id, user_id, model, worker_id, path, status, duration_ms, prompt_tokens, completion_tokens, total_tokens'

/** A new public id: `prefix` and 16 random hex characters (64 bits), e.g. `key_3f9a…`. */
export function newId(prefix: 'key' | 'usr'): string {
  return `${prefix}_${randomBytes(8).toString('hex')}`
}

/** One worker's aggregates for one UTC day, folded from its heartbeats (the seed's fields). */
export interface DailyStatsRecord {
  readonly clientId: string
  /** UTC day, `YYYY-MM-DD`. */
  readonly day: string
  readonly heartbeats: number
  /** Means over the heartbeats that reported the figure; null when none did. */
  readonly avgCpuPercent: number | null
  readonly avgMemPercent: number | null
  readonly avgDiskPercent: number | null
  readonly maxCpuPercent: number | null
  readonly maxMemUsedBytes: number | null
  readonly maxInflight: number
  /** Network bytes in / out over the day (sums of the per-heartbeat figures). */
  readonly netInBytes: number
  readonly netOutBytes: number
  readonly lastHeartbeatAt: Date | null
}

/** One device's aggregates for one UTC day. */
export interface DeviceDailyStatsRecord {
  readonly clientId: string
  readonly deviceIndex: number
  readonly day: string
  readonly name: string
  readonly samples: number
  readonly avgUtilizationPercent: number | null
  readonly avgMemoryUtilizationPercent: number | null
  readonly avgTemperatureC: number | null
  readonly maxTemperatureC: number | null
  readonly avgPowerW: number | null
  readonly maxPowerW: number | null
}

/** A worker's latest system readings. */
export interface SystemInfoRecord {
  readonly clientId: string
  readonly at: Date
  readonly cpuPercent: number | null
  readonly memPercent: number | null
  readonly memUsedBytes: number | null
  readonly memTotalBytes: number | null
  readonly diskPercent: number | null
  readonly netRxBytes: number | null
  readonly netTxBytes: number | null
  readonly netRxRate: number | null
  readonly netTxRate: number | null
  readonly uptimeSeconds: number | null
  readonly deviceCount: number
  readonly deviceMemoryTotalBytes: number
  readonly totalTflops: number
  readonly inflight: number
  readonly linkBytesIn: number
  readonly linkBytesOut: number
}

/** A device's latest readings. */
export interface DeviceInfoRecord {
  readonly clientId: string
  readonly deviceIndex: number
  readonly at: Date
  readonly vendor: string
  readonly name: string
  readonly uuid: string | null
  readonly utilizationPercent: number | null
  readonly memoryUtilizationPercent: number | null
  readonly memoryUsedBytes: number | null
  readonly memoryTotalBytes: number | null
  readonly temperatureC: number | null
  readonly powerDrawW: number | null
  readonly powerLimitW: number | null
  readonly tflops: number
}

/** Bounds of `at`, inclusive; either end optional. */
export interface TimeRange {
  readonly from?: Date | undefined
  readonly to?: Date | undefined
}

/** Bounds of a day (`YYYY-MM-DD`), inclusive; either end optional. */
export interface DayRange {
  readonly from?: string | undefined
  readonly to?: string | undefined
}

/**
 * Read-back of the telemetry tables. Not part of `Store` (the consumer writes them, the
 * management API reads what it needs); both adapters offer it for tests, the API and tooling.
 */
export interface StoreTelemetry {
  /** A worker's daily statistics, oldest day first; `range` bounds the day (`YYYY-MM-DD`, inclusive, either end optional). */
  listDailyStats(clientId: string, range?: DayRange): Promise<DailyStatsRecord[]>
  /** A worker's devices' daily statistics, oldest day first, then by device. */
  listDeviceDailyStats(clientId: string): Promise<DeviceDailyStatsRecord[]>
  /** A worker's newest heartbeats, newest first; `range` bounds `at` (inclusive, either end optional). */
  listHeartbeats(clientId: string, limit?: number, range?: TimeRange): Promise<HeartbeatRecord[]>
  getSystemInfo(clientId: string): Promise<SystemInfoRecord | undefined>
  /** A worker's devices as last reported, by index. */
  listDeviceInfo(clientId: string): Promise<DeviceInfoRecord[]>
}

/** The UTC day (`YYYY-MM-DD`) a heartbeat counts towards. */
export function utcDay(at: Date): string {
  return at.toISOString().slice(0, 10)
}

/** The error for any call made after `close()`: a lifecycle bug, so not retryable. */
export function closedError(kind: string): FabricError {
  return new FabricError(ErrorCodes.STORE_UNAVAILABLE, `the ${kind} store is closed`)
}

/** Non-negative integer limit for list reads, so a bad argument cannot become a huge scan. */
export function clampLimit(limit: number | undefined, fallback = 100, max = 10_000): number {
  if (limit === undefined || !Number.isFinite(limit)) return fallback
  return Math.max(0, Math.min(max, Math.trunc(limit)))
}

/** A number rounded to a whole one; null and undefined become null. */
export const wholeOrNull = (n: number | null | undefined): number | null => (n == null ? null : Math.round(n))

/** Range of PostgreSQL `integer` (request_log's status and token counts, schema v2). */
export const INT32_MIN = -(2 ** 31)
/** Range of PostgreSQL `integer` (request_log's status and token counts, schema v2). */
export const INT32_MAX = 2 ** 31 - 1

const isInt32 = (n: number): boolean => Number.isInteger(n) && n >= INT32_MIN && n <= INT32_MAX

/** A request-log row as both adapters bind it: `at` in epoch ms, absent optionals as null. */
export type RequestRowValues = Omit<RequestLogRecord, 'id' | 'at'> & { readonly atMs: number }

/**
 * Checks and normalises one request-log row, so both adapters accept and refuse the same
 * values: an invalid date, a status or token count outside 32 bits (PostgreSQL `integer`)
 * or a non-finite duration fails the whole batch with BAD_REQUEST before any query; token
 * counts are rounded. The store refuses rather than alters: the request tracker, which takes
 * workers' and engines' numbers, bounds its rows first (`boundRequestRow`) and drops alone
 * any row still refused.
 */
export function requestRowValues(row: Omit<RequestLogRecord, 'id'>, index: number): RequestRowValues {
  const bad = (what: string) => new FabricError(ErrorCodes.BAD_REQUEST, `request log row ${index}: ${what}`)
  const atMs = row.at instanceof Date ? row.at.getTime() : Number.NaN
  if (!Number.isFinite(atMs)) throw bad('at is not a valid Date')
  if (!isInt32(row.status)) throw bad(`status ${String(row.status)} is not a 32-bit integer`)
  if (!Number.isFinite(row.durationMs)) throw bad(`durationMs ${String(row.durationMs)} is not finite`)
  const tokens = (name: string, n: number | null | undefined): number | null => {
    const whole = wholeOrNull(n)
    if (whole !== null && !isInt32(whole)) throw bad(`${name} ${String(n)} is not a 32-bit integer`)
    return whole
  }
  return {
    atMs,
    keyId: row.keyId,
    userId: row.userId ?? null,
    model: row.model,
    workerId: row.workerId ?? null,
    path: row.path,
    status: row.status,
    durationMs: row.durationMs,
    promptTokens: tokens('promptTokens', row.promptTokens),
    completionTokens: tokens('completionTokens', row.completionTokens),
    totalTokens: tokens('totalTokens', row.totalTokens),
  }
}

/** `since` of `listRequests` in epoch ms; an invalid Date is a BAD_REQUEST in both adapters. */
export function sinceMs(since: Date): number {
  const ms = since instanceof Date ? since.getTime() : Number.NaN
  if (!Number.isFinite(ms)) throw new FabricError(ErrorCodes.BAD_REQUEST, 'since is not a valid Date')
  return ms
}

/** A bound of a `TimeRange` in epoch ms, `fallback` when absent; an invalid Date is a BAD_REQUEST. */
export function timeBoundMs(at: Date | undefined, fallback: number, what: string): number {
  if (at == null) return fallback
  const ms = at instanceof Date ? at.getTime() : Number.NaN
  if (!Number.isFinite(ms)) throw new FabricError(ErrorCodes.BAD_REQUEST, `${what} is not a valid Date`)
  return ms
}

/**
 * A bound of a `DayRange`, null when absent. Anything but a real `YYYY-MM-DD` day is a
 * BAD_REQUEST in both adapters (SQLite would compare any text; PostgreSQL would refuse it as a date).
 */
export function dayBound(day: string | undefined, what: string): string | null {
  if (day == null) return null
  const ms =
    typeof day === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(day) ? Date.parse(`${day}T00:00:00Z`) : Number.NaN
  // A day past the month's end (2030-02-30) parses as a later one: compare it back.
  if (Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 10) !== day)
    throw new FabricError(ErrorCodes.BAD_REQUEST, `${what} ${String(day)} is not a YYYY-MM-DD day`)
  return day
}

/** A model as both adapters bind it (absent optionals null; `isActive` defaults to true). */
export type ModelRowValues = Omit<ModelRecord, 'id' | 'createdAt' | 'updatedAt'>

/** Normalises a `NewModel`: every field given, so an upsert replaces all of them. */
export function modelRowValues(model: NewModel): ModelRowValues {
  return {
    name: model.name,
    version: model.version,
    versionCode: model.versionCode,
    engineType: model.engineType,
    isActive: model.isActive ?? true,
    minMemoryMb: model.minMemoryMb ?? null,
    minGpuMemoryGb: model.minGpuMemoryGb ?? null,
    downloadUrl: model.downloadUrl ?? null,
    checksum: model.checksum ?? null,
    expectedSize: model.expectedSize ?? null,
  }
}

/** `listModels`' filter with absent fields as null; NaN is a BAD_REQUEST (the dialects would disagree on it). */
export function modelFilterValues(filter: { isActive?: boolean; minGpuMemoryGb?: number }): {
  isActive: boolean | null
  minGpuMemoryGb: number | null
} {
  const gb = filter.minGpuMemoryGb ?? null
  if (gb !== null && (typeof gb !== 'number' || Number.isNaN(gb)))
    throw new FabricError(ErrorCodes.BAD_REQUEST, `minGpuMemoryGb ${String(gb)} is not a number`)
  return { isActive: filter.isActive ?? null, minGpuMemoryGb: gb }
}

/** NUL, which PostgreSQL `text` cannot hold, as U+FFFD (both adapters store the same text). */
export function storableText<T extends string | null>(text: T): T {
  return (text?.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text) as T
}

const finiteOrNull = (n: number | null | undefined): number | null =>
  typeof n === 'number' && Number.isFinite(n) ? n : null

/** A heartbeat event as both adapters bind it (flat, absent readings null). */
export interface HeartbeatRowValues {
  readonly msgId: string
  readonly clientId: string
  readonly userId: string | null
  readonly atMs: number
  readonly day: string
  readonly cpu: number | null
  readonly memUsed: number | null
  readonly memTotal: number | null
  readonly memPercent: number | null
  readonly disk: number | null
  /** Network bytes since the previous heartbeat. */
  readonly netIn: number
  readonly netOut: number
  readonly inflight: number
  readonly netRx: number | null
  readonly netTx: number | null
  readonly netRxRate: number | null
  readonly netTxRate: number | null
  readonly uptime: number | null
  readonly deviceCount: number
  readonly deviceMemory: number
  readonly tflops: number
  readonly linkIn: number
  readonly linkOut: number
}

/** One device of a heartbeat, flat. */
export interface DeviceRowValues {
  readonly index: number
  readonly vendor: string
  readonly name: string
  readonly uuid: string | null
  readonly util: number | null
  readonly memUtil: number | null
  readonly memUsed: number | null
  readonly memTotal: number | null
  readonly temp: number | null
  readonly power: number | null
  readonly powerLimit: number | null
  readonly tflops: number
}

/** The whole report (GPUs, counters, models): a raw heartbeat row's `extra`. */
export function heartbeatExtra(e: HeartbeatEvent): Record<string, unknown> {
  return { ...e.metrics, models: e.models, linkBytesIn: e.linkBytesIn, linkBytesOut: e.linkBytesOut }
}

/**
 * A heartbeat's devices, flat. Devices with the same index (a broken report) keep the first,
 * so the per-device upserts never touch one row twice in a statement.
 */
export function deviceRowValues(e: HeartbeatEvent): DeviceRowValues[] {
  const seen = new Set<number>()
  const devices: DeviceRowValues[] = []
  for (const g of e.metrics.gpus ?? []) {
    if (seen.has(g.index)) continue
    seen.add(g.index)
    devices.push({
      index: g.index,
      vendor: g.vendor,
      name: storableText(g.name),
      uuid: storableText(g.uuid),
      util: g.utilizationPercent,
      memUtil: g.memoryUtilizationPercent,
      memUsed: wholeOrNull(g.memoryUsedBytes),
      memTotal: wholeOrNull(g.memoryTotalBytes),
      temp: g.temperatureC,
      power: g.powerDrawW,
      powerLimit: g.powerLimitW,
      tflops: g.tflops,
    })
  }
  return devices
}

/**
 * Flattens a heartbeat event for the tables of schema v3 (without `extra` and the devices:
 * each adapter passes those in its own form). Memory % is the worker's, or used / total when
 * it sent only bytes.
 */
export function heartbeatRowValues(e: HeartbeatEvent): HeartbeatRowValues {
  const m = e.metrics
  const memPercent =
    m.memPercent ??
    (m.memUsedBytes !== undefined && m.memTotalBytes !== undefined && m.memTotalBytes > 0
      ? Math.min(100, (m.memUsedBytes / m.memTotalBytes) * 100)
      : null)
  const gpus = m.gpus ?? []
  return {
    msgId: e.id,
    clientId: storableText(e.clientId),
    userId: storableText(e.userId),
    atMs: e.at,
    day: utcDay(new Date(e.at)),
    cpu: finiteOrNull(m.cpuPercent),
    memUsed: wholeOrNull(m.memUsedBytes),
    memTotal: wholeOrNull(m.memTotalBytes),
    memPercent,
    disk: finiteOrNull(m.diskPercent),
    netIn: e.netInBytes,
    netOut: e.netOutBytes,
    inflight: e.inflight,
    netRx: wholeOrNull(m.netRxBytes),
    netTx: wholeOrNull(m.netTxBytes),
    netRxRate: finiteOrNull(m.netRxRate),
    netTxRate: finiteOrNull(m.netTxRate),
    uptime: finiteOrNull(m.uptimeSeconds),
    deviceCount: m.deviceCount ?? gpus.length,
    deviceMemory: Math.round(
      m.deviceMemoryTotalBytes ?? gpus.reduce((sum, g) => sum + (g.memoryTotalBytes ?? 0), 0),
    ),
    tflops: m.totalTflops ?? gpus.reduce((sum, g) => sum + g.tflops, 0),
    linkIn: e.linkBytesIn,
    linkOut: e.linkBytesOut,
  }
}

/** A usage event as both adapters bind it. */
export interface UsageRowValues {
  readonly msgId: string
  readonly atMs: number
  readonly day: string
  readonly keyId: string
  readonly userId: string | null
  readonly model: string
  /** '' when no worker answered (a primary-key column of `usage_daily`). */
  readonly workerId: string
  readonly path: string
  readonly status: number
  readonly stream: boolean
  readonly prompt: number | null
  readonly completion: number | null
  readonly total: number | null
  readonly ttfb: number | null
  readonly duration: number
  readonly bytesIn: number
  readonly bytesOut: number
  readonly error: number
  readonly metered: number
}

/**
 * Flattens a usage event. Token counts go to `request_log` (32-bit columns since v2) clamped to
 * INT32_MAX; the daily sums are 64-bit and take them as clamped too, so the two always agree.
 */
export function usageRowValues(e: UsageEvent): UsageRowValues {
  const tokens = (n: number | null) => (n === null ? null : Math.min(INT32_MAX, n))
  return {
    msgId: e.id,
    atMs: e.at,
    day: utcDay(new Date(e.at)),
    keyId: storableText(e.keyId),
    userId: storableText(e.userId),
    model: storableText(e.model),
    workerId: storableText(e.workerId ?? ''),
    path: storableText(e.path),
    status: e.status,
    stream: e.stream,
    prompt: tokens(e.promptTokens),
    completion: tokens(e.completionTokens),
    total: tokens(e.totalTokens),
    ttfb: e.ttfbMs,
    duration: e.durationMs,
    bytesIn: e.bytesIn,
    bytesOut: e.bytesOut,
    error: e.status >= 400 ? 1 : 0,
    metered: e.totalTokens === null ? 0 : 1,
  }
}

/** Column lists of the telemetry reads (PostgreSQL selects `day` as text: pg would make a `date` local midnight). */
export const DAILY_COLUMNS = `client_id, day, heartbeats, avg_cpu_percent, avg_mem_percent, avg_disk_percent,
  max_cpu_percent, max_mem_used_bytes, max_inflight, net_in_bytes, net_out_bytes, last_heartbeat_at`
export const DEVICE_DAILY_COLUMNS = `client_id, device_index, day, name, samples,
  util_sum / NULLIF(util_samples, 0) AS avg_util, mem_util_sum / NULLIF(mem_util_samples, 0) AS avg_mem_util,
  temp_sum / NULLIF(temp_samples, 0) AS avg_temp, max_temp_c, power_sum / NULLIF(power_samples, 0) AS avg_power,
  max_power_w`
export const HEARTBEAT_COLUMNS = `msg_id, client_id, at, cpu_percent, mem_used_bytes, mem_total_bytes, mem_percent,
  disk_percent, net_in_bytes, net_out_bytes, inflight, extra`
export const SYSTEM_INFO_COLUMNS = `client_id, at, cpu_percent, mem_percent, mem_used_bytes, mem_total_bytes,
  disk_percent, net_rx_bytes, net_tx_bytes, net_rx_rate, net_tx_rate, uptime_seconds, device_count,
  device_memory_total_bytes, total_tflops, inflight, link_bytes_in, link_bytes_out`
export const DEVICE_INFO_COLUMNS = `client_id, device_index, at, vendor, name, uuid, util_percent, mem_util_percent,
  mem_used_bytes, mem_total_bytes, temp_c, power_w, power_limit_w, tflops`
export const USAGE_COLUMNS = `day, key_id, user_id, model, worker_id, requests, errors, metered, prompt_tokens,
  completion_tokens, total_tokens, duration_ms_sum / requests AS avg_duration_ms,
  ttfb_ms_sum / NULLIF(ttfb_samples, 0) AS avg_ttfb_ms, bytes_in, bytes_out`

/**
 * The columns each telemetry fold adds a batch's figures to. Both adapters build their upserts'
 * SET clauses from these lists ({@link addExcluded}), so they fold exactly the same columns.
 */
export const FOLD_SUMS = {
  daily: [
    'heartbeats',
    'cpu_sum',
    'cpu_samples',
    'mem_sum',
    'mem_samples',
    'disk_sum',
    'disk_samples',
    'net_in_bytes',
    'net_out_bytes',
  ],
  device: [
    'samples',
    'util_sum',
    'util_samples',
    'mem_util_sum',
    'mem_util_samples',
    'temp_sum',
    'temp_samples',
    'power_sum',
    'power_samples',
  ],
  usage: [
    'requests',
    'errors',
    'metered',
    'prompt_tokens',
    'completion_tokens',
    'total_tokens',
    'duration_ms_sum',
    'ttfb_ms_sum',
    'ttfb_samples',
    'bytes_in',
    'bytes_out',
  ],
} as const

/** `c = <table>.c + excluded.c` for each column, for an upsert's SET (table: the target's name or alias). */
export function addExcluded(columns: readonly string[], table: string): string {
  return columns.map((c) => `${c} = ${table}.${c} + excluded.${c}`).join(', ')
}

/** `c = excluded.c` for each column of a column list but the key columns (a latest-value upsert). */
export function takeExcluded(columns: string, keys: readonly string[]): string {
  return columns
    .split(',')
    .map((c) => c.trim())
    .filter((c) => !keys.includes(c))
    .map((c) => `${c} = excluded.${c}`)
    .join(', ')
}

/** The column list with `day` selected as text (PostgreSQL). */
export const dayAsText = (columns: string): string => columns.replace(/\bday\b/, 'day::text AS day')

type Row = Record<string, unknown>

/** A number column of either driver (pg returns bigint as a string); null stays null. */
const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v))
const int = (v: unknown): number => Number(v ?? 0)
/** A timestamp column: epoch ms (SQLite) or a Date (pg). */
const when = (v: unknown): Date => (v instanceof Date ? v : new Date(Number(v)))
const text = (v: unknown): string => String(v)
/** A JSON column: text (SQLite) or already parsed (pg jsonb). */
const json = (v: unknown): Record<string, unknown> =>
  (typeof v === 'string' ? JSON.parse(v) : (v ?? {})) as Record<string, unknown>

export function toDailyStats(r: Row): DailyStatsRecord {
  return {
    clientId: text(r['client_id']),
    day: text(r['day']),
    heartbeats: int(r['heartbeats']),
    avgCpuPercent: num(r['avg_cpu_percent']),
    avgMemPercent: num(r['avg_mem_percent']),
    avgDiskPercent: num(r['avg_disk_percent']),
    maxCpuPercent: num(r['max_cpu_percent']),
    maxMemUsedBytes: num(r['max_mem_used_bytes']),
    maxInflight: int(r['max_inflight']),
    netInBytes: int(r['net_in_bytes']),
    netOutBytes: int(r['net_out_bytes']),
    lastHeartbeatAt: r['last_heartbeat_at'] == null ? null : when(r['last_heartbeat_at']),
  }
}

export function toDeviceDaily(r: Row): DeviceDailyStatsRecord {
  return {
    clientId: text(r['client_id']),
    deviceIndex: int(r['device_index']),
    day: text(r['day']),
    name: text(r['name']),
    samples: int(r['samples']),
    avgUtilizationPercent: num(r['avg_util']),
    avgMemoryUtilizationPercent: num(r['avg_mem_util']),
    avgTemperatureC: num(r['avg_temp']),
    maxTemperatureC: num(r['max_temp_c']),
    avgPowerW: num(r['avg_power']),
    maxPowerW: num(r['max_power_w']),
  }
}

export function toHeartbeat(r: Row): HeartbeatRecord {
  return {
    msgId: r['msg_id'] == null ? null : text(r['msg_id']),
    clientId: text(r['client_id']),
    at: when(r['at']),
    cpuPercent: num(r['cpu_percent']),
    memUsedBytes: num(r['mem_used_bytes']),
    memTotalBytes: num(r['mem_total_bytes']),
    memPercent: num(r['mem_percent']),
    diskPercent: num(r['disk_percent']),
    netInBytes: num(r['net_in_bytes']),
    netOutBytes: num(r['net_out_bytes']),
    inflight: int(r['inflight']),
    extra: json(r['extra']),
  }
}

export function toSystemInfo(r: Row): SystemInfoRecord {
  return {
    clientId: text(r['client_id']),
    at: when(r['at']),
    cpuPercent: num(r['cpu_percent']),
    memPercent: num(r['mem_percent']),
    memUsedBytes: num(r['mem_used_bytes']),
    memTotalBytes: num(r['mem_total_bytes']),
    diskPercent: num(r['disk_percent']),
    netRxBytes: num(r['net_rx_bytes']),
    netTxBytes: num(r['net_tx_bytes']),
    netRxRate: num(r['net_rx_rate']),
    netTxRate: num(r['net_tx_rate']),
    uptimeSeconds: num(r['uptime_seconds']),
    deviceCount: int(r['device_count']),
    deviceMemoryTotalBytes: int(r['device_memory_total_bytes']),
    totalTflops: int(r['total_tflops']),
    inflight: int(r['inflight']),
    linkBytesIn: int(r['link_bytes_in']),
    linkBytesOut: int(r['link_bytes_out']),
  }
}

export function toDeviceInfo(r: Row): DeviceInfoRecord {
  return {
    clientId: text(r['client_id']),
    deviceIndex: int(r['device_index']),
    at: when(r['at']),
    vendor: text(r['vendor']),
    name: text(r['name']),
    uuid: r['uuid'] == null ? null : text(r['uuid']),
    utilizationPercent: num(r['util_percent']),
    memoryUtilizationPercent: num(r['mem_util_percent']),
    memoryUsedBytes: num(r['mem_used_bytes']),
    memoryTotalBytes: num(r['mem_total_bytes']),
    temperatureC: num(r['temp_c']),
    powerDrawW: num(r['power_w']),
    powerLimitW: num(r['power_limit_w']),
    tflops: int(r['tflops']),
  }
}

/** A models row: `is_active` is 0/1 (SQLite) or a boolean (pg), `expected_size` may be a bigint string. */
export function toModel(r: Row): ModelRecord {
  return {
    id: int(r['id']),
    name: text(r['name']),
    version: text(r['version']),
    versionCode: int(r['version_code']),
    engineType: int(r['engine_type']),
    isActive: r['is_active'] === true || r['is_active'] === 1,
    minMemoryMb: num(r['min_memory_mb']),
    minGpuMemoryGb: num(r['min_gpu_memory_gb']),
    downloadUrl: r['download_url'] == null ? null : text(r['download_url']),
    checksum: r['checksum'] == null ? null : text(r['checksum']),
    expectedSize: num(r['expected_size']),
    createdAt: when(r['created_at']),
    updatedAt: when(r['updated_at']),
  }
}

export function toUsage(r: Row): UsageDailyRecord {
  return {
    day: text(r['day']),
    keyId: text(r['key_id']),
    userId: r['user_id'] == null ? null : text(r['user_id']),
    model: text(r['model']),
    workerId: text(r['worker_id']),
    requests: int(r['requests']),
    errors: int(r['errors']),
    metered: int(r['metered']),
    promptTokens: int(r['prompt_tokens']),
    completionTokens: int(r['completion_tokens']),
    totalTokens: int(r['total_tokens']),
    avgDurationMs: int(r['avg_duration_ms']),
    avgTtfbMs: num(r['avg_ttfb_ms']),
    bytesIn: int(r['bytes_in']),
    bytesOut: int(r['bytes_out']),
  }
}

/** The first message of each id, in order (a producer retry can put one message on the bus twice). */
export function uniqueById<T extends { readonly id: string }>(events: readonly T[]): T[] {
  const seen = new Set<string>()
  const out: T[] = []
  for (const e of events) {
    if (seen.has(e.id)) continue
    seen.add(e.id)
    out.push(e)
  }
  return out
}
