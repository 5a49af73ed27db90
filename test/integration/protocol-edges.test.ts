import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type TLSSocket, connect as tlsConnect } from 'node:tls'
import { silentLogger } from '../../src/observability/logger.js'
import { encodeMessage, MessageType } from '../../src/protocol/index.js'
import { WorkerRegistry } from '../../src/routing/registry.js'
import { ConnectionBudget } from '../../src/server/connections.js'
import { DataPlaneServer } from '../../src/server/dataplane/index.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { startFabric, type TestFabric, testCertificate, WORKER_TOKEN, waitFor } from '../helpers/fabric.js'
import { ControlPeer, closedWithin, FakeDataLink } from '../helpers/fake-worker.js'

/**
 * Edges of the data-link handshake and of the control connection that the happy-path suites
 * never reach: links that present no valid token, the wrong ALPN or never bind; control peers
 * that do not log in first, log in twice, never log in, or stop reading.
 */

/** Generous: the event must come, but a loaded machine may take its time. */
const EVENTUALLY_MS = 15_000

let fabric: TestFabric
const events: string[] = []

before(async () => {
  fabric = await startFabric({
    workerEvents: {
      online: (s) => events.push(`online ${s.clientId}`),
      offline: (s) => events.push(`offline ${s.clientId}`),
    },
  })
  await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'bystander')
})
after(() => fabric.close())

const ports = () => fabric.server.ports
const ca = () => fabric.cert.cert

/** The real worker on the same server is untouched by whatever a test's peer did. */
function bystanderUnharmed(): void {
  const session = fabric.server.registry.byClientId('bystander')
  assert.equal(session?.routable, true)
  assert.equal(session.linkCount, 1)
}

/** A raw TLS connection (ALPN as given, none when undefined), recording what it receives. */
function rawTls(
  port: number,
  alpn: string[] | undefined,
): { socket: TLSSocket; received: () => number; handshake: Promise<'ok' | 'refused'> } {
  let bytes = 0
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: ca(),
    ...(alpn === undefined ? {} : { ALPNProtocols: alpn }),
  })
  socket.on('data', (chunk: Buffer) => {
    bytes += chunk.length
  })
  const handshake = new Promise<'ok' | 'refused'>((resolve) => {
    socket.once('secureConnect', () => resolve('ok'))
    socket.once('error', () => resolve('refused'))
    socket.once('close', () => resolve('refused'))
  })
  return { socket, received: () => bytes, handshake }
}

