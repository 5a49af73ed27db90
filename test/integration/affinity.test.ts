/**
 * Affinity through the gateway: requests that share a prompt prefix land on the same worker
 * while it has room, spill to others when it is full, and say so when asked.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { API_KEY, startFabric } from '../helpers/fabric.js'
import { delayedEcho } from '../helpers/sessions.js'

const SYSTEM = 'You answer questions about the GPUFabric manual. '.repeat(60)

const slow = (delayMs: number) => delayedEcho(['a'], delayMs)

async function ask(baseUrl: string, question: string, system = SYSTEM) {
  const res = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${API_KEY}`,
      'content-type': 'application/json',
      'x-gpufabric-route': '1',
    },
    body: JSON.stringify({
      model: 'a',
      messages: [
        { role: 'system', content: system },
        { role: 'user', content: question },
      ],
    }),
  })
  await res.arrayBuffer()
  return {
    status: res.status,
    worker: res.headers.get('x-gpufabric-worker'),
    route: res.headers.get('x-gpufabric-route'),
  }
}

test('with --affinity prefix, a shared prompt prefix stays on one worker, and spills when it is full', async () => {
  const fabric = await startFabric({ affinity: 'prefix' })
  try {
    for (let i = 0; i < 4; i++) await fabric.addWorker(slow(30), `aff-${i}`, { capacity: 2 })
    const seq = []
    for (let i = 0; i < 30; i++) seq.push(await ask(fabric.baseUrl, `question ${i}`))
    const home = seq[0]!.worker
    assert.ok(home !== null)
    const same = seq.filter((r) => r.worker === home).length
    assert.ok(same / seq.length >= 0.9, `${same} of ${seq.length} on ${home}`)
    assert.match(seq[0]!.route ?? '', /^affinity: /)

    // Other prefixes spread over the workers.
    const others = new Set<string | null>()
    for (let i = 0; i < 40; i++)
      others.add((await ask(fabric.baseUrl, 'q', `system prompt number ${i}`)).worker)
    assert.ok(others.size >= 3, `only ${[...others].join(',')}`)

    // Its home full (capacity 2): the rest of a burst spills to others, none is refused.
    const burst = await Promise.all(Array.from({ length: 6 }, (_, i) => ask(fabric.baseUrl, `burst ${i}`)))
    assert.deepEqual(
      burst.map((r) => r.status),
      Array(6).fill(200),
    )
    const onHome = burst.filter((r) => r.worker === home).length
    assert.ok(onHome <= 2, `${onHome} on the full home worker`)
    assert.ok(
      burst.some((r) => /spilled from/.test(r.route ?? '')),
      burst.map((r) => r.route).join('\n'),
    )
  } finally {
    await fabric.close()
  }
})

test('affinity is off by default: the same prefix is spread by load', async () => {
  const fabric = await startFabric()
  try {
    for (let i = 0; i < 3; i++) await fabric.addWorker(createEchoEngine({ models: ['a'] }), `plain-${i}`)
    const workers = new Set<string | null>()
    for (let i = 0; i < 30; i++) workers.add((await ask(fabric.baseUrl, `q${i}`)).worker)
    assert.equal(workers.size, 3)
  } finally {
    await fabric.close()
  }
})
