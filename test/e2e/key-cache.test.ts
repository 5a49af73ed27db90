import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { Agent, request } from 'undici'
import { KeyAuthenticator } from '../../src/auth/authenticator.js'
import { KeyManager } from '../../src/auth/manage.js'
import { createCache } from '../../src/cache/index.js'
import { silentLogger } from '../../src/observability/logger.js'
import { createStore } from '../../src/store/index.js'
import { startFabric } from '../helpers/fabric.js'

/** Database queries for `requests` authenticated requests spread over `keyCount` keys. */
async function queriesFor(options: { cacheMs: number; requests: number; keyCount: number }): Promise<number> {
  let queries = 0
  const store = await createStore({
    sqlitePath: join(mkdtempSync(join(tmpdir(), 'gpuf-qc-')), 'db.sqlite'),
    onQuery: () => queries++,
  })
  await store.migrate()
  const cache = await createCache({})
  const manager = new KeyManager(store)
  const keys = await Promise.all(
    Array.from({ length: options.keyCount }, (_, i) => manager.create({ name: `k${i}` })),
  )
  const authenticator = new KeyAuthenticator({
    staticKeys: [],
    store,
    cache,
    logger: silentLogger(),
    localTtlMs: options.cacheMs,
  })
  const fabric = await startFabric({ keyAuthenticator: authenticator })
  const dispatcher = new Agent({ connections: 16 })
  try {
    queries = 0
    let next = 0
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < options.requests) {
          const i = next++
          const res = await request(`${fabric.baseUrl}/v1/models`, {
            headers: { authorization: `Bearer ${keys[i % keys.length]!.key}` },
            dispatcher,
          })
          await res.body.dump()
          assert.equal(res.statusCode, 200)
        }
      }),
    )
    return queries
  } finally {
    await dispatcher.close()
    await fabric.close()
    await cache.close()
    await store.close()
  }
}

test('the key cache saves at least 90% of database queries (10,000 requests, 20 keys)', async () => {
  const cached = await queriesFor({ cacheMs: 300_000, requests: 10_000, keyCount: 20 })
  const uncached = await queriesFor({ cacheMs: 0, requests: 10_000, keyCount: 20 })
  assert.ok(uncached >= 5_000, `without the cache every request should query (${uncached})`)
  assert.ok(cached <= uncached * 0.1, `with cache ${cached} queries, without ${uncached}`)
  console.log(
    `# key lookups: ${cached} queries with the cache, ${uncached} without (${((1 - cached / uncached) * 100).toFixed(1)}% saved)`,
  )
})
