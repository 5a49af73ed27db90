import { AdminAuth } from '../auth/admin.js'
import { KeyAuthenticator } from '../auth/authenticator.js'
import { sharedTokenAuthenticator, type WorkerAuthenticator } from '../auth/credentials.js'
import type { KeyManager } from '../auth/manage.js'
import type { RateLimiter } from '../auth/rate-limit.js'
import { CredentialThrottle } from '../auth/throttle.js'
import { defaultEdgeLimits, type EdgeLimits, type PortName } from '../config/defaults.js'
import type { Logger } from '../observability/logger.js'
import { silentLogger } from '../observability/logger.js'
import { ServerMetrics } from '../observability/metrics.js'
import type { AffinityMode } from '../routing/affinity.js'
import type { WaitQueuesOptions } from '../routing/queue.js'
import { type RoutingStrategy, WorkerRegistry } from '../routing/registry.js'
import type { WorkerSession } from '../routing/worker-session.js'
import type { Store } from '../store/index.js'
import type { TelemetryPublisher } from '../telemetry/publisher.js'
import { VERSION } from '../version.js'
import { consoleAssets } from './api/console.js'
import { ApiServer } from './api/index.js'
import { ConnectionBudget } from './connections.js'
import { ControlServer } from './control/index.js'
import { DataPlaneServer } from './dataplane/index.js'
import { Gateway } from './gateway/index.js'

/** Options of a fabric server. Ports of 0 pick free ports (tests). */
export interface FabricServerOptions {
  /** Address every port binds to. */
  readonly host: string
  readonly controlPort: number
  readonly proxyPort: number
  readonly publicPort: number
  readonly apiPort: number
  /** Certificate and key (PEM) of the control and proxy ports. */
  readonly cert: string
  readonly key: string
  /** Serve the public port over HTTPS with this certificate instead of plain HTTP. */
  readonly publicTls?: { cert: string; key: string } | undefined
  /** Static API keys accepted on the public port (the seed's `--api-key` fallback). */
  readonly apiKeys: readonly string[]
  /** API keys beyond the static ones (database, caches). Default: the static keys only. */
  readonly keyAuthenticator?: KeyAuthenticator
  readonly rateLimiter?: RateLimiter | undefined
  /** Admin of the management API. Default: the first static API key. */
  readonly admin?: AdminAuth
  readonly keyManager?: KeyManager | undefined
  /** Publishes heartbeats and usage events to the bus (telemetry); none when absent. */
  readonly telemetry?: TelemetryPublisher | undefined
  /** Telemetry figures (bus, consumer) for `GET /api/v1/stats`. */
  readonly telemetryStats?: (() => Record<string, unknown>) | undefined
  readonly store?: Store | undefined
  /** Told when workers come and go (to record them in the store). */
  readonly workerEvents?: WorkerEvents | undefined
  /** Shared worker credential, or a custom authenticator. */
  readonly workerToken?: string
  readonly authenticateWorker?: WorkerAuthenticator
  readonly logger?: Logger
  readonly pingIntervalMs?: number
  readonly pingDeadlineMs?: number
  readonly heartbeatIntervalMs?: number
  /** How a worker is chosen among the eligible ones. @default 'p2c' */
  readonly routing?: RoutingStrategy | undefined
  /** Keep sessions or prompt prefixes on one worker (engines' prefix caches). @default 'off' */
  readonly affinity?: AffinityMode | undefined
  /** Requests waiting for a worker with room (defaults: `LIMITS.maxQueuedPerModel`, `TIMEOUTS.queueWaitMs`). */
  readonly queues?: WaitQueuesOptions | undefined
  /** Management API: CORS allow-list (`*`: any); empty or absent: off. */
  readonly corsOrigins?: readonly string[] | undefined
  /** Management API: `/metrics` without a key. */
  readonly metricsOpen?: boolean | undefined
  readonly loginTimeoutMs?: number
  readonly maxBodyBytes?: number
  readonly maxFrameBytes?: number
  readonly firstByteTimeoutMs?: number
  readonly idleTimeoutMs?: number
  readonly dataConnections?: number
  /** Connection caps, handshake/header timeouts and credential throttling (defaults: `defaultEdgeLimits()`). */
  readonly edge?: Partial<EdgeLimits> | undefined
}

