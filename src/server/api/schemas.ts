/**
 * Schemas of the management API's inputs and outputs. Routes are declared with them
 * (`routes-v1.ts`, `routes-seed.ts`); the OpenAPI 3.1 document at `/openapi.json` is generated
 * from them, so what is documented is what is validated.
 */
import { z } from '@hono/zod-openapi'
import { KEY_SCOPES } from '../../store/index.js'

/** `YYYY-MM-DD`, a real calendar day. */
export const Day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a day, YYYY-MM-DD')
  .refine(
    (s) => !Number.isNaN(Date.parse(s)) && new Date(s).toISOString().startsWith(s),
    'is not a calendar day',
  )
  .openapi({ example: '2026-11-30' })

/** A positive integer given in a query string. */
export const QueryLimit = z.coerce
  .number()
  .int('must be a positive integer')
  .positive('must be a positive integer')
  .max(1_000_000)
  .optional()
  .openapi({ type: 'integer', example: 100 })

const Id = z.string().min(1).max(256)

export const IdParam = z.object({
  id: Id.openapi({ param: { name: 'id', in: 'path' }, example: 'gpu-box-1' }),
})

export const ErrorBody = z
  .object({
    error: z.object({
      message: z.string(),
      type: z.string(),
      param: z.null(),
      code: z.string(),
    }),
  })
  .openapi('Error')

export const Health = z
  .object({ status: z.literal('ok'), version: z.string(), uptimeSeconds: z.number() })
  .openapi('Health')

export const Me = z
  .object({
    role: z.enum(['admin', 'user']),
    scope: z.enum(['admin', ...KEY_SCOPES]),
    user: z.object({ id: z.string(), name: z.string() }).nullable(),
    keyId: z.string().nullable(),
  })
  .openapi('Me')

const Num = z.number()
const NumOrNull = z.number().nullable()

export const Gpu = z
  .looseObject({
    index: z.number().int(),
    vendor: z.string(),
    name: z.string(),
    uuid: z.string().nullable(),
    utilizationPercent: NumOrNull,
    memoryUtilizationPercent: NumOrNull,
    memoryUsedBytes: NumOrNull,
    memoryTotalBytes: NumOrNull,
    temperatureC: NumOrNull,
    powerDrawW: NumOrNull,
    powerLimitW: NumOrNull,
    tflops: Num,
  })
  .openapi('Gpu')

export const Metrics = z
  .looseObject({
    cpuPercent: Num.optional(),
    load1: Num.optional(),
    memUsedBytes: Num.optional(),
    memTotalBytes: Num.optional(),
    memPercent: Num.optional(),
    uptimeSeconds: Num.optional(),
    diskPercent: Num.optional(),
    netRxBytes: Num.optional(),
    netTxBytes: Num.optional(),
    netRxRate: Num.optional(),
    netTxRate: Num.optional(),
    gpus: z.array(Gpu).optional(),
    deviceCount: Num.optional(),
    deviceMemoryTotalBytes: Num.optional(),
    totalTflops: Num.optional(),
  })
  .openapi('Metrics')

/** A connected worker, as this server sees it. */
export const LiveWorker = z
  .object({
    clientId: z.string(),
    sessionId: z.string(),
    engineType: z.string(),
    models: z.array(z.string()),
    hostname: z.string().nullable(),
    os: z.string().nullable(),
    remoteAddress: z.string(),
    connectedAt: z.string(),
    lastHeartbeatAt: z.string(),
    dataLinks: z.number().int(),
    idleLanes: z.number().int(),
    inflight: z.number().int(),
    reportedInflight: z.number().int(),
    capacity: z.number(),
    userId: z.string().nullable(),
    linkBytesToWorker: z.number(),
    linkBytesFromWorker: z.number(),
    metrics: Metrics.nullable(),
    failures: z.number().int(),
    cooldownUntil: z.string().nullable(),
    online: z.literal(true),
  })
  .openapi('LiveWorker')

/** A worker known to the database but not connected to this server. */
export const StoredWorker = z
  .object({
    clientId: z.string(),
    userId: z.string(),
    name: z.string().nullable(),
    status: z.enum(['online', 'offline']),
    clientStatus: z.string().nullable(),
    os: z.string().nullable(),
    hostname: z.string().nullable(),
    engineType: z.string().nullable(),
    valid: z.boolean(),
    models: z.array(z.string()),
    firstSeenAt: z.string(),
    lastSeenAt: z.string(),
    online: z.literal(false),
  })
  .openapi('StoredWorker')

export const WorkerList = z.object({ workers: z.array(LiveWorker) }).openapi('WorkerList')

export const ModelList = z
  .object({ models: z.array(z.object({ name: z.string(), workers: z.array(z.string()) })) })
  .openapi('ModelList')

/** Daily, device and raw telemetry of one worker. */
export const WorkerStats = z
  .object({
    clientId: z.string(),
    system: z.looseObject({ at: z.string() }).nullable(),
    devices: z.array(z.looseObject({ deviceIndex: z.number().int() })),
    daily: z.array(z.looseObject({ day: z.string(), heartbeats: z.number().int() })),
    deviceDaily: z.array(z.looseObject({ day: z.string(), deviceIndex: z.number().int() })),
    heartbeats: z.array(z.looseObject({ at: z.string(), clientId: z.string() })),
  })
  .openapi('WorkerStats')

export const Stats = z
  .looseObject({
    workers: z.number().int(),
    models: z.number().int(),
    inflight: z.number().int(),
    telemetry: z.looseObject({}).nullable(),
  })
  .openapi('Stats')

