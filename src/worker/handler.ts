import { constants as h2, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import { LIMITS } from '../config/defaults.js'
import { isFabricError } from '../errors/index.js'
import type { Logger } from '../observability/logger.js'
import { BIND_PATH, DATA_TOKEN_HEADER } from '../server/dataplane/index.js'
import type { Engine, EngineCall, EngineReply, ReplySink } from './engines/types.js'
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
}

/** Non-streamed answers up to this size leave the worker in one write. */
const SMALL_BODY_BYTES = 64 * 1024

/** Sends a request to the engine in its own API, translating Ollama's API when the engine lacks it. */
export function dispatch(engine: Engine, call: EngineCall): Promise<EngineReply> {
  const api = call.path.startsWith('/api/') ? 'ollama' : 'openai'
  if (engine.apis.has(api)) return engine.call(call)
  return callOllamaOverOpenAI(engine, call)
}

/**
 * Serves the streams the server opens on a data link: the bind handshake, then one
 * request per stream. The stream closing early (user gone, server cancelled) aborts the
 * engine call; the answer goes back chunk by chunk with backpressure.
 */
export function createStreamHandler(ctx: StreamHandlerContext) {
  const maxBody = ctx.maxBodyBytes ?? LIMITS.maxRequestBodyBytes
  return (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void => {
    const path = (headers[h2.HTTP2_HEADER_PATH] as string | undefined) ?? '/'
    const method = (headers[h2.HTTP2_HEADER_METHOD] as string | undefined) ?? 'GET'
    stream.on('error', noop)
    if (path === BIND_PATH) {
      const token = ctx.dataToken()
      stream.respond(
        { [h2.HTTP2_HEADER_STATUS]: token === undefined ? 503 : 200, [DATA_TOKEN_HEADER]: token ?? '' },
        { endStream: true },
      )
      ctx.onBind?.()
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBody) {
        stream.close(h2.NGHTTP2_REFUSED_STREAM)
        return
      }
      chunks.push(chunk)
    })
    stream.once('end', () => {
      if (stream.destroyed) return
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
      const sink = new StreamSink(stream, ctx)
      const { engine } = ctx
      if (engine.relay !== undefined && engine.apis.has(path.startsWith('/api/') ? 'ollama' : 'openai')) {
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
    })
  }
}

function noop(): void {}

/**
 * A {@link ReplySink} over one HTTP/2 stream. Counts the request in flight until the answer
 * ends or the stream closes; holds small complete answers so headers and body go out together.
 */
class StreamSink implements ReplySink {
  readonly #stream: ServerHttp2Stream
  readonly #ctx: StreamHandlerContext
  #held: { headers: Record<string, string | number>; chunks: Uint8Array[]; size: number } | undefined
  #responded = false
  #finished = false
  #onAbort: (() => void)[] = []

  constructor(stream: ServerHttp2Stream, ctx: StreamHandlerContext) {
    this.#stream = stream
    this.#ctx = ctx
    ctx.inflight++
    stream.once('close', () => {
      if (this.#finished) return
      this.#finish()
      for (const fn of this.#onAbort) fn()
    })
  }

  respond(status: number, headers: Record<string, string>): void {
    if (this.#finished) return
    this.#responded = true
    const out = { [h2.HTTP2_HEADER_STATUS]: status, ...headers }
    const length = Number(headers['content-length'] ?? Number.NaN)
    // A small complete answer goes out as one write: cheaper, and a worker dying mid-answer
    // cannot leave the user with headers but no body.
    if (length <= SMALL_BODY_BYTES) this.#held = { headers: out, chunks: [], size: 0 }
    else this.#sendHeaders(out)
  }

  /** Sends headers; headers HTTP/2 refuses (invalid characters from an engine) fail this answer only. */
  #sendHeaders(headers: Record<string, string | number>, endStream = false): boolean {
    try {
      this.#stream.respond(headers, { endStream })
      return true
    } catch (err) {
      this.#ctx.logger.warn({ err: String(err) }, 'engine answer headers refused')
      if (!this.#finished) this.#finish()
      // Nobody will read the rest: stop the engine as if the requester had gone.
      for (const fn of this.#onAbort) fn()
      this.#stream.close(h2.NGHTTP2_INTERNAL_ERROR)
      return false
    }
  }

  write(chunk: Uint8Array): boolean {
    if (this.#finished) return true
    const held = this.#held
    if (held !== undefined) {
      held.chunks.push(chunk)
      held.size += chunk.length
      return true
    }
    return this.#stream.write(chunk)
  }

  end(): void {
    if (this.#finished) return
    this.#finish()
    const held = this.#held
    if (held === undefined) {
      this.#stream.end()
      return
    }
    this.#held = undefined
    if (held.size === 0) {
      this.#sendHeaders(held.headers, true)
      return
    }
    if (!this.#sendHeaders(held.headers)) return
    this.#stream.end(held.chunks.length === 1 ? held.chunks[0] : Buffer.concat(held.chunks, held.size))
  }

  onDrain(fn: () => void): void {
    this.#stream.once('drain', fn)
  }

  fail(err: Error): void {
    if (this.#finished) return
    this.#finish()
    this.#ctx.logger.debug({ err: err.message }, 'answer failed')
    // Nothing sent yet: REFUSED_STREAM tells the server it may retry on another worker.
    this.#stream.close(
      this.#responded && this.#held === undefined ? h2.NGHTTP2_INTERNAL_ERROR : h2.NGHTTP2_REFUSED_STREAM,
    )
  }

  onAbort(fn: () => void): void {
    this.#onAbort.push(fn)
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
        await new Promise<void>((resolve) => {
          sink.onDrain(resolve)
          sink.onAbort(resolve)
        })
      }
    }
    if (!aborted) sink.end()
  } catch (err) {
    sink.fail(err instanceof Error ? err : new Error(String(err)))
  }
}
