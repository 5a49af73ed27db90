/**
 * Balance under steady load (issue 10, acceptance 1): workers with capacities 1:1:2:4 receive
 * requests in those proportions (within 10 %), and a worker whose engine adds 200 ms per request
 * receives clearly less than the others. Counts come from `x-gpufabric-worker`.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { API_KEY, startFabric } from '../helpers/fabric.js'
import { delayedEcho } from '../helpers/sessions.js'

const delayed = (ms: number) => delayedEcho(['b'], ms)

/** `clients` loops of `each` requests one after the other; the answering worker of each. */
async function load(baseUrl: string, clients: number, each: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>()
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = 0; i < each; i++) {
        const res = await fetch(`${baseUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'b', messages: [{ role: 'user', content: 'x' }] }),
        })
        await res.arrayBuffer()
        assert.equal(res.status, 200)
        const worker = res.headers.get('x-gpufabric-worker') ?? '?'
        counts.set(worker, (counts.get(worker) ?? 0) + 1)
      }
    }),
  )
  return counts
}

test('capacities 1:1:2:4 under steady load get requests in those proportions, within 10 %', async (t) => {
  const fabric = await startFabric()
  try {
    const capacities = [1, 1, 2, 4]
    for (const [i, capacity] of capacities.entries())
      await fabric.addWorker(delayed(25), `cap-${i}`, { capacity })
    // As many clients as slots: every worker is kept full, so each serves in proportion to its slots.
    const counts = await load(fabric.baseUrl, 8, 40)
    const total = [...counts.values()].reduce((a, b) => a + b, 0)
    assert.equal(total, 320)
    const shares = capacities.map((c, i) => ({ expected: c / 8, got: (counts.get(`cap-${i}`) ?? 0) / total }))
    t.diagnostic(
      `shares (expected, got): ${shares.map((s) => `${s.expected.toFixed(3)} ${s.got.toFixed(3)}`).join(' | ')}`,
    )
    for (const s of shares)
      assert.ok(Math.abs(s.got - s.expected) <= 0.1 * s.expected, JSON.stringify(shares))
  } finally {
    await fabric.close()
  }
})

test('a worker whose engine adds 200 ms per request receives clearly less than the others', async (t) => {
  const fabric = await startFabric()
  try {
    await fabric.addWorker(delayed(200), 'slow')
    for (let i = 0; i < 3; i++) await fabric.addWorker(delayed(5), `fast-${i}`)
    const counts = await load(fabric.baseUrl, 6, 30)
    const slow = counts.get('slow') ?? 0
    const fast = [0, 1, 2].map((i) => counts.get(`fast-${i}`) ?? 0)
    const mean = fast.reduce((a, b) => a + b, 0) / fast.length
    t.diagnostic(`requests: slow ${slow}, fast ${fast.join(', ')}`)
    assert.ok(slow < 0.5 * mean, `slow ${slow} against a mean of ${mean.toFixed(1)} on the others`)
  } finally {
    await fabric.close()
  }
})
