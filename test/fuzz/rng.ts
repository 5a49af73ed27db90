/**
 * A small seeded random generator (mulberry32) for the network fuzzer: case `i` of seed `s`
 * is always the same bytes, so a finding is reproduced from its seed and index alone.
 */
export class Rng {
  #state: number

  constructor(seed: number) {
    this.#state = seed >>> 0
  }

  /** The generator of case `index` under `seed`. */
  static forCase(seed: number, index: number): Rng {
    return new Rng((seed ^ Math.imul(index + 1, 0x9e37_79b1)) >>> 0)
  }

  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b_79f5) >>> 0
    let t = this.#state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n)
  }

  /** An integer in [min, max]. */
  range(min: number, max: number): number {
    return min + this.int(max - min + 1)
  }

  chance(p: number): boolean {
    return this.next() < p
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!
  }

  /** Picks by weight: `[[weight, value], ...]`. */
  weighted<T>(items: readonly (readonly [number, T])[]): T {
    let total = 0
    for (const [w] of items) total += w
    let r = this.next() * total
    for (const [w, value] of items) {
      r -= w
      if (r < 0) return value
    }
    return items[items.length - 1]![1]
  }

  /** `n` random bytes. */
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) out[i] = this.int(256)
    return out
  }

  /** A length: usually small, sometimes up to `max`. */
  size(max: number): number {
    return this.chance(0.85) ? this.int(Math.min(max, 64) + 1) : this.int(max + 1)
  }
}
