/**
 * The telemetry events on the bus and their encoding: the wire contract between servers and
 * consumers (possibly other programs), so it lives with the other wire formats.
 *
 * Encoding: JSON, one object per message, with a version field `v`. JSON rather than
 * msgpack because these messages leave the fabric: operators read them with Kafka's own
 * tools (`kafka-console-consumer`, kcat) and other teams consume them in other languages,
 * and the seed's consumer read JSON; at a few hundred bytes per heartbeat the size and
 * parse cost are small next to the database write each one ends in (see
 * `npm run bench:heartbeats`). The control link between server and worker stays msgpack.
 *
 * Versioning: `v` is 1. A consumer decodes the versions it knows and counts and skips the
 * rest (and anything malformed); a new field is added as optional within a version, a
 * change of meaning takes a new version.
 */
import { z } from 'zod'
import { MetricsSchema } from './messages.js'

/** The encoding version this code writes. */
export const EVENT_VERSION = 1

const id = z.string().min(1).max(128)
const text = z.string().max(1024)
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const ms = z.number().min(0).max(1e12)

/** A worker's heartbeat as the server received it (topic `client-heartbeats`). */
export const HeartbeatEventSchema = z.object({
  v: z.literal(EVENT_VERSION),
  type: z.literal('heartbeat'),
  /** Idempotency key: unique per heartbeat; a redelivered message carries the same one. */
  id,
  clientId: id,
  /** The user the worker belongs to, when the server knows it. */
  userId: id.nullable(),
  /** When the server received it, epoch ms. */
  at: z.number().int().min(0),
  /** Requests the worker said it was running. */
  inflight: count,
  /** Models the worker serves. */
  models: count,
  /** Bytes the server's data links to this worker carried this session (measured by the server). */
  linkBytesIn: count,
  linkBytesOut: count,
  /** Network bytes the worker's host received / sent since its previous heartbeat (from its counters). */
  netInBytes: count,
  netOutBytes: count,
  metrics: MetricsSchema,
})
export type HeartbeatEvent = z.infer<typeof HeartbeatEventSchema>

/** One forwarded request's usage (topic `request-message`). */
export const UsageEventSchema = z.object({
  v: z.literal(EVENT_VERSION),
  type: z.literal('usage'),
  id,
  /** When the request arrived, epoch ms. */
  at: z.number().int().min(0),
  /** The API key's public id (`key_…`, `static` for a key given on the command line). */
  keyId: id,
  userId: id.nullable(),
  model: text,
  /** Client id of the worker that answered; null when none did. */
  workerId: id.nullable(),
  path: text,
  status: z.number().int().min(0).max(999),
  /** True when the request asked for a streamed answer. */
  stream: z.boolean(),
  /** Token counts from the engine's `usage`; null when the engine reported none (never guessed). */
  promptTokens: count.nullable(),
  completionTokens: count.nullable(),
  totalTokens: count.nullable(),
  /** Time from arrival to the answer's first byte leaving for the user; null when none did. */
  ttfbMs: ms.nullable(),
  durationMs: ms,
  /** Request body bytes and answer bytes relayed. */
  bytesIn: count,
  bytesOut: count,
})
export type UsageEvent = z.infer<typeof UsageEventSchema>

export type TelemetryEvent = HeartbeatEvent | UsageEvent

const EventSchema = z.discriminatedUnion('type', [HeartbeatEventSchema, UsageEventSchema])

/** Encodes an event for the bus. */
export function encodeEvent(event: TelemetryEvent): Buffer {
  return Buffer.from(JSON.stringify(event))
}

/** Decodes a bus message; undefined when it is not an event this version understands. */
export function decodeEvent(value: Buffer): TelemetryEvent | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(value.toString('utf8'))
  } catch {
    return undefined
  }
  const result = EventSchema.safeParse(parsed)
  return result.success ? result.data : undefined
}
