import { countTokens, type TokenCount } from '../../auth/rate-limit.js'

/** What an answer cost, once it is over. */
export interface AnswerFacts {
  status: number
  workerId: string | null
  tokens: TokenCount
  /** Answer bytes sent to the user. */
  bytesOut: number
  /** From the request's arrival to the answer's first byte; null when no answer came. */
  ttfbMs: number | null
  durationMs: number
}

/**
 * Watches an answer for metering (usage events, token limits): keeps its last few chunks (as
 * received, decoded only at the end) to read the token usage from, and times it.
 */
export class AnswerMeter {
  status = 0
  workerId: string | null = null
  readonly #started: number
  #firstByteAt = 0
  #tail: Buffer[] = []
  #tailBytes = 0
  #bytes = 0
  #sent = 0
  #done = false
  readonly #report: (facts: AnswerFacts) => void

  /** `started` is the request's arrival (`performance.now()` time). */
  constructor(report: (facts: AnswerFacts) => void, started = performance.now()) {
    this.#report = report
    this.#started = started
  }

  /** The answer's headers left for the user. */
  firstByte(): void {
    if (this.#firstByteAt === 0) this.#firstByteAt = performance.now()
  }

  /** A chunk of the answer as the worker sent it. */
  observe(chunk: Buffer): void {
    this.#bytes += chunk.length
    this.#tail.push(chunk)
    this.#tailBytes += chunk.length
    while (this.#tail.length > 1 && this.#tailBytes - this.#tail[0]!.length >= 4096) {
      this.#tailBytes -= this.#tail.shift()!.length
    }
  }

  /** Bytes written to the user. */
  sent(bytes: number): void {
    this.#sent += bytes
  }

  finish(): void {
    if (this.#done) return
    this.#done = true
    const tail = Buffer.concat(this.#tail).toString('utf8').slice(-4096)
    const tokens = countTokens(tail, this.#bytes)
    const now = performance.now()
    this.#report({
      status: this.status,
      workerId: this.workerId,
      tokens: {
        total: safeCount(tokens.total),
        prompt: tokens.prompt === null ? null : safeCount(tokens.prompt),
        completion: tokens.completion === null ? null : safeCount(tokens.completion),
        reported: tokens.reported,
      },
      bytesOut: this.#sent,
      ttfbMs: this.#firstByteAt === 0 ? null : round(this.#firstByteAt - this.#started),
      durationMs: round(now - this.#started),
    })
  }
}

const round = (ms: number): number => Math.max(0, Math.round(ms * 1000) / 1000)

/**
 * A token count as a whole number in [0, 2^53 - 1]. The engine's `usage` may hold any number
 * of digits (`Number` makes 400 of them Infinity): a huge count stays "very many" for the TPM
 * limiter, which refuses unsafe integers and would otherwise leave that answer uncounted.
 */
function safeCount(n: number): number {
  if (Number.isNaN(n)) return 0
  return Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.round(n)))
}
