import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ErrorCodes } from '../../errors/index.js'
import type { WorkerRegistry } from '../../routing/registry.js'
import type { WorkerSession } from '../../routing/worker-session.js'
import type { StaticKeyAuthenticator } from '../auth.js'
import { sendError } from '../gateway/errors.js'

/** Options of the management API port. */
export interface ApiServerOptions {
  readonly host: string
  readonly port: number
  readonly registry: WorkerRegistry
  /** Keys allowed to read the management API. */
  readonly keys: StaticKeyAuthenticator
  readonly version: string
}

/** JSON view of one worker, as the management API shows it. */
export function describeWorker(w: WorkerSession) {
  return {
    clientId: w.clientId,
    sessionId: w.sessionId,
    engineType: w.engineType,
    models: w.models,
    hostname: w.hostname ?? null,
    os: w.os ?? null,
    remoteAddress: w.remoteAddress,
    connectedAt: new Date(w.connectedAt).toISOString(),
    lastHeartbeatAt: new Date(w.lastHeartbeatAt).toISOString(),
    dataLinks: w.linkCount,
    inflight: w.inflight,
    reportedInflight: w.reportedInflight,
    capacity: w.capacity,
    metrics: w.metrics ?? null,
  }
}

/** The management and monitoring REST API (port 18081). */
export class ApiServer {
  readonly #options: ApiServerOptions
  readonly #server: Server
  readonly #startedAt = Date.now()

  constructor(options: ApiServerOptions) {
    this.#options = options
    this.#server = createServer((req, res) => this.#handle(req, res))
  }

  async start(): Promise<number> {
    this.#server.listen(this.#options.port, this.#options.host)
    await once(this.#server, 'listening')
    return (this.#server.address() as AddressInfo).port
  }

  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
    this.#server.closeAllConnections()
    await closed
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    req.resume()
    const path = (req.url ?? '/').split('?')[0]!
    if (path === '/health' || path === '/api/v1/health') {
      json(res, 200, {
        status: 'ok',
        version: this.#options.version,
        uptimeSeconds: (Date.now() - this.#startedAt) / 1000,
      })
      return
    }
    const auth = req.headers.authorization
    const key = auth?.toLowerCase().startsWith('bearer ') ? auth.slice(7).trim() : req.headers['x-api-key']
    if (typeof key !== 'string' || !this.#options.keys.check(key)) {
      sendError(res, 'openai', ErrorCodes.UNAUTHORIZED, 'invalid or missing key')
      return
    }
    const { registry } = this.#options
    if (req.method !== 'GET') {
      sendError(res, 'openai', ErrorCodes.METHOD_NOT_ALLOWED, `${path} takes GET`)
      return
    }
    if (path === '/api/v1/workers') {
      json(res, 200, { workers: [...registry.workers()].map(describeWorker) })
      return
    }
    if (path.startsWith('/api/v1/workers/')) {
      const worker = registry.byClientId(decodeURIComponent(path.slice('/api/v1/workers/'.length)))
      if (worker === undefined) sendError(res, 'openai', ErrorCodes.NOT_FOUND, 'no such worker')
      else json(res, 200, describeWorker(worker))
      return
    }
    if (path === '/api/v1/models') {
      const models = registry.models().map((name) => ({
        name,
        workers: [...registry.workers()].filter((w) => w.models.includes(name)).map((w) => w.clientId),
      }))
      json(res, 200, { models })
      return
    }
    if (path === '/api/v1/stats') {
      let inflight = 0
      for (const w of registry.workers()) inflight += w.inflight
      json(res, 200, { workers: registry.size, models: registry.models().length, inflight })
      return
    }
    sendError(res, 'openai', ErrorCodes.NOT_FOUND, `no route for GET ${path}`)
  }
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}
