/**
 * The "h2 floor": the fabric's data-path mechanism with none of the fabric's logic.
 *
 * Two processes, wired as the fabric wires its server and worker:
 *
 *   client → front (node:http) ⇒ lanes: HTTP/2 streams over one TLS 1.3 connection ⇒ back → engine (undici Pool)
 *
 * As in the fabric, the BACK dials the front's TLS port and keeps that one
 * connection; the front then speaks HTTP/2 as the *client* over it and the
 * back as the *server*, and requests travel on lanes (long-lived streams
 * reused one request after the other, the fabric's own `LaneLink`; see
 * src/protocol/lane.ts). What is left out is everything the fabric adds on
 * top: API keys, routing, registries, bind tokens, metrics, logging, retries,
 * streaming relays. So `fabric − h2 floor` is what the fabric's own logic
 * costs, and `h2 floor − 2 hops` is what the mechanism (HTTP/2 lanes + TLS)
 * costs over plain HTTP/1.1 hops (the reference proxies).
 *
 * Both sides use Node's default HTTP/2 settings: the fabric's bigger windows
 * only matter for bodies far larger than the benchmark's.
 *
 * Usage:
 *   node dist/bench/reference-h2.js front [--port N]
 *     prints `listening <http port> tls <tls port>` once both servers accept connections;
 *   node dist/bench/reference-h2.js back --front 127.0.0.1:TLS_PORT --target 127.0.0.1:ENGINE_PORT
 *     prints `ready` once the HTTP/2 session with the front is up.
 */
import { createServer as createHttpServer, type ServerResponse } from 'node:http'
import {
  createServer as createH2Server,
  constants as h2,
  connect as h2connect,
  type ServerHttp2Stream,
} from 'node:http2'
import type { AddressInfo } from 'node:net'
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls'
import { parseArgs } from 'node:util'
import { Pool } from 'undici'
import { LIMITS } from '../src/config/defaults.js'
import { FrameDecoder } from '../src/protocol/frame.js'
import {
  decodeLaneRequest,
  encodeLaneAnswer,
  encodeLaneFail,
  encodeLaneRequest,
  LANE_REQUEST_OVERHEAD_BYTES,
  LaneFailure,
  LaneFrame,
} from '../src/protocol/lane.js'
import { LaneLink } from '../src/routing/lanes.js'
import { createSelfSignedCertificate, TLS13 } from '../src/tls/index.js'

const JSON_TYPE = 'application/json'

/** Splits `host:port` (the last colon separates the port). */
function hostPort(value: string | undefined, flag: string): { host: string; port: number } {
  const colon = value?.lastIndexOf(':') ?? -1
  const port = Number(value?.slice(colon + 1))
  if (value === undefined || colon <= 0 || !Number.isInteger(port) || port <= 0) {
    throw new Error(`${flag} host:port is required`)
  }
  return { host: value.slice(0, colon), port }
}

/** Answers an error, or cuts the connection if the answer has already begun. */
function fail(res: ServerResponse, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  res.writeHead(status, { 'content-type': 'text/plain' })
  res.end(message)
}

/**
 * The front: a node:http server for the client and a TLS server that takes
 * exactly one connection (from the back) and runs an HTTP/2 client session on it.
 */
async function runFront(port: number): Promise<void> {
  // Same kind of certificate as the fabric server's (EC P-256, self-signed),
  // so the TLS 1.3 record layer does the same work per request.
  const { cert, key } = await createSelfSignedCertificate()
  let link: LaneLink | undefined

  const tlsServer = createTlsServer({ ...TLS13, cert, key, ALPNProtocols: ['h2'] }, (socket) => {
    if (link !== undefined || socket.alpnProtocol !== 'h2') {
      socket.destroy()
      return
    }
    // One link for the whole run, as the fabric keeps its data link; no one else may connect.
    tlsServer.close()
    socket.setNoDelay(true)
    const s = h2connect('https://back', { createConnection: () => socket })
    s.on('error', (err) => process.stderr.write(`h2 session error: ${err.message}\n`))
    const l = new LaneLink(s)
    s.on('close', () => {
      if (link === l) link = undefined
    })
    link = l
  })

  const httpServer = createHttpServer({ noDelay: true }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      // The fabric parses every body once (to find the model), so the floor does too.
      let model: unknown
      try {
        model = (JSON.parse(body.toString('utf8')) as { model?: unknown }).model
      } catch {
        model = undefined
      }
      if (typeof model !== 'string') {
        fail(res, 400, 'body must be JSON with a string "model"')
        return
      }
      const lane = link?.acquire()
      if (lane === undefined) {
        // Makes the benchmark fail loudly (it wants 200) instead of hanging.
        fail(res, 503, 'h2 floor: no HTTP/2 link to the back')
        return
      }
      // A client that leaves cancels the lane too (as the reference proxy does upstream).
      let over = false
      res.on('close', () => {
        if (!over) lane.cancel()
      })
      lane.send(
        encodeLaneRequest('POST', req.url ?? '/', body),
        {
          head: (status, headers) => res.writeHead(status, headers),
          data: (chunk, last) => (last ? res.end(chunk) : res.write(chunk)),
          end: () => {
            over = true
            if (!res.writableEnded) res.end()
          },
          fail: (_retryable, message) => {
            over = true
            fail(res, 502, `h2 floor: ${message}`)
          },
        },
        0,
        0,
      )
    })
  })
  httpServer.keepAliveTimeout = 60_000

  tlsServer.listen(0, '127.0.0.1')
  httpServer.listen(port, '127.0.0.1')
  await Promise.all([
    new Promise((resolve) => tlsServer.once('listening', resolve)),
    new Promise((resolve) => httpServer.once('listening', resolve)),
  ])
  const httpPort = (httpServer.address() as AddressInfo).port
  const tlsPort = (tlsServer.address() as AddressInfo).port
  process.stdout.write(`listening ${httpPort} tls ${tlsPort}\n`)
}

