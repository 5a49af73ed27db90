/**
 * Pieces both store adapters share: id generation, the telemetry read-back both adapters
 * offer beyond the `Store` interface, and the bookkeeping of "one query per call".
 */
import { randomBytes } from 'node:crypto'
import { ErrorCodes, FabricError } from '../errors/index.js'
import type { HeartbeatRecord } from './index.js'

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
