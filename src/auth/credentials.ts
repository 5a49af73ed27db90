import { createHash, timingSafeEqual } from 'node:crypto'
import type { Login } from '../protocol/index.js'

/** A worker login's outcome. */
export type WorkerVerdict =
  | {
      readonly ok: true
      /**
       * The public prefix of the worker token it logged in with, so that revoking that token
       * can reach the live session. Absent for the shared token (it cannot be revoked).
       */
      readonly credential?: string | undefined
      /** The user the worker belongs to, when known (telemetry is attributed to them). */
      readonly userId?: string | undefined
    }
  | {
      readonly ok: false
      readonly reason: string
      /**
       * The credential could not be checked (database down): not the worker's fault, so it
       * does not count as a failed credential.
       */
      readonly unavailable?: boolean
    }

/** Decides whether a worker may log in. */
export type WorkerAuthenticator = (login: Login) => Promise<WorkerVerdict>

/** Hashes a secret so two secrets compare in constant time whatever their lengths. */
function digest(secret: string): Buffer {
  return createHash('sha256').update(secret).digest()
}

/** Constant-time comparison of two secrets. */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b))
}

/** Workers authenticate with one shared token (the zero-configuration default). */
export function sharedTokenAuthenticator(token: string): WorkerAuthenticator {
  const expected = digest(token)
  return async (login) =>
    timingSafeEqual(digest(login.token), expected)
      ? { ok: true }
      : { ok: false, reason: 'invalid worker token' }
}

/**
 * Checks a user's API key against the static key(s). Compares digests in constant time;
 * the digest of each static key is computed once.
 */
export class StaticKeyAuthenticator {
  readonly #digests: Buffer[]
  /**
   * Keys already accepted, so the hash runs once per key rather than once per request. A Map
   * lookup hashes the whole string and compares contents only on a hash match, so it leaks
   * nothing useful about a wrong key's characters. Bounded; cleared when full.
   */
  readonly #accepted = new Map<string, true>()

  constructor(keys: readonly string[]) {
    this.#digests = keys.filter((k) => k.length > 0).map(digest)
  }

  /** True when `key` is one of the static keys. */
  check(key: string): boolean {
    if (this.#accepted.has(key)) return true
    const d = digest(key)
    let ok = false
    for (const expected of this.#digests) ok = timingSafeEqual(d, expected) || ok
    if (ok) {
      if (this.#accepted.size >= 1024) this.#accepted.clear()
      this.#accepted.set(key, true)
    }
    return ok
  }
}
