import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { after, before, test } from 'node:test'
import { FabricServer } from '../../src/server/index.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { createHttpEngine } from '../../src/worker/engines/http.js'
import {
  API_KEY,
  startFabric,
  type TestFabric,
  testCertificate,
  WORKER_TOKEN,
  waitFor,
} from '../helpers/fabric.js'
import { startFakeEngine } from '../helpers/fake-engine.js'
import { freePorts } from '../helpers/processes.js'

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

test('a server whose port is taken fails to start and releases the ports it had bound', async () => {
  const [controlPort, apiPort] = (await freePorts(2)) as [number, number]
  const squatter = createServer().listen(apiPort, '127.0.0.1')
  await once(squatter, 'listening')
  const cert = await testCertificate()
  const server = new FabricServer({
    host: '127.0.0.1',
    controlPort,
    proxyPort: 0,
    publicPort: 0,
    apiPort,
    cert: cert.cert,
    key: cert.key,
    apiKeys: [API_KEY],
    workerToken: WORKER_TOKEN,
  })
  try {
    await assert.rejects(server.start(), /EADDRINUSE/)
    // The control port it had bound before failing is free again.
    const probe = createServer().listen(controlPort, '127.0.0.1')
    await once(probe, 'listening')
    probe.close()
  } finally {
    squatter.close()
  }
})
