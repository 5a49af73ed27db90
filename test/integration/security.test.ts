import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect as netConnect } from 'node:net'
import { after, before, test } from 'node:test'
import { connect as tlsConnect } from 'node:tls'
import { createLogger } from '../../src/observability/logger.js'
import { encodeMessage, MessageType } from '../../src/protocol/index.js'
import { connectTls, createSelfSignedCertificate } from '../../src/tls/index.js'
import { WorkerAgent } from '../../src/worker/agent.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { API_KEY, startFabric, type TestFabric, waitFor } from '../helpers/fabric.js'

let fabric: TestFabric

before(async () => {
  fabric = await startFabric()
  await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'honest-worker')
})
after(() => fabric.close())

async function stillServing(): Promise<void> {
  const res = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'still there?' }] }),
  })
  assert.equal(res.status, 200)
  assert.equal(fabric.server.registry.byClientId('honest-worker')?.routable, true)
}

function handshake(port: number, version: 'TLSv1.2' | 'any', alpn?: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      minVersion: 'TLSv1.2',
      maxVersion: version === 'any' ? 'TLSv1.3' : version,
      rejectUnauthorized: false,
      ...(alpn === undefined ? {} : { ALPNProtocols: alpn }),
    })
    socket.once('secureConnect', () => {
      const protocol = socket.getProtocol() ?? ''
      socket.destroy()
      resolve(protocol)
    })
    socket.once('error', reject)
  })
}

/** Opens a verified TLS connection, sends bytes, resolves when the server closes it. */
async function sendAndAwaitClose(port: number, bytes: Buffer, alpn?: string[]): Promise<number> {
  const socket = await connectTls({
    host: '127.0.0.1',
    port,
    trust: { ca: fabric.cert.cert },
    timeoutMs: 2_000,
    ...(alpn === undefined ? {} : { alpn }),
  })
  socket.on('error', () => {})
  socket.resume()
  const t0 = Date.now()
  socket.write(bytes)
  await Promise.race([
    once(socket, 'close'),
    new Promise((_, reject) => setTimeout(() => reject(new Error('server kept the connection open')), 3_000)),
  ])
  return Date.now() - t0
}

test('control and proxy ports speak TLS 1.3 and refuse TLS 1.2', async () => {
  const { control, proxy } = fabric.server.ports
  // A client that offers 1.2 and 1.3 gets 1.3; one that offers only 1.2 is refused.
  assert.equal(await handshake(control, 'any'), 'TLSv1.3')
  assert.equal(await handshake(proxy, 'any', ['h2']), 'TLSv1.3')
  await assert.rejects(handshake(control, 'TLSv1.2'))
  await assert.rejects(handshake(proxy, 'TLSv1.2', ['h2']))
})

test('a worker refuses a server certificate it cannot verify', async () => {
  const port = fabric.server.ports.control
  const other = await createSelfSignedCertificate()
  await assert.rejects(
    connectTls({ host: '127.0.0.1', port, trust: {}, timeoutMs: 2_000 }),
    /GPUF_CERTIFICATE|certificate/i,
  )
  await assert.rejects(
    connectTls({ host: '127.0.0.1', port, trust: { ca: other.cert }, timeoutMs: 2_000 }),
    /certificate/i,
  )
  await assert.rejects(
    connectTls({
      host: '127.0.0.1',
      port,
      trust: { fingerprints: [other.fingerprint256] },
      timeoutMs: 2_000,
    }),
    /pinned fingerprint/,
  )
  const pinned = await connectTls({
    host: '127.0.0.1',
    port,
    trust: { fingerprints: [fabric.cert.fingerprint256.toLowerCase()] },
    timeoutMs: 2_000,
  })
  pinned.destroy()

  const agent = new WorkerAgent({
    serverHost: '127.0.0.1',
    controlPort: port,
    proxyPort: fabric.server.ports.proxy,
    clientId: 'untrusting',
    token: 'irrelevant',
    trust: { ca: other.cert },
    engine: createEchoEngine(),
    reconnectBaseMs: 50,
    logger: createLogger({
      level: 'warn',
      destination: {
        write(line: string) {
          if (line.includes('GPUF_CERTIFICATE')) refusals++
        },
      },
    }),
  })
  let refusals = 0
  agent.start()
  // Not a fixed sleep: the agent must actually have dialled, and refused the certificate, twice.
  await waitFor(() => refusals >= 2, 10_000, 'two refused dials')
  assert.equal(agent.connected, false)
  assert.equal(fabric.server.registry.byClientId('untrusting'), undefined)
  await agent.stop()
})

