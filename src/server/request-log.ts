import { ErrorCodes, isFabricError } from '../errors/index.js'
import type { Logger } from '../observability/logger.js'
import type { RequestLogRecord, Store } from '../store/index.js'
import { INT32_MAX, INT32_MIN } from '../store/shared.js'

/** One finished request of a tracked (shared) key. */
export type TrackedRequest = Omit<RequestLogRecord, 'id'>

/**
 * Longest text (key, user and worker ids, model, path) a request-log row keeps, in UTF-16
 * code units; longer text is cut. Announced model names are at most 256 characters
 * (`LIMITS.maxModelNameLength`) and ids far shorter: the bound only stops a broken or hostile
 * peer from putting megabytes per row into the queue and the database.
 */
export const REQUEST_LOG_MAX_TEXT_CHARS = 512

/**
 * A request-log row every adapter accepts, whatever the worker or engine reported (token
 * counts come from the engine's `usage`, of any size). The store refuses what its columns
 * cannot hold (and one refused row fails a whole batch); here each value is brought into
 * range instead:
 * - `status` and token counts: whole numbers within 32 bits (PostgreSQL `integer`, schema v2);
 *   token counts are also at least 0. A NaN token count becomes null (unknown), a NaN status 0.
 * - `durationMs`: finite and at least 0, else 0.
 * - text: at most {@link REQUEST_LOG_MAX_TEXT_CHARS}, never cutting a surrogate pair; NUL,
 *   which PostgreSQL `text` cannot hold, becomes U+FFFD.
 * `at` and the value types are the gateway's own and left as they are: a row the database
 * still refuses is dropped alone by the tracker.
 */
export function boundRequestRow(row: TrackedRequest): TrackedRequest {
  return {
    at: row.at,
    keyId: boundText(row.keyId),
    userId: boundText(row.userId),
    model: boundText(row.model),
    workerId: boundText(row.workerId),
    path: boundText(row.path),
    status: typeof row.status === 'number' && !Number.isNaN(row.status) ? int(row.status, INT32_MIN) : 0,
    durationMs: Number.isFinite(row.durationMs) && row.durationMs > 0 ? row.durationMs : 0,
    promptTokens: tokens(row.promptTokens),
    completionTokens: tokens(row.completionTokens),
    totalTokens: tokens(row.totalTokens),
  }
}

/** A whole number in [min, INT32_MAX]; ±Infinity is clamped like any other number out of range. */
const int = (n: number, min: number): number => Math.min(INT32_MAX, Math.max(min, Math.round(n)))

const tokens = (n: number | null | undefined): number | null =>
  typeof n === 'number' && !Number.isNaN(n) ? int(n, 0) : null

function boundText<T>(text: T): T {
  if (typeof text !== 'string') return text
  let out: string = text
  if (out.length > REQUEST_LOG_MAX_TEXT_CHARS) {
    out = out.slice(0, REQUEST_LOG_MAX_TEXT_CHARS)
    const last = out.charCodeAt(out.length - 1)
    if (last >= 0xd800 && last <= 0xdbff) out = out.slice(0, -1)
  }
  if (out.includes('\u0000')) out = out.replaceAll('\u0000', '\uFFFD')
  return out as T
}

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

/** What the tracker did since it was made. */
export interface RequestTrackerStats {
  /** Rows queued or being written. */
  readonly pending: number
  readonly written: number
  /** Rows the database refused (each alone), dropped. */
  readonly refused: number
  /** Rows dropped for lack of room while the database was down. */
  readonly dropped: number
}

/** How far one batch got: its first `settled` rows are written or refused. */
interface Progress {
  settled: number
  refused: number
  firstRefusal: unknown
}

/**
 * Logs the requests of shared keys for tracking, off the request path: `track` only queues
 * (rows bounded by {@link boundRequestRow}); a timer writes batches to the store. While the
 * database is down rows wait (bounded) and go out once it is back; rows dropped for lack of
 * room are counted and reported. A batch the database refuses for another reason is split
 * until the rows it refuses stand alone: those are dropped, counted and reported, the rest
 * are written, so one bad row never blocks the log.
 */
