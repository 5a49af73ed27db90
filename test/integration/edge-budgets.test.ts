import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, connect as netConnect, type Socket } from 'node:net'
import { after, test } from 'node:test'
import { type TLSSocket, connect as tlsConnect } from 'node:tls'
import { type Agent, fetch as undiciFetch } from 'undici'
import { LIMITS } from '../../src/config/defaults.js'
import { ErrorCodes } from '../../src/errors/index.js'
import { encodeFrame, FrameDecoder } from '../../src/protocol/frame.js'
import { decodeMessage, encodeMessage, MessageType } from '../../src/protocol/index.js'
import { addressKey } from '../../src/server/connections.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { API_KEY, agentFrom, startFabric, type TestFabric, waitFor } from '../helpers/fabric.js'

const fabrics: TestFabric[] = []
after(async () => {
  await Promise.allSettled(fabrics.map((f) => f.close()))
})

async function fabricWith(...args: Parameters<typeof startFabric>): Promise<TestFabric> {
  const f = await startFabric(...args)
  fabrics.push(f)
  return f
}

/** A fetch from another loopback address than the flood's. */
const elsewhere = agentFrom('127.0.0.2')
after(() => elsewhere.close())

async function chat(fabric: TestFabric, key = API_KEY, dispatcher: Agent = elsewhere): Promise<number> {
  const res = await undiciFetch(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'hi' }] }),
    dispatcher,
  })
  await res.arrayBuffer()
  return res.status
}

/** Resolves when `socket` emits `event` or closes (never rejects: errors are expected here). */
function settled(socket: Socket, event: string): Promise<void> {
  return new Promise((resolve) => {
    socket.once(event, () => resolve())
    socket.once('close', () => resolve())
  })
}

/** A raw, half-open-capable HTTP connection and the text it has received so far. */
async function rawHttp(port: number): Promise<{ socket: Socket; answer(): string }> {
  const socket = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true })
  socket.on('error', () => {})
  let answer = ''
  socket.setEncoding('latin1')
  socket.on('data', (d: string) => {
    answer += d
  })
  await once(socket, 'connect')
  return { socket, answer: () => answer }
}

/** The bytes of a real TLS 1.3 ClientHello, captured from a client talking to a listener that never answers. */
async function clientHello(): Promise<Buffer> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const captured = new Promise<Buffer>((resolve) =>
    server.once('connection', (c) => c.once('data', (d: Buffer) => resolve(d))),
  )
  const client = tlsConnect({
    host: '127.0.0.1',
    port: (server.address() as { port: number }).port,
    rejectUnauthorized: false,
  })
  client.on('error', () => {})
  const hello = await captured
  client.destroy()
  server.close()
  assert.equal(hello[0], 0x16, 'a TLS handshake record')
  return hello
}

/** Opens `n` TCP connections from 127.0.0.1 that send nothing; resolves once each is accepted or refused. */
async function silentFlood(port: number, n: number, tls: boolean): Promise<Socket[]> {
  const sockets: Socket[] = []
  const opened: Promise<unknown>[] = []
  for (let i = 0; i < n; i++) {
    const s: Socket | TLSSocket = tls
      ? tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['h2'] })
      : netConnect(port, '127.0.0.1')
    s.on('error', () => {})
    sockets.push(s)
    opened.push(settled(s, tls ? 'secureConnect' : 'connect'))
  }
  await Promise.all(opened)
  return sockets
}

test('address keys: IPv4 as is, IPv4-mapped as IPv4, IPv6 by /64', () => {
  assert.equal(addressKey('10.1.2.3'), '10.1.2.3')
  assert.equal(addressKey('::ffff:10.1.2.3'), '10.1.2.3')
  assert.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64')
  assert.equal(addressKey('2001:db8:1:2:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64')
  assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64')
  assert.equal(addressKey('::1'), '0:0:0:0::/64')
  assert.notEqual(addressKey('2001:db8:1:3::1'), addressKey('2001:db8:1:2::1'))
})

test('1,100 silent TLS connections from one address on the control and proxy ports do not keep a worker from another address out', async () => {
  const fabric = await fabricWith()
  const { control, proxy } = fabric.server.ports
  // Silent: TCP only (the TLS handshake never starts) and TLS handshakes that stop after ClientHello.
  const flood = [
    ...(await silentFlood(control, 550, false)),
    ...(await silentFlood(proxy, 550, false)),
    ...(await silentFlood(control, 550, true)),
    ...(await silentFlood(proxy, 550, true)),
  ]
  try {
    const stats = fabric.server.edgeStats() as {
      connections: Record<string, { pending: number; refused: { pendingAddress: number } }>
    }
    assert.ok(stats.connections['control']!.pending <= LIMITS.maxPendingPerAddress)
    assert.ok(stats.connections['control']!.refused.pendingAddress > 1_000)
    assert.ok(stats.connections['proxy']!.refused.pendingAddress > 1_000)
    const t0 = Date.now()
    await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'joins-during-flood', {
      localAddress: '127.0.0.2',
    })
    const joinedMs = Date.now() - t0
    assert.ok(joinedMs < 5_000, `worker joined after ${joinedMs} ms`)
    assert.equal(await chat(fabric), 200)
  } finally {
    for (const s of flood) s.destroy()
  }
})

