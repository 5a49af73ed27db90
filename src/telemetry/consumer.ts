import { type Bus, type BusMessage, type Consumption, TOPICS } from '../bus/index.js'
import { TIMEOUTS } from '../config/defaults.js'
import { ErrorCodes, isFabricError } from '../errors/index.js'
import type { Logger } from '../observability/logger.js'
import { decodeEvent, type HeartbeatEvent, type UsageEvent } from '../protocol/events.js'
import type { Store } from '../store/index.js'

/** Options of the heartbeat consumer (the seed's `heartbeat_consumer` flags). */
export interface TelemetryConsumerOptions {
  readonly bus: Bus
  readonly store: Pick<Store, 'applyTelemetry' | 'pruneTelemetry'>
  readonly logger: Logger
  /** Consumer group (Kafka): consumers of one group share the work. */
  readonly groupId: string
  readonly batchSize: number
  readonly batchTimeoutMs: number
  /** Raw heartbeats and request-log rows older than this are pruned; 0 keeps them forever. */
  readonly retentionMs?: number | undefined
  readonly pruneIntervalMs?: number | undefined
}

/** What a consumer has done since it started. */
export interface ConsumerStats {
  readonly batches: number
  /** Messages written now. */
  readonly heartbeats: number
  readonly usage: number
  /** Redelivered messages already stored: skipped. */
  readonly duplicates: number
  /** Messages that are not events this version understands: counted and skipped. */
  readonly undecodable: number
  /** Messages the database refused for their content (each alone): counted and skipped. */
  readonly refused: number
  /** Batches that failed (database unreachable) and were delivered again. */
  readonly retries: number
  readonly lastBatchAt: string | null
}

/** The default consumer group (the seed's consumer had one per deployment). */
export const DEFAULT_GROUP_ID = 'gpufabric-heartbeat-consumer'

/**
 * The heartbeat consumer: reads `client-heartbeats` and `request-message` in batches and
 * writes each batch in one database transaction (`Store.applyTelemetry`). At least once,
 * with the effect exactly once: the bus commits a batch only after the transaction, and the
 * store skips a message whose id it already holds. A message that cannot be decoded is
 * counted and skipped; a batch the database refuses for its content is split until the
 * messages it refuses stand alone (skipped, counted); a database that is down fails the
 * batch, which the bus delivers again after a back-off. The same code runs as
 * `gpufabric consumer` on Kafka and inside the server on the in-process bus.
 */
export class TelemetryConsumer {
  readonly #o: TelemetryConsumerOptions
  #consumption: Consumption | undefined
  #pruneTimer: NodeJS.Timeout | undefined
  #stats = {
    batches: 0,
    heartbeats: 0,
    usage: 0,
    duplicates: 0,
    undecodable: 0,
    refused: 0,
    retries: 0,
    lastBatchAt: null as string | null,
  }

  constructor(options: TelemetryConsumerOptions) {
    this.#o = options
  }

  start(): void {
    if (this.#consumption !== undefined) return
    const { bus, groupId, batchSize, batchTimeoutMs, logger } = this.#o
    let lastErrorLog = 0
    this.#consumption = bus.consume(
      {
        topics: [TOPICS.heartbeats, TOPICS.requests],
        groupId,
        batchSize,
        batchTimeoutMs,
        // Batches are idempotent and their folds commutative: decoding one may overlap the
        // database write of the one before.
        pipeline: true,
        onError: (err) => {
          this.#stats.retries++
          // One line a minute while the database or broker stays away, not one per retry.
          if (Date.now() - lastErrorLog < 60_000) return
          lastErrorLog = Date.now()
          logger.warn(
            { err: isFabricError(err) ? err.message : String(err) },
            'telemetry batch not written; it will be delivered again',
          )
        },
      },
      (batch) => this.#handle(batch),
    )
    const retentionMs = this.#o.retentionMs ?? TIMEOUTS.telemetryRetentionMs
    if (retentionMs > 0) {
      // Only while consuming: a prune the first tick queued must not reach a store closed since.
      const prune = () => {
        if (this.#consumption !== undefined) void this.prune(retentionMs)
      }
      this.#pruneTimer = setInterval(prune, this.#o.pruneIntervalMs ?? TIMEOUTS.telemetryPruneIntervalMs)
      this.#pruneTimer.unref()
      setImmediate(prune)
    }
  }

  /** Deletes raw rows older than `retentionMs`; never rejects. */
  async prune(retentionMs: number): Promise<void> {
    try {
      const pruned = await this.#o.store.pruneTelemetry(new Date(Date.now() - retentionMs))
      if (pruned.heartbeats + pruned.requests > 0)
        this.#o.logger.info(pruned, 'pruned raw telemetry past retention')
    } catch (err) {
      this.#o.logger.warn({ err: String(err) }, 'could not prune raw telemetry')
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.#pruneTimer)
    const consumption = this.#consumption
    this.#consumption = undefined
    await consumption?.stop()
  }

  stats(): ConsumerStats {
    return { ...this.#stats }
  }

  async #handle(batch: readonly BusMessage[]): Promise<void> {
    const heartbeats: HeartbeatEvent[] = []
    const usage: UsageEvent[] = []
    // Each heartbeat's bytes as they came: a store that can use them skips serialising again.
    const encoded = new Map<HeartbeatEvent, Buffer>()
    let undecodable = 0
    for (const message of batch) {
      const event = decodeEvent(message.value)
      if (event === undefined) {
        undecodable++
        if (undecodable === 1) {
          this.#o.logger.warn(
            { topic: message.topic, position: message.position, bytes: message.value.length },
            'skipped a telemetry message that cannot be decoded',
          )
        }
      } else if (event.type === 'heartbeat') {
        heartbeats.push(event)
        encoded.set(event, message.value)
      } else usage.push(event)
    }
    await this.#write(heartbeats, usage, encoded)
    // Counted once the batch is written: a batch delivered again is not counted twice.
    this.#stats.undecodable += undecodable
    this.#stats.batches++
    this.#stats.lastBatchAt = new Date().toISOString()
  }

  async #write(
    heartbeats: HeartbeatEvent[],
    usage: UsageEvent[],
    encoded: ReadonlyMap<HeartbeatEvent, Buffer>,
  ): Promise<void> {
    if (heartbeats.length + usage.length === 0) return
    try {
      const written = await this.#o.store.applyTelemetry({ heartbeats, usage, encoded })
      this.#stats.heartbeats += written.heartbeats
      this.#stats.usage += written.usage
      this.#stats.duplicates += written.duplicates
    } catch (err) {
      // Only a refusal of the data itself is isolated. Anything else (down, busy, a schema
      // not migrated yet) fails the batch, which comes again: stalling loses nothing.
      if (!isFabricError(err, ErrorCodes.BAD_REQUEST)) throw err
      const n = heartbeats.length + usage.length
      if (n === 1) {
        this.#stats.refused++
        const event = heartbeats[0] ?? usage[0]!
        this.#o.logger.warn(
          { id: event.id, type: event.type, err: err.message },
          'the database refused a telemetry message; skipped',
        )
        return
      }
      // Refused for its content: halve until the offending messages stand alone.
      const all: (HeartbeatEvent | UsageEvent)[] = [...heartbeats, ...usage]
      const half = Math.ceil(n / 2)
      for (const part of [all.slice(0, half), all.slice(half)]) {
        await this.#write(
          part.filter((e): e is HeartbeatEvent => e.type === 'heartbeat'),
          part.filter((e): e is UsageEvent => e.type === 'usage'),
          encoded,
        )
      }
    }
  }
}
