import { randomBytes } from 'node:crypto'
import type { EngineReply } from './types.js'

/** Builders for OpenAI-compatible bodies, shared by in-process engines. */

const JSON_TYPE = 'application/json'
export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
} as const

/** `data: [DONE]` terminator of OpenAI streams. */
export const SSE_DONE = Buffer.from('data: [DONE]\n\n')

/** One SSE event carrying a JSON object. */
export function sseEvent(value: unknown): Buffer {
  return Buffer.from(`data: ${JSON.stringify(value)}\n\n`)
}

/** A complete JSON reply. */
export function jsonReply(status: number, value: unknown): EngineReply {
  const body = Buffer.from(JSON.stringify(value))
  return { status, headers: { 'content-type': JSON_TYPE, 'content-length': String(body.length) }, body }
}

/** An OpenAI-shaped error reply. */
export function openaiError(status: number, message: string, code: string | null = null): EngineReply {
  return jsonReply(status, {
    error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error', param: null, code },
  })
}

/** An id in OpenAI's style (`chatcmpl-...`). */
export function completionId(prefix: 'chatcmpl' | 'cmpl'): string {
  return `${prefix}-${randomBytes(12).toString('hex')}`
}

/** Seconds since the epoch, as OpenAI's `created`. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000)
}

/** Token usage block. */
export function usage(promptTokens: number, completionTokens: number) {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  }
}

/** A `chat.completion` object. */
export function chatCompletion(init: {
  id: string
  model: string
  content: string
  finishReason: string
  promptTokens: number
  completionTokens: number
}) {
  return {
    id: init.id,
    object: 'chat.completion',
    created: nowSeconds(),
    model: init.model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: init.content },
        logprobs: null,
        finish_reason: init.finishReason,
      },
    ],
    usage: usage(init.promptTokens, init.completionTokens),
  }
}

/** A `chat.completion.chunk` object. */
export function chatChunk(init: {
  id: string
  model: string
  created: number
  delta: { role?: 'assistant'; content?: string }
  finishReason: string | null
}) {
  return {
    id: init.id,
    object: 'chat.completion.chunk',
    created: init.created,
    model: init.model,
    choices: [{ index: 0, delta: init.delta, logprobs: null, finish_reason: init.finishReason }],
  }
}

/** A `text_completion` object (streamed chunks use the same shape). */
export function textCompletion(init: {
  id: string
  model: string
  created?: number
  text: string
  finishReason: string | null
  promptTokens?: number
  completionTokens?: number
}) {
  return {
    id: init.id,
    object: 'text_completion',
    created: init.created ?? nowSeconds(),
    model: init.model,
    choices: [{ index: 0, text: init.text, logprobs: null, finish_reason: init.finishReason }],
    ...(init.promptTokens === undefined
      ? {}
      : { usage: usage(init.promptTokens, init.completionTokens ?? 0) }),
  }
}

/** The `embeddings` list object. */
export function embeddingList(model: string, vectors: readonly number[][], promptTokens: number) {
  return {
    object: 'list',
    data: vectors.map((embedding, index) => ({ object: 'embedding', index, embedding })),
    model,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  }
}

/** Text of a chat message `content` (string or array of parts). */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content
  if (Array.isArray(content)) {
    return content
      .map((part) => (typeof part === 'object' && part !== null && 'text' in part ? String(part.text) : ''))
      .join('')
  }
  return ''
}

/** Parses a JSON request body into an object, or returns an error reply. */
export function parseJsonBody(body: Buffer): Record<string, unknown> | EngineReply {
  try {
    const value = JSON.parse(body.toString('utf8')) as unknown
    if (typeof value === 'object' && value !== null && !Array.isArray(value))
      return value as Record<string, unknown>
  } catch {
    // fall through
  }
  return openaiError(400, 'request body must be a JSON object', 'invalid_json')
}

/** True when a value returned by {@link parseJsonBody} is an error reply. */
export function isReply(value: unknown): value is EngineReply {
  return (
    typeof value === 'object' && value !== null && 'status' in value && 'body' in value && 'headers' in value
  )
}
