/**
 * The telemetry pipeline of a server: a bus (in-process, or Kafka with `--bootstrap-server`),
 * the publisher the control and public ports hand their events to, and — when this server
 * consumes its own telemetry — the heartbeat consumer writing to the store.
 */
import { hostname } from 'node:os'
import type { Bus } from '../bus/index.js'
import { MemoryBus } from '../bus/memory.js'
import { LIMITS } from '../config/defaults.js'
import { ErrorCodes, FabricError } from '../errors/index.js'
import type { Logger } from '../observability/logger.js'
import type { Store } from '../store/index.js'
import { DEFAULT_GROUP_ID, TelemetryConsumer } from './consumer.js'
import { TelemetryPublisher } from './publisher.js'

export * from '../protocol/events.js'
export { type ConsumerStats, DEFAULT_GROUP_ID, TelemetryConsumer } from './consumer.js'
export { TelemetryPublisher, type UsageFacts } from './publisher.js'

/** How to build a server's or a consumer's telemetry. */
export interface TelemetryOptions {
  /** `host:port[,host:port]`: Kafka; absent: the in-process bus. */
  readonly bootstrapServer?: string | undefined
  /** Run the consumer here: `auto` = only on the in-process bus. */
  readonly consume: 'auto' | 'on' | 'off'
  readonly store: Store
  readonly logger: Logger
  readonly batchSize?: number | undefined
  readonly batchTimeoutMs?: number | undefined
  readonly groupId?: string | undefined
  /** 0 keeps raw rows forever. */
  readonly retentionMs?: number | undefined
  /** Messages the bus holds while the broker is away (default `LIMITS.busBufferMessages`). */
  readonly maxBuffered?: number | undefined
}

/** A running pipeline. */
export interface Telemetry {
  readonly bus: Bus
  readonly publisher: TelemetryPublisher
  readonly consumer: TelemetryConsumer | undefined
  stats(): Record<string, unknown>
  /** Stops the consumer (after its batch in hand), flushes the bus briefly, closes it. */
  close(): Promise<void>
}

/** Opens the bus and, when asked, starts the consumer. */
export async function openTelemetry(o: TelemetryOptions): Promise<Telemetry> {
  const logger = o.logger.child({ component: 'telemetry' })
  const maxBuffered = o.maxBuffered ?? LIMITS.busBufferMessages
  const onDrop = (dropped: number) =>
    logger.warn(
      { dropped, maxBuffered },
      'telemetry buffer full: dropping the oldest messages (broker or consumer unavailable)',
    )
  let bus: Bus
  if (o.bootstrapServer === undefined || o.bootstrapServer === '') {
    bus = new MemoryBus({ maxBuffered, onDrop })
  } else {
    const { KafkaBus, parseBootstrapServers } = await import('../bus/kafka.js')
    let servers: string[]
    try {
      servers = parseBootstrapServers(o.bootstrapServer)
    } catch (err) {
      throw new FabricError(ErrorCodes.CONFIG, `--bootstrap-server: ${(err as Error).message}`)
    }
    let lastError = 0
    bus = new KafkaBus({
      bootstrapServers: servers,
      clientId: `gpufabric-${hostname()}`,
      maxBuffered,
      onDrop,
      onError: (err) => {
        // One line a minute while the broker stays away.
        if (Date.now() - lastError < 60_000) return
        lastError = Date.now()
        logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'Kafka unavailable; retrying')
      },
    })
  }
  const consume = o.consume === 'on' || (o.consume === 'auto' && bus.kind === 'memory')
  const consumer = consume
    ? new TelemetryConsumer({
        bus,
        store: o.store,
        logger,
        groupId: o.groupId ?? DEFAULT_GROUP_ID,
        batchSize: o.batchSize ?? LIMITS.consumerBatchSize,
        batchTimeoutMs: o.batchTimeoutMs ?? 5_000,
        retentionMs: o.retentionMs,
      })
    : undefined
  consumer?.start()
  return {
    bus,
    publisher: new TelemetryPublisher(bus),
    consumer,
    stats: () => ({ bus: { kind: bus.kind, ...bus.stats() }, consumer: consumer?.stats() ?? null }),
    async close() {
      await consumer?.stop()
      await bus.close()
    },
  }
}
