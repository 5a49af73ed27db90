import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { admin, modelsWith, STATIC_KEY, startWiredServer, type WiredServer } from '../helpers/servers.js'
import { type ManagedService, startPostgres, startRedis, unavailable } from '../helpers/services.js'

const skip = unavailable('postgres') ?? unavailable('redis')

/** Two servers (points of presence) sharing one PostgreSQL and one Redis. */
describe('two servers sharing PostgreSQL and Redis', { skip }, () => {
  let pg: ManagedService
  let redis: ManagedService
  let a: WiredServer
  let b: WiredServer
  before(async () => {
    ;[pg, redis] = await Promise.all([startPostgres(), startRedis()])
    const shared = { databaseUrl: pg.url, redisUrl: redis.url }
    a = await startWiredServer(shared)
    b = await startWiredServer(shared)
  })
  after(async () => {
    await Promise.allSettled([a?.close(), b?.close()])
    await Promise.allSettled([pg?.close(), redis?.close()])
  })

  test('a key revoked on one server is refused on both within 2 s', async () => {
    const created = await admin(a, 'POST', '/api/v1/keys', { name: 'roaming' })
    const key = created.body['key'] as string
    assert.equal((await modelsWith(a, key)).status, 200)
    assert.equal((await modelsWith(b, key)).status, 200, 'the key created on A works on B')
    const t0 = Date.now()
    assert.equal((await admin(a, 'DELETE', `/api/v1/keys/${created.body['id']}`)).status, 200)
    for (const server of [a, b]) {
      while ((await modelsWith(server, key)).status !== 401) {
        // Pub/sub at once, else the 500 ms revocation poll; 2 s leaves room for a loaded
        // machine, and the 5-minute key cache it must beat is 150 times that.
        assert.ok(Date.now() - t0 < 2_000, 'revocation took more than 2 s')
        await sleep(20)
      }
    }
  })

  test('the RPM limit of one key is enforced across both servers together', async () => {
    const limit = 40
    const created = await admin(a, 'POST', '/api/v1/keys', { rpmLimit: limit })
    const key = created.body['key'] as string
    const call = async (server: WiredServer) => {
      const res = await fetch(`${server.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'nobody-serves-this', messages: [] }),
      })
      await res.arrayBuffer()
      return res
    }
    const results = await Promise.all(Array.from({ length: 3 * limit }, (_, i) => call(i % 2 === 0 ? a : b)))
    const refused = results.filter((r) => r.status === 429)
    const admitted = results.length - refused.length
    assert.ok(Math.abs(admitted - limit) <= limit * 0.05, `admitted ${admitted} of limit ${limit}`)
    assert.equal(refused[0]!.headers.get('x-ratelimit-limit-requests'), String(limit))
    assert.ok(refused[0]!.headers.get('retry-after'))
  })

  test('Redis down: keys are checked against the database; Redis back: the cache is used again', async () => {
    const created = await admin(a, 'POST', '/api/v1/keys', { name: 'through-outage' })
    const key = created.body['key'] as string
    assert.equal((await modelsWith(a, key)).status, 200)
    await redis.stop()
    const during: number[] = []
    for (let i = 0; i < 20; i++) during.push((await modelsWith(b, key)).status)
    // A fresh key was never cached anywhere: only the database can answer for it now.
    const fresh = await admin(a, 'POST', '/api/v1/keys', { name: 'born-in-outage' })
    during.push((await modelsWith(b, fresh.body['key'] as string)).status)
    assert.ok(
      during.every((s) => s === 200),
      `statuses during the Redis outage: ${during}`,
    )
    await redis.start()
    const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 })
    await client.connect()
    try {
      const t0 = Date.now()
      let cached: string | null = null
      while (cached === null && Date.now() - t0 < 10_000) {
        const newer = await admin(a, 'POST', '/api/v1/keys', { name: 'after-outage' })
        assert.equal((await modelsWith(b, newer.body['key'] as string)).status, 200)
        cached = await client.get(`gpuf:c:key:${newer.body['prefix'] as string}`)
        if (cached === null) await sleep(100)
      }
      assert.ok(cached !== null, 'lookups fill the Redis cache again after it comes back')
      assert.ok(!cached.includes('gpuf_'), 'the cache holds the record (hash), never the key')
    } finally {
      client.disconnect()
    }
  })

  test('PostgreSQL down: cached keys and the static key keep working; back up: normal again', async () => {
    const created = await admin(a, 'POST', '/api/v1/keys', { name: 'cached-before-outage' })
    const key = created.body['key'] as string
    assert.equal((await modelsWith(a, key)).status, 200)
    await pg.stop()
    try {
      assert.equal((await modelsWith(a, key)).status, 200, 'a cached key keeps working')
      assert.equal((await modelsWith(b, key)).status, 200, 'the other server finds it in Redis')
      assert.equal((await modelsWith(a, STATIC_KEY)).status, 200, 'the static key keeps working')
      const unknown = await modelsWith(a, 'gpuf_abcdefabcdef_notarealkeynotarealkeynotareal1')
      assert.equal(unknown.status, 503, 'an unknown key cannot be checked: 503, not a false 401')
    } finally {
      await pg.start()
    }
    const t0 = Date.now()
    let created2: { status: number; body: Record<string, unknown> } | undefined
    while (Date.now() - t0 < 10_000) {
      created2 = await admin(a, 'POST', '/api/v1/keys', { name: 'after-pg' }).catch(() => undefined)
      if (created2?.status === 201) break
      await sleep(200)
    }
    assert.equal(created2?.status, 201, 'the database is used again without a restart')
    assert.equal((await modelsWith(b, created2!.body['key'] as string)).status, 200)
  })

  test('a server started while PostgreSQL is down serves the static key, then catches up', async () => {
    await pg.stop()
    let c: WiredServer | undefined
    try {
      c = await startWiredServer({ databaseUrl: pg.url, redisUrl: redis.url })
      assert.equal((await modelsWith(c, STATIC_KEY)).status, 200)
      assert.equal((await admin(c, 'POST', '/api/v1/keys', { name: 'too-early' })).status, 503)
      await pg.start()
      const t0 = Date.now()
      let created: { status: number; body: Record<string, unknown> } | undefined
      while (Date.now() - t0 < 15_000) {
        created = await admin(c, 'POST', '/api/v1/keys', { name: 'caught-up' })
        if (created.status === 201) break
        await sleep(200)
      }
      assert.equal(created?.status, 201)
      assert.equal((await modelsWith(c, created!.body['key'] as string)).status, 200)
    } finally {
      await pg.start().catch(() => undefined)
      await c?.close()
    }
  })
})