test('a TLS handshake that stops after the ClientHello is cut after the handshake timeout', async () => {
  const fabric = await fabricWith({ edge: { tlsHandshakeMs: 300 } })
  const s = netConnect(fabric.server.ports.control, '127.0.0.1')
  s.on('error', () => {})
  await once(s, 'connect')
  // A real ClientHello, then silence: a TLS client that never finishes.
  s.write(await clientHello())
  s.resume()
  const t0 = Date.now()
  await settled(s, 'close')
  const ms = Date.now() - t0
  assert.ok(ms >= 250 && ms < 5_000, `closed after ${ms} ms`)
})

test('pre-login frames are limited to a login; 300 connections announcing big frames cost little memory', async () => {
  const fabric = await fabricWith({ edge: { maxPendingPerAddress: 400 } })
  const port = fabric.server.ports.control
  // A frame just over the login limit is refused at its header.
  const big = Buffer.alloc(6)
  big.writeUInt32BE(LIMITS.maxLoginFrameBytes, 0)
  big[4] = 1
  big[5] = MessageType.Login
  const one = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false })
  one.on('error', () => {})
  await once(one, 'secureConnect')
  one.write(big)
  await once(one, 'close')

  global.gc?.()
  const before = process.memoryUsage().rss
  const conns: TLSSocket[] = []
  const opened: Promise<unknown>[] = []
  // Each announces a 1 MiB login and sends 12 KiB of it (all a stranger may make us hold).
  const frame = encodeFrame(MessageType.Login, Buffer.alloc(LIMITS.maxControlFrameBytes - 16, 0x61))
  for (let i = 0; i < 300; i++) {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false })
    s.on('error', () => {})
    conns.push(s)
    opened.push(
      Promise.race([
        once(s, 'close'),
        once(s, 'secureConnect').then(() => s.write(frame.subarray(0, 12_288))),
      ]),
    )
  }
  await Promise.all(opened)
  // Every one of them is refused as soon as its frame header arrives.
  await waitFor(() => conns.every((s) => s.destroyed), 10_000, 'oversized logins refused')
  const grown = (process.memoryUsage().rss - before) / 1024 / 1024
  // The test process holds the clients too: the server's share is well under this.
  assert.ok(grown < 50, `RSS grew by ${grown.toFixed(1)} MiB`)
})

test('wrong API keys from one address get 429 with retry-after; a valid key from another address is served throughout', async () => {
  const fabric = await fabricWith()
  await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'w')
  const local = agentFrom('127.0.0.1', { connections: 16 })
  try {
    const statuses = new Map<number, number>()
    let retryAfter: string | null = null
    for (let i = 0; i < 3_000; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: 50 }, async (_, j) => {
          const res = await undiciFetch(`${fabric.baseUrl}/v1/models`, {
            headers: { authorization: `Bearer gpuf_wrong${i + j}` },
            dispatcher: local,
          })
          await res.arrayBuffer()
          if (res.status === 429) retryAfter = res.headers.get('retry-after')
          return res.status
        }),
      )
      for (const s of batch) statuses.set(s, (statuses.get(s) ?? 0) + 1)
      if (i % 500 === 0) assert.equal(await chat(fabric), 200, `valid key refused after ${i} wrong ones`)
    }
    assert.ok((statuses.get(429) ?? 0) > 2_500, `statuses: ${JSON.stringify([...statuses])}`)
    assert.ok((statuses.get(401) ?? 0) <= LIMITS.maxAuthFailures + 1)
    assert.ok(Number(retryAfter) > 0)
    // The throttled address is refused even with a valid key; another address is not.
    const sameAddress = await undiciFetch(`${fabric.baseUrl}/v1/models`, {
      headers: { authorization: `Bearer ${API_KEY}` },
      dispatcher: local,
    })
    assert.equal(sameAddress.status, 429)
    assert.equal(await chat(fabric), 200)
    // The management API is throttled for that address too, and counts what happened.
    const api = await undiciFetch(`${fabric.apiUrl}/api/v1/stats`, {
      headers: { authorization: `Bearer ${API_KEY}` },
      dispatcher: elsewhere,
    })
    const stats = (await api.json()) as { authFailures: { failures: number; throttled: number } }
    assert.ok(stats.authFailures.failures > LIMITS.maxAuthFailures)
    assert.ok(stats.authFailures.throttled > 2_500)
  } finally {
    await local.close()
  }
})

