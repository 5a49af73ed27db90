/**
 * The management API (port 18081) as a Hono application whose routes are declared with their
 * zod schemas (`@hono/zod-openapi`): inputs are validated by the same schemas the OpenAPI 3.1
 * document at `/openapi.json` is generated from, and `/docs` renders that document.
 *
 * Why Hono: small, maintained, no dependencies of its own, runs on `node:http` through
 * `@hono/node-server`'s request listener (so the port keeps its connection budget, timeouts and
 * throttling), and `@hono/zod-openapi` uses the zod the project already validates with. The
 * public port (18080) stays on bare `node:http`: it is the hot path and is measured.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { OpenAPIHono } from '@hono/zod-openapi'
import type { Context } from 'hono'
import { cors } from 'hono/cors'
import { HTTPException } from 'hono/http-exception'
import type { AdminAuth } from '../../auth/admin.js'
import type { KeyAuthenticator } from '../../auth/authenticator.js'
import type { KeyManager } from '../../auth/manage.js'
import type { CredentialThrottle } from '../../auth/throttle.js'
import { type ErrorCode, ErrorCodes, FabricError, isFabricError } from '../../errors/index.js'
import type { Logger } from '../../observability/logger.js'
import type { ServerMetrics } from '../../observability/metrics.js'
import type { WorkerRegistry } from '../../routing/registry.js'
import type { Store } from '../../store/index.js'
import { addressKey } from '../connections.js'
import { errorBody, statusOf } from '../gateway/errors.js'
import { pathSegments, presentedKey, wellFormedQuery } from '../http.js'
import type { Caller } from './access.js'
import { renderDocs } from './docs.js'
import { registerSeedRoutes, SEED_PREFIXES, seedFailure } from './routes-seed.js'
import { registerV1Routes } from './routes-v1.js'

/** Static files answered for GET requests outside the API (the web console). */
export interface StaticAssets {
  get(path: string): { status: number; body: Buffer; headers: Record<string, string> } | undefined
}

/** What the management API's routes work with. */
export interface ApiDeps {
  readonly registry: WorkerRegistry
  readonly admin: AdminAuth
  /** Checks users' API keys (for keys with a management scope); without it only the admin key works. */
  readonly keyAuth?: KeyAuthenticator | undefined
  readonly keys?: KeyManager | undefined
  readonly store?: Store | undefined
  readonly version: string
  readonly logger: Logger
  readonly throttle: CredentialThrottle
  readonly startedAt: number
  readonly edgeStats?: (() => Record<string, unknown>) | undefined
  readonly telemetryStats?: (() => Record<string, unknown>) | undefined
  readonly metrics?: ServerMetrics | undefined
  /** `/metrics` without a key (a scraper on a private network). @default false: the admin key */
  readonly metricsOpen?: boolean | undefined
  /** Origins allowed by CORS; empty or absent: CORS off. `*` allows any origin. */
  readonly corsOrigins?: readonly string[] | undefined
  /** The heartbeat interval workers are told (the seed routes' uptime figures). */
  readonly heartbeatIntervalMs?: number | undefined
  readonly assets?: StaticAssets | undefined
}

/** The node request and response stay reachable (the peer's address, its raw headers). */
export type ApiEnv = {
  Bindings: { incoming: IncomingMessage; outgoing: ServerResponse }
  Variables: { caller: Caller }
}
export type ApiApp = OpenAPIHono<ApiEnv>

/** Paths anyone may read: health, the API's description, the console's files. */
function isPublic(path: string): boolean {
  return (
    path === '/health' ||
    path === '/api/v1/health' ||
    path === '/openapi.json' ||
    path === '/docs' ||
    !(path.startsWith('/api/') || path === '/api' || path === '/metrics')
  )
}

const isSeedPath = (path: string) => SEED_PREFIXES.some((p) => path.startsWith(p))

/** An error answer in the shape of the route family: the seed's envelope, or OpenAI's error object. */
export function failure(
  c: Context,
  code: ErrorCode,
  message: string,
  headers: Record<string, string> = {},
): Response {
  const status = statusOf(code)
  if (isSeedPath(c.req.path)) return seedFailure(status, message, headers)
  return new Response(errorBody('openai', code, message), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  })
}

