import { randomBytes, randomUUID } from 'node:crypto'
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls'
import { LIMITS, TIMEOUTS } from '../../config/defaults.js'
import { ErrorCodes, type FabricError } from '../../errors/index.js'
import type { Logger } from '../../observability/logger.js'
import { ControlChannel, type Login, MessageType } from '../../protocol/index.js'
import type { WorkerRegistry } from '../../routing/registry.js'
import { WorkerSession } from '../../routing/worker-session.js'
import { TLS13 } from '../../tls/index.js'
import type { WorkerAuthenticator } from '../auth.js'
import { closeServer, listen } from '../listen.js'

/** Options of the control-port server. */
export interface ControlServerOptions {
  readonly host: string
  readonly port: number
  readonly cert: string
  readonly key: string
  readonly registry: WorkerRegistry
  readonly authenticate: WorkerAuthenticator
  readonly logger: Logger
  readonly maxFrameBytes?: number
  readonly loginTimeoutMs?: number
  readonly pingIntervalMs?: number
  readonly pingDeadlineMs?: number
  readonly heartbeatIntervalMs?: number
  readonly dataConnections?: number | undefined
  readonly events?: { online(s: WorkerSession): void; offline(s: WorkerSession): void } | undefined
}

/**
 * The control port: workers dial in over TLS 1.3, log in, then keep a framed channel for
 * heartbeats, model updates and pings. A second login with the same client id evicts the
 * first session at once.
 */
export class ControlServer {
  readonly #options: ControlServerOptions
  readonly #server: TlsServer
  readonly #pending = new Set<ControlChannel>()

  constructor(options: ControlServerOptions) {
    this.#options = options
    this.#server = createTlsServer({ ...TLS13, cert: options.cert, key: options.key }, (socket) =>
      this.#onConnection(socket),
    )
    // Failed handshakes (TLS 1.2 clients, garbage) only concern that one socket.
    this.#server.on('tlsClientError', (err, socket) => {
      options.logger.debug({ err: err.message }, 'control TLS handshake failed')
      socket.destroy()
    })
  }

  /** Starts listening; resolves with the bound port. */
  async start(): Promise<number> {
    return listen(this.#server, this.#options.port, this.#options.host)
  }

  /** Stops accepting and closes every worker's control channel. */
  async stop(): Promise<void> {
    await closeServer(this.#server, () => {
      for (const channel of this.#pending) channel.destroy()
      for (const session of [...this.#options.registry.workers()]) {
        session.close(ErrorCodes.SHUTTING_DOWN, 'server is shutting down')
      }
    })
  }

  #onConnection(socket: TLSSocket): void {
    const { logger, registry } = this.#options
    if (this.#pending.size >= LIMITS.maxPendingConnections) {
      // A flood of connections that never log in must not hold unbounded sockets.
      socket.destroy()
      return
    }
    socket.setNoDelay(true)
    const channel = new ControlChannel(socket, {
      maxFrameBytes: this.#options.maxFrameBytes ?? LIMITS.maxControlFrameBytes,
    })
    this.#pending.add(channel)
    const loginTimer = setTimeout(() => channel.destroy(), this.#options.loginTimeoutMs ?? TIMEOUTS.loginMs)
    loginTimer.unref()
    let session: WorkerSession | undefined

    channel.on('close', (err?: FabricError) => {
      clearTimeout(loginTimer)
      this.#pending.delete(channel)
      if (session === undefined) {
        if (err !== undefined)
          logger.debug({ code: err.code, err: err.message }, 'control connection dropped before login')
        return
      }
      const wasCurrent = registry.remove(session)
      session.dropLinks()
      // An evicted session's close comes after its successor's login: that worker is online.
      if (wasCurrent) this.#options.events?.offline(session)
      logger.info({ clientId: session.clientId, code: err?.code }, 'worker disconnected')
    })

    channel.on('message', (message) => {
      if (session === undefined) {
        if (message.type !== MessageType.Login) {
          channel.destroy()
          return
        }
        clearTimeout(loginTimer)
        this.#pending.delete(channel)
        this.#login(channel, message.body).then(
          (s) => {
            session = s
          },
          (err: unknown) => {
            this.#options.logger.error({ err: String(err) }, 'worker login failed unexpectedly')
            channel.destroy()
          },
        )
        return
      }
      switch (message.type) {
        case MessageType.Heartbeat:
          session.lastHeartbeatAt = Date.now()
          session.reportedInflight = message.body.inflight
          if (message.body.metrics !== undefined) session.metrics = message.body.metrics
          if (message.body.models !== undefined && !sameModels(session.models, message.body.models)) {
            registry.setModels(session, message.body.models)
          }
          break
        case MessageType.ModelsUpdate:
          registry.setModels(session, message.body.models)
          logger.info({ clientId: session.clientId, models: message.body.models }, 'worker models changed')
          break
        case MessageType.Close:
          channel.destroy()
          break
        default:
          // Login twice, or a server-only message from a worker: not one of ours.
          channel.destroy()
      }
    })
  }

  async #login(channel: ControlChannel, login: Login): Promise<WorkerSession | undefined> {
    const { logger, registry } = this.#options
    const verdict = await this.#options.authenticate(login)
    if (channel.closed) return undefined
    if (!verdict.ok) {
      logger.warn({ clientId: login.clientId, remote: channel.socket.remoteAddress }, 'worker login refused')
      channel.send(MessageType.LoginError, { code: ErrorCodes.LOGIN_REFUSED, message: verdict.reason })
      channel.close(ErrorCodes.LOGIN_REFUSED, verdict.reason)
      return undefined
    }
    const previous = registry.byClientId(login.clientId)
    if (previous !== undefined) {
      registry.remove(previous)
      previous.close(
        ErrorCodes.SESSION_EVICTED,
        'a newer login with the same client id replaced this session',
      )
      logger.info({ clientId: login.clientId }, 'evicted previous session of this client id')
    }
    const session = new WorkerSession({
      sessionId: randomUUID(),
      clientId: login.clientId,
      engineType: login.engineType,
      channel,
      dataToken: randomBytes(24).toString('base64url'),
      models: login.models,
      remoteAddress: channel.socket.remoteAddress ?? '',
      hostname: login.hostname,
      os: login.os,
      capacity: login.capacity,
    })
    registry.add(session)
    const pingIntervalMs = this.#options.pingIntervalMs ?? TIMEOUTS.pingIntervalMs
    const pingDeadlineMs = this.#options.pingDeadlineMs ?? TIMEOUTS.pingDeadlineMs
    channel.send(MessageType.LoginOk, {
      sessionId: session.sessionId,
      dataToken: session.dataToken,
      pingIntervalMs,
      pingDeadlineMs,
      heartbeatIntervalMs: this.#options.heartbeatIntervalMs ?? TIMEOUTS.heartbeatIntervalMs,
      dataConnections: this.#options.dataConnections ?? LIMITS.dataConnectionsPerWorker,
    })
    channel.startKeepalive(pingIntervalMs, pingDeadlineMs)
    this.#options.events?.online(session)
    logger.info(
      {
        clientId: login.clientId,
        engine: login.engineType,
        models: login.models,
        remote: session.remoteAddress,
      },
      'worker logged in',
    )
    return session
  }
}

function sameModels(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
