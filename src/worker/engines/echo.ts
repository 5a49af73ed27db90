import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  chatChunk,
  chatCompletion,
  completionId,
  contentText,
  embeddingList,
  isReply,
  jsonReply,
  nowSeconds,
  openaiError,
  parseJsonBody,
  SSE_DONE,
  SSE_HEADERS,
  sseEvent,
  textCompletion,
  usage,
} from './openai-format.js'
import type { Engine, EngineCall, EngineReply } from './types.js'

/** Options of the echo engine. */
export interface EchoEngineOptions {
  /** Models it claims to serve. Default `['echo']`. */
  readonly models?: readonly string[]
  /** Pause between streamed words, to imitate generation. Default 0. */
  readonly chunkDelayMs?: number
}

/**
 * A TEST engine that needs no model: it answers OpenAI requests by echoing the prompt back
 * (`echo: <last user message>`), streaming word by word, and returns deterministic hash
 * embeddings. For trying the fabric out and for tests; it does no inference.
 */
export function createEchoEngine(options: EchoEngineOptions = {}): Engine {
  const models = [...(options.models ?? ['echo'])]
  const delay = options.chunkDelayMs ?? 0
  return {
    type: 'echo',
    apis: new Set(['openai']),
    async listModels() {
      return models
    },
    async call(call: EngineCall): Promise<EngineReply> {
      const path = call.path.split('?')[0]
      if (call.method === 'GET' && path === '/v1/models') {
        return jsonReply(200, {
          object: 'list',
          data: models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'gpufabric-echo' })),
        })
      }
      if (call.method !== 'POST') return openaiError(404, `no route for ${call.method} ${path}`)
      const req = parseJsonBody(call.body)
      if (isReply(req)) return req
      const model = typeof req['model'] === 'string' ? req['model'] : models[0]!
      switch (path) {
        case '/v1/chat/completions': {
          const messages = Array.isArray(req['messages'])
            ? (req['messages'] as { role?: unknown; content?: unknown }[])
            : []
          const lastUser = [...messages].reverse().find((m) => m.role === 'user')
          return answer(`echo: ${contentText(lastUser?.content)}`, model, req, 'chat', call.signal, delay)
        }
        case '/v1/completions':
          return answer(`echo: ${String(req['prompt'] ?? '')}`, model, req, 'text', call.signal, delay)
        case '/v1/embeddings': {
          const input = req['input']
          const inputs = Array.isArray(input) ? input.map(String) : [String(input ?? '')]
          return jsonReply(200, embeddingList(model, inputs.map(hashVector), inputs.join(' ').length))
        }
        default:
          return openaiError(404, `no route for POST ${path}`)
      }
    },
    async close() {},
  }
}

function answer(
  text: string,
  model: string,
  req: Record<string, unknown>,
  kind: 'chat' | 'text',
  signal: AbortSignal,
  delay: number,
): EngineReply {
  const words = text.split(/(?<= )/)
  const promptTokens = text.length
  if (req['stream'] !== true) {
    const id = completionId(kind === 'chat' ? 'chatcmpl' : 'cmpl')
    return jsonReply(
      200,
      kind === 'chat'
        ? chatCompletion({
            id,
            model,
            content: text,
            finishReason: 'stop',
            promptTokens,
            completionTokens: words.length,
          })
        : textCompletion({
            id,
            model,
            text,
            finishReason: 'stop',
            promptTokens,
            completionTokens: words.length,
          }),
    )
  }
  const options = req['stream_options'] as { include_usage?: unknown } | null | undefined
  const usageOf =
    options?.include_usage === true ? { prompt: promptTokens, completion: words.length } : undefined
  return {
    status: 200,
    headers: { ...SSE_HEADERS },
    body: stream(words, model, kind, signal, delay, usageOf),
  }
}

async function* stream(
  words: string[],
  model: string,
  kind: 'chat' | 'text',
  signal: AbortSignal,
  delay: number,
  usageOf: { prompt: number; completion: number } | undefined,
): AsyncGenerator<Uint8Array> {
  const id = completionId(kind === 'chat' ? 'chatcmpl' : 'cmpl')
  const created = nowSeconds()
  // As OpenAI does with `stream_options.include_usage`: `usage: null` on every chunk, then a
  // last chunk with no choices and the usage.
  const event = (chunk: object) => sseEvent(usageOf === undefined ? chunk : { ...chunk, usage: null })
  if (kind === 'chat')
    yield event(
      chatChunk({ id, model, created, delta: { role: 'assistant', content: '' }, finishReason: null }),
    )
  for (const word of words) {
    if (signal.aborted) return
    if (delay > 0) await sleep(delay, undefined, { signal }).catch(() => undefined)
    if (signal.aborted) return
    yield event(
      kind === 'chat'
        ? chatChunk({ id, model, created, delta: { content: word }, finishReason: null })
        : textCompletion({ id, model, created, text: word, finishReason: null }),
    )
  }
  yield event(
    kind === 'chat'
      ? chatChunk({ id, model, created, delta: {}, finishReason: 'stop' })
      : textCompletion({ id, model, created, text: '', finishReason: 'stop' }),
  )
  if (usageOf !== undefined) {
    yield sseEvent({
      id,
      object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
      created,
      model,
      choices: [],
      usage: usage(usageOf.prompt, usageOf.completion),
    })
  }
  yield SSE_DONE
}

/** A deterministic 16-dimension unit vector from the text's hash. */
function hashVector(text: string): number[] {
  const digest = createHash('sha256').update(text).digest()
  const v = Array.from({ length: 16 }, (_, i) => digest.readInt16BE(i * 2) / 32768)
  const norm = Math.hypot(...v) || 1
  return v.map((x) => x / norm)
}
