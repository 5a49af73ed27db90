import type { IncomingHttpHeaders, ServerResponse } from 'node:http'

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
