import { encodeFrame, FRAME_HEADER_BYTES, writeFrameHeader } from './frame.js'

/**
 * Lanes: long-lived HTTP/2 streams on a data link that carry one request at a time.
 *
 * Opening an HTTP/2 stream costs Node far more than sending data on one that is open
 * (stream objects on both sides, header compression and mapping, session bookkeeping):
 * about 40 µs per request on each side here, more than a whole HTTP/1.1 hop. So the server
 * opens a stream once and reuses it, as an HTTP/1.1 client reuses a kept-alive connection;
 * HTTP/2 still multiplexes the lanes over the worker's one TLS connection, with its flow
 * control and backpressure per lane. Requests in flight at once each have their own lane.
 *
 * On a lane, both directions carry the control plane's frames (see frame.ts):
 *
 *   server → worker   REQUEST  u8 method length | method | u16 path length | path | body
 *   worker → server   HEAD     u16 status | per header: u8 name length | name | u16 value length | value
 *                     DATA     a piece of the answer body
 *                     END      the answer is complete; the lane is free again
 *                     FAIL     u8 reason | message: the answer failed (see {@link LaneFailure})
 *
 * A lane whose peer breaks these rules, or whose request is cancelled, is reset
 * (RST_STREAM) and never reused; the worker sees the reset and aborts its engine call.
 */
export const LANE_PATH = '/.gpuf/lane'

export const LaneFrame = {
  REQUEST: 1,
  HEAD: 2,
  DATA: 3,
  END: 4,
  FAIL: 5,
} as const

/** Why a worker failed an answer. */
export const LaneFailure = {
  /** Nothing of the answer was sent: the server may send the request to another worker. */
  REFUSED: 1,
  /** The answer broke off after it started. */
  BROKEN: 2,
} as const
export type LaneFailure = (typeof LaneFailure)[keyof typeof LaneFailure]

/** Largest DATA payload a worker puts in one frame; bigger chunks are split. */
export const LANE_DATA_BYTES = 256 * 1024
/** Largest frame the server accepts from a worker (HEAD with its headers, DATA, FAIL). */
export const LANE_ANSWER_FRAME_BYTES = 1024 * 1024
/** Room for a REQUEST frame's header, method and path on top of the body limit. */
export const LANE_REQUEST_OVERHEAD_BYTES = 64 * 1024

/** One request as it travels on a lane. */
export interface LaneRequest {
  readonly method: string
  readonly path: string
  readonly body: Buffer
}

export function encodeLaneRequest(method: string, path: string, body: Uint8Array): Buffer {
  const methodBytes = Buffer.byteLength(method, 'latin1')
  const pathBytes = Buffer.byteLength(path)
  if (methodBytes > 255 || pathBytes > 65_535) throw new RangeError('method or path too long for a lane')
  const payloadBytes = 3 + methodBytes + pathBytes + body.length
  // Header and payload built in one buffer: the body (up to the body limit) is copied once.
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payloadBytes)
  let at = writeFrameHeader(out, 0, LaneFrame.REQUEST, payloadBytes)
  out[at] = methodBytes
  out.write(method, at + 1, 'latin1')
  at += 1 + methodBytes
  out.writeUInt16BE(pathBytes, at)
  out.write(path, at + 2)
  out.set(body, at + 2 + pathBytes)
  return out
}

/** Decodes a REQUEST payload; `undefined` when it is malformed. */
export function decodeLaneRequest(payload: Buffer): LaneRequest | undefined {
  if (payload.length < 3) return undefined
  const methodBytes = payload[0]!
  if (payload.length < 3 + methodBytes) return undefined
  const pathBytes = payload.readUInt16BE(1 + methodBytes)
  const bodyAt = 3 + methodBytes + pathBytes
  if (methodBytes === 0 || payload.length < bodyAt) return undefined
  return {
    method: payload.toString('latin1', 1, 1 + methodBytes),
    path: payload.toString('utf8', 3 + methodBytes, bodyAt),
    body: payload.subarray(bodyAt),
  }
}

