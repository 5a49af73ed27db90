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

/** Host and device figures a worker reports with each heartbeat. */
export const MetricsSchema = z
  .object({
    cpuPercent: z.number().min(0).max(100_000).optional(),
    load1: z.number().min(0).optional(),
    memUsedBytes: z.number().int().min(0).optional(),
    memTotalBytes: z.number().int().min(0).optional(),
    uptimeSeconds: z.number().min(0).optional(),
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

/** A decoded, validated control message. */
export type ControlMessage = {
  [T in MessageTypeId]: { type: T; body: MessageOf<T> }
}[MessageTypeId]
