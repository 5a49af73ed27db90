/**
 * The in-process cache: the embedded default when one server runs alone. An LRU with a
 * TTL per entry, plus fixed rate-limit windows; both maps are bounded.
 */
import { performance } from 'node:perf_hooks'
import type { Logger } from '../observability/logger.js'
import { silentLogger } from '../observability/logger.js'
import {
  cacheClosedError,
  checkCost,
  checkLimit,
  durationMs,
  notifyListeners,
  positiveInteger,
  subscribe,
  windowResult,
} from './common.js'
import type { Cache, RateLimitResult } from './index.js'

/** Entries kept at most, by default. */
export const DEFAULT_MAX_ENTRIES = 100_000
/** Rate-limit windows kept at most, by default. */
export const DEFAULT_MAX_WINDOWS = 100_000
/** How often expired entries and windows are swept out, by default. */
export const DEFAULT_SWEEP_INTERVAL_MS = 30_000

/** Options of {@link MemoryCache}. */
export interface MemoryCacheOptions {
  /** Entries kept at most; the least recently used go first. Default {@link DEFAULT_MAX_ENTRIES}. */
  readonly maxEntries?: number
  /**
   * Rate-limit windows kept at most; when full, the oldest window is forgotten (its key
   * starts afresh: lenient, but memory stays bounded). Default {@link DEFAULT_MAX_WINDOWS}.
   */
  readonly maxWindows?: number
  /** Interval of the sweep of expired entries. Default {@link DEFAULT_SWEEP_INTERVAL_MS}. */
  readonly sweepIntervalMs?: number
  readonly logger?: Logger
}

interface Entry {
  readonly value: string
  readonly expiresAt: number
}

interface Window {
  used: number
  readonly resetAt: number
}

// Monotonic: a wall-clock jump must not expire everything or keep entries forever.
const now = (): number => performance.now()

/** Drops the first (oldest) keys of an insertion-ordered map until it fits. */
function trim(map: Map<string, unknown>, max: number): void {
  for (const key of map.keys()) {
    if (map.size <= max) return
    map.delete(key)
  }
}

/** In-process {@link Cache}: LRU with per-entry TTL, fixed rate-limit windows, local invalidations. */
export class MemoryCache implements Cache {
  readonly kind = 'memory' as const
  // A Map iterates in insertion order: re-inserting on every hit keeps the least recently
  // used entry first, which is what gets evicted.
  readonly #entries = new Map<string, Entry>()
  // Windows are inserted when they start, so the first one is the oldest.
  readonly #windows = new Map<string, Window>()
  readonly #listeners = new Set<(key: string) => void>()
  readonly #maxEntries: number
  readonly #maxWindows: number
  readonly #logger: Logger
  readonly #sweepTimer: NodeJS.Timeout
  #closed = false

  constructor(options: MemoryCacheOptions = {}) {
    this.#maxEntries = positiveInteger('maxEntries', options.maxEntries ?? DEFAULT_MAX_ENTRIES)
    this.#maxWindows = positiveInteger('maxWindows', options.maxWindows ?? DEFAULT_MAX_WINDOWS)
    this.#logger = options.logger ?? silentLogger()
    const sweepMs = positiveInteger('sweepIntervalMs', options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS)
    // Lazy expiry alone would keep entries nobody reads again until the LRU pushes them out.
    this.#sweepTimer = setInterval(() => this.#sweep(), sweepMs)
    this.#sweepTimer.unref()
  }

  /** Entries held now (expired ones included until swept). */
  get size(): number {
    return this.#entries.size
  }

  async get(key: string): Promise<string | undefined> {
    this.#assertOpen()
    const entry = this.#entries.get(key)
    if (entry === undefined) return undefined
    this.#entries.delete(key)
    if (entry.expiresAt <= now()) return undefined
    this.#entries.set(key, entry)
    return entry.value
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    this.#assertOpen()
    const expiresAt = now() + durationMs('ttlMs', ttlMs)
    this.#entries.delete(key)
    this.#entries.set(key, { value, expiresAt })
    trim(this.#entries, this.#maxEntries)
  }

  async delete(key: string): Promise<void> {
    this.#assertOpen()
    this.#entries.delete(key)
  }

  async publishInvalidation(key: string): Promise<void> {
    this.#assertOpen()
    this.#entries.delete(key)
    // Asynchronous like the Redis adapter, so callers cannot come to rely on listeners
    // having run by the time this resolves.
    queueMicrotask(() =>
      notifyListeners(this.#listeners, key, (err) =>
        this.#logger.error({ err }, 'cache invalidation listener threw'),
      ),
    )
  }

  onInvalidation(listener: (key: string) => void): () => void {
    return subscribe(this.#listeners, listener)
  }

  async consume(key: string, cost: number, limit: number, windowMs: number): Promise<RateLimitResult> {
    this.#assertOpen()
    checkCost(cost)
    checkLimit(limit)
    const length = durationMs('windowMs', windowMs)
    const t = now()
    const current = this.#window(key, t)
    const used = current?.used ?? 0
    // Refusals do not start a window, exactly like the Redis script.
    if (used + cost > limit) return windowResult(false, used, limit, current ? current.resetAt - t : length)
    const window = current ?? this.#startWindow(key, t + length)
    window.used += cost
    return windowResult(true, window.used, limit, window.resetAt - t)
  }

  async add(key: string, cost: number, windowMs: number): Promise<RateLimitResult> {
    this.#assertOpen()
    checkCost(cost)
    const length = durationMs('windowMs', windowMs)
    const t = now()
    const window = this.#window(key, t) ?? this.#startWindow(key, t + length)
    window.used += cost
    // `add` is given no limit: nothing is refused and nothing is known to be left.
    return windowResult(true, window.used, Number.POSITIVE_INFINITY, window.resetAt - t)
  }

  async peek(key: string, limit: number): Promise<RateLimitResult> {
    this.#assertOpen()
    checkLimit(limit)
    const t = now()
    const window = this.#window(key, t)
    const used = window?.used ?? 0
    return windowResult(used < limit, used, limit, window ? window.resetAt - t : 0)
  }

  async close(): Promise<void> {
    this.#closed = true
    clearInterval(this.#sweepTimer)
    this.#entries.clear()
    this.#windows.clear()
    this.#listeners.clear()
  }

  #assertOpen(): void {
    if (this.#closed) throw cacheClosedError()
  }

  /** The key's running window, or undefined when it has none (an ended one is dropped). */
  #window(key: string, t: number): Window | undefined {
    const window = this.#windows.get(key)
    if (window === undefined || window.resetAt > t) return window
    this.#windows.delete(key)
    return undefined
  }

  #startWindow(key: string, resetAt: number): Window {
    const window: Window = { used: 0, resetAt }
    this.#windows.set(key, window)
    trim(this.#windows, this.#maxWindows)
    return window
  }

  #sweep(): void {
    const t = now()
    for (const [key, entry] of this.#entries) if (entry.expiresAt <= t) this.#entries.delete(key)
    for (const [key, window] of this.#windows) if (window.resetAt <= t) this.#windows.delete(key)
  }
}
