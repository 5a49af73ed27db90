import type { Cache, RateLimitResult } from '../cache/index.js'
import type { Logger } from '../observability/logger.js'
import type { Principal } from './principal.js'

const MINUTE = 60_000

/** Result of admitting one request. */
export interface Admission {
  readonly allowed: boolean
  /** `x-ratelimit-*` headers (and `retry-after` when refused). */
  readonly headers: Record<string, string>
  /** Which limit refused it. */
  readonly limit?: 'requests' | 'tokens'
}

/**
 * Per-key requests-per-minute and tokens-per-minute limits. Counted in the shared cache
 * (Redis: atomic across servers); when that is unreachable, in this process's own cache, so a
 * Redis outage loosens the limits to per-server rather than failing requests.
 */
export class RateLimiter {
  readonly #shared: Cache
  readonly #local: Cache
  readonly #logger: Logger

  constructor(options: { shared: Cache; local: Cache; logger: Logger }) {
    this.#shared = options.shared
    this.#local = options.local
    this.#logger = options.logger
  }

  /** True when the principal has any limit (the common unlimited case costs nothing). */
  static applies(p: Principal): boolean {
    return p.rpmLimit !== null || p.tpmLimit !== null
  }

  /** Counts one request against the key's limits; refuses when over either. */
  async admit(p: Principal): Promise<Admission> {
    const headers: Record<string, string> = {}
    if (p.tpmLimit !== null) {
      const tokens = await this.#call((c) => c.peek(`rl:tpm:${p.keyId}`, p.tpmLimit!))
      setHeaders(headers, 'tokens', p.tpmLimit, tokens)
      if (tokens.remaining <= 0) return refuse(headers, tokens, 'tokens')
    }
    if (p.rpmLimit !== null) {
      const requests = await this.#call((c) => c.consume(`rl:rpm:${p.keyId}`, 1, p.rpmLimit!, MINUTE))
      setHeaders(headers, 'requests', p.rpmLimit, requests)
      if (!requests.allowed) return refuse(headers, requests, 'requests')
    }
    return { allowed: true, headers }
  }

  /** Counts the tokens a finished request used. */
  async recordTokens(p: Principal, tokens: number): Promise<void> {
    if (p.tpmLimit === null || tokens <= 0) return
    await this.#call((c) => c.add(`rl:tpm:${p.keyId}`, tokens, MINUTE)).catch(() => undefined)
  }

  async #call(fn: (cache: Cache) => Promise<RateLimitResult>): Promise<RateLimitResult> {
    try {
      return await fn(this.#shared)
    } catch (err) {
      if (this.#shared === this.#local) throw err
      this.#logger.debug({ err: String(err) }, 'shared rate limiter unavailable; counting in this process')
      return fn(this.#local)
    }
  }
}

function setHeaders(
  headers: Record<string, string>,
  kind: 'requests' | 'tokens',
  limit: number,
  r: RateLimitResult,
): void {
  headers[`x-ratelimit-limit-${kind}`] = String(limit)
  headers[`x-ratelimit-remaining-${kind}`] = String(Math.max(0, r.remaining))
  headers[`x-ratelimit-reset-${kind}`] =
    `${(Math.max(0, r.resetMs) / 1000).toFixed(3).replace(/\.?0+$/, '')}s`
}

function refuse(
  headers: Record<string, string>,
  r: RateLimitResult,
  limit: 'requests' | 'tokens',
): Admission {
  headers['retry-after'] = String(Math.max(1, Math.ceil(r.resetMs / 1000)))
  return { allowed: false, headers, limit }
}

/** Tokens of one answer; `reported` is false when they were estimated from its size. */
export interface TokenCount {
  readonly total: number
  readonly prompt: number | null
  readonly completion: number | null
  readonly reported: boolean
}

/**
 * Tokens an answer used, read from the tail of its body: OpenAI `usage` (JSON, or the last SSE
 * chunk), Ollama `prompt_eval_count` / `eval_count`; else estimated as bytes / 4.
 */
export function countTokens(tail: string, bodyBytes: number): TokenCount {
  const last = (re: RegExp): number | null => {
    let value: string | undefined
    for (const match of tail.matchAll(re)) value = match[1]
    return value === undefined ? null : Number(value)
  }
  const total = last(/"total_tokens"\s*:\s*(\d+)/g)
  if (total !== null) {
    return {
      total,
      prompt: last(/"prompt_tokens"\s*:\s*(\d+)/g),
      completion: last(/"completion_tokens"\s*:\s*(\d+)/g),
      reported: true,
    }
  }
  const completion = last(/"eval_count"\s*:\s*(\d+)/g)
  if (completion !== null) {
    const prompt = last(/"prompt_eval_count"\s*:\s*(\d+)/g)
    return { total: completion + (prompt ?? 0), prompt, completion, reported: true }
  }
  return { total: Math.ceil(bodyBytes / 4), prompt: null, completion: null, reported: false }
}
