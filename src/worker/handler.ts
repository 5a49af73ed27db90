import { constants as h2, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import { pipeline } from 'node:stream'
import { LIMITS } from '../config/defaults.js'
import { isFabricError } from '../errors/index.js'
import type { Logger } from '../observability/logger.js'
import { BIND_PATH, DATA_TOKEN_HEADER } from '../server/dataplane/index.js'
import type { Engine, EngineCall, EngineReply } from './engines/types.js'
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

/** Sends a request to the engine in its own API, translating Ollama's API when the engine lacks it. */
export function dispatch(engine: Engine, call: EngineCall): Promise<EngineReply> {
  const api = call.path.startsWith('/api/') ? 'ollama' : 'openai'
  if (engine.apis.has(api)) return engine.call(call)
  return callOllamaOverOpenAI(engine, call)
}

/**
 * Serves the streams the server opens on a data link: the bind handshake, then one
 * request per stream. The stream closing early (user gone, server cancelled) aborts the
 * engine call; the response is piped back chunk by chunk with backpressure.
 */
export function createStreamHandler(ctx: StreamHandlerContext) {
  const maxBody = ctx.maxBodyBytes ?? LIMITS.maxRequestBodyBytes
  return (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void => {
    const path = (headers[h2.HTTP2_HEADER_PATH] as string | undefined) ?? '/'
    const method = (headers[h2.HTTP2_HEADER_METHOD] as string | undefined) ?? 'GET'
    stream.on('error', () => {})
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
      const controller = new AbortController()
      let finished = false
      stream.once('close', () => {
        if (!finished) controller.abort()
      })
      ctx.inflight++
      const done = () => {
        if (finished) return
        finished = true
        ctx.inflight--
      }
      stream.once('close', done)
      const call: EngineCall = {
        method,
        path,
        body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size),
        signal: controller.signal,
      }
      dispatch(ctx.engine, call).then(
        (reply) => respond(stream, reply, done, ctx.logger),
        (err: unknown) => {
          done()
          if (stream.destroyed) return
          ctx.logger.warn({ err: isFabricError(err) ? err.message : String(err), path }, 'engine call failed')
          // Nothing was sent: refusing the stream tells the server it may retry on another worker.
          stream.close(h2.NGHTTP2_REFUSED_STREAM)
        },
      )
    })
  }
}

function respond(stream: ServerHttp2Stream, reply: EngineReply, done: () => void, logger: Logger): void {
  if (stream.destroyed || stream.closed) {
    done()
    if (!(reply.body instanceof Uint8Array)) void drainAway(reply.body)
    return
  }
  const headers = { [h2.HTTP2_HEADER_STATUS]: reply.status, ...reply.headers }
  if (reply.body instanceof Uint8Array) {
    stream.respond(headers)
    stream.end(reply.body)
    done()
    return
  }
  const length = Number(reply.headers['content-length'] ?? Number.NaN)
  if (length <= SMALL_BODY_BYTES) {
    // A small complete answer goes out as one write (headers and data together): cheaper,
    // and a worker dying mid-answer cannot leave the user with headers but no body.
    collect(reply.body, length).then(
      (body) => {
        done()
        if (stream.destroyed) return
        stream.respond(headers)
        stream.end(body)
      },
      () => {
        done()
        if (!stream.destroyed) stream.close(h2.NGHTTP2_REFUSED_STREAM)
      },
    )
    return
  }
  stream.respond(headers)
  pipeline(reply.body, stream, (err) => {
    done()
    if (err && !stream.destroyed) {
      logger.debug({ err: err.message }, 'response stream failed')
      stream.close(h2.NGHTTP2_INTERNAL_ERROR)
    }
  })
}

/** Non-streaming answers up to this size are sent in one piece. */
const SMALL_BODY_BYTES = 64 * 1024

async function collect(body: AsyncIterable<Uint8Array>, length: number): Promise<Buffer> {
  const chunks: Uint8Array[] = []
  for await (const chunk of body) chunks.push(chunk)
  return chunks.length === 1
    ? Buffer.from(chunks[0]!.buffer, chunks[0]!.byteOffset, chunks[0]!.byteLength)
    : Buffer.concat(chunks, length)
}

/** Stops a body nobody will read (closes the engine's side). */
async function drainAway(body: AsyncIterable<Uint8Array>): Promise<void> {
  const it = body[Symbol.asyncIterator]()
  await it.return?.()
}