/** Serves one lane: each REQUEST becomes one engine request, answered whole in one write. */
function serveLane(pool: Pool, stream: ServerHttp2Stream): void {
  stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200 })
  const decoder = new FrameDecoder(LIMITS.maxRequestBodyBytes + LANE_REQUEST_OVERHEAD_BYTES)
  stream.on('error', () => undefined)
  stream.on('data', (chunk: Buffer) => {
    let frames: ReturnType<FrameDecoder['push']>
    try {
      frames = decoder.push(chunk)
    } catch {
      stream.close(h2.NGHTTP2_PROTOCOL_ERROR)
      return
    }
    for (const frame of frames) {
      const request = frame.type === LaneFrame.REQUEST ? decodeLaneRequest(frame.payload) : undefined
      if (request === undefined) {
        stream.close(h2.NGHTTP2_PROTOCOL_ERROR)
        return
      }
      let status = 502
      let type = JSON_TYPE
      const parts: Buffer[] = []
      pool.dispatch(
        {
          method: request.method as 'POST',
          path: request.path,
          headers: { 'content-type': JSON_TYPE },
          body: request.body,
        },
        {
          // undici recognises a handler of its current API by this method.
          onRequestStart() {},
          onResponseStart(_c, statusCode, responseHeaders) {
            status = statusCode
            const t = responseHeaders['content-type']
            if (typeof t === 'string') type = t
          },
          onResponseData(_c, chunk) {
            parts.push(chunk)
          },
          onResponseEnd() {
            if (stream.destroyed) return
            let size = 0
            for (const part of parts) size += part.length
            stream.write(
              encodeLaneAnswer(status, { 'content-type': type, 'content-length': String(size) }, parts, size),
            )
          },
          onResponseError(_c, err) {
            if (!stream.destroyed) stream.write(encodeLaneFail(LaneFailure.REFUSED, `engine: ${err.message}`))
          },
        },
      )
    }
  })
}

/** The back: dials the front over TLS 1.3 and serves HTTP/2 on that one socket. */
function runBack(front: { host: string; port: number }, target: { host: string; port: number }): void {
  const pool = new Pool(`http://${target.host}:${target.port}`, { keepAliveTimeout: 60_000 })
  const h2server = createH2Server()
  h2server.on('stream', (stream) => serveLane(pool, stream))
  h2server.on('session', (session) => {
    // The front sends its SETTINGS only once it has wrapped the socket in its
    // HTTP/2 session, so from here on the front can send requests.
    session.once('remoteSettings', () => process.stdout.write('ready\n'))
    session.on('error', (err) => process.stderr.write(`h2 session error: ${err.message}\n`))
  })

  // A benchmark between two local processes: the certificate is not checked,
  // which only affects the handshake, not the per-request cost measured.
  const socket = tlsConnect({
    ...TLS13,
    host: front.host,
    port: front.port,
    ALPNProtocols: ['h2'],
    rejectUnauthorized: false,
  })
  socket.setNoDelay(true)
  socket.once('secureConnect', () => {
    if (socket.alpnProtocol !== 'h2') {
      process.stderr.write(`front did not agree on h2 (ALPN ${String(socket.alpnProtocol)})\n`)
      process.exit(1)
    }
    h2server.emit('connection', socket)
  })
  socket.on('error', (err) => process.stderr.write(`link error: ${err.message}\n`))
  // Without its link the back is useless: exit so the harness sees it died.
  socket.once('close', () => {
    process.stderr.write('link to the front closed\n')
    process.exit(1)
  })
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      port: { type: 'string', default: '0' },
      front: { type: 'string' },
      target: { type: 'string' },
    },
  })
  // Exit normally on SIGTERM (the harness's stop) so that node's exit hooks run,
  // e.g. --cpu-prof writing its profile (see BENCH_CHILD_NODE_ARGS).
  process.once('SIGTERM', () => process.exit(0))
  const role = positionals[0]
  if (role === 'front') await runFront(Number(values.port))
  else if (role === 'back') runBack(hostPort(values.front, '--front'), hostPort(values.target, '--target'))
  else throw new Error(`role must be "front" or "back", got ${String(role)}`)
}

await main()
