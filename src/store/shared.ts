/**
 * Pieces both store adapters share: id generation, the telemetry read-back both adapters
 * offer beyond the `Store` interface, and the bookkeeping of "one query per call".
 */
import { randomBytes } from 'node:crypto'
import { ErrorCodes, FabricError } from '../errors/index.js'
import type { HeartbeatRecord, RequestLogRecord } from './index.js'

/** Column lists both dialects select (the schemas in migrations.ts share the names). */
export const KEY_COLUMNS =
  'id, prefix, hash, kind, user_id, name, access_level, worker_ids, models, rpm_limit, tpm_limit, expires_at, revoked_at, created_at'
export const WORKER_COLUMNS =
  'client_id, user_id, name, status, os, hostname, engine_type, valid, models, first_seen_at, last_seen_at'
export const REQUEST_COLUMNS =
  'id, at, key_id, user_id, model, worker_id, path, status, duration_ms, prompt_tokens, completion_tokens, total_tokens'

/** A new public id: `prefix` and 16 random hex characters (64 bits), e.g. `key_3f9a…`. */
export function newId(prefix: 'key' | 'usr'): string {
  return `${prefix}_${randomBytes(8).toString('hex')}`
}

/** One worker's aggregates for one UTC day, folded from its heartbeats. */
export interface DailyStatsRecord {
  readonly clientId: string
  /** UTC day, `YYYY-MM-DD`. */
  readonly day: string
  readonly heartbeats: number
  /** Mean over the heartbeats that reported a CPU figure; null when none did. */
  readonly avgCpuPercent: number | null
  readonly maxCpuPercent: number | null
  readonly maxMemUsedBytes: number | null
  readonly maxInflight: number
}

/**
 * Read-back of the telemetry tables. Not part of `Store` (the server only writes them);
 * both adapters offer it for tests, the monitor, and tooling.
 */
export interface StoreTelemetry {
  /** A worker's daily statistics, oldest day first. */
  listDailyStats(clientId: string): Promise<DailyStatsRecord[]>
  /** A worker's newest heartbeats, newest first. */
  listHeartbeats(clientId: string, limit?: number): Promise<HeartbeatRecord[]>
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
