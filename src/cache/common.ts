/**
 * Pieces both cache adapters share, so that they agree to the letter: argument checks,
 * how a rate-limit window is reported, and the errors callers match on.
 */
import { ErrorCodes, FabricError } from '../errors/index.js'
import type { RateLimitResult } from './index.js'

/** Builds a window's state; `remaining` and `resetMs` are clamped so callers never see negatives. */
export function windowResult(
  allowed: boolean,
  used: number,
  limit: number,
  resetMs: number,
): RateLimitResult {
  return {
    allowed,
    used,
    remaining: Math.max(0, limit - used),
    // Rounded up (never promise a reset earlier than it is), less the float noise of
    // monotonic-clock arithmetic, which would otherwise turn 400 ms into 401.
    resetMs: Math.max(0, Math.ceil(resetMs - 1e-6)),
  }
}

/**
 * Checks a duration (TTL, window length) and rounds it up to whole milliseconds: Redis
 * takes integers only, and rounding down could turn 0.5 ms into "no expiry at all".
 */
export function durationMs(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number of ms`)
  return Math.ceil(value)
}

/** Checks a rate-limit cost: Redis counts with INCRBY, so it must be a whole number. */
export function checkCost(cost: number): number {
  if (!Number.isSafeInteger(cost) || cost < 0) throw new RangeError('cost must be a non-negative integer')
  return cost
}

/** Checks a rate-limit ceiling. */
export function checkLimit(limit: number): number {
  if (!Number.isFinite(limit) || limit < 0) throw new RangeError('limit must be a finite non-negative number')
  return limit
}

/** A positive whole number option, with the option's name in the message. */
export function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive integer`)
  return value
}

/**
 * The error every call on a closed cache rejects with. Not retryable: this process is
 * shutting the cache down, trying again here cannot help.
 */
export function cacheClosedError(): FabricError {
  return new FabricError(ErrorCodes.CACHE_UNAVAILABLE, 'the cache is closed', { retryable: false })
}

/**
 * Calls every invalidation listener; one that throws must not keep the others (or the
 * Redis message handler) from running, so its error goes to `report` instead.
 */
export function notifyListeners(
  listeners: ReadonlySet<(key: string) => void>,
  key: string,
  report: (err: unknown) => void,
): void {
  for (const listener of listeners) {
    try {
      listener(key)
    } catch (err) {
      report(err)
    }
  }
}

/**
 * Adds an invalidation listener; returns its unsubscribe function. The listener is wrapped so
 * that subscribing the same function twice gives two independent subscriptions.
 */
export function subscribe(
  listeners: Set<(key: string) => void>,
  listener: (key: string) => void,
): () => void {
  const entry = (key: string) => listener(key)
  listeners.add(entry)
  return () => {
    listeners.delete(entry)
  }
}
