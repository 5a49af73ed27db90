import assert from 'node:assert/strict'
import { test } from 'node:test'
import { affinityKey, hash32 } from '../../src/routing/affinity.js'
import { WorkerRegistry } from '../../src/routing/registry.js'
import { fakeSession } from '../helpers/sessions.js'

const worker = (clientId: string, capacity = 0) => fakeSession(clientId, ['m'], { capacity })

test('consistent hashing: a key keeps its worker; removing a worker moves only the keys it had', () => {
  const registry = new WorkerRegistry()
  const workers = Array.from({ length: 5 }, (_, i) => worker(`w${i}`))
  for (const w of workers) registry.add(w)
  const keys = Array.from({ length: 2_000 }, (_, i) => hash32(`key-${i}`))
  const before = keys.map((k) => registry.pickAffine('m', k)!)
  // Stable: the same answer every time.
  for (const [i, k] of keys.entries()) assert.equal(registry.pickAffine('m', k), before[i])
  // Spread: every worker has a share near a fifth.
  for (const w of workers) {
    const share = before.filter((x) => x === w).length / keys.length
    // 64 ring points per worker: shares within about a third of even.
    assert.ok(share > 0.13 && share < 0.27, `${w.clientId} ${share}`)
  }
  registry.remove(workers[2]!)
  let moved = 0
  for (const [i, k] of keys.entries()) {
    const now = registry.pickAffine('m', k)!
    if (before[i] === workers[2]) assert.notEqual(now, workers[2])
    else if (now !== before[i]) moved++
  }
  assert.equal(moved, 0, 'keys of the other workers stayed where they were')
})

test('a hot key spills past the load bound and past full workers, in the key order', () => {
  const registry = new WorkerRegistry()
  const workers = Array.from({ length: 4 }, (_, i) => worker(`w${i}`, i === 0 ? 2 : 0))
  for (const w of workers) registry.add(w)
  const key = hash32('hot')
  const first = registry.pickAffine('m', key)!
  // Load the preferred worker: the same key goes elsewhere, then comes back when it is free.
  first.inflight = 10
  const explain = { reason: '' }
  const spilled = registry.pickAffine('m', key, undefined, undefined, explain)!
  assert.notEqual(spilled, first)
  assert.match(explain.reason, new RegExp(`spilled from ${first.clientId}`))
  first.inflight = 0
  assert.equal(registry.pickAffine('m', key), first)
  // A worker at its stated capacity is passed over even when below the bound.
  workers[0]!.inflight = 2
  for (let i = 0; i < 200; i++) assert.notEqual(registry.pickAffine('m', hash32(`k${i}`)), workers[0])
  // Cooling down: passed over too.
  workers[0]!.inflight = 0
  workers[1]!.cooldownUntil = Date.now() + 60_000
  for (let i = 0; i < 200; i++) assert.notEqual(registry.pickAffine('m', hash32(`k${i}`)), workers[1])
})

test('affinity keys: session header, then the user field, then the prompt prefix', () => {
  const chat = (user: string | undefined, system: string, question: string) => ({
    model: 'm',
    ...(user === undefined ? {} : { user }),
    messages: [
      { role: 'system', content: system },
      { role: 'user', content: question },
    ],
  })
  const long = 'You are a helpful assistant. '.repeat(200)
  assert.equal(affinityKey('off', chat('u1', 'a', 'b'), undefined), undefined)
  assert.equal(affinityKey('session', chat(undefined, 'a', 'b'), undefined), undefined)
  assert.equal(
    affinityKey('session', chat('u1', 'a', 'b'), undefined),
    affinityKey('session', chat('u1', 'x', 'y'), undefined),
  )
  assert.notEqual(
    affinityKey('session', chat('u1', 'a', 'b'), 'sess-9'),
    affinityKey('session', chat('u1', 'a', 'b'), undefined),
  )
  // Prompts sharing their first ~2,048 characters share a key, whatever comes after.
  assert.equal(
    affinityKey('prefix', chat(undefined, long, 'q1'), undefined),
    affinityKey('prefix', chat(undefined, long, 'q2'), undefined),
  )
  assert.notEqual(
    affinityKey('prefix', chat(undefined, 'short', 'q1'), undefined),
    affinityKey('prefix', chat(undefined, 'short', 'q2'), undefined),
  )
  assert.equal(
    affinityKey('auto', chat('u1', 'a', 'b'), undefined),
    affinityKey('session', chat('u1', 'z', 'z'), undefined),
  )
  assert.equal(
    affinityKey('auto', chat(undefined, long, 'q'), undefined),
    affinityKey('prefix', chat(undefined, long, 'r'), undefined),
  )
  assert.equal(
    affinityKey('prefix', { model: 'm', prompt: 'abc' }, undefined),
    affinityKey('prefix', { model: 'm', prompt: 'abc' }, undefined),
  )
  assert.equal(affinityKey('prefix', { model: 'm' }, undefined), undefined)
})
