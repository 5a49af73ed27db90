import { EventEmitter } from 'node:events'
import { createServer as createH2Server, type Http2Server } from 'node:http2'
import { arch, hostname, platform } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import type { TLSSocket } from 'node:tls'
import { LIMITS, TIMEOUTS } from '../config/defaults.js'
import { ErrorCodes, FabricError, isFabricError } from '../errors/index.js'
import { type Logger, silentLogger } from '../observability/logger.js'
import {
  ControlChannel,
  type ControlMessage,
  encodeMessage,
  type LoginOk,
  MessageType,
} from '../protocol/index.js'
import { superviseLink } from '../protocol/link-keepalive.js'
import { DATA_LINK_SETTINGS } from '../server/dataplane/index.js'
import { connectTls, type ServerTrust } from '../tls/index.js'
import { VERSION } from '../version.js'
import type { Engine } from './engines/types.js'
import type { GpuTools } from './gpu.js'
import { createStreamHandler, type LinkTraffic, type StreamHandlerContext } from './handler.js'
import { HostMetrics } from './metrics.js'

/** Room left in a Login frame for what the server may add to its framing in later versions. */
const LOGIN_HEADROOM_BYTES = 256

/** Options of a worker agent. */
export interface WorkerAgentOptions {
  readonly serverHost: string
  readonly controlPort: number
  readonly proxyPort: number
  readonly clientId: string
  readonly token: string
  readonly trust: ServerTrust
  readonly engine: Engine
  readonly logger?: Logger
  /** Requests the worker takes at once, reported to the server (0 = unstated). */
  readonly capacity?: number
  readonly connectTimeoutMs?: number
  readonly loginTimeoutMs?: number
  readonly reconnectBaseMs?: number
  readonly reconnectMaxMs?: number
  /** @default TIMEOUTS.modelRefreshMs */
  readonly modelRefreshMs?: number
  /** @default TIMEOUTS.engineProbeMs */
  readonly engineProbeMs?: number
  /** Local address to dial the server from (a host with several addresses). */
  readonly localAddress?: string | undefined
  /** The worker's data dir: heartbeats report the use of the disk holding it (none when unset). */
  readonly dataDir?: string | undefined
  /** GPU tool names or paths for the heartbeat's GPU readings. @default looked up on PATH */
  readonly gpuTools?: GpuTools | undefined
  /** A GPU tool that has not answered by then is killed. @default TIMEOUTS.gpuQueryMs */
  readonly gpuQueryMs?: number | undefined
}

interface WorkerAgentEvents {
  /** Logged in and the data link(s) are open. */
  ready: [LoginOk]
  /** The control session ended; the agent will reconnect unless stopped or evicted. */
  disconnected: [FabricError | undefined]
  /** Another process logged in with this client id; this agent stops. */
  evicted: [string]
  /** The server refused the credential (the agent keeps retrying with backoff). */
  refused: [string]
  /** The server revoked the credential this agent logged in with; the agent stops. */
  revoked: [string]
}

/**
 * The worker side: dials the control port, logs in, keeps its data link(s) to the proxy
 * port open and serves the server's streams from the local engine. Reconnects forever with
 * capped exponential backoff and jitter, until stopped or evicted.
 */
export class WorkerAgent extends EventEmitter<WorkerAgentEvents> {
  readonly #options: WorkerAgentOptions
  readonly #logger: Logger
  readonly #h2: Http2Server
  readonly #ctx: StreamHandlerContext
  readonly #shutdown = new AbortController()
  readonly #metrics: HostMetrics
  /** Lane bytes of the current session's data links, reported in heartbeats. */
  readonly #traffic: LinkTraffic = { bytesIn: 0, bytesOut: 0 }
  #loop: Promise<void> | undefined
  #session: LoginOk | undefined
  #models: string[] = []
  /** Leaving: no models announced, waiting for the requests in flight. */
  #draining = false
  /** The control channel of the session in progress. */
  #channel: ControlChannel | undefined
  /** The model discovery in progress (one at a time). */
  #probing: Promise<string[] | undefined> | undefined
  /** Whether the last discovery failed; undefined before the first. */
  #engineDown: boolean | undefined
  #evicted = false
  /** Set when the credential was revoked: there is nothing to retry with. */
  #revoked = false
  /** The server asked us to wait this long before the next login (throttled). */
  #retryAfterMs = 0

