import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import OpenAI from 'openai'
import { createHttpEngine } from '../../src/worker/engines/http.js'
import { API_KEY, startFabric, type TestFabric } from '../helpers/fabric.js'
import { type FakeEngine, startFakeEngine } from '../helpers/fake-engine.js'

let fabric: TestFabric
let alpha: FakeEngine
let beta: FakeEngine
let client: OpenAI

before(async () => {
  fabric = await startFabric()
  alpha = await startFakeEngine({ models: ['alpha-model'], name: 'alpha', chunks: 4 })
  beta = await startFakeEngine({ models: ['beta-model'], name: 'beta', chunks: 4 })
  await fabric.addWorker(
    createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${alpha.port}` }),
    'worker-alpha',
  )
  await fabric.addWorker(
    createHttpEngine({ type: 'vllm', baseUrl: `http://127.0.0.1:${beta.port}` }),
    'worker-beta',
  )
  client = new OpenAI({ apiKey: API_KEY, baseURL: `${fabric.baseUrl}/v1`, maxRetries: 0 })
})
after(async () => {
  await fabric.close()
  await Promise.all([alpha.close(), beta.close()])
})

test('models.list returns the union of every worker', async () => {
  const ids: string[] = []
  for await (const model of client.models.list()) ids.push(model.id)
  assert.deepEqual(ids.sort(), ['alpha-model', 'beta-model'])
})

test('chat completion lands on the worker that has the model', async () => {
  for (const [model, name] of [
    ['alpha-model', 'alpha'],
    ['beta-model', 'beta'],
  ] as const) {
    const completion = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'hi' }],
    })
    assert.equal(completion.choices[0]?.message.content, `from ${name}`)
    assert.equal(completion.usage?.total_tokens, 3)
  }
  assert.ok(alpha.requests.every((r) => r.body === '' || r.body.includes('alpha-model')))
  assert.ok(beta.requests.every((r) => r.body === '' || r.body.includes('beta-model')))
})

test('streaming chat yields every chunk in order', async () => {
  const stream = await client.chat.completions.create({
    model: 'beta-model',
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
  })
  const parts: string[] = []
  let finish: string | null | undefined
  for await (const chunk of stream) {
    const choice = chunk.choices[0]
    if (choice?.delta.content) parts.push(choice.delta.content)
    if (choice?.finish_reason) finish = choice.finish_reason
  }
  assert.deepEqual(parts, ['from beta 0;', 'from beta 1;', 'from beta 2;', 'from beta 3;'])
  assert.equal(finish, 'stop')
})

test('completions, plain and streaming', async () => {
  const plain = await client.completions.create({ model: 'alpha-model', prompt: 'say' })
  assert.equal(plain.choices[0]?.text, 'from alpha')
  const stream = await client.completions.create({ model: 'alpha-model', prompt: 'say', stream: true })
  let text = ''
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? ''
  assert.equal(text, 'from alpha 0;from alpha 1;from alpha 2;from alpha 3;')
})

test('embeddings', async () => {
  const res = await client.embeddings.create({
    model: 'beta-model',
    input: ['a', 'b'],
    encoding_format: 'float',
  })
  assert.equal(res.data.length, 2)
  assert.deepEqual(res.data[1]?.embedding, [0.1, 0.2, 0.3])
})

test('the client sees OpenAI-shaped errors', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (err: unknown) => err instanceof OpenAI.NotFoundError && /no-such-model/.test(err.message),
  )
  const wrongKey = new OpenAI({ apiKey: 'wrong', baseURL: `${fabric.baseUrl}/v1`, maxRetries: 0 })
  await assert.rejects(
    wrongKey.chat.completions.create({ model: 'alpha-model', messages: [{ role: 'user', content: 'x' }] }),
    (err: unknown) => err instanceof OpenAI.AuthenticationError && err.code === 'invalid_api_key',
  )
})
