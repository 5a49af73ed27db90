import { WaitQueues, type WaitQueuesOptions } from './queue.js'
import type { WorkerSession } from './worker-session.js'

/** Why a pick chose what it chose (filled only when a request asks, see `x-gpufabric-route`). */
export interface RouteExplanation {
  reason: string
}

/**
 * Connected workers and the models they serve. Lookups on the request path are a
 * map hit plus a power-of-two-choices pick; nothing here allocates per request
 * beyond what the caller asks for.
 */
export class WorkerRegistry {
  readonly #byClientId = new Map<string, WorkerSession>()
  readonly #byModel = new Map<string, WorkerSession[]>()
  readonly #byDataToken = new Map<string, WorkerSession>()
  /** Requests waiting for a worker with room, per model. */
  readonly queues: WaitQueues

  constructor(options: { queues?: WaitQueuesOptions | undefined } = {}) {
    this.queues = new WaitQueues(options.queues)
  }

  /** Number of logged-in workers. */
  get size(): number {
    return this.#byClientId.size
  }

  /** Every logged-in worker. */
  workers(): IterableIterator<WorkerSession> {
    return this.#byClientId.values()
  }

  byClientId(clientId: string): WorkerSession | undefined {
    return this.#byClientId.get(clientId)
  }

  byDataToken(token: string): WorkerSession | undefined {
    return this.#byDataToken.get(token)
  }

  /** Adds a session; the caller has already evicted any older one with the same client id. */
  add(session: WorkerSession): void {
    this.#byClientId.set(session.clientId, session)
    this.#byDataToken.set(session.dataToken, session)
    this.#index(session)
    this.queues.release(session.models)
  }

