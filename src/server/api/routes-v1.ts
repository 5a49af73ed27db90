/** Our own management routes, `/api/v1/...`, declared with their schemas. */
import { z } from '@hono/zod-openapi'
import { type CreateKeyInput, type KeyManager, publicKeyView } from '../../auth/manage.js'
import { ErrorCodes, FabricError } from '../../errors/index.js'
import type { WorkerSession } from '../../routing/worker-session.js'
import type { Store, StoreTelemetry, UsageDailyRecord, WorkerRecord } from '../../store/index.js'
import { maySee, ownUser, requireAdmin, requireManage } from './access.js'
import type { ApiApp, ApiDeps } from './app.js'
import { openapi } from './openapi.js'
import {
  CreateKeyBody,
  CreateUserBody,
  ErrorBody,
  Health,
  IdParam,
  KeyList,
  KeyView,
  LiveWorker,
  Me,
  ModelList,
  NewKeySecret,
  RequestList,
  RequestsQuery,
  Revoked,
  RotatedKey,
  Stats,
  StoredWorker,
  UpdateKeyBody,
  UsageList,
  UsageQuery,
  User,
  UserList,
  WorkerList,
  WorkerStats,
} from './schemas.js'

/** JSON view of one connected worker, as the management API shows it. */
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
    /** Consecutive failed tries, and the end of the cooldown they put the worker in (null: in rotation). */
    failures: w.failures,
    cooldownUntil: w.cooldownUntil === 0 ? null : new Date(w.cooldownUntil).toISOString(),
    online: true as const,
  }
}

function storedWorkerView(w: WorkerRecord) {
  return {
    ...w,
    models: [...w.models],
    firstSeenAt: w.firstSeenAt.toISOString(),
    lastSeenAt: w.lastSeenAt.toISOString(),
    online: false as const,
  }
}

const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { 'application/json': { schema } },
  description,
})

const ERRORS = {
  400: json(ErrorBody, 'invalid input: the message names the field'),
  401: json(ErrorBody, 'no key, or a wrong one'),
  403: json(ErrorBody, 'the key may not do this'),
} as const
const NOT_FOUND = { 404: json(ErrorBody, 'no such thing (or not yours)') } as const
const UNAVAILABLE = {
  503: json(ErrorBody, 'the database is needed and unreachable, or not configured'),
} as const

/** Normalises a key-creation body: snake_case and the CLI's short names are accepted too. */
const FIELD_ALIASES: Record<string, string> = {
  rpm: 'rpmLimit',
  tpm: 'tpmLimit',
  workers: 'workerIds',
  dedicated: 'workerIds',
  access: 'accessLevel',
}
function canonicalKeyBody(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body
  const out: Record<string, unknown> = {}
  for (const [raw, value] of Object.entries(body)) {
    const camel = raw.replace(/_([a-z])/g, (_, ch: string) => ch.toUpperCase())
    out[FIELD_ALIASES[camel] ?? camel] = value
  }
  return out
}

function sumUsage(rows: readonly UsageDailyRecord[], by: 'day' | 'key' | 'model' | 'worker') {
  const totals = new Map<string, ReturnType<typeof emptyTotal>>()
  function emptyTotal(group: string) {
    return {
      group,
      requests: 0,
      errors: 0,
      metered: 0,
      promptTokens: 0,
      completionTokens: 0,
      totalTokens: 0,
      bytesIn: 0,
      bytesOut: 0,
    }
  }
  for (const r of rows) {
    const group = by === 'day' ? r.day : by === 'key' ? r.keyId : by === 'model' ? r.model : r.workerId
    let t = totals.get(group)
    if (t === undefined) {
      t = emptyTotal(group)
      totals.set(group, t)
    }
    t.requests += r.requests
    t.errors += r.errors
    t.metered += r.metered
    t.promptTokens += r.promptTokens
    t.completionTokens += r.completionTokens
    t.totalTokens += r.totalTokens
    t.bytesIn += r.bytesIn
    t.bytesOut += r.bytesOut
  }
  return [...totals.values()].sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0))
}

