import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { Ollama } from 'ollama'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { createHttpEngine } from '../../src/worker/engines/http.js'
import { API_KEY, startFabric, type TestFabric } from '../helpers/fabric.js'
import { type FakeEngine, startFakeEngine } from '../helpers/fake-engine.js'

let fabric: TestFabric
let openaiEngine: FakeEngine
let ollamaEngine: FakeEngine
let ollama: Ollama

before(async () => {
  fabric = await startFabric()
  openaiEngine = await startFakeEngine({ models: ['vllm-model'], name: 'vllm', chunks: 3 })
  ollamaEngine = await startFakeEngine({ models: ['llama3:latest'], name: 'ollama', chunks: 3, ollama: true })
  await fabric.addWorker(
    createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${openaiEngine.port}` }),
    'w-openai',
  )
  await fabric.addWorker(
    createHttpEngine({ type: 'ollama', baseUrl: `http://127.0.0.1:${ollamaEngine.port}` }),
    'w-ollama',
  )
  await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'w-echo')
  ollama = new Ollama({ host: fabric.baseUrl, headers: { Authorization: `Bearer ${API_KEY}` } })
})
after(async () => {
  await fabric.close()
  await Promise.all([openaiEngine.close(), ollamaEngine.close()])
})

test('list shows every model', async () => {
  const { models } = await ollama.list()
  assert.deepEqual(models.map((m) => m.name).sort(), ['echo', 'llama3:latest', 'vllm-model'])
})

test('streaming chat through an OpenAI-only engine is translated to NDJSON', async () => {
  const stream = await ollama.chat({
    model: 'vllm-model',
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
  })
  const parts: string[] = []
  let done = false
  for await (const part of stream) {
    if (part.message.content) parts.push(part.message.content)
    if (part.done) done = true
  }
  assert.deepEqual(parts, ['from vllm 0;', 'from vllm 1;', 'from vllm 2;'])
  assert.ok(done)
  const upstream = openaiEngine.requests.at(-1)!
  assert.equal(upstream.path, '/v1/chat/completions')
})

test('streaming chat on an Ollama engine is passed through natively', async () => {
  const stream = await ollama.chat({
    model: 'llama3',
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
  })
  let text = ''
  for await (const part of stream) text += part.message.content
  assert.equal(text, 'from ollama 0;from ollama 1;from ollama 2;')
  assert.equal(ollamaEngine.requests.at(-1)!.path, '/api/chat')
})

test('generate, plain and streaming', async () => {
  const plain = await ollama.generate({ model: 'vllm-model', prompt: 'say', stream: false })
  assert.equal(plain.response, 'from vllm')
  assert.equal(plain.done, true)
  const stream = await ollama.generate({ model: 'echo', prompt: 'one two', stream: true })
  let text = ''
  for await (const part of stream) text += part.response
  assert.equal(text, 'echo: one two')
})

test('chat, not streaming, and embed', async () => {
  const res = await ollama.chat({
    model: 'echo',
    messages: [{ role: 'user', content: 'ping' }],
    stream: false,
  })
  assert.equal(res.message.content, 'echo: ping')
  const emb = await ollama.embed({ model: 'vllm-model', input: ['a', 'b'] })
  assert.equal(emb.embeddings.length, 2)
})

test('errors reach the client with their message', async () => {
  await assert.rejects(
    ollama.chat({ model: 'missing', messages: [{ role: 'user', content: 'x' }] }),
    /missing/,
  )
})
