import { LIMITS } from '../config/defaults.js'
import { score } from './affinity.js'
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
/** How `pick` chooses: two random candidates (default), every candidate, or weighted turns. */
export type RoutingStrategy = 'p2c' | 'least-outstanding' | 'weighted-round-robin'
export const ROUTING_STRATEGIES: readonly RoutingStrategy[] = [
  'p2c',
  'least-outstanding',
  'weighted-round-robin',
]

/** Points per worker on a model's affinity ring: more spread keys more evenly. */
const AFFINITY_VNODES = 64
/** Ring points an affinity pick looks at before it falls back to the plain pick. */
const AFFINITY_MAX_WALK = 64
/** How old an affinity load bound may be. */
const AFFINITY_LOAD_MS = 10

/** A model's consistent-hashing ring: points sorted, each with its worker. */
interface Ring {
  readonly points: Uint32Array
  readonly owners: readonly WorkerSession[]
}

export class WorkerRegistry {
  readonly #byClientId = new Map<string, WorkerSession>()
  readonly #byModel = new Map<string, WorkerSession[]>()
  readonly #byDataToken = new Map<string, WorkerSession>()
  /** Requests waiting for a worker with room, per model. */
  readonly queues: WaitQueues
  /** Affinity's hash ring per model (dropped when the model's workers change), and load bounds. */
  readonly #rings = new Map<string, Ring>()
  readonly #loads = new Map<string, { at: number; bound: number }>()

  /** How `pick` chooses among the eligible workers. */
  readonly strategy: RoutingStrategy

  constructor(
    options: { queues?: WaitQueuesOptions | undefined; strategy?: RoutingStrategy | undefined } = {},
  ) {
    this.queues = new WaitQueues(options.queues)
    this.strategy = options.strategy ?? 'p2c'
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
      w.hasRoom &&
      w.inRotation() &&
      !exclude?.has(w) &&
      (allow === undefined || allow.has(w.clientId))
    const n = list.length
    if (n === 1) {
      if (explain !== undefined) explain.reason = `${this.strategy}: the only worker serving the model`
      return eligible(list[0]!) ? list[0] : undefined
    }
    if (this.strategy === 'least-outstanding') return leastOutstanding(list, eligible, explain)
    if (this.strategy === 'weighted-round-robin') return weightedRoundRobin(list, eligible, explain)
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
    return twoOf(list.filter(eligible), explain, `${n} workers`)
  }

  /**
   * Picks by affinity (bounded-load consistent hashing): the key's place on the model's hash
   * ring (`AFFINITY_VNODES` points per worker), then the first worker clockwise that is eligible
   * (as `pick`) and whose requests in flight are under the bound, `affinityLoadFactor` times
   * the model's average (plus one). Removing a worker moves only the keys it held; a hot key
   * spills to the next workers on the ring. O(log points) plus a short walk (at most
   * `AFFINITY_MAX_WALK` points, then the plain pick); the ring is rebuilt lazily when the
   * model's workers change, and the average load is recomputed at most every `AFFINITY_LOAD_MS`.
   */
  pickAffine(
    model: string,
    key: number,
    exclude?: ReadonlySet<WorkerSession>,
    allow?: ReadonlySet<string>,
    explain?: RouteExplanation,
  ): WorkerSession | undefined {
    const list = this.#candidates(model)
    if (list === undefined) return undefined
    const name = list === this.#byModel.get(model) ? model : `${model}:latest`
    const ring = this.#ring(name, list)
    const bound = this.#loadBound(name, list)
    const { points, owners } = ring
    const n = points.length
    // The first point at or after the key (wrapping around).
    let lo = 0
    let hi = n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (points[mid]! < key) lo = mid + 1
      else hi = mid
    }
    const home = owners[lo % n]!
    const walk = Math.min(n, AFFINITY_MAX_WALK)
    for (let step = 0; step < walk; step++) {
      const w = owners[(lo + step) % n]!
      if (exclude?.has(w) || (allow !== undefined && !allow.has(w.clientId)) || !w.routable) continue
      if (w.inflight >= bound || !w.hasRoom || !w.inRotation()) continue
      if (explain !== undefined)
        explain.reason =
          w === home
            ? `affinity: ${w.clientId}, the key's home among ${list.length}`
            : `affinity: ${w.clientId}, spilled from ${home.clientId} (full, cooling down, unavailable or above the load bound ${bound})`
      return w
    }
    const picked = this.pick(model, exclude, allow, explain)
    if (explain !== undefined)
      explain.reason = `affinity: no worker near the key under the load bound ${bound}; ${explain.reason}`
    return picked
  }

  /** The model's hash ring, built when first needed after its workers changed. */
  #ring(name: string, list: readonly WorkerSession[]): Ring {
    let ring = this.#rings.get(name)
    if (ring !== undefined) return ring
    const n = list.length * AFFINITY_VNODES
    const raw = new Uint32Array(n)
    for (let i = 0; i < list.length; i++)
      for (let v = 0; v < AFFINITY_VNODES; v++) raw[i * AFFINITY_VNODES + v] = score(list[i]!.seed, v + 1)
    const order = Array.from({ length: n }, (_, k) => k).sort((a, b) => raw[a]! - raw[b]!)
    const points = new Uint32Array(n)
    const owners: WorkerSession[] = new Array(n)
    for (let k = 0; k < n; k++) {
      points[k] = raw[order[k]!]!
      owners[k] = list[Math.floor(order[k]! / AFFINITY_VNODES)]!
    }
    ring = { points, owners }
    this.#rings.set(name, ring)
    return ring
  }

  /** The load bound of a model's workers: from their average in flight, at most `AFFINITY_LOAD_MS` old. */
  #loadBound(name: string, list: readonly WorkerSession[]): number {
    const now = Date.now()
    let load = this.#loads.get(name)
    if (load === undefined || now - load.at > AFFINITY_LOAD_MS) {
      let total = 0
      let count = 0
      for (const w of list) {
        if (!w.routable) continue
        total += w.inflight
        count++
      }
      load = { at: now, bound: Math.ceil((LIMITS.affinityLoadFactor * (total + 1)) / Math.max(1, count)) }
      this.#loads.set(name, load)
    }
    return load.bound
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
    return twoOf(pool, explain, `the key's ${allow.size} workers`)
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
      this.#rings.delete(model)
      const list = this.#byModel.get(model)
      if (list === undefined) this.#byModel.set(model, [session])
      else if (!list.includes(session)) list.push(session)
    }
  }

  #unindex(session: WorkerSession): void {
    for (const model of session.models) {
      this.#rings.delete(model)
      const list = this.#byModel.get(model)
      if (list === undefined) continue
      const i = list.indexOf(session)
      if (i >= 0) list.splice(i, 1)
      if (list.length === 0) {
        this.#byModel.delete(model)
        this.#loads.delete(model)
      }
    }
  }
}

