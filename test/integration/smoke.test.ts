import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { createHttpEngine } from '../../src/worker/engines/http.js'
import { API_KEY, startFabric, type TestFabric, waitFor } from '../helpers/fabric.js'
import { startFakeEngine } from '../helpers/fake-engine.js'

let fabric: TestFabric
before(async () => {
  fabric = await startFabric()
  await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'w1')
})
after(() => fabric.close())

test('GET / with a valid key reports status', async () => {
  const res = await fetch(`${fabric.baseUrl}/`, { headers: { authorization: `Bearer ${API_KEY}` } })
  assert.equal(res.status, 200)
  const body = (await res.json()) as { status: string; workers: number; models: string[] }
  assert.equal(body.status, 'ok')
  assert.equal(body.workers, 1)
  assert.deepEqual(body.models, ['echo'])
})

test('chat completion through the fabric', async () => {
  const res = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'hello there' }] }),
  })
  assert.equal(res.status, 200)
  const body = (await res.json()) as { choices: { message: { content: string } }[] }
  assert.equal(body.choices[0]?.message.content, 'echo: hello there')
})

test('a worker reports its engine gaining and losing models', async () => {
  const models = ['first']
  const engine = await startFakeEngine({ models, name: 'changing' })
  try {
    await fabric.addWorker(
      createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${engine.port}` }),
      'changing',
      {
        modelRefreshMs: 100,
      },
    )
    assert.ok(fabric.server.registry.hasModel('first'))
    models.push('second')
    await waitFor(() => fabric.server.registry.hasModel('second'), 3_000, 'new model announced')
    models.splice(0, 1)
    await waitFor(() => !fabric.server.registry.hasModel('first'), 3_000, 'removed model withdrawn')
  } finally {
    await engine.close()
  }
})

test('a worker whose engine goes down withdraws its models, and announces them again when it is back', async () => {
  const engine = await startFakeEngine({ models: ['flaky-model'], name: 'flaky' })
  const port = engine.port
  await fabric.addWorker(
    createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${port}` }),
    'flaky-worker',
    {
      modelRefreshMs: 100,
    },
  )
  assert.ok(fabric.server.registry.hasModel('flaky-model'))
  await engine.close()
  await waitFor(() => !fabric.server.registry.hasModel('flaky-model'), 3_000, 'models withdrawn')
  const res = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'flaky-model', messages: [] }),
  })
  assert.equal(res.status, 404, 'answered at once, not after retries on a dead engine')
  await res.arrayBuffer()
  const back = await startFakeEngine({ models: ['flaky-model'], name: 'flaky', port })
  try {
    await waitFor(() => fabric.server.registry.hasModel('flaky-model'), 3_000, 'models announced again')
  } finally {
    await back.close()
  }
})
