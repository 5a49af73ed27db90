import type { ServerResponse } from 'node:http'
import { type ErrorCode, ErrorCodes } from '../../errors/index.js'
import { RESPONSE_ERROR, type StampedResponse } from '../../observability/metrics.js'

/** The API family a route belongs to: decides the shape of error bodies. */
export type ApiFamily = 'openai' | 'ollama'

const STATUS: Partial<Record<ErrorCode, number>> = {
  [ErrorCodes.UNAUTHORIZED]: 401,
  [ErrorCodes.BAD_REQUEST]: 400,
  [ErrorCodes.MODEL_REQUIRED]: 400,
  [ErrorCodes.MODEL_NOT_FOUND]: 404,
  [ErrorCodes.NOT_FOUND]: 404,
  [ErrorCodes.METHOD_NOT_ALLOWED]: 405,
  [ErrorCodes.BODY_TOO_LARGE]: 413,
  [ErrorCodes.NO_WORKER]: 503,
  [ErrorCodes.WORKER_FAILED]: 502,
  [ErrorCodes.ENGINE_UNAVAILABLE]: 502,
  [ErrorCodes.TIMEOUT_FIRST_BYTE]: 504,
  [ErrorCodes.SHUTTING_DOWN]: 503,
  [ErrorCodes.STORE_UNAVAILABLE]: 503,
  [ErrorCodes.CACHE_UNAVAILABLE]: 503,
  [ErrorCodes.RATE_LIMITED]: 429,
  [ErrorCodes.AUTH_THROTTLED]: 429,
  [ErrorCodes.FORBIDDEN]: 403,
  [ErrorCodes.KEY_EXPIRED]: 401,
  [ErrorCodes.INTERNAL]: 500,
}

/** OpenAI's `type` field for each status class. */
function openaiType(status: number): string {
  if (status === 401) return 'authentication_error'
  if (status === 403) return 'permission_error'
  if (status === 429) return 'rate_limit_error'
  if (status === 404) return 'invalid_request_error'
  if (status < 500) return 'invalid_request_error'
  return 'server_error'
}

/** OpenAI's `code` field, where OpenAI has a conventional one; our stable code otherwise. */
function openaiCode(code: ErrorCode): string {
  switch (code) {
    case ErrorCodes.UNAUTHORIZED:
      return 'invalid_api_key'
    case ErrorCodes.MODEL_NOT_FOUND:
      return 'model_not_found'
    case ErrorCodes.RATE_LIMITED:
    case ErrorCodes.AUTH_THROTTLED:
      return 'rate_limit_exceeded'
    default:
      return code
  }
}

/** HTTP status for a fabric error code. */
export function statusOf(code: ErrorCode): number {
  return STATUS[code] ?? 500
}

/** Error body: OpenAI's `{error:{message,type,param,code}}`, or Ollama's `{error: "..."}` on `/api/*`. */
export function errorBody(api: ApiFamily, code: ErrorCode, message: string): string {
  if (api === 'ollama') return JSON.stringify({ error: message, code })
  return JSON.stringify({
    error: { message, type: openaiType(statusOf(code)), param: null, code: openaiCode(code) },
  })
}

/** Writes a complete error response (when headers have not been sent yet). */
export function sendError(
  res: ServerResponse,
  api: ApiFamily,
  code: ErrorCode,
  message: string,
  extraHeaders?: Record<string, string>,
): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  ;(res as StampedResponse)[RESPONSE_ERROR] = code
  const body = errorBody(api, code, message)
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...extraHeaders,
  }
  if (code === ErrorCodes.UNAUTHORIZED || code === ErrorCodes.KEY_EXPIRED)
    headers['www-authenticate'] = 'Bearer'
  res.writeHead(statusOf(code), headers)
  res.end(body)
}

/**
 * The explicit error a streaming response ends with when its worker fails mid-stream:
 * an SSE `data:` event for OpenAI streams, an NDJSON line for Ollama streams. Never a silent 200.
 */
export function streamErrorEvent(contentType: string, message: string): string | undefined {
  if (contentType.startsWith('text/event-stream')) {
    return `data: ${JSON.stringify({ error: { message, type: 'server_error', param: null, code: ErrorCodes.WORKER_FAILED } })}\n\n`
  }
  if (contentType.startsWith('application/x-ndjson')) {
    return `${JSON.stringify({ error: message, code: ErrorCodes.WORKER_FAILED, done: true })}\n`
  }
  return undefined
}
