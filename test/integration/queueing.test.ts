/**
 * Capacity and queueing: a worker never gets more requests than the capacity it states; when
 * every worker of the model is full, requests wait in a bounded per-model queue, first in first
 * out, and past its length or its wait deadline get 503 with `retry-after` (at once when full).
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import type { Engine } from '../../src/worker/engines/types.js'
import { API_KEY, startFabric } from '../helpers/fabric.js'

/** The echo engine, slowed down, counting the calls it runs at once. */
function slowEngine(delayMs: number): Engine & { active: number; most: number; calls: number } {
  const echo = createEchoEngine({ models: ['q'] })
  const engine = {
    ...echo,
    active: 0,
    most: 0,
    calls: 0,
    async call(call: Parameters<Engine['call']>[0]) {
      engine.active++
      engine.calls++
      engine.most = Math.max(engine.most, engine.active)
      try {
        await sleep(delayMs)
        return await echo.call(call)
      } finally {
        engine.active--
      }
    },
  }
  delete (engine as Partial<Engine>).relay
  return engine
}

function chat(
  baseUrl: string,
): Promise<{ status: number; retryAfter: string | null; body: string; ms: number }> {
  const started = Date.now()
  return fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'q', messages: [{ role: 'user', content: 'hi' }] }),
  }).then(async (res) => ({
    status: res.status,
    retryAfter: res.headers.get('retry-after'),
    body: await res.text(),
    ms: Date.now() - started,
  }))
}

test('3 workers of capacity 2 and 30 concurrent requests: all served, none above its capacity', async () => {
  const fabric = await startFabric({ queues: { maxPerModel: 100, waitMs: 20_000 } })
  try {
    const engines = [slowEngine(150), slowEngine(150), slowEngine(150)]
    for (const [i, engine] of engines.entries()) await fabric.addWorker(engine, `cap2-${i}`, { capacity: 2 })
    const sessions = engines.map((_, i) => fabric.server.registry.byClientId(`cap2-${i}`)!)
    let mostInflight = 0
    let mostWaiting = 0
    const watch = setInterval(() => {
      for (const s of sessions) mostInflight = Math.max(mostInflight, s.inflight)
      mostWaiting = Math.max(mostWaiting, fabric.server.registry.queues.size)
    }, 2)
    const results = await Promise.all(Array.from({ length: 30 }, () => chat(fabric.baseUrl)))
    clearInterval(watch)
    assert.deepEqual(
      results.map((r) => r.status),
      Array(30).fill(200),
      results.map((r) => r.body).join('\n'),
    )
    for (const e of engines) assert.ok(e.most <= 2, `an engine ran ${e.most} at once`)
    assert.ok(mostInflight <= 2, `the server had ${mostInflight} in flight on one worker`)
    assert.equal(
      engines.reduce((n, e) => n + e.calls, 0),
      30,
    )
    assert.ok(mostWaiting >= 20, `only ${mostWaiting} waited at once`)
    // Every worker took its share (first in first out over the freed slots).
    for (const e of engines) assert.ok(e.calls >= 6, `calls per worker: ${engines.map((x) => x.calls)}`)
    const stats = (await (
      await fetch(`${fabric.apiUrl}/api/v1/stats`, { headers: { authorization: `Bearer ${API_KEY}` } })
    ).json()) as { queues: { waiting: number; refused: number; expired: number } }
    assert.deepEqual(stats.queues, { waiting: 0, byModel: {}, refused: 0, expired: 0 })
  } finally {
    await fabric.close()
  }
})

test('with the queue full the excess gets 503 and retry-after at once; the queued ones are served', async () => {
  const fabric = await startFabric({ queues: { maxPerModel: 4, waitMs: 20_000 } })
  try {
    const engine = slowEngine(400)
    await fabric.addWorker(engine, 'cap1', { capacity: 1 })
    const results = await Promise.all(Array.from({ length: 10 }, () => chat(fabric.baseUrl)))
    const ok = results.filter((r) => r.status === 200)
    const refused = results.filter((r) => r.status === 503)
    assert.equal(ok.length, 5, JSON.stringify(results.map((r) => r.status)))
    assert.equal(refused.length, 5)
    for (const r of refused) {
      assert.equal(r.retryAfter, '1')
      assert.match(r.body, /queue is full/)
      assert.ok(r.ms < 350, `refused after ${r.ms} ms`)
    }
    assert.equal(engine.most, 1)
    assert.equal(fabric.server.registry.queues.refused, 5)
  } finally {
    await fabric.close()
  }
})

test('a request that waits past the deadline gets 503 with retry-after; one whose user leaves is dropped', async () => {
  const fabric = await startFabric({ queues: { maxPerModel: 10, waitMs: 300 } })
  try {
    const engine = slowEngine(1_500)
    await fabric.addWorker(engine, 'slow1', { capacity: 1 })
    const first = chat(fabric.baseUrl)
    await sleep(50)
    const second = await chat(fabric.baseUrl)
    assert.equal(second.status, 503)
    assert.equal(second.retryAfter, '1')
    assert.match(second.body, /had room within/)
    assert.ok(second.ms >= 250 && second.ms < 1_200, `gave up after ${second.ms} ms`)
    // A user who goes away while waiting leaves the queue.
    const controller = new AbortController()
    const gone = fetch(`${fabric.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      signal: controller.signal,
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'q', messages: [] }),
    }).catch(() => undefined)
    await sleep(50)
    assert.equal(fabric.server.registry.queues.size, 1)
    controller.abort()
    await gone
    const deadline = Date.now() + 1_000
    while (fabric.server.registry.queues.size > 0 && Date.now() < deadline) await sleep(10)
    assert.equal(fabric.server.registry.queues.size, 0)
    assert.equal((await first).status, 200)
    assert.equal(engine.calls, 1)
  } finally {
    await fabric.close()
  }
})

test('answers name their worker; a request that asks gets the route and its reason; engines cannot forge either', async () => {
  const fabric = await startFabric()
  try {
    const forging = createEchoEngine({ models: ['q'] })
    const engine: Engine = {
      ...forging,
      async call(call) {
        const reply = await forging.call(call)
        return {
          ...reply,
          headers: { ...reply.headers, 'x-gpufabric-worker': 'forged', 'x-gpufabric-route': 'forged' },
        }
      },
    }
    delete (engine as Partial<Engine>).relay
    await fabric.addWorker(engine, 'named-a')
    await fabric.addWorker(createEchoEngine({ models: ['q'] }), 'named-b')
    const plain = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'q', messages: [] }),
    })
    await plain.arrayBuffer()
    assert.match(plain.headers.get('x-gpufabric-worker') ?? '', /^named-[ab]$/)
    assert.equal(plain.headers.get('x-gpufabric-route'), null)
    for (let i = 0; i < 10; i++) {
      const asked = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${API_KEY}`,
          'content-type': 'application/json',
          'x-gpufabric-route': '1',
        },
        body: JSON.stringify({ model: 'q', messages: [] }),
      })
      await asked.arrayBuffer()
      const worker = asked.headers.get('x-gpufabric-worker')
      assert.match(worker ?? '', /^named-[ab]$/)
      const route = asked.headers.get('x-gpufabric-route') ?? ''
      assert.match(route, /^p2c of 2: named-[ab] load 0\.00, named-[ab] load 0\.00; chose named-[ab]; try 1$/)
      assert.ok(route.includes(`chose ${worker}`), route)
    }
  } finally {
    await fabric.close()
  }
})
