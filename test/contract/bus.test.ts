/**
 * One contract for every Bus adapter (in-process and Kafka on a real broker), then what only
 * Kafka can show: the seed's topics on the broker, a broker that never existed, and a broker
 * that goes down and comes back under a running producer and consumer.
 */
import assert from 'node:assert/strict'
import { performance } from 'node:perf_hooks'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Admin } from '@platformatic/kafka'
import {
  type BatchHandler,
  type Bus,
  type BusMessage,
  type ConsumeOptions,
  MemoryBus,
  TOPICS,
} from '../../src/bus/index.js'
import { KafkaBus, type KafkaBusOptions, parseBootstrapServers } from '../../src/bus/kafka.js'
import { LIMITS } from '../../src/config/defaults.js'
import { ErrorCodes, isFabricError } from '../../src/errors/index.js'
import { waitFor } from '../helpers/fabric.js'
import { freePorts } from '../helpers/processes.js'
import { type ManagedService, startKafka, unavailable } from '../helpers/services.js'

// A rejection nobody handled would crash a server: any, from any adapter, fails the suite.
const unhandled: unknown[] = []
process.on('unhandledRejection', (reason) => unhandled.push(reason))

/** Options a test may set on the bus it makes. */
interface MakeOptions {
  readonly maxBuffered?: number
  readonly onDrop?: (dropped: number) => void
}

/** How an adapter's buses are made for the contract. */
interface Subject {
  /** A fresh bus, ready to use. */
  make(options?: MakeOptions): Promise<Bus>
  /** A bus whose messages nobody can take (Kafka: a broker address with nothing listening). */
  makeStranded(options: MakeOptions): Promise<Bus>
  /** Longest a message may take from publish to handler on an idle bus. */
  readonly latencyMs: number
}

let names = 0
/** A name no other test (nor an earlier run on the same broker) uses. */
const fresh = (what: string): string => `${what}-${process.pid}-${Date.now().toString(36)}-${++names}`

const value = (topic: string, key: string, i: number): Buffer => Buffer.from(`${topic}|${key}|${i}`)
const index = (m: BusMessage): number => Number(m.value.toString().split('|')[2])

/** A running consumption that records every batch handed to it. */
interface Recorder {
  /** Every batch, in the order handed over (rejected ones too). */
  readonly batches: BusMessage[][]
  /** Messages of the batches the handler resolved, in order. */
  readonly accepted: BusMessage[]
  readonly errors: unknown[]
  stop(): Promise<void>
}

function record(
  bus: Bus,
  options: Omit<ConsumeOptions, 'onError'>,
  decide: (batch: readonly BusMessage[], call: number) => Promise<void> = async () => undefined,
): Recorder {
  const batches: BusMessage[][] = []
  const accepted: BusMessage[] = []
  const errors: unknown[] = []
  const handler: BatchHandler = async (batch) => {
    batches.push([...batch])
    await decide(batch, batches.length)
    accepted.push(...batch)
  }
  const consumption = bus.consume({ ...options, onError: (err) => errors.push(err) }, handler)
  return { batches, accepted, errors, stop: () => consumption.stop() }
}

/** Keys in the order of their first appearance, each with its message indexes in arrival order. */
function byKey(messages: readonly BusMessage[]): Map<string, number[]> {
  const out = new Map<string, number[]>()
  for (const m of messages) {
    const list = out.get(`${m.topic}/${m.key}`) ?? []
    list.push(index(m))
    out.set(`${m.topic}/${m.key}`, list)
  }
  return out
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i)

/** Closes, when the suite ends, every bus its tests made. */
function tracker(): (bus: Bus) => Bus {
  const open: Bus[] = []
  after(async () => {
    await Promise.all(open.splice(0).map((b) => b.close()))
  })
  return (bus) => {
    open.push(bus)
    return bus
  }
}

