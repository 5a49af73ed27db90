import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AdminAuth } from '../../auth/admin.js'
import { type CreateKeyInput, type KeyManager, publicKeyView } from '../../auth/manage.js'
import type { CredentialThrottle } from '../../auth/throttle.js'
import { LIMITS, TIMEOUTS } from '../../config/defaults.js'
import { ErrorCodes, FabricError, isFabricError } from '../../errors/index.js'
import type { Logger } from '../../observability/logger.js'
import type { ServerMetrics } from '../../observability/metrics.js'
import type { WorkerRegistry } from '../../routing/registry.js'
import type { WorkerSession } from '../../routing/worker-session.js'
import type { Store, StoreTelemetry } from '../../store/index.js'
import { addressKey, type ConnectionBudget } from '../connections.js'
import { sendError } from '../gateway/errors.js'
import {
  closeAfterResponse,
  pathSegments,
  presentedKey,
  queryParams,
  sendJson,
  splitTarget,
  wellFormedQuery,
} from '../http.js'
import { closeServer, listen } from '../listen.js'

/** Options of the management API port. */
export interface ApiServerOptions {
  readonly host: string
  readonly port: number
  readonly registry: WorkerRegistry
  /** Who may use the management API. */
  readonly admin: AdminAuth
  readonly version: string
  readonly logger: Logger
  /** Key management; without a store the key routes answer 503. */
  readonly keys?: KeyManager | undefined
  readonly store?: Store | undefined
  /** Connection caps of this port. */
  readonly budget: ConnectionBudget
  /** Failed admin keys per address. */
  readonly throttle: CredentialThrottle
  /** Extra figures for `GET /api/v1/stats` (connection budgets, throttling). */
  readonly edgeStats?: (() => Record<string, unknown>) | undefined
  /** Served at `GET /metrics` (Prometheus text format, admin key). */
  readonly metrics?: ServerMetrics | undefined
  /** Telemetry figures for `GET /api/v1/stats` (bus buffer, consumer). */
  readonly telemetryStats?: (() => Record<string, unknown>) | undefined
  /** @default TIMEOUTS.httpHeadersMs */
  readonly headersTimeoutMs?: number | undefined
  /** @default TIMEOUTS.apiRequestMs */
  readonly requestTimeoutMs?: number | undefined
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
    idleLanes: w.idleLanes,
    inflight: w.inflight,
    reportedInflight: w.reportedInflight,
    capacity: w.capacity,
    userId: w.userId ?? null,
    /** Bytes this server's data links carried to and from the worker this session. */
    linkBytesToWorker: w.bytesToWorker,
    linkBytesFromWorker: w.bytesFromWorker,
    /** The latest heartbeat's readings (host, disk, network, every GPU). */
    metrics: w.metrics ?? null,
  }
}

const MAX_BODY = LIMITS.maxApiBodyBytes

/** The management and monitoring REST API (port 18081). Everything but `/health` takes the admin key. */
export class ApiServer {
  readonly #options: ApiServerOptions
  readonly #server: Server
  readonly #startedAt = Date.now()