describe('data plane', () => {
  test('a data link presenting an unknown data token is dropped', async () => {
    const link = await FakeDataLink.open({
      port: ports().proxy,
      ca: ca(),
      dataToken: 'no-such-token-0123456789',
    })
    try {
      await closedWithin(link.socket, EVENTUALLY_MS, 'the server to drop the link')
      assert.equal(link.binds, 1, 'the server asked for the token, then dropped the link')
      assert.equal(link.lanes.length, 0, 'no lane was opened on it')
    } finally {
      link.destroy()
    }
    bystanderUnharmed()
  })

  test('a data link whose bind is answered 503 without a token is dropped', async () => {
    // As a real worker answers when it has no session (see worker/handler.ts).
    const link = await FakeDataLink.open({ port: ports().proxy, ca: ca(), dataToken: '', bindStatus: 503 })
    try {
      await closedWithin(link.socket, EVENTUALLY_MS, 'the server to drop the link')
      assert.equal(link.binds, 1)
    } finally {
      link.destroy()
    }
  })

  test("a data link presenting the token of a session that has gone is dropped (a live one's is kept)", async () => {
    const peer = await ControlPeer.connect({ port: ports().control, ca: ca() })
    const login = await peer.login('short-lived', WORKER_TOKEN, ['short'])
    // While the session lives, its token binds (the positive control for this test).
    const live = await FakeDataLink.open({ port: ports().proxy, ca: ca(), dataToken: login.dataToken })
    try {
      await waitFor(
        () => fabric.server.registry.byClientId('short-lived')?.linkCount === 1,
        EVENTUALLY_MS,
        'the live link to bind',
      )
      peer.destroy()
      await waitFor(
        () => fabric.server.registry.byClientId('short-lived') === undefined,
        EVENTUALLY_MS,
        'the session to go',
      )
      // Its links go with it...
      await closedWithin(live.socket, EVENTUALLY_MS, 'the session link to be dropped with its session')
      // ...and its token binds nothing any more.
      const stale = await FakeDataLink.open({ port: ports().proxy, ca: ca(), dataToken: login.dataToken })
      try {
        await closedWithin(stale.socket, EVENTUALLY_MS, 'the server to drop the stale link')
        assert.equal(stale.binds, 1)
      } finally {
        stale.destroy()
      }
    } finally {
      live.destroy()
      peer.destroy()
    }
  })

  for (const [name, alpn] of [
    ["ALPN 'http/1.1'", ['http/1.1']],
    ['no ALPN', undefined],
  ] as const) {
    test(`a TLS connection to the proxy port with ${name} is closed without HTTP/2`, async () => {
      const raw = rawTls(ports().proxy, alpn === undefined ? undefined : [...alpn])
      raw.socket.on('error', () => undefined)
      try {
        await raw.handshake
        await closedWithin(raw.socket, EVENTUALLY_MS, 'the server to close the connection')
        // With h2 the server speaks first (preface, SETTINGS, the bind request); here it said nothing.
        assert.equal(raw.received(), 0, 'the server sent no HTTP/2 bytes')
      } finally {
        raw.socket.destroy()
      }
      bystanderUnharmed()
    })
  }

  describe('bind timeout', () => {
    const BIND_TIMEOUT_MS = 300
    let dataplane: DataPlaneServer
    let port: number

    before(async () => {
      const cert = await testCertificate()
      dataplane = new DataPlaneServer({
        host: '127.0.0.1',
        port: 0,
        cert: cert.cert,
        key: cert.key,
        registry: new WorkerRegistry(),
        logger: silentLogger(),
        budget: new ConnectionBudget({
          maxConnections: 64,
          maxPerAddress: 64,
          maxPending: 16,
          maxPendingPerAddress: 16,
        }),
        bindTimeoutMs: BIND_TIMEOUT_MS,
      })
      port = await dataplane.start()
    })
    after(() => dataplane.stop())

    test('a link that speaks HTTP/2 but never answers the bind is closed after the bind timeout', async () => {
      const link = await FakeDataLink.open({ port, ca: ca(), dataToken: null })
      try {
        const took = await closedWithin(link.socket, EVENTUALLY_MS, 'the bind timeout to close the link')
        assert.equal(link.binds, 1, 'the bind request came and was left unanswered')
        // Measured from our end of the handshake, which completes before the server's: the
        // timer ran its full length.
        assert.ok(took >= BIND_TIMEOUT_MS - 20, `closed after ${took} ms, before the bind timeout`)
      } finally {
        link.destroy()
      }
    })

    test('a link that never says anything after TLS is closed after the bind timeout', async () => {
      const raw = rawTls(port, ['h2'])
      raw.socket.on('error', () => undefined)
      try {
        assert.equal(await raw.handshake, 'ok')
        const took = await closedWithin(raw.socket, EVENTUALLY_MS, 'the bind timeout to close the link')
        assert.ok(raw.received() > 0, 'the server did start HTTP/2 (and asked to bind)')
        assert.ok(took >= BIND_TIMEOUT_MS - 20, `closed after ${took} ms, before the bind timeout`)
      } finally {
        raw.socket.destroy()
      }
    })
  })
})

