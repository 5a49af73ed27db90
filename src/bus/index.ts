/**
 * The message bus: how telemetry leaves the request path. Two adapters behind one
 * interface — in-process (the embedded default) and Apache Kafka (`--bootstrap-server`) —
 * and one contract suite (test/contract/bus.test.ts) that both pass.
 *
 * Publishing never blocks and never throws: a message is queued in a bounded buffer and
 * handed to the broker in the background, in order. While the broker is unreachable the
 * buffer holds what it can (`maxBuffered`); beyond that the oldest messages are dropped,
 * counted and logged. Consumption is at least once: a batch is committed only after its
 * handler resolved; a handler that rejects gets the same batch again after a back-off.
 */

/** The seed's topic names. */
export const TOPICS = {
  /** One message per worker heartbeat. */
  heartbeats: 'client-heartbeats',
  /** One message per forwarded request (usage metering). */
  requests: 'request-message',
} as const
export type TopicName = (typeof TOPICS)[keyof typeof TOPICS]

/** A consumed message. */
export interface BusMessage {
  readonly topic: string
  /** The key it was published with (the worker's client id, the API key's id). */
  readonly key: string
  readonly value: Buffer
  /** Where it sits in its topic (`partition:offset` on Kafka, a sequence in-process); for logs. */
  readonly position: string
}

/** What a bus did since it was made. */
export interface BusStats {
  /** Published and not yet acknowledged by the broker. */
  readonly buffered: number
  /** Acknowledged by the broker. */
  readonly published: number
  /** Dropped because the buffer was full (broker unreachable for long). */
  readonly dropped: number
  /** False while the broker cannot be reached (always true in-process). */
  readonly connected: boolean
}

/** How a consumer reads. */
export interface ConsumeOptions {
  readonly topics: readonly string[]
  /** Consumer group: members share the topics' partitions; offsets are kept per group. */
  readonly groupId: string
  /** Most messages per batch. */
  readonly batchSize: number
  /** Longest wait for a batch to fill before the messages so far are handed over. */
  readonly batchTimeoutMs: number
  /**
   * Let the handler of the next batch start while the previous one is still running (two at
   * most); commits stay in batch order, each after its own handler and the commits before it.
   * For handlers whose effects do not depend on order (the telemetry consumer's: idempotent,
   * commutative folds): the decoding of one batch overlaps the database write of the one
   * before. The in-process bus always runs one at a time.
   */
  readonly pipeline?: boolean | undefined
  /** Told about errors the consumer recovers from (handler failures, broker down). */
  readonly onError?: ((err: unknown) => void) | undefined
}

/** A running consumer. */
export interface Consumption {
  /**
   * Stops after the batch in hand (if any) is handled; its commit is attempted. The
   * in-process bus first hands over every message it still holds for the group (they exist
   * nowhere else); Kafka keeps uncommitted messages for the next consumer.
   */
  stop(): Promise<void>
}

/** A batch handler: resolve to commit the batch, reject to have it delivered again. */
export type BatchHandler = (batch: readonly BusMessage[]) => Promise<void>

export interface Bus {
  readonly kind: 'memory' | 'kafka'
  /** Queues a message for `topic`. Never blocks, never throws. */
  publish(topic: string, key: string, value: Buffer): void
  /** Starts consuming `options.topics` in batches. */
  consume(options: ConsumeOptions, handler: BatchHandler): Consumption
  stats(): BusStats
  /**
   * Resolves true once every message published so far is with the broker, false when
   * `timeoutMs` passes first.
   */
  flush(timeoutMs: number): Promise<boolean>
  /** Stops consumers, tries to flush for a moment, and closes connections. */
  close(): Promise<void>
}

export { MemoryBus, type MemoryBusOptions } from './memory.js'
