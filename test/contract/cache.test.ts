/**
 * One contract for every Cache adapter (in-process and Redis), then what only one adapter
 * can show: memory bounds, limits shared by several servers, and Redis going away and
 * coming back under the same cache objects.
 */
import assert from 'node:assert/strict'
import { performance } from 'node:perf_hooks'
import { after, afterEach, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  type Cache,
  createCache,
  MemoryCache,
  type RateLimitResult,
  RedisCache,
} from '../../src/cache/index.js'
import { ErrorCodes, isFabricError } from '../../src/errors/index.js'
import { waitFor } from '../helpers/fabric.js'
import { type ManagedService, startRedis, unavailable } from '../helpers/services.js'

/** How an adapter's caches are made for the contract. */
interface Subject {
  /** A fresh, empty cache, ready to use. */
  make(): Promise<Cache>
  /** Two caches sharing one state, as two servers would; only adapters that can share. */
  makePair?(): Promise<[Cache, Cache]>
}

const ODD_KEYS = [
  '',
  'a b',
  'x:y:z',
  '*?[]{}\\',
  'line\nbreak',
  'ünïcødé 😀',
  'gpuf:c:nested',
  'nul\u0000byte',
]

const isUnavailable = (err: unknown): boolean =>
  isFabricError(err, ErrorCodes.CACHE_UNAVAILABLE) && err.retryable

/** Closes, after each test, every cache the test made. */
function tracker(): <T extends Cache>(cache: T) => T {
  const open: Cache[] = []
  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()))
  })
  return (cache) => {
    open.push(cache)
    return cache
  }
}