/** Builds the management API. */
export function createApiApp(deps: ApiDeps): ApiApp {
  const app: ApiApp = new OpenAPIHono<ApiEnv>({
    // Every route's input is validated by its schema; the first problem is named, field first.
    defaultHook: (result, c) => {
      if (result.success) return
      const issue = result.error.issues[0]
      const field = issue?.path.map(String).join('.') ?? ''
      const where = result.target === 'json' ? 'body' : result.target
      const message = `invalid ${where}${field === '' ? '' : ` field '${field}'`}: ${issue?.message ?? 'invalid'}`
      return failure(c, ErrorCodes.BAD_REQUEST, message)
    },
  })

  const origins = deps.corsOrigins ?? []
  if (origins.length > 0) {
    const any = origins.includes('*')
    app.use(
      '*',
      cors({
        origin: (origin) => (any ? '*' : origins.includes(origin) ? origin : null),
        allowMethods: ['GET', 'POST', 'DELETE', 'PATCH', 'OPTIONS'],
        allowHeaders: ['authorization', 'content-type', 'x-api-key'],
        maxAge: 600,
      }),
    )
  }

  // Who is calling. Health, the API description and the console are public; everything else
  // takes the admin key or a user's key with a management scope.
  app.use('*', async (c, next) => {
    const path = c.req.path
    if (isPublic(path) || (path === '/metrics' && deps.metricsOpen === true)) return next()
    const incoming = c.env.incoming
    const wait = deps.throttle.refuses(incoming.socket.remoteAddress)
    if (wait > 0)
      return failure(c, ErrorCodes.AUTH_THROTTLED, 'too many failed keys from this address', {
        'retry-after': String(Math.ceil(wait / 1000)),
        connection: 'close',
      })
    const key = presentedKey(incoming.headers)
    const refuse = (message: string) => {
      if (key !== undefined)
        deps.throttle.failure(addressKey(incoming.socket.remoteAddress), undefined, 'admin key')
      return failure(c, ErrorCodes.UNAUTHORIZED, message, { connection: 'close' })
    }
    if (key === undefined)
      return refuse('the management API needs the admin key or a user key with a management scope')
    if (deps.admin.check(key)) {
      c.set('caller', { role: 'admin' })
      return next()
    }
    const verdict = deps.keyAuth === undefined ? undefined : await deps.keyAuth.authenticate(key)
    if (verdict === undefined || !verdict.ok) {
      if (verdict?.reason === 'unavailable')
        return failure(
          c,
          ErrorCodes.STORE_UNAVAILABLE,
          'keys cannot be checked now: the database is unreachable',
        )
      if (verdict?.reason === 'expired') return failure(c, ErrorCodes.KEY_EXPIRED, 'this key has expired')
      return refuse('the management API needs the admin key or a user key with a management scope')
    }
    const { principal } = verdict
    if (principal.userId === null || principal.scope === 'inference')
      return failure(
        c,
        ErrorCodes.FORBIDDEN,
        'this key may not use the management API (its scope is inference; create one with scope read or manage)',
      )
    c.set('caller', {
      role: 'user',
      userId: principal.userId,
      keyId: principal.keyId,
      scope: principal.scope,
    })
    return next()
  })

  // Malformed percent-escapes answer 400 before any route decodes them.
  app.use('*', async (c, next) => {
    const url = c.req.url
    const start = url.indexOf('/', url.indexOf('//') + 2)
    const q = url.indexOf('?', start)
    const path = q < 0 ? url.slice(start) : url.slice(start, q)
    if (pathSegments(path) === undefined || (q >= 0 && !wellFormedQuery(url.slice(q + 1))))
      return failure(c, ErrorCodes.BAD_REQUEST, 'malformed percent-escape in the request target')
    return next()
  })

  app.onError((err, c) => {
    if (isFabricError(err)) {
      if (err.code === ErrorCodes.INTERNAL)
        deps.logger.error({ code: err.code, err: err.stack }, 'management API error')
      return failure(c, err.code, err.message)
    }
    if (err instanceof HTTPException) {
      const code = err.status === 413 ? ErrorCodes.BODY_TOO_LARGE : ErrorCodes.BAD_REQUEST
      if (err.status < 500) return failure(c, code, err.message || 'bad request')
    }
    deps.logger.error({ err: err instanceof Error ? err.stack : String(err) }, 'management API error')
    return failure(c, ErrorCodes.INTERNAL, 'internal error')
  })

  app.notFound((c) => {
    const path = c.req.path
    if (
      (c.req.method === 'GET' || c.req.method === 'HEAD') &&
      deps.assets !== undefined &&
      path !== '/api' &&
      !path.startsWith('/api/')
    ) {
      const file = deps.assets.get(path)
      if (file !== undefined)
        return new Response(new Uint8Array(file.body), { status: file.status, headers: file.headers })
    }
    return failure(c, ErrorCodes.NOT_FOUND, `no route for ${c.req.method} ${path}`)
  })

  registerV1Routes(app, deps)
  registerSeedRoutes(app, deps)

  if (deps.metrics !== undefined) {
    const metrics = deps.metrics
    app.get('/metrics', async (c) => {
      const caller = c.get('caller')
      if (deps.metricsOpen !== true && caller?.role !== 'admin')
        throw new FabricError(
          ErrorCodes.FORBIDDEN,
          '/metrics needs the admin key (or the server flag --metrics-open)',
        )
      const { body, contentType } = await metrics.expose()
      return c.body(body, 200, { 'content-type': contentType })
    })
  }

  const document = () =>
    app.getOpenAPI31Document({
      openapi: '3.1.0',
      info: {
        title: 'GPUFabric management API',
        version: deps.version,
        description:
          "Workers, models, keys, users, usage and telemetry of a GPUFabric server (port 18081), and the original system's `/api/user/*` and `/api/models/*` routes in their `{success, data, message, timestamp}` envelope. Every route but `/health` takes `Authorization: Bearer <key>`: the admin key, or a user's API key with scope `read` or `manage` (limited to that user's own workers, keys and usage).",
      },
      servers: [{ url: '/' }],
      security: [{ bearer: [] }],
    })
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer' })
  let cached: ReturnType<typeof document> | undefined
  const described = () => {
    cached ??= document()
    return cached
  }
  app.get('/openapi.json', (c) => c.json(described()))
  app.get('/docs', (c) =>
    c.html(renderDocs(described()), 200, {
      'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'",
    }),
  )
  return app
}