test('a 401 on an upload is answered and the connection closed without reading the body', async () => {
  const fabric = await fabricWith()
  const { socket, answer } = await rawHttp(fabric.server.ports.public)
  socket.write(
    'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer wrong\r\ncontent-length: 500000000\r\n\r\n',
  )
  let sent = 0
  const chunk = Buffer.alloc(64 * 1024)
  const pump = () => {
    while (!socket.destroyed && sent < 500_000_000) {
      sent += chunk.length
      if (!socket.write(chunk)) {
        socket.once('drain', pump)
        return
      }
    }
  }
  pump()
  const t0 = Date.now()
  await settled(socket, 'close')
  assert.match(answer(), /^HTTP\/1\.1 401 /)
  assert.match(answer(), /connection: close/i)
  assert.ok(Date.now() - t0 < 5_000, 'connection closed promptly')
  assert.ok(sent < 100_000_000, `the server read ${sent} bytes of a refused body`)
})

test('an oversized body gets its 413 before the connection closes, on both HTTP ports', async () => {
  const fabric = await fabricWith({ maxBodyBytes: 1024 })
  for (const [port, path] of [
    [fabric.server.ports.public, '/v1/chat/completions'],
    [fabric.server.ports.api, '/api/v1/keys'],
  ] as const) {
    const { socket, answer } = await rawHttp(port)
    socket.write(
      `POST ${path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${API_KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n`,
    )
    const piece = Buffer.alloc(32 * 1024, 0x20)
    for (let i = 0; i < 8 && !socket.destroyed; i++) {
      socket.write(`${piece.length.toString(16)}\r\n`)
      socket.write(piece)
      socket.write('\r\n')
    }
    // The server ends the connection after its answer (our side is half-open: 'end' is its FIN).
    await settled(socket, 'end')
    socket.destroy()
    assert.match(answer(), /^HTTP\/1\.1 413 /, `port ${port}`)
  }
})

test('edge limits can be overridden by name, and unknown names are refused', async () => {
  const { applyEdgeOverrides, defaultEdgeLimits } = await import('../../src/config/defaults.js')
  const edge = applyEdgeOverrides(defaultEdgeLimits(), [
    'maxPendingPerAddress=3',
    'maxConnectionsPerAddress.public=7',
  ])
  assert.equal(edge.maxPendingPerAddress, 3)
  assert.equal(edge.maxConnectionsPerAddress.public, 7)
  assert.equal(edge.maxConnectionsPerAddress.api, LIMITS.maxConnectionsPerAddress.api)
  assert.throws(() => applyEdgeOverrides(defaultEdgeLimits(), ['maxPendingPerAdress=3']), /known limits/)
  assert.throws(() => applyEdgeOverrides(defaultEdgeLimits(), ['maxPendingPerAddress=0']), /positive/)

  const fabric = await fabricWith({ edge })
  const held: Socket[] = []
  for (let i = 0; i < 10; i++) {
    const s = netConnect(fabric.server.ports.public, '127.0.0.1')
    s.on('error', () => {})
    held.push(s)
    await once(s, 'connect')
  }
  try {
    // Seven are kept; the others are closed by the server at once.
    await waitFor(() => held.filter((s) => s.destroyed).length === 3, 5_000, 'three refused')
    assert.equal(await chat(fabric), 503)
  } finally {
    for (const s of held) s.destroy()
  }
})

test('wrong worker tokens from one address get delayed, throttled LoginErrors; a worker from another address logs in', async () => {
  const fabric = await fabricWith({ edge: { loginRefusalDelayMs: 20 } })
  const port = fabric.server.ports.control
  /** One login attempt with a wrong token from 127.0.0.1: resolves with the LoginError. */
  const attempt = async (i: number) => {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false })
    s.on('error', () => {})
    await settled(s, 'secureConnect')
    if (s.destroyed) return undefined
    s.write(
      encodeMessage(MessageType.Login, {
        clientId: `guess-${i % 7}`,
        token: `wrong-${i}`,
        agentVersion: 't',
        engineType: 'echo',
        models: [],
      }),
    )
    const decoder = new FrameDecoder(LIMITS.maxControlFrameBytes)
    const frames: { code: string; retryAfterMs?: number }[] = []
    s.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        const m = decodeMessage(frame)
        if (m.type === MessageType.LoginError) frames.push(m.body)
      }
    })
    if (!s.destroyed) await settled(s, 'close')
    return frames[0]
  }
  const codes = new Map<string, number>()
  let retryAfterMs = 0
  // Ten at a time: within the pending budget of one address, so each attempt reaches a login.
  for (let i = 0; i < 3_000; i += 10) {
    const answers = await Promise.all(Array.from({ length: 10 }, (_, j) => attempt(i + j)))
    for (const a of answers) {
      codes.set(a?.code ?? 'none', (codes.get(a?.code ?? 'none') ?? 0) + 1)
      retryAfterMs = Math.max(retryAfterMs, a?.retryAfterMs ?? 0)
    }
    if (i === 1_000) {
      await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'honest', { localAddress: '127.0.0.2' })
    }
  }
  assert.ok((codes.get(ErrorCodes.AUTH_THROTTLED) ?? 0) > 2_500, JSON.stringify([...codes]))
  assert.ok(retryAfterMs > 0)
  assert.equal(await chat(fabric), 200)
})