/** The behaviour every adapter must have. */
function cacheContract(name: string, subject: Subject): void {
  describe(`Cache contract: ${name}`, () => {
    test('get/set/delete', async () => {
      const cache = await subject.make()
      assert.equal(await cache.get('k'), undefined)
      await cache.set('k', 'v1', 10_000)
      assert.equal(await cache.get('k'), 'v1')
      await cache.set('k', 'v2', 10_000)
      assert.equal(await cache.get('k'), 'v2')
      await cache.delete('k')
      assert.equal(await cache.get('k'), undefined)
      await cache.delete('never-set')
    })

    test('entries expire after their TTL', async () => {
      const cache = await subject.make()
      // The short TTL must outlast two round trips on a loaded machine before it is read back.
      await cache.set('long', 'v', 10_000)
      await cache.set('short', 'v', 300)
      assert.equal(await cache.get('short'), 'v')
      await sleep(450)
      assert.equal(await cache.get('short'), undefined)
      assert.equal(await cache.get('long'), 'v')
    })

    test('bad arguments are refused, as rejections', async () => {
      const cache = await subject.make()
      await assert.rejects(cache.set('k', 'v', 0), RangeError)
      await assert.rejects(cache.consume('k', 1.5, 10, 1000), RangeError)
      await assert.rejects(cache.consume('k', -1, 10, 1000), RangeError)
      await assert.rejects(cache.consume('k', 1, Number.NaN, 1000), RangeError)
      await assert.rejects(cache.add('k', 1, -5), RangeError)
      assert.equal((await cache.peek('k', 10)).used, 0)
    })

    test('invalidation deletes the entry and reaches listeners; unsubscribing stops them', async () => {
      const cache = await subject.make()
      const heard: string[] = []
      const heardByGone: string[] = []
      cache.onInvalidation((key) => heard.push(key))
      const unsubscribe = cache.onInvalidation((key) => heardByGone.push(key))
      await cache.set('k', 'v', 10_000)
      await cache.publishInvalidation('k')
      assert.equal(await cache.get('k'), undefined)
      await waitFor(() => heard.includes('k'), 1000, 'the invalidation of k')
      assert.deepEqual(heardByGone, ['k'])

      unsubscribe()
      await cache.publishInvalidation('k2')
      await waitFor(() => heard.includes('k2'), 1000, 'the invalidation of k2')
      assert.deepEqual(heardByGone, ['k'])
    })

    test('a listener that throws does not stop the others', async () => {
      const cache = await subject.make()
      const heard: string[] = []
      cache.onInvalidation(() => {
        throw new Error('listener bug')
      })
      cache.onInvalidation((key) => heard.push(key))
      await cache.publishInvalidation('k')
      await waitFor(() => heard.includes('k'), 1000, 'the invalidation')
    })

    test('consume admits exactly `limit` of many concurrent calls', async () => {
      const cache = await subject.make()
      const results = await Promise.all(Array.from({ length: 200 }, () => cache.consume('rl', 1, 50, 10_000)))
      const admitted = results.filter((r) => r.allowed)
      assert.equal(admitted.length, 50)
      assert.deepEqual(
        admitted.map((r) => r.used).sort((a, b) => a - b),
        Array.from({ length: 50 }, (_, i) => i + 1),
      )
      for (const r of admitted) assert.equal(r.remaining, 50 - r.used)
      for (const r of results) assert.ok(r.resetMs > 0 && r.resetMs <= 10_000, `resetMs ${r.resetMs}`)
      for (const r of results.filter((r) => !r.allowed)) {
        assert.deepEqual([r.used, r.remaining], [50, 0])
      }
      const after = await cache.peek('rl', 50)
      assert.deepEqual([after.allowed, after.used, after.remaining], [false, 50, 0])
    })

    test('consume counts costs and a refusal changes nothing', async () => {
      const cache = await subject.make()
      const tooBig = await cache.consume('c', 60, 50, 10_000)
      assert.deepEqual([tooBig.allowed, tooBig.used, tooBig.remaining], [false, 0, 50])
      assert.deepEqual(await cache.peek('c', 50), { allowed: true, used: 0, remaining: 50, resetMs: 0 })

      assert.equal((await cache.consume('c', 30, 50, 10_000)).allowed, true)
      const refused = await cache.consume('c', 30, 50, 10_000)
      assert.deepEqual([refused.allowed, refused.used, refused.remaining], [false, 30, 20])
      const exact = await cache.consume('c', 20, 50, 10_000)
      assert.deepEqual([exact.allowed, exact.used, exact.remaining], [true, 50, 0])
      assert.equal((await cache.consume('c', 0, 50, 10_000)).allowed, true)
    })

    test('the window is fixed from its first use, then resets', async () => {
      const cache = await subject.make()
      // Long enough that the second and third uses land in the first window on a loaded
      // machine (800 ms after a 200 ms sleep), where 400 ms left a margin of 250.
      const windowMs = 1_000
      const first = await cache.consume('w', 1, 2, windowMs)
      assert.ok(first.resetMs > windowMs - 100 && first.resetMs <= windowMs, `resetMs ${first.resetMs}`)
      await sleep(200)
      const second = await cache.consume('w', 1, 2, windowMs)
      assert.equal(second.allowed, true)
      // Not sliding: the second use did not push the reset back.
      assert.ok(second.resetMs > 0 && second.resetMs <= windowMs - 200, `resetMs ${second.resetMs}`)
      assert.equal((await cache.consume('w', 1, 2, windowMs)).allowed, false)
      await sleep(second.resetMs + 50)
      const fresh = await cache.consume('w', 1, 2, windowMs)
      assert.deepEqual([fresh.allowed, fresh.used, fresh.remaining], [true, 1, 1])
    })

    test('add never refuses; peek reads without changing', async () => {
      const cache = await subject.make()
      assert.deepEqual(await cache.peek('t', 20), { allowed: true, used: 0, remaining: 20, resetMs: 0 })
      const added = await cache.add('t', 10, 10_000)
      assert.deepEqual([added.allowed, added.used], [true, 10])
      assert.ok(added.resetMs > 0 && added.resetMs <= 10_000)
      await cache.add('t', 5, 10_000)
      const peeked = await cache.peek('t', 20)
      assert.deepEqual([peeked.allowed, peeked.used, peeked.remaining], [true, 15, 5])
      assert.ok(peeked.resetMs > 0 && peeked.resetMs <= 10_000)
      assert.equal((await cache.peek('t', 20)).used, 15)
      assert.equal((await cache.peek('t', 15)).allowed, false, 'no budget left at the limit')

      const over = await cache.add('t', 100, 10_000)
      assert.deepEqual([over.allowed, over.used], [true, 115])
      // add and consume count in the same window.
      const counted = await cache.consume('t', 1, 200, 10_000)
      assert.deepEqual([counted.allowed, counted.used], [true, 116])

      await cache.add('brief', 3, 50)
      await sleep(120)
      assert.equal((await cache.peek('brief', 10)).used, 0)
    })

    test('keys with odd characters stay distinct and intact', async () => {
      const cache = await subject.make()
      const heard: string[] = []
      cache.onInvalidation((key) => heard.push(key))
      await Promise.all(ODD_KEYS.map((key, i) => cache.set(key, `value ${i}`, 10_000)))
      for (const [i, key] of ODD_KEYS.entries()) assert.equal(await cache.get(key), `value ${i}`)
      await cache.publishInvalidation('a b')
      assert.equal(await cache.get('a b'), undefined)
      assert.equal(await cache.get('x:y:z'), 'value 2')
      for (const key of ODD_KEYS) await cache.publishInvalidation(key)
      await waitFor(() => heard.length === ODD_KEYS.length + 1, 1000, 'every invalidation')
      assert.deepEqual(heard.slice(1), ODD_KEYS)

      for (const [i, key] of ODD_KEYS.entries()) await cache.add(key, i + 1, 10_000)
      for (const [i, key] of ODD_KEYS.entries()) assert.equal((await cache.peek(key, 100)).used, i + 1)
    })

    test('entries and rate-limit windows with the same key do not collide', async () => {
      const cache = await subject.make()
      await cache.set('same', 'entry', 10_000)
      await cache.consume('same', 3, 10, 10_000)
      assert.equal(await cache.get('same'), 'entry')
      await cache.delete('same')
      assert.equal((await cache.peek('same', 10)).used, 3)
    })

    test('a closed cache rejects every call with CACHE_UNAVAILABLE, not retryable', async () => {
      const cache = await subject.make()
      await cache.close()
      await cache.close()
      const closed = (err: unknown) => isFabricError(err, ErrorCodes.CACHE_UNAVAILABLE) && !err.retryable
      await assert.rejects(cache.get('k'), closed)
      await assert.rejects(cache.set('k', 'v', 1000), closed)
      await assert.rejects(cache.consume('k', 1, 1, 1000), closed)
      await assert.rejects(cache.publishInvalidation('k'), closed)
    })

    const { makePair } = subject
    if (makePair !== undefined) {
      test('two caches on the same backend share entries, windows and invalidations', async () => {
        const [a, b] = await makePair()
        await a.set('k', 'shared', 10_000)
        assert.equal(await b.get('k'), 'shared')
        await a.consume('w', 7, 10, 10_000)
        assert.equal((await b.peek('w', 10)).used, 7)

        const heardByB: string[] = []
        b.onInvalidation((key) => heardByB.push(key))
        const t0 = performance.now()
        await a.publishInvalidation('k')
        await waitFor(() => heardByB.includes('k'), 1000, 'the invalidation at the other server')
        assert.ok(performance.now() - t0 < 1000)
        assert.equal(await b.get('k'), undefined)
      })
    }
  })
}

