import type { Logger } from '../observability/logger.js'
import type { RequestLogRecord, Store } from '../store/index.js'

/** One finished request of a tracked (shared) key. */
export type TrackedRequest = Omit<RequestLogRecord, 'id'>

/** Options of the request tracker. */
export interface RequestTrackerOptions {
  readonly store: Pick<Store, 'recordRequests'>
  readonly logger: Logger
  /** Flush interval. */
  readonly flushMs?: number
  /** Rows per database write. */
  readonly maxBatch?: number
  /** Rows held at most (e.g. while the database is down); the oldest are dropped beyond it. */
  readonly maxQueue?: number
}

/**
 * Logs the requests of shared keys for tracking, off the request path: `track` only queues;
 * a timer writes batches to the store. While the database is down rows wait (bounded) and
 * go out once it is back; rows dropped for lack of room are counted and reported.
 */
export class RequestTracker {
  readonly #options: RequestTrackerOptions
  readonly #maxBatch: number
  readonly #maxQueue: number
  #queue: TrackedRequest[] = []
  #dropped = 0
  #timer: NodeJS.Timeout | undefined
  #flushing: Promise<void> | undefined

  constructor(options: RequestTrackerOptions) {
    this.#options = options
    this.#maxBatch = options.maxBatch ?? 500
    this.#maxQueue = options.maxQueue ?? 20_000
  }

  start(): void {
    this.#timer = setInterval(() => void this.flush(), this.#options.flushMs ?? 1_000)
    this.#timer.unref()
  }

  /** Stops the timer and writes what is queued (one last try). */
  async stop(): Promise<void> {
    clearInterval(this.#timer)
    await this.flush()
  }

  track(row: TrackedRequest): void {
    if (this.#queue.length >= this.#maxQueue) {
      this.#queue.shift()
      this.#dropped++
    }
    this.#queue.push(row)
  }

  /** Writes queued rows in batches; stops at the first failure and keeps the rest for later. */
  flush(): Promise<void> {
    this.#flushing ??= this.#drain().finally(() => {
      this.#flushing = undefined
    })
    return this.#flushing
  }

  async #drain(): Promise<void> {
    if (this.#dropped > 0) {
      this.#options.logger.warn({ dropped: this.#dropped }, 'request log queue was full; oldest rows dropped')
      this.#dropped = 0
    }
    while (this.#queue.length > 0) {
      const batch = this.#queue.slice(0, this.#maxBatch)
      try {
        await this.#options.store.recordRequests(batch)
      } catch (err) {
        this.#options.logger.debug(
          { err: String(err), pending: this.#queue.length },
          'request log write failed; will retry',
        )
        return
      }
      this.#queue.splice(0, batch.length)
    }
  }
}