/** Every eligible worker looked at; the least loaded wins, a tie by a fair coin. O(workers of the model). */
function leastOutstanding(
  list: readonly WorkerSession[],
  eligible: (w: WorkerSession) => boolean,
  explain: RouteExplanation | undefined,
): WorkerSession | undefined {
  let best: WorkerSession | undefined
  let bestLoad = Number.POSITIVE_INFINITY
  let ties = 0
  let count = 0
  for (const w of list) {
    if (!eligible(w)) continue
    count++
    const l = load(w)
    if (l < bestLoad) {
      best = w
      bestLoad = l
      ties = 1
    } else if (l === bestLoad && Math.random() * ++ties < 1) best = w
  }
  if (explain !== undefined && best !== undefined)
    explain.reason = `least-outstanding of ${count}: ${best.clientId} load ${bestLoad.toFixed(2)}`
  return best
}

/**
 * Smooth weighted round robin (each worker's weight is its stated capacity, else 1): every
 * pick adds each eligible worker's weight to its running credit, takes the one with the most
 * credit and charges it the total. Over a round every worker gets its weight's share, spread
 * out rather than in bursts. O(workers of the model).
 */
function weightedRoundRobin(
  list: readonly WorkerSession[],
  eligible: (w: WorkerSession) => boolean,
  explain: RouteExplanation | undefined,
): WorkerSession | undefined {
  let best: WorkerSession | undefined
  let total = 0
  for (const w of list) {
    if (!eligible(w)) continue
    const weight = w.capacity > 0 ? w.capacity : 1
    w.credit += weight
    total += weight
    if (best === undefined || w.credit > best.credit) best = w
  }
  if (best === undefined) return undefined
  best.credit -= total
  if (explain !== undefined)
    explain.reason = `weighted-round-robin: ${best.clientId} (weight ${best.capacity > 0 ? best.capacity : 1} of ${total})`
  return best
}

/** p2c over workers already known eligible (collected from `among`, for the explanation). */
function twoOf(pool: readonly WorkerSession[], explain: RouteExplanation | undefined, among: string) {
  if (pool.length <= 1) {
    if (explain !== undefined)
      explain.reason = `p2c: ${pool.length} of ${among} eligible (routable, with room, in rotation, allowed)`
    return pool[0]
  }
  const i = (Math.random() * pool.length) | 0
  const j = (i + 1 + ((Math.random() * (pool.length - 1)) | 0)) % pool.length
  return better(pool[i]!, pool[j]!, explain, pool.length)
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
