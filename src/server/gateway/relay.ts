import type { ServerResponse } from 'node:http'
import { constants as h2 } from 'node:http2'
import type { WorkerSession } from '../../routing/worker-session.js'
import { streamErrorEvent } from './errors.js'
import type { AnswerMeter } from './meter.js'

/** Result of one try: the answer started ('done'), or failed before its first byte ('retry'). */
export type Outcome = 'done' | 'retry'

/** What one try needs besides the worker. */
export interface RelayRequest {
  readonly headers: Record<string, string | number>
  readonly body: Buffer
  /** Headers added to the answer (rate-limit state). */
  readonly extraHeaders: Record<string, string> | undefined
  readonly meter: AnswerMeter | undefined
  readonly firstByteMs: number
  readonly idleMs: number
}

function noop(): void {}

/**
 * Sends a request to one worker as one HTTP/2 stream and relays the answer to `res` chunk by
 * chunk, with backpressure both ways. Resolves 'retry' when the stream failed before any
 * answer byte (safe to send elsewhere), 'done' once the answer has started. A user who goes
 * away cancels the stream; a worker that fails mid-answer ends it with an explicit error.
 */
export function relayToWorker(worker: WorkerSession, res: ServerResponse, r: RelayRequest): Promise<Outcome> {
  return new Promise((resolve) => {
    let stream: ReturnType<WorkerSession['request']>
    try {
      stream = worker.request(r.headers)
    } catch {
      stream = undefined
    }
    if (stream === undefined) {
      resolve('retry')
      return
    }
    const s = stream
    const { meter, extraHeaders } = r
    worker.inflight++
    let responded = false
    let ended = false
    let contentType = ''
    const onClientGone = () => {
      if (!ended) s.close(h2.NGHTTP2_CANCEL)
    }
    const onDrain = () => s.resume()
    res.once('close', onClientGone)
    // One inactivity timer per stream (refreshed by every frame): the first-byte limit until
    // the answer starts, then the idle limit, re-armed only when the two differ.
    s.setTimeout(r.firstByteMs, () => s.close(h2.NGHTTP2_CANCEL))
    s.on('error', noop)
    s.once('response', (responseHeaders) => {
      responded = true
      if (r.idleMs !== r.firstByteMs) s.setTimeout(r.idleMs, () => s.close(h2.NGHTTP2_CANCEL))
      const status = Number(responseHeaders[h2.HTTP2_HEADER_STATUS] ?? 502)
      if (meter !== undefined) {
        meter.status = status
        meter.workerId = worker.clientId
      }
      const out: string[] = []
      for (const name in responseHeaders) {
        if (name.charCodeAt(0) === 58 /* ':' */) continue
        const value = responseHeaders[name]
        if (typeof value === 'string') out.push(name, value)
      }
      if (extraHeaders !== undefined) for (const name in extraHeaders) out.push(name, extraHeaders[name]!)
      contentType = String(responseHeaders['content-type'] ?? '')
      try {
        res.writeHead(status, out)
      } catch {
        // Headers the client cannot be sent (invalid characters from an engine): cut this answer only.
        s.close(h2.NGHTTP2_INTERNAL_ERROR)
        res.destroy()
        resolve('done')
        return
      }
      // Streams (SSE/NDJSON) must reach the client at once, not when the first chunk comes.
      if (responseHeaders['content-length'] === undefined) res.flushHeaders()
      resolve('done')
    })
    s.on('data', (chunk: Buffer) => {
      meter?.observe(chunk)
      if (!res.write(chunk)) s.pause()
    })
    res.on('drain', onDrain)
    s.once('end', () => {
      ended = true
      res.end()
    })
    s.once('close', () => {
      worker.inflight--
      if (responded) meter?.finish()
      res.off('close', onClientGone)
      res.off('drain', onDrain)
      if (!responded) {
        resolve('retry')
        return
      }
      if (ended || res.destroyed || res.writableEnded) return
      // The worker went away mid-answer: end with an explicit error, never a silent success.
      const event = streamErrorEvent(contentType, 'the worker serving this request failed mid-response')
      if (event === undefined) res.destroy()
      else res.end(event)
    })
    s.end(r.body)
  })
}
