import type { Cache } from '../cache/index.js'
import { isFabricError } from '../errors/index.js'
import type { Logger } from '../observability/logger.js'
import type { KeyRecord, Store } from '../store/index.js'
import { StaticKeyAuthenticator } from './credentials.js'
import { keyMatches, parseKey } from './keys.js'
import { type Principal, principalOf, STATIC_PRINCIPAL } from './principal.js'

/** Outcome of checking a key. */
export type KeyVerdict =
  | { readonly ok: true; readonly principal: Principal }
  | { readonly ok: false; readonly reason: 'invalid' | 'expired' | 'unavailable' }

/** Options of the key authenticator. */
export interface KeyAuthenticatorOptions {
  /** Static fallback keys (`--api-key`). */
  readonly staticKeys: readonly string[]
  /** The database; without one only static keys work. */
  readonly store?: Store | undefined
  /** The shared cache (Redis, or in-process). */
  readonly cache?: Cache | undefined
  readonly logger: Logger
  /** How long a key stays trusted in this process without asking the shared cache or the database. 0 disables caching. */
  readonly localTtlMs?: number
  /** TTL of keys in the shared cache (the seed's 5 minutes). */
  readonly sharedTtlMs?: number
  /** TTL of "no such key" answers, so random keys cannot hammer the database. */
  readonly negativeTtlMs?: number
  /** How often the database is asked for revocations (reaches servers the shared cache cannot). */
  readonly revocationPollMs?: number
  readonly maxLocalEntries?: number
}

interface LocalEntry {
  readonly principal: Principal
  readonly prefix: string
  freshUntil: number
}

const NONE = 'none'
const cacheKey = (prefix: string) => `key:${prefix}`

/**
 * Drops a key from the shared cache and tells every server (through the cache's pub/sub) to
 * forget it. Used by the servers and by the CLI.
 */
export async function invalidateKeyInCache(cache: Cache, prefix: string): Promise<void> {
  // One call: publishing an invalidation also deletes the entry (atomically, in Redis).
  await cache.publishInvalidation(cacheKey(prefix))
}

/**
 * Authenticates API keys: static keys, then this process's cache, then the shared cache
 * (Redis, 5-minute TTL), then the database. A stale local entry keeps a key working while
 * the cache and the database are both down; revocations arrive through the shared cache's
 * pub/sub and a poll of the database every 500 ms, whichever is first.
 */
export class KeyAuthenticator {
  readonly #static: StaticKeyAuthenticator
  readonly #options: KeyAuthenticatorOptions
  readonly #localTtl: number
  readonly #sharedTtl: number
  readonly #negativeTtl: number
  readonly #maxLocal: number
  /** Raw key → entry. Holding the raw key (as the static keys are held) saves a hash per request. */
  readonly #local = new Map<string, LocalEntry>()
  readonly #byPrefix = new Map<string, string>()
  readonly #negative = new Map<string, number>()
  readonly #inflight = new Map<string, Promise<KeyRecord | undefined | 'unavailable'>>()
  readonly #revokedListeners: ((prefix: string, confirmed: boolean) => void)[] = []
  #poll: NodeJS.Timeout | undefined
  #unsubscribe: (() => void) | undefined
  #lastPoll = new Date()

  constructor(options: KeyAuthenticatorOptions) {
    this.#options = options
    this.#static = new StaticKeyAuthenticator(options.staticKeys)
    this.#localTtl = options.localTtlMs ?? 5 * 60_000
    this.#sharedTtl = options.sharedTtlMs ?? 5 * 60_000
    this.#negativeTtl = options.negativeTtlMs ?? 30_000
    this.#maxLocal = options.maxLocalEntries ?? 100_000
  }

