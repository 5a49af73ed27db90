import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { API_KEY, startFabric, type TestFabric } from '../helpers/fabric.js'

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
