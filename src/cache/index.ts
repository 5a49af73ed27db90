/**
 * The shared cache, and rate limiting. Two adapters: in-process (LRU with TTL; the
 * embedded default, one server) and Redis (`--redis-url`; shared by every server, with
 * pub/sub for invalidations). Adapters reject with a retryable FabricError
 * (GPUF_CACHE_UNAVAILABLE) when the cache server is down; callers fall back.
 */
export interface Cache {
  readonly kind: 'memory' | 'redis'
  get(key: string): Promise<string | undefined>
  set(key: string, value: string, ttlMs: number): Promise<void>
  delete(key: string): Promise<void>
  /**
   * Drops `key` from the cache and tells every server sharing it (this one included) that
   * `key` changed: their in-process copies must go. Delivered within a second while the
   * cache is up.
   */
  publishInvalidation(key: string): Promise<void>
  /** Subscribes to invalidations; returns an unsubscribe function. */
  onInvalidation(listener: (key: string) => void): () => void
  /** Adds `cost` to a fixed window of `windowMs` started by the window's first use, atomically. */
  consume(key: string, cost: number, limit: number, windowMs: number): Promise<RateLimitResult>
  /** Adds `cost` to the current window without refusing (e.g. tokens counted after a response). */
  add(key: string, cost: number, windowMs: number): Promise<RateLimitResult>
  /** Reads a window without changing it. */
  peek(key: string, limit: number): Promise<RateLimitResult>
  close(): Promise<void>
}

/** State of one rate-limit window. */
export interface RateLimitResult {
  /** Whether the cost was admitted (always true for `add`/`peek` unless over the limit). */
  readonly allowed: boolean
  /** Units used in the window, after this call. */
  readonly used: number
  /** Units left (never negative). */
  readonly remaining: number
  /** Milliseconds until the window resets. */
  readonly resetMs: number
}

export interface CacheOptions {
  /** `redis://…` for Redis; otherwise in-process. */
  readonly redisUrl?: string | undefined
  /** Key prefix for everything this fabric stores in Redis. */
  readonly namespace?: string
  /** In-process entries kept at most. */
  readonly maxEntries?: number
}

import { ErrorCodes, FabricError } from '../errors/index.js'
import type { Logger } from '../observability/logger.js'
import { MemoryCache } from './memory.js'
import { RedisCache } from './redis.js'

export { MemoryCache, type MemoryCacheOptions } from './memory.js'
export { RedisCache, type RedisCacheOptions } from './redis.js'

/**
 * Creates the cache: Redis when `redisUrl` is set, else in-process. Never waits for Redis:
 * a server must start even while Redis is down, so the Redis cache connects in the
 * background and its calls fail fast (GPUF_CACHE_UNAVAILABLE) until Redis is reachable.
 * Rejects only on a malformed URL (GPUF_CONFIG).
 */
export async function createCache(options: CacheOptions, deps: { logger?: Logger } = {}): Promise<Cache> {
  const { redisUrl } = options
  if (redisUrl === undefined || redisUrl === '') {
    return new MemoryCache({ maxEntries: options.maxEntries, logger: deps.logger })
  }
  let scheme: string
  try {
    scheme = new URL(redisUrl).protocol
  } catch (cause) {
    throw new FabricError(ErrorCodes.CONFIG, '--redis-url is not a URL (expected redis://host:port)', {
      cause,
    })
  }
  if (scheme !== 'redis:' && scheme !== 'rediss:') {
    throw new FabricError(
      ErrorCodes.CONFIG,
      `--redis-url must start with redis:// or rediss://, not ${scheme}//`,
    )
  }
  return new RedisCache({ url: redisUrl, namespace: options.namespace, logger: deps.logger })
}
