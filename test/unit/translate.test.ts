import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { callOllamaOverOpenAI } from '../../src/worker/translate/ollama.js'
import { readAll, sseEvents } from '../../src/worker/translate/sse.js'

async function* chunks(...parts: string[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield Buffer.from(p)
}

test('SSE events are parsed across chunk boundaries and stop at [DONE]', async () => {
  const events: unknown[] = []
  for await (const e of sseEvents(
    chunks('data: {"a"', ':1}\n\ndata: {"a":2}\r\n\r\n: comment\n\ndata: [DONE]\n\ndata: {"a":3}\n\n'),
  )) {
    events.push(e)
  }
  assert.deepEqual(events, [{ a: 1 }, { a: 2 }])
})

test('Ollama chat over an OpenAI engine: streamed NDJSON, one line per chunk, then done', async () => {
  const engine = createEchoEngine({ models: ['e'] })
  const reply = await callOllamaOverOpenAI(engine, {
    method: 'POST',
    path: '/api/chat',
    body: Buffer.from(JSON.stringify({ model: 'e', messages: [{ role: 'user', content: 'a b' }] })),
    signal: new AbortController().signal,
  })
  assert.equal(reply.headers['content-type'], 'application/x-ndjson')
  const lines = (await readAll(reply.body))
    .toString()
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
  assert.deepEqual(
    lines.filter((l) => !l.done).map((l) => l.message.content),
    ['echo: ', 'a ', 'b'],
  )
  assert.equal(lines.at(-1).done, true)
  assert.equal(lines.at(-1).done_reason, 'stop')
})

test('Ollama generate (not streamed) and embeddings over an OpenAI engine', async () => {
  const engine = createEchoEngine({ models: ['e'] })
  const signal = new AbortController().signal
  const gen = await callOllamaOverOpenAI(engine, {
    method: 'POST',
    path: '/api/generate',
    body: Buffer.from(JSON.stringify({ model: 'e', prompt: 'hi', stream: false })),
    signal,
  })
  assert.equal(JSON.parse((await readAll(gen.body)).toString()).response, 'echo: hi')
  const emb = await callOllamaOverOpenAI(engine, {
    method: 'POST',
    path: '/api/embed',
    body: Buffer.from(JSON.stringify({ model: 'e', input: ['x', 'y'] })),
    signal,
  })
  assert.equal(JSON.parse((await readAll(emb.body)).toString()).embeddings.length, 2)
  const bad = await callOllamaOverOpenAI(engine, {
    method: 'POST',
    path: '/api/chat',
    body: Buffer.from('nope'),
    signal,
  })
  assert.equal(bad.status, 400)
})
