import type { ClientHttp2Session } from 'node:http2'
import { LIMITS, TIMEOUTS } from '../config/defaults.js'
import type { ControlChannel, Metrics } from '../protocol/index.js'
import type { EngineType } from '../worker/engines/types.js'
import { hash32 } from './affinity.js'
import { type Lane, LaneLink } from './lanes.js'

/** A logged-in worker as the server sees it: its control channel and its data links. */
export class WorkerSession {
  readonly sessionId: string
  readonly clientId: string
  readonly engineType: EngineType
  readonly channel: ControlChannel
  readonly dataToken: string
  readonly connectedAt = Date.now()
  readonly remoteAddress: string
  readonly hostname: string | undefined
  readonly os: string | undefined
  readonly capacity: number
  /** Public prefix of the worker token this session logged in with (none for the shared token). */
  readonly credential: string | undefined
  /** The user the worker belongs to (its token's), when known. */
  readonly userId: string | undefined
  models: readonly string[]
  /** Requests this server has in flight on the worker. */
  inflight = 0
  /** Requests the worker last said it was running (all servers). */
  reportedInflight = 0
  lastHeartbeatAt = Date.now()
  metrics: Metrics | undefined
  /** Bytes this server sent the worker (request frames) and received from it (answers), this session. */
  /** Consecutive failed tries on this worker (before or during an answer); a started answer resets it. */
  failures = 0
  /** Out of rotation until then (epoch ms; 0: in rotation); afterwards one probe at a time. */
  cooldownUntil = 0
  /** Cooldowns in a row: the backoff's exponent. */
  cooldowns = 0
  /** Running credit of weighted round robin. */
  credit = 0
  /** This worker's hashing seed (affinity). */
  readonly seed: number
  bytesToWorker = 0
  bytesFromWorker = 0
  readonly #links: LaneLink[] = []
  #next = 0

  constructor(init: {
    sessionId: string
    clientId: string
    engineType: EngineType
    channel: ControlChannel
    dataToken: string
    models: readonly string[]
    remoteAddress: string
    hostname?: string | undefined
    os?: string | undefined
    capacity?: number | undefined
    credential?: string | undefined
    userId?: string | undefined
  }) {
    this.sessionId = init.sessionId
    this.clientId = init.clientId
    this.engineType = init.engineType
    this.channel = init.channel
    this.dataToken = init.dataToken
    this.models = init.models
    this.remoteAddress = init.remoteAddress
    this.hostname = init.hostname
    this.os = init.os
    this.capacity = init.capacity ?? 0
    this.seed = hash32(init.clientId)
    this.credential = init.credential
    this.userId = init.userId
  }

  /** A try on this worker failed: after `ejectAfterFailures` in a row it cools down, each time longer. */
  failed(now: number = Date.now()): void {
    this.failures++
    if (this.failures < LIMITS.ejectAfterFailures) return
    this.cooldownUntil = now + Math.min(TIMEOUTS.cooldownMaxMs, TIMEOUTS.cooldownBaseMs * 2 ** this.cooldowns)
    this.cooldowns = Math.min(this.cooldowns + 1, 30)
  }

  /** An answer started: the worker is in good standing again. */
  succeeded(): void {
    if (this.failures === 0 && this.cooldownUntil === 0) return
    this.failures = 0
    this.cooldowns = 0
    this.cooldownUntil = 0
  }

  /** Below its stated capacity (a worker that stated none always has room). */
  get hasRoom(): boolean {
    return this.capacity === 0 || this.inflight < this.capacity
  }

  /** Whether a request may go here now as far as failures go: in rotation, or a probe's turn. */
  inRotation(): boolean {
    return this.cooldownUntil === 0 || (this.cooldownUntil <= Date.now() && this.inflight === 0)
  }

  /** True when at least one data link can carry a request. */
  get routable(): boolean {
    // Links leave the list when they close; one closing right now still fails its lane, and
    // the request then tries another worker.
    const links = this.#links
    return links.length > 0 && (links.length > 1 || !links[0]!.closed)
  }

  /** Open data links. */
  get linkCount(): number {
    return this.#links.length
  }

  /** Adds a bound data link; it is dropped from the session when it closes. */
  addLink(session: ClientHttp2Session): void {
    const link = new LaneLink(session)
    this.#links.push(link)
    session.once('close', () => {
      const i = this.#links.indexOf(link)
      if (i >= 0) this.#links.splice(i, 1)
    })
  }

  /** Idle lanes over all data links. */
  get idleLanes(): number {
    let n = 0
    for (const link of this.#links) n += link.idleLanes
    return n
  }

  /**
   * A lane for one request: an idle one on a data link, or a new one (links taken round
   * robin). `undefined` when no link can carry it.
   */
  lane(): Lane | undefined {
    const n = this.#links.length
    for (let i = 0; i < n; i++) {
      const link = this.#links[this.#next++ % n]!
      const lane = link.acquire()
      if (lane !== undefined) return lane
    }
    return undefined
  }

  /** Drops every data link (the control channel is gone or going). */
  dropLinks(): void {
    for (const link of [...this.#links]) link.session.destroy()
  }

  /** Drops the worker: control channel and every data link. */
  close(code: string, message: string): void {
    this.channel.close(code, message)
    this.dropLinks()
  }
}