/** Bytes of a HEAD payload; headers too long for it (name > 255, value > 65,535) are left out. */
function headBytes(headers: Record<string, string>): number {
  let n = 2
  for (const name in headers) {
    const value = headers[name]!
    if (name.length <= 255 && value.length <= 65_535) n += 3 + name.length + value.length
  }
  return n
}

/** Writes a HEAD payload at `at`; returns where it ends. */
function writeHead(out: Buffer, at: number, status: number, headers: Record<string, string>): number {
  out.writeUInt16BE(status, at)
  at += 2
  for (const name in headers) {
    const value = headers[name]!
    if (name.length > 255 || value.length > 65_535) continue
    out[at] = name.length
    at += 1 + out.write(name, at + 1, 'latin1')
    out.writeUInt16BE(value.length, at)
    at += 2 + out.write(value, at + 2, 'latin1')
  }
  return at
}

export function encodeLaneHead(status: number, headers: Record<string, string>): Buffer {
  const payloadBytes = headBytes(headers)
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payloadBytes)
  writeHead(out, writeFrameHeader(out, 0, LaneFrame.HEAD, payloadBytes), status, headers)
  return out
}

/** A decoded HEAD: the status and the headers as a flat `[name, value, ...]` list. */
export interface LaneHead {
  readonly status: number
  readonly headers: string[]
}

/** Decodes a HEAD payload; `undefined` when it is malformed. */
export function decodeLaneHead(payload: Buffer): LaneHead | undefined {
  if (payload.length < 2) return undefined
  const status = payload.readUInt16BE(0)
  if (status < 100 || status > 599) return undefined
  const headers: string[] = []
  let at = 2
  while (at < payload.length) {
    const nameEnd = at + 1 + payload[at]!
    if (nameEnd + 2 > payload.length) return undefined
    const valueEnd = nameEnd + 2 + payload.readUInt16BE(nameEnd)
    if (valueEnd > payload.length) return undefined
    headers.push(
      payload.toString('latin1', at + 1, nameEnd),
      payload.toString('latin1', nameEnd + 2, valueEnd),
    )
    at = valueEnd
  }
  return { status, headers }
}

/**
 * A whole small answer as HEAD, DATA (when there is a body) and END frames in one buffer, so
 * it leaves the worker in one write.
 */
export function encodeLaneAnswer(
  status: number,
  headers: Record<string, string>,
  chunks: readonly Uint8Array[],
  size: number,
): Buffer {
  const head = headBytes(headers)
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES * (size > 0 ? 3 : 2) + head + size)
  let at = writeHead(out, writeFrameHeader(out, 0, LaneFrame.HEAD, head), status, headers)
  if (size > 0) {
    at = writeFrameHeader(out, at, LaneFrame.DATA, size)
    for (const chunk of chunks) {
      out.set(chunk, at)
      at += chunk.length
    }
  }
  writeFrameHeader(out, at, LaneFrame.END, 0)
  return out
}

export function encodeLaneData(chunk: Uint8Array): Buffer {
  return encodeFrame(LaneFrame.DATA, chunk)
}

export const LANE_END_FRAME: Buffer = encodeFrame(LaneFrame.END, new Uint8Array(0))

export function encodeLaneFail(reason: LaneFailure, message: string): Buffer {
  const text = message.slice(0, 1024)
  const payloadBytes = 1 + Buffer.byteLength(text)
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payloadBytes)
  const at = writeFrameHeader(out, 0, LaneFrame.FAIL, payloadBytes)
  out[at] = reason
  out.write(text, at + 1)
  return out
}

export function decodeLaneFail(payload: Buffer): { reason: LaneFailure; message: string } {
  const reason = payload[0] === LaneFailure.REFUSED ? LaneFailure.REFUSED : LaneFailure.BROKEN
  return { reason, message: payload.toString('utf8', 1) }
}
