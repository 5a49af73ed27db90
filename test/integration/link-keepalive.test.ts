import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { API_KEY, startFabric, type TestFabric, waitFor } from '../helpers/fabric.js'
import { type Relay, startRelay } from '../helpers/relay.js'

let fabric: TestFabric
let relay: Relay

before(async () => {
  fabric = await startFabric({ pingIntervalMs: 300, pingDeadlineMs: 1_200 })
  relay = await startRelay(fabric.server.ports.proxy)
  // The data link of 'behind-relay' crosses the relay; its control connection does not.
  await fabric.addWorker(createEchoEngine({ models: ['shared-model'] }), 'behind-relay', {
    proxyPort: relay.port,
  })
  await fabric.addWorker(createEchoEngine({ models: ['shared-model'] }), 'direct')
})
after(async () => {
  await fabric.close()
  await relay.close()
})

test('a data link whose path goes silent is dropped in seconds; its requests are served elsewhere; it comes back', async () => {
  relay.blackhole()
  const t0 = Date.now()
  for (let i = 0; i < 6; i++) {
    const res = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'shared-model', messages: [{ role: 'user', content: `n${i}` }] }),
    })
    assert.equal(res.status, 200)
    assert.equal(
      ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]?.message.content,
      `echo: n${i}`,
    )
  }
  assert.ok(Date.now() - t0 < 5_000, `six requests took ${Date.now() - t0} ms with one path blackholed`)
  await waitFor(
    () => fabric.server.registry.byClientId('behind-relay')?.linkCount === 0,
    3_000,
    'silent link dropped',
  )
  relay.heal()
  await waitFor(
    () => fabric.server.registry.byClientId('behind-relay')?.routable === true,
    10_000,
    'link redialled',
  )
})