  constructor(options: ApiServerOptions) {
    this.#options = options
    const headersTimeout = options.headersTimeoutMs ?? TIMEOUTS.httpHeadersMs
    const requestTimeout = Math.max(headersTimeout, options.requestTimeoutMs ?? TIMEOUTS.apiRequestMs)
    this.#server = createServer({ headersTimeout, requestTimeout }, (req, res) => {
      // Anything a request throws, synchronously or not, ends as that request's error response.
      let handled: Promise<void>
      try {
        handled = this.#handle(req, res)
      } catch (err) {
        handled = Promise.reject(err)
      }
      handled.catch((err: unknown) => {
        if (isFabricError(err, ErrorCodes.ABORTED)) {
          res.destroy()
          return
        }
        const fabric = isFabricError(err)
          ? err
          : new FabricError(ErrorCodes.INTERNAL, 'internal error', { cause: err })
        if (fabric.code === ErrorCodes.INTERNAL)
          options.logger.error(
            { code: fabric.code, err: err instanceof Error ? err.stack : String(err) },
            'management API error',
          )
        try {
          if (fabric.code === ErrorCodes.BODY_TOO_LARGE) closeAfterResponse(req, res)
          sendError(res, 'openai', fabric.code, fabric.message)
        } catch {
          res.destroy()
        }
      })
    })
    options.budget.guard(this.#server, false)
  }

  async start(): Promise<number> {
    return listen(this.#server, this.#options.port, this.#options.host, this.#options.logger)
  }

  async stop(): Promise<void> {
    await closeServer(this.#server, () => this.#server.closeAllConnections())
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = splitTarget(req.url)
    const path = target.path
    const method = req.method ?? 'GET'
    if (path === '/health' || path === '/api/v1/health') {
      req.resume()
      sendJson(res, 200, {
        status: 'ok',
        version: this.#options.version,
        uptimeSeconds: (Date.now() - this.#startedAt) / 1000,
      })
      return
    }
    const { throttle } = this.#options
    const wait = throttle.refuses(req.socket.remoteAddress)
    if (wait > 0) {
      closeAfterResponse(req, res)
      sendError(res, 'openai', ErrorCodes.AUTH_THROTTLED, 'too many failed admin keys from this address', {
        'retry-after': String(Math.ceil(wait / 1000)),
      })
      return
    }
    const key = presentedKey(req.headers)
    if (key === undefined || !this.#options.admin.check(key)) {
      if (key !== undefined) throttle.failure(addressKey(req.socket.remoteAddress), undefined, 'admin key')
      closeAfterResponse(req, res)
      sendError(res, 'openai', ErrorCodes.UNAUTHORIZED, 'the management API needs the admin key')
      return
    }
    let body: unknown = {}
    if (method === 'POST' || method === 'PUT') body = await readJson(req)
    else req.resume()
    const { registry } = this.#options
    if (path === '/metrics' && method === 'GET' && this.#options.metrics !== undefined) {
      const { body: text, contentType } = await this.#options.metrics.expose()
      res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) })
      res.end(text)
      return
    }
    const segments = pathSegments(path)
    if (segments === undefined || !wellFormedQuery(target.query))
      throw new FabricError(ErrorCodes.BAD_REQUEST, 'malformed percent-escape in the request target')
    if (segments[0] !== 'api' || segments[1] !== 'v1')
      throw new FabricError(ErrorCodes.NOT_FOUND, `no route for ${method} ${path}`)
    const [, , resource, id, action] = segments

    switch (
      `${method} ${resource}${id === undefined ? '' : '/:id'}${action === undefined ? '' : `/${action}`}`
    ) {
      case 'GET workers':
        return sendJson(res, 200, { workers: [...registry.workers()].map(describeWorker) })
      case 'GET workers/:id': {
        const worker = registry.byClientId(id!)
        if (worker !== undefined) return sendJson(res, 200, describeWorker(worker))
        const stored = await this.#options.store?.getWorker(id!)
        if (stored === undefined) throw new FabricError(ErrorCodes.NOT_FOUND, 'no such worker')
        return sendJson(res, 200, stored)
      }
      case 'GET models':
        return sendJson(res, 200, {
          models: registry.models().map((name) => ({
            name,
            workers: [...registry.workers()].filter((w) => w.models.includes(name)).map((w) => w.clientId),
          })),
        })
      case 'GET stats': {
        let inflight = 0
        for (const w of registry.workers()) inflight += w.inflight
        return sendJson(res, 200, {
          workers: registry.size,
          models: registry.models().length,
          inflight,
          ...this.#options.edgeStats?.(),
          telemetry: this.#options.telemetryStats?.() ?? null,
        })
      }
      case 'GET workers/:id/stats': {
        const store = this.#storeOrFail() as Store & Partial<StoreTelemetry>
        if (store.listDailyStats === undefined) throw new FabricError(ErrorCodes.NOT_FOUND, 'no statistics')
        const clientId = id!
        const [daily, devices, system, deviceInfo, heartbeats] = await Promise.all([
          store.listDailyStats(clientId),
          store.listDeviceDailyStats!(clientId),
          store.getSystemInfo!(clientId),
          store.listDeviceInfo!(clientId),
          store.listHeartbeats!(clientId, 100),
        ])
        return sendJson(res, 200, {
          clientId,
          system: system ?? null,
          devices: deviceInfo,
          daily,
          deviceDaily: devices,
          heartbeats,
        })
      }
      case 'GET usage': {
        const query = queryParams(target.query)
        const text = (name: string): string | undefined =>
          query.has(name) ? String(query.get(name)) : undefined
        const day = (name: string): string | undefined => {
          const value = text(name)
          if (value !== undefined && (!/^\d{4}-\d{2}-\d{2}$/.test(value) || Number.isNaN(Date.parse(value))))
            throw new FabricError(ErrorCodes.BAD_REQUEST, `'${name}' must be a day, YYYY-MM-DD`)
          return value
        }
        const limit = query.has('limit') ? Number(query.get('limit')) : undefined
        if (limit !== undefined && (!Number.isInteger(limit) || limit <= 0))
          throw new FabricError(ErrorCodes.BAD_REQUEST, "'limit' must be a positive integer")
        const usage = await this.#storeOrFail().listUsage({
          keyId: text('keyId'),
          userId: text('userId'),
          model: text('model'),
          workerId: text('workerId'),
          from: day('from'),
          to: day('to'),
          limit,
        })
        return sendJson(res, 200, { usage })
      }
      case 'GET keys':
        return sendJson(res, 200, { keys: (await this.#keys().list()).map(publicKeyView) })
      case 'GET keys/:id': {
        const record = await this.#keys().get(id!)
        if (record === undefined) throw new FabricError(ErrorCodes.NOT_FOUND, 'no such key')
        return sendJson(res, 200, publicKeyView(record))
      }
      case 'POST keys': {
        const created = await this.#keys().create(keyInput(body))
        return sendJson(res, 201, { ...publicKeyView(created.record), key: created.key })
      }
      case 'DELETE keys/:id':
      case 'POST keys/:id/revoke': {
        const revoked = await this.#keys().revoke(id!)
        if (revoked === undefined) throw new FabricError(ErrorCodes.NOT_FOUND, 'no such active key')
        return sendJson(res, 200, { id: revoked.id, revoked: true })
      }
      case 'POST keys/:id/rotate': {
        const rotated = await this.#keys().rotate(id!)
        return sendJson(res, 201, {
          ...publicKeyView(rotated.record),
          key: rotated.key,
          replaced: rotated.revoked.id,
        })
      }
      case 'GET requests': {
        const query = queryParams(target.query)
        const limit = query.has('limit') ? Number(query.get('limit')) : undefined
        if (limit !== undefined && (!Number.isInteger(limit) || limit <= 0)) {
          throw new FabricError(ErrorCodes.BAD_REQUEST, "'limit' must be a positive integer")
        }
        const since = query.has('since') ? new Date(String(query.get('since'))) : undefined
        if (since !== undefined && Number.isNaN(since.getTime())) {
          throw new FabricError(ErrorCodes.BAD_REQUEST, "'since' is not a date")
        }
        const requests = await this.#storeOrFail().listRequests({
          ...(query.has('keyId') ? { keyId: String(query.get('keyId')) } : {}),
          ...(since === undefined ? {} : { since }),
          ...(limit === undefined ? {} : { limit }),
        })
        return sendJson(res, 200, { requests })
      }
      case 'GET users': {
        const store = this.#storeOrFail()
        return sendJson(res, 200, { users: await store.listUsers() })
      }
      case 'POST users': {
        const name = (body as { name?: unknown } | null)?.name
        if (typeof name !== 'string' || name.length === 0 || name.length > 128) {
          throw new FabricError(
            ErrorCodes.BAD_REQUEST,
            "'name' must be a non-empty string of at most 128 characters",
          )
        }
        return sendJson(res, 201, await this.#storeOrFail().ensureUser(name))
      }
    }
    throw new FabricError(ErrorCodes.NOT_FOUND, `no route for ${method} ${path}`)
  }

  #keys(): KeyManager {
    if (this.#options.keys === undefined) {
      throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, 'key management needs the database')
    }
    return this.#options.keys
  }

  #storeOrFail(): Store {
    if (this.#options.store === undefined) throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, 'no database')
    return this.#options.store
  }
}

