import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import { createHttpEngine } from '../../src/worker/engines/http.js'
import type { Engine, EngineCall } from '../../src/worker/engines/types.js'
import { API_KEY, startFabric, type TestFabric, waitFor } from '../helpers/fabric.js'
import { type FakeEngine, startFakeEngine } from '../helpers/fake-engine.js'

let fabric: TestFabric
let paced: FakeEngine
let ollamaPaced: FakeEngine
const inProcessAborts: number[] = []

/** An in-process engine whose stream never ends by itself; records when its signal aborts. */
const endless: Engine = {
  type: 'echo',
  apis: new Set(['openai']),
  async listModels() {
    return ['endless']
  },
  async call(call: EngineCall) {
    const started = Date.now()
    call.signal.addEventListener('abort', () => inProcessAborts.push(Date.now() - started), { once: true })
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream' },
      body: (async function* () {
        for (let i = 0; ; i++) {
          yield Buffer.from(`data: {"choices":[{"index":0,"delta":{"content":"${i}"}}]}\n\n`)
          await new Promise((r) => setTimeout(r, 50))
          if (call.signal.aborted) return
        }
      })(),
    }
  },
  async close() {},
}

before(async () => {
  fabric = await startFabric()
  paced = await startFakeEngine({ models: ['paced'], name: 'paced', chunks: 8, chunkIntervalMs: 50 })
  ollamaPaced = await startFakeEngine({
    models: ['slow-llama'],
    name: 'ol',
    chunks: 200,
    chunkIntervalMs: 50,
    ollama: true,
  })
  await fabric.addWorker(
    createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${paced.port}` }),
    'paced',
  )
  await fabric.addWorker(
    createHttpEngine({ type: 'ollama', baseUrl: `http://127.0.0.1:${ollamaPaced.port}` }),
    'ol',
  )
  await fabric.addWorker(endless, 'endless')
})
after(async () => {
  await fabric.close()
  await Promise.all([paced.close(), ollamaPaced.close()])
})

