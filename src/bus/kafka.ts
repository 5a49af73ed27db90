/**
 * The Kafka bus (`--bootstrap-server host:port[,host:port]`), on @platformatic/kafka.
 *
 * Publishing appends to a bounded in-memory queue and returns; one background pump sends
 * the queue's head to the broker, many messages per produce request, one request at a
 * time, and removes them only once the broker acknowledged them (acks=all). What a request
 * failed to write is retried, same messages in the same order, after a back-off (100 ms
 * doubling to 5 s), so a broker that is down or restarting loses nothing the buffer can hold;
 * beyond `maxBuffered` the oldest messages are dropped and counted. Partitions the broker
 * acknowledged in a request that failed elsewhere are not sent again; delivery is still at
 * least once, since a request cut off after the broker wrote it is sent again.
 *
 * Each `consume()` is one group member (its own Consumer) reading from the group's
 * committed offsets (earliest for a new group), in batches; a batch's offsets are committed
 * only after its handler resolved, and a handler that rejects gets the very same batch again
 * after a back-off, never the messages after it. When the broker goes away the member
 * reports it, backs off, and reads again from the committed offsets once it is back.
 *
 * Topics are created when missing (3 partitions by default: a key — a worker, an API key —
 * always lands on the same partition, so its messages stay in order, and three consumers
 * of one group can share the load), on first contact and again after any failure, in case
 * the broker came back without them.
 */
import { setTimeout as delay } from 'node:timers/promises'
import {
  Admin,
  Consumer,
  type Message,
  type MessagesStream,
  murmur2,
  ProduceAcks,
  Producer,
  stringDeserializer,
} from '@platformatic/kafka'
import { ErrorCodes, FabricError } from '../errors/index.js'
import {
  type BatchHandler,
  type Bus,
  type BusMessage,
  type BusStats,
  type ConsumeOptions,
  type Consumption,
  TOPICS,
} from './index.js'

/** Partitions of each topic the bus creates, by default. */
export const DEFAULT_TOPIC_PARTITIONS = 3
/** Time allowed to open a TCP connection to a broker, by default. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 3_000
/** Time a request (produce, fetch, commit, …) may take before it fails, by default. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000
/** How long `close()` keeps trying to hand the buffer to the broker, by default. */
export const DEFAULT_CLOSE_FLUSH_MS = 2_000
/** A consumer member not heard from for this long is out of its group (broker minimum: 6 s). */
export const DEFAULT_SESSION_TIMEOUT_MS = 10_000
/** How often a consumer member tells the coordinator it is alive. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 1_000

/** First pause after a failure (produce, handler, consumer session); doubles up to the next. */
const BACKOFF_MIN_MS = 100
const BACKOFF_MAX_MS = 5_000
/** Most messages in one produce request (and at most half of `maxBuffered`). */
const PRODUCE_BATCH_MESSAGES = 1_000
/** Most key+value bytes in one produce request: well under the broker's 1 MiB `message.max.bytes`. */
const PRODUCE_BATCH_BYTES = 512 * 1024
/** A bigger message could never be accepted by a broker with default settings: dropped at publish. */
const MAX_MESSAGE_BYTES = 900 * 1024
/** How long a new (or just restarted) topic may take before its partitions serve requests. */
const TOPIC_READY_MS = 10_000
const TOPIC_READY_POLL_MS = 50
/** The broker holds a fetch this long when it has nothing new; also bounds how long a stop waits for one. */
const FETCH_WAIT_MS = 500
/** Time allowed to leave the group and close a consumer's connections on stop. */
const CONSUMER_CLOSE_MS = 3_000
/**
 * Retries inside the client library before an operation fails to us (we retry with back-off
 * above it). The producer gets none: the library would resend a whole request when one
 * partition failed, duplicating what the others had written.
 */
const CLIENT_RETRIES = 1
const CLIENT_RETRY_DELAY_MS = 100