  /**
   * Drops a session. Returns false when it was no longer the worker's current session (a new
   * login with the same client id replaced it), so the worker is still connected.
   */
  remove(session: WorkerSession): boolean {
    const current = this.#byClientId.get(session.clientId) === session
    if (current) this.#byClientId.delete(session.clientId)
    if (this.#byDataToken.get(session.dataToken) === session) this.#byDataToken.delete(session.dataToken)
    this.#unindex(session)
    return current
  }

  /** Replaces a session's model list. */
  setModels(session: WorkerSession, models: readonly string[]): void {
    this.#unindex(session)
    session.models = models
    if (this.#byClientId.get(session.clientId) === session) this.#index(session)
    this.queues.release(models)
  }

  /** Names of every model some worker serves, sorted. */
  models(): string[] {
    return [...this.#byModel.keys()].sort()
  }

  /** True when some worker (among `allow`, when given) announces the model (under that name or `name:latest`). */
  hasModel(model: string, allow?: ReadonlySet<string>): boolean {
    const list = this.#candidates(model)
    if (list === undefined) return false
    return allow === undefined || list.some((w) => allow.has(w.clientId))
  }

  /**
   * Picks a routable worker with room serving `model` by the power of two choices: two candidates drawn
   * independently and uniformly from the eligible workers, the one with fewer requests in
   * flight wins (relative to capacity when stated; a tie goes to either). `exclude` skips
   * workers a request has already failed on; `allow`, when given, limits the choice to those
   * client ids (keys dedicated to given workers). Usually two random draws, no allocation;
   * when draws keep hitting ineligible workers, the eligible ones are collected instead.
   */
  pick(
    model: string,
    exclude?: ReadonlySet<WorkerSession>,
    allow?: ReadonlySet<string>,
    explain?: RouteExplanation,
  ): WorkerSession | undefined {
    const list = this.#candidates(model)
    if (list === undefined) return undefined
    // A worker at its stated capacity takes nothing more (the request waits in the queue).
    const eligible = (w: WorkerSession) =>
      w.routable &&
      (w.capacity === 0 || w.inflight < w.capacity) &&
      w.inRotation() &&
      !exclude?.has(w) &&
      (allow === undefined || allow.has(w.clientId))
    const n = list.length
    if (n === 1) {
      if (explain !== undefined) explain.reason = 'p2c: the only worker serving the model'
      return eligible(list[0]!) ? list[0] : undefined
    }
    // A key dedicated to a few workers: look at those, not at every worker of the model.
    if (allow !== undefined && allow.size * 8 < n)
      return this.#pickAllowed(model, list, eligible, allow, explain)
    // Two distinct positions, uniformly: the second among the n - 1 others.
    for (let attempt = 0; attempt < 8; attempt++) {
      const i = (Math.random() * n) | 0
      const j = (i + 1 + ((Math.random() * (n - 1)) | 0)) % n
      const a = list[i]!
      const b = list[j]!
      if (eligible(a) && eligible(b)) return better(a, b, explain, n)
    }
    const pool = list.filter(eligible)
    if (pool.length <= 1) {
      if (explain !== undefined)
        explain.reason = `p2c: ${pool.length} of ${n} workers eligible (routable, with room, in rotation, allowed)`
      return pool[0]
    }
    const i = (Math.random() * pool.length) | 0
    const j = (i + 1 + ((Math.random() * (pool.length - 1)) | 0)) % pool.length
    return better(pool[i]!, pool[j]!, explain, n)
  }

  /** The pick among a small allow-list (a dedicated key's workers) that serve the model. */
  #pickAllowed(
    model: string,
    list: readonly WorkerSession[],
    eligible: (w: WorkerSession) => boolean,
    allow: ReadonlySet<string>,
    explain: RouteExplanation | undefined,
  ): WorkerSession | undefined {
    const name = list === this.#byModel.get(model) ? model : `${model}:latest`
    const pool: WorkerSession[] = []
    for (const id of allow) {
      const w = this.#byClientId.get(id)
      if (w === undefined || !eligible(w)) continue
      // Serving the model under the name the list came from (the name, or its `:latest`).
      if (w.models.includes(name)) pool.push(w)
    }
    if (pool.length <= 1) {
      if (explain !== undefined)
        explain.reason = `p2c: ${pool.length} of the key's ${allow.size} workers eligible`
      return pool[0]
    }
    const i = (Math.random() * pool.length) | 0
    const j = (i + 1 + ((Math.random() * (pool.length - 1)) | 0)) % pool.length
    return better(pool[i]!, pool[j]!, explain, pool.length)
  }

  /** True when some routable worker could serve the request, room or not (so waiting can help). */
  serves(model: string, exclude?: ReadonlySet<WorkerSession>, allow?: ReadonlySet<string>): boolean {
    const list = this.#candidates(model)
    if (list === undefined) return false
    return list.some((w) => w.routable && !exclude?.has(w) && (allow === undefined || allow.has(w.clientId)))
  }

  #candidates(model: string): WorkerSession[] | undefined {
    return (
      this.#byModel.get(model) ?? (model.includes(':') ? undefined : this.#byModel.get(`${model}:latest`))
    )
  }

  #index(session: WorkerSession): void {
    for (const model of session.models) {
      const list = this.#byModel.get(model)
      if (list === undefined) this.#byModel.set(model, [session])
      else if (!list.includes(session)) list.push(session)
    }
  }

  #unindex(session: WorkerSession): void {
    for (const model of session.models) {
      const list = this.#byModel.get(model)
      if (list === undefined) continue
      const i = list.indexOf(session)
      if (i >= 0) list.splice(i, 1)
      if (list.length === 0) this.#byModel.delete(model)
    }
  }
}

/** The less loaded of two; `a` on a tie (both are random draws). */
function better(
  a: WorkerSession,
  b: WorkerSession,
  explain: RouteExplanation | undefined,
  n: number,
): WorkerSession {
  const chosen = load(b) < load(a) ? b : a
  if (explain !== undefined)
    explain.reason = `p2c of ${n}: ${a.clientId} load ${load(a).toFixed(2)}, ${b.clientId} load ${load(b).toFixed(2)}; chose ${chosen.clientId}`
  return chosen
}

function load(w: WorkerSession): number {
  return w.capacity > 0 ? w.inflight / w.capacity : w.inflight
}