describe('control', () => {
  for (const [name, frame] of [
    ['Heartbeat', () => encodeMessage(MessageType.Heartbeat, { inflight: 0 })],
    ['ModelsUpdate', () => encodeMessage(MessageType.ModelsUpdate, { models: ['sneaky'] })],
    ['LoginOk', () => encodeMessage(MessageType.LoginOk, loginOkBody())],
    ['Close', () => encodeMessage(MessageType.Close, { code: 'X', message: 'bye' })],
  ] as const) {
    test(`a first message that is ${name}, not Login, closes the connection`, async () => {
      const peer = await ControlPeer.connect({ port: ports().control, ca: ca() })
      try {
        peer.socket.write(frame())
        await closedWithin(peer.socket, EVENTUALLY_MS, 'the server to close the connection')
        assert.deepEqual(
          peer.received.filter((m) => m.type === MessageType.LoginOk),
          [],
        )
        assert.equal(fabric.server.registry.models().includes('sneaky'), false)
      } finally {
        peer.destroy()
      }
      bystanderUnharmed()
    })
  }

  test('a first message that is Ping, not Login, closes the connection', {}, async () => {
    const peer = await ControlPeer.connect({ port: ports().control, ca: ca() })
    try {
      peer.send(MessageType.Ping, { t: 1 })
      // Well inside the 10 s default login timeout: it is the Ping that must close it.
      await closedWithin(peer.socket, 3_000, 'the server to close the connection')
      assert.equal(
        peer.received.some((m) => m.type === MessageType.Pong),
        false,
        'no Pong for a stranger',
      )
    } finally {
      peer.destroy()
    }
  })

  test('a second Login on a logged-in session closes it; the worker goes offline', async () => {
    const peer = await ControlPeer.connect({ port: ports().control, ca: ca() })
    const login = await peer.login('twice', WORKER_TOKEN, ['twice-model'])
    const link = await FakeDataLink.open({ port: ports().proxy, ca: ca(), dataToken: login.dataToken })
    try {
      await waitFor(
        () => fabric.server.registry.byClientId('twice')?.routable === true,
        EVENTUALLY_MS,
        'routable',
      )
      assert.deepEqual(
        events.filter((e) => e.endsWith(' twice')),
        ['online twice'],
      )
      peer.send(MessageType.Login, ControlPeer.loginBody('twice', WORKER_TOKEN, ['twice-model']))
      await closedWithin(peer.socket, EVENTUALLY_MS, 'the server to close the session')
      await waitFor(() => fabric.server.registry.byClientId('twice') === undefined, EVENTUALLY_MS, 'offline')
      assert.equal(fabric.server.registry.models().includes('twice-model'), false)
      await closedWithin(link.socket, EVENTUALLY_MS, 'its data link to be dropped with it')
      assert.deepEqual(
        events.filter((e) => e.endsWith(' twice')),
        ['online twice', 'offline twice'],
      )
      assert.equal(
        peer.received.filter((m) => m.type === MessageType.LoginOk).length,
        1,
        'the second Login was not answered',
      )
    } finally {
      link.destroy()
      peer.destroy()
    }
    bystanderUnharmed()
  })

  // At HEAD the control server took a second Login read before the first was checked for a
  // first login of its own: a second LoginOk, an eviction, an online event never matched.
  test('two Logins in one write: the connection closes and no session is left behind', async () => {
    const peer = await ControlPeer.connect({ port: ports().control, ca: ca() })
    try {
      const login = encodeMessage(MessageType.Login, ControlPeer.loginBody('pipelined', WORKER_TOKEN, ['p']))
      peer.socket.write(Buffer.concat([login, login]))
      await closedWithin(peer.socket, EVENTUALLY_MS, 'the server to close the connection')
      await waitFor(
        () => fabric.server.registry.byClientId('pipelined') === undefined,
        EVENTUALLY_MS,
        'no session left',
      )
      assert.ok(
        peer.received.filter((m) => m.type === MessageType.LoginOk).length <= 1,
        `answers: ${peer.received.map((m) => m.type).join(',')}`,
      )
      assert.equal(
        peer.received.some((m) => m.type === MessageType.Close && m.body.code === 'GPUF_SESSION_EVICTED'),
        false,
        'a connection breaking the protocol is not "evicted by a newer login"',
      )
      const mine = events.filter((e) => e.endsWith(' pipelined'))
      assert.equal(
        mine.filter((e) => e.startsWith('online')).length,
        mine.filter((e) => e.startsWith('offline')).length,
        `online/offline balanced: ${mine.join(', ')}`,
      )
    } finally {
      peer.destroy()
    }
  })
})

