import type { ServerResponse } from 'node:http'
import { ErrorCodes } from '../../errors/index.js'
import type { LaneExchange } from '../../routing/lanes.js'
import type { WorkerSession } from '../../routing/worker-session.js'
import { type ApiFamily, sendError, streamErrorEvent } from './errors.js'
import type { AnswerMeter } from './meter.js'

/** Result of one try: the answer started ('done'), or failed before its first byte ('retry'). */
export type Outcome = 'done' | 'retry'

/** What one try needs besides the worker. */
export interface RelayRequest {
  readonly api: ApiFamily
  /** The request as one encoded lane REQUEST frame (built once for every try). */
  readonly frame: Buffer
  /** Headers added to the answer (rate-limit state). */
  readonly extraHeaders: Record<string, string> | undefined
  readonly meter: AnswerMeter | undefined
  readonly firstByteMs: number
  readonly idleMs: number
}

/**
 * Sends a request to one worker on a lane (a reused HTTP/2 stream of its data link) and relays
 * the answer to `res` chunk by chunk, with backpressure both ways. Resolves 'retry' when the
 * try failed before any answer byte (safe to send elsewhere), 'done' once the answer has
 * started. A user who goes away cancels the lane; a worker that fails mid-answer ends it with
 * an explicit error.
 */
export function relayToWorker(worker: WorkerSession, res: ServerResponse, r: RelayRequest): Promise<Outcome> {
  return new Promise((resolve) => {
    const lane = worker.lane()
    if (lane === undefined) {
      resolve('retry')
      return
    }
    const { meter, extraHeaders } = r
    worker.inflight++
    let over = false
    let contentType = ''
    const onClientGone = () => {
      if (!over) lane.cancel()
    }
    const onDrain = () => lane.resume()
    res.once('close', onClientGone)
    res.on('drain', onDrain)
    const finish = () => {
      over = true
      worker.inflight--
      res.off('close', onClientGone)
      res.off('drain', onDrain)
    }
    const exchange: LaneExchange = {
      head(status, headers) {
        if (meter !== undefined) {
          meter.status = status
          meter.workerId = worker.clientId
        }
        let sized = false
        for (let i = 0; i < headers.length; i += 2) {
          const name = headers[i]
          if (name === 'content-type') contentType = headers[i + 1]!
          else if (name === 'content-length') sized = true
        }
        if (extraHeaders !== undefined)
          for (const name in extraHeaders) headers.push(name, extraHeaders[name]!)
        resolve('done')
        try {
          res.writeHead(status, headers)
        } catch {
          // Headers the client cannot be sent (invalid characters from an engine): cut this answer only.
          lane.cancel()
          res.destroy()
          return
        }
        // Streams (SSE/NDJSON) must reach the client at once, not when the first chunk comes.
        if (!sized) res.flushHeaders()
      },
      data(chunk, last) {
        meter?.observe(chunk)
        // A complete answer leaves with its end: one write to the user, no empty end() after it.
        if (last) res.end(chunk)
        else if (!res.write(chunk)) lane.pause()
      },
      end() {
        finish()
        meter?.finish()
        if (!res.writableEnded) res.end()
      },
      fail(retryable, message) {
        finish()
        if (retryable) {
          resolve('retry')
          return
        }
        resolve('done')
        meter?.finish()
        if (res.destroyed || res.writableEnded) return
        if (!res.headersSent) {
          sendError(res, r.api, ErrorCodes.WORKER_FAILED, `the worker failed this request: ${message}`)
          return
        }
        // The worker went away mid-answer: end with an explicit error, never a silent success.
        const event = streamErrorEvent(contentType, 'the worker serving this request failed mid-response')
        if (event === undefined) res.destroy()
        else res.end(event)
      },
    }
    lane.send(r.frame, exchange, r.firstByteMs, r.idleMs)
  })
}
