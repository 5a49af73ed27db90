import { LIMITS, TIMEOUTS } from '../config/defaults.js'
import type { Logger } from '../observability/logger.js'
import { addressKey } from './address.js'

/** Options of a {@link CredentialThrottle}; every field defaults to `LIMITS`/`TIMEOUTS`. */
export interface CredentialThrottleOptions {
  readonly logger?: Logger | undefined
  /**
   * Failures from one address (or against one subject) within `windowMs` before it is throttled.
   * @default LIMITS.maxAuthFailures (20)
   */
  readonly maxFailures?: number
  /** @default TIMEOUTS.failureWindowMs (60 s) */
  readonly windowMs?: number
  /** First cool-down; doubles with each repeat offence. @default TIMEOUTS.authCooldownMs (30 s) */
  readonly cooldownMs?: number
  /** @default TIMEOUTS.authCooldownMaxMs (15 min) */
  readonly maxCooldownMs?: number
  /** How long repeat offences are remembered. @default TIMEOUTS.authOffenceMemoryMs (1 h) */
  readonly offenceMemoryMs?: number
  /** Entries tracked at once (addresses plus subjects). @default LIMITS.maxAuthFailureEntries */
  readonly maxEntries?: number
  /** Log one failure in this many from the same address (the first is always logged). @default 100 */
  readonly logEvery?: number
}

interface Entry {
  windowStart: number
  failures: number
  /** Failures since tracking started (for sampled logs). */
  total: number
  offences: number
  lastOffence: number
  blockedUntil: number
}

/** What a failure costs the one who made it. */
export interface FailureVerdict {
  /** Milliseconds the address (or subject) is throttled for from now; 0 when it is not. */
  readonly blockedForMs: number
}

/** Counters for metrics and the management API. */
export interface ThrottleCounts {
  /** Failed credentials seen. */
  failures: number
  /** Requests and logins refused because their address or subject was throttled. */
  throttled: number
  /** Addresses and subjects throttled now. */
  blocked: number
}

/**
 * Counts failed credentials (API keys, the admin key, worker tokens) per address and per
 * subject (a key's public prefix, a worker's client id). Past `maxFailures` within the window,
 * the address is throttled for a cool-down that doubles with each repeat offence: callers
 * answer 429 with `retry-after` (HTTP) or a delayed LoginError (control port) without checking
 * anything. A throttled *subject* only makes its failures costlier: a valid credential for it
 * still passes, so nobody can lock a key's or a worker's owner out by guessing against it.
 * Memory is bounded (`maxEntries`, oldest forgotten first); nothing here ever sees a secret.
 */
export class CredentialThrottle {
  readonly #logger: Logger | undefined
  readonly #maxFailures: number
  readonly #windowMs: number
  readonly #cooldownMs: number
  readonly #maxCooldownMs: number
  readonly #offenceMemoryMs: number
  readonly #maxEntries: number
  readonly #logEvery: number
  /** Insertion-ordered, so the first entries are the oldest when making room. */
  readonly #entries = new Map<string, Entry>()
  /** Entries blocked now or recently: checked on every request only while non-zero. */
  #blockedEntries = 0
  readonly counts: ThrottleCounts = { failures: 0, throttled: 0, blocked: 0 }

  constructor(options: CredentialThrottleOptions = {}) {
    this.#logger = options.logger
    this.#maxFailures = options.maxFailures ?? LIMITS.maxAuthFailures
    this.#windowMs = options.windowMs ?? TIMEOUTS.failureWindowMs
    this.#cooldownMs = options.cooldownMs ?? TIMEOUTS.authCooldownMs
    this.#maxCooldownMs = options.maxCooldownMs ?? TIMEOUTS.authCooldownMaxMs
    this.#offenceMemoryMs = options.offenceMemoryMs ?? TIMEOUTS.authOffenceMemoryMs
    this.#maxEntries = options.maxEntries ?? LIMITS.maxAuthFailureEntries
    this.#logEvery = options.logEvery ?? 100
  }

  /** True while some address or subject is (or was lately) throttled: only then is there anything to check. */
  get active(): boolean {
    return this.#blockedEntries > 0
  }

