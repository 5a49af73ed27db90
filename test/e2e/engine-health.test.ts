/**
 * Engine health on the worker: every model discovery (the worker's health check of its engine)
 * has a time limit. A worker beside an engine that accepts connections and never answers still
 * joins the fabric, with no models; it announces them once the engine answers, withdraws them
 * within seconds when the engine freezes, and stops on one SIGINT.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { createHttpEngine } from '../../src/worker/engines/http.js'
import { API_KEY, startFabric, type TestFabric, WORKER_TOKEN, waitFor } from '../helpers/fabric.js'
import { freePorts } from '../helpers/processes.js'

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url))

/** An OpenAI-compatible engine that answers, or accepts and never answers (`hang`). */
class FlakyEngine {
  mode: 'hang' | 'serve' = 'hang'
  readonly held = new Set<ServerResponse>()
  readonly server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    if (this.mode === 'hang') {
      this.held.add(res)
      res.once('close', () => this.held.delete(res))
      return
    }
    if (req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'flaky-model', object: 'model' }] }))
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(
      JSON.stringify({
        id: 'x',
        object: 'chat.completion',
        choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
      }),
    )
  })

  async listen(): Promise<number> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    return (this.server.address() as AddressInfo).port
  }

  async close(): Promise<void> {
    for (const res of this.held) res.destroy()
    this.server.closeAllConnections()
    await new Promise((resolve) => this.server.close(resolve))
  }
}

let engine: FlakyEngine
let port: number
let fabric: TestFabric
let dir: string

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'gpuf-engine-health-'))
  engine = new FlakyEngine()
  port = await engine.listen()
  fabric = await startFabric()
})

after(async () => {
  await fabric?.close()
  await engine?.close()
  rmSync(dir, { recursive: true, force: true })
})

test('a hung engine: the worker joins within 5 s with no models, announces them when it answers, withdraws them when it freezes', async () => {
  engine.mode = 'hang'
  const started = Date.now()
  const agent = await fabric.addWorker(
    createHttpEngine({ type: 'openai', baseUrl: `http://127.0.0.1:${port}` }),
    'hung-engine-worker',
    { engineProbeMs: 500, modelRefreshMs: 300 },
  )
  const joinedMs = Date.now() - started
  assert.ok(joinedMs < 5_000, `joined after ${joinedMs} ms`)
  const session = fabric.server.registry.byClientId('hung-engine-worker')!
  assert.deepEqual(session.models, [])
  // Nothing routable: a request for the engine's model is refused at once, not held.
  const refused = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'flaky-model', messages: [] }),
  })
  assert.equal(refused.status, 404)
  await refused.arrayBuffer()

  engine.mode = 'serve'
  await waitFor(
    () => session.models.includes('flaky-model'),
    5_000,
    'models announced once the engine answers',
  )
  const served = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'flaky-model', messages: [] }),
  })
  assert.equal(served.status, 200)
  await served.arrayBuffer()

  engine.mode = 'hang'
  const frozeAt = Date.now()
  await waitFor(() => session.models.length === 0, 5_000, 'models withdrawn from a frozen engine')
  assert.ok(Date.now() - frozeAt < 3_000, `withdrawn after ${Date.now() - frozeAt} ms`)

  // Stopping does not wait for the engine.
  const stopping = Date.now()
  await agent.stop()
  assert.ok(Date.now() - stopping < 2_000, `stopped after ${Date.now() - stopping} ms`)
})

test('the worker command beside a hung engine logs it, joins, and stops on one SIGINT', async () => {
  engine.mode = 'hang'
  const [control] = await freePorts(1)
  const child = spawn(
    process.execPath,
    [
      CLI,
      'worker',
      '--engine-type',
      'openai',
      '--local-port',
      String(port),
      '--server-addr',
      '127.0.0.1',
      // Nothing listens there: the worker keeps retrying the server meanwhile.
      '--control-port',
      String(control),
      '--token',
      WORKER_TOKEN,
      '--data-dir',
      join(dir, 'worker'),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let output = ''
  child.stdout.on('data', (c: Buffer) => {
    output += c
  })
  child.stderr.on('data', (c: Buffer) => {
    output += c
  })
  const exited = once(child, 'exit')
  try {
    const deadline = Date.now() + 10_000
    while (!output.includes('engine unavailable') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50))
    assert.match(output, /engine unavailable/)
    // It got past the engine: it is dialling the server.
    const dialDeadline = Date.now() + 5_000
    while (!output.includes('connection to server failed') && Date.now() < dialDeadline)
      await new Promise((r) => setTimeout(r, 50))
    assert.match(output, /connection to server failed/)
    child.kill('SIGINT')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
    const [code, signal] = await exited
    clearTimeout(timer)
    assert.equal(signal, null, `killed: one SIGINT did not stop it\n${output}`)
    assert.equal(code, 0)
  } finally {
    child.kill('SIGKILL')
  }
})