function post(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(`${fabric.baseUrl}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal === undefined ? {} : { signal }),
  })
}

test('chunks sent 50 ms apart arrive about 50 ms apart, not bunched', async () => {
  const res = await post('/v1/chat/completions', { model: 'paced', messages: [], stream: true })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/)
  const arrivals: number[] = []
  const decoder = new TextDecoder()
  let pending = ''
  for await (const chunk of res.body!) {
    pending += decoder.decode(chunk, { stream: true })
    let i = pending.indexOf('\n\n')
    while (i >= 0) {
      if (pending.slice(0, i).includes('from paced')) arrivals.push(performance.now())
      pending = pending.slice(i + 2)
      i = pending.indexOf('\n\n')
    }
  }
  assert.equal(arrivals.length, 8)
  const gaps = arrivals.slice(1).map((t, i) => t - arrivals[i]!)
  // Bunched delivery would put most gaps near 0; paced delivery keeps them near 50 ms.
  const paced = gaps.filter((g) => g >= 30)
  // A busy machine may deliver chunks together now and then (each stall of the engine or the
  // reader bunches two); buffering anywhere on the way would bunch them all.
  assert.ok(paced.length >= gaps.length / 2, `gaps ${gaps.map((g) => g.toFixed(1)).join(', ')}`)
  assert.ok(arrivals.at(-1)! - arrivals[0]! >= 7 * 40, 'first and last chunk should be ~350 ms apart')
})

test('a client that aborts mid-stream cancels the engine request within 1 s (HTTP engine)', async () => {
  const controller = new AbortController()
  const aborted = once(ollamaPaced.events, 'aborted')
  const res = await post('/api/chat', { model: 'slow-llama', messages: [] }, controller.signal)
  const reader = res.body!.getReader()
  await reader.read()
  await reader.read()
  const t0 = Date.now()
  controller.abort()
  const [engineMs] = (await Promise.race([
    aborted,
    new Promise((_, reject) => setTimeout(() => reject(new Error('engine never saw the abort')), 1_000)),
  ])) as [number]
  assert.ok(Date.now() - t0 <= 1_000)
  assert.ok(engineMs < 5_000, 'the engine request was cut long before its natural end (10 s)')
})

test('a client that aborts mid-stream cancels an in-process engine within 1 s', async () => {
  const controller = new AbortController()
  const res = await post(
    '/v1/chat/completions',
    { model: 'endless', messages: [], stream: true },
    controller.signal,
  )
  const reader = res.body!.getReader()
  await reader.read()
  const before = inProcessAborts.length
  const t0 = Date.now()
  controller.abort()
  await waitFor(() => inProcessAborts.length > before, 1_000, 'engine abort')
  assert.ok(Date.now() - t0 <= 1_000)
  await waitFor(
    () => fabric.workers.every((w) => w.inflight === 0),
    1_000,
    'worker in-flight count back to 0',
  )
})

test('a stopping server lets a stream in flight finish, and refuses new connections', async () => {
  const other = await startFabric()
  const slow = await startFakeEngine({ models: ['draining'], name: 'drain', chunks: 6, chunkIntervalMs: 50 })
  try {
    await other.addWorker(
      createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${slow.port}` }),
      'drain-w',
    )
    const res = await fetch(`${other.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'draining', messages: [], stream: true }),
    })
    const reading = res.text()
    const stopping = other.server.stop({ drainMs: 5_000 })
    await new Promise((r) => setTimeout(r, 20))
    await assert.rejects(
      fetch(`${other.baseUrl}/v1/models`, { headers: { authorization: `Bearer ${API_KEY}` } }),
    )
    const text = await reading
    assert.equal((text.match(/from drain/g) ?? []).length, 6, 'every chunk arrived')
    assert.match(text, /\[DONE\]/)
    await stopping
  } finally {
    await other.close()
    await slow.close()
  }
})

test('backpressure holds end to end: a client that does not read stops the engine', async () => {
  const other = await startFabric()
  let written = 0
  let waitingForDrain = false
  const chunk = Buffer.alloc(64 * 1024, 'x')
  const engine = createServer((req, res) => {
    req.resume()
    if (req.url === '/v1/models') {
      res.end(JSON.stringify({ data: [{ id: 'firehose' }] }))
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    const pump = () => {
      while (written < 256 * 1024 * 1024) {
        written += chunk.length
        if (!res.write(chunk)) {
          waitingForDrain = true
          res.once('drain', () => {
            waitingForDrain = false
            pump()
          })
          return
        }
      }
      res.end()
    }
    pump()
  })
  engine.listen(0, '127.0.0.1')
  await once(engine, 'listening')
  try {
    const port = (engine.address() as AddressInfo).port
    await other.addWorker(
      createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${port}` }),
      'firehose-w',
    )
    const controller = new AbortController()
    const res = await fetch(`${other.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'firehose', messages: [], stream: true }),
      signal: controller.signal,
    })
    assert.equal(res.status, 200)
    // Do not read: the engine must soon be held back by full windows and buffers. Held means
    // waiting for drain with nothing written for 500 ms; how soon that happens depends on the
    // machine, so wait for it (up to 20 s) rather than for a fixed time.
    const bound = 96 * 1024 * 1024
    const deadline = Date.now() + 20_000
    let heldAt = -1
    while (heldAt < 0) {
      const before = written
      await new Promise((r) => setTimeout(r, 500))
      assert.ok(written < bound, `the engine wrote ${written} bytes to a client that read nothing`)
      if (waitingForDrain && written === before) heldAt = written
      else assert.ok(Date.now() < deadline, `the engine never stopped writing (${written} bytes)`)
    }
    console.log(`# held at ${(heldAt / 1048576).toFixed(1)} MiB for a client that reads nothing`)
    // Reading resumes the flow.
    const reader = res.body!.getReader()
    let read = 0
    // What is buffered along the way (windows, socket buffers) drains first, then the engine resumes.
    while (written <= heldAt && read < 200 * 1024 * 1024) read += (await reader.read()).value?.length ?? 0
    assert.ok(
      written > heldAt,
      `the engine writes again once the client reads (read ${read}, held at ${heldAt})`,
    )
    controller.abort()
  } finally {
    engine.closeAllConnections()
    engine.close()
    await other.close()
  }
})
