/**
 * The original system's management routes (`/api/user/*`, `/api/models/*`): same paths,
 * snake_case fields and `{success, data, message, timestamp}` envelope (../shared/SEED-API.md),
 * backed by the telemetry tables the heartbeat consumer writes — no second copy of the data.
 *
 * `user_id` accepts the user's name or id. A worker belongs to the user whose worker token it
 * logged in with (or the user `insert_client` registered it for). A user key (scope `read` or
 * `manage`) may name only its own user; the model catalogue is written by the admin only.
 */
import { createRoute, type RouteConfig, z } from '@hono/zod-openapi'
import { ErrorCodes, FabricError } from '../../errors/index.js'
import type {
  DeviceInfoRecord,
  Store,
  StoreTelemetry,
  SystemInfoRecord,
  UserRecord,
  WorkerRecord,
} from '../../store/index.js'
import { WORKER_CLIENT_STATUSES } from '../../store/index.js'
import { type Caller, requireAdmin, requireManage } from './access.js'
import type { ApiApp, ApiDeps } from './app.js'
import { openapi } from './openapi.js'
import { Day } from './schemas.js'

export const SEED_PREFIXES = ['/api/user/', '/api/models/'] as const

/** A worker is online when its last heartbeat is at most this old (the original's rule). */
export const ONLINE_WINDOW_MS = 2 * 60_000
/** Raw heartbeats `client_health` returns at most, per worker. */
export const HEALTH_ROWS_PER_WORKER = 1_000
/** A reading at or above this is a warning in `health` (CPU, memory, disk, percent). */
const WARN_PERCENT = 90
/** A device at or above this temperature is a warning in `health`. */
const WARN_TEMPERATURE_C = 85

const envelope = (data: unknown, message = 'Operation successful') => ({
  success: true,
  data,
  message,
  timestamp: new Date().toISOString(),
})

/** An error in the envelope. */
export function seedFailure(status: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(
    JSON.stringify({ success: false, data: null, message, timestamp: new Date().toISOString() }),
    { status, headers: { 'content-type': 'application/json', ...headers } },
  )
}

const Envelope = <T extends z.ZodType>(data: T, name: string) =>
  z
    .object({
      success: z.boolean(),
      data,
      message: z.string(),
      timestamp: z.string().openapi({ example: '2026-11-30T12:00:00.000Z' }),
    })
    .openapi(name)

const Failure = Envelope(z.null(), 'SeedFailure')
const FAILURES = {
  400: {
    content: { 'application/json': { schema: Failure } },
    description: 'invalid parameters (the message names the field)',
  },
  401: { content: { 'application/json': { schema: Failure } }, description: 'no key, or a wrong one' },
  403: { content: { 'application/json': { schema: Failure } }, description: 'the key may not do this' },
  404: { content: { 'application/json': { schema: Failure } }, description: 'no such user or client' },
  503: { content: { 'application/json': { schema: Failure } }, description: 'the database is unreachable' },
} as const
const ok = <T extends z.ZodType>(schema: T, name: string, description: string) => ({
  200: { content: { 'application/json': { schema: Envelope(schema, name) } }, description },
  ...FAILURES,
})

/** A required JSON body validated by `schema`. */
const jsonBody = <T extends z.ZodType>(schema: T) => ({
  body: { required: true, content: { 'application/json': { schema } } },
})

function route<R extends RouteConfig>(config: R): R {
  return createRoute({
    ...config,
    tags: [config.path.startsWith('/api/models') ? 'seed models' : 'seed clients'],
  })
}

const UserId = z.string().min(1).max(256).openapi({ description: "the user's name or id", example: 'alice' })
const ClientId = z.string().min(1).max(256).openapi({ example: '0123456789abcdef0123456789abcdef' })
const ClientStatus = z.enum(WORKER_CLIENT_STATUSES)
const ValidStatus = z.enum(['valid', 'invalid'])

const ListQuery = z.object({
  user_id: UserId,
  client_id: ClientId.optional(),
  status: z.string().max(32).optional().openapi({ description: 'client_status to match' }),
  name: z.string().max(255).optional().openapi({ description: 'case-insensitive substring of the name' }),
  valid_status: ValidStatus.optional(),
})

