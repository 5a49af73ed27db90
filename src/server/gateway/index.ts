import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http'
import { createSecureServer } from 'node:http2'
import type { KeyAuthenticator } from '../../auth/authenticator.js'
import { parseKey } from '../../auth/keys.js'
import type { Principal } from '../../auth/principal.js'
import { RateLimiter } from '../../auth/rate-limit.js'
import type { CredentialThrottle } from '../../auth/throttle.js'
import { LIMITS, TIMEOUTS } from '../../config/defaults.js'
import { type ErrorCode, ErrorCodes } from '../../errors/index.js'
import type { Logger } from '../../observability/logger.js'
import { RESPONSE_ROUTE, type ServerMetrics, type StampedResponse } from '../../observability/metrics.js'
import { encodeLaneRequest } from '../../protocol/lane.js'
import { type AffinityMode, affinityKey, SESSION_HEADER } from '../../routing/affinity.js'
import type { WorkerRegistry } from '../../routing/registry.js'
import type { TelemetryPublisher } from '../../telemetry/publisher.js'
import { TLS13 } from '../../tls/index.js'
import { addressKey, type ConnectionBudget } from '../connections.js'
import {
  closeAfterResponse,
  decodeSegment,
  presentedKey,
  sendJson,
  splitTarget,
  wellFormedQuery,
} from '../http.js'
import { closeServer, listen } from '../listen.js'
import { type ApiFamily, sendError } from './errors.js'
import { AnswerMeter } from './meter.js'
import { modelsAsOllamaTags, modelsAsOpenAI } from './models.js'
import { Relay } from './relay.js'
import { withStreamUsage } from './usage-stream.js'

/** Inference routes forwarded to a worker, with their API family. */
const FORWARDED: ReadonlyMap<string, ApiFamily> = new Map([
  ['/v1/chat/completions', 'openai'],
  ['/v1/completions', 'openai'],
  ['/v1/embeddings', 'openai'],
  ['/api/chat', 'ollama'],
  ['/api/generate', 'ollama'],
  ['/api/embed', 'ollama'],
  ['/api/embeddings', 'ollama'],
])

/** Paths the metrics name (anything else is 'other': a label value per stranger's path would be unbounded). */
const KNOWN_ROUTES: ReadonlySet<string> = new Set([
  '/v1/models',
  '/api/tags',
  '/api/version',
  '/api/show',
  '/api/ps',
  '/health',
  '/healthz',
])

/** Ollama API version we answer `/api/version` with (clients check it for features). */
const OLLAMA_COMPAT_VERSION = '0.6.0'

/** Options of the public port. */
export interface GatewayOptions {
  readonly host: string
  readonly port: number
  readonly registry: WorkerRegistry
  readonly keys: KeyAuthenticator
  /** Keep sessions or prompt prefixes on one worker (see routing/affinity.ts). @default 'off' */
  readonly affinity?: AffinityMode | undefined
  /** Per-key request and token limits; none when absent. */
  readonly rateLimiter?: RateLimiter | undefined
  /** Logs requests of shared keys; none when absent. */
  /** Prometheus metrics of this server; none when absent. */
  readonly metrics?: ServerMetrics | undefined
  /** Publishes one usage event per forwarded request (telemetry); none when absent. */
  readonly telemetry?: TelemetryPublisher | undefined
  readonly logger: Logger
  readonly version: string
  /** Serve HTTPS (TLS 1.3, HTTP/2 and HTTP/1.1) with this certificate. */
  readonly tls?: { cert: string; key: string } | undefined
  readonly maxBodyBytes?: number
  readonly maxAttempts?: number
  readonly firstByteTimeoutMs?: number
  readonly idleTimeoutMs?: number
  /** Connection caps of this port (TLS handshakes count as pending). */
  readonly budget: ConnectionBudget
  /** Failed API keys per address and key prefix. */
  readonly throttle: CredentialThrottle
  /** @default TIMEOUTS.httpHeadersMs */
  readonly headersTimeoutMs?: number | undefined
  /** @default TIMEOUTS.httpRequestMs */
  readonly requestTimeoutMs?: number | undefined
  /** @default TIMEOUTS.tlsHandshakeMs */
  readonly handshakeTimeoutMs?: number | undefined
}

