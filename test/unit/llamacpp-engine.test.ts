import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { ErrorCodes, isFabricError } from '../../src/errors/index.js'
import { createLlamaCppEngine } from '../../src/worker/engines/llamacpp.js'
import type { Engine, EngineReply } from '../../src/worker/engines/types.js'
import { writeTinyLlamaGguf } from '../fixtures/tiny-gguf.js'

// The engine's dependency is optional: without it there is nothing to test here.
const skip = await import('node-llama-cpp').then(
  () => false,
  (err: Error) => `node-llama-cpp is not installed (${err.message})`,
)

let dir: string
let engine: Engine

before(async () => {
  if (skip) return
  dir = await mkdtemp(join(tmpdir(), 'gpuf-llamacpp-'))
  const modelPath = join(dir, 'tiny.gguf')
  await writeTinyLlamaGguf(modelPath)
  engine = await createLlamaCppEngine({ modelPath, contextSize: 1024, maxParallel: 2 })
})

after(async () => {
  if (skip) return
  await engine?.close()
  await rm(dir, { recursive: true, force: true })
})

function call(method: string, path: string, body?: unknown, signal = new AbortController().signal) {
  const raw = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body)
  return engine.call({ method, path, body: Buffer.from(raw), signal })
}

// biome-ignore lint/suspicious/noExplicitAny: the tests walk arbitrary response JSON
async function json(reply: EngineReply): Promise<any> {
  assert.equal(reply.headers['content-type'], 'application/json')
  assert.ok(reply.body instanceof Uint8Array)
  return JSON.parse(Buffer.from(reply.body).toString('utf8'))
}

/** Reads an SSE body chunk by chunk; returns the `data:` payloads in order and the number of chunks. */
async function sse(reply: EngineReply): Promise<{ events: string[]; chunks: number }> {
  assert.match(reply.headers['content-type'] ?? '', /^text\/event-stream/)
  assert.ok(!(reply.body instanceof Uint8Array))
  let text = ''
  let chunks = 0
  for await (const chunk of reply.body) {
    chunks++
    text += Buffer.from(chunk).toString('utf8')
  }
  const events = text
    .split('\n\n')
    .filter((e) => e !== '')
    .map((e) => e.replace(/^data: /, ''))
  return { events, chunks }
}

test('lists its one model, named after the file', { skip }, async () => {
  assert.deepEqual(await engine.listModels(), ['tiny'])
  const body = await json(await call('GET', '/v1/models'))
  assert.equal(body.object, 'list')
  assert.equal(body.data[0].id, 'tiny')
  assert.equal(engine.type, 'llamacpp')
  assert.ok(engine.apis.has('openai'))
})

test('chat completion returns content and usage', { skip }, async () => {
  const reply = await call('POST', '/v1/chat/completions', {
    model: 'anything',
    messages: [
      { role: 'system', content: 'You are tiny.' },
      { role: 'user', content: 'Hello there' },
    ],
    max_tokens: 16,
    seed: 7,
  })
  assert.equal(reply.status, 200)
  const body = await json(reply)
  assert.equal(body.object, 'chat.completion')
  assert.equal(body.model, 'tiny')
  assert.equal(body.choices[0].message.role, 'assistant')
  assert.ok(body.choices[0].message.content.length > 0)
  // The fixture never samples end-of-generation, so the limit is what stops it.
  assert.equal(body.choices[0].finish_reason, 'length')
  assert.ok(body.usage.prompt_tokens > 10)
  assert.equal(body.usage.completion_tokens, 16)
  assert.equal(body.usage.total_tokens, body.usage.prompt_tokens + 16)
})

test('streaming chat sends a role chunk, content chunks, a finish chunk, then [DONE]', { skip }, async () => {
  const reply = await call('POST', '/v1/chat/completions', {
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Stream please' }] }],
    max_tokens: 20,
    stream: true,
    stream_options: { include_usage: true },
  })
  assert.equal(reply.status, 200)
  const { events, chunks } = await sse(reply)
  assert.ok(chunks >= 20, `expected one chunk per piece, got ${chunks}`)
  assert.equal(events.at(-1), '[DONE]')
  const parsed = events.slice(0, -1).map((e) => JSON.parse(e))
  for (const p of parsed) assert.equal(p.object, 'chat.completion.chunk')
  assert.equal(parsed[0].choices[0].delta.role, 'assistant')
  const content = parsed.map((p) => p.choices[0]?.delta.content ?? '').join('')
  assert.ok(content.length > 0)
  assert.equal(parsed.at(-2).choices[0].finish_reason, 'length')
  assert.equal(parsed.at(-1).usage.completion_tokens, 20)
})

