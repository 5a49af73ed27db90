import { constants as h2, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import { LIMITS } from '../config/defaults.js'
import { isFabricError } from '../errors/index.js'
import type { Logger } from '../observability/logger.js'
import { FrameDecoder } from '../protocol/frame.js'
import {
  decodeLaneRequest,
  encodeLaneAnswer,
  encodeLaneData,
  encodeLaneFail,
  encodeLaneHead,
  LANE_DATA_BYTES,
  LANE_END_FRAME,
  LANE_PATH,
  LANE_REQUEST_OVERHEAD_BYTES,
  LaneFailure,
  LaneFrame,
} from '../protocol/lane.js'
import { BIND_PATH, DATA_TOKEN_HEADER } from '../server/dataplane/index.js'
import type { Engine, EngineApi, EngineCall, EngineReply, ReplySink } from './engines/types.js'
import { callOllamaOverOpenAI } from './translate/ollama.js'

/** What the stream handler needs from the agent. */
export interface StreamHandlerContext {
  readonly engine: Engine
  readonly logger: Logger
  /** Data token of the current control session (answers the server's bind request). */
  dataToken(): string | undefined
  readonly maxBodyBytes?: number
  /** Requests running now; the agent reports it in heartbeats. */
  inflight: number
  /** Called after the server's bind request on a new data link was answered. */
  onBind?: (() => void) | undefined
  /** Counts the lane bytes of requests and answers (heartbeat metrics); nothing counted when unset. */
  readonly traffic?: LinkTraffic | undefined
}

/**
 * Bytes the data links carried: lane frames in (requests) and out (answers), framing included,
 * HTTP/2 and TLS overhead not. The owner may reset both to 0 (a new session).
 */
export interface LinkTraffic {
  bytesIn: number
  bytesOut: number
}

/** Non-streamed answers up to this size leave the worker in one write. */
const SMALL_BODY_BYTES = 64 * 1024

/** The API family a request path belongs to: Ollama's `/api/*` or OpenAI's. */
function apiOf(path: string): EngineApi {
  return path.startsWith('/api/') ? 'ollama' : 'openai'
}

/** Sends a request to the engine in its own API, translating Ollama's API when the engine lacks it. */
export function dispatch(engine: Engine, call: EngineCall): Promise<EngineReply> {
  if (engine.apis.has(apiOf(call.path))) return engine.call(call)
  return callOllamaOverOpenAI(engine, call)
}

/**
 * Serves the streams the server opens on a data link: the bind handshake, then lanes (long-lived
 * streams that each carry one request at a time, see protocol/lane.ts). A lane reset by the
 * server (user gone, request cancelled) aborts the engine call; the answer goes back chunk by
 * chunk with backpressure.
 */
export function createStreamHandler(ctx: StreamHandlerContext) {
  const maxFrame = (ctx.maxBodyBytes ?? LIMITS.maxRequestBodyBytes) + LANE_REQUEST_OVERHEAD_BYTES
  return (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void => {
    const path = headers[h2.HTTP2_HEADER_PATH]
    stream.on('error', noop)
    if (path === LANE_PATH) {
      serveLane(stream, ctx, maxFrame)
      return
    }
    if (path === BIND_PATH) {
      const token = ctx.dataToken()
      stream.respond(
        { [h2.HTTP2_HEADER_STATUS]: token === undefined ? 503 : 200, [DATA_TOKEN_HEADER]: token ?? '' },
        { endStream: true },
      )
      ctx.onBind?.()
      return
    }
    stream.respond({ [h2.HTTP2_HEADER_STATUS]: 404 }, { endStream: true })
  }
}

/** Serves one lane: one request after the other, each answered before the next may come. */
function serveLane(stream: ServerHttp2Stream, ctx: StreamHandlerContext, maxFrame: number): void {
  stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200 })
  const decoder = new FrameDecoder(maxFrame)
  let current: LaneSink | undefined
  const broken = () => stream.close(h2.NGHTTP2_PROTOCOL_ERROR)
  const traffic = ctx.traffic
  stream.on('data', (chunk: Buffer) => {
    if (traffic !== undefined) traffic.bytesIn += chunk.length
    let frames: ReturnType<FrameDecoder['push']>
    try {
      frames = decoder.push(chunk)
    } catch {
      broken()
      return
    }
    for (const frame of frames) {
      // One request at a time: a second one before the answer ended breaks the lane's rules.
      const request =
        frame.type === LaneFrame.REQUEST && (current === undefined || current.finished)
          ? decodeLaneRequest(frame.payload)
          : undefined
      if (request === undefined) {
        broken()
        return
      }
      current = new LaneSink(stream, ctx)
      try {
        serve(ctx, request.method, request.path, request.body, current)
      } catch (err) {
        // An engine that throws instead of rejecting fails this request only: an exception
        // escaping this 'data' listener would take the whole worker process down.
        current.fail(err instanceof Error ? err : new Error(String(err)))
      }
    }
  })
  stream.on('drain', () => current?.drained())
  stream.once('close', () => current?.abort())
}

