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
  const total = lastNumber(tail, '"total_tokens"')
  if (total !== null) {
    return {
      total,
      prompt: lastNumber(tail, '"prompt_tokens"'),
      completion: lastNumber(tail, '"completion_tokens"'),
      reported: true,
    }
  }
  const completion = lastNumber(tail, '"eval_count"')
  if (completion !== null) {
    const prompt = lastNumber(tail, '"prompt_eval_count"')
    return { total: completion + (prompt ?? 0), prompt, completion, reported: true }
  }
  return { total: Math.ceil(bodyBytes / 4), prompt: null, completion: null, reported: false }
}

/**
 * The number after the last `key` that is followed by `:` and digits (spaces allowed around
 * the colon), or null: what the last match of /"key"\s*:\s*(\d+)/ would give, found by
 * searching backwards instead of running a regex over the whole tail (this runs per request).
 */
function lastNumber(text: string, key: string): number | null {
  for (let at = text.lastIndexOf(key); at >= 0; at = at === 0 ? -1 : text.lastIndexOf(key, at - 1)) {
    let i = skipSpace(text, at + key.length)
    if (text.charCodeAt(i) !== 58 /* : */) continue
    i = skipSpace(text, i + 1)
    let j = i
    while (j < text.length && text.charCodeAt(j) >= 48 && text.charCodeAt(j) <= 57) j++
    if (j > i) return Number(text.slice(i, j))
  }
  return null
}

function skipSpace(text: string, from: number): number {
  let i = from
  for (;;) {
    const c = text.charCodeAt(i)
    if (c !== 32 && c !== 9 && c !== 10 && c !== 13) return i
    i++
  }
}
