import { type Dispatcher, Pool } from 'undici'
import { ErrorCodes, FabricError } from '../../errors/index.js'
import type { Engine, EngineApi, EngineCall, EngineReply, EngineType } from './types.js'

/** Options of an engine reached over HTTP on this machine. */
export interface HttpEngineOptions {
  readonly type: 'ollama' | 'vllm' | 'openai'
  /** e.g. `http://127.0.0.1:11434` */
  readonly baseUrl: string
  /** Bearer key the engine itself wants (vLLM `--api-key`, LM Studio), never the fabric's keys. */
  readonly apiKey?: string | undefined
  /** Keep-alive connections to the engine. */
  readonly connections?: number
}

/** Response headers worth passing on from an engine. */
const PASSED_HEADERS = ['content-type', 'content-length', 'cache-control'] as const

/**
 * An engine with an HTTP API: Ollama (native `/api/*` and OpenAI `/v1/*`) or any
 * OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, SGLang). Requests in the
 * engine's own API are passed through byte for byte over pooled keep-alive connections.
 */
export function createHttpEngine(options: HttpEngineOptions): Engine {
  const pool = new Pool(options.baseUrl, {
    connections: options.connections ?? 256,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    // Engines can think for minutes before the first token (model loading); the fabric's own timeouts rule.
    headersTimeout: 0,
    bodyTimeout: 0,
  })
  const apis: ReadonlySet<EngineApi> = new Set(options.type === 'ollama' ? ['openai', 'ollama'] : ['openai'])
  const authHeaders: Record<string, string> =
    options.apiKey === undefined ? {} : { authorization: `Bearer ${options.apiKey}` }

  async function getJson(path: string, signal?: AbortSignal): Promise<unknown> {
    const res = await pool.request({ method: 'GET', path, headers: authHeaders, signal: signal ?? null })
    if (res.statusCode !== 200) {
      await res.body.dump()
      throw new FabricError(ErrorCodes.ENGINE_ERROR, `engine answered ${res.statusCode} to GET ${path}`)
    }
    return res.body.json()
  }

  return {
    type: options.type as EngineType,
    apis,
    async listModels(signal?: AbortSignal): Promise<string[]> {
      try {
        if (options.type === 'ollama') {
          const tags = (await getJson('/api/tags', signal)) as { models?: { name?: string }[] }
          return (tags.models ?? []).map((m) => m.name).filter((n): n is string => typeof n === 'string')
        }
        const list = (await getJson('/v1/models', signal)) as { data?: { id?: string }[] }
        return (list.data ?? []).map((m) => m.id).filter((n): n is string => typeof n === 'string')
      } catch (cause) {
        if (cause instanceof FabricError) throw cause
        throw new FabricError(
          ErrorCodes.ENGINE_UNAVAILABLE,
          `engine at ${options.baseUrl} cannot be reached`,
          {
            cause,
            retryable: true,
          },
        )
      }
    },
    async call(call: EngineCall): Promise<EngineReply> {
      let res: Awaited<ReturnType<typeof pool.request>>
      try {
        res = await pool.request({
          method: call.method as 'POST',
          path: call.path,
          headers:
            call.body.length > 0 ? { ...authHeaders, 'content-type': 'application/json' } : authHeaders,
          body: call.body.length > 0 ? call.body : null,
          signal: call.signal,
        })
      } catch (cause) {
        throw new FabricError(
          ErrorCodes.ENGINE_UNAVAILABLE,
          `engine at ${options.baseUrl} cannot be reached`,
          {
            cause,
            retryable: true,
          },
        )
      }
      const headers: Record<string, string> = {}
      for (const name of PASSED_HEADERS) {
        const value = res.headers[name]
        if (typeof value === 'string') headers[name] = value
      }
      return { status: res.statusCode, headers, body: res.body }
    },
    relay(call, sink) {
      let controller: Dispatcher.DispatchController | undefined
      sink.onAbort(() => controller?.abort(new FabricError(ErrorCodes.ABORTED, 'requester went away')))
      pool.dispatch(
        {
          method: call.method as 'POST',
          path: call.path,
          headers:
            call.body.length > 0 ? { ...authHeaders, 'content-type': 'application/json' } : authHeaders,
          body: call.body.length > 0 ? call.body : null,
        },
        {
          onRequestStart(c) {
            controller = c
          },
          onResponseStart(c, statusCode, responseHeaders) {
            const headers: Record<string, string> = {}
            for (const name of PASSED_HEADERS) {
              const value = responseHeaders[name]
              if (typeof value === 'string') headers[name] = value
            }
            sink.respond(statusCode, headers)
            controller = c
          },
          onResponseData(c, chunk) {
            if (!sink.write(chunk)) {
              c.pause()
              sink.onDrain(() => c.resume())
            }
          },
          onResponseEnd() {
            sink.end()
          },
          onResponseError(_c, err) {
            sink.fail(
              new FabricError(ErrorCodes.ENGINE_UNAVAILABLE, `engine at ${options.baseUrl}: ${err.message}`, {
                cause: err,
                retryable: true,
              }),
            )
          },
        },
      )
    },
    async close() {
      await pool.close()
    },
  }
}