export class RequestTracker {
  readonly #options: RequestTrackerOptions
  readonly #maxBatch: number
  readonly #maxQueue: number
  #queue: TrackedRequest[] = []
  #inFlight = 0
  /** Dropped for room since the last report. */
  #dropped = 0
  #droppedTotal = 0
  #written = 0
  #refused = 0
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
    if (this.#queue.length >= this.#maxQueue) this.#dropOldest(1)
    this.#queue.push(boundRequestRow(row))
  }

  stats(): RequestTrackerStats {
    return {
      pending: this.#queue.length + this.#inFlight,
      written: this.#written,
      refused: this.#refused,
      dropped: this.#droppedTotal,
    }
  }

  /**
   * Writes queued rows in batches. Stops when the database is unavailable and keeps the
   * rest, in order, for the next flush; drops only rows the database refuses.
   */
  flush(): Promise<void> {
    this.#flushing ??= this.#drain().finally(() => {
      this.#flushing = undefined
    })
    return this.#flushing
  }

  async #drain(): Promise<void> {
    this.#reportDropped()
    while (this.#queue.length > 0) {
      // Out of the queue while in flight: rows tracked (or dropped for room) meanwhile
      // cannot shift what is removed once the batch settles.
      const batch = this.#queue.splice(0, this.#maxBatch)
      this.#inFlight = batch.length
      const progress: Progress = { settled: 0, refused: 0, firstRefusal: undefined }
      try {
        await this.#write(batch, progress)
      } catch (err) {
        // Unavailable: what is not settled goes back to the front, still bounded.
        this.#queue = batch.slice(progress.settled).concat(this.#queue)
        if (this.#queue.length > this.#maxQueue) this.#dropOldest(this.#queue.length - this.#maxQueue)
        this.#options.logger.debug(
          { err: String(err), pending: this.#queue.length },
          'request log write failed; will retry',
        )
        return
      } finally {
        this.#inFlight = 0
        this.#reportRefused(progress)
      }
    }
  }

  /**
   * Writes `rows`; when the store refuses them for any reason but being unavailable, writes
   * each half in turn, down to single rows, which are dropped. Rejects (unavailable) with
   * `progress.settled` telling how many leading rows are done.
   */
  async #write(rows: TrackedRequest[], progress: Progress): Promise<void> {
    try {
      await this.#options.store.recordRequests(rows)
      this.#written += rows.length
      progress.settled += rows.length
    } catch (err) {
      if (isUnavailable(err)) throw err
      if (rows.length === 1) {
        this.#refused++
        progress.refused++
        progress.settled++
        progress.firstRefusal ??= err
        return
      }
      const half = Math.ceil(rows.length / 2)
      await this.#write(rows.slice(0, half), progress)
      await this.#write(rows.slice(half), progress)
    }
  }

  #dropOldest(count: number): void {
    this.#queue.splice(0, count)
    this.#dropped += count
    this.#droppedTotal += count
  }

  #reportDropped(): void {
    if (this.#dropped === 0) return
    this.#options.logger.warn({ dropped: this.#dropped }, 'request log queue was full; oldest rows dropped')
    this.#dropped = 0
  }

  #reportRefused(progress: Progress): void {
    if (progress.refused === 0) return
    const err = progress.firstRefusal
    // The code and the database's message only: a row holds no secret, but the error's
    // cause (driver objects, parameters) is not for the log.
    this.#options.logger.warn(
      {
        refused: progress.refused,
        code: isFabricError(err) ? err.code : undefined,
        reason: (err instanceof Error ? err.message : String(err)).slice(0, 200),
      },
      'request log rows refused by the database; dropped',
    )
  }
}

/**
 * The database cannot be reached (or the store is closed): rows wait. The `Store` contract
 * reports an outage as GPUF_STORE_UNAVAILABLE; any retryable error is treated alike.
 */
function isUnavailable(err: unknown): boolean {
  return isFabricError(err, ErrorCodes.STORE_UNAVAILABLE) || (isFabricError(err) && err.retryable)
}
