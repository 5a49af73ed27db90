import { randomBytes, randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls'
import type { WorkerAuthenticator } from '../../auth/credentials.js'
import type { CredentialThrottle } from '../../auth/throttle.js'
import { LIMITS, TIMEOUTS } from '../../config/defaults.js'
import { type ErrorCode, ErrorCodes, FabricError } from '../../errors/index.js'
import type { Logger } from '../../observability/logger.js'
import { ControlChannel, type Login, MessageType } from '../../protocol/index.js'
import type { WorkerRegistry } from '../../routing/registry.js'
import { WorkerSession } from '../../routing/worker-session.js'
import type { TelemetryPublisher } from '../../telemetry/publisher.js'
import { TLS13 } from '../../tls/index.js'
import { addressKey, type ConnectionBudget } from '../connections.js'
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
  /** Publishes each heartbeat to the bus (telemetry). */
  readonly telemetry?: TelemetryPublisher | undefined
  /** Connection caps of this port. */
  readonly budget: ConnectionBudget
  /** Failed worker tokens, counted per address and client id. */
  readonly throttle: CredentialThrottle
  /** Largest frame before login. @default LIMITS.maxLoginFrameBytes */
  readonly maxLoginFrameBytes?: number | undefined
  /** @default TIMEOUTS.tlsHandshakeMs */
  readonly handshakeTimeoutMs?: number | undefined
  /** @default TIMEOUTS.loginRefusalDelayMs */
  readonly loginRefusalDelayMs?: number | undefined
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
    const handshakeMs = options.handshakeTimeoutMs ?? TIMEOUTS.tlsHandshakeMs
    this.#server = createTlsServer(
      { ...TLS13, cert: options.cert, key: options.key, handshakeTimeout: handshakeMs },
      (socket) => this.#onConnection(socket),
    )
    // Every connection counts from accept: an unfinished TLS handshake holds a pending slot,
    // and is cut after the handshake timeout.
    options.budget.guard(this.#server, true, handshakeMs)
    // Failed handshakes (TLS 1.2 clients, garbage, silence) only concern that one socket.
    this.#server.on('tlsClientError', (err, socket) => {
      options.logger.debug({ err: err.message }, 'control TLS handshake failed')
      socket.destroy()
    })
  }

  /** Starts listening; resolves with the bound port. */
  async start(): Promise<number> {
    return listen(this.#server, this.#options.port, this.#options.host, this.#options.logger)
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
    socket.setNoDelay(true)
    // A stranger's frames are read with a login-sized limit: memory before authentication
    // stays bounded (pending connections × this); the full limit comes with the login.
    const channel = new ControlChannel(socket, {
      maxFrameBytes: this.#options.maxLoginFrameBytes ?? LIMITS.maxLoginFrameBytes,
      maxWriteBufferBytes: 4 * (this.#options.maxFrameBytes ?? LIMITS.maxControlFrameBytes),
      answerPings: false,
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

    let loggingIn = false
    channel.on('message', (message) => {
      if (session === undefined) {
        // Only one Login, first; anything else (or a second Login while the first is checked)
        // is not one of our workers.
        if (message.type !== MessageType.Login || loggingIn) {
          channel.destroy(new FabricError(ErrorCodes.PROTOCOL, 'the first control message must be one Login'))
          return
        }
        loggingIn = true
        clearTimeout(loginTimer)
        this.#login(channel, message.body).then(
          (s) => {
            session = s
            // Logged in: from now on the channel closes with its session (stop() sends it a Close).
            if (s !== undefined) this.#pending.delete(channel)
          },
          (err: unknown) => {
            this.#options.logger.error(
              { code: ErrorCodes.INTERNAL, err: String(err) },
              'worker login failed unexpectedly',
            )
            channel.destroy()
          },
        )
        return
      }
      switch (message.type) {
        case MessageType.Heartbeat: {
          const previous = session.metrics
          session.lastHeartbeatAt = Date.now()
          session.reportedInflight = message.body.inflight
          if (message.body.metrics !== undefined) session.metrics = message.body.metrics
          if (message.body.models !== undefined && !sameModels(session.models, message.body.models)) {
            registry.setModels(session, message.body.models)
          }
          this.#options.telemetry?.heartbeat(session, message.body, previous, session.lastHeartbeatAt)
          break
        }
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
    const { logger, registry, throttle } = this.#options
    const address = addressKey(channel.socket.remoteAddress)
    const throttledFor = throttle.refuses(channel.socket.remoteAddress)
    if (throttledFor > 0) {
      // Not even checked: an address past its failure budget waits out its cool-down.
      await this.#refuse(channel, ErrorCodes.AUTH_THROTTLED, throttledFor)
      return undefined
    }
    const verdict = await this.#options.authenticate(login)
    if (channel.closed) return undefined
    if (!verdict.ok) {
      if (verdict.unavailable === true) {
        logger.warn({ clientId: login.clientId, remote: address }, 'worker login refused')
        channel.send(MessageType.LoginError, { code: ErrorCodes.LOGIN_REFUSED, message: verdict.reason })
        channel.close(ErrorCodes.LOGIN_REFUSED, verdict.reason)
        return undefined
      }
      const { blockedForMs } = throttle.failure(address, `worker:${login.clientId}`, 'worker token')
      const subjectBlockedMs = throttle.subjectBlockedFor(`worker:${login.clientId}`)
      await this.#refuse(
        channel,
        ErrorCodes.LOGIN_REFUSED,
        Math.max(blockedForMs, subjectBlockedMs),
        verdict.reason,
      )
      return undefined
    }
    this.#options.budget.authenticated(channel.socket)
    channel.setMaxFrameBytes(this.#options.maxFrameBytes ?? LIMITS.maxControlFrameBytes)
    channel.answerPings()
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
      credential: verdict.credential,
      userId: verdict.userId,
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

  /**
   * Refuses a login. A throttled one (`retryAfterMs` > 0) is answered only after a delay, so a
   * guesser gets a handful of tries a minute per connection slot, and is told when to retry.
   */
  async #refuse(
    channel: ControlChannel,
    code: ErrorCode,
    retryAfterMs: number,
    reason?: string,
  ): Promise<void> {
    if (retryAfterMs > 0) {
      await sleep(this.#options.loginRefusalDelayMs ?? TIMEOUTS.loginRefusalDelayMs, undefined, {
        ref: false,
      })
      if (channel.closed) return
    }
    const message =
      retryAfterMs > 0
        ? `${reason === undefined ? THROTTLED_MESSAGE : `${reason}; ${THROTTLED_MESSAGE}`}: retry in ${Math.ceil(retryAfterMs / 1000)} s`
        : (reason ?? 'login refused')
    channel.send(MessageType.LoginError, {
      code: retryAfterMs > 0 ? ErrorCodes.AUTH_THROTTLED : code,
      message,
      ...(retryAfterMs > 0 ? { retryAfterMs: Math.ceil(retryAfterMs) } : {}),
    })
    channel.close(code, message)
  }

  /** Closes the sessions of workers logged in with the worker token of this prefix (it was revoked). */
  revokeCredential(prefix: string): number {
    let closed = 0
    for (const session of [...this.#options.registry.workers()]) {
      if (session.credential !== prefix) continue
      this.#options.registry.remove(session)
      session.close(ErrorCodes.CREDENTIAL_REVOKED, 'the worker token of this session was revoked')
      closed++
      this.#options.logger.warn(
        { clientId: session.clientId, credential: prefix },
        'worker disconnected: its token was revoked',
      )
    }
    return closed
  }
}

/** Words a refused worker sees (never whether the token or the client id was wrong). */
const THROTTLED_MESSAGE = 'too many failed logins'

function sameModels(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