/** Options of {@link KafkaBus}. */
export interface KafkaBusOptions {
  /** `host:port` of one or more brokers (the seed's `--bootstrap-server`, split on commas). */
  readonly bootstrapServers: readonly string[]
  /** Client id the broker sees; consumers add `-consumer`. */
  readonly clientId: string
  /** Messages held at most while not acknowledged by the broker (LIMITS.busBufferMessages); the oldest are dropped beyond it. */
  readonly maxBuffered: number
  /** Told once per overflow episode (the count so far), so a flood logs a line, not a line per message. */
  readonly onDrop?: ((dropped: number) => void) | undefined
  /** Told about background failures the bus recovers from (broker unreachable, topic creation). */
  readonly onError?: ((err: unknown) => void) | undefined
  /** Topics created on first contact, besides those published to or consumed. Default: the seed's {@link TOPICS}. */
  readonly topics?: readonly string[] | undefined
  /** Partitions of a topic the bus creates. Default {@link DEFAULT_TOPIC_PARTITIONS}. */
  readonly topicPartitions?: number | undefined
  /** Replicas of a topic the bus creates; -1: the broker's `default.replication.factor`. Default -1. */
  readonly replicationFactor?: number | undefined
  /** Default {@link DEFAULT_CONNECT_TIMEOUT_MS}. */
  readonly connectTimeoutMs?: number | undefined
  /** Default {@link DEFAULT_REQUEST_TIMEOUT_MS}. */
  readonly requestTimeoutMs?: number | undefined
  /** Default {@link DEFAULT_CLOSE_FLUSH_MS}. */
  readonly closeFlushMs?: number | undefined
  /** Default {@link DEFAULT_SESSION_TIMEOUT_MS}. */
  readonly sessionTimeoutMs?: number | undefined
  /** Default {@link DEFAULT_HEARTBEAT_INTERVAL_MS}. */
  readonly heartbeatIntervalMs?: number | undefined
}

const KNOWN_OPTIONS = new Set([
  'bootstrapServers',
  'clientId',
  'maxBuffered',
  'onDrop',
  'onError',
  'topics',
  'topicPartitions',
  'replicationFactor',
  'connectTimeoutMs',
  'requestTimeoutMs',
  'closeFlushMs',
  'sessionTimeoutMs',
  'heartbeatIntervalMs',
])

/** Splits `host:port[,host:port]` (the seed's `--bootstrap-server`) into addresses; throws GPUF_CONFIG on a bad one. */
export function parseBootstrapServers(value: string): string[] {
  const servers = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
  if (servers.length === 0) throw configError('--bootstrap-server names no broker')
  for (const server of servers) checkServer(server)
  return servers
}

function checkServer(server: string): void {
  const match = /^(.+):(\d{1,5})$/.exec(server)
  const port = match === null ? 0 : Number(match[2])
  if (match === null || port < 1 || port > 65_535)
    throw configError(`bad Kafka broker address ${JSON.stringify(server)}: expected host:port`)
}

function configError(message: string): FabricError {
  return new FabricError(ErrorCodes.CONFIG, message)
}

function positive(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value < min)
    throw configError(`KafkaBus ${name} must be an integer >= ${min}`)
  return value
}

/** A message waiting for the broker, as published (the key is encoded only when sent). */
interface Outgoing {
  readonly topic: string
  readonly key: string
  readonly value: Buffer
}

/**
 * A double-ended queue on a ring that grows by doubling: push at the back, take from and
 * give back to the front, all O(1) (amortised).
 */
class Deque<T> {
  #items: (T | undefined)[] = new Array(16)
  #head = 0
  #length = 0

  get length(): number {
    return this.#length
  }

