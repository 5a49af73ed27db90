import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'

/** The key a request presents: `Authorization: Bearer <key>` or `x-api-key`. */
export function presentedKey(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization
  if (auth !== undefined && auth.length > 7 && auth.slice(0, 7).toLowerCase() === 'bearer ') {
    const key = auth.slice(7).trim()
    return key.length > 0 ? key : undefined
  }
  const header = headers['x-api-key']
  const key = Array.isArray(header) ? header[0] : header
  return key !== undefined && key.length > 0 ? key : undefined
}

/** Writes a complete JSON response. */
export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

/** A request target split at the first `?`; neither part is decoded. */
export interface RequestTarget {
  readonly path: string
  readonly query: string
}

/** Splits a request target (`req.url`) into its raw path and query. Never throws. */
export function splitTarget(url: string | undefined): RequestTarget {
  const target = url ?? '/'
  const q = target.indexOf('?')
  return q < 0 ? { path: target, query: '' } : { path: target.slice(0, q), query: target.slice(q + 1) }
}

/**
 * Percent-decodes one path segment; `undefined` when it is malformed (a lone `%`, a truncated
 * or invalid UTF-8 sequence). Every decoding step on a port goes through helpers like this
 * one that turn bad input into a value the caller answers with 400, never an exception.
 */
export function decodeSegment(segment: string): string | undefined {
  if (!segment.includes('%')) return segment
  try {
    return decodeURIComponent(segment)
  } catch {
    return undefined
  }
}

/** The decoded, non-empty segments of a raw path; `undefined` when one of them is malformed. */
export function pathSegments(path: string): string[] | undefined {
  const out: string[] = []
  for (const raw of path.split('/')) {
    if (raw.length === 0) continue
    const segment = decodeSegment(raw)
    if (segment === undefined) return undefined
    out.push(segment)
  }
  return out
}

/** True when every percent-escape of a raw query string decodes (to valid UTF-8). */
export function wellFormedQuery(query: string): boolean {
  return !query.includes('%') || decodeSegment(query) !== undefined
}

/**
 * The parameters of a raw query string. `URLSearchParams` decodes leniently (a malformed escape
 * stays as it is), so this never throws; keys and values are strings.
 */
export function queryParams(query: string): URLSearchParams {
  return new URLSearchParams(query)
}

/** True when the request announces a body (which a refusal leaves unread). */
export function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined
}

/**
 * For a request refused before its body was read (401, 413, 429…): the response says
 * `connection: close`, so Node closes the connection as soon as the response is flushed
 * instead of reading the rest of the body to keep the connection alive (which let a stranger
 * upload hundreds of megabytes to a 401). A request without a body keeps its connection.
 */
export function closeAfterResponse(req: IncomingMessage, res: ServerResponse): void {
  // HTTP/2 has no connection to close per request: its stream ends with the response, and the
  // body it still sends is refused by flow control.
  if (req.httpVersionMajor !== 1 || !hasBody(req)) return
  res.shouldKeepAlive = false
  if (!res.headersSent) res.setHeader('connection', 'close')
}