test('garbage and oversized frames close that connection and nothing else', async () => {
  const { control, proxy } = fabric.server.ports
  await sendAndAwaitClose(control, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
  await stillServing()
  const oversized = Buffer.alloc(6)
  oversized.writeUInt32BE(0x7fff_fff0, 0)
  oversized[4] = 1
  oversized[5] = MessageType.Login
  await sendAndAwaitClose(control, oversized)
  await stillServing()
  const wrongVersion = encodeMessage(MessageType.Ping, { t: 1 })
  wrongVersion[4] = 99
  await sendAndAwaitClose(control, wrongVersion)
  const invalidLogin = encodeMessage(MessageType.Ping, { t: 1 })
  invalidLogin[5] = MessageType.Login
  await sendAndAwaitClose(control, invalidLogin)
  await sendAndAwaitClose(proxy, Buffer.from('\x00\x01garbage that is not HTTP/2 at all'.repeat(20)), ['h2'])
  await stillServing()

  // Not even TLS: plain bytes on either port.
  for (const port of [control, proxy]) {
    const raw = netConnect(port, '127.0.0.1')
    raw.on('error', () => {})
    raw.resume()
    raw.write(Buffer.alloc(512, 0x16))
    await once(raw, 'close')
  }
  await stillServing()
})

test('a wrong worker credential is refused', async () => {
  const agent = new WorkerAgent({
    serverHost: '127.0.0.1',
    controlPort: fabric.server.ports.control,
    proxyPort: fabric.server.ports.proxy,
    clientId: 'intruder',
    token: 'not-the-token',
    trust: { ca: fabric.cert.cert },
    engine: createEchoEngine({ models: ['stolen'] }),
    reconnectBaseMs: 50,
  })
  const refused = once(agent, 'refused')
  agent.start()
  const [reason] = (await refused) as [string]
  assert.match(reason, /invalid worker token/)
  assert.equal(fabric.server.registry.byClientId('intruder'), undefined)
  await agent.stop()
  // Nor can it take over a registered id.
  const impostor = new WorkerAgent({
    serverHost: '127.0.0.1',
    controlPort: fabric.server.ports.control,
    proxyPort: fabric.server.ports.proxy,
    clientId: 'honest-worker',
    token: 'not-the-token',
    trust: { ca: fabric.cert.cert },
    engine: createEchoEngine({ models: ['stolen'] }),
  })
  const refusedAgain = once(impostor, 'refused')
  impostor.start()
  await refusedAgain
  await impostor.stop()
  await stillServing()
})

test('a second login with the same client id evicts the first at once', async () => {
  const first = await fabric.addWorker(createEchoEngine({ models: ['dup'] }), 'duplicate-id')
  let evictedAt = 0
  first.once('evicted', () => {
    evictedAt = Date.now()
  })
  const evicted = once(first, 'evicted')
  const second = await fabric.addWorker(createEchoEngine({ models: ['dup2'] }), 'duplicate-id')
  const secondReadyAt = Date.now()
  await evicted
  // At once: the old session is told as the new one logs in, not after some timeout.
  assert.ok(evictedAt - secondReadyAt < 2_000, `evicted ${evictedAt - secondReadyAt} ms after the new login`)
  await waitFor(
    () =>
      fabric.server.registry.models().includes('dup2') && !fabric.server.registry.models().includes('dup'),
  )
  assert.equal(second.connected, true)
  await waitFor(() => !first.connected, 5_000, 'first session closed')
})

test('an evicted session going away does not mark its worker offline', async () => {
  const events: string[] = []
  const own = await startFabric({
    workerEvents: {
      online: (s) => events.push(`online ${s.clientId}`),
      offline: (s) => events.push(`offline ${s.clientId}`),
    },
  })
  try {
    const first = await own.addWorker(createEchoEngine({ models: ['m'] }), 'returning')
    await own.addWorker(createEchoEngine({ models: ['m'] }), 'returning')
    await waitFor(() => !first.connected, 2_000, 'first session closed')
    // Give the first session's close every chance to be (wrongly) reported.
    await new Promise((r) => setTimeout(r, 100))
    assert.deepEqual(events, ['online returning', 'online returning'])
  } finally {
    await own.close()
  }
  assert.equal(events.at(-1), 'offline returning', 'a real disconnect is still reported')
})
