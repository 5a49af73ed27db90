/**
 * The Redis cache (`--redis-url`), shared by every server: entries, rate-limit windows
 * counted atomically across servers, and invalidations over pub/sub.
 *
 * Availability matters more than the cache: while Redis is down or restarting, every call
 * rejects within `commandTimeoutMs` (immediately, in practice) with a retryable
 * GPUF_CACHE_UNAVAILABLE, and both connections keep reconnecting on their own.
 */
import { Redis, type RedisOptions, ReplyError } from 'ioredis'
import { ErrorCodes, FabricError } from '../errors/index.js'
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
import { ADD_SCRIPT, CONSUME_SCRIPT, INVALIDATE_SCRIPT, PEEK_SCRIPT } from './redis-scripts.js'

/** Prefix of every key and channel, by default. */
export const DEFAULT_NAMESPACE = 'gpuf:'
/** Time allowed to open a TCP connection before trying again, by default. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 1_000
/** Time a command may take before it fails (Redis hung, not dead), by default. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 500
/** Longest pause between reconnection attempts, by default. */
export const DEFAULT_MAX_RECONNECT_DELAY_MS = 1_000

/** Options of {@link RedisCache}. */
export interface RedisCacheOptions {
  /** `redis://…` or `rediss://…`. */
  readonly url: string
  /** Prefix of every key and of the invalidation channel. Default {@link DEFAULT_NAMESPACE}. */
  readonly namespace?: string
  /** Default {@link DEFAULT_CONNECT_TIMEOUT_MS}. */
  readonly connectTimeoutMs?: number
  /** Default {@link DEFAULT_COMMAND_TIMEOUT_MS}. */
  readonly commandTimeoutMs?: number
  /** Reconnection backs off by 100 ms per attempt up to this. Default {@link DEFAULT_MAX_RECONNECT_DELAY_MS}. */
  readonly maxReconnectDelayMs?: number
  readonly logger?: Logger
}

/** The client with our Lua scripts defined on it (`defineCommand` runs them with EVALSHA). */
interface ScriptedRedis extends Redis {
  gpufConsume(key: string, cost: number, limit: number, windowMs: number): Promise<[number, number, number]>
  gpufAdd(key: string, cost: number, windowMs: number): Promise<[number, number]>
  gpufPeek(key: string): Promise<[number, number]>
  gpufInvalidate(key: string, channel: string, message: string): Promise<number>
}

// Replies that mean "Redis is there but cannot serve right now"; other reply errors are bugs.
const TRANSIENT_REPLY = /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN)\b/

/** Wraps whatever ioredis threw in the error callers match on. */
function unavailable(operation: string, err: unknown): FabricError {
  const reason = err instanceof Error ? err.message : String(err)
  const retryable = !(err instanceof ReplyError) || TRANSIENT_REPLY.test(reason)
  // No `cause`: ioredis errors carry the failed command's arguments (values, the AUTH password).
  return new FabricError(ErrorCodes.CACHE_UNAVAILABLE, `redis ${operation} failed: ${reason}`, { retryable })
}

/** {@link Cache} on Redis, shared by every server that uses the same Redis and namespace. */
export class RedisCache implements Cache {
  readonly kind = 'redis' as const
  readonly #client: ScriptedRedis
  // Pub/sub needs its own connection: a subscribed connection can run no other command.
  readonly #subscriber: Redis
  readonly #namespace: string
  readonly #channel: string
  readonly #listeners = new Set<(key: string) => void>()
  readonly #logger: Logger
  #subscribed = false
  #closed = false