describe('control timeouts and a peer that stops reading', () => {
  const LOGIN_TIMEOUT_MS = 400
  let own: TestFabric

  before(async () => {
    own = await startFabric({ loginTimeoutMs: LOGIN_TIMEOUT_MS, maxFrameBytes: 64 * 1024 })
  })
  after(() => own.close())

  async function loginTimeoutCloses(act: (peer: ControlPeer) => void): Promise<number> {
    const peer = await ControlPeer.connect({ port: own.server.ports.control, ca: ca() })
    try {
      act(peer)
      const took = await closedWithin(peer.socket, EVENTUALLY_MS, 'the login timeout to close the connection')
      assert.equal(
        peer.received.some((m) => m.type === MessageType.LoginOk),
        false,
      )
      return took
    } finally {
      peer.destroy()
    }
  }

  test('a connection that sends nothing after TLS is closed at the login timeout', async () => {
    const took = await loginTimeoutCloses(() => undefined)
    // From our end of the handshake, which completes before the server's: the full timeout ran.
    assert.ok(took >= LOGIN_TIMEOUT_MS - 20, `closed after ${took} ms, before the login timeout`)
  })

  test('a connection that sends half a Login frame is closed at the login timeout', async () => {
    const took = await loginTimeoutCloses((peer) => {
      const login = encodeMessage(MessageType.Login, ControlPeer.loginBody('slow', WORKER_TOKEN, ['s']))
      peer.socket.write(login.subarray(0, login.length - 5))
    })
    assert.ok(took >= LOGIN_TIMEOUT_MS - 20, `closed after ${took} ms`)
    assert.equal(own.server.registry.byClientId('slow'), undefined)
  })

  /**
   * Sends Pings as fast as the connection takes them until `bytes` are sent or the connection
   * closes; the server answers each with a Pong. Returns the bytes sent.
   */
  async function pingFlood(peer: ControlPeer, bytes: number, deadlineMs: number): Promise<number> {
    const ping = encodeMessage(MessageType.Ping, { t: 1 })
    const batch = Buffer.concat(Array.from({ length: 2_000 }, () => ping))
    const deadline = Date.now() + deadlineMs
    let sent = 0
    while (sent < bytes && !peer.closed && Date.now() < deadline) {
      sent += batch.length
      if (!peer.socket.write(batch)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            peer.socket.off('drain', done)
            peer.socket.off('close', done)
            resolve()
          }
          peer.socket.once('drain', done)
          peer.socket.once('close', done)
        })
      }
    }
    return sent
  }

  /*
   * What can make the server write to a worker faster than it reads? Unasked, the server sends
   * a worker one Ping per interval (about 20 bytes every 2 s): a worker that stops reading but
   * keeps sending heartbeats would take days to fill kernel buffers and the write limit, and
   * its heartbeats keep it "alive". The realistic trigger is a peer that makes the server
   * answer: Pings, each answered by a Pong. With the write limit at 4 × 64 KiB here (the
   * default is 4 × 1 MiB, which takes about 8 MB of pings), a deaf peer is dropped after a few
   * MB; a peer that reads stays connected however much it pings.
   */
  const FLOOD_BYTES = 12 * 1024 * 1024

  test('a logged-in peer that pings a lot but reads its answers stays connected (control)', async () => {
    const peer = await ControlPeer.connect({ port: own.server.ports.control, ca: ca() })
    try {
      await peer.login('listening', WORKER_TOKEN, ['listening-model'])
      const sent = await pingFlood(peer, FLOOD_BYTES, 60_000)
      assert.equal(peer.closed, false, `dropped after ${sent} bytes although it reads`)
      assert.equal(sent >= FLOOD_BYTES, true, 'the whole flood went out')
      assert.ok(own.server.registry.byClientId('listening'))
    } finally {
      peer.destroy()
    }
  })

  test('a logged-in peer that stops reading is dropped once its write buffer is full', async () => {
    const peer = await ControlPeer.connect({ port: own.server.ports.control, ca: ca() })
    try {
      await peer.login('deaf', WORKER_TOKEN, ['deaf-model'])
      assert.ok(own.server.registry.byClientId('deaf'))
      // Stop reading: the kernel buffers fill, then the server's own write buffer.
      peer.socket.pause()
      const sent = await pingFlood(peer, 10 * FLOOD_BYTES, 60_000)
      assert.equal(peer.closed, true, `still connected after sending ${sent} bytes of pings`)
      await waitFor(() => own.server.registry.byClientId('deaf') === undefined, EVENTUALLY_MS, 'offline')
    } finally {
      peer.destroy()
    }
  })
})

function loginOkBody() {
  return {
    sessionId: 'forged',
    dataToken: 'forged-token-0123456789',
    pingIntervalMs: 1000,
    pingDeadlineMs: 3000,
    heartbeatIntervalMs: 1000,
    dataConnections: 1,
  }
}
