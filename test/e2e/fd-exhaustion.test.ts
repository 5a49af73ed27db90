import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { fetch as undiciFetch } from 'undici'
import { LIMITS } from '../../src/config/defaults.js'
import { WorkerAgent } from '../../src/worker/agent.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { agentFrom } from '../helpers/fabric.js'
import { type CliProcess, freePorts, startCli } from '../helpers/processes.js'

const KEY = 'fd-test-api-key-0123456789'
const ADMIN = 'fd-test-admin-key-0123456789'
const TOKEN = 'fd-test-worker-token-0123456789'

let server: CliProcess | undefined
const held: Socket[] = []
after(async () => {
  for (const s of held) s.destroy()
  await server?.kill()
})

/** Opens one connection from 127.0.0.1; resolves when it is up or refused (never rejects). */
function open(port: number): Promise<Socket> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.on('error', () => {})
    s.once('connect', () => resolve(s))
    s.once('close', () => resolve(s))
  })
}

test('a server limited to 4,096 descriptors: one address holding 6,000 idle connections locks out neither users, the API nor workers', async () => {
  const [control, proxy, pub, api] = (await freePorts(4)) as [number, number, number, number]
  const dataDir = mkdtempSync(join(tmpdir(), 'gpuf-fd-'))
  server = startCli(
    [
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
      dataDir,
      '--api-key',
      KEY,
      '--admin-key',
      ADMIN,
      '--worker-token',
      TOKEN,
      '--log-level',
      'warn',
    ],
    { fdLimit: 4096 },
  )
  await server.waitForOutput('gpufabric server ready', 30_000)

  for (let i = 0; i < 6_000; i += 500) {
    held.push(...(await Promise.all(Array.from({ length: 500 }, () => open(pub)))))
  }
  // The server keeps its per-address share and closes the rest at once.
  const open_ = () => held.filter((s) => !s.destroyed && s.readyState === 'open').length
  const deadline = Date.now() + 10_000
  while (open_() > LIMITS.maxConnectionsPerAddress.public && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50))
  }
  assert.ok(open_() <= LIMITS.maxConnectionsPerAddress.public, `${open_()} connections held`)

  const user = agentFrom('127.0.0.2')
  try {
    const models = await undiciFetch(`http://127.0.0.1:${pub}/v1/models`, {
      headers: { authorization: `Bearer ${KEY}` },
      dispatcher: user,
    })
    assert.equal(models.status, 200)
    const workers = await undiciFetch(`http://127.0.0.1:${api}/api/v1/stats`, {
      headers: { authorization: `Bearer ${ADMIN}` },
      dispatcher: user,
    })
    assert.equal(workers.status, 200)
    const stats = (await workers.json()) as { connections: { public: { refused: { address: number } } } }
    assert.ok(stats.connections.public.refused.address > 5_000)

    const agent = new WorkerAgent({
      serverHost: '127.0.0.1',
      controlPort: control,
      proxyPort: proxy,
      clientId: 'fd-worker',
      token: TOKEN,
      trust: { ca: readFileSync(join(dataDir, 'cert.pem'), 'utf8') },
      engine: createEchoEngine({ models: ['echo'] }),
      localAddress: '127.0.0.3',
    })
    agent.start()
    try {
      await agent.ready(AbortSignal.timeout(10_000))
      const chat = await undiciFetch(`http://127.0.0.1:${pub}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'through' }] }),
        dispatcher: user,
      })
      assert.equal(chat.status, 200)
    } finally {
      await agent.stop()
    }
  } finally {
    await user.close()
  }
})
