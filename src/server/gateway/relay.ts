import type { ServerResponse } from 'node:http'
import { ErrorCodes } from '../../errors/index.js'
import type { Lane, LaneExchange } from '../../routing/lanes.js'
import type { Waiter, WaitQueues } from '../../routing/queue.js'
import type { RouteExplanation } from '../../routing/registry.js'
import type { WorkerSession } from '../../routing/worker-session.js'
import { type ApiFamily, sendError, streamErrorEvent } from './errors.js'
import type { AnswerMeter } from './meter.js'
import { UsageStripper } from './usage-stream.js'

/** Everything one request's trip to the workers needs. */
export interface RelayRequest {
  readonly api: ApiFamily
  readonly model: string
  /** The request as one encoded lane REQUEST frame (built once for every try). */
  readonly frame: Buffer
  /** Workers this request may use (a dedicated key's), or all. */
  readonly allow: ReadonlySet<string> | undefined
  /** Picks a worker serving the model, none of `tried`. */
  readonly pick: (
    model: string,
    tried: Set<WorkerSession> | undefined,
    allow?: ReadonlySet<string>,
    explain?: RouteExplanation,
  ) => WorkerSession | undefined
  /** The request's affinity key (session or prompt prefix); none: the plain pick. */
  readonly affinity: number | undefined
  readonly pickAffine: (
    model: string,
    key: number,
    tried: Set<WorkerSession> | undefined,
    allow?: ReadonlySet<string>,
    explain?: RouteExplanation,
  ) => WorkerSession | undefined
  /** The request asked (header `x-gpufabric-route`) why it went where it went. */
  readonly explain: boolean
  /** True when some worker could serve the request once it has room (waiting can help). */
  readonly serves: (
    model: string,
    tried: Set<WorkerSession> | undefined,
    allow?: ReadonlySet<string>,
  ) => boolean
  /** Where a request waits when every eligible worker is at capacity; none: 503 at once. */
  readonly queues: WaitQueues | undefined
  readonly maxAttempts: number
  /** Headers added to the answer (rate-limit state). */
  readonly extraHeaders: Record<string, string> | undefined
  readonly meter: AnswerMeter | undefined
  /** The gateway asked the engine for stream usage the user did not ask for: take it out again. */
  readonly stripUsage: boolean
  readonly firstByteMs: number
  readonly idleMs: number
}

/**
 * One request's trip to the workers: sends it on a lane (a reused HTTP/2 stream of a worker's
 * data link) and relays the answer to `res` chunk by chunk, with backpressure both ways. A try
 * that fails before any answer byte goes to another worker (up to `maxAttempts`); once the
 * answer has started, a failure ends it with an explicit error, never a silent success. A user
 * who goes away cancels the lane. One object per request, no promise: this is the hot path.
 */