export function registerV1Routes(app: ApiApp, deps: ApiDeps): void {
  const { registry } = deps
  const store = (): Store => {
    if (deps.store === undefined) throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, 'no database')
    return deps.store
  }
  const telemetry = (): Store & StoreTelemetry => {
    const s = store() as Store & Partial<StoreTelemetry>
    if (s.listDailyStats === undefined) throw new FabricError(ErrorCodes.NOT_FOUND, 'no statistics')
    return s as Store & StoreTelemetry
  }
  const keys = (): KeyManager => {
    if (deps.keys === undefined)
      throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, 'key management needs the database')
    return deps.keys
  }
  const health = () => ({
    status: 'ok' as const,
    version: deps.version,
    uptimeSeconds: (Date.now() - deps.startedAt) / 1000,
  })

  for (const path of ['/health', '/api/v1/health'] as const)
    openapi(
      app,
      {
        method: 'get',
        path,
        tags: ['health'],
        summary: 'Liveness (no key needed)',
        security: [],
        responses: { 200: json(Health, 'the server is up') },
      },
      (c) => c.json(health(), 200),
    )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/me',
      tags: ['access'],
      summary: 'Who the presented key is: the admin, or a user with a scope',
      responses: { 200: json(Me, 'the caller'), ...ERRORS },
    },
    async (c) => {
      const caller = c.get('caller')
      if (caller.role === 'admin')
        return c.json({ role: 'admin' as const, scope: 'admin' as const, user: null, keyId: null }, 200)
      const user = await store().getUser(caller.userId)
      return c.json(
        {
          role: 'user' as const,
          scope: caller.scope,
          user: user === undefined ? null : { id: user.id, name: user.name },
          keyId: caller.keyId,
        },
        200,
      )
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/workers',
      tags: ['workers'],
      summary: 'Connected workers with their latest readings (every GPU); a user key sees its own',
      responses: { 200: json(WorkerList, 'the workers connected to this server'), ...ERRORS },
    },
    (c) => {
      const caller = c.get('caller')
      const workers = [...registry.workers()].filter((w) => maySee(caller, w.userId)).map(describeWorker)
      return c.json({ workers }, 200)
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/workers/{id}',
      tags: ['workers'],
      summary: 'One worker: live when connected, else as the database knows it',
      request: { params: IdParam },
      responses: { 200: json(z.union([LiveWorker, StoredWorker]), 'the worker'), ...ERRORS, ...NOT_FOUND },
    },
    async (c) => {
      const { id } = c.req.valid('param')
      const caller = c.get('caller')
      const live = registry.byClientId(id)
      if (live !== undefined && maySee(caller, live.userId)) return c.json(describeWorker(live), 200)
      const stored = await deps.store?.getWorker(id)
      if (stored === undefined || !maySee(caller, stored.userId))
        throw new FabricError(ErrorCodes.NOT_FOUND, 'no such worker')
      return c.json(storedWorkerView(stored), 200)
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/workers/{id}/stats',
      tags: ['workers', 'telemetry'],
      summary: "A worker's telemetry: latest system and device info, daily statistics, newest raw heartbeats",
      request: {
        params: IdParam,
        query: z.object({
          heartbeats: z.coerce.number().int().min(0).max(10_000).optional().openapi({
            type: 'integer',
            description: 'raw heartbeats to include, newest first (default 100)',
          }),
        }),
      },
      responses: { 200: json(WorkerStats, 'the statistics'), ...ERRORS, ...NOT_FOUND, ...UNAVAILABLE },
    },
    async (c) => {
      const { id } = c.req.valid('param')
      const { heartbeats: count } = c.req.valid('query')
      const caller = c.get('caller')
      const s = telemetry()
      if (caller.role !== 'admin') {
        const owner = registry.byClientId(id)?.userId ?? (await s.getWorker(id))?.userId
        if (!maySee(caller, owner)) throw new FabricError(ErrorCodes.NOT_FOUND, 'no such worker')
      }
      const [daily, deviceDaily, system, devices, heartbeats] = await Promise.all([
        s.listDailyStats(id),
        s.listDeviceDailyStats(id),
        s.getSystemInfo(id),
        s.listDeviceInfo(id),
        count === 0 ? Promise.resolve([]) : s.listHeartbeats(id, count ?? 100),
      ])
      return c.json(
        JSON.parse(
          JSON.stringify({ clientId: id, system: system ?? null, devices, daily, deviceDaily, heartbeats }),
        ),
        200,
      )
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/models',
      tags: ['models'],
      summary: 'Models served now, with the workers serving them (a user key sees its own workers)',
      responses: { 200: json(ModelList, 'the models'), ...ERRORS },
    },
    (c) => {
      const caller = c.get('caller')
      const workers = [...registry.workers()]
      return c.json(
        {
          models: registry.models().map((name) => ({
            name,
            workers: workers
              .filter((w) => w.models.includes(name) && maySee(caller, w.userId))
              .map((w) => w.clientId),
          })),
        },
        200,
      )
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/stats',
      tags: ['telemetry'],
      summary: 'Server-wide figures: workers, in-flight requests, connection budgets, telemetry (admin)',
      responses: { 200: json(Stats, 'the figures'), ...ERRORS },
    },
    (c) => {
      requireAdmin(c.get('caller'), 'server statistics')
      let inflight = 0
      for (const w of registry.workers()) inflight += w.inflight
      return c.json(
        {
          workers: registry.size,
          models: registry.models().length,
          inflight,
          queues: {
            waiting: registry.queues.size,
            byModel: registry.queues.depths(),
            refused: registry.queues.refused,
            expired: registry.queues.expired,
          },
          ...deps.edgeStats?.(),
          telemetry: deps.telemetryStats?.() ?? null,
        },
        200,
      )
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/usage',
      tags: ['usage'],
      summary: 'Usage per day, key, model and worker; filters and date ranges; optional totals per group',
      description: "A user key sees its own user's usage only (`userId` is then ignored).",
      request: { query: UsageQuery },
      responses: { 200: json(UsageList, 'usage rows, oldest day first'), ...ERRORS, ...UNAVAILABLE },
    },
    async (c) => {
      const q = c.req.valid('query')
      if (q.from !== undefined && q.to !== undefined && q.from > q.to)
        throw new FabricError(ErrorCodes.BAD_REQUEST, "invalid query field 'from': after 'to'")
      const usage = await store().listUsage({
        keyId: q.keyId,
        userId: ownUser(c.get('caller')) ?? q.userId,
        model: q.model,
        workerId: q.workerId,
        from: q.from,
        to: q.to,
        limit: q.limit,
      })
      return c.json(
        { usage: [...usage], ...(q.groupBy === undefined ? {} : { totals: sumUsage(usage, q.groupBy) }) },
        200,
      )
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/keys',
      tags: ['keys'],
      summary: "API keys and worker tokens (never the keys themselves); a user key sees its own user's",
      responses: { 200: json(KeyList, 'the keys'), ...ERRORS, ...UNAVAILABLE },
    },
    async (c) => {
      const userId = ownUser(c.get('caller'))
      const list = await keys().list(userId === undefined ? undefined : { userId })
      return c.json({ keys: list.map(publicKeyView) }, 200)
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/keys/{id}',
      tags: ['keys'],
      summary: 'One key',
      request: { params: IdParam },
      responses: { 200: json(KeyView, 'the key'), ...ERRORS, ...NOT_FOUND, ...UNAVAILABLE },
    },
    async (c) => {
      const record = await keys().get(c.req.valid('param').id)
      if (record === undefined || !maySee(c.get('caller'), record.userId))
        throw new FabricError(ErrorCodes.NOT_FOUND, 'no such key')
      return c.json(publicKeyView(record), 200)
    },
  )

  // Aliases of the key-creation body are renamed before the schema sees it: the validator
  // reads the body through the request's body cache, which is seeded here with the renamed one.
  app.post('/api/v1/keys', async (c, next) => {
    const raw = await c.req.json().catch(() => undefined)
    if (raw !== undefined) {
      const request = c.req as unknown as { bodyCache: Record<string, Promise<unknown>> }
      request.bodyCache = { text: Promise.resolve(JSON.stringify(canonicalKeyBody(raw))) }
    }
    return next()
  })

  openapi(
    app,
    {
      method: 'post',
      path: '/api/v1/keys',
      tags: ['keys'],
      summary: 'Create an API key or a worker token; the key is in the answer, once',
      description:
        'A user key with scope `manage` creates keys for its own user only (`user` absent or its own name), with at most its own scope.',
      request: { body: { content: { 'application/json': { schema: CreateKeyBody } }, required: true } },
      responses: { 201: json(NewKeySecret, 'the new key'), ...ERRORS, ...UNAVAILABLE },
    },
    async (c) => {
      const body = c.req.valid('json')
      const caller = c.get('caller')
      let user = body.user
      if (caller.role === 'user') {
        requireManage(caller, 'creating keys')
        const own = await store().getUser(caller.userId)
        if (own === undefined) throw new FabricError(ErrorCodes.FORBIDDEN, 'this key has no user')
        if (user !== undefined && user !== own.name && user !== own.id)
          throw new FabricError(ErrorCodes.FORBIDDEN, 'a user key creates keys for its own user only')
        user = own.name
        if (body.kind === 'worker' && body.scope !== undefined && body.scope !== 'inference')
          throw new FabricError(ErrorCodes.BAD_REQUEST, 'a worker token has no management scope')
      }
      let expiresAt =
        body.expiresAt === undefined || body.expiresAt === null ? undefined : new Date(body.expiresAt)
      if (body.expiresInDays !== undefined && body.expiresInDays !== null)
        expiresAt = new Date(Date.now() + body.expiresInDays * 86_400_000)
      const input: CreateKeyInput = {
        ...(body.kind === undefined ? {} : { kind: body.kind }),
        ...(user === undefined ? {} : { user }),
        ...(body.name === undefined ? {} : { name: body.name }),
        ...(body.accessLevel === undefined ? {} : { accessLevel: body.accessLevel }),
        ...(body.scope === undefined ? {} : { scope: body.scope }),
        ...(body.workerIds === undefined || body.workerIds === null ? {} : { workerIds: body.workerIds }),
        ...(body.models === undefined ? {} : { models: body.models }),
        ...(body.rpmLimit === undefined ? {} : { rpmLimit: body.rpmLimit }),
        ...(body.tpmLimit === undefined ? {} : { tpmLimit: body.tpmLimit }),
        ...(expiresAt === undefined ? {} : { expiresAt }),
      }
      const created = await keys().create(input)
      return c.json({ ...publicKeyView(created.record), key: created.key }, 201)
    },
  )

  /** The key `id` when the caller may change it; else 404 (a user key's view of others' keys). */
  const changeable = async (id: string, caller: Parameters<typeof requireManage>[0]) => {
    requireManage(caller, 'changing keys')
    const record = await keys().get(id)
    if (record === undefined || !maySee(caller, record.userId) || record.revokedAt !== null)
      throw new FabricError(ErrorCodes.NOT_FOUND, 'no such active key')
    return record
  }

  for (const [method, path] of [
    ['delete', '/api/v1/keys/{id}'],
    ['post', '/api/v1/keys/{id}/revoke'],
  ] as const)
    openapi(
      app,
      {
        method,
        path,
        tags: ['keys'],
        summary: 'Revoke a key (every server forgets it within a second)',
        request: { params: IdParam },
        responses: { 200: json(Revoked, 'revoked'), ...ERRORS, ...NOT_FOUND, ...UNAVAILABLE },
      },
      async (c) => {
        const record = await changeable(c.req.valid('param').id, c.get('caller'))
        const revoked = await keys().revoke(record.id)
        if (revoked === undefined) throw new FabricError(ErrorCodes.NOT_FOUND, 'no such active key')
        return c.json({ id: revoked.id, revoked: true as const }, 200)
      },
    )

  openapi(
    app,
    {
      method: 'patch',
      path: '/api/v1/keys/{id}',
      tags: ['keys'],
      summary: "Change a key's name and limits (models, rpm, tpm, expiry); every server applies them at once",
      request: {
        params: IdParam,
        body: { content: { 'application/json': { schema: UpdateKeyBody } }, required: true },
      },
      responses: { 200: json(KeyView, 'the key as it is now'), ...ERRORS, ...NOT_FOUND, ...UNAVAILABLE },
    },
    async (c) => {
      const record = await changeable(c.req.valid('param').id, c.get('caller'))
      const b = c.req.valid('json')
      const updated = await keys().update(record.id, {
        ...(b.name === undefined ? {} : { name: b.name }),
        ...(b.models === undefined ? {} : { models: b.models }),
        ...(b.rpmLimit === undefined ? {} : { rpmLimit: b.rpmLimit }),
        ...(b.tpmLimit === undefined ? {} : { tpmLimit: b.tpmLimit }),
        ...(b.expiresAt === undefined
          ? {}
          : { expiresAt: b.expiresAt === null ? null : new Date(b.expiresAt) }),
      })
      if (updated === undefined) throw new FabricError(ErrorCodes.NOT_FOUND, 'no such active key')
      return c.json(publicKeyView(updated), 200)
    },
  )

  openapi(
    app,
    {
      method: 'post',
      path: '/api/v1/keys/{id}/rotate',
      tags: ['keys'],
      summary: 'Replace a key by a new one with the same settings; the old one is revoked',
      request: { params: IdParam },
      responses: {
        201: json(RotatedKey, 'the new key, shown once'),
        ...ERRORS,
        ...NOT_FOUND,
        ...UNAVAILABLE,
      },
    },
    async (c) => {
      const record = await changeable(c.req.valid('param').id, c.get('caller'))
      const rotated = await keys().rotate(record.id)
      return c.json({ ...publicKeyView(rotated.record), key: rotated.key, replaced: rotated.revoked.id }, 201)
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/requests',
      tags: ['usage'],
      summary: "The request log, newest first (a user key sees its own user's requests)",
      request: { query: RequestsQuery },
      responses: { 200: json(RequestList, 'requests'), ...ERRORS, ...UNAVAILABLE },
    },
    async (c) => {
      const q = c.req.valid('query')
      const userId = ownUser(c.get('caller'))
      const requests = await store().listRequests({
        ...(q.keyId === undefined ? {} : { keyId: q.keyId }),
        ...(userId === undefined ? {} : { userId }),
        ...(q.since === undefined ? {} : { since: new Date(q.since) }),
        ...(q.limit === undefined ? {} : { limit: q.limit }),
      })
      return c.json({ requests: requests.map((r) => ({ ...r, at: r.at.toISOString() })) }, 200)
    },
  )

  openapi(
    app,
    {
      method: 'get',
      path: '/api/v1/users',
      tags: ['users'],
      summary: 'Users (a user key sees itself)',
      responses: { 200: json(UserList, 'users'), ...ERRORS, ...UNAVAILABLE },
    },
    async (c) => {
      const userId = ownUser(c.get('caller'))
      const users = (await store().listUsers()).filter((u) => userId === undefined || u.id === userId)
      return c.json({ users: users.map((u) => ({ ...u, createdAt: u.createdAt.toISOString() })) }, 200)
    },
  )

  openapi(
    app,
    {
      method: 'post',
      path: '/api/v1/users',
      tags: ['users'],
      summary: 'Create a user (or return the existing one of that name) (admin)',
      request: { body: { content: { 'application/json': { schema: CreateUserBody } }, required: true } },
      responses: { 201: json(User, 'the user'), ...ERRORS, ...UNAVAILABLE },
    },
    async (c) => {
      requireAdmin(c.get('caller'), 'creating users')
      const user = await store().ensureUser(c.req.valid('json').name)
      return c.json({ ...user, createdAt: user.createdAt.toISOString() }, 201)
    },
  )
}
