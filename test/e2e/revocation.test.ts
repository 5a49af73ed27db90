import assert from 'node:assert/strict'
import { once } from 'node:events'
import { after, before, test } from 'node:test'
import { createStore } from '../../src/store/index.js'
import type { WorkerAgent } from '../../src/worker/agent.js'
import { waitFor } from '../helpers/fabric.js'
import { admin, echoWorker, STATIC_KEY, startWiredServer, type WiredServer } from '../helpers/servers.js'

let server: WiredServer
const agents: WorkerAgent[] = []

before(async () => {
  server = await startWiredServer()
})
after(async () => {
  await Promise.allSettled(agents.map((a) => a.stop()))
  await server.close()
})

function workerWith(token: string, clientId: string, model: string): WorkerAgent {
  const agent = echoWorker(server, clientId, { token, models: [model], reconnectMaxMs: 200 })
  agents.push(agent)
  agent.start()
  return agent
}

async function chat(model: string): Promise<number> {
  const res = await fetch(`${server.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${STATIC_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
  })
  await res.arrayBuffer()
  return res.status
}

test('a worker whose token is revoked is disconnected within a second, serves nothing more and stops retrying', async () => {
  const created = await admin(server, 'POST', '/api/v1/keys', { kind: 'worker', user: 'dana' })
  const other = await admin(server, 'POST', '/api/v1/keys', { kind: 'worker', user: 'dana' })
  const revokedAgent = workerWith(created.body['key'] as string, 'dana-1', 'doomed')
  const keptAgent = workerWith(other.body['key'] as string, 'dana-2', 'kept')
  await revokedAgent.ready(AbortSignal.timeout(10_000))
  await keptAgent.ready(AbortSignal.timeout(10_000))
  await waitFor(() => server.server.registry.byClientId('dana-1')?.routable === true, 10_000, 'routable')
  assert.equal(await chat('doomed'), 200)

  const revokedEvent = once(revokedAgent, 'revoked')
  const t0 = Date.now()
  const revoked = await admin(server, 'DELETE', `/api/v1/keys/${created.body['id'] as string}`)
  assert.equal(revoked.status, 200)
  await waitFor(() => server.server.registry.byClientId('dana-1') === undefined, 1_000, 'session closed')
  const [reason] = (await revokedEvent) as [string]
  assert.ok(Date.now() - t0 < 1_000, `disconnected after ${Date.now() - t0} ms`)
  assert.match(reason, /revoked/)
  assert.equal(await chat('doomed'), 404)
  // It does not come back: a retry with the revoked token would be refused (a 'refused' event)
  // within the 200 ms backoff cap; a window of five of those sees none.
  await waitFor(() => !revokedAgent.connected, 1_000, 'agent disconnected')
  let retries = 0
  revokedAgent.on('refused', () => retries++)
  revokedAgent.on('ready', () => retries++)
  await new Promise((r) => setTimeout(r, 1_000))
  assert.equal(retries, 0, 'the agent tried again with a revoked token')
  assert.equal(server.server.registry.byClientId('dana-1'), undefined)
  // The same user's other token is untouched.
  assert.equal(await chat('kept'), 200)
  assert.match(server.logs(), /its token was revoked/)
})

test('a revocation made elsewhere (the CLI, another server) reaches the live session through the database poll', async () => {
  const created = await admin(server, 'POST', '/api/v1/keys', { kind: 'worker', user: 'erin' })
  const agent = workerWith(created.body['key'] as string, 'erin-1', 'erin-model')
  await agent.ready(AbortSignal.timeout(10_000))
  const revokedEvent = once(agent, 'revoked')
  // Straight into the store, as `gpufabric keys revoke` on another machine would.
  assert.equal(server.server.registry.byClientId('erin-1')?.credential, created.body['prefix'])
  const t0 = Date.now()
  const direct = await createStore({ sqlitePath: `${server.dataDir}/gpufabric.db` })
  try {
    assert.equal(await direct.revokeKey(created.body['id'] as string), true)
  } finally {
    await direct.close()
  }
  await revokedEvent
  assert.ok(Date.now() - t0 < 2_000, `disconnected after ${Date.now() - t0} ms`)
  assert.equal(server.server.registry.byClientId('erin-1'), undefined)
})