  push(item: T): void {
    if (this.#length === this.#items.length) this.#grow()
    this.#items[(this.#head + this.#length) % this.#items.length] = item
    this.#length++
  }

  unshift(item: T): void {
    if (this.#length === this.#items.length) this.#grow()
    this.#head = (this.#head - 1 + this.#items.length) % this.#items.length
    this.#items[this.#head] = item
    this.#length++
  }

  shift(): T | undefined {
    if (this.#length === 0) return undefined
    const item = this.#items[this.#head]
    this.#items[this.#head] = undefined
    this.#head = (this.#head + 1) % this.#items.length
    this.#length--
    return item
  }

  peek(): T | undefined {
    return this.#length === 0 ? undefined : this.#items[this.#head]
  }

  #grow(): void {
    const items: (T | undefined)[] = new Array(this.#items.length * 2)
    for (let i = 0; i < this.#length; i++) items[i] = this.#items[(this.#head + i) % this.#items.length]
    this.#items = items
    this.#head = 0
  }
}

/** A pause that ends early when `signal` aborts (no throw); its timer does not hold the process. */
async function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await delay(ms, undefined, { signal, ref: false }).catch(() => undefined)
}

/** Settles with `promise`, or rejects after `ms`; the timer is cleared either way. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** True when every error in `err` (an AggregateError tree) says the topic exists already. */
function onlyTopicExists(err: unknown): boolean {
  if (err instanceof AggregateError) return err.errors.length > 0 && err.errors.every(onlyTopicExists)
  return (err as { apiId?: unknown } | null)?.apiId === 'TOPIC_ALREADY_EXISTS'
}

/** Says which Kafka operation failed, keeping the library's error as the cause. */
function failure(operation: string, cause: unknown): Error {
  const reason = cause instanceof Error ? cause.message : String(cause)
  return new Error(`kafka bus: ${operation} failed: ${reason}`, { cause })
}

type KafkaMessage = Message<string, Buffer, Buffer, Buffer>
type KafkaStream = MessagesStream<string, Buffer, Buffer, Buffer>

/**
 * Gathers a consumer stream's messages into batches. The stream is paused while `limit`
 * messages wait here, so a slow handler holds a bounded number of them in memory.
 */
class BatchReader {
  readonly #stream: KafkaStream
  readonly #limit: number
  #buffer: KafkaMessage[] = []
  /** When the oldest message in the buffer arrived. */
  #firstAt = 0
  #failure: unknown
  #ended = false
  #wake: (() => void) | undefined

  constructor(stream: KafkaStream, limit: number) {
    this.#stream = stream
    this.#limit = limit
    stream.on('data', (message: KafkaMessage) => {
      if (this.#buffer.length === 0) this.#firstAt = Date.now()
      this.#buffer.push(message)
      if (this.#buffer.length >= this.#limit) stream.pause()
      this.#wake?.()
    })
    stream.on('error', (err: Error) => {
      this.#failure ??= err
      this.#wake?.()
    })
    stream.on('close', () => {
      this.#ended = true
      this.#wake?.()
    })
  }

  /**
   * The next batch: up to `size` messages, handed over when full or `timeoutMs` after its
   * first message arrived; undefined once `signal` aborts. Throws when the stream failed.
   */
  async next(size: number, timeoutMs: number, signal: AbortSignal): Promise<KafkaMessage[] | undefined> {
    for (;;) {
      if (signal.aborted) return undefined
      this.#check()
      if (this.#buffer.length >= size) break
      if (this.#buffer.length > 0) {
        const left = this.#firstAt + timeoutMs - Date.now()
        if (left <= 0) break
        await this.#wait(signal, left)
      } else {
        await this.#wait(signal)
      }
    }
    const batch = this.#buffer.length <= size ? this.#buffer : this.#buffer.slice(0, size)
    this.#buffer = this.#buffer.length <= size ? [] : this.#buffer.slice(size)
    // What is left arrived before now: its batch is due at most `timeoutMs` from here.
    if (this.#buffer.length > 0) this.#firstAt = Date.now()
    if (this.#stream.isPaused() && this.#buffer.length < this.#limit) this.#stream.resume()
    return batch
  }

  #check(): void {
    if (this.#failure !== undefined) throw this.#failure
    if (this.#ended) throw new Error('the consumer stream ended')
  }

  #wait(signal: AbortSignal, ms?: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        this.#wake = undefined
        resolve()
      }
      const timer = ms === undefined ? undefined : setTimeout(done, ms)
      signal.addEventListener('abort', done, { once: true })
      this.#wake = done
    })
  }
}

/** {@link Bus} on Apache Kafka. */
export class KafkaBus implements Bus {
  readonly kind = 'kafka'
  readonly #options: KafkaBusOptions
  readonly #producer: Producer
  readonly #admin: Admin
  readonly #brokers: string[]
  readonly #batchMessages: number
  readonly #partitions: number
  readonly #replicas: number
  readonly #connectTimeoutMs: number
  readonly #requestTimeoutMs: number
  readonly #closeFlushMs: number
  readonly #sessionTimeoutMs: number
  readonly #heartbeatIntervalMs: number

  /** Published, not yet taken by the pump; oldest first. */
  readonly #queue = new Deque<Outgoing>()
  /** Taken by the pump and sent, not yet acknowledged. */
  #inFlight: Outgoing[] = []
  #published = 0
  #dropped = 0
  #overflowing = false
  #connected = false
  /** The pump has reached the broker and made the topics since its last failure. */
  #ready = false

  /** Topics to exist before sending or consuming: the configured ones plus every one seen. */
  readonly #wanted: Set<string>
  /** Topics known to exist since the last failure. */
  readonly #created = new Set<string>()

  #wakePump: (() => void) | undefined
  readonly #flushWaiters = new Set<() => void>()
  readonly #pump: Promise<void>
  /** Aborted by close(): ends back-offs and the pump. */
  readonly #shutdown = new AbortController()
  readonly #consumptions = new Set<Consumption>()
  #closing = false
  #closed: Promise<void> | undefined

  constructor(options: KafkaBusOptions) {
    for (const key of Object.keys(options))
      if (!KNOWN_OPTIONS.has(key)) throw configError(`KafkaBus has no option ${JSON.stringify(key)}`)
    if (options.bootstrapServers.length === 0)
      throw configError('KafkaBus needs at least one bootstrap server')
    for (const server of options.bootstrapServers) checkServer(server)
    if (typeof options.clientId !== 'string' || !/^\S+$/.test(options.clientId))
      throw configError('KafkaBus clientId must be a non-empty string without spaces')
    const maxBuffered = positive('maxBuffered', options.maxBuffered, 0)
    this.#options = options
    this.#brokers = [...options.bootstrapServers]
    this.#batchMessages = Math.max(1, Math.min(PRODUCE_BATCH_MESSAGES, Math.floor(maxBuffered / 2)))
    this.#partitions = positive('topicPartitions', options.topicPartitions, DEFAULT_TOPIC_PARTITIONS)
    this.#replicas = options.replicationFactor ?? -1
    if (!Number.isInteger(this.#replicas) || this.#replicas === 0 || this.#replicas < -1)
      throw configError('KafkaBus replicationFactor must be -1 or a positive integer')
    this.#connectTimeoutMs = positive(
      'connectTimeoutMs',
      options.connectTimeoutMs,
      DEFAULT_CONNECT_TIMEOUT_MS,
    )
    this.#requestTimeoutMs = positive(
      'requestTimeoutMs',
      options.requestTimeoutMs,
      DEFAULT_REQUEST_TIMEOUT_MS,
    )
    this.#closeFlushMs = positive('closeFlushMs', options.closeFlushMs, DEFAULT_CLOSE_FLUSH_MS, 0)
    this.#sessionTimeoutMs = positive(
      'sessionTimeoutMs',
      options.sessionTimeoutMs,
      DEFAULT_SESSION_TIMEOUT_MS,
    )
    this.#heartbeatIntervalMs = positive(
      'heartbeatIntervalMs',
      options.heartbeatIntervalMs,
      DEFAULT_HEARTBEAT_INTERVAL_MS,
    )
    this.#wanted = new Set(options.topics ?? Object.values(TOPICS))

    const client = {
      bootstrapBrokers: this.#brokers,
      connectTimeout: this.#connectTimeoutMs,
      timeout: this.#requestTimeoutMs,
      retries: CLIENT_RETRIES,
      retryDelay: CLIENT_RETRY_DELAY_MS,
    }
    this.#producer = new Producer({
      ...client,
      clientId: options.clientId,
      acks: ProduceAcks.ALL,
      retries: 0,
      repeatOnStaleMetadata: false,
    })
    this.#admin = new Admin({ ...client, clientId: `${options.clientId}-admin` })
    // Neither emits 'error' today; a listener makes sure a future one cannot crash the process.
    this.#producer.on('error', (err: unknown) => this.#report(failure('producer', err)))
    this.#admin.on('error', (err: unknown) => this.#report(failure('admin', err)))
    // Neither the pump nor a consumer rejects; the catch is there so that a bug cannot become
    // an unhandled rejection that takes the server down.
    this.#pump = this.#runPump().catch((err: unknown) => this.#report(failure('the producer pump', err)))
  }

  publish(topic: string, key: string, value: Buffer): void {
    if (this.#closing) return
    if (value.length + key.length > MAX_MESSAGE_BYTES) {
      // The broker would refuse it forever, holding up every message behind it.
      this.#drop(1)
      this.#report(new Error(`kafka bus: a ${value.length}-byte message on ${topic} is too large; dropped`))
      return
    }
    this.#queue.push({ topic, key, value })
    const maxBuffered = this.#options.maxBuffered
    if (this.#queue.length + this.#inFlight.length > maxBuffered) {
      // The oldest message not in a request that is under way goes (batches are at most half the buffer).
      this.#queue.shift()
      this.#drop(1)
    } else if (this.#overflowing && this.#queue.length + this.#inFlight.length < maxBuffered / 2) {
      this.#overflowing = false
    }
    this.#wakePump?.()
  }

  #drop(count: number): void {
    this.#dropped += count
    if (!this.#overflowing) {
      this.#overflowing = true
      this.#options.onDrop?.(this.#dropped)
    }
  }

  stats(): BusStats {
    return {
      buffered: this.#queue.length + this.#inFlight.length,
      published: this.#published,
      dropped: this.#dropped,
      connected: this.#connected,
    }
  }

  flush(timeoutMs: number): Promise<boolean> {
    if (this.#queue.length + this.#inFlight.length === 0) return Promise.resolve(true)
    if (this.#shutdown.signal.aborted) return Promise.resolve(false)
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer)
        this.#flushWaiters.delete(waiter)
        resolve(ok)
      }
      const waiter = () => done(this.#queue.length + this.#inFlight.length === 0)
      const timer = setTimeout(() => done(false), Math.max(0, timeoutMs))
      this.#flushWaiters.add(waiter)
    })
  }