const Device = z
  .object({
    client_id: z.string(),
    client_name: z.string(),
    client_status: z.string(),
    os_type: z.string().nullable(),
    device_name: z.string().nullable(),
    tflops: z.number(),
    cpu_usage: z.number().nullable(),
    memory_usage: z.number().nullable(),
    storage_usage: z.number().nullable(),
    health: z.enum(['healthy', 'warning', 'error', 'maintenance', 'offline']),
    last_online: z.string().nullable(),
    created_at: z.string(),
    uptime_days: z.number().nullable(),
    valid_status: ValidStatus,
  })
  .openapi('SeedClient')
const DeviceList = z.object({ total: z.number().int(), devices: z.array(Device) })

const DeviceDetail = z.object({
  system_info: z.object({
    health: Device.shape.health,
    cpu_usage: z.number().nullable(),
    memory_usage: z.number().nullable(),
    storage_usage: z.number().nullable(),
    device_memsize: z.number().openapi({ description: 'total device memory, MB' }),
    uptime_days: z.number().nullable(),
  }),
  device_info: z.array(
    z.object({
      device_index: z.number().int(),
      name: z.string(),
      temp: z.number().nullable(),
      usage: z.number().nullable(),
      mem_usage: z.number().nullable().openapi({ description: 'device memory used, percent of total' }),
      power_usage: z.number().nullable(),
    }),
  ),
})

const ClientStat = z.object({
  systems_total_number: z.number().int(),
  systems_online_number: z.number().int(),
  systems_maintenance_number: z.number().int(),
  systems_warnings_number: z.number().int(),
  total_tflops: z.number(),
  uptime_rate: z.number().openapi({ description: "0–100, from yesterday's heartbeats" }),
})

const MonitorRow = z.object({
  client_id: z.string(),
  client_name: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
  date: z.string(),
  avg_cpu_usage: z.number().nullable(),
  avg_memory_usage: z.number().nullable(),
  avg_disk_usage: z.number().nullable(),
  total_network_in_bytes: z.number(),
  total_network_out_bytes: z.number(),
  total_heartbeats: z.number().int(),
  last_heartbeat: z.string().nullable(),
  avg_network_in_bytes: z.number(),
  avg_network_out_bytes: z.number(),
})

const HealthRow = z.object({
  client_id: z.string(),
  client_name: z.string(),
  timestamp: z.string(),
  cpu_usage: z.number().nullable(),
  mem_usage: z.number().nullable(),
  disk_usage: z.number().nullable(),
  network_up: z.number().nullable(),
  network_down: z.number().nullable(),
})

const ModelRow = z
  .object({
    id: z.number().int(),
    name: z.string(),
    version: z.string(),
    version_code: z.number().int(),
    is_active: z.boolean(),
    min_memory_mb: z.number().nullable(),
    min_gpu_memory_gb: z.number().nullable(),
    created_at: z.string(),
  })
  .openapi('SeedModel')

const QueryBool = z
  .enum(['true', 'false', '1', '0'])
  .transform((v) => v === 'true' || v === '1')
  .openapi({ type: 'string', enum: ['true', 'false', '1', '0'] })

const round = (n: number | null | undefined, digits = 2): number | null =>
  n === null || n === undefined || !Number.isFinite(n) ? null : Math.round(n * 10 ** digits) / 10 ** digits

interface ClientView {
  readonly worker: WorkerRecord
  readonly system: SystemInfoRecord | undefined
  readonly devices: readonly DeviceInfoRecord[]
  readonly lastHeartbeat: number | undefined
  readonly online: boolean
}