  /**
   * Milliseconds `address` stays throttled (0: not throttled). Costs one comparison while no
   * one is throttled: this runs on the request path.
   */
  blockedFor(address: string): number {
    if (this.#blockedEntries === 0) return 0
    return this.#remaining(`a:${address}`)
  }

  /** Milliseconds `subject` (a key prefix, a client id) stays throttled. */
  subjectBlockedFor(subject: string): number {
    if (this.#blockedEntries === 0) return 0
    return this.#remaining(`s:${subject}`)
  }

  /**
   * What every port asks before checking a credential: milliseconds the peer at
   * `remoteAddress` must still wait (0: go ahead); a refusal is counted. While nobody is
   * throttled this is one comparison, no address parsing: it runs on the request path.
   */
  refuses(remoteAddress: string | undefined): number {
    if (this.#blockedEntries === 0) return 0
    const wait = this.#remaining(`a:${addressKey(remoteAddress)}`)
    if (wait > 0) this.counts.throttled++
    return wait
  }

  /**
   * Records one failed credential from `address`, optionally against `subject` (never the
   * secret itself). `what` names the credential in the sampled log line.
   */
  failure(address: string, subject: string | undefined, what: string): FailureVerdict {
    this.counts.failures++
    const now = Date.now()
    const byAddress = this.#count(`a:${address}`, now)
    if (subject !== undefined) this.#count(`s:${subject}`, now)
    if (byAddress.total === 1 || byAddress.total % this.#logEvery === 0) {
      this.#logger?.warn(
        { remote: address, subject, failures: byAddress.total, credential: what },
        `${what} refused`,
      )
    }
    return { blockedForMs: Math.max(0, byAddress.blockedUntil - now) }
  }

  #remaining(key: string): number {
    const entry = this.#entries.get(key)
    if (entry === undefined) return 0
    const left = entry.blockedUntil - Date.now()
    if (left > 0) return left
    if (entry.blockedUntil !== 0) {
      entry.blockedUntil = 0
      this.#blockedEntries--
      this.counts.blocked = this.#blockedEntries
    }
    return 0
  }

  #count(key: string, now: number): Entry {
    let entry = this.#entries.get(key)
    if (entry === undefined) {
      if (this.#entries.size >= this.#maxEntries) this.#evictOldest()
      entry = { windowStart: now, failures: 0, total: 0, offences: 0, lastOffence: 0, blockedUntil: 0 }
      this.#entries.set(key, entry)
    } else {
      // Most recently failed last: eviction takes the quietest first.
      this.#entries.delete(key)
      this.#entries.set(key, entry)
    }
    if (now - entry.windowStart > this.#windowMs) {
      entry.windowStart = now
      entry.failures = 0
    }
    if (entry.offences > 0 && now - entry.lastOffence > this.#offenceMemoryMs) entry.offences = 0
    entry.failures++
    entry.total++
    if (entry.failures > this.#maxFailures && entry.blockedUntil <= now) {
      entry.offences++
      entry.lastOffence = now
      const cooldown = Math.min(this.#maxCooldownMs, this.#cooldownMs * 2 ** (entry.offences - 1))
      if (entry.blockedUntil === 0) this.#blockedEntries++
      entry.blockedUntil = now + cooldown
      entry.failures = 0
      entry.windowStart = now
      this.counts.blocked = this.#blockedEntries
      this.#logger?.warn(
        { [key.startsWith('a:') ? 'remote' : 'subject']: key.slice(2), cooldownMs: cooldown },
        'too many failed credentials: throttled',
      )
    }
    return entry
  }

  #evictOldest(): void {
    // Drop the oldest tenth at once, so a flood of new addresses costs amortised O(1).
    let n = Math.max(1, Math.floor(this.#maxEntries / 10))
    for (const [key, entry] of this.#entries) {
      if (n-- <= 0) break
      if (entry.blockedUntil !== 0) this.#blockedEntries--
      this.#entries.delete(key)
    }
    this.counts.blocked = this.#blockedEntries
  }

  /** Counters for metrics and the management API. */
  snapshot(): ThrottleCounts & { tracked: number } {
    return { ...this.counts, tracked: this.#entries.size }
  }
}