/** The behaviour every adapter must have. */
function busContract(name: string, subject: () => Subject): void {
  describe(`Bus contract: ${name}`, () => {
    test('a group gets every message once, in publish order per key, in batches of at most batchSize', async () => {
      const { make, latencyMs } = subject()
      const bus = await make()
      const run = fresh('k')
      const keys = [`${run}-a`, `${run}-b`, `${run}-c`, `${run}-d`]
      const topics = [TOPICS.heartbeats, TOPICS.requests]
      const perKey = 30
      for (let i = 0; i < perKey; i++)
        for (const topic of topics) for (const key of keys) bus.publish(topic, key, value(topic, key, i))
      const total = perKey * keys.length * topics.length
      assert.equal(await bus.flush(10_000), true)
      assert.ok(bus.stats().published >= total)

      const ours = (m: BusMessage) => m.key.startsWith(run)
      const r = record(bus, { topics, groupId: fresh('g'), batchSize: 25, batchTimeoutMs: 50 })
      await waitFor(() => r.accepted.filter(ours).length >= total, 10 * latencyMs, 'every message')
      await sleep(300) // time for a duplicate to show
      await r.stop()

      const got = r.accepted.filter(ours)
      const ids = got.map((m) => `${m.topic}/${m.key.slice(-1)}/${index(m)}`)
      const where = (id: string) =>
        got
          .filter((_, i) => ids[i] === id)
          .map((m) => m.position)
          .join(',')
      const twice = ids.filter((id, i) => ids.indexOf(id) !== i).map((id) => `${id}@${where(id)}`)
      assert.equal(got.length, total, `each message exactly once (twice: ${twice.slice(0, 10).join(' ')})`)
      for (const batch of r.batches)
        assert.ok(batch.length >= 1 && batch.length <= 25, `batch of ${batch.length}`)
      const seen = byKey(got)
      assert.equal(seen.size, keys.length * topics.length)
      for (const [id, indexes] of seen) assert.deepEqual(indexes, range(0, perKey), `order of ${id}`)
      for (const m of got) {
        assert.ok(topics.includes(m.topic as (typeof topics)[number]))
        assert.deepEqual(m.value, value(m.topic, m.key, index(m)))
        assert.equal(typeof m.position, 'string')
        assert.notEqual(m.position, '')
      }
      assert.equal(new Set(got.map((m) => `${m.topic}/${m.position}`)).size, total, 'positions are distinct')
    })

    test('a rejected batch comes again, before anything after it, and what was handled stays committed', async () => {
      const { make, latencyMs } = subject()
      const bus = await make()
      const topic = fresh('t')
      const groupId = fresh('g')
      for (let i = 0; i < 30; i++) bus.publish(topic, 'k', value(topic, 'k', i))
      const failure = new Error('the database is down')
      const r = record(
        bus,
        { topics: [topic], groupId, batchSize: 10, batchTimeoutMs: 50 },
        async (_, call) => {
          if (call === 1) throw failure
        },
      )
      await waitFor(() => r.accepted.length >= 30, 10 * latencyMs, 'every message after the retry')
      await r.stop()

      assert.ok(r.batches.length >= 4)
      const first = r.batches[0]!
      const again = r.batches[1]!
      assert.ok(again.length >= first.length)
      assert.deepEqual(
        again.slice(0, first.length).map((m) => m.position),
        first.map((m) => m.position),
        'the same messages again',
      )
      assert.deepEqual(r.accepted.map(index), range(0, 30), 'nothing skipped, nothing twice')
      // (Kafka may also report a transient broker error, such as the group coordinator starting.)
      assert.equal(r.errors.filter((e) => e === failure).length, 1, 'the handler failure is reported once')

      // A new member of the group starts after what was committed: it sees only what comes next.
      const next = record(bus, { topics: [topic], groupId, batchSize: 10, batchTimeoutMs: 50 })
      bus.publish(topic, 'k', value(topic, 'k', 30))
      await waitFor(() => next.accepted.length >= 1, 10 * latencyMs, 'the next message')
      await sleep(200)
      await next.stop()
      assert.deepEqual(next.accepted.map(index), [30])
    })

    test('a member stopped mid-stream leaves everything it did not handle to the next one', async () => {
      const { make, latencyMs } = subject()
      const bus = await make()
      const topic = fresh('t')
      const groupId = fresh('g')
      const keys = ['x', 'y']
      for (let i = 0; i < 50; i++) for (const key of keys) bus.publish(topic, key, value(topic, key, i))
      assert.equal(await bus.flush(10_000), true)

      let stopping: Promise<void> | undefined
      const a: Recorder = record(
        bus,
        { topics: [topic], groupId, batchSize: 10, batchTimeoutMs: 50 },
        async (_, call) => {
          // Stop from inside the third batch: that batch is finished and committed, nothing after it.
          if (call === 3) stopping = a.stop()
        },
      )
      await waitFor(() => stopping !== undefined, 10 * latencyMs, 'the third batch')
      await stopping
      if (bus.kind === 'memory') {
        // In-process, the messages exist nowhere else: a stopping member hands over all it holds.
        assert.equal(a.accepted.length, 100)
      } else {
        assert.equal(a.batches.length, 3)
        assert.ok(a.accepted.length < 100)
      }

      const b = record(bus, { topics: [topic], groupId, batchSize: 10, batchTimeoutMs: 50 })
      const union = () => new Set([...a.accepted, ...b.accepted].map((m) => `${m.key}/${index(m)}`)).size
      await waitFor(() => union() >= 100, 10 * latencyMs, 'every message between the two members')
      await sleep(200)
      await b.stop()

      const handledByA = byKey(a.accepted)
      const handledByB = byKey(b.accepted)
      for (const key of keys) {
        const fromA = handledByA.get(`${topic}/${key}`) ?? []
        const fromB = handledByB.get(`${topic}/${key}`) ?? []
        assert.deepEqual(fromA, range(0, fromA.length), `A's share of ${key} is in order`)
        // Everything A committed stays with A: B starts right after it.
        assert.deepEqual(fromB, range(fromA.length, 50), `B gets the rest of ${key}, in order`)
      }
    })

    test('a batch smaller than batchSize is handed over batchTimeoutMs after its first message', async () => {
      const { make, latencyMs } = subject()
      const bus = await make()
      const topic = fresh('t')
      const batchTimeoutMs = 400
      const arrivals: number[] = []
      const r = record(
        bus,
        { topics: [topic], groupId: fresh('g'), batchSize: 100, batchTimeoutMs },
        async () => {
          arrivals.push(performance.now())
        },
      )
      // A first message, so the member has joined and is reading before the clock starts.
      bus.publish(topic, 'k', value(topic, 'k', 0))
      await waitFor(() => r.accepted.length === 1, 10 * latencyMs, 'the first message')
      const start = performance.now()
      for (let i = 1; i <= 3; i++) bus.publish(topic, 'k', value(topic, 'k', i))
      await waitFor(() => r.accepted.length === 4, 10 * latencyMs, 'the small batch')
      const waited = arrivals[1]! - start
      await r.stop()
      assert.deepEqual(
        r.batches.map((b) => b.map(index)),
        [[0], [1, 2, 3]],
      )
      assert.ok(
        waited >= batchTimeoutMs - 20,
        `handed over after ${waited.toFixed(0)} ms, not before the timeout`,
      )
      assert.ok(waited < batchTimeoutMs + latencyMs, `handed over after ${waited.toFixed(0)} ms`)
    })

    test('two groups each get every message', async () => {
      const { make, latencyMs } = subject()
      const bus = await make()
      const topic = fresh('t')
      const one = record(bus, { topics: [topic], groupId: fresh('g1'), batchSize: 7, batchTimeoutMs: 50 })
      const two = record(bus, { topics: [topic], groupId: fresh('g2'), batchSize: 13, batchTimeoutMs: 50 })
      for (let i = 0; i < 40; i++) bus.publish(topic, 'k', value(topic, 'k', i))
      await waitFor(
        () => one.accepted.length >= 40 && two.accepted.length >= 40,
        10 * latencyMs,
        'both groups',
      )
      await sleep(200)
      await Promise.all([one.stop(), two.stop()])
      assert.deepEqual(one.accepted.map(index), range(0, 40))
      assert.deepEqual(two.accepted.map(index), range(0, 40))
    })

    test('past maxBuffered the oldest messages are dropped and counted; publishing never blocks', async () => {
      const { makeStranded } = subject()
      const drops: number[] = []
      const bus = await makeStranded({ maxBuffered: 100, onDrop: (n) => drops.push(n) })
      const topic = fresh('t')
      const payload = Buffer.alloc(100, 1)
      const started = performance.now()
      for (let i = 0; i < 10_000; i++) bus.publish(topic, 'k', payload)
      const took = performance.now() - started
      assert.ok(took < 250, `10k publishes took ${took.toFixed(1)} ms`)
      const stats = bus.stats()
      assert.equal(stats.buffered, 100)
      assert.equal(stats.dropped, 9_900)
      assert.equal(drops.length, 1, 'one report per overflow episode')
      assert.ok(drops[0]! >= 1)
      // Nothing is lost or counted twice while the bus keeps trying.
      await sleep(300)
      const later = bus.stats()
      assert.equal(later.dropped, 9_900)
      assert.equal(later.buffered, 100)
      assert.doesNotThrow(() => bus.publish(topic, '', Buffer.alloc(0)))
    })
  })
}

