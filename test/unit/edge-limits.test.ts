import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import { test } from 'node:test'
import { CredentialThrottle } from '../../src/auth/throttle.js'
import { LIMITS } from '../../src/config/defaults.js'
import { MessageType, schemas } from '../../src/protocol/messages.js'
import { ConnectionBudget } from '../../src/server/connections.js'

let nextPort = 1
/** A stand-in for an accepted socket: an address, a port, and a 'close' event. */
function fakeSocket(address: string): Socket & { close(): void } {
  const s = new EventEmitter() as unknown as Socket & { close(): void }
  Object.assign(s, { remoteAddress: address, remotePort: nextPort++ })
  s.close = () => s.emit('close')
  return s
}

test('a port refuses connections past its cap, and takes them again as they close', () => {
  const budget = new ConnectionBudget({
    maxConnections: 3,
    maxPerAddress: 10,
    maxPending: 10,
    maxPendingPerAddress: 10,
  })
  const sockets = ['10.0.0.1', '10.0.0.2', '10.0.0.3'].map(fakeSocket)
  for (const s of sockets) assert.equal(budget.admit(s, false), true)
  assert.equal(budget.admit(fakeSocket('10.0.0.4'), false), false)
  assert.equal(budget.refused.port, 1)
  sockets[0]!.close()
  assert.equal(budget.open, 2)
  assert.equal(budget.admit(fakeSocket('10.0.0.4'), false), true)
})

test('one address is held to its share; other addresses are not', () => {
  const budget = new ConnectionBudget({
    maxConnections: 100,
    maxPerAddress: 2,
    maxPending: 100,
    maxPendingPerAddress: 100,
  })
  assert.equal(budget.admit(fakeSocket('10.0.0.1'), false), true)
  assert.equal(budget.admit(fakeSocket('10.0.0.1'), false), true)
  assert.equal(budget.admit(fakeSocket('10.0.0.1'), false), false)
  // An IPv6 /64 is one address; the next /64 is another.
  assert.equal(budget.admit(fakeSocket('2001:db8:0:1::1'), false), true)
  assert.equal(budget.admit(fakeSocket('2001:db8:0:1::2'), false), true)
  assert.equal(budget.admit(fakeSocket('2001:db8:0:1:ffff::3'), false), false)
  assert.equal(budget.admit(fakeSocket('2001:db8:0:2::1'), false), true)
  assert.equal(budget.refused.address, 2)
})

test('pending connections have their own caps, per port and per address; authenticating frees the slot', () => {
  const budget = new ConnectionBudget({
    maxConnections: 100,
    maxPerAddress: 100,
    maxPending: 3,
    maxPendingPerAddress: 2,
  })
  const a = [fakeSocket('10.0.0.1'), fakeSocket('10.0.0.1')]
  for (const s of a) assert.equal(budget.admit(s, true), true)
  assert.equal(budget.admit(fakeSocket('10.0.0.1'), true), false)
  assert.equal(budget.refused.pendingAddress, 1)
  assert.equal(budget.admit(fakeSocket('10.0.0.2'), true), true)
  assert.equal(budget.admit(fakeSocket('10.0.0.3'), true), false)
  assert.equal(budget.refused.pending, 1)
  budget.authenticated(a[0]!)
  assert.equal(budget.pending, 2)
  assert.equal(budget.admit(fakeSocket('10.0.0.1'), true), true)
  // An authenticated connection is not pending any more, but still open.
  assert.equal(budget.open, 4)
  a[0]!.close()
  assert.equal(budget.open, 3)
  assert.equal(budget.pending, 3)
})

test('the throttle blocks an address after maxAuthFailures, for a cool-down that doubles', () => {
  const throttle = new CredentialThrottle({ maxFailures: 3, cooldownMs: 1_000, maxCooldownMs: 3_000 })
  for (let i = 0; i < 3; i++) assert.equal(throttle.failure('10.0.0.1', undefined, 'API key').blockedForMs, 0)
  assert.equal(throttle.active, false)
  const first = throttle.failure('10.0.0.1', undefined, 'API key').blockedForMs
  assert.ok(first > 900 && first <= 1_000)
  assert.equal(throttle.active, true)
  assert.ok(throttle.blockedFor('10.0.0.1') > 0)
  assert.equal(throttle.blockedFor('10.0.0.2'), 0)
  assert.equal(throttle.snapshot().blocked, 1)
})

test('the cool-down doubles with repeat offences, capped', () => {
  let now = 1_000_000
  const realNow = Date.now
  Date.now = () => now
  try {
    const throttle = new CredentialThrottle({ maxFailures: 1, cooldownMs: 1_000, maxCooldownMs: 3_000 })
    const offend = () => {
      throttle.failure('a', undefined, 'x')
      return throttle.failure('a', undefined, 'x').blockedForMs
    }
    assert.equal(offend(), 1_000)
    now += 1_001
    assert.equal(throttle.blockedFor('a'), 0)
    assert.equal(offend(), 2_000)
    now += 2_001
    assert.equal(offend(), 3_000)
  } finally {
    Date.now = realNow
  }
})

test('the throttle tracks at most maxEntries addresses and subjects', () => {
  const throttle = new CredentialThrottle({ maxEntries: 100 })
  for (let i = 0; i < 10_000; i++) throttle.failure(`10.0.${i >> 8}.${i & 255}`, `key:${i}`, 'API key')
  assert.ok(throttle.snapshot().tracked <= 100)
  assert.equal(throttle.snapshot().failures, 10_000)
})

test('message limits hold at their bound: models per worker and model name length', () => {
  const login = (models: string[]) =>
    schemas[MessageType.Login].safeParse({
      clientId: 'w',
      token: 't',
      agentVersion: '1',
      engineType: 'echo',
      models,
    })
  const name = 'm'.repeat(LIMITS.maxModelNameLength)
  assert.equal(login([name]).success, true)
  assert.equal(login([`${name}x`]).success, false)
  const many = Array.from({ length: LIMITS.maxModelsPerWorker }, (_, i) => `m${i}`)
  assert.equal(login(many).success, true)
  assert.equal(login([...many, 'one-more']).success, false)
})