/** Sent on every HTTPS answer: a year, the usual value; clients then refuse plain HTTP to this host. */
const HSTS = 'max-age=31536000'

/**
 * The public port: API-key authentication, OpenAI- and Ollama-compatible routes, and the
 * forwarding of each request as one HTTP/2 stream to a worker that serves its model.
 * Bodies are forwarded as received (parsed once for the model name, never re-serialised);
 * responses are relayed chunk by chunk with backpressure.
 */
export class Gateway {
  readonly #options: GatewayOptions
  readonly #server: Server
  readonly #maxBodyBytes: number
  readonly #maxAttempts: number
  readonly #firstByteMs: number
  readonly #idleMs: number
  /** Requests being answered (for a graceful stop). */
  #active = 0
  #drained: (() => void) | undefined
  readonly #pick: WorkerRegistry['pick']
  readonly #serves: WorkerRegistry['serves']
  readonly #pickAffine: WorkerRegistry['pickAffine']
  readonly #affinity: AffinityMode
  readonly #tls: boolean
  /** A response's 'close' listener (one function for every response: `this` is the response). */
  readonly #onResponseClosed: (this: StampedResponse) => void

  constructor(options: GatewayOptions) {
    this.#options = options
    const gateway = this
    const { metrics } = options
    this.#onResponseClosed = function (this: StampedResponse) {
      metrics?.response(this)
      if (--gateway.#active === 0) gateway.#drained?.()
    }
    this.#maxBodyBytes = options.maxBodyBytes ?? LIMITS.maxRequestBodyBytes
    this.#maxAttempts = options.maxAttempts ?? LIMITS.maxAttemptsPerRequest
    this.#firstByteMs = options.firstByteTimeoutMs ?? TIMEOUTS.firstByteMs
    this.#idleMs = options.idleTimeoutMs ?? TIMEOUTS.idleMs
    this.#pick = options.registry.pick.bind(options.registry)
    this.#serves = options.registry.serves.bind(options.registry)
    this.#pickAffine = options.registry.pickAffine.bind(options.registry)
    this.#affinity = options.affinity ?? 'off'
    // Each request's failures stay with that request: a bug or an input we did not foresee
    // answers 500 (or cuts that one response), never the process and its other requests.
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      try {
        this.#handle(req, res)
      } catch (err) {
        this.#failed(res, 'openai', err)
      }
    }
    this.#tls = options.tls !== undefined
    const headersTimeout = options.headersTimeoutMs ?? TIMEOUTS.httpHeadersMs
    const requestTimeout = Math.max(headersTimeout, options.requestTimeoutMs ?? TIMEOUTS.httpRequestMs)
    if (options.tls === undefined) {
      this.#server = createHttpServer(
        { noDelay: true, keepAliveTimeout: 65_000, headersTimeout, requestTimeout },
        handler,
      )
      options.budget.guard(this.#server, false)
    } else {
      const handshakeMs = options.handshakeTimeoutMs ?? TIMEOUTS.tlsHandshakeMs
      const secure = createSecureServer(
        {
          ...TLS13,
          cert: options.tls.cert,
          key: options.tls.key,
          allowHTTP1: true,
          handshakeTimeout: handshakeMs,
        },
        handler as never,
      )
      // Until its handshake completes a connection is a stranger's: it counts as pending.
      options.budget.guard(secure, true, handshakeMs)
      secure.on('secureConnection', (socket) => options.budget.authenticated(socket))
      // An idle HTTPS connection (either protocol) goes after the keep-alive time.
      secure.setTimeout(65_000)
      this.#server = secure as unknown as Server
    }
  }

  async start(): Promise<number> {
    return listen(this.#server, this.#options.port, this.#options.host, this.#options.logger)
  }

  /**
   * Stops accepting, lets requests in flight finish (up to `drainMs`), then closes every
   * connection. Idle keep-alive connections are closed at once.
   */
  async stop(drainMs = 0): Promise<void> {
    const server = this.#server as Partial<Server> & Server
    const closed = closeServer(server, () => server.closeIdleConnections?.())
    if (this.#active > 0 && drainMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, drainMs)
        timer.unref()
        this.#drained = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    server.closeAllConnections?.()
    await closed
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    this.#active++
    res.on('close', this.#onResponseClosed)
    if (this.#tls) res.setHeader('strict-transport-security', HSTS)
    // Only the path is used: inference routes forward their path alone, never the query.
    const { path, query } = splitTarget(req.url)
    const forwarded = FORWARDED.get(path)
    const api: ApiFamily = forwarded ?? (path.startsWith('/api/') ? 'ollama' : 'openai')
    ;(res as StampedResponse)[RESPONSE_ROUTE] =
      forwarded !== undefined || KNOWN_ROUTES.has(path) ? path : 'other'
    if (query.length > 0 && !wellFormedQuery(query)) {
      sendError(res, api, ErrorCodes.BAD_REQUEST, 'malformed percent-escape in the query')
      return
    }

    if (path === '/health' || path === '/healthz') {
      sendJson(res, 200, { status: 'ok' })
      return
    }
    const wait = this.#options.throttle.refuses(req.socket.remoteAddress)
    if (wait > 0) {
      this.#throttled(req, res, api, wait)
      return
    }
    const key = presentedKey(req.headers)
    if (key === undefined) {
      this.#refuse(req, res, api, 'missing', undefined)
      return
    }
    // Fast path: static key or a key this process trusts already, no I/O.
    const cached = this.#options.keys.checkCached(key)
    if (cached !== undefined) {
      this.#route(req, res, path, api, forwarded, cached)
      return
    }
    req.pause()
    this.#options.keys
      .authenticate(key)
      .then(
        (verdict) => {
          if (verdict.ok) {
            req.resume()
            this.#route(req, res, path, api, forwarded, verdict.principal)
          } else this.#refuse(req, res, api, verdict.reason, key)
        },
        () => this.#refuse(req, res, api, 'unavailable', key),
      )
      .catch((err: unknown) => this.#failed(res, api, err))
  }

  /** Answers 429 to an address past its failed-credential budget; its body is not read. */
  #throttled(req: IncomingMessage, res: ServerResponse, api: ApiFamily, waitMs: number): void {
    closeAfterResponse(req, res)
    sendError(
      res,
      api,
      ErrorCodes.AUTH_THROTTLED,
      'too many requests with invalid API keys from this address; retry later',
      { 'retry-after': String(Math.ceil(waitMs / 1000)) },
    )
  }

  /** Refuses a request's key. Its body is never read; a wrong key counts against its address. */
  #refuse(
    req: IncomingMessage,
    res: ServerResponse,
    api: ApiFamily,
    reason: 'missing' | 'invalid' | 'expired' | 'unavailable',
    key: string | undefined,
  ): void {
    closeAfterResponse(req, res)
    if (reason === 'invalid' && key !== undefined) {
      this.#options.throttle.failure(addressKey(req.socket.remoteAddress), keySubject(key), 'API key')
    }
    if (reason === 'unavailable') {
      sendError(
        res,
        api,
        ErrorCodes.STORE_UNAVAILABLE,
        'cannot check this API key right now; try again shortly',
        {
          'retry-after': '1',
        },
      )
    } else if (reason === 'expired') {
      sendError(res, api, ErrorCodes.KEY_EXPIRED, 'this API key has expired')
    } else {
      sendError(
        res,
        api,
        ErrorCodes.UNAUTHORIZED,
        'invalid or missing API key (use Authorization: Bearer <key> or x-api-key)',
      )
    }
  }

  #route(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    api: ApiFamily,
    forwarded: ApiFamily | undefined,
    principal: Principal,
  ): void {
    if (forwarded !== undefined) {
      if (req.method !== 'POST') {
        closeAfterResponse(req, res)
        sendError(res, api, ErrorCodes.METHOD_NOT_ALLOWED, `${path} takes POST`, { allow: 'POST' })
        return
      }
      this.#readAndForward(req, res, path, forwarded, principal)
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      closeAfterResponse(req, res)
      sendError(res, api, ErrorCodes.NOT_FOUND, `no route for ${req.method} ${path}`)
      return
    }
    const { registry } = this.#options
    switch (path) {
      case '/':
        sendJson(res, 200, {
          name: 'gpufabric',
          version: this.#options.version,
          status: 'ok',
          workers: registry.size,
          models: registry.models(),
        })
        return
      case '/v1/models':
        sendJson(res, 200, modelsAsOpenAI(registry))
        return
      case '/api/tags':
        sendJson(res, 200, modelsAsOllamaTags(registry))
        return
      case '/api/version':
        sendJson(res, 200, { version: OLLAMA_COMPAT_VERSION })
        return
    }
    if (path.startsWith('/v1/models/')) {
      const id = decodeSegment(path.slice('/v1/models/'.length))
      if (id === undefined) {
        sendError(res, 'openai', ErrorCodes.BAD_REQUEST, 'malformed percent-escape in the path')
        return
      }
      const model = modelsAsOpenAI(registry).data.find((m) => m.id === id)
      if (model === undefined)
        sendError(res, 'openai', ErrorCodes.MODEL_NOT_FOUND, `model '${id}' is not served by any worker`)
      else sendJson(res, 200, model)
      return
    }
    sendError(res, api, ErrorCodes.NOT_FOUND, `no route for ${req.method} ${path}`)
  }

  #readAndForward(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    api: ApiFamily,
    principal: Principal,
  ): void {
    const declared = Number(req.headers['content-length'] ?? -1)
    if (declared > this.#maxBodyBytes) {
      this.#tooLarge(req, res, api)
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    let aborted = false
    req.on('data', (chunk: Buffer) => {
      if (aborted) return
      size += chunk.length
      if (size > this.#maxBodyBytes) {
        aborted = true
        this.#tooLarge(req, res, api)
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => {
      if (aborted) return
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
      try {
        this.#forward(res, path, api, body, principal)
      } catch (err) {
        this.#failed(res, api, err)
      }
    })
  }

  #tooLarge(req: IncomingMessage, res: ServerResponse, api: ApiFamily): void {
    // Answer at once and close: reading the rest of an oversized body only wastes our memory.
    req.removeAllListeners('data')
    closeAfterResponse(req, res)
    sendError(res, api, ErrorCodes.BODY_TOO_LARGE, `request body exceeds ${this.#maxBodyBytes} bytes`)
  }

  #forward(res: ServerResponse, path: string, api: ApiFamily, body: Buffer, principal: Principal): void {
    const request = parseRequest(body)
    if (request === null) {
      sendError(res, api, ErrorCodes.BAD_REQUEST, 'request body is not valid JSON')
      return
    }
    const model = request === undefined ? undefined : modelOf(request)
    if (request === undefined || model === undefined) {
      sendError(res, api, ErrorCodes.MODEL_REQUIRED, "request body needs a 'model' string")
      return
    }
    if (principal.models !== null && !principal.models.has(model)) {
      sendError(res, api, ErrorCodes.FORBIDDEN, `this API key may not use model '${model}'`)
      return
    }
    const forwarded: Forwarded = {
      path,
      api,
      body,
      request,
      principal,
      model,
      at: Date.now(),
      started: performance.now(),
    }
    const { rateLimiter } = this.#options
    if (rateLimiter === undefined || !RateLimiter.applies(principal)) {
      this.#dispatch(res, forwarded, undefined)
      return
    }
    rateLimiter
      .admit(principal)
      .catch(() => undefined)
      .then((admission) => {
        if (admission === undefined) {
          // The shared limiter is out of reach: serve rather than refuse everyone.
          this.#dispatch(res, forwarded, undefined)
          return
        }
        if (!admission.allowed) {
          const what = admission.limit === 'tokens' ? 'tokens' : 'requests'
          sendError(
            res,
            api,
            ErrorCodes.RATE_LIMITED,
            `rate limit reached: ${what} per minute for this key`,
            admission.headers,
          )
          return
        }
        this.#dispatch(res, forwarded, admission.headers)
      })
      .catch((err: unknown) => this.#failed(res, api, err))
  }

  /** A bug in one request must not take the server (and every other request) down. */
  #failed(res: ServerResponse, api: ApiFamily, err: unknown): void {
    this.#options.logger.error(
      { code: ErrorCodes.INTERNAL, err: err instanceof Error ? err.stack : String(err) },
      'request failed unexpectedly',
    )
    try {
      if (!res.headersSent && !res.destroyed) sendError(res, api, ErrorCodes.INTERNAL, 'internal error')
      else res.destroy()
    } catch {
      res.destroy()
    }
  }

  /** Routes a checked request to a worker serving its model. */
  #dispatch(res: ServerResponse, f: Forwarded, limitHeaders: Record<string, string> | undefined): void {
    const { registry, rateLimiter, telemetry, metrics } = this.#options
    const { principal, model, api, path } = f
    const allow = principal.workers ?? undefined
    if (!registry.hasModel(model, allow)) {
      if (registry.size === 0) sendError(res, api, ErrorCodes.NO_WORKER, 'no worker is connected')
      else if (allow !== undefined && registry.hasModel(model)) {
        sendError(
          res,
          api,
          ErrorCodes.MODEL_NOT_FOUND,
          `model '${model}' is not served by this key's workers`,
        )
      } else sendError(res, api, ErrorCodes.MODEL_NOT_FOUND, `model '${model}' is not served by any worker`)
      return
    }
    const limited = rateLimiter !== undefined && principal.tpmLimit !== null
    let meter: AnswerMeter | undefined
    let body = f.body
    let stripUsage = false
    if (telemetry !== undefined || metrics !== undefined || limited) {
      // Metering needs the engine's token counts: a stream that did not ask for them is made to.
      const withUsage =
        telemetry === undefined && metrics === undefined ? undefined : withStreamUsage(path, f.request)
      if (withUsage !== undefined) {
        body = withUsage
        stripUsage = true
      }
      meter = new AnswerMeter((answer) => {
        if (limited) void rateLimiter?.recordTokens(principal, answer.tokens.total)
        metrics?.forwarded({
          model,
          status: answer.status,
          durationMs: answer.durationMs,
          ttfbMs: answer.ttfbMs,
          promptTokens: answer.tokens.reported ? answer.tokens.prompt : null,
          completionTokens: answer.tokens.reported ? answer.tokens.completion : null,
        })
        telemetry?.usage({
          at: f.at,
          keyId: principal.keyId,
          userId: principal.userId,
          model,
          workerId: answer.workerId,
          path,
          status: answer.status,
          stream: f.request['stream'] === true,
          promptTokens: answer.tokens.reported ? answer.tokens.prompt : null,
          completionTokens: answer.tokens.reported ? answer.tokens.completion : null,
          totalTokens: answer.tokens.reported ? answer.tokens.total : null,
          ttfbMs: answer.ttfbMs,
          durationMs: answer.durationMs,
          bytesIn: f.body.length,
          bytesOut: answer.bytesOut,
        })
      }, f.started)
    }
    new Relay(res, {
      api,
      model,
      frame: encodeLaneRequest('POST', path, body),
      allow,
      pick: this.#pick,
      serves: this.#serves,
      pickAffine: this.#pickAffine,
      affinity:
        this.#affinity === 'off'
          ? undefined
          : affinityKey(this.#affinity, f.request, res.req.headers[SESSION_HEADER]),
      explain: res.req.headers['x-gpufabric-route'] !== undefined,
      queues: this.#options.registry.queues,
      maxAttempts: this.#maxAttempts,
      extraHeaders: limitHeaders,
      meter,
      stripUsage,
      firstByteMs: this.#firstByteMs,
      idleMs: this.#idleMs,
    }).start()
  }
}

/** A checked request on its way to a worker. */
interface Forwarded {
  readonly path: string
  readonly api: ApiFamily
  readonly body: Buffer
  /** The body, parsed. */
  readonly request: Record<string, unknown>
  readonly principal: Principal
  readonly model: string
  /** Arrival (body complete): epoch ms for the usage event, `performance.now()` for timings. */
  readonly at: number
  readonly started: number
}

/** What a wrong key is counted against besides its address: its public prefix, when it has one. */
function keySubject(key: string): string | undefined {
  const prefix = parseKey(key)?.prefix
  return prefix === undefined ? undefined : `key:${prefix}`
}

/** A JSON body as an object; `undefined` when it is JSON but not an object, `null` when not JSON. */
function parseRequest(body: Buffer): Record<string, unknown> | undefined | null {
  let parsed: unknown
  try {
    parsed = JSON.parse(body.toString('utf8'))
  } catch {
    return null
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined
  return parsed as Record<string, unknown>
}

/** The request's `model`, when it is a non-empty string. */
function modelOf(request: Record<string, unknown>): string | undefined {
  const model = request['model']
  return typeof model === 'string' && model.length > 0 ? model : undefined
}

/** Re-exported so callers map errors in one place. */
export type { ErrorCode }