export class Relay implements LaneExchange, Waiter {
  readonly #res: ServerResponse
  readonly #r: RelayRequest
  #tried: Set<WorkerSession> | undefined
  #attempts = 0
  #worker: WorkerSession | undefined
  /** The lane of the try in flight; cleared when it ends, so late events cannot touch it. */
  #lane: Lane | undefined
  #contentType = ''
  /** The answer's declared content-length (-1: none), and the body bytes relayed so far. */
  #declared = -1
  #relayed = 0
  #strip: UsageStripper | undefined
  /** Waiting in the model's queue now; until when it may wait (epoch ms; 0: never queued). */
  #waiting = false
  #queuedUntil = 0
  /** Why the last pick chose its worker, when the request asked. */
  #route: RouteExplanation | undefined
  /** Why no worker took it: the queue was full, or the wait ran out. */
  #why: 'full' | 'expired' | undefined
  readonly #onClose = () => {
    if (this.#waiting) {
      this.#waiting = false
      this.#r.queues?.leave(this.#r.model, this)
      this.#giveUp()
    } else this.#lane?.cancel()
  }
  readonly #onDrain = () => this.#lane?.resume()

  constructor(res: ServerResponse, r: RelayRequest) {
    this.#res = res
    this.#r = r
  }

  /** Starts the first try. */
  start(): void {
    this.#res.on('close', this.#onClose)
    this.#res.on('drain', this.#onDrain)
    this.#next()
  }

  #next(): void {
    const res = this.#res
    const r = this.#r
    while (this.#attempts < r.maxAttempts && !res.destroyed) {
      if (r.explain) this.#route ??= { reason: '' }
      const worker =
        r.affinity === undefined
          ? r.pick(r.model, this.#tried, r.allow, this.#route)
          : r.pickAffine(r.model, r.affinity, this.#tried, r.allow, this.#route)
      if (worker === undefined) {
        // Every eligible worker is at capacity: wait for room, when waiting can help.
        if (r.queues !== undefined && r.serves(r.model, this.#tried, r.allow) && this.#wait(r.queues)) return
        break
      }
      this.#attempts++
      const lane = worker.lane()
      if (lane === undefined) {
        this.#skip(worker)
        continue
      }
      this.#worker = worker
      this.#lane = lane
      worker.inflight++
      worker.bytesToWorker += r.frame.length
      lane.send(r.frame, this, r.firstByteMs, r.idleMs)
      return
    }
    this.#giveUp()
  }

  /** Queues the request (or puts it back at the head with the time it has left); false: it may not wait. */
  #wait(queues: WaitQueues): boolean {
    if (this.#queuedUntil === 0) {
      if (!queues.wait(this.#r.model, this)) {
        this.#why = 'full'
        return false
      }
      this.#queuedUntil = Date.now() + queues.waitMs
    } else {
      const left = this.#queuedUntil - Date.now()
      if (left <= 0) {
        this.#why = 'expired'
        return false
      }
      queues.requeue(this.#r.model, this, left)
    }
    this.#waiting = true
    return true
  }

  /** Room may have freed (Waiter). */
  wake(): void {
    this.#waiting = false
    this.#next()
  }

  /** Waited as long as it may (Waiter). */
  expire(): void {
    this.#waiting = false
    this.#why = 'expired'
    this.#giveUp()
  }

  /** No worker took the request. */
  #giveUp(): void {
    const res = this.#res
    const r = this.#r
    // The request ends here without an answer from a worker: still counted for its key
    // (499: the user went away first, as nginx logs it; 503: no worker could take it).
    if (r.meter !== undefined) {
      r.meter.status = res.destroyed ? 499 : 503
      r.meter.finish()
    }
    if (res.destroyed) return
    const message =
      this.#why === 'full'
        ? `every worker serving '${r.model}' is busy and its queue is full`
        : this.#why === 'expired'
          ? `no worker serving '${r.model}' had room within ${Math.round((r.queues?.waitMs ?? 0) / 1000)} s`
          : `no worker serving '${r.model}' could take the request`
    sendError(res, r.api, ErrorCodes.NO_WORKER, message, { 'retry-after': '1' })
  }

  #skip(worker: WorkerSession): void {
    this.#tried ??= new Set()
    this.#tried.add(worker)
  }

  /** The try in flight is over: its lane is no longer ours. */
  #settle(): WorkerSession {
    const worker = this.#worker!
    worker.inflight--
    this.#lane = undefined
    // A slot freed: the oldest request waiting for one of this worker's models may take it.
    this.#r.queues?.release(worker.models)
    return worker
  }

  head(status: number, headers: string[]): void {
    const { meter, extraHeaders } = this.#r
    this.#worker!.succeeded()
    if (meter !== undefined) {
      meter.status = status
      meter.workerId = this.#worker!.clientId
      meter.firstByte()
    }
    let sized = false
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!
      if (name === 'content-type') this.#contentType = headers[i + 1]!
      else if (name.startsWith('x-gpufabric-')) {
        // Ours alone: an engine cannot speak for the fabric.
        headers.splice(i, 2)
        i -= 2
      } else if (name === 'content-length') {
        // A worker's word on the body's length is checked, never trusted: a length the body
        // does not match would desync the user's keep-alive connection.
        const value = headers[i + 1]!
        if (sized || !/^\d{1,15}$/.test(value)) {
          headers.splice(i, 2)
          i -= 2
          continue
        }
        sized = true
        this.#declared = Number(value)
      }
    }
    if (this.#r.stripUsage && !sized && this.#contentType.startsWith('text/event-stream')) {
      this.#strip = new UsageStripper()
    }
    if (extraHeaders !== undefined) for (const name in extraHeaders) headers.push(name, extraHeaders[name]!)
    headers.push('x-gpufabric-worker', this.#worker!.clientId)
    if (this.#route !== undefined) {
      const waited = this.#queuedUntil === 0 ? '' : '; waited in the queue'
      headers.push('x-gpufabric-route', `${this.#route.reason}; try ${this.#attempts}${waited}`)
    }
    const res = this.#res
    try {
      res.writeHead(status, headers)
    } catch {
      // Headers the user cannot be sent (invalid characters from an engine): nothing has left
      // yet, so the user gets a clean 502 and the lane is dropped.
      this.#lane?.cancel()
      this.#declared = -1
      try {
        sendError(
          res,
          this.#r.api,
          ErrorCodes.WORKER_FAILED,
          'the worker sent a response that cannot be forwarded',
        )
      } catch {
        res.destroy()
      }
      return
    }
    // Streams (SSE/NDJSON) must reach the client at once, not when the first chunk comes.
    if (!sized) res.flushHeaders()
  }

  data(chunk: Buffer, last: boolean): void {
    if (this.#declared >= 0) {
      this.#relayed += chunk.length
      if (this.#relayed > this.#declared || (last && this.#relayed !== this.#declared)) {
        this.#mismatch()
        return
      }
    }
    this.#worker!.bytesFromWorker += chunk.length
    const meter = this.#r.meter
    meter?.observe(chunk)
    let out = chunk
    if (this.#strip !== undefined) {
      out = this.#strip.push(chunk)
      if (last) out = Buffer.concat([out, this.#strip.flush()])
    }
    meter?.sent(out.length)
    // A complete answer leaves with its end: one write to the user, no empty end() after it.
    if (last) this.#res.end(out)
    else if (out.length > 0 && !this.#res.write(out)) this.#lane?.pause()
  }

  end(): void {
    this.#settle()
    // An event the engine left without its closing blank line goes out as it came.
    const rest = this.#strip?.flush()
    if (rest !== undefined && rest.length > 0) this.#r.meter?.sent(rest.length)
    this.#r.meter?.finish()
    if (this.#res.writableEnded) return
    if (rest !== undefined && rest.length > 0) {
      this.#res.end(rest)
      return
    }
    if (this.#declared >= 0 && this.#relayed !== this.#declared) this.#res.destroy()
    else this.#res.end()
  }

  /** The body is longer or shorter than the worker said: the user's connection cannot be kept. */
  #mismatch(): void {
    this.#lane?.cancel()
    this.#declared = -1
    this.#res.destroy()
  }

  fail(retryable: boolean, _message: string): void {
    const worker = this.#settle()
    worker.failed()
    if (retryable) {
      this.#skip(worker)
      this.#next()
      return
    }
    this.#r.meter?.finish()
    const res = this.#res
    if (res.destroyed || res.writableEnded) return
    if (!res.headersSent) {
      // The worker's own words may name its engine's address: they stay on the worker.
      sendError(res, this.#r.api, ErrorCodes.WORKER_FAILED, 'the worker failed this request')
      return
    }
    // The worker went away mid-answer: end with an explicit error, never a silent success.
    const event = streamErrorEvent(this.#contentType, 'the worker serving this request failed mid-response')
    if (event === undefined) res.destroy()
    else res.end(event)
  }
}
