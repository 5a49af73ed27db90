/**
 * Outlier ejection: a worker whose tries keep failing is put out of rotation for a cooldown
 * that doubles each time; afterwards one probe at a time tests it, and a success brings it back.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { LIMITS, TIMEOUTS } from '../../src/config/defaults.js'
import { ErrorCodes, FabricError } from '../../src/errors/index.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import type { Engine } from '../../src/worker/engines/types.js'
import { API_KEY, startFabric } from '../helpers/fabric.js'

/** The echo engine, unreachable while `broken` (as an engine that is down), counting calls. */
function breakable(): Engine & { broken: boolean; calls: number } {
  const echo = createEchoEngine({ models: ['e'] })
  const engine = {
    ...echo,
    broken: true,
    calls: 0,
    async call(call: Parameters<Engine['call']>[0]) {
      engine.calls++
      if (engine.broken)
        throw new FabricError(ErrorCodes.ENGINE_UNAVAILABLE, 'engine down', { retryable: true })
      return echo.call(call)
    },
  }
  return engine
}

const chat = (baseUrl: string) =>
  fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'e', messages: [{ role: 'user', content: 'hi' }] }),
  }).then(async (res) => {
    await res.arrayBuffer()
    return res.status
  })

test('a failing worker leaves the rotation after a few failures, is probed after its cooldown, and returns', async () => {
  const fabric = await startFabric()
  try {
    const bad = breakable()
    const good = createEchoEngine({ models: ['e'] })
    await fabric.addWorker(bad, 'flaky')
    await fabric.addWorker(good, 'steady')
    const flaky = fabric.server.registry.byClientId('flaky')!
    // Every request is served (a failed try goes to the other worker before the answer starts).
    const statuses: number[] = []
    for (let i = 0; i < 40; i++) statuses.push(await chat(fabric.baseUrl))
    assert.deepEqual(statuses, Array(40).fill(200))
    // Out of rotation after ejectAfterFailures failures: at most that many tries reached it.
    assert.equal(bad.calls, LIMITS.ejectAfterFailures)
    assert.ok(flaky.cooldownUntil > Date.now())
    const listed = (await (
      await fetch(`${fabric.apiUrl}/api/v1/workers/flaky`, {
        headers: { authorization: `Bearer ${API_KEY}` },
      })
    ).json()) as { failures: number; cooldownUntil: string | null }
    assert.equal(listed.failures, LIMITS.ejectAfterFailures)
    assert.ok(listed.cooldownUntil !== null)

    // After the first cooldown one probe fails: the next cooldown is twice as long.
    await sleep(TIMEOUTS.cooldownBaseMs + 50)
    const before = bad.calls
    for (let i = 0; i < 10; i++) assert.equal(await chat(fabric.baseUrl), 200)
    assert.equal(bad.calls, before + 1, 'one probe, not a flood')
    const second = flaky.cooldownUntil - Date.now()
    assert.ok(second > TIMEOUTS.cooldownBaseMs, `second cooldown ${second} ms`)

    // The engine recovers: after the cooldown the probe succeeds and the worker is back.
    bad.broken = false
    await sleep(second + 50)
    for (let i = 0; i < 20; i++) assert.equal(await chat(fabric.baseUrl), 200)
    assert.equal(flaky.failures, 0)
    assert.equal(flaky.cooldownUntil, 0)
    assert.ok(bad.calls > before + 3, `the recovered worker takes requests again (${bad.calls - before - 1})`)
  } finally {
    await fabric.close()
  }
})