/** Hooks for workers logging in and out. Must not throw; errors are theirs to log. */
export interface WorkerEvents {
  online(session: WorkerSession): void
  offline(session: WorkerSession): void
}

/** Bound ports of a running server. */
export interface FabricPorts {
  control: number
  proxy: number
  public: number
  api: number
}

/** The fabric server: control, proxy, public and API ports around one worker registry. */
export class FabricServer {
  readonly registry: WorkerRegistry
  /** Prometheus metrics (`GET /metrics` on the API port). */
  readonly metrics: ServerMetrics
  readonly ports: FabricPorts = { control: 0, proxy: 0, public: 0, api: 0 }
  readonly #control: ControlServer
  readonly #dataplane: DataPlaneServer
  readonly #gateway: Gateway
  readonly #api: ApiServer
  readonly #logger: Logger
  readonly #keys: KeyAuthenticator
  readonly #onStopped: (() => Promise<void>)[] = []
  readonly #budgets: Record<PortName, ConnectionBudget>
  /** Failed credentials on every port, per address and per key prefix / client id. */
  readonly throttle: CredentialThrottle

  constructor(options: FabricServerOptions) {
    this.registry = new WorkerRegistry({ queues: options.queues, strategy: options.routing })
    const logger = options.logger ?? silentLogger()
    this.#logger = logger
    this.metrics = new ServerMetrics(this.registry, options.telemetryStats)
    const edge: EdgeLimits = { ...defaultEdgeLimits(), ...options.edge }
    const budget = (port: PortName) =>
      new ConnectionBudget({
        maxConnections: edge.maxConnections[port],
        maxPerAddress: edge.maxConnectionsPerAddress[port],
        maxPending: edge.maxPendingConnections,
        maxPendingPerAddress: edge.maxPendingPerAddress,
      })
    this.#budgets = {
      control: budget('control'),
      proxy: budget('proxy'),
      public: budget('public'),
      api: budget('api'),
    }
    this.throttle = new CredentialThrottle({
      logger: logger.child({ component: 'auth' }),
      maxFailures: edge.maxAuthFailures,
      windowMs: edge.failureWindowMs,
      cooldownMs: edge.authCooldownMs,
      maxCooldownMs: edge.authCooldownMaxMs,
    })
    const authenticate =
      options.authenticateWorker ??
      (options.workerToken !== undefined ? sharedTokenAuthenticator(options.workerToken) : undefined)
    if (authenticate === undefined) throw new Error('FabricServer needs workerToken or authenticateWorker')
    const keys =
      options.keyAuthenticator ??
      new KeyAuthenticator({ staticKeys: options.apiKeys, logger: logger.child({ component: 'keys' }) })
    this.#keys = keys
    const { registry } = this
    this.#control = new ControlServer({
      host: options.host,
      port: options.controlPort,
      cert: options.cert,
      key: options.key,
      registry,
      authenticate,
      logger: logger.child({ component: 'control' }),
      maxFrameBytes: options.maxFrameBytes,
      loginTimeoutMs: options.loginTimeoutMs,
      pingIntervalMs: options.pingIntervalMs,
      pingDeadlineMs: options.pingDeadlineMs,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      dataConnections: options.dataConnections,
      events: options.workerEvents,
      telemetry: options.telemetry,
      budget: this.#budgets.control,
      throttle: this.throttle,
      maxLoginFrameBytes: edge.maxLoginFrameBytes,
      handshakeTimeoutMs: edge.tlsHandshakeMs,
      loginRefusalDelayMs: edge.loginRefusalDelayMs,
    })
    this.#dataplane = new DataPlaneServer({
      host: options.host,
      port: options.proxyPort,
      cert: options.cert,
      key: options.key,
      registry,
      logger: logger.child({ component: 'dataplane' }),
      pingIntervalMs: options.pingIntervalMs,
      pingDeadlineMs: options.pingDeadlineMs,
      budget: this.#budgets.proxy,
      handshakeTimeoutMs: edge.tlsHandshakeMs,
    })
    this.#gateway = new Gateway({
      host: options.host,
      port: options.publicPort,
      registry,
      keys,
      rateLimiter: options.rateLimiter,
      affinity: options.affinity,
      telemetry: options.telemetry,
      metrics: this.metrics,
      logger: logger.child({ component: 'gateway' }),
      version: VERSION,
      tls: options.publicTls,
      maxBodyBytes: options.maxBodyBytes,
      firstByteTimeoutMs: options.firstByteTimeoutMs,
      idleTimeoutMs: options.idleTimeoutMs,
      budget: this.#budgets.public,
      throttle: this.throttle,
      headersTimeoutMs: edge.httpHeadersMs,
      requestTimeoutMs: edge.httpRequestMs,
      handshakeTimeoutMs: edge.tlsHandshakeMs,
    })
    this.#api = new ApiServer({
      host: options.host,
      port: options.apiPort,
      registry,
      admin: options.admin ?? AdminAuth.forKey(options.apiKeys[0] ?? ''),
      version: VERSION,
      logger: logger.child({ component: 'api' }),
      keys: options.keyManager,
      store: options.store,
      budget: this.#budgets.api,
      throttle: this.throttle,
      edgeStats: () => this.edgeStats(),
      telemetryStats: options.telemetryStats,
      metrics: this.metrics,
      metricsOpen: options.metricsOpen,
      corsOrigins: options.corsOrigins,
      keyAuth: keys,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      assets: consoleAssets(),
      headersTimeoutMs: edge.httpHeadersMs,
      requestTimeoutMs: edge.apiRequestMs,
    })
    // A revoked worker token cuts the workers logged in with it, here and (through the shared
    // cache and the database poll) on every other server.
    keys.onRevoked((prefix, confirmed) => this.#revoked(prefix, confirmed, options.store))
  }

  /** Connection budgets per port and credential throttling, for the management API. */
  edgeStats(): Record<string, unknown> {
    return {
      connections: {
        control: this.#budgets.control.snapshot(),
        proxy: this.#budgets.proxy.snapshot(),
        public: this.#budgets.public.snapshot(),
        api: this.#budgets.api.snapshot(),
      },
      authFailures: this.throttle.snapshot(),
    }
  }

  #revoked(prefix: string, confirmed: boolean, store: Store | undefined): void {
    let held = false
    for (const session of this.registry.workers()) if (session.credential === prefix) held = true
    if (!held) return
    if (confirmed || store === undefined) {
      this.#control.revokeCredential(prefix)
      return
    }
    // Heard through pub/sub: make sure it is a revocation before cutting anyone off.
    store.findKeyByPrefix(prefix).then(
      (record) => {
        if (record === undefined || record.revokedAt !== null) this.#control.revokeCredential(prefix)
      },
      () => undefined,
    )
  }

  /** Binds every port. */
  async start(): Promise<FabricPorts> {
    this.#keys.start()
    try {
      this.ports.control = await this.#control.start()
      this.ports.proxy = await this.#dataplane.start()
      this.ports.public = await this.#gateway.start()
      this.ports.api = await this.#api.start()
    } catch (err) {
      // A port that cannot be bound (in use): release what did start, timers included.
      await this.#stopServing(0)
      throw err
    }
    this.#logger.info({ ports: this.ports }, 'fabric server listening')
    return this.ports
  }

  /** Drops a key from every cache (after a revocation through the management API). */
  invalidateKey(prefix: string): Promise<void> {
    return this.#keys.invalidate(prefix)
  }

  /** Runs `fn` after the server has stopped (to close what the caller opened for it). */
  onStopped(fn: () => Promise<void>): void {
    this.#onStopped.push(fn)
  }

  /**
   * Stops the server: the public port stops accepting and its requests in flight get up to
   * `drainMs` (default: none) to finish over the still-open worker links; then every port and
   * worker connection closes.
   */
  async stop(options: { drainMs?: number } = {}): Promise<void> {
    await this.#stopServing(options.drainMs ?? 0)
    for (const fn of this.#onStopped.splice(0)) await fn().catch(() => undefined)
  }

  async #stopServing(drainMs: number): Promise<void> {
    await Promise.allSettled([this.#gateway.stop(drainMs), this.#api.stop()])
    await Promise.allSettled([this.#control.stop(), this.#dataplane.stop()])
    this.#keys.stop()
  }
}