describe('memory', () => {
  const track = tracker()
  cacheContract('memory', { make: async () => track(new MemoryCache()) })

  test('evicts the least recently used entry when full', async () => {
    const cache = track(new MemoryCache({ maxEntries: 3 }))
    for (const key of ['a', 'b', 'c']) await cache.set(key, key, 10_000)
    await cache.get('a')
    await cache.set('d', 'd', 10_000)
    assert.equal(cache.size, 3)
    assert.equal(await cache.get('b'), undefined)
    assert.deepEqual(await Promise.all(['a', 'c', 'd'].map((k) => cache.get(k))), ['a', 'c', 'd'])
  })

  test('rate-limit windows are bounded too: the oldest goes', async () => {
    const cache = track(new MemoryCache({ maxWindows: 2 }))
    await cache.add('w1', 1, 10_000)
    await cache.add('w2', 1, 10_000)
    await cache.add('w3', 1, 10_000)
    const used = await Promise.all(['w1', 'w2', 'w3'].map((k) => cache.peek(k, 10)))
    assert.deepEqual(
      used.map((r: RateLimitResult) => r.used),
      [0, 1, 1],
    )
  })

  test('the sweep drops expired entries nobody reads', async () => {
    const cache = track(new MemoryCache({ sweepIntervalMs: 20 }))
    await cache.set('gone', 'v', 10)
    await cache.set('kept', 'v', 10_000)
    await waitFor(() => cache.size === 1, 1000, 'the sweep')
  })

  test('createCache without a Redis URL gives the in-process cache; a bad URL is a config error', async () => {
    const cache = track(await createCache({}))
    assert.equal(cache.kind, 'memory')
    const config = (err: unknown) => isFabricError(err, ErrorCodes.CONFIG)
    await assert.rejects(createCache({ redisUrl: 'http://127.0.0.1:6379' }), config)
    await assert.rejects(createCache({ redisUrl: 'not a url' }), config)
  })
})

const redisMissing = unavailable('redis')

