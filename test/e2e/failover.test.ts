import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { type FakeEngine, startFakeEngine } from '../helpers/fake-engine.js'
import { type CliProcess, freePorts, startCli } from '../helpers/processes.js'

const KEY = 'failover-key-123456'
const TOKEN = 'failover-token-123456'
let dir: string
let ports: number[]
let engines: FakeEngine[]
let server: CliProcess
const workers: CliProcess[] = []

function startServer(): CliProcess {
  const [control, proxy, pub, api] = ports
  return startCli([
    'server',
    '--host',
    '127.0.0.1',
    '--control-port',
    String(control),
    '--proxy-port',
    String(proxy),
    '--public-port',
    String(pub),
    '--api-port',
    String(api),
    '--data-dir',
    join(dir, 'server'),
    '--api-key',
    KEY,
    '--admin-key',
    KEY,
    '--worker-token',
    TOKEN,
    '--ping-interval-ms',
    '500',
    '--ping-deadline-ms',
    '2000',
    '--log-level',
    'warn',
  ])
}

function startWorker(clientId: string, enginePort: number): CliProcess {
  const w = startCli([
    'worker',
    '--server-addr',
    '127.0.0.1',
    '--control-port',
    String(ports[0]),
    '--proxy-port',
    String(ports[1]),
    '--client-id',
    clientId,
    '--token',
    TOKEN,
    '--engine-type',
    'openai',
    '--local-port',
    String(enginePort),
    '--cert-chain-path',
    join(dir, 'server', 'cert.pem'),
    '--data-dir',
    join(dir, clientId),
    '--log-level',
    'info',
  ])
  workers.push(w)
  return w
}

async function listWorkers(): Promise<{ clientId: string; dataLinks: number }[]> {
  try {
    const res = await fetch(`http://127.0.0.1:${ports[3]}/api/v1/workers`, {
      headers: { authorization: `Bearer ${KEY}` },
    })
    return ((await res.json()) as { workers: { clientId: string; dataLinks: number }[] }).workers
  } catch {
    return []
  }
}

async function waitForWorkers(ids: string[], timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const listed = await listWorkers()
    if (ids.every((id) => listed.some((w) => w.clientId === id && w.dataLinks > 0))) return
    if (Date.now() > deadline)
      throw new Error(`workers ${ids.join(',')} not ready: ${JSON.stringify(listed)}`)
    await sleep(50)
  }
}

async function chat(model: string): Promise<number> {
  try {
    const res = await fetch(`http://127.0.0.1:${ports[2]}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
    })
    const body = (await res.json()) as { choices?: { message: { content: string } }[] }
    return res.status === 200 && body.choices?.[0]?.message.content.startsWith('from ') ? 200 : res.status
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause
    lastFailure = cause?.code ?? cause?.message ?? String(err)
    return 0
  }
}

/** Why the last failed request failed (for the assertion messages). */
let lastFailure = ''

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gpuf-failover-'))
  ports = await freePorts(4)
  engines = await Promise.all([
    startFakeEngine({ models: ['shared'], name: 'one' }),
    startFakeEngine({ models: ['shared'], name: 'two' }),
    startFakeEngine({ models: ['frozen'], name: 'three' }),
  ])
  server = startServer()
  await server.waitForOutput('gpufabric server ready')
  startWorker('w1', engines[0]!.port)
  startWorker('w2', engines[1]!.port)
  await waitForWorkers(['w1', 'w2'])
})

after(async () => {
  for (const w of workers) await w.kill('SIGKILL')
  await server.kill('SIGKILL')
  await Promise.all(engines.map((e) => e.close()))
  await rm(dir, { recursive: true, force: true })
})

test('killing one of two workers under load leaves the other serving', async () => {
  const results: { at: number; status: number }[] = []
  let killedAt = Number.POSITIVE_INFINITY
  // Load runs until 100 requests were sent after the kill (or 10 s passed): counted in
  // requests, not a fixed window a slow machine could fill with only a few.
  const sentAfterKill = () => results.filter((r) => r.at > killedAt).length
  const loops = Array.from({ length: 4 }, async () => {
    while (sentAfterKill() < 100 && Date.now() < killedAt + 10_000) {
      const at = Date.now()
      results.push({ at, status: await chat('shared') })
    }
  })
  // Under load before the kill: both workers have served.
  const deadline = Date.now() + 10_000
  while (results.length < 20 && Date.now() < deadline) await sleep(20)
  // A process does not die the instant it is signalled: count from when it has exited.
  await workers[0]!.kill('SIGKILL')
  killedAt = Date.now()
  await Promise.all(loops)

  const afterKill = results.filter((r) => r.at > killedAt)
  assert.ok(afterKill.length > 20, `only ${afterKill.length} requests after the kill`)
  // Requests sent after the worker died all succeed: ones that reached the dead worker before
  // its first byte are retried on the other. Only a request whose answer was already under way
  // when the process died may fail (at most one per concurrent loop).
  const failedAfterKill = afterKill.filter((r) => r.status !== 200)
  assert.equal(
    failedAfterKill.length,
    0,
    `${failedAfterKill.length} failed after the kill (${lastFailure}); server exit ${server.child.exitCode}; output:\n${server.output()}`,
  )
  const inFlightFailures = results.filter((r) => r.status !== 200)
  assert.ok(inFlightFailures.length <= 4, `${inFlightFailures.length} failures`)
  assert.ok(engines[1]!.requests.length > 0)
  const listed = await listWorkers()
  assert.deepEqual(
    listed.map((w) => w.clientId),
    ['w2'],
  )
})

test('a restarted server is rejoined by its workers without intervention', async () => {
  await server.kill('SIGTERM')
  assert.equal(await chat('shared'), 0, 'server is down')
  server = startServer()
  await server.waitForOutput('gpufabric server ready')
  await waitForWorkers(['w2'], 20_000)
  assert.equal(await chat('shared'), 200)
})

test('a silent (frozen) worker is detected within a few seconds', async () => {
  const frozen = startWorker('w3', engines[2]!.port)
  await waitForWorkers(['w3'])
  frozen.child.kill('SIGSTOP')
  const t0 = Date.now()
  // Dropped after the 2 s ping deadline plus at most one 500 ms interval. 6 s leaves room for
  // a loaded machine and still fails if the server fell back to its default 6 s deadline.
  for (;;) {
    const listed = await listWorkers()
    if (!listed.some((w) => w.clientId === 'w3')) break
    assert.ok(Date.now() - t0 < 6_000, 'the frozen worker is still listed after 6 s')
    await sleep(100)
  }
  const detectedMs = Date.now() - t0
  assert.ok(detectedMs >= 1_000, `dropped after ${detectedMs} ms: only a silent peer should be dropped`)
  frozen.child.kill('SIGCONT')
  // Unfrozen, it notices its dead session and logs in again on its own.
  await waitForWorkers(['w3'], 20_000)
})