test('text completions, plain and streamed', { skip }, async () => {
  const body = await json(
    await call('POST', '/v1/completions', { prompt: 'Once upon a time', max_tokens: 8 }),
  )
  assert.equal(body.object, 'text_completion')
  assert.ok(body.choices[0].text.length > 0)
  assert.equal(body.usage.completion_tokens, 8)

  const { events } = await sse(
    await call('POST', '/v1/completions', { prompt: 'Once', max_tokens: 8, stream: true, stop: ['\u0000'] }),
  )
  assert.equal(events.at(-1), '[DONE]')
  const parsed = events.slice(0, -1).map((e) => JSON.parse(e))
  assert.ok(parsed.length >= 2)
  assert.ok(parsed.every((p) => p.object === 'text_completion'))
  assert.equal(parsed.at(-1).choices[0].finish_reason, 'length')
})

test('embeddings for a string and an array', { skip }, async () => {
  const one = await json(await call('POST', '/v1/embeddings', { input: 'hello' }))
  assert.equal(one.object, 'list')
  assert.equal(one.data[0].object, 'embedding')
  assert.equal(one.data[0].embedding.length, 64)
  const two = await json(await call('POST', '/v1/embeddings', { input: ['a', 'b c'] }))
  assert.deepEqual(
    two.data.map((d: { index: number }) => d.index),
    [0, 1],
  )
  assert.ok(two.usage.prompt_tokens > 0)
})

test('OpenAI-style errors for unknown routes and bad bodies', { skip }, async () => {
  const notFound = await call('POST', '/v1/nope', {})
  assert.equal(notFound.status, 404)
  assert.equal(typeof (await json(notFound)).error.message, 'string')

  const badJson = await call('POST', '/v1/chat/completions', '{not json')
  assert.equal(badJson.status, 400)
  assert.equal((await json(badJson)).error.code, 'invalid_json')

  const invalid = await call('POST', '/v1/chat/completions', { messages: [] })
  assert.equal(invalid.status, 400)
  assert.equal((await json(invalid)).error.type, 'invalid_request_error')
})

test('aborting stops a long generation promptly', { skip }, async () => {
  const abort = new AbortController()
  // No max_tokens: the whole context (about a thousand tokens) would be generated.
  const reply = await call(
    'POST',
    '/v1/chat/completions',
    { messages: [{ role: 'user', content: 'Go on forever' }], stream: true },
    abort.signal,
  )
  assert.ok(!(reply.body instanceof Uint8Array))
  let chunks = 0
  let abortedAt = 0
  for await (const _ of reply.body) {
    if (++chunks === 5) {
      abortedAt = performance.now()
      abort.abort()
    }
  }
  const stoppedAfter = performance.now() - abortedAt
  // Measured: under 10 ms, also on a loaded machine; `chunks` below catches an abort that is ignored.
  assert.ok(stoppedAfter < 1_000, `stream ended ${stoppedAfter} ms after abort`)
  assert.ok(chunks < 100, `generated ${chunks} chunks despite the abort`)

  // A reader that stops reading also stops the generation and frees its sequence for others.
  const dropped = await call('POST', '/v1/completions', { prompt: 'x', stream: true })
  assert.ok(!(dropped.body instanceof Uint8Array))
  for await (const _ of dropped.body) break
  const [a, b] = await Promise.all([
    call('POST', '/v1/completions', { prompt: 'a', max_tokens: 2 }).then(json),
    call('POST', '/v1/completions', { prompt: 'b', max_tokens: 2 }).then(json),
  ])
  assert.equal(a.usage.completion_tokens + b.usage.completion_tokens, 4)

  // A non-streaming request rejects with ABORTED.
  const early = new AbortController()
  const pending = call('POST', '/v1/completions', { prompt: 'x' }, early.signal)
  setTimeout(() => early.abort(), 20)
  const started = performance.now()
  await assert.rejects(pending, (err) => isFabricError(err, ErrorCodes.ABORTED))
  // Measured: rejected 20 to 30 ms in, just after the abort; an ignored abort lets the call resolve.
  assert.ok(performance.now() - started < 1_000, `rejected after ${performance.now() - started} ms`)
})

test('requests beyond the parallel sequences queue instead of failing', { skip }, async () => {
  const replies = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      call('POST', '/v1/completions', { prompt: `prompt ${i}`, max_tokens: 10 }).then(json),
    ),
  )
  for (const body of replies) assert.equal(body.usage.completion_tokens, 10)
})

test('close releases the model; later calls fail', { skip }, async () => {
  await engine.close()
  await engine.close()
  await assert.rejects(call('GET', '/v1/models'), (err) => isFabricError(err, ErrorCodes.ENGINE_UNAVAILABLE))
})