export const UsageQuery = z.object({
  keyId: z.string().max(256).optional(),
  userId: z.string().max(256).optional(),
  model: z.string().max(512).optional(),
  workerId: z.string().max(256).optional(),
  from: Day.optional(),
  to: Day.optional(),
  groupBy: z
    .enum(['day', 'key', 'model', 'worker'])
    .optional()
    .openapi({ description: 'sum the rows per day, key, model or worker instead of listing them' }),
  limit: QueryLimit,
})

const UsageFigures = {
  requests: z.number().int(),
  errors: z.number().int(),
  metered: z.number().int(),
  promptTokens: z.number(),
  completionTokens: z.number(),
  totalTokens: z.number(),
  bytesIn: z.number(),
  bytesOut: z.number(),
}

export const UsageRow = z
  .object({
    day: z.string(),
    keyId: z.string(),
    userId: z.string().nullable(),
    model: z.string(),
    workerId: z.string(),
    ...UsageFigures,
    avgDurationMs: z.number(),
    avgTtfbMs: z.number().nullable(),
  })
  .openapi('UsageRow')

export const UsageTotal = z
  .object({ group: z.string(), ...UsageFigures })
  .openapi('UsageTotal', { description: 'the usage rows of one day, key, model or worker, summed' })

export const UsageList = z
  .object({ usage: z.array(UsageRow), totals: z.array(UsageTotal).optional() })
  .openapi('UsageList')

export const KeyView = z
  .object({
    id: z.string(),
    prefix: z.string(),
    kind: z.enum(['api', 'worker']),
    userId: z.string(),
    name: z.string().nullable(),
    accessLevel: z.enum(['shared', 'dedicated']),
    scope: z.enum(KEY_SCOPES),
    workerIds: z.array(z.string()),
    models: z.array(z.string()).nullable(),
    rpmLimit: z.number().int().nullable(),
    tpmLimit: z.number().int().nullable(),
    expiresAt: z.string().nullable(),
    revokedAt: z.string().nullable(),
    createdAt: z.string(),
  })
  .openapi('Key')

export const KeyList = z.object({ keys: z.array(KeyView) }).openapi('KeyList')

export const NewKeySecret = KeyView.extend({
  key: z.string().openapi({ description: 'the key itself: shown once, only its hash is stored' }),
}).openapi('NewKey')

export const RotatedKey = NewKeySecret.extend({ replaced: z.string() }).openapi('RotatedKey')

export const Revoked = z.object({ id: z.string(), revoked: z.literal(true) }).openapi('Revoked')

const PositiveInt = z.number().int().positive().nullable().optional()

export const CreateKeyBody = z
  .strictObject({
    name: z.string().max(256).nullable().optional().openapi({ example: 'alice laptop' }),
    user: z.string().min(1).max(256).optional().openapi({ description: 'owner (name); created if missing' }),
    kind: z.enum(['api', 'worker']).optional(),
    accessLevel: z.enum(['shared', 'dedicated']).optional(),
    scope: z.enum(KEY_SCOPES).optional().openapi({
      description:
        'management API access: inference (none), read (own workers, keys, usage), manage (read, and own keys)',
    }),
    workerIds: z.array(z.string().max(256)).max(1000).nullable().optional(),
    models: z.array(z.string().max(512)).max(1000).nullable().optional(),
    rpmLimit: PositiveInt,
    tpmLimit: PositiveInt,
    expiresAt: z.iso.datetime({ offset: true }).nullable().optional(),
    expiresInDays: z.number().int().positive().max(36_500).nullable().optional(),
  })
  .openapi('CreateKey', {
    description:
      'Unknown fields are refused. snake_case names (rpm_limit, expires_in_days, ...) and the short names rpm, tpm, workers, dedicated, access are accepted too.',
  })

export const UpdateKeyBody = z
  .strictObject({
    name: z.string().max(256).nullable().optional(),
    models: z
      .array(z.string().max(512))
      .max(1000)
      .nullable()
      .optional()
      .openapi({ description: 'null: every model' }),
    rpmLimit: PositiveInt.openapi({ description: 'null: no limit' }),
    tpmLimit: PositiveInt.openapi({ description: 'null: no limit' }),
    expiresAt: z.iso.datetime({ offset: true }).nullable().optional().openapi({ description: 'null: never' }),
  })
  .openapi('UpdateKey', {
    description: 'Fields absent stay as they are; null clears. Unknown fields are refused.',
  })

export const RequestsQuery = z.object({
  keyId: z.string().max(256).optional(),
  since: z.iso.datetime({ offset: true }).optional().openapi({ example: '2026-11-30T00:00:00Z' }),
  limit: QueryLimit,
})

export const RequestRow = z
  .object({
    id: z.number().int(),
    at: z.string(),
    keyId: z.string(),
    userId: z.string().nullable(),
    model: z.string(),
    workerId: z.string().nullable(),
    path: z.string(),
    status: z.number().int(),
    durationMs: z.number(),
    promptTokens: z.number().nullable(),
    completionTokens: z.number().nullable(),
    totalTokens: z.number().nullable(),
  })
  .openapi('RequestLogRow')

export const RequestList = z.object({ requests: z.array(RequestRow) }).openapi('RequestList')

export const User = z.object({ id: z.string(), name: z.string(), createdAt: z.string() }).openapi('User')
export const UserList = z.object({ users: z.array(User) }).openapi('UserList')
export const CreateUserBody = z
  .strictObject({ name: z.string().min(1).max(128).openapi({ example: 'alice' }) })
  .openapi('CreateUser')
