import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import OpenAI from 'openai'
import type { Engine } from '../../src/worker/engines/types.js'
import { writeTinyLlamaGguf } from '../fixtures/tiny-gguf.js'
import { API_KEY, startFabric, type TestFabric } from '../helpers/fabric.js'

const available = await import('node-llama-cpp').then(
  () => true,
  () => false,
)

let fabric: TestFabric
let engine: Engine
let dir: string

before(async () => {
  if (!available) return
  dir = await mkdtemp(join(tmpdir(), 'gpuf-llama-'))
  const modelPath = join(dir, 'tiny-llama.gguf')
  await writeTinyLlamaGguf(modelPath)
  const { createLlamaCppEngine } = await import('../../src/worker/engines/llamacpp.js')
  engine = await createLlamaCppEngine({ modelPath })
  fabric = await startFabric()
  await fabric.addWorker(engine, 'llama-worker')
})
after(async () => {
  if (!available) return
  await fabric.close()
  await engine.close()
  await rm(dir, { recursive: true, force: true })
})

test('a real llama.cpp engine streams a chat completion to the openai client', {
  skip: !available && 'node-llama-cpp is not installed',
}, async () => {
  const client = new OpenAI({ apiKey: API_KEY, baseURL: `${fabric.baseUrl}/v1`, maxRetries: 0 })
  const models = await client.models.list()
  assert.deepEqual(
    models.data.map((m) => m.id),
    ['tiny-llama'],
  )
  const stream = await client.chat.completions.create({
    model: 'tiny-llama',
    messages: [{ role: 'user', content: 'Hello' }],
    max_tokens: 24,
    stream: true,
  })
  let role: string | undefined
  let contentChunks = 0
  let text = ''
  let finish: string | null | undefined
  for await (const chunk of stream) {
    const choice = chunk.choices[0]
    if (choice?.delta.role) role = choice.delta.role
    if (choice?.delta.content) {
      contentChunks++
      text += choice.delta.content
    }
    if (choice?.finish_reason) finish = choice.finish_reason
  }
  // A random-weight model writes noise: assert the stream's structure, not its words.
  assert.equal(role, 'assistant')
  assert.ok(contentChunks >= 2, `expected several content chunks, got ${contentChunks}`)
  assert.ok(text.length > 0)
  assert.ok(finish === 'length' || finish === 'stop', `finish_reason ${finish}`)
})
