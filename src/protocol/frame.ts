import { ErrorCodes, FabricError } from '../errors/index.js'

/**
 * Control-plane framing.
 *
 *   u32 BE length (of everything after it) | u8 version | u8 type | payload
 *
 * The length is checked against a hard maximum before any payload is buffered, so a
 * peer announcing a huge frame costs us four bytes, not memory.
 */
export const PROTOCOL_VERSION = 1
export const FRAME_HEADER_BYTES = 6

/** One decoded frame: its message type and raw payload. */
export interface Frame {
  readonly type: number
  readonly payload: Buffer
}

/** Encodes one frame. */
export function encodeFrame(type: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length)
  out.set(payload, writeFrameHeader(out, 0, type, payload.length))
  return out
}

/**
 * Writes the header of a frame with a `payloadBytes` payload at `at`, for callers that build
 * the payload in place; returns where the payload starts.
 */
export function writeFrameHeader(out: Buffer, at: number, type: number, payloadBytes: number): number {
  out.writeUInt32BE(payloadBytes + 2, at)
  out[at + 4] = PROTOCOL_VERSION
  out[at + 5] = type
  return at + FRAME_HEADER_BYTES
}

/**
 * Incremental frame decoder: feed it socket chunks, get whole frames back.
 * Throws a {@link FabricError} on an oversized, undersized or wrong-version frame;
 * the caller must then close the connection (the stream cannot be resynchronised).
 */
export class FrameDecoder {
  #maxFrameBytes: number
  #buffered: Buffer[] = []
  #bufferedBytes = 0

  constructor(maxFrameBytes: number) {
    this.#maxFrameBytes = maxFrameBytes
  }

  /** Changes the largest accepted frame (a control connection's limit grows after login). */
  setMaxFrameBytes(bytes: number): void {
    this.#maxFrameBytes = bytes
  }

  /** Bytes held waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.#bufferedBytes
  }

  /** Adds a chunk and returns the frames it completes (often none or one). */
  push(chunk: Buffer): Frame[] {
    this.#buffered.push(chunk)
    this.#bufferedBytes += chunk.length
    const frames: Frame[] = []
    while (this.#bufferedBytes >= 4) {
      const head = this.#peek(FRAME_HEADER_BYTES <= this.#bufferedBytes ? FRAME_HEADER_BYTES : 4)
      const length = head.readUInt32BE(0)
      if (length + 4 > this.#maxFrameBytes) {
        throw new FabricError(
          ErrorCodes.FRAME_TOO_LARGE,
          `frame of ${length + 4} bytes exceeds the limit of ${this.#maxFrameBytes}`,
        )
      }
      if (length < 2) throw new FabricError(ErrorCodes.PROTOCOL, `frame length ${length} is too short`)
      if (head.length >= 5 && head[4] !== PROTOCOL_VERSION) {
        throw new FabricError(
          ErrorCodes.UNSUPPORTED_VERSION,
          `protocol version ${head[4]} is not supported (this side speaks ${PROTOCOL_VERSION})`,
        )
      }
      if (this.#bufferedBytes < length + 4) break
      const whole = this.#take(length + 4)
      frames.push({ type: whole[5]!, payload: whole.subarray(FRAME_HEADER_BYTES) })
    }
    return frames
  }

  #peek(bytes: number): Buffer {
    const first = this.#buffered[0]!
    if (first.length >= bytes) return first
    this.#buffered = [Buffer.concat(this.#buffered)]
    return this.#buffered[0]!
  }

  #take(bytes: number): Buffer {
    const all = this.#buffered.length === 1 ? this.#buffered[0]! : Buffer.concat(this.#buffered)
    const taken = all.subarray(0, bytes)
    const rest = all.subarray(bytes)
    this.#buffered = rest.length > 0 ? [rest] : []
    this.#bufferedBytes = rest.length
    return taken
  }
}
