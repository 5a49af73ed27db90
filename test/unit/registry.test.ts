import assert from 'node:assert/strict'
import { test } from 'node:test'
import { WorkerRegistry } from '../../src/routing/registry.js'
import type { WorkerSession } from '../../src/routing/worker-session.js'
import { fakeSession } from '../helpers/sessions.js'

const worker = (clientId: string, models: string[], routable = true) =>
  fakeSession(clientId, models, { routable })

test('pick only returns workers that serve the model', () => {
  const registry = new WorkerRegistry()
  const a = worker('a', ['m1'])
  const b = worker('b', ['m2'])
  registry.add(a)
  registry.add(b)
  for (let i = 0; i < 50; i++) assert.equal(registry.pick('m1'), a)
  assert.equal(registry.pick('m3'), undefined)
  assert.deepEqual(registry.models(), ['m1', 'm2'])
})

test('a name without tag matches the :latest model', () => {
  const registry = new WorkerRegistry()
  const a = worker('a', ['llama3:latest'])
  registry.add(a)
  assert.equal(registry.pick('llama3'), a)
  assert.equal(registry.pick('llama3:8b'), undefined)
})

test('pick prefers the less loaded of two and skips excluded or unroutable workers', () => {
  const registry = new WorkerRegistry()
  const busy = worker('busy', ['m'])
  const idle = worker('idle', ['m'])
  const dead = worker('dead', ['m'], false)
  busy.inflight = 10
  for (const w of [busy, idle, dead]) registry.add(w)
  const picks = new Map<string, number>()
  for (let i = 0; i < 300; i++) {
    const w = registry.pick('m')!
    picks.set(w.clientId, (picks.get(w.clientId) ?? 0) + 1)
  }
  assert.equal(picks.get('dead'), undefined)
  assert.ok((picks.get('idle') ?? 0) > (picks.get('busy') ?? 0))
  assert.equal(registry.pick('m', new Set([idle])), busy)
  assert.equal(registry.pick('m', new Set([idle, busy])), undefined)
})

test('removing and re-adding keeps the model index exact', () => {
  const registry = new WorkerRegistry()
  const old = worker('same', ['m1'])
  registry.add(old)
  const fresh = worker('same', ['m2'])
  registry.remove(old)
  registry.add(fresh)
  registry.remove(old) // a late close of the old session must not drop the new one
  assert.equal(registry.byClientId('same'), fresh)
  assert.deepEqual(registry.models(), ['m2'])
  registry.setModels(fresh, ['m3'])
  assert.deepEqual(registry.models(), ['m3'])
  assert.equal(registry.byDataToken('token-same'), fresh)
})

test('the two candidates are independent draws: each pair of workers is compared equally often', () => {
  // Loads 0 < 1 < 2 < 3. With two independent draws the six pairs are equally likely, so the
  // winners are w0 in 3 pairs, w1 in 2, w2 in 1, w3 never: 1/2, 1/3, 1/6, 0. (Neighbours in the
  // list from a random start would give 1/2, 1/4, 1/4, 0.)
  const registry = new WorkerRegistry()
  const workers = [0, 1, 2, 3].map((i) => {
    const w = worker(`w${i}`, ['m'])
    w.inflight = i
    registry.add(w)
    return w
  })
  const counts = new Map<WorkerSession, number>()
  const picks = 60_000
  for (let i = 0; i < picks; i++) {
    const w = registry.pick('m')!
    counts.set(w, (counts.get(w) ?? 0) + 1)
  }
  const share = (w: WorkerSession) => (counts.get(w) ?? 0) / picks
  assert.ok(Math.abs(share(workers[0]!) - 1 / 2) < 0.02, `w0 ${share(workers[0]!)}`)
  assert.ok(Math.abs(share(workers[1]!) - 1 / 3) < 0.02, `w1 ${share(workers[1]!)}`)
  assert.ok(Math.abs(share(workers[2]!) - 1 / 6) < 0.02, `w2 ${share(workers[2]!)}`)
  assert.equal(counts.get(workers[3]!), undefined)
})

