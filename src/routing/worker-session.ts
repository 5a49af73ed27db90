import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders } from 'node:http2'
import type { ControlChannel, Metrics } from '../protocol/index.js'
import type { EngineType } from '../worker/engines/types.js'

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
  models: readonly string[]
  /** Requests this server has in flight on the worker. */
  inflight = 0
  /** Requests the worker last said it was running (all servers). */
  reportedInflight = 0
  lastHeartbeatAt = Date.now()
  metrics: Metrics | undefined
  readonly #links: ClientHttp2Session[] = []
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
  }

  /** True when at least one data link can carry a request. */
  get routable(): boolean {
    for (const link of this.#links) if (!link.closed && !link.destroyed) return true
    return false
  }

  /** Open data links. */
  get linkCount(): number {
    return this.#links.length
  }

  /** Adds a bound data link; it is dropped from the session when it closes. */
  addLink(link: ClientHttp2Session): void {
    this.#links.push(link)
    link.once('close', () => {
      const i = this.#links.indexOf(link)
      if (i >= 0) this.#links.splice(i, 1)
    })
  }

  /** Opens one multiplexed request stream on a data link (round robin). */
  request(headers: OutgoingHttpHeaders): ClientHttp2Stream | undefined {
    const n = this.#links.length
    for (let i = 0; i < n; i++) {
      const link = this.#links[this.#next++ % n]!
      if (!link.closed && !link.destroyed) return link.request(headers, { endStream: false })
    }
    return undefined
  }

  /** Drops every data link (the control channel is gone or going). */
  dropLinks(): void {
    for (const link of [...this.#links]) link.destroy()
  }

  /** Drops the worker: control channel and every data link. */
  close(code: string, message: string): void {
    this.channel.close(code, message)
    this.dropLinks()
  }
}
