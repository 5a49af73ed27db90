import { randomBytes } from 'node:crypto'
import { type Bus, TOPICS } from '../bus/index.js'
import { EVENT_VERSION, encodeEvent, type UsageEvent } from '../protocol/events.js'
import type { Heartbeat, Metrics } from '../protocol/index.js'
import type { WorkerSession } from '../routing/worker-session.js'

/** A usage event's fields the gateway knows (the publisher adds version, type and id). */
export type UsageFacts = Omit<UsageEvent, 'v' | 'type' | 'id'>

/**
 * Turns what the server sees into bus events: one per worker heartbeat (`client-heartbeats`,
 * keyed by client id) and one per forwarded request (`request-message`, keyed by API key id).
 * Each event gets an id unique across servers and restarts (a random instance prefix and a
 * counter: no per-event randomness on the request path), the consumer's idempotency key.
 * Publishing only queues (see `Bus.publish`): nothing here waits on the broker.
 */
export class TelemetryPublisher {
  readonly #bus: Bus
  readonly #instance = randomBytes(9).toString('base64url')
  #seq = 0

  constructor(bus: Bus) {
    this.#bus = bus
  }

  #id(): string {
    return `${this.#instance}.${(this.#seq++).toString(36)}`
  }

  /**
   * Publishes a heartbeat. `previous` is the session's previous report: network bytes since
   * then are the difference of the host counters (0 on a session's first heartbeat, or when a
   * counter went backwards after a reboot).
   */
  heartbeat(session: WorkerSession, body: Heartbeat, previous: Metrics | undefined, at = Date.now()): void {
    const metrics = body.metrics ?? {}
    this.#bus.publish(
      TOPICS.heartbeats,
      session.clientId,
      encodeEvent({
        v: EVENT_VERSION,
        type: 'heartbeat',
        id: this.#id(),
        clientId: session.clientId,
        userId: session.userId ?? null,
        at,
        inflight: body.inflight,
        models: session.models.length,
        linkBytesIn: session.bytesToWorker,
        linkBytesOut: session.bytesFromWorker,
        netInBytes: growth(previous?.netRxBytes, metrics.netRxBytes),
        netOutBytes: growth(previous?.netTxBytes, metrics.netTxBytes),
        metrics,
      }),
    )
  }

  /** Publishes one request's usage. */
  usage(facts: UsageFacts): void {
    this.#bus.publish(
      TOPICS.requests,
      facts.keyId,
      encodeEvent({ v: EVENT_VERSION, type: 'usage', id: this.#id(), ...facts }),
    )
  }
}

function growth(before: number | undefined, now: number | undefined): number {
  return before === undefined || now === undefined || now < before ? 0 : now - before
}
