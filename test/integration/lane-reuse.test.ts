import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { request } from 'undici'
import { createHttpEngine } from '../../src/worker/engines/http.js'
import { API_KEY, startFabric, type TestFabric, waitFor } from '../helpers/fabric.js'
import { type FakeEngine, startFakeEngine } from '../helpers/fake-engine.js'

/** Requests through a real server and worker travel on lanes that are reused, not reopened. */
let fabric: TestFabric
let engine: FakeEngine

before(async () => {
  fabric = await startFabric()
  engine = await startFakeEngine({ models: ['lane-model'], name: 'lanes', chunks: 20, chunkIntervalMs: 20 })
  await fabric.addWorker(
    createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${engine.port}` }),
    'lane-worker',
  )
})

after(async () => {
  await fabric.close()
  await engine.close()
})

const worker = () => fabric.server.registry.byClientId('lane-worker')!

async function chat(stream = false, signal?: AbortSignal): Promise<number> {
  const res = await request(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'lane-model', stream, messages: [{ role: 'user', content: 'hi' }] }),
    signal,
  })
  await res.body.text()
  return res.statusCode
}

test('one request after the other rides one lane', async () => {
  for (let i = 0; i < 30; i++) assert.equal(await chat(), 200)
  assert.equal(worker().idleLanes, 1)
  assert.equal(worker().inflight, 0)
})

test('requests at once get lanes of their own, kept for the next burst', async () => {
  const statuses = await Promise.all(Array.from({ length: 8 }, () => chat(true)))
  assert.deepEqual(new Set(statuses), new Set([200]))
  const lanes = worker().idleLanes
  assert.ok(lanes >= 2 && lanes <= 8, `${lanes} idle lanes after 8 concurrent streams`)
  await Promise.all(Array.from({ length: 8 }, () => chat(true)))
  assert.ok(worker().idleLanes <= 8, 'the second burst reused them')
})

test('a cancelled request takes its lane with it; the next request is served', async () => {
  const idle = worker().idleLanes
  const aborted = new Promise((resolve) => engine.events.once('aborted', resolve))
  const controller = new AbortController()
  const res = await request(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'lane-model', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    signal: controller.signal,
  })
  for await (const _ of res.body) break
  controller.abort()
  await aborted
  await waitFor(() => worker().inflight === 0, 2_000, 'the cancelled request to end')
  assert.equal(worker().idleLanes, idle - 1, 'the reset lane is not back in the pool')
  assert.equal(await chat(), 200)
})