describe('redis', { skip: redisMissing }, () => {
  let redis: ManagedService
  let namespaces = 0
  const track = tracker()
  const freshNamespace = () => `gpuf-test-${process.pid}-${++namespaces}:`
  const connect = async (namespace: string): Promise<RedisCache> => {
    const cache = track(new RedisCache({ url: redis.url, namespace }))
    await waitFor(() => cache.connected, 5000, 'the Redis cache to connect')
    return cache
  }
  const pair = async (): Promise<[RedisCache, RedisCache]> => {
    const namespace = freshNamespace()
    return [await connect(namespace), await connect(namespace)]
  }

  before(async () => {
    redis = await startRedis()
  })
  after(async () => {
    await redis?.close()
  })

  cacheContract('redis', { make: () => connect(freshNamespace()), makePair: pair })

  test('two servers sharing one limit admit exactly the limit between them', async () => {
    const [a, b] = await pair()
    const calls = Array.from({ length: 100 }, () => [
      a.consume('shared', 1, 60, 10_000),
      b.consume('shared', 1, 60, 10_000),
    ]).flat()
    const results = await Promise.all(calls)
    assert.equal(results.filter((r) => r.allowed).length, 60)
    assert.equal((await a.peek('shared', 60)).used, 60)
  })

  test('namespaces keep fabrics apart', async () => {
    const a = await connect(freshNamespace())
    const b = await connect(freshNamespace())
    const heardByB: string[] = []
    b.onInvalidation((key) => heardByB.push(key))
    await a.set('k', 'a', 10_000)
    assert.equal(await b.get('k'), undefined)
    await a.publishInvalidation('k')
    await b.publishInvalidation('mine')
    await waitFor(() => heardByB.includes('mine'), 1000, "b's own invalidation")
    assert.deepEqual(heardByB, ['mine'])
  })

  // Last: it takes Redis down.
  test('Redis down: calls fail fast and nothing crashes; Redis back: the same caches work again', async () => {
    const crashes: unknown[] = []
    const onCrash = (err: unknown) => crashes.push(err)
    process.on('unhandledRejection', onCrash)
    process.on('uncaughtException', onCrash)
    try {
      const namespace = freshNamespace()
      const [a, b] = [await connect(namespace), await connect(namespace)]
      const heardByA: string[] = []
      const heardByB: string[] = []
      a.onInvalidation((key) => heardByA.push(key))
      b.onInvalidation((key) => heardByB.push(key))
      await a.set('k', 'before', 60_000)

      // Work in flight when Redis dies settles at once, one way or the other.
      const inflight = Array.from({ length: 50 }, () =>
        a.consume('rl', 1, 1000, 60_000).then(
          () => 'done',
          (err: unknown) => (isUnavailable(err) ? 'unavailable' : err),
        ),
      )
      const stopped = performance.now()
      await redis.stop()
      for (const outcome of await Promise.all(inflight))
        assert.ok(outcome === 'done' || outcome === 'unavailable')
      assert.ok(performance.now() - stopped < 2000)

      // A server starting during the outage starts anyway: at once, not after the 1 s connect
      // timeout (500 ms leaves room for a loaded machine).
      const createdAt = performance.now()
      const late = track(await createCache({ redisUrl: redis.url, namespace }))
      assert.ok(performance.now() - createdAt < 500, `createCache took ${performance.now() - createdAt} ms`)

      const calls: Array<[string, (cache: Cache) => Promise<unknown>]> = [
        ['get', (c) => c.get('k')],
        ['set', (c) => c.set('k', 'v', 1000)],
        ['delete', (c) => c.delete('k')],
        ['publishInvalidation', (c) => c.publishInvalidation('k')],
        ['consume', (c) => c.consume('rl', 1, 10, 1000)],
        ['add', (c) => c.add('rl', 1, 1000)],
        ['peek', (c) => c.peek('rl', 10)],
      ]
      // Several rounds, so some land while the clients are between reconnection attempts.
      for (let round = 0; round < 4; round++) {
        for (const cache of [a, b, late]) {
          for (const [name, call] of calls) {
            const t0 = performance.now()
            await assert.rejects(call(cache), isUnavailable, `${name} must reject with CACHE_UNAVAILABLE`)
            const elapsed = performance.now() - t0
            // At once in practice, within the 500 ms command timeout by contract; the bound
            // adds room for a loaded machine and still fails a call that waits for Redis.
            assert.ok(elapsed < 2_000, `${name} took ${elapsed.toFixed(0)} ms`)
          }
        }
        await sleep(250)
      }
      assert.equal(a.connected, false)

      await redis.start()
      const lateRedis = late as RedisCache
      // Reconnection: a retry delay (≤ 1 s) and a connect (≤ 1 s connect timeout) per attempt.
      await waitFor(() => a.connected && b.connected && lateRedis.connected, 10_000, 'reconnection')

      // Redis came back empty (no persistence): scripts must be reloaded transparently.
      await a.set('k', 'after', 60_000)
      assert.equal(await b.get('k'), 'after')
      assert.equal(await late.get('k'), 'after')
      const counted = await Promise.all([a, b, late].map((c) => c.consume('again', 1, 2, 10_000)))
      assert.deepEqual(counted.map((r) => r.allowed).sort(), [false, true, true])

      await a.publishInvalidation('k')
      await waitFor(() => heardByB.includes('k'), 1000, 'invalidation a → b after the restart')
      await late.publishInvalidation('from-late')
      await waitFor(
        () => heardByA.includes('from-late') && heardByB.includes('from-late'),
        1000,
        'invalidation late → a, b',
      )
      assert.equal(await b.get('k'), undefined)
      assert.deepEqual(crashes, [])
    } finally {
      process.off('unhandledRejection', onCrash)
      process.off('uncaughtException', onCrash)
    }
  })
})
