import { z } from 'zod'
import { LIMITS } from '../config/defaults.js'
import { ENGINE_TYPES } from '../worker/engines/types.js'

/** Message type ids on the control connection. Never reuse a number. */
export const MessageType = {
  Login: 1,
  LoginOk: 2,
  LoginError: 3,
  Heartbeat: 4,
  ModelsUpdate: 5,
  Ping: 6,
  Pong: 7,
  Close: 8,
} as const
export type MessageTypeId = (typeof MessageType)[keyof typeof MessageType]

const modelName = z.string().min(1).max(LIMITS.maxModelNameLength)
const models = z.array(modelName).max(LIMITS.maxModelsPerWorker)
const shortText = z.string().max(256)

/** Most accelerators one heartbeat may list. */
export const MAX_GPUS_PER_WORKER = 64

const reading = z.number().min(0).max(1e15).nullable()
const percentReading = z.number().min(0).max(100).nullable()

/** One accelerator's readings (nvidia-smi, rocm-smi, Apple silicon); unknown readings are null. */
export const GpuSchema = z
  .object({
    index: z.number().int().min(0).max(1_000_000),
    vendor: z.enum(['nvidia', 'amd', 'apple']),
    name: shortText,
    uuid: shortText.nullable(),
    /** Compute utilisation, percent. */
    utilizationPercent: percentReading,
    /** Memory controller utilisation, percent (nvidia-smi's utilization.memory). */
    memoryUtilizationPercent: percentReading,
    memoryUsedBytes: reading,
    memoryTotalBytes: reading,
    temperatureC: z.number().min(-273).max(1000).nullable(),
    powerDrawW: reading,
    powerLimitW: reading,
    /** Dense FP16 tensor TFLOPS from a table of known parts; 0 when the part is not in it. */
    tflops: z.number().min(0).max(1e6),
  })
  .strict()

/**
 * Host, device and engine figures a worker reports with each heartbeat. Every field is
 * optional: a worker reports what it can read, and an older worker fewer fields.
 */
export const MetricsSchema = z
  .object({
    cpuPercent: z.number().min(0).max(100_000).optional(),
    load1: z.number().min(0).optional(),
    memUsedBytes: z.number().int().min(0).optional(),
    memTotalBytes: z.number().int().min(0).optional(),
    memPercent: z.number().min(0).max(100).optional(),
    uptimeSeconds: z.number().min(0).optional(),
    /** Use of the filesystem holding the worker's data dir. */
    diskPercent: z.number().min(0).max(100).optional(),
    diskUsedBytes: z.number().int().min(0).optional(),
    diskTotalBytes: z.number().int().min(0).optional(),
    /** Network counters of the host (every interface but loopback), bytes since boot. */
    netRxBytes: z.number().int().min(0).optional(),
    netTxBytes: z.number().int().min(0).optional(),
    /** Bytes received / sent per second since the previous heartbeat. */
    netRxRate: z.number().min(0).optional(),
    netTxRate: z.number().min(0).optional(),
    gpus: z.array(GpuSchema).max(MAX_GPUS_PER_WORKER).optional(),
    deviceCount: z.number().int().min(0).max(1_000_000).optional(),
    deviceMemoryTotalBytes: z.number().int().min(0).optional(),
    totalTflops: z.number().min(0).optional(),
    /** Bytes the worker's data links carried this session (requests in, answers out). */
    linkBytesIn: z.number().int().min(0).optional(),
    linkBytesOut: z.number().int().min(0).optional(),
  })
  .strict()

export const schemas = {
  [MessageType.Login]: z
    .object({
      clientId: z
        .string()
        .min(1)
        .max(128)
        .regex(/^[A-Za-z0-9._:@-]+$/, 'client id may hold letters, digits and . _ : @ - only'),
      token: z.string().min(1).max(1024),
      agentVersion: shortText,
      engineType: z.enum(ENGINE_TYPES),
      models,
      hostname: shortText.optional(),
      os: shortText.optional(),
      arch: shortText.optional(),
      /** Requests the worker is willing to run at once (0 = no stated limit). */
      capacity: z.number().int().min(0).max(1_000_000).optional(),
    })
    .strict(),
  [MessageType.LoginOk]: z
    .object({
      sessionId: z.string().min(1).max(128),
      dataToken: z.string().min(16).max(256),
      pingIntervalMs: z.number().int().positive(),
      pingDeadlineMs: z.number().int().positive(),
      heartbeatIntervalMs: z.number().int().positive(),
      dataConnections: z.number().int().min(1).max(64),
    })
    .strict(),
  [MessageType.LoginError]: z
    .object({
      code: shortText,
      message: z.string().max(4096),
      /** Wait at least this long before logging in again (throttled after failed logins). */
      retryAfterMs: z.number().int().min(0).max(86_400_000).optional(),
    })
    .strict(),
  [MessageType.Heartbeat]: z
    .object({
      inflight: z.number().int().min(0),
      models: models.optional(),
      metrics: MetricsSchema.optional(),
    })
    .strict(),
  [MessageType.ModelsUpdate]: z.object({ models }).strict(),
  [MessageType.Ping]: z.object({ t: z.number() }).strict(),
  [MessageType.Pong]: z.object({ t: z.number() }).strict(),
  [MessageType.Close]: z.object({ code: shortText, message: z.string().max(4096) }).strict(),
} as const

/** The payload type of each message. */
export type MessageOf<T extends MessageTypeId> = z.infer<(typeof schemas)[T]>
export type Login = MessageOf<typeof MessageType.Login>
export type LoginOk = MessageOf<typeof MessageType.LoginOk>
export type Heartbeat = MessageOf<typeof MessageType.Heartbeat>
export type Metrics = z.infer<typeof MetricsSchema>
export type GpuMetrics = z.infer<typeof GpuSchema>

/** A decoded, validated control message. */
export type ControlMessage = {
  [T in MessageTypeId]: { type: T; body: MessageOf<T> }
}[MessageTypeId]
