import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AdminAuth } from '../../auth/admin.js'
import type { KeyAuthenticator } from '../../auth/authenticator.js'
import type { KeyManager } from '../../auth/manage.js'
import type { CredentialThrottle } from '../../auth/throttle.js'
import { LIMITS, TIMEOUTS } from '../../config/defaults.js'
import { ErrorCodes, FabricError, isFabricError } from '../../errors/index.js'
import type { Logger } from '../../observability/logger.js'
import type { ServerMetrics } from '../../observability/metrics.js'
import type { WorkerRegistry } from '../../routing/registry.js'
import type { Store } from '../../store/index.js'
import type { ConnectionBudget } from '../connections.js'
import { sendError } from '../gateway/errors.js'
import { closeAfterResponse } from '../http.js'
import { closeServer, listen } from '../listen.js'
import { type ApiApp, createApiApp, type StaticAssets } from './app.js'

export { describeWorker } from './routes-v1.js'

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
  /** `/metrics` without a key. @default false */
  readonly metricsOpen?: boolean | undefined
  /** CORS allow-list (`*`: any origin); empty or absent: CORS off. */
  readonly corsOrigins?: readonly string[] | undefined
  /** Users' API keys with a management scope; without it only the admin key opens the API. */
  readonly keyAuth?: KeyAuthenticator | undefined
  /** The heartbeat interval told to workers (uptime figures). */
  readonly heartbeatIntervalMs?: number | undefined
  /** The web console's files, served for GET requests outside the API. */
  readonly assets?: StaticAssets | undefined
  /** Telemetry figures for `GET /api/v1/stats` (bus buffer, consumer). */
  readonly telemetryStats?: (() => Record<string, unknown>) | undefined
  /** @default TIMEOUTS.httpHeadersMs */
  readonly headersTimeoutMs?: number | undefined
  /** @default TIMEOUTS.apiRequestMs */
  readonly requestTimeoutMs?: number | undefined
}

/** The management and monitoring REST API (port 18081): `node:http` in front of the Hono app. */
export class ApiServer {
  readonly #options: ApiServerOptions
  readonly #server: Server

  constructor(options: ApiServerOptions) {
    this.#options = options
    const headersTimeout = options.headersTimeoutMs ?? TIMEOUTS.httpHeadersMs
    const requestTimeout = Math.max(headersTimeout, options.requestTimeoutMs ?? TIMEOUTS.apiRequestMs)
    const app = createApiApp({
      registry: options.registry,
      admin: options.admin,
      keyAuth: options.keyAuth,
      keys: options.keys,
      store: options.store,
      version: options.version,
      logger: options.logger,
      throttle: options.throttle,
      startedAt: Date.now(),
      edgeStats: options.edgeStats,
      telemetryStats: options.telemetryStats,
      metrics: options.metrics,
      metricsOpen: options.metricsOpen,
      corsOrigins: options.corsOrigins,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      assets: options.assets,
    })
    this.#server = createServer({ headersTimeout, requestTimeout }, (req, res) => {
      answer(app, req, res).catch((err: unknown) => {
        if (isFabricError(err, ErrorCodes.ABORTED)) {
          res.destroy()
          return
        }
        const fabric = isFabricError(err)
          ? err
          : new FabricError(ErrorCodes.INTERNAL, 'internal error', { cause: err })
        if (fabric.code === ErrorCodes.INTERNAL)
          options.logger.error(
            { err: err instanceof Error ? err.stack : String(err) },
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
}

const MAX_BODY = LIMITS.maxApiBodyBytes

/**
 * Hands one request to the app and writes its answer. The body is read here first, at most
 * MAX_BODY bytes (a larger one is refused with 413 without reading the rest), so the app works
 * on a complete, bounded body; answers are small JSON documents or console files.
 */
async function answer(app: ApiApp, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const method = req.method ?? 'GET'
  let body: Buffer | undefined
  if (method === 'GET' || method === 'HEAD') req.resume()
  else body = await readBody(req)
  // Nothing the API takes is nested deeply; a deeper body would only exhaust the stack of
  // whatever walks it (JSON.stringify, validation), so it is refused before anything does.
  if (body !== undefined && jsonDepthExceeds(body, LIMITS.maxApiJsonDepth))
    throw new FabricError(ErrorCodes.BAD_REQUEST, `body nests deeper than ${LIMITS.maxApiJsonDepth} levels`)
  const headers = new Headers()
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    try {
      headers.append(req.rawHeaders[i]!, req.rawHeaders[i + 1]!)
    } catch {
      throw new FabricError(ErrorCodes.BAD_REQUEST, `malformed header '${req.rawHeaders[i]}'`)
    }
  }
  let request: Request
  try {
    request = new Request(new URL(req.url ?? '/', 'http://api.invalid'), {
      method,
      headers,
      ...(body === undefined || body.length === 0 ? {} : { body }),
    })
  } catch {
    throw new FabricError(ErrorCodes.BAD_REQUEST, 'malformed request target')
  }
  const response = await app.fetch(request, { incoming: req, outgoing: res })
  const payload = Buffer.from(await response.arrayBuffer())
  const out: Record<string, string> = {}
  response.headers.forEach((value, name) => {
    out[name] = value
  })
  if (method !== 'HEAD') out['content-length'] = String(payload.length)
  if (out['connection'] === 'close') closeAfterResponse(req, res)
  res.writeHead(response.status, out)
  res.end(method === 'HEAD' ? undefined : payload)
}

/** Reads a body of at most MAX_BODY bytes; a larger one is refused without reading the rest. */
function readBody(req: IncomingMessage): Promise<Buffer> {
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
      if (size <= MAX_BODY) resolve(Buffer.concat(chunks))
    })
  })
}

/**
 * Whether a JSON text nests arrays and objects deeper than `max` (brackets inside strings do
 * not count). One pass over the bytes, no parsing; meaningful for any text, valid JSON or not.
 */
export function jsonDepthExceeds(text: Uint8Array, max: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (inString) {
      if (c === 0x5c)
        i++ // backslash: skip the escaped byte
      else if (c === 0x22) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true
    } else if (c === 0x5d || c === 0x7d) depth--
  }
  return false
}
