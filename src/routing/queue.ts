import { LIMITS, TIMEOUTS } from '../config/defaults.js'

/** A request waiting for a worker with room. */
export interface Waiter {
  /** Room may have freed: try to pick a worker again (re-queue at the head when there is none). */
  wake(): void
  /** Waited the longest it may: give up. */
  expire(): void
}

/** Options of {@link WaitQueues}. */
export interface WaitQueuesOptions {
  /** Requests waiting per model at most; one more is refused at once. @default LIMITS.maxQueuedPerModel */
  readonly maxPerModel?: number | undefined
  /** Longest wait of a request. @default TIMEOUTS.queueWaitMs */
  readonly waitMs?: number | undefined
  /** While anything waits, the oldest waiter of each model retries this often (room that freed without a release: a link that came up, a worker that joined). @default TIMEOUTS.queueRetryMs */
  readonly retryMs?: number | undefined
}

/**
 * Requests that found every eligible worker of their model full, per model, first in first
 * out, bounded in length and in waiting time. A request that ends on a worker releases a slot:
 * the oldest waiter of one of that worker's models is woken. Nothing runs while nothing waits.
 */
export class WaitQueues {
  readonly maxPerModel: number
  readonly waitMs: number
  readonly #retryMs: number
  readonly #byModel = new Map<string, Waiter[]>()
  readonly #timers = new Map<Waiter, NodeJS.Timeout>()
  #retry: NodeJS.Timeout | undefined
  /** Requests refused because their model's queue was full, and requests that waited too long. */
  refused = 0
  expired = 0

  constructor(options: WaitQueuesOptions = {}) {
    this.maxPerModel = options.maxPerModel ?? LIMITS.maxQueuedPerModel
    this.waitMs = options.waitMs ?? TIMEOUTS.queueWaitMs
    this.#retryMs = options.retryMs ?? TIMEOUTS.queueRetryMs
  }

  /** Requests waiting now, all models. */
  get size(): number {
    return this.#timers.size
  }

  /** Queues `waiter` at the tail; false (counted) when the model's queue is full. */
  wait(model: string, waiter: Waiter): boolean {
    const queue = this.#queue(model)
    if (queue.length >= this.maxPerModel) {
      this.refused++
      return false
    }
    queue.push(waiter)
    this.#arm(model, waiter, this.waitMs)
    return true
  }

  /** Puts a woken waiter that found no room back at the head, keeping its original deadline. */
  requeue(model: string, waiter: Waiter, deadlineLeftMs: number): void {
    const queue = this.#queue(model)
    queue.unshift(waiter)
    this.#arm(model, waiter, Math.max(0, deadlineLeftMs))
  }

  /** The waiter's deadline, and the retry tick while anything waits. */
  #arm(model: string, waiter: Waiter, ms: number): void {
    const timer = setTimeout(() => {
      if (this.#remove(model, waiter)) {
        this.expired++
        waiter.expire()
      }
    }, ms)
    timer.unref()
    this.#timers.set(waiter, timer)
    this.#retry ??= setInterval(() => this.#retryHeads(), this.#retryMs).unref()
  }

  #queue(model: string): Waiter[] {
    let queue = this.#byModel.get(model)
    if (queue === undefined) {
      queue = []
      this.#byModel.set(model, queue)
    }
    return queue
  }

  /** Takes a waiter out (its user went away). */
  leave(model: string, waiter: Waiter): void {
    this.#remove(model, waiter)
  }

  /**
   * A slot freed on a worker serving `models`: wakes the oldest waiter of the first of them that
   * has one. One cheap size check when nothing waits (this runs as every request ends).
   */
  release(models: readonly string[]): void {
    if (this.#timers.size === 0) return
    // After the caller's own handling: the slot's lane is back in its pool by then.
    queueMicrotask(() => this.#release(models))
  }

  #release(models: readonly string[]): void {
    for (const model of models) {
      if (this.#wakeHead(model)) return
      // A request for `name` waits under that name; workers announce `name:latest`.
      if (model.endsWith(':latest') && this.#wakeHead(model.slice(0, -7))) return
    }
  }

  /** Waiting requests per model (the management API). */
  depths(): Record<string, number> {
    const out: Record<string, number> = {}
    for (const [model, queue] of this.#byModel) if (queue.length > 0) out[model] = queue.length
    return out
  }

  /** Wakes everyone (stopping: each gives up or is served). */
  wakeAll(): void {
    for (const [model, queue] of [...this.#byModel]) {
      for (const waiter of [...queue]) {
        this.#remove(model, waiter)
        waiter.wake()
      }
    }
  }

  #wakeHead(model: string): boolean {
    const queue = this.#byModel.get(model)
    const waiter = queue?.[0]
    if (waiter === undefined) return false
    this.#remove(model, waiter)
    waiter.wake()
    return true
  }

  #retryHeads(): void {
    for (const model of [...this.#byModel.keys()]) this.#wakeHead(model)
  }

  #remove(model: string, waiter: Waiter): boolean {
    const queue = this.#byModel.get(model)
    const i = queue?.indexOf(waiter) ?? -1
    if (queue === undefined || i < 0) return false
    queue.splice(i, 1)
    if (queue.length === 0) this.#byModel.delete(model)
    clearTimeout(this.#timers.get(waiter))
    this.#timers.delete(waiter)
    if (this.#timers.size === 0 && this.#retry !== undefined) {
      clearInterval(this.#retry)
      this.#retry = undefined
    }
    return true
  }
}
