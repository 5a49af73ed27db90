import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { API_KEY, startFabric, type TestFabric, waitFor } from '../helpers/fabric.js'
import { type Relay, startRelay } from '../helpers/relay.js'

/**
 * The relayed worker's connect timeout. A redial that starts while the relay still
 * blackholes loses its TLS hello and waits this long before the worker gives up and starts
 * a new session; with the 10 s default, a redial bound of 10 s was missed by chance.
 */
const CONNECT_TIMEOUT_MS = 1_500
/** Server ping timings: a silent link is dropped within about interval + deadline. */
const PING_INTERVAL_MS = 300
const PING_DEADLINE_MS = 1_200

let fabric: TestFabric
let relay: Relay

before(async () => {
  fabric = await startFabric({ pingIntervalMs: PING_INTERVAL_MS, pingDeadlineMs: PING_DEADLINE_MS })
  relay = await startRelay(fabric.server.ports.proxy)
  // The data link of 'behind-relay' crosses the relay; its control connection does not.
  await fabric.addWorker(createEchoEngine({ models: ['shared-model'] }), 'behind-relay', {
    proxyPort: relay.port,
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
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
  // A request on the silent link waits for the ping deadline, then goes elsewhere: about
  // 1.5 s for the six; 8 s still fails a tenfold regression (or a wait for the 300 s
  // first-byte timeout).
  const served = Date.now() - t0
  assert.ok(served < 8_000, `six requests took ${served} ms with one path blackholed`)
  // Already dropped when a request waited on it; else within interval + deadline (1.5 s).
  await waitFor(
    () => fabric.server.registry.byClientId('behind-relay')?.linkCount === 0,
    4 * (PING_INTERVAL_MS + PING_DEADLINE_MS),
    'silent link dropped',
  )
  relay.heal()
  // Worst case: a redial begun in the hole times out (the connect timeout), then a new
  // session after its backoff (≤ 0.5 s), login, a fresh link and its bind: about 2 s. 10 s
  // leaves room for a loaded machine; a redial that waited the 10 s default would miss it.
  await waitFor(
    () => fabric.server.registry.byClientId('behind-relay')?.routable === true,
    10_000,
    'link redialled',
  )
})