  constructor(options: RedisCacheOptions) {
    this.#namespace = options.namespace ?? DEFAULT_NAMESPACE
    this.#channel = `${this.#namespace}invalidate`
    this.#logger = options.logger ?? silentLogger()
    const connection = clientOptions(options)
    this.#client = new Redis(options.url, connection) as ScriptedRedis
    this.#subscriber = new Redis(options.url, connection)
    this.#client.defineCommand('gpufConsume', { numberOfKeys: 1, lua: CONSUME_SCRIPT })
    this.#client.defineCommand('gpufAdd', { numberOfKeys: 1, lua: ADD_SCRIPT })
    this.#client.defineCommand('gpufPeek', { numberOfKeys: 1, lua: PEEK_SCRIPT })
    this.#client.defineCommand('gpufInvalidate', { numberOfKeys: 1, lua: INVALIDATE_SCRIPT })
    this.#watch(this.#client, 'commands')
    this.#watch(this.#subscriber, 'invalidations')
    this.#subscriber.on('ready', () => this.#subscribe())
    this.#subscriber.on('close', () => {
      this.#subscribed = false
    })
    this.#subscriber.on('message', (channel: string, key: string) => {
      if (channel !== this.#channel) return
      notifyListeners(this.#listeners, key, (err) =>
        this.#logger.error({ err }, 'cache invalidation listener threw'),
      )
    })
  }

  /** True while commands can reach Redis and this cache is subscribed to invalidations. */
  get connected(): boolean {
    return !this.#closed && this.#client.status === 'ready' && this.#subscribed
  }

  async get(key: string): Promise<string | undefined> {
    return this.#run('GET', async () => (await this.#client.get(this.#entryKey(key))) ?? undefined)
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    const ms = durationMs('ttlMs', ttlMs)
    return this.#run('SET', async () => {
      await this.#client.set(this.#entryKey(key), value, 'PX', ms)
    })
  }

  async delete(key: string): Promise<void> {
    return this.#run('DEL', async () => {
      await this.#client.del(this.#entryKey(key))
    })
  }

  async publishInvalidation(key: string): Promise<void> {
    // One script: the delete and the message happen together or not at all. Our own
    // subscriber receives the message too, which is how local listeners hear of it.
    return this.#run('invalidate', async () => {
      await this.#client.gpufInvalidate(this.#entryKey(key), this.#channel, key)
    })
  }

  onInvalidation(listener: (key: string) => void): () => void {
    return subscribe(this.#listeners, listener)
  }

  async consume(key: string, cost: number, limit: number, windowMs: number): Promise<RateLimitResult> {
    checkCost(cost)
    checkLimit(limit)
    const ms = durationMs('windowMs', windowMs)
    return this.#run('consume', async () => {
      const [allowed, used, ttl] = await this.#client.gpufConsume(this.#windowKey(key), cost, limit, ms)
      return windowResult(allowed === 1, used, limit, ttl)
    })
  }

  async add(key: string, cost: number, windowMs: number): Promise<RateLimitResult> {
    checkCost(cost)
    const ms = durationMs('windowMs', windowMs)
    return this.#run('add', async () => {
      const [used, ttl] = await this.#client.gpufAdd(this.#windowKey(key), cost, ms)
      // `add` is given no limit: nothing is refused and nothing is known to be left.
      return windowResult(true, used, Number.POSITIVE_INFINITY, ttl)
    })
  }

  async peek(key: string, limit: number): Promise<RateLimitResult> {
    checkLimit(limit)
    return this.#run('peek', async () => {
      const [used, ttl] = await this.#client.gpufPeek(this.#windowKey(key))
      return windowResult(used < limit, used, limit, ttl)
    })
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#listeners.clear()
    // disconnect() also cancels a pending reconnection timer; QUIT would need Redis up.
    this.#client.disconnect()
    this.#subscriber.disconnect()
  }

  #entryKey(key: string): string {
    return `${this.#namespace}c:${key}`
  }

  #windowKey(key: string): string {
    return `${this.#namespace}rl:${key}`
  }

  async #run<T>(operation: string, command: () => Promise<T>): Promise<T> {
    if (this.#closed) throw cacheClosedError()
    try {
      return await command()
    } catch (err) {
      throw unavailable(operation, err)
    }
  }

  // Subscribes on every (re)connection ourselves instead of relying on ioredis'
  // autoResubscribe: that only replays subscriptions Redis had confirmed, so a cache
  // created while Redis was down would never subscribe.
  #subscribe(): void {
    this.#subscriber.subscribe(this.#channel).then(
      () => {
        this.#subscribed = true
      },
      (err: unknown) => {
        // The connection dropped meanwhile; the next 'ready' tries again.
        const reason = err instanceof Error ? err.message : String(err)
        this.#logger.debug({ reason }, 'redis cache: subscribing to invalidations failed')
      },
    )
  }

  /** Logs a connection's ups and downs once per outage; an 'error' listener also keeps it from crashing us. */
  #watch(connection: Redis, role: string): void {
    let down = false
    connection.on('error', (err: Error) => {
      if (this.#closed) return
      // Only the message: ioredis hangs the failed command on its errors, and for AUTH its
      // arguments are the password.
      const reason = err.message
      if (down) this.#logger.debug({ reason, role }, 'redis cache still unavailable')
      else this.#logger.warn({ reason, role }, 'redis cache unavailable; reconnecting')
      down = true
    })
    connection.on('ready', () => {
      if (down) this.#logger.info({ role }, 'redis cache reconnected')
      down = false
    })
  }
}

/** Connection settings shared by both connections: fail fast, reconnect forever. */
function clientOptions(options: RedisCacheOptions): RedisOptions {
  const maxDelay = positiveInteger(
    'maxReconnectDelayMs',
    options.maxReconnectDelayMs ?? DEFAULT_MAX_RECONNECT_DELAY_MS,
  )
  return {
    connectTimeout: positiveInteger(
      'connectTimeoutMs',
      options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    ),
    commandTimeout: positiveInteger(
      'commandTimeoutMs',
      options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
    ),
    // Never queue while disconnected: a caller waiting on the cache is worse than one
    // that falls back at once.
    enableOfflineQueue: false,
    // Commands in flight when the connection drops fail at once rather than wait for a reconnection.
    maxRetriesPerRequest: 0,
    // A resent INCRBY would count a request twice.
    autoResendUnfulfilledCommands: false,
    autoResubscribe: false,
    retryStrategy: (attempt) => Math.min(attempt * 100, maxDelay),
  }
}
