/**
 * Usage metering end to end on the embedded pipeline (in-process bus, SQLite): requests through
 * the official `openai` client are metered with the engine's token counts; a stream whose user
 * did not ask for usage reaches them byte for byte as the engine would have sent it without
 * the fabric; per-key daily totals equal the sum of the requests.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import OpenAI from 'openai'
import { KeyAuthenticator } from '../../src/auth/authenticator.js'
import { KeyManager } from '../../src/auth/manage.js'
import { silentLogger } from '../../src/observability/logger.js'
import { SqliteStore } from '../../src/store/index.js'
import { openTelemetry, type Telemetry } from '../../src/telemetry/index.js'
import { createHttpEngine } from '../../src/worker/engines/http.js'
import { API_KEY, startFabric, type TestFabric, waitFor } from '../helpers/fabric.js'
import { type FakeEngine, startFakeEngine } from '../helpers/fake-engine.js'

let dir: string
let store: SqliteStore
let telemetry: Telemetry
let fabric: TestFabric
let engine: FakeEngine
let keyA: { key: string; id: string }
let keyB: { key: string; id: string }

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'gpuf-metering-'))
  store = new SqliteStore({ path: join(dir, 'db.sqlite') })
  await store.migrate()
  telemetry = await openTelemetry({
    consume: 'on',
    store,
    logger: silentLogger(),
    batchSize: 100,
    batchTimeoutMs: 20,
  })
  const manager = new KeyManager(store)
  const a = await manager.create({ user: 'alice', name: 'a' })
  const b = await manager.create({ user: 'bob', name: 'b' })
  keyA = { key: a.key, id: a.record.id }
  keyB = { key: b.key, id: b.record.id }
  fabric = await startFabric({
    telemetry: telemetry.publisher,
    store,
    keyAuthenticator: new KeyAuthenticator({ staticKeys: [API_KEY], store, logger: silentLogger() }),
  })
  engine = await startFakeEngine({ models: ['m1'], name: 'e1', chunks: 4 })
  await fabric.addWorker(
    createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${engine.port}` }),
    'w1',
  )
})

after(async () => {
  await fabric?.close()
  await telemetry?.close()
  await engine?.close()
  await store?.close()
  rmSync(dir, { recursive: true, force: true })
})

const client = (key: string) => new OpenAI({ apiKey: key, baseURL: `${fabric.baseUrl}/v1`, maxRetries: 0 })

async function requestsOf(keyId: string, n: number) {
  await waitFor(() => telemetry.consumer!.stats().usage >= n, 10_000, `${n} usage events written`)
  return (await store.listRequests({ keyId, limit: 1000 })).reverse()
}

test('a stream whose user did not ask for usage is byte-identical to the engine without the fabric, and metered', async () => {
  const body = JSON.stringify({ model: 'm1', stream: true, messages: [{ role: 'user', content: 'hi' }] })
  const direct = await fetch(`http://127.0.0.1:${engine.port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  })
  const expected = await direct.text()
  const before = telemetry.consumer!.stats().usage
  const through = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${keyA.key}` },
    body,
  })
  assert.equal(through.status, 200)
  const received = await through.text()
  assert.equal(received, expected, 'the user sees exactly what the engine sends without the fabric')
  assert.doesNotMatch(received, /usage/)
  // The engine was asked for usage all the same, and the gateway metered it.
  assert.match(engine.requests.at(-1)!.body, /"include_usage":true/)
  const [row] = (await requestsOf(keyA.id, before + 1)).slice(-1)
  assert.equal(row!.promptTokens, 4)
  assert.equal(row!.completionTokens, 4)
  assert.equal(row!.totalTokens, 8)
  assert.equal(row!.status, 200)
  assert.equal(row!.workerId, 'w1')
})

test('openai client: streamed (with and without usage) and non-streamed requests are metered; daily totals add up', async () => {
  const before = telemetry.consumer!.stats().usage
  const ai = client(keyB.key)
  const plain = await ai.chat.completions.create({ model: 'm1', messages: [{ role: 'user', content: 'a' }] })
  assert.equal(plain.usage?.total_tokens, 3)

  const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = []
  for await (const chunk of await ai.chat.completions.create({
    model: 'm1',
    stream: true,
    messages: [{ role: 'user', content: 'b' }],
  }))
    chunks.push(chunk)
  assert.ok(chunks.length >= 5)
  assert.ok(
    chunks.every((c) => c.usage === undefined && c.choices.length === 1),
    'no usage chunk, no usage field',
  )

  const asked: OpenAI.Chat.Completions.ChatCompletionChunk[] = []
  for await (const chunk of await ai.chat.completions.create({
    model: 'm1',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'c' }],
  }))
    asked.push(chunk)
  assert.equal(asked.at(-1)!.usage?.total_tokens, 8, 'a user who asked gets the usage chunk')

  const text = await ai.completions.create({ model: 'm1', prompt: 'd', stream: true })
  for await (const _ of text) {
    // drain
  }

  const rows = await requestsOf(keyB.id, before + 4)
  assert.deepEqual(
    rows.map((r) => [r.path, r.totalTokens]),
    [
      ['/v1/chat/completions', 3],
      ['/v1/chat/completions', 8],
      ['/v1/chat/completions', 8],
      ['/v1/completions', 8],
    ],
  )
  const [daily] = await store.listUsage({ keyId: keyB.id })
  assert.equal(daily!.requests, rows.length)
  assert.equal(daily!.metered, rows.length)
  assert.equal(
    daily!.totalTokens,
    rows.reduce((sum, r) => sum + (r.totalTokens ?? 0), 0),
  )
  assert.equal(
    daily!.promptTokens,
    rows.reduce((sum, r) => sum + (r.promptTokens ?? 0), 0),
  )
  assert.equal(daily!.userId !== null, true)
  assert.ok(daily!.avgTtfbMs !== null && daily!.avgTtfbMs >= 0)
  assert.ok(daily!.bytesOut > 0 && daily!.bytesIn > 0)
})

test('an engine that reports no usage: the request is counted with no tokens, never guessed', async () => {
  const quiet = await startFakeEngine({ models: ['m2'], name: 'quiet', chunks: 3, reportsUsage: false })
  try {
    await fabric.addWorker(
      createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${quiet.port}` }),
      'w2',
    )
    const before = telemetry.consumer!.stats().usage
    const ai = client(keyA.key)
    await ai.chat.completions.create({ model: 'm2', messages: [{ role: 'user', content: 'a' }] })
    for await (const _ of await ai.chat.completions.create({
      model: 'm2',
      stream: true,
      messages: [{ role: 'user', content: 'b' }],
    })) {
      // drain
    }
    const rows = (await requestsOf(keyA.id, before + 2)).filter((r) => r.model === 'm2')
    assert.equal(rows.length, 2)
    for (const row of rows) {
      assert.equal(row.totalTokens, null)
      assert.equal(row.promptTokens, null)
      assert.equal(row.status, 200)
    }
    const [usage] = await store.listUsage({ keyId: keyA.id, model: 'm2' })
    assert.equal(usage!.requests, 2)
    assert.equal(usage!.metered, 0)
    assert.equal(usage!.totalTokens, 0)
  } finally {
    await quiet.close()
  }
})