describe('memory', () => {
  const track = tracker()
  const make = async (options: MakeOptions = {}) =>
    track(
      new MemoryBus({ maxBuffered: options.maxBuffered ?? LIMITS.busBufferMessages, onDrop: options.onDrop }),
    )
  busContract('memory', () => ({ make, makeStranded: make, latencyMs: 500 }))

  test('the newest maxBuffered messages are the ones kept', async () => {
    const bus = await make({ maxBuffered: 100 })
    for (let i = 0; i < 1_000; i++) bus.publish('t', 'k', value('t', 'k', i))
    const r = record(bus, { topics: ['t'], groupId: 'g', batchSize: 50, batchTimeoutMs: 20 })
    await waitFor(() => r.accepted.length >= 100, 5_000, 'the kept messages')
    await r.stop()
    assert.deepEqual(r.accepted.map(index), range(900, 1_000))
  })
})

const kafkaMissing = unavailable('kafka')

describe('kafka', { skip: kafkaMissing }, () => {
  let kafka: ManagedService
  const track = tracker()
  const options = (extra: Partial<KafkaBusOptions> = {}): KafkaBusOptions => ({
    bootstrapServers: [kafka.url],
    clientId: fresh('bus'),
    maxBuffered: LIMITS.busBufferMessages,
    ...extra,
  })
  const make = async (extra: MakeOptions = {}) =>
    track(
      new KafkaBus(
        options({ maxBuffered: extra.maxBuffered ?? LIMITS.busBufferMessages, onDrop: extra.onDrop }),
      ),
    )
  const makeStranded = async (extra: MakeOptions) => {
    const [port] = await freePorts(1)
    return track(
      new KafkaBus({
        ...options({ maxBuffered: extra.maxBuffered ?? 100, onDrop: extra.onDrop, closeFlushMs: 200 }),
        bootstrapServers: [`127.0.0.1:${port}`],
      }),
    )
  }

  before(async () => {
    kafka = await startKafka()
  })
  after(async () => {
    await kafka?.close()
  })

  busContract('kafka', () => ({ make, makeStranded, latencyMs: 3_000 }))

  test('the seed topics exist with the configured partitions once a bus has reached the broker', async () => {
    const bus = await make()
    await waitFor(() => bus.stats().connected, 10_000, 'the bus to connect')
    const admin = new Admin({ clientId: fresh('admin'), bootstrapBrokers: [kafka.url] })
    try {
      const metadata = await admin.metadata({ topics: [TOPICS.heartbeats, TOPICS.requests] })
      for (const topic of [TOPICS.heartbeats, TOPICS.requests])
        assert.equal(metadata.topics.get(topic)?.partitionsCount, 3, topic)
    } finally {
      await admin.close()
    }
  })

  test('a broker that never existed: errors are reported, nothing throws, stop and close are prompt', async () => {
    const errors: unknown[] = []
    const [port] = await freePorts(1)
    const bus = track(
      new KafkaBus({
        ...options({ closeFlushMs: 300, onError: (err) => errors.push(err) }),
        bootstrapServers: [`127.0.0.1:${port}`],
      }),
    )
    const consumerErrors: unknown[] = []
    const consumption = bus.consume(
      {
        topics: [fresh('t')],
        groupId: fresh('g'),
        batchSize: 10,
        batchTimeoutMs: 50,
        onError: (e) => consumerErrors.push(e),
      },
      async () => assert.fail('nothing can arrive'),
    )
    bus.publish(TOPICS.requests, 'k', Buffer.from('v'))
    await waitFor(() => errors.length > 0 && consumerErrors.length > 0, 10_000, 'errors to be reported')
    assert.equal(bus.stats().connected, false)
    assert.equal(bus.stats().buffered, 1)
    assert.equal(await bus.flush(200), false)
    let started = performance.now()
    await consumption.stop()
    assert.ok(performance.now() - started < 5_000, 'stop is prompt')
    started = performance.now()
    await bus.close()
    assert.ok(performance.now() - started < 5_000, 'close is prompt')
    assert.ok(errors[0] instanceof Error)
  })

  test('close() hands what is buffered to the broker first', async () => {
    const topic = fresh('t')
    const bus = new KafkaBus(options())
    for (let i = 0; i < 20; i++) bus.publish(topic, 'k', value(topic, 'k', i))
    await bus.close()
    assert.equal(bus.stats().buffered, 0)
    assert.equal(bus.stats().published, 20)
    bus.publish(topic, 'k', value(topic, 'k', 20)) // after close: ignored, never thrown
    const reader = await make()
    const r = record(reader, { topics: [topic], groupId: fresh('g'), batchSize: 50, batchTimeoutMs: 50 })
    await waitFor(() => r.accepted.length >= 20, 30_000, 'the flushed messages')
    await sleep(200)
    await r.stop()
    assert.deepEqual(r.accepted.map(index), range(0, 20))
  })

  // Last: it restarts the shared broker.
  test('a broker down and back: what was published meanwhile arrives, in order; overflow drops the oldest', async () => {
    const bus = await make()
    const small = await make({ maxBuffered: 50 })
    const topic = fresh('t')
    const groupId = fresh('g')
    const r = record(bus, { topics: [topic], groupId, batchSize: 20, batchTimeoutMs: 50 })
    for (let i = 0; i < 10; i++) bus.publish(topic, 'a', value(topic, 'a', i))
    await waitFor(() => r.accepted.length >= 10, 30_000, 'messages before the outage')
    small.publish(topic, 'small', value(topic, 'small', -1))
    assert.equal(await small.flush(10_000), true)

    await kafka.stop()
    for (let i = 10; i < 60; i++) for (const key of ['a', 'b']) bus.publish(topic, key, value(topic, key, i))
    for (let i = 0; i < 200; i++) small.publish(topic, 'small', value(topic, 'small', i))
    assert.equal(small.stats().dropped, 150)
    await waitFor(() => !bus.stats().connected, 10_000, 'the bus to notice')
    assert.ok(bus.stats().buffered > 0)
    await sleep(1_000) // a few failed attempts, with back-off
    await kafka.start()

    assert.equal(await bus.flush(60_000), true)
    assert.equal(await small.flush(60_000), true)
    const done = () => {
      const seen = byKey(r.accepted)
      return (seen.get(`${topic}/a`)?.length ?? 0) >= 60 && (seen.get(`${topic}/b`)?.length ?? 0) >= 50
    }
    await waitFor(done, 60_000, 'the consumer to catch up')
    await r.stop()
    const firstSeen = (indexes: number[]) => [...new Set(indexes)]
    const seen = byKey(r.accepted)
    // At least once: a batch whose commit was cut off may come twice, but nothing is lost or reordered.
    assert.deepEqual(firstSeen(seen.get(`${topic}/a`)!), range(0, 60))
    assert.deepEqual(firstSeen(seen.get(`${topic}/b`)!), range(10, 60))
    assert.ok(bus.stats().connected)
    assert.equal(bus.stats().dropped, 0)

    // The small buffer kept the newest 50 of the 200 published while the broker was away.
    const check = record(bus, { topics: [topic], groupId: fresh('g'), batchSize: 100, batchTimeoutMs: 50 })
    await waitFor(
      () => check.accepted.filter((m) => m.key === 'small').length >= 51,
      30_000,
      'the small bus messages',
    )
    await sleep(200)
    await check.stop()
    assert.deepEqual(check.accepted.filter((m) => m.key === 'small').map(index), [-1, ...range(150, 200)])
  })
})

