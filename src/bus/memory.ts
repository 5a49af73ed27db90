import type { BatchHandler, Bus, BusMessage, BusStats, ConsumeOptions, Consumption } from './index.js'

/** Options of the in-process bus. */
export interface MemoryBusOptions {
  /** Messages held at most (not yet committed by every consumer group); the oldest are dropped beyond it. */
  readonly maxBuffered: number
  /** Told once per overflow episode (the count so far), so a flood logs a line, not a line per message. */
  readonly onDrop?: ((dropped: number) => void) | undefined
}

interface Entry {
  readonly seq: number
  readonly message: BusMessage
}

interface Group {
  readonly topics: ReadonlySet<string>
  /** Sequence number of the next message this group has not committed. */
  committed: number
}

const BACKOFF_MIN_MS = 100
const BACKOFF_MAX_MS = 5_000

/**
 * The embedded bus: one ordered in-process log shared by every topic. Consumer groups keep
 * their own position in it and see each message until they commit it, like Kafka's
 * committed offsets; a message leaves memory once every group has committed it (or when
 * the log is full: oldest first). One consumer per group.
 */
export class MemoryBus implements Bus {
  readonly kind = 'memory'
  readonly #options: MemoryBusOptions
  #log: Entry[] = []
  #next = 0
  #published = 0
  #dropped = 0
  #overflowing = false
  readonly #groups = new Map<string, Group>()
  /** Consumers waiting for the log to reach a sequence number (or for a timer). */
  #waiting: { until: number; wake: () => void }[] = []
  readonly #consumers = new Set<Promise<void>>()
  #closed = false

  constructor(options: MemoryBusOptions) {
    this.#options = options
  }

  publish(topic: string, key: string, value: Buffer): void {
    if (this.#closed) return
    const seq = this.#next++
    this.#log.push({ seq, message: { topic, key, value, position: String(seq) } })
    this.#published++
    if (this.#log.length > this.#options.maxBuffered) {
      const over = this.#log.length - this.#options.maxBuffered
      this.#log.splice(0, over)
      this.#dropped += over
      if (!this.#overflowing) {
        this.#overflowing = true
        this.#options.onDrop?.(this.#dropped)
      }
    } else if (this.#overflowing && this.#log.length < this.#options.maxBuffered / 2) {
      this.#overflowing = false
    }
    this.#wakeUntil(this.#next)
  }

  /** Wakes the consumers waiting for the log to reach `next` (all of them when undefined). */
  #wakeUntil(next?: number): void {
    if (this.#waiting.length === 0) return
    const keep: { until: number; wake: () => void }[] = []
    for (const w of this.#waiting) {
      if (next === undefined || next >= w.until) w.wake()
      else keep.push(w)
    }
    this.#waiting = keep
  }

  consume(options: ConsumeOptions, handler: BatchHandler): Consumption {
    if (this.#closed) throw new Error('the bus is closed')
    let group = this.#groups.get(options.groupId)
    if (group === undefined) {
      // A new group starts at the oldest message still held, as Kafka's `earliest`.
      group = { topics: new Set(options.topics), committed: this.#log[0]?.seq ?? this.#next }
      this.#groups.set(options.groupId, group)
    }
    const state = { stopped: false }
    const run = this.#run(group, options, handler, state)
    this.#consumers.add(run)
    void run.finally(() => this.#consumers.delete(run))
    return {
      stop: async () => {
        state.stopped = true
        this.#wakeUntil()
        await run
      },
    }
  }

  async #run(
    group: Group,
    options: ConsumeOptions,
    handler: BatchHandler,
    state: { stopped: boolean },
  ): Promise<void> {
    let backoff = BACKOFF_MIN_MS
    let firstSeenAt = 0
    while (!this.#closed) {
      const batch = this.#pending(group, options.batchSize)
      if (state.stopped) {
        // Stopping: what is held in this process would be lost, so it is handed over now.
        if (batch.length === 0) break
      } else if (batch.length === 0) {
        firstSeenAt = 0
        await this.#waitForMessage(this.#next + 1)
        continue
      } else if (batch.length < options.batchSize) {
        // Let the batch fill, up to batchTimeoutMs after its first message was seen. Woken only
        // once enough messages may have arrived (not on every one: that would rescan the
        // batch per message), or by the timer.
        if (firstSeenAt === 0) firstSeenAt = Date.now()
        const left = firstSeenAt + options.batchTimeoutMs - Date.now()
        if (left > 0) {
          await this.#waitForMessage(this.#next + (options.batchSize - batch.length), left)
          continue
        }
      }
      try {
        await handler(batch.map((e) => e.message))
        // Dropped while the handler ran: the group is already past them.
        group.committed = Math.max(group.committed, batch.at(-1)!.seq + 1)
        this.#trim()
        backoff = BACKOFF_MIN_MS
        firstSeenAt = 0
      } catch (err) {
        options.onError?.(err)
        if (state.stopped) break
        await this.#sleep(backoff, state)
        backoff = Math.min(BACKOFF_MAX_MS, backoff * 2)
      }
    }
  }

  /** Up to `max` messages of the group's topics from its committed position. */
  #pending(group: Group, max: number): Entry[] {
    const out: Entry[] = []
    const log = this.#log
    let i = log.length === 0 ? 0 : Math.max(0, group.committed - log[0]!.seq)
    for (; i < log.length && out.length < max; i++) {
      const entry = log[i]!
      if (group.topics.has(entry.message.topic)) out.push(entry)
    }
    if (out.length === 0 && log.length > 0) {
      // Nothing for this group up to the end of the log: it has nothing to commit but can move on.
      group.committed = Math.max(group.committed, log.at(-1)!.seq + 1)
      this.#trim()
    }
    return out
  }

  /** Forgets messages every group has committed. */
  #trim(): void {
    if (this.#groups.size === 0 || this.#log.length === 0) return
    let min = Number.POSITIVE_INFINITY
    for (const group of this.#groups.values()) min = Math.min(min, group.committed)
    const first = this.#log[0]!.seq
    if (min > first) this.#log.splice(0, Math.min(this.#log.length, min - first))
  }

  /** Resolves once the log's next sequence number reaches `until`, after `timeoutMs`, or on stop/close. */
  #waitForMessage(until: number, timeoutMs?: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined
      const waiter = {
        until,
        wake: () => {
          clearTimeout(timer)
          resolve()
        },
      }
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          const i = this.#waiting.indexOf(waiter)
          if (i >= 0) this.#waiting.splice(i, 1)
          resolve()
        }, timeoutMs)
      }
      this.#waiting.push(waiter)
    })
  }

  /** A back-off: messages arriving do not end it, stopping does. */
  async #sleep(ms: number, state: { stopped: boolean }): Promise<void> {
    const end = Date.now() + ms
    while (!state.stopped && !this.#closed && Date.now() < end)
      await this.#waitForMessage(Number.POSITIVE_INFINITY, end - Date.now())
  }

  stats(): BusStats {
    return { buffered: this.#log.length, published: this.#published, dropped: this.#dropped, connected: true }
  }

  async flush(_timeoutMs: number): Promise<boolean> {
    return true
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#wakeUntil()
    await Promise.allSettled([...this.#consumers])
  }
}
