import {
  type ClientHttp2Session,
  constants as h2,
  connect as h2connect,
  type IncomingHttpHeaders,
} from 'node:http2'
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls'
import { LIMITS, TIMEOUTS } from '../../config/defaults.js'
import { ErrorCodes } from '../../errors/index.js'
import type { Logger } from '../../observability/logger.js'
import { superviseLink } from '../../protocol/link-keepalive.js'
import type { WorkerRegistry } from '../../routing/registry.js'
import { TLS13 } from '../../tls/index.js'
import type { ConnectionBudget } from '../connections.js'
import { closeServer, listen } from '../listen.js'

/** Path of the one-time bind request the server sends on a new data link. */
export const BIND_PATH = '/.gpuf/bind'
/** Response header carrying the data token from the control login. */
export const DATA_TOKEN_HEADER = 'x-gpuf-data-token'

/** Options of the proxy-port server. */
export interface DataPlaneServerOptions {
  readonly host: string
  readonly port: number
  readonly cert: string
  readonly key: string
  readonly registry: WorkerRegistry
  readonly logger: Logger
  readonly bindTimeoutMs?: number
  /** HTTP/2 ping interval and deadline on each data link (half-open links found in seconds). */
  readonly pingIntervalMs?: number | undefined
  readonly pingDeadlineMs?: number | undefined
  /** Connection caps of this port; a link counts as pending until it is bound. */
  readonly budget: ConnectionBudget
  /** @default TIMEOUTS.tlsHandshakeMs */
  readonly handshakeTimeoutMs?: number | undefined
}

/** HTTP/2 settings of a data link: big windows, so one link carries many fast streams. */
export const DATA_LINK_SETTINGS = {
  initialWindowSize: LIMITS.h2StreamWindowBytes,
  maxFrameSize: LIMITS.h2MaxFrameBytes,
  maxConcurrentStreams: LIMITS.maxConcurrentStreams,
  enablePush: false,
} as const

/**
 * The proxy port. A worker dials in over TLS 1.3 (ALPN h2) and keeps the connection; the
 * server speaks HTTP/2 *as the client* over that socket, so each user request rides a stream
 * (a lane, reused request after request; see routing/lanes.ts) on a connection that already
 * exists: no per-request set-up, no pairing round trip. The link is bound to its worker by a
 * token handed out on the control channel.
 */
export class DataPlaneServer {
  readonly #options: DataPlaneServerOptions
  readonly #server: TlsServer
  readonly #links = new Set<ClientHttp2Session>()

  constructor(options: DataPlaneServerOptions) {
    this.#options = options
    const handshakeMs = options.handshakeTimeoutMs ?? TIMEOUTS.tlsHandshakeMs
    this.#server = createTlsServer(
      {
        ...TLS13,
        cert: options.cert,
        key: options.key,
        ALPNProtocols: ['h2'],
        handshakeTimeout: handshakeMs,
      },
      (socket) => this.#onConnection(socket),
    )
    options.budget.guard(this.#server, true, handshakeMs)
    this.#server.on('tlsClientError', (err, socket) => {
      options.logger.debug({ err: err.message }, 'proxy TLS handshake failed')
      socket.destroy()
    })
  }

  async start(): Promise<number> {
    return listen(this.#server, this.#options.port, this.#options.host, this.#options.logger)
  }

  async stop(): Promise<void> {
    await closeServer(this.#server, () => {
      for (const link of this.#links) link.destroy()
    })
  }

  #onConnection(socket: TLSSocket): void {
    const { logger } = this.#options
    if (socket.alpnProtocol !== 'h2') {
      socket.destroy()
      return
    }
    socket.setNoDelay(true)
    const link = h2connect('https://worker', {
      createConnection: () => socket,
      settings: DATA_LINK_SETTINGS,
      maxSessionMemory: 64,
    })
    this.#links.add(link)
    // Garbage from the peer is a protocol error on this session only.
    link.on('error', (err) => logger.debug({ err: err.message }, 'data link error'))
    link.on('close', () => this.#links.delete(link))
    link.on('connect', () => link.setLocalWindowSize(LIMITS.h2ConnectionWindowBytes))

    const timer = setTimeout(() => link.destroy(), this.#options.bindTimeoutMs ?? TIMEOUTS.bindMs)
    timer.unref()
    const bind = link.request(
      { [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: BIND_PATH },
      { endStream: true },
    )
    let answered = false
    bind.on('error', () => link.destroy())
    // A bind stream that ends without an answer (reset with NO_ERROR or CANCEL raises no error)
    // leaves nothing to wait for.
    bind.on('close', () => {
      if (!answered) link.destroy()
    })
    bind.on('response', (headers) => {
      answered = true
      clearTimeout(timer)
      bind.resume()
      try {
        this.#bound(link, socket, headers)
      } catch (err) {
        logger.error({ code: ErrorCodes.INTERNAL, err: String(err) }, 'data link bind failed unexpectedly')
        link.destroy()
      }
    })
  }

  #bound(link: ClientHttp2Session, socket: TLSSocket, headers: IncomingHttpHeaders): void {
    const { logger, registry } = this.#options
    const token = headers[DATA_TOKEN_HEADER]
    const session = typeof token === 'string' ? registry.byDataToken(token) : undefined
    if (session === undefined || session.channel.closed) {
      logger.warn({ remote: socket.remoteAddress }, 'data link with an unknown token refused')
      link.destroy()
      return
    }
    this.#options.budget.authenticated(socket)
    session.addLink(link)
    superviseLink(
      link,
      this.#options.pingIntervalMs ?? TIMEOUTS.pingIntervalMs,
      this.#options.pingDeadlineMs ?? TIMEOUTS.pingDeadlineMs,
    )
    logger.debug({ clientId: session.clientId, links: session.linkCount }, 'data link bound')
  }
}