/** Hands one request to the engine, translating Ollama's API when the engine lacks it. */
function serve(ctx: StreamHandlerContext, method: string, path: string, body: Buffer, sink: LaneSink): void {
  const { engine } = ctx
  if (engine.relay !== undefined && engine.apis.has(apiOf(path))) {
    engine.relay({ method, path, body }, sink)
    return
  }
  const controller = new AbortController()
  sink.onAbort(() => controller.abort())
  dispatch(engine, { method, path, body, signal: controller.signal }).then(
    (reply) =>
      sendReply(reply, sink).catch((err: unknown) =>
        sink.fail(err instanceof Error ? err : new Error(String(err))),
      ),
    (err: unknown) => {
      ctx.logger.warn({ err: isFabricError(err) ? err.message : String(err), path }, 'engine call failed')
      sink.fail(err instanceof Error ? err : new Error(String(err)))
    },
  )
}

function noop(): void {}

/**
 * A {@link ReplySink} for one request on a lane: the answer goes back as HEAD, DATA and END
 * frames. Counts the request in flight until the answer ends or the lane closes; holds small
 * complete answers so headers and body go out in one write.
 */
class LaneSink implements ReplySink {
  readonly #stream: ServerHttp2Stream
  readonly #ctx: StreamHandlerContext
  #held: { status: number; headers: Record<string, string>; chunks: Uint8Array[]; size: number } | undefined
  #responded = false
  #finished = false
  #onAbort: (() => void)[] = []
  #onDrain: (() => void)[] = []

  constructor(stream: ServerHttp2Stream, ctx: StreamHandlerContext) {
    this.#stream = stream
    this.#ctx = ctx
    ctx.inflight++
  }

  /** True once the answer ended, failed or was abandoned: the lane may take the next request. */
  get finished(): boolean {
    return this.#finished
  }

  respond(status: number, headers: Record<string, string>): void {
    if (this.#finished || this.#responded) return
    this.#responded = true
    const length = Number(headers['content-length'] ?? Number.NaN)
    // A small complete answer goes out as one write: cheaper, and a worker dying mid-answer
    // cannot leave the user with headers but no body.
    if (length <= SMALL_BODY_BYTES) this.#held = { status, headers, chunks: [], size: 0 }
    else this.#send(encodeLaneHead(status, headers))
  }

  write(chunk: Uint8Array): boolean {
    if (this.#finished) return true
    const held = this.#held
    if (held !== undefined) {
      held.chunks.push(chunk)
      held.size += chunk.length
      return true
    }
    let ok = true
    for (let at = 0; at < chunk.length; at += LANE_DATA_BYTES) {
      ok = this.#send(encodeLaneData(chunk.subarray(at, at + LANE_DATA_BYTES)))
    }
    return ok
  }

  end(): void {
    if (this.#finished) return
    this.#finish()
    const held = this.#held
    if (held === undefined) {
      this.#send(LANE_END_FRAME)
      return
    }
    this.#held = undefined
    this.#send(encodeLaneAnswer(held.status, held.headers, held.chunks, held.size))
  }

  onDrain(fn: () => void): void {
    this.#onDrain.push(fn)
  }

  /** The lane can take more: wakes whoever waits to write. */
  drained(): void {
    const waiting = this.#onDrain
    this.#onDrain = []
    for (const fn of waiting) fn()
  }

  fail(err: Error): void {
    if (this.#finished) return
    // Nothing sent yet: the server may retry on another worker.
    const started = this.#responded && this.#held === undefined
    this.#finish()
    this.#ctx.logger.debug({ err: err.message }, 'answer failed')
    this.#send(encodeLaneFail(started ? LaneFailure.BROKEN : LaneFailure.REFUSED, err.message))
  }

  onAbort(fn: () => void): void {
    this.#onAbort.push(fn)
  }

  /** The lane closed before the answer ended: stop the engine. */
  abort(): void {
    if (this.#finished) return
    this.#finish()
    this.drained()
    for (const fn of this.#onAbort) fn()
  }

  #send(frame: Buffer): boolean {
    if (this.#stream.destroyed) return true
    const traffic = this.#ctx.traffic
    if (traffic !== undefined) traffic.bytesOut += frame.length
    return this.#stream.write(frame)
  }

  #finish(): void {
    this.#finished = true
    this.#ctx.inflight--
  }
}

/** Writes an engine's reply into a sink, honouring backpressure. */
async function sendReply(reply: EngineReply, sink: ReplySink): Promise<void> {
  sink.respond(reply.status, reply.headers)
  if (reply.body instanceof Uint8Array) {
    sink.write(reply.body)
    sink.end()
    return
  }
  const iterator = reply.body[Symbol.asyncIterator]()
  let aborted = false
  sink.onAbort(() => {
    aborted = true
    iterator.return?.()?.catch(() => undefined)
  })
  try {
    for (;;) {
      const next = await iterator.next()
      if (next.done || aborted) break
      if (!sink.write(next.value)) {
        // An abort wakes drain waiters too (LaneSink.abort), then `aborted` ends the loop.
        await new Promise<void>((resolve) => sink.onDrain(resolve))
      }
    }
    if (!aborted) sink.end()
  } catch (err) {
    sink.fail(err instanceof Error ? err : new Error(String(err)))
  }
}