  /** Sends the queue's head, oldest first, until close(); backs off while the broker is unreachable. */
  async #runPump(): Promise<void> {
    const signal = this.#shutdown.signal
    let backoff = BACKOFF_MIN_MS
    while (!signal.aborted) {
      if (this.#inFlight.length === 0 && this.#queue.length === 0 && this.#ready) {
        for (const waiter of [...this.#flushWaiters]) waiter()
        await new Promise<void>((resolve) => {
          this.#wakePump = resolve
        })
        this.#wakePump = undefined
        continue
      }
      try {
        if (this.#inFlight.length === 0) this.#inFlight = this.#takeBatch()
        // First contact, or back after a failure: (re)creates the topics if the broker lost them.
        await this.#ensureTopics(this.#inFlight)
        if (this.#inFlight.length > 0) await this.#send()
        this.#ready = true
        this.#connected = true
        backoff = BACKOFF_MIN_MS
      } catch (err) {
        if (signal.aborted) break
        this.#ready = false
        this.#connected = false
        this.#created.clear()
        this.#producer.clearMetadata()
        // Give the batch back: while we wait it is the oldest in the buffer, first to go on overflow.
        for (let i = this.#inFlight.length - 1; i >= 0; i--) this.#queue.unshift(this.#inFlight[i]!)
        this.#inFlight = []
        this.#report(failure('produce', err))
        await pause(backoff, signal)
        backoff = Math.min(BACKOFF_MAX_MS, backoff * 2)
      }
    }
    for (const waiter of [...this.#flushWaiters]) waiter()
  }

  /**
   * Sends the in-flight batch. On failure, what the broker acknowledged (whole partitions)
   * leaves the batch and the rest stays for the next attempt.
   */
  async #send(): Promise<void> {
    const batch = this.#inFlight
    const topics = [...new Set(batch.map((m) => m.topic))]
    const metadata = await this.#producer.metadata({ topics })
    const partitions = new Map<string, number>()
    for (const topic of topics) {
      const info = metadata.topics.get(topic)
      // Just created, or a leader being elected: the library would fail on a partition without one.
      if (info === undefined || info.partitionsCount === 0 || info.partitions.some((p) => !(p?.leader >= 0)))
        throw new Error(`topic ${topic} has no leader for every partition yet`)
      partitions.set(topic, info.partitionsCount)
    }
    // Partitions are chosen here (as Kafka's Java client does: murmur2 of the key) so that a
    // partial failure can be told apart per message.
    const messages = batch.map((m) => ({
      topic: m.topic,
      key: Buffer.from(m.key),
      value: m.value,
      partition: (murmur2(m.key, true) & 0x7fffffff) % partitions.get(m.topic)!,
    }))
    try {
      await this.#producer.send({ messages })
    } catch (err) {
      const written = writtenPartitions(err)
      if (written.size > 0) {
        const left: Outgoing[] = []
        for (let i = 0; i < batch.length; i++)
          if (!written.has(`${messages[i]!.partition}:${batch[i]!.topic}`)) left.push(batch[i]!)
        this.#published += batch.length - left.length
        this.#inFlight = left
      }
      throw err
    }
    this.#published += batch.length
    this.#inFlight = []
  }

  /** The queue's oldest messages, as many as fit in one produce request. */
  #takeBatch(): Outgoing[] {
    const batch: Outgoing[] = []
    let bytes = 0
    for (;;) {
      const next = this.#queue.peek()
      if (next === undefined || batch.length >= this.#batchMessages) break
      const size = next.key.length + next.value.length
      if (batch.length > 0 && bytes + size > PRODUCE_BATCH_BYTES) break
      this.#queue.shift()
      batch.push(next)
      bytes += size
    }
    return batch
  }

  /**
   * Creates whichever of the wanted topics (and `more`) is not known to exist, and waits
   * until every partition of them has a leader that serves requests.
   */
  async #ensureTopics(more: readonly { readonly topic: string }[] | readonly string[]): Promise<void> {
    for (const item of more) this.#wanted.add(typeof item === 'string' ? item : item.topic)
    const missing = [...this.#wanted].filter((t) => !this.#created.has(t))
    if (missing.length === 0) return
    try {
      await this.#admin.createTopics({
        topics: missing,
        partitions: this.#partitions,
        replicas: this.#replicas,
      })
    } catch (err) {
      if (!onlyTopicExists(err)) throw err
    }
    await this.#untilServed(missing)
    for (const topic of missing) this.#created.add(topic)
  }

  /**
   * Waits until every partition of `topics` answers a ListOffsets from its leader. Right after
   * a topic is created (or the broker restarted) the metadata already names a leader that still
   * refuses produce requests with NOT_LEADER_OR_FOLLOWER, and @platformatic/kafka 1.35 cannot
   * parse that answer (it misreads the KIP-951 tagged fields), so it could not tell which
   * partitions of the request were written and all of them would be sent again.
   */
  async #untilServed(topics: readonly string[]): Promise<void> {
    const deadline = Date.now() + TOPIC_READY_MS
    for (;;) {
      try {
        const metadata = await this.#admin.metadata({ topics: [...topics], forceUpdate: true })
        const request = topics.map((name) => {
          const info = metadata.topics.get(name)
          if (info === undefined || info.partitions.some((p) => !(p?.leader >= 0)))
            throw new Error(`topic ${name} has no leader for every partition yet`)
          return { name, partitions: info.partitions.map((_, i) => ({ partitionIndex: i, timestamp: -1n })) }
        })
        await this.#admin.listOffsets({ topics: request })
        return
      } catch (err) {
        if (Date.now() >= deadline || this.#shutdown.signal.aborted) throw err
        await pause(TOPIC_READY_POLL_MS, this.#shutdown.signal)
      }
    }
  }

  #report(err: unknown): void {
    try {
      this.#options.onError?.(err)
    } catch {
      // A failing logger must not stop the pump.
    }
  }

  consume(options: ConsumeOptions, handler: BatchHandler): Consumption {
    if (this.#closing) throw new FabricError(ErrorCodes.SHUTTING_DOWN, 'the bus is closed')
    if (options.topics.length === 0) throw configError('consume() needs at least one topic')
    if (!/^\S+$/.test(options.groupId)) throw configError('consume() needs a groupId without spaces')
    positive('batchSize', options.batchSize, 1)
    positive('batchTimeoutMs', options.batchTimeoutMs, 0, 0)
    const stopping = new AbortController()
    const report = this.#reporter(options)
    const run = this.#runConsumer(options, handler, report, stopping.signal).catch((err: unknown) =>
      report(failure('the consumer', err)),
    )
    const consumption: Consumption = {
      stop: async () => {
        stopping.abort()
        await run
        this.#consumptions.delete(consumption)
      },
    }
    this.#consumptions.add(consumption)
    return consumption
  }

  /** Where a consumption's errors go: its own `onError`, else the bus's. */
  #reporter(options: ConsumeOptions): (err: unknown) => void {
    return (err) => {
      try {
        if (options.onError !== undefined) options.onError(err)
        else this.#options.onError?.(err)
      } catch {
        // A failing logger must not stop the consumer.
      }
    }
  }

  /** One group member, from start to stop: sessions (a stream each) until stopped, backing off between failures. */
  async #runConsumer(
    options: ConsumeOptions,
    handler: BatchHandler,
    report: (err: unknown) => void,
    signal: AbortSignal,
  ): Promise<void> {
    // One Consumer (one member id) for the whole consumption: after a broker restart the group
    // still knows it, so coming back needs no rebalance that waits for a lost member to time out.
    const consumer = new Consumer<string, Buffer, Buffer, Buffer>({
      clientId: `${this.#options.clientId}-consumer`,
      bootstrapBrokers: this.#brokers,
      groupId: options.groupId,
      connectTimeout: this.#connectTimeoutMs,
      timeout: this.#requestTimeoutMs,
      retries: CLIENT_RETRIES,
      retryDelay: CLIENT_RETRY_DELAY_MS,
      autocommit: false,
      sessionTimeout: this.#sessionTimeoutMs,
      rebalanceTimeout: this.#sessionTimeoutMs,
      heartbeatInterval: this.#heartbeatIntervalMs,
      maxWaitTime: FETCH_WAIT_MS,
      deserializers: { key: stringDeserializer },
    })
    // The consumer emits 'error' when rejoining its group fails: told, never thrown.
    consumer.on('error', (err: unknown) => report(failure('consumer group', err)))
    const limit = Math.max(2 * options.batchSize, 64)
    let backoff = BACKOFF_MIN_MS
    try {
      while (!signal.aborted) {
        let stream: KafkaStream | undefined
        try {
          await this.#ensureTopics([...options.topics])
          stream = await consumer.consume({
            topics: [...options.topics],
            mode: 'committed',
            fallbackMode: 'earliest',
            autocommit: false,
            maxWaitTime: FETCH_WAIT_MS,
            highWaterMark: limit,
          })
          const reader = new BatchReader(stream, limit)
          // With `pipeline`, the batch before the one in hand: its handling, then its commit.
          // Resolves false when it was not committed (stopping), rejects when the commit failed.
          let previous: Promise<boolean> = Promise.resolve(true)
          for (;;) {
            const batch = await reader.next(options.batchSize, options.batchTimeoutMs, signal)
            if (batch === undefined) break
            backoff = BACKOFF_MIN_MS
            const handled = this.#handle(batch, handler, report, signal)
            if (options.pipeline !== true) {
              if (!(await handled)) break
              await consumer.commit({ offsets: nextOffsets(batch) })
              continue
            }
            // Commits stay in order: this batch's waits for the one before it.
            const prior = previous
            previous = prior.then(async (committed) => {
              if (!committed || !(await handled)) return false
              await consumer.commit({ offsets: nextOffsets(batch) })
              return true
            })
            // A failed commit surfaces where `previous` is awaited (next turn, or after the loop).
            previous.catch(() => undefined)
            // At most two batches in hand: the older one must be done before reading a third.
            if (!(await prior)) break
          }
          await previous
        } catch (err) {
          this.#created.clear()
          report(failure('consume', err))
          await pause(backoff, signal)
          backoff = Math.min(BACKOFF_MAX_MS, backoff * 2)
        } finally {
          if (stream !== undefined) {
            const closing = stream.close()
            await within(closing, CONSUMER_CLOSE_MS, 'closing the consumer stream').catch(() =>
              stream?.destroy(),
            )
          }
        }
      }
    } finally {
      await closeConsumer(consumer, report)
    }
  }

  /** Calls the handler until it resolves (true) or the consumption stops (false): never skips a batch. */
  async #handle(
    batch: readonly KafkaMessage[],
    handler: BatchHandler,
    report: (err: unknown) => void,
    signal: AbortSignal,
  ): Promise<boolean> {
    const messages: BusMessage[] = batch.map((m) => ({
      topic: m.topic,
      key: m.key ?? '',
      value: m.value ?? Buffer.alloc(0),
      position: `${m.partition}:${m.offset}`,
    }))
    let backoff = BACKOFF_MIN_MS
    for (;;) {
      try {
        await handler(messages)
        return true
      } catch (err) {
        report(err)
      }
      if (signal.aborted) return false
      await pause(backoff, signal)
      if (signal.aborted) return false
      backoff = Math.min(BACKOFF_MAX_MS, backoff * 2)
    }
  }

