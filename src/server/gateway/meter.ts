import { countTokens, type TokenCount } from '../../auth/rate-limit.js'

/** What an answer cost, once it is over. */
export interface AnswerFacts {
  status: number
  workerId: string | null
  tokens: TokenCount
}

/**
 * Watches an answer for the keys that need it (token limits, request tracking): keeps its last
 * few chunks (as received, decoded only at the end) to read the token usage from.
 */
export class AnswerMeter {
  status = 0
  workerId: string | null = null
  #tail: Buffer[] = []
  #tailBytes = 0
  #bytes = 0
  #done = false
  readonly #report: (facts: AnswerFacts) => void

  constructor(report: (facts: AnswerFacts) => void) {
    this.#report = report
  }

  observe(chunk: Buffer): void {
    this.#bytes += chunk.length
    this.#tail.push(chunk)
    this.#tailBytes += chunk.length
    while (this.#tail.length > 1 && this.#tailBytes - this.#tail[0]!.length >= 4096) {
      this.#tailBytes -= this.#tail.shift()!.length
    }
  }

  finish(): void {
    if (this.#done) return
    this.#done = true
    const tail = Buffer.concat(this.#tail).toString('utf8').slice(-4096)
    const tokens = countTokens(tail, this.#bytes)
    this.#report({
      status: this.status,
      workerId: this.workerId,
      tokens: {
        total: safeCount(tokens.total),
        prompt: tokens.prompt === null ? null : safeCount(tokens.prompt),
        completion: tokens.completion === null ? null : safeCount(tokens.completion),
        reported: tokens.reported,
      },
    })
  }
}

/**
 * A token count as a whole number in [0, 2^53 - 1]. The engine's `usage` may hold any number
 * of digits (`Number` makes 400 of them Infinity): a huge count stays "very many" for the TPM
 * limiter, which refuses unsafe integers and would otherwise leave that answer uncounted.
 */
function safeCount(n: number): number {
  if (Number.isNaN(n)) return 0
  return Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.round(n)))
}
