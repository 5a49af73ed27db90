/**
 * Worker drain: a worker that leaves (SIGTERM, or `drain()`) with 20 streams in flight
 * withdraws its models at once, so no new request reaches it, lets all 20 finish, then exits.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import type { Engine } from '../../src/worker/engines/types.js'
import { API_KEY, startFabric, waitFor } from '../helpers/fabric.js'

/** The echo engine, counting the calls it gets. */
function counted(chunkDelayMs: number): Engine & { calls: number } {
  const echo = createEchoEngine({ models: ['d'], chunkDelayMs })
  const engine = {
    ...echo,
    calls: 0,
    call(call: Parameters<Engine['call']>[0]) {
      engine.calls++
      return echo.call(call)
    },
  }
  return engine
}

const PROMPT = Array.from({ length: 25 }, (_, i) => `word${i}`).join(' ')

async function stream(baseUrl: string): Promise<string> {
  const res = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'd', stream: true, messages: [{ role: 'user', content: PROMPT }] }),
  })
  assert.equal(res.status, 200)
  return res.text()
}

test('a draining worker finishes its 20 streams, gets no new request, and exits', async () => {
  const fabric = await startFabric()
  try {
    const leaving = counted(30)
    const drainer = await fabric.addWorker(leaving, 'drainer')
    const session = fabric.server.registry.byClientId('drainer')!
    const streams = Array.from({ length: 20 }, () => stream(fabric.baseUrl))
    await waitFor(() => session.inflight === 20, 5_000, '20 streams in flight')
    const staying = counted(0)
    await fabric.addWorker(staying, 'stayer')

    const started = Date.now()
    const drained = drainer.drain(10_000)
    await waitFor(() => session.models.length === 0, 2_000, 'models withdrawn')
    // New requests go elsewhere while the 20 streams run on.
    const fresh = await Promise.all(
      Array.from({ length: 10 }, () =>
        fetch(`${fabric.baseUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'd', messages: [{ role: 'user', content: 'new' }] }),
        }).then(async (r) => {
          await r.arrayBuffer()
          return r.status
        }),
      ),
    )
    assert.deepEqual(fresh, Array(10).fill(200))
    assert.equal(leaving.calls, 20, 'no new request reached the draining worker')
    assert.equal(staying.calls, 10)

    const bodies = await Promise.all(streams)
    for (const body of bodies) {
      assert.match(body, /data: \[DONE\]/)
      assert.ok(body.includes('word24'), 'the whole answer arrived')
    }
    await drained
    assert.ok(Date.now() - started < 10_000, 'it left before the deadline')
    await waitFor(() => fabric.server.registry.byClientId('drainer') === undefined, 5_000, 'the worker left')
  } finally {
    await fabric.close()
  }
})

test('the drain deadline cuts what is still running', async () => {
  const fabric = await startFabric()
  try {
    const agent = await fabric.addWorker(counted(200), 'slow-drainer')
    const session = fabric.server.registry.byClientId('slow-drainer')!
    const cut = stream(fabric.baseUrl).then(
      (body) => body,
      () => 'cut',
    )
    await waitFor(() => session.inflight === 1, 5_000, 'one stream in flight')
    const started = Date.now()
    await agent.drain(300)
    assert.ok(Date.now() - started < 2_000, `drain took ${Date.now() - started} ms`)
    const body = await cut
    // Cut mid-stream: an explicit error, never a clean end.
    assert.ok(body === 'cut' || !body.includes('data: [DONE]'), body.slice(-200))
  } finally {
    await fabric.close()
  }
})