  close(): Promise<void> {
    this.#closed ??= this.#close()
    return this.#closed
  }

  async #close(): Promise<void> {
    this.#closing = true
    await Promise.all([...this.#consumptions].map((c) => c.stop()))
    if (this.#closeFlushMs > 0) await this.flush(this.#closeFlushMs)
    this.#shutdown.abort()
    this.#wakePump?.()
    // Closing the producer fails a request still under way, which ends the pump.
    await Promise.allSettled([this.#producer.close(), this.#admin.close()])
    await this.#pump
  }
}

/** `partition:topic` of every partition a failed produce call says it wrote. */
function writtenPartitions(err: unknown): Set<string> {
  const written = new Set<string>()
  const produced = (err as { produced?: { offsets?: { topic: string; partition: number }[] } }).produced
  for (const { topic, partition } of produced?.offsets ?? []) written.add(`${partition}:${topic}`)
  const visit = (e: unknown): void => {
    if (e instanceof AggregateError) for (const inner of e.errors) visit(inner)
    const response = (e as { response?: { responses?: unknown } } | null)?.response
    if (!Array.isArray(response?.responses)) return
    for (const topic of response.responses as { name?: string; partitionResponses?: unknown }[]) {
      if (typeof topic.name !== 'string' || !Array.isArray(topic.partitionResponses)) continue
      for (const p of topic.partitionResponses as { index: number; errorCode: number }[])
        if (p.errorCode === 0) written.add(`${p.index}:${topic.name}`)
    }
  }
  visit(err)
  return written
}

/** For each partition in the batch, the offset after its last message: what the group commits. */
function nextOffsets(
  batch: readonly KafkaMessage[],
): { topic: string; partition: number; offset: bigint; leaderEpoch: number }[] {
  const next = new Map<string, { topic: string; partition: number; offset: bigint; leaderEpoch: number }>()
  for (const m of batch) {
    const id = `${m.partition}:${m.topic}`
    const entry = next.get(id)
    if (entry === undefined)
      next.set(id, { topic: m.topic, partition: m.partition, offset: m.offset + 1n, leaderEpoch: -1 })
    else if (m.offset + 1n > entry.offset) entry.offset = m.offset + 1n
  }
  return [...next.values()]
}

/** Leaves the group and closes the consumer; when the broker cannot be told, just drops the connections. */
async function closeConsumer(
  consumer: Consumer<string, Buffer, Buffer, Buffer>,
  report: (err: unknown) => void,
): Promise<void> {
  try {
    await within(consumer.close(), CONSUMER_CLOSE_MS, 'leaving the consumer group')
  } catch (err) {
    report(failure('leaving the consumer group', err))
    await consumer.connections.close().catch(() => undefined)
  }
}
