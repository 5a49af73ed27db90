import type { Logger } from '../observability/logger.js'
import { silentLogger } from '../observability/logger.js'
import { WorkerRegistry } from '../routing/registry.js'
import { VERSION } from '../version.js'
import { ApiServer } from './api/index.js'
import { StaticKeyAuthenticator, sharedTokenAuthenticator, type WorkerAuthenticator } from './auth.js'
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
  /** Shared worker credential, or a custom authenticator. */
  readonly workerToken?: string
  readonly authenticateWorker?: WorkerAuthenticator
  readonly logger?: Logger
  readonly pingIntervalMs?: number
  readonly pingDeadlineMs?: number
  readonly heartbeatIntervalMs?: number
  readonly loginTimeoutMs?: number
  readonly maxBodyBytes?: number
  readonly maxFrameBytes?: number
  readonly firstByteTimeoutMs?: number
  readonly idleTimeoutMs?: number
  readonly dataConnections?: number
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
  readonly registry = new WorkerRegistry()
  readonly ports: FabricPorts = { control: 0, proxy: 0, public: 0, api: 0 }
  readonly #control: ControlServer
  readonly #dataplane: DataPlaneServer
  readonly #gateway: Gateway
  readonly #api: ApiServer
  readonly #logger: Logger

  constructor(options: FabricServerOptions) {
    const logger = options.logger ?? silentLogger()
    this.#logger = logger
    const authenticate =
      options.authenticateWorker ??
      (options.workerToken !== undefined ? sharedTokenAuthenticator(options.workerToken) : undefined)
    if (authenticate === undefined) throw new Error('FabricServer needs workerToken or authenticateWorker')
    const keys = new StaticKeyAuthenticator(options.apiKeys)
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
    } as ConstructorParameters<typeof ControlServer>[0])
    this.#dataplane = new DataPlaneServer({
      host: options.host,
      port: options.proxyPort,
      cert: options.cert,
      key: options.key,
      registry,
      logger: logger.child({ component: 'dataplane' }),
    })
    this.#gateway = new Gateway({
      host: options.host,
      port: options.publicPort,
      registry,
      keys,
      logger: logger.child({ component: 'gateway' }),
      version: VERSION,
      tls: options.publicTls,
      maxBodyBytes: options.maxBodyBytes,
      firstByteTimeoutMs: options.firstByteTimeoutMs,
      idleTimeoutMs: options.idleTimeoutMs,
    } as ConstructorParameters<typeof Gateway>[0])
    this.#api = new ApiServer({ host: options.host, port: options.apiPort, registry, keys, version: VERSION })
  }

  /** Binds every port. */
  async start(): Promise<FabricPorts> {
    this.ports.control = await this.#control.start()
    this.ports.proxy = await this.#dataplane.start()
    this.ports.public = await this.#gateway.start()
    this.ports.api = await this.#api.start()
    this.#logger.info({ ports: this.ports }, 'fabric server listening')
    return this.ports
  }

  /** Closes every port and every worker connection. */
  async stop(): Promise<void> {
    await Promise.allSettled([this.#gateway.stop(), this.#api.stop()])
    await Promise.allSettled([this.#control.stop(), this.#dataplane.stop()])
  }
}