  constructor(options: WorkerAgentOptions) {
    super()
    this.#options = options
    this.#logger = options.logger ?? silentLogger()
    this.#ctx = {
      engine: options.engine,
      logger: this.#logger,
      dataToken: () => this.#session?.dataToken,
      inflight: 0,
      traffic: this.#traffic,
    }
    this.#metrics = new HostMetrics({
      dataDir: options.dataDir,
      gpu: { ...options.gpuTools, timeoutMs: options.gpuQueryMs },
      linkTraffic: this.#traffic,
      logger: this.#logger,
    })
    this.#h2 = createH2Server({ settings: DATA_LINK_SETTINGS, maxSessionMemory: 64 })
    this.#h2.on('session', (session) => {
      session.on('error', () => {})
      superviseLink(
        session,
        this.#session?.pingIntervalMs ?? TIMEOUTS.pingIntervalMs,
        this.#session?.pingDeadlineMs ?? TIMEOUTS.pingDeadlineMs,
      )
      session.on('connect', () => session.setLocalWindowSize(LIMITS.h2ConnectionWindowBytes))
    })
    this.#h2.on('stream', createStreamHandler(this.#ctx))
  }

  /** Requests running on the engine now. */
  get inflight(): number {
    return this.#ctx.inflight
  }

  /** True while logged in. */
  get connected(): boolean {
    return this.#session !== undefined
  }

  /** Starts the connect loop and the background metric readings (returns at once). */
  start(): void {
    if (this.#loop !== undefined || this.#shutdown.signal.aborted) return
    // GPU readings start now so the first heartbeat already has them.
    this.#metrics.start()
    this.#loop = this.#run()
  }

  /** Resolves once logged in with data links up (or rejects on abort/eviction). */
  async ready(signal?: AbortSignal): Promise<void> {
    if (this.#session !== undefined) return
    await new Promise<void>((resolve, reject) => {
      const onReady = () => {
        cleanup()
        resolve()
      }
      const onEvicted = (m: string) => {
        cleanup()
        reject(new FabricError(ErrorCodes.SESSION_EVICTED, m))
      }
      const onAbort = () => {
        cleanup()
        reject(new FabricError(ErrorCodes.ABORTED, 'aborted'))
      }
      const cleanup = () => {
        this.off('ready', onReady)
        this.off('evicted', onEvicted)
        signal?.removeEventListener('abort', onAbort)
      }
      this.on('ready', onReady)
      this.on('evicted', onEvicted)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /**
   * Leaves the fabric gracefully: withdraws every model (the server routes nothing new here,
   * while the requests it already sent keep their lanes), lets the requests in flight finish
   * for at most `deadlineMs`, then stops. What is still running at the deadline is cut.
   */
  async drain(deadlineMs: number = TIMEOUTS.drainMs): Promise<void> {
    if (!this.#draining) {
      this.#draining = true
      this.#models = []
      const channel = this.#channel
      if (channel !== undefined && !channel.closed) channel.send(MessageType.ModelsUpdate, { models: [] })
      this.#logger.info(
        { inflight: this.#ctx.inflight, deadlineMs },
        'draining: no new requests; waiting for those in flight',
      )
      const until = Date.now() + deadlineMs
      while (this.#ctx.inflight > 0 && Date.now() < until && !this.#shutdown.signal.aborted)
        await sleep(25, undefined, { signal: this.#shutdown.signal }).catch(() => undefined)
      if (this.#ctx.inflight > 0)
        this.#logger.warn(
          { inflight: this.#ctx.inflight },
          'drain deadline reached; cutting what is still in flight',
        )
    }
    await this.stop()
  }

  /** Closes the connections and waits for the loop to end. In-flight streams are cut. */
  async stop(): Promise<void> {
    this.#shutdown.abort()
    this.#metrics.stop()
    await this.#loop
    await new Promise<void>((resolve) => this.#h2.close(() => resolve()))
  }

  async #run(): Promise<void> {
    const signal = this.#shutdown.signal
    let attempt = 0
    while (!signal.aborted && !this.#evicted && !this.#revoked) {
      let loggedIn = false
      try {
        loggedIn = await this.#session_(signal)
      } catch (err) {
        if (signal.aborted) break
        const message = isFabricError(err) ? err.message : String(err)
        this.#logger.warn(
          { code: isFabricError(err) ? err.code : undefined, err: message },
          'connection to server failed',
        )
      }
      if (signal.aborted || this.#evicted || this.#revoked) break
      if (loggedIn) attempt = 0
      const base = this.#options.reconnectBaseMs ?? TIMEOUTS.reconnectBaseMs
      const cap = this.#options.reconnectMaxMs ?? TIMEOUTS.reconnectMaxMs
      const backoff = Math.min(cap, base * 2 ** attempt) * (0.5 + Math.random() / 2)
      // A throttled login is told how long to wait: retrying earlier only extends the cool-down.
      const delay = Math.max(backoff, this.#retryAfterMs)
      this.#retryAfterMs = 0
      attempt = Math.min(attempt + 1, 30)
      this.#logger.info({ delayMs: Math.round(delay) }, 'reconnecting')
      await sleep(delay, undefined, { signal }).catch(() => undefined)
    }
  }

  /** One control session, from dial to disconnect. Resolves true if it logged in. */
  async #session_(signal: AbortSignal): Promise<boolean> {
    const o = this.#options
    // A hung or absent engine does not keep the worker out of the fabric: it joins with no
    // models and announces them once the engine answers (#refreshModels).
    this.#models = this.#draining ? [] : ((await this.#probeModels(signal)) ?? [])
    const socket = await connectTls({
      host: o.serverHost,
      port: o.controlPort,
      trust: o.trust,
      timeoutMs: o.connectTimeoutMs ?? TIMEOUTS.connectMs,
      signal,
      localAddress: o.localAddress,
    })
    const channel = new ControlChannel(socket, { maxFrameBytes: LIMITS.maxControlFrameBytes })
    const links = new Set<TLSSocket>()
    const timers: NodeJS.Timeout[] = []
    const onAbort = () => channel.close(ErrorCodes.SHUTTING_DOWN, 'worker stopping')
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      const login_ = {
        clientId: o.clientId,
        token: o.token,
        agentVersion: VERSION,
        engineType: o.engine.type,
        models: this.#models,
        hostname: hostname(),
        os: platform(),
        arch: arch(),
        capacity: o.capacity ?? 0,
      }
      // The server reads a Login with a small frame limit (it does not know us yet): a model
      // list too long for it follows in a ModelsUpdate once logged in.
      const deferModels =
        encodeMessage(MessageType.Login, login_).length > LIMITS.maxLoginFrameBytes - LOGIN_HEADROOM_BYTES
      channel.send(MessageType.Login, deferModels ? { ...login_, models: [] } : login_)
      const login = await this.#awaitLogin(channel)
      if (deferModels) channel.send(MessageType.ModelsUpdate, { models: this.#models })
      this.#session = login
      this.#channel = channel
      // Link figures count this session: the server reads them against its session id.
      this.#traffic.bytesIn = 0
      this.#traffic.bytesOut = 0
      channel.startKeepalive(login.pingIntervalMs, login.pingDeadlineMs)
      // GPU readings as fresh as the heartbeats that carry them.
      this.#metrics.gpuSampler.setIntervalMs(login.heartbeatIntervalMs)
      channel.on('message', (m) => this.#onMessage(channel, m))
      const closed = new Promise<FabricError | undefined>((resolve) => channel.once('close', resolve))
      for (let i = 0; i < login.dataConnections; i++) await this.#openLink(links, channel, signal)
      timers.push(
        setInterval(() => {
          // The model list rides along, so a server that missed an update catches up.
          channel.send(MessageType.Heartbeat, {
            inflight: this.#ctx.inflight,
            models: this.#models,
            metrics: this.#metrics.sample(),
          })
        }, login.heartbeatIntervalMs),
        setInterval(
          () => void this.#refreshModels(channel, signal),
          o.modelRefreshMs ?? TIMEOUTS.modelRefreshMs,
        ),
      )
      for (const t of timers) t.unref()
      this.#logger.info({ clientId: o.clientId, models: this.#models }, 'connected to server')
      this.emit('ready', login)
      const err = await closed
      this.emit('disconnected', err)
      return true
    } finally {
      signal.removeEventListener('abort', onAbort)
      for (const t of timers) clearInterval(t)
      this.#session = undefined
      this.#channel = undefined
      channel.destroy()
      for (const link of links) link.destroy()
    }
  }

  #awaitLogin(channel: ControlChannel): Promise<LoginOk> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          done(
            new FabricError(ErrorCodes.TIMEOUT_LOGIN, 'server did not answer the login', { retryable: true }),
          ),
        this.#options.loginTimeoutMs ?? TIMEOUTS.loginMs,
      )
      const onMessage = (m: ControlMessage) => {
        if (m.type === MessageType.LoginOk) done(undefined, m.body)
        else if (m.type === MessageType.LoginError || m.type === MessageType.Close) {
          if (m.type === MessageType.LoginError && m.body.retryAfterMs !== undefined) {
            this.#retryAfterMs = m.body.retryAfterMs
          }
          this.emit('refused', m.body.message)
          done(new FabricError(ErrorCodes.LOGIN_REFUSED, `server refused the login: ${m.body.message}`))
        } else done(new FabricError(ErrorCodes.PROTOCOL, `unexpected message ${m.type} before login`))
      }
      const onClose = (err?: FabricError) =>
        done(
          err ??
            new FabricError(ErrorCodes.LOGIN_REFUSED, 'server closed the connection during login', {
              retryable: true,
            }),
        )
      const done = (err: FabricError | undefined, ok?: LoginOk) => {
        clearTimeout(timer)
        channel.off('message', onMessage)
        channel.off('close', onClose)
        if (err !== undefined) reject(err)
        else resolve(ok!)
      }
      channel.on('message', onMessage)
      channel.on('close', onClose)
    })
  }

  #onMessage(channel: ControlChannel, message: ControlMessage): void {
    if (message.type !== MessageType.Close) return
    if (message.body.code === ErrorCodes.SESSION_EVICTED) {
      this.#evicted = true
      this.#logger.error(
        { clientId: this.#options.clientId },
        'evicted: another worker logged in with this client id',
      )
      this.emit('evicted', message.body.message)
    } else if (message.body.code === ErrorCodes.CREDENTIAL_REVOKED) {
      this.#revoked = true
      this.#logger.error(
        { clientId: this.#options.clientId, code: message.body.code },
        'the server revoked this worker token: disconnected, not retrying (a new token is needed)',
      )
      this.emit('revoked', message.body.message)
    } else {
      this.#logger.warn(
        { code: message.body.code, reason: message.body.message },
        'server closed the session',
      )
    }
    channel.destroy()
  }

  /** Opens one data link and hands it to the HTTP/2 server; reopens it if it drops while the session lives. */
  async #openLink(links: Set<TLSSocket>, channel: ControlChannel, signal: AbortSignal): Promise<void> {
    const o = this.#options
    const socket = await connectTls({
      host: o.serverHost,
      port: o.proxyPort,
      trust: o.trust,
      alpn: ['h2'],
      timeoutMs: o.connectTimeoutMs ?? TIMEOUTS.connectMs,
      signal,
      localAddress: o.localAddress,
    })
    if (channel.closed) {
      socket.destroy()
      return
    }
    links.add(socket)
    const bound = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, TIMEOUTS.bindMs)
      timer.unref()
      this.#ctx.onBind = () => {
        clearTimeout(timer)
        this.#ctx.onBind = undefined
        resolve()
      }
    })
    socket.once('close', () => {
      links.delete(socket)
      if (channel.closed || signal.aborted) return
      // The link died but the session lives: the server keeps routing to our other links meanwhile.
      setTimeout(() => {
        if (!channel.closed && !signal.aborted) {
          this.#openLink(links, channel, signal).catch((err: unknown) => {
            this.#logger.warn({ err: String(err) }, 'data link reconnect failed; restarting session')
            channel.destroy()
          })
        }
      }, 250).unref()
    })
    this.#h2.emit('connection', socket)
    await bound
  }

  async #refreshModels(channel: ControlChannel, signal: AbortSignal): Promise<void> {
    // An engine that does not answer serves nothing: its models are withdrawn so the server
    // stops routing here (instead of retrying elsewhere on every request) until it is back.
    if (this.#draining) return
    const models = (await this.#probeModels(signal)) ?? []
    if (signal.aborted || channel.closed || this.#draining) return
    if (models.length === this.#models.length && models.every((m, i) => m === this.#models[i])) return
    this.#models = models
    this.#logger.info({ models }, 'engine models changed')
    channel.send(MessageType.ModelsUpdate, { models })
  }

  /**
   * Asks the engine for its models, at most `engineProbeMs`: its model list, or undefined when
   * it failed or did not answer in time (also when the engine ignores the abort). Logs when
   * the engine goes from answering to not answering and back, not on every probe.
   */
  async #probeModels(signal: AbortSignal): Promise<string[] | undefined> {
    if (this.#probing !== undefined) return this.#probing
    const limitMs = this.#options.engineProbeMs ?? TIMEOUTS.engineProbeMs
    const probe = AbortSignal.any([signal, AbortSignal.timeout(limitMs)])
    let onAbort: (() => void) | undefined
    const given = new Promise<never>((_, reject) => {
      onAbort = () => reject(new FabricError(ErrorCodes.ENGINE_UNAVAILABLE, `no answer within ${limitMs} ms`))
      probe.addEventListener('abort', onAbort, { once: true })
    })
    const asked = this.#options.engine.listModels(probe)
    asked.catch(() => undefined)
    this.#probing = Promise.race([asked, given])
      .then(
        (models) => {
          if (this.#engineDown !== false)
            this.#logger.info({ models }, this.#engineDown ? 'engine answers again' : 'engine answers')
          this.#engineDown = false
          return models
        },
        (err: unknown) => {
          if (signal.aborted) return undefined
          if (this.#engineDown !== true)
            this.#logger.warn(
              { err: isFabricError(err) ? err.message : String(err), engine: this.#options.engine.type },
              'engine unavailable: no models announced until it answers',
            )
          this.#engineDown = true
          return undefined
        },
      )
      .finally(() => {
        if (onAbort !== undefined) probe.removeEventListener('abort', onAbort)
        this.#probing = undefined
      })
    return this.#probing
  }
}