test('Kafka options are checked before anything connects', () => {
  assert.deepEqual(parseBootstrapServers('10.0.0.1:9092, kafka-2:9093'), ['10.0.0.1:9092', 'kafka-2:9093'])
  const config = (err: unknown) => isFabricError(err, ErrorCodes.CONFIG)
  for (const bad of ['', ' , ', 'kafka', 'kafka:0', 'kafka:99999'])
    assert.throws(() => parseBootstrapServers(bad), config, JSON.stringify(bad))
  const good: KafkaBusOptions = { bootstrapServers: ['127.0.0.1:9092'], clientId: 'c', maxBuffered: 10 }
  const bad: Record<string, unknown>[] = [
    { bootstrapServers: [] },
    { bootstrapServers: ['nowhere'] },
    { clientId: 'has space' },
    { maxBuffered: 0 },
    { maxBuffered: 1.5 },
    { topicPartitions: 0 },
    { replicationFactor: 0 },
    { brokers: ['127.0.0.1:9092'] },
  ]
  for (const change of bad)
    assert.throws(
      () => new KafkaBus({ ...good, ...change } as KafkaBusOptions),
      config,
      JSON.stringify(change),
    )
})

test('no rejection went unhandled', () => {
  assert.deepEqual(unhandled, [])
})