  /** Starts listening for revocations. */
  start(): void {
    this.#unsubscribe = this.#options.cache?.onInvalidation((key) => {
      if (!key.startsWith('key:')) return
      this.#forget(key.slice(4))
      // Another server or the CLI revoked it (probably: listeners check before acting).
      this.#notifyRevoked(key.slice(4), false)
    })
    const store = this.#options.store
    if (store === undefined) return
    this.#lastPoll = new Date()
    this.#poll = setInterval(() => void this.#pollRevocations(store), this.#options.revocationPollMs ?? 500)
    this.#poll.unref()
  }

  stop(): void {
    clearInterval(this.#poll)
    this.#unsubscribe?.()
  }

  /** The answer without any I/O when there is one (static key, or a fresh local entry); undefined otherwise. */
  checkCached(key: string): Principal | undefined {
    // The trusted database keys first: a plain map lookup, where the static check would hash
    // every key it has not accepted before.
    const entry = this.#local.get(key)
    if (entry !== undefined) {
      const now = Date.now()
      if (entry.freshUntil >= now && entry.principal.expiresAt > now) return entry.principal
    }
    return this.#static.check(key) ? STATIC_PRINCIPAL : undefined
  }

  /** Full check of a key. */
  async authenticate(key: string): Promise<KeyVerdict> {
    const cached = this.checkCached(key)
    if (cached !== undefined) return { ok: true, principal: cached }
    const parsed = parseKey(key)
    if (parsed === undefined || parsed.kind !== 'api' || this.#options.store === undefined) {
      return { ok: false, reason: 'invalid' }
    }
    const stale = this.#local.get(key)
    const negativeUntil = this.#negative.get(parsed.prefix)
    if (negativeUntil !== undefined && negativeUntil > Date.now()) return { ok: false, reason: 'invalid' }
    const record = await this.#lookup(parsed.prefix)
    if (record === 'unavailable') {
      // Cache and database both out of reach: a key we trusted before keeps working.
      if (stale !== undefined) return this.#verdict(stale.principal)
      return { ok: false, reason: 'unavailable' }
    }
    if (
      record === undefined ||
      record.revokedAt !== null ||
      record.kind !== 'api' ||
      !keyMatches(key, record.hash)
    ) {
      if (stale !== undefined) this.#forget(parsed.prefix)
      return { ok: false, reason: 'invalid' }
    }
    const principal = principalOf(record)
    if (this.#localTtl > 0) this.#remember(key, parsed.prefix, principal)
    return this.#verdict(principal)
  }

  /**
   * Calls `fn` with the prefix of every key (API key or worker token) revoked anywhere, as soon
   * as this server learns of it: its own revocations at once, others' through the shared
   * cache's pub/sub (`confirmed` false: check the store) or the database poll (within a second).
   * A revocation may be reported more than once.
   */
  onRevoked(fn: (prefix: string, confirmed: boolean) => void): void {
    this.#revokedListeners.push(fn)
  }

  #notifyRevoked(prefix: string, confirmed: boolean): void {
    for (const fn of this.#revokedListeners) {
      try {
        fn(prefix, confirmed)
      } catch (err) {
        this.#options.logger.error({ err: String(err) }, 'revocation listener failed')
      }
    }
  }

  /** Drops a key everywhere: this process, the shared cache, and (through pub/sub) every other server. */
  async invalidate(prefix: string): Promise<void> {
    this.#forget(prefix)
    this.#notifyRevoked(prefix, false)
    const cache = this.#options.cache
    if (cache === undefined) return
    await invalidateKeyInCache(cache, prefix).catch((err: unknown) => {
      this.#options.logger.warn(
        { err: String(err) },
        'could not publish a key invalidation; other servers learn it from the database within a second',
      )
    })
  }

  #verdict(principal: Principal): KeyVerdict {
    return principal.expiresAt <= Date.now() ? { ok: false, reason: 'expired' } : { ok: true, principal }
  }

  #remember(key: string, prefix: string, principal: Principal): void {
    if (this.#local.size >= this.#maxLocal) {
      this.#local.clear()
      this.#byPrefix.clear()
    }
    const previous = this.#byPrefix.get(prefix)
    if (previous !== undefined && previous !== key) this.#local.delete(previous)
    this.#local.set(key, { principal, prefix, freshUntil: Date.now() + this.#localTtl })
    this.#byPrefix.set(prefix, key)
  }

  /** Remembers a prefix as unknown; bounded, since anyone can make up prefixes. */
  #rememberUnknown(prefix: string): void {
    if (this.#negative.size >= this.#maxLocal) this.#negative.clear()
    this.#negative.set(prefix, Date.now() + this.#negativeTtl)
  }

  #forget(prefix: string): void {
    const key = this.#byPrefix.get(prefix)
    if (key !== undefined) this.#local.delete(key)
    this.#byPrefix.delete(prefix)
    this.#negative.delete(prefix)
  }

  /** Shared cache, then database; concurrent lookups of one prefix share one query. */
  #lookup(prefix: string): Promise<KeyRecord | undefined | 'unavailable'> {
    let pending = this.#inflight.get(prefix)
    if (pending === undefined) {
      pending = this.#lookupUncached(prefix).finally(() => this.#inflight.delete(prefix))
      this.#inflight.set(prefix, pending)
    }
    return pending
  }

  async #lookupUncached(prefix: string): Promise<KeyRecord | undefined | 'unavailable'> {
    const { cache, store, logger } = this.#options
    const useShared = cache !== undefined && this.#localTtl > 0
    if (useShared) {
      try {
        const hit = await cache.get(cacheKey(prefix))
        if (hit === NONE) {
          this.#rememberUnknown(prefix)
          return undefined
        }
        if (hit !== undefined) return reviveKey(hit)
      } catch (err) {
        logger.debug({ err: String(err) }, 'shared cache unavailable; asking the database')
      }
    }
    let record: KeyRecord | undefined
    try {
      record = await store!.findKeyByPrefix(prefix)
    } catch (err) {
      if (isFabricError(err)) logger.warn({ code: err.code }, 'database unavailable for key lookup')
      return 'unavailable'
    }
    if (record === undefined) this.#rememberUnknown(prefix)
    if (useShared) {
      const value = record === undefined ? NONE : JSON.stringify(record)
      const ttl = record === undefined ? this.#negativeTtl : this.#sharedTtl
      await cache.set(cacheKey(prefix), value, ttl).catch(() => undefined)
    }
    return record
  }

  async #pollRevocations(store: Store): Promise<void> {
    // Overlap the windows a little: clocks of servers and database differ.
    const since = new Date(this.#lastPoll.getTime() - 5_000)
    const started = new Date()
    try {
      const revoked = await store.keysRevokedSince(since)
      this.#lastPoll = started
      for (const record of revoked) {
        this.#notifyRevoked(record.prefix, true)
        if (!this.#byPrefix.has(record.prefix) && this.#options.cache === undefined) continue
        this.#forget(record.prefix)
        await this.#options.cache?.delete(cacheKey(record.prefix)).catch(() => undefined)
      }
    } catch {
      // Database down: cached keys keep working; the next poll catches up.
    }
  }
}

/** Parses a key record from its cached JSON (dates come back as strings). */
export function reviveKey(json: string): KeyRecord {
  const raw = JSON.parse(json) as Record<string, unknown>
  const date = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string))
  return {
    ...(raw as unknown as KeyRecord),
    expiresAt: date(raw['expiresAt']),
    revokedAt: date(raw['revokedAt']),
    createdAt: new Date(raw['createdAt'] as string),
  }
}