test('with most workers ineligible the pick still finds the eligible ones, evenly', () => {
  const registry = new WorkerRegistry()
  const all = Array.from({ length: 50 }, (_, i) => worker(`w${i}`, ['m'], i === 7 || i === 31))
  for (const w of all) registry.add(w)
  const counts = new Map<string, number>()
  for (let i = 0; i < 2_000; i++) {
    const w = registry.pick('m')!
    counts.set(w.clientId, (counts.get(w.clientId) ?? 0) + 1)
  }
  assert.deepEqual([...counts.keys()].sort(), ['w31', 'w7'])
  assert.ok(counts.get('w7')! > 700 && counts.get('w31')! > 700, JSON.stringify([...counts]))
  const only = new Set(['w31'])
  for (let i = 0; i < 20; i++) assert.equal(registry.pick('m', undefined, only)?.clientId, 'w31')
  assert.equal(registry.pick('m', new Set([all[7]!, all[31]!])), undefined)
})

test("a dedicated key's few workers are picked among directly, under a model's name or its :latest", () => {
  const registry = new WorkerRegistry()
  const all = Array.from({ length: 40 }, (_, i) => worker(`w${i}`, ['llama3:latest']))
  for (const w of all) registry.add(w)
  const allow = new Set(['w3', 'w17', 'not-connected'])
  const seen = new Set<string>()
  for (let i = 0; i < 200; i++) {
    const w = registry.pick('llama3', undefined, allow)!
    seen.add(w.clientId)
    assert.equal(registry.pick('llama3:latest', undefined, allow)?.clientId.startsWith('w'), true)
  }
  assert.deepEqual([...seen].sort(), ['w17', 'w3'])
  all[3]!.inflight = 5
  const explain = { reason: '' }
  assert.equal(registry.pick('llama3', undefined, allow, explain)?.clientId, 'w17')
  assert.match(explain.reason, /chose w17/)
  assert.equal(registry.pick('llama3', new Set([all[3]!, all[17]!]), allow), undefined)
  assert.equal(registry.pick('mistral', undefined, allow), undefined)
})

test('weighted round robin gives each worker its capacity share of every round, spread out', () => {
  const registry = new WorkerRegistry({ strategy: 'weighted-round-robin' })
  const workers = [1, 1, 2, 4].map((capacity, i) => fakeSession(`w${i}`, ['m'], { capacity }))
  for (const w of workers) registry.add(w)
  const counts = new Map<string, number>()
  const order: string[] = []
  for (let i = 0; i < 80; i++) {
    const w = registry.pick('m')!
    order.push(w.clientId)
    counts.set(w.clientId, (counts.get(w.clientId) ?? 0) + 1)
  }
  assert.deepEqual(Object.fromEntries(counts), { w0: 10, w1: 10, w2: 20, w3: 40 })
  // Smooth: the heaviest worker never gets more than two turns in a row.
  assert.ok(!order.join(',').includes('w3,w3,w3'), order.join(','))
  const explain = { reason: '' }
  registry.pick('m', undefined, undefined, explain)
  assert.match(explain.reason, /^weighted-round-robin: w\d \(weight \d of 8\)$/)
})

test('least outstanding takes the least loaded of all, ties shared', () => {
  const registry = new WorkerRegistry({ strategy: 'least-outstanding' })
  const workers = [3, 1, 2, 1].map((inflight, i) => {
    const w = fakeSession(`w${i}`, ['m'])
    w.inflight = inflight
    registry.add(w)
    return w
  })
  const counts = new Map<string, number>()
  for (let i = 0; i < 2_000; i++) {
    const w = registry.pick('m')!
    counts.set(w.clientId, (counts.get(w.clientId) ?? 0) + 1)
  }
  assert.deepEqual([...counts.keys()].sort(), ['w1', 'w3'])
  assert.ok(counts.get('w1')! > 800 && counts.get('w3')! > 800, JSON.stringify([...counts]))
  assert.equal(registry.pick('m', new Set([workers[1]!, workers[3]!]))?.clientId, 'w2')
})