export function registerSeedRoutes(app: ApiApp, deps: ApiDeps): void {
  const store = (): Store & StoreTelemetry => {
    const s = deps.store as (Store & Partial<StoreTelemetry>) | undefined
    if (s?.getSystemInfo === undefined) throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, 'no database')
    return s as Store & StoreTelemetry
  }

  /** The user `user_id` names (name or id), when the caller may act for it. */
  async function userFor(caller: Caller, userId: string, create = false): Promise<UserRecord> {
    const s = store()
    const user = (await s.getUser(userId)) ?? (await s.listUsers()).find((u) => u.name === userId)
    if (caller.role === 'user' && (user === undefined || user.id !== caller.userId))
      throw new FabricError(ErrorCodes.FORBIDDEN, "a user key may name only its own user in 'user_id'")
    if (user !== undefined) return user
    if (create) return s.ensureUser(userId)
    throw new FabricError(ErrorCodes.NOT_FOUND, `no user '${userId}'`)
  }

  /** A worker of `user` with its latest readings. */
  async function clientView(worker: WorkerRecord): Promise<ClientView> {
    const s = store()
    const [system, devices] = await Promise.all([
      s.getSystemInfo(worker.clientId),
      s.listDeviceInfo(worker.clientId),
    ])
    const live = deps.registry.byClientId(worker.clientId)
    const lastHeartbeat = Math.max(live?.lastHeartbeatAt ?? 0, system?.at.getTime() ?? 0) || undefined
    const online = lastHeartbeat !== undefined && Date.now() - lastHeartbeat <= ONLINE_WINDOW_MS
    return { worker, system, devices, lastHeartbeat, online }
  }

  function health(v: ClientView): z.infer<typeof Device.shape.health> {
    if (v.worker.clientStatus === 'maintenance') return 'maintenance'
    if (v.worker.clientStatus === 'error') return 'error'
    if (!v.online) return 'offline'
    const s = v.system
    const hot = [s?.cpuPercent, s?.memPercent, s?.diskPercent].some(
      (p) => p !== null && p !== undefined && p >= WARN_PERCENT,
    )
    const warm = v.devices.some((d) => d.temperatureC !== null && d.temperatureC >= WARN_TEMPERATURE_C)
    return hot || warm ? 'warning' : 'healthy'
  }

  const nameOf = (w: WorkerRecord) => w.name ?? w.hostname ?? w.clientId
  const clientStatusOf = (v: ClientView) =>
    v.worker.clientStatus === 'maintenance' || v.worker.clientStatus === 'error'
      ? v.worker.clientStatus
      : v.online
        ? 'online'
        : 'offline'

  function deviceRow(v: ClientView): z.infer<typeof Device> {
    const names = [...new Set(v.devices.map((d) => d.name))]
    return {
      client_id: v.worker.clientId,
      client_name: nameOf(v.worker),
      client_status: clientStatusOf(v),
      os_type: v.worker.os,
      device_name:
        names.length === 0
          ? v.worker.hostname
          : names.length === 1 && v.devices.length > 1
            ? `${v.devices.length} x ${names[0]}`
            : names.join(', '),
      tflops: round(v.system?.totalTflops ?? 0) ?? 0,
      cpu_usage: round(v.system?.cpuPercent),
      memory_usage: round(v.system?.memPercent),
      storage_usage: round(v.system?.diskPercent),
      health: health(v),
      last_online: v.lastHeartbeat === undefined ? null : new Date(v.lastHeartbeat).toISOString(),
      created_at: v.worker.firstSeenAt.toISOString(),
      uptime_days: v.system?.uptimeSeconds == null ? null : round(v.system.uptimeSeconds / 86_400),
      valid_status: v.worker.valid ? 'valid' : 'invalid',
    }
  }

  async function clientsOf(caller: Caller, userId: string, clientId?: string): Promise<ClientView[]> {
    const user = await userFor(caller, userId)
    const workers = (await store().listWorkers({ userId: user.id })).filter(
      (w) => clientId === undefined || w.clientId === clientId,
    )
    return Promise.all(workers.map(clientView))
  }

  async function ownWorker(caller: Caller, userId: string, clientId: string): Promise<WorkerRecord> {
    const user = await userFor(caller, userId)
    const worker = await store().getWorker(clientId)
    if (worker === undefined || worker.userId !== user.id)
      throw new FabricError(ErrorCodes.NOT_FOUND, `no client '${clientId}' of user '${userId}'`)
    return worker
  }

  for (const path of ['/api/user/client_list', '/api/user/client_status_list'] as const)
    openapi(
      app,
      route({
        method: 'get',
        path,
        summary: "A user's clients (workers) with their latest readings",
        request: { query: ListQuery },
        responses: ok(
          DeviceList,
          path.endsWith('status_list') ? 'SeedClientStatusList' : 'SeedClientList',
          'the clients',
        ),
      }),
      async (c) => {
        const q = c.req.valid('query')
        const needle = q.name?.toLowerCase()
        const rows = (await clientsOf(c.get('caller'), q.user_id, q.client_id))
          .map(deviceRow)
          .filter(
            (d) =>
              (q.status === undefined || d.client_status === q.status) &&
              (needle === undefined || d.client_name.toLowerCase().includes(needle)) &&
              (q.valid_status === undefined || d.valid_status === q.valid_status),
          )
        return c.json(envelope({ total: rows.length, devices: rows }), 200)
      },
    )

  openapi(
    app,
    route({
      method: 'get',
      path: '/api/user/client_device_detail',
      summary: "One client's system info and devices (GPUs) as last reported",
      request: { query: ListQuery.extend({ client_id: ClientId }) },
      responses: ok(DeviceDetail, 'SeedClientDeviceDetail', 'the client'),
    }),
    async (c) => {
      const q = c.req.valid('query')
      const worker = await ownWorker(c.get('caller'), q.user_id, q.client_id)
      const v = await clientView(worker)
      return c.json(
        envelope({
          system_info: {
            health: health(v),
            cpu_usage: round(v.system?.cpuPercent),
            memory_usage: round(v.system?.memPercent),
            storage_usage: round(v.system?.diskPercent),
            device_memsize: Math.round((v.system?.deviceMemoryTotalBytes ?? 0) / 1_048_576),
            uptime_days: v.system?.uptimeSeconds == null ? null : round(v.system.uptimeSeconds / 86_400),
          },
          device_info: v.devices.map((d) => ({
            device_index: d.deviceIndex,
            name: d.name,
            temp: round(d.temperatureC),
            usage: round(d.utilizationPercent),
            mem_usage:
              d.memoryUsedBytes !== null && d.memoryTotalBytes !== null && d.memoryTotalBytes > 0
                ? round((d.memoryUsedBytes / d.memoryTotalBytes) * 100)
                : round(d.memoryUtilizationPercent),
            power_usage: round(d.powerDrawW),
          })),
        }),
        200,
      )
    },
  )

  openapi(
    app,
    route({
      method: 'post',
      path: '/api/user/insert_client',
      summary: 'Register a client (worker) for a user before it first logs in',
      request: jsonBody(
        z.object({
          user_id: z.string().min(1).max(32).openapi({ example: 'alice' }),
          client_id: z
            .string()
            .regex(/^[0-9a-fA-F]{32}$/, 'must be 32 hexadecimal characters')
            .openapi({ example: '0123456789abcdef0123456789abcdef' }),
          client_status: ClientStatus,
          os_type: z.string().max(64).optional(),
          name: z.string().min(1).max(32).openapi({ example: 'rig-1' }),
        }),
      ),
      responses: ok(z.array(z.unknown()).max(0), 'SeedInsertClient', 'registered'),
    }),
    async (c) => {
      const b = c.req.valid('json')
      const caller = c.get('caller')
      requireManage(caller, 'registering a client')
      const user = await userFor(caller, b.user_id, caller.role === 'admin')
      const clientId = b.client_id.toLowerCase()
      const claim = await store().claimWorker(clientId, user.id)
      if (claim === 'taken')
        throw new FabricError(ErrorCodes.FORBIDDEN, `client '${clientId}' belongs to another user`)
      await store().updateWorker(clientId, {
        name: b.name,
        clientStatus: b.client_status,
        ...(b.os_type === undefined ? {} : { os: b.os_type }),
      })
      return c.json(envelope([]), 200)
    },
  )

  openapi(
    app,
    route({
      method: 'post',
      path: '/api/user/edit_client_info',
      summary: "Change a client's name, OS, status or validity (partial update)",
      request: jsonBody(
        z.object({
          user_id: UserId,
          client_id: ClientId,
          os_type: z.string().max(50).optional(),
          name: z.string().max(255).optional(),
          client_status: ClientStatus.optional(),
          valid_status: ValidStatus.optional(),
        }),
      ),
      responses: ok(z.null(), 'SeedEditClient', 'changed'),
    }),
    async (c) => {
      const b = c.req.valid('json')
      const caller = c.get('caller')
      requireManage(caller, 'editing a client')
      const worker = await ownWorker(caller, b.user_id, b.client_id)
      await store().updateWorker(worker.clientId, {
        ...(b.os_type === undefined ? {} : { os: b.os_type }),
        ...(b.name === undefined ? {} : { name: b.name }),
        ...(b.client_status === undefined ? {} : { clientStatus: b.client_status }),
        ...(b.valid_status === undefined ? {} : { valid: b.valid_status === 'valid' }),
      })
      return c.json(envelope(null), 200)
    },
  )

  openapi(
    app,
    route({
      method: 'get',
      path: '/api/user/client_stat',
      summary:
        "A user's fleet in numbers: total, online (heartbeat in the last 2 minutes), maintenance, warnings, TFLOPS, uptime",
      request: { query: z.object({ user_id: UserId }) },
      responses: ok(ClientStat, 'SeedClientStat', 'the figures'),
    }),
    async (c) => {
      const { user_id } = c.req.valid('query')
      const views = await clientsOf(c.get('caller'), user_id)
      const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10)
      const interval = deps.heartbeatIntervalMs ?? 5_000
      const expected = 86_400_000 / interval
      let uptime = 0
      for (const v of views) {
        const day = (await store().listDailyStats(v.worker.clientId, { from: yesterday, to: yesterday }))[0]
        uptime += Math.min(1, (day?.heartbeats ?? 0) / expected)
      }
      return c.json(
        envelope({
          systems_total_number: views.length,
          systems_online_number: views.filter((v) => v.online).length,
          systems_maintenance_number: views.filter((v) => v.worker.clientStatus === 'maintenance').length,
          systems_warnings_number: views.filter((v) => {
            const h = health(v)
            return h === 'warning' || h === 'error'
          }).length,
          total_tflops: round(views.reduce((sum, v) => sum + (v.system?.totalTflops ?? 0), 0)) ?? 0,
          uptime_rate: views.length === 0 ? 0 : (round((uptime / views.length) * 100) ?? 0),
        }),
        200,
      )
    },
  )

  openapi(
    app,
    route({
      method: 'get',
      path: '/api/user/client_monitor',
      summary: 'Daily statistics per client and day',
      request: { query: z.object({ user_id: UserId, client_id: ClientId.optional() }) },
      responses: ok(z.array(MonitorRow), 'SeedClientMonitor', 'one row per client and day'),
    }),
    async (c) => {
      const q = c.req.valid('query')
      const user = await userFor(c.get('caller'), q.user_id)
      const workers = (await store().listWorkers({ userId: user.id })).filter(
        (w) => q.client_id === undefined || w.clientId === q.client_id,
      )
      const rows: z.infer<typeof MonitorRow>[] = []
      for (const w of workers)
        for (const d of await store().listDailyStats(w.clientId))
          rows.push({
            client_id: w.clientId,
            client_name: nameOf(w),
            created_at: w.firstSeenAt.toISOString(),
            updated_at: (d.lastHeartbeatAt ?? w.lastSeenAt).toISOString(),
            date: d.day,
            avg_cpu_usage: round(d.avgCpuPercent),
            avg_memory_usage: round(d.avgMemPercent),
            avg_disk_usage: round(d.avgDiskPercent),
            total_network_in_bytes: d.netInBytes,
            total_network_out_bytes: d.netOutBytes,
            total_heartbeats: d.heartbeats,
            last_heartbeat: d.lastHeartbeatAt?.toISOString() ?? null,
            avg_network_in_bytes: d.heartbeats === 0 ? 0 : (round(d.netInBytes / d.heartbeats) ?? 0),
            avg_network_out_bytes: d.heartbeats === 0 ? 0 : (round(d.netOutBytes / d.heartbeats) ?? 0),
          })
      return c.json(envelope(rows), 200)
    },
  )

  openapi(
    app,
    route({
      method: 'get',
      path: '/api/user/client_health',
      summary: `Raw heartbeats, newest first (at most ${HEALTH_ROWS_PER_WORKER} per client)`,
      request: {
        query: z.object({
          user_id: UserId,
          client_id: ClientId.optional(),
          start_date: Day.optional(),
          end_date: Day.optional(),
        }),
      },
      responses: ok(z.array(HealthRow), 'SeedClientHealth', 'raw heartbeats'),
    }),
    async (c) => {
      const q = c.req.valid('query')
      if (q.start_date !== undefined && q.end_date !== undefined && q.start_date > q.end_date)
        throw new FabricError(ErrorCodes.BAD_REQUEST, "invalid query field 'start_date': after 'end_date'")
      const user = await userFor(c.get('caller'), q.user_id)
      const workers = (await store().listWorkers({ userId: user.id })).filter(
        (w) => q.client_id === undefined || w.clientId === q.client_id,
      )
      const range = {
        ...(q.start_date === undefined ? {} : { from: new Date(`${q.start_date}T00:00:00.000Z`) }),
        ...(q.end_date === undefined ? {} : { to: new Date(`${q.end_date}T23:59:59.999Z`) }),
      }
      const rows: z.infer<typeof HealthRow>[] = []
      for (const w of workers)
        for (const h of await store().listHeartbeats(w.clientId, HEALTH_ROWS_PER_WORKER, range))
          rows.push({
            client_id: w.clientId,
            client_name: nameOf(w),
            timestamp: h.at.toISOString(),
            cpu_usage: round(h.cpuPercent),
            mem_usage: round(h.memPercent),
            disk_usage: round(h.diskPercent),
            network_up: h.netOutBytes,
            network_down: h.netInBytes,
          })
      rows.sort((a, b) => (a.timestamp < b.timestamp ? 1 : a.timestamp > b.timestamp ? -1 : 0))
      return c.json(envelope(rows), 200)
    },
  )

  openapi(
    app,
    route({
      method: 'post',
      path: '/api/models/insert',
      summary: 'Create or update a catalogue model by name + version (admin)',
      request: jsonBody(
        z.object({
          name: z.string().trim().min(1).max(512).openapi({ example: 'llama3.2' }),
          version: z.string().trim().min(1).max(128).openapi({ example: '1.0' }),
          version_code: z.number().int().min(0).max(2_147_483_647),
          engine_type: z.number().int().min(0).max(2_147_483_647),
          is_active: z.boolean().optional(),
          min_memory_mb: z.number().int().min(0).max(1e12).nullable().optional(),
          min_gpu_memory_gb: z.number().min(0).max(1e6).nullable().optional(),
          download_url: z.url().max(2048).nullable().optional(),
          checksum: z
            .string()
            .regex(/^sha256:[0-9a-fA-F]{64}$/, 'must be sha256:<64 hex>')
            .nullable()
            .optional(),
          expected_size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable().optional(),
        }),
      ),
      responses: ok(z.null(), 'SeedModelInsert', 'stored'),
    }),
    async (c) => {
      requireAdmin(c.get('caller'), 'the model catalogue')
      const b = c.req.valid('json')
      await store().upsertModel({
        name: b.name,
        version: b.version,
        versionCode: b.version_code,
        engineType: b.engine_type,
        ...(b.is_active === undefined ? {} : { isActive: b.is_active }),
        minMemoryMb: b.min_memory_mb ?? null,
        minGpuMemoryGb: b.min_gpu_memory_gb ?? null,
        downloadUrl: b.download_url ?? null,
        checksum: b.checksum?.toLowerCase() ?? null,
        expectedSize: b.expected_size ?? null,
      })
      return c.json(envelope(null), 200)
    },
  )

  openapi(
    app,
    route({
      method: 'get',
      path: '/api/models/get',
      summary: 'The model catalogue; min_gpu_memory_gb: models that fit in that much GPU memory',
      request: {
        query: z.object({
          is_active: QueryBool.optional(),
          min_gpu_memory_gb: z.coerce.number().min(0).max(1e6).optional().openapi({ type: 'number' }),
        }),
      },
      responses: ok(z.array(ModelRow), 'SeedModelList', 'the models'),
    }),
    async (c) => {
      const q = c.req.valid('query')
      const models = await store().listModels({
        ...(q.is_active === undefined ? {} : { isActive: q.is_active }),
        ...(q.min_gpu_memory_gb === undefined ? {} : { minGpuMemoryGb: q.min_gpu_memory_gb }),
      })
      return c.json(
        envelope(
          models.map((m) => ({
            id: m.id,
            name: m.name,
            version: m.version,
            version_code: m.versionCode,
            is_active: m.isActive,
            min_memory_mb: m.minMemoryMb,
            min_gpu_memory_gb: m.minGpuMemoryGb,
            created_at: m.createdAt.toISOString(),
          })),
        ),
        200,
      )
    },
  )
}