const FIELD_ALIASES: Record<string, string> = {
  rpm: 'rpmLimit',
  tpm: 'tpmLimit',
  workers: 'workerIds',
  dedicated: 'workerIds',
  access: 'accessLevel',
}

/** Validates a key-creation body; unknown fields are refused so typos do not pass silently. */
function keyInput(body: unknown): CreateKeyInput {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new FabricError(ErrorCodes.BAD_REQUEST, 'body must be a JSON object')
  }
  const b: Record<string, unknown> = {}
  for (const [raw, value] of Object.entries(body as Record<string, unknown>)) {
    // Accept snake_case and the CLI's short names as well (rpm, tpm, workers).
    const camel = raw.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())
    b[FIELD_ALIASES[camel] ?? camel] = value
  }
  const known = new Set([
    'name',
    'user',
    'kind',
    'accessLevel',
    'workerIds',
    'models',
    'rpmLimit',
    'tpmLimit',
    'expiresAt',
    'expiresInDays',
  ])
  for (const k of Object.keys(b))
    if (!known.has(k)) throw new FabricError(ErrorCodes.BAD_REQUEST, `unknown field '${k}'`)
  const str = (k: string) => {
    const v = b[k]
    if (v === undefined || v === null) return undefined
    if (typeof v !== 'string' || v.length > 256)
      throw new FabricError(ErrorCodes.BAD_REQUEST, `'${k}' must be a string`)
    return v
  }
  const list = (k: string) => {
    const v = b[k]
    if (v === undefined || v === null) return undefined
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
      throw new FabricError(ErrorCodes.BAD_REQUEST, `'${k}' must be a list of strings`)
    }
    return v as string[]
  }
  const int = (k: string) => {
    const v = b[k]
    if (v === undefined || v === null) return undefined
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new FabricError(ErrorCodes.BAD_REQUEST, `'${k}' must be a positive integer`)
    }
    return v
  }
  const kind = str('kind')
  if (kind !== undefined && kind !== 'api' && kind !== 'worker')
    throw new FabricError(ErrorCodes.BAD_REQUEST, "'kind' is api or worker")
  const accessLevel = str('accessLevel')
  if (accessLevel !== undefined && accessLevel !== 'shared' && accessLevel !== 'dedicated') {
    throw new FabricError(ErrorCodes.BAD_REQUEST, "'accessLevel' is shared or dedicated")
  }
  let expiresAt: Date | undefined
  const at = str('expiresAt')
  if (at !== undefined) {
    expiresAt = new Date(at)
    if (Number.isNaN(expiresAt.getTime()))
      throw new FabricError(ErrorCodes.BAD_REQUEST, "'expiresAt' is not a date")
  }
  const days = int('expiresInDays')
  if (days !== undefined) expiresAt = new Date(Date.now() + days * 86_400_000)
  const input: Record<string, unknown> = {
    kind,
    user: str('user'),
    name: str('name'),
    accessLevel,
    workerIds: list('workerIds'),
    models: list('models'),
    rpmLimit: int('rpmLimit'),
    tpmLimit: int('tpmLimit'),
    expiresAt,
  }
  for (const k of Object.keys(input)) if (input[k] === undefined) delete input[k]
  return input as CreateKeyInput
}

/**
 * Reads a JSON body of at most MAX_BODY bytes. An oversized body is refused without reading
 * the rest, and without destroying the request: the 413 must still reach the client.
 */
function readJson(req: IncomingMessage): Promise<unknown> {
  const tooLarge = () => new FabricError(ErrorCodes.BODY_TOO_LARGE, `body exceeds ${MAX_BODY} bytes`)
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY) return Promise.reject(tooLarge())
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_BODY) {
        req.off('data', onData)
        req.pause()
        reject(tooLarge())
        return
      }
      chunks.push(chunk)
    }
    req.on('data', onData)
    // The client went away mid-body: nothing to answer, nothing went wrong here.
    req.once('error', () => reject(new FabricError(ErrorCodes.ABORTED, 'the client went away')))
    req.once('end', () => {
      if (size > MAX_BODY) return
      if (size === 0) {
        resolve({})
        return
      }
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
      } catch {
        reject(new FabricError(ErrorCodes.BAD_REQUEST, 'body is not valid JSON'))
      }
    })
  })
}
