import { type ClientHttp2Session, type ClientHttp2Stream, constants as h2 } from 'node:http2'
import { LIMITS } from '../config/defaults.js'
import { FrameDecoder } from '../protocol/frame.js'
import {
  decodeLaneFail,
  decodeLaneHead,
  LANE_ANSWER_FRAME_BYTES,
  LANE_PATH,
  LaneFailure,
  LaneFrame,
} from '../protocol/lane.js'

/** What the server does with the parts of one answer coming back on a lane. */
export interface LaneExchange {
  /** Status and headers (a flat `[name, value, ...]` list, names in lower case). */
  head(status: number, headers: string[]): void
  /** A piece of the body; `last` when the END frame came with it (the answer is complete). */
  data(chunk: Buffer, last: boolean): void
  end(): void
  /**
   * The answer failed. `retryable` means no part of it came back (or the worker refused it
   * before answering), so the request may be sent to another worker.
   */
  fail(retryable: boolean, message: string): void
}

const LANE_HEADERS = { [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: LANE_PATH } as const

function noop(): void {}

/**
 * The server's end of one lane (see protocol/lane.ts): an open HTTP/2 stream to a worker
 * that carries one request at a time. After an answer ends, the lane goes back to its link's
 * pool for the next request; a lane that is cancelled, times out or breaks the protocol is
 * reset and dropped.
 */
export class Lane {
  readonly #stream: ClientHttp2Stream
  readonly #decoder = new FrameDecoder(LANE_ANSWER_FRAME_BYTES)
  readonly #release: (lane: Lane) => void
  #exchange: LaneExchange | undefined
  #started = false
  #dead = false
  #idleMs = 0
  #timer: NodeJS.Timeout | undefined
  #timerMs = 0
  readonly #onTimeout = () => {
    if (this.#exchange !== undefined) this.#reset(h2.NGHTTP2_CANCEL)
  }

  constructor(stream: ClientHttp2Stream, release: (lane: Lane) => void) {
    this.#stream = stream
    this.#release = release
    stream.on('error', noop)
    stream.on('data', (chunk: Buffer) => this.#onData(chunk))
    // A worker never ends its side of a lane. One that does can answer nothing more on it, but
    // the stream stays open while our side is: the lane would sit in the pool, the next request
    // on it waiting out the whole first-byte timeout (an answer cut short, the idle timeout).
    // Reset it now; the close handler fails a request still in flight.
    stream.once('end', () => this.#reset(h2.NGHTTP2_PROTOCOL_ERROR))
    stream.once('close', () => this.#onClose())
  }

  /** True once the lane can carry no more requests. */
  get dead(): boolean {
    return this.#dead
  }

  /**
   * Sends one encoded REQUEST frame and hands the answer's parts to `exchange`. The answer must
   * start within `firstByteMs` and never pause longer than `idleMs` (0: no limit), or the lane
   * is cancelled and the exchange fails.
   */
  send(frame: Buffer, exchange: LaneExchange, firstByteMs: number, idleMs: number): void {
    this.#exchange = exchange
    this.#started = false
    this.#idleMs = idleMs
    this.#arm(firstByteMs)
    this.#stream.write(frame)
  }

  /** Stops reading the answer (the requester is slow); HTTP/2 flow control holds the worker back. */
  pause(): void {
    this.#stream.pause()
  }

  resume(): void {
    this.#stream.resume()
  }

  /** Abandons the request in flight: the worker sees the reset and aborts its engine call. */
  cancel(): void {
    this.#reset(h2.NGHTTP2_CANCEL)
  }

  /** Closes an idle lane for good. */
  close(): void {
    this.#reset(h2.NGHTTP2_NO_ERROR)
  }

  #arm(ms: number): void {
    if (ms <= 0) {
      clearTimeout(this.#timer)
      this.#timer = undefined
      return
    }
    if (this.#timer !== undefined && this.#timerMs === ms) {
      this.#timer.refresh()
      return
    }
    clearTimeout(this.#timer)
    this.#timer = setTimeout(this.#onTimeout, ms)
    this.#timer.unref()
    this.#timerMs = ms
  }

  #reset(code: number): void {
    if (this.#dead) return
    this.#dead = true
    this.#stream.close(code)
  }

  #onData(chunk: Buffer): void {
    let frames: ReturnType<FrameDecoder['push']>
    try {
      frames = this.#decoder.push(chunk)
    } catch {
      this.#reset(h2.NGHTTP2_PROTOCOL_ERROR)
      return
    }
    try {
      for (let i = 0; i < frames.length; i++) {
        if (this.#dead) return
        const frame = frames[i]!
        this.#onFrame(frame.type, frame.payload, frames[i + 1]?.type === LaneFrame.END)
      }
    } catch {
      // A failure while relaying (a bug, a response the user side cannot take) ends this
      // lane and its request only; the close handler fails the exchange.
      this.#reset(h2.NGHTTP2_INTERNAL_ERROR)
    }
  }

  #onFrame(type: number, payload: Buffer, endsNext: boolean): void {
    const exchange = this.#exchange
    if (exchange === undefined) {
      // Nothing was asked on this lane: the worker is confused; do not trust the lane.
      this.#reset(h2.NGHTTP2_PROTOCOL_ERROR)
      return
    }
    switch (type) {
      case LaneFrame.DATA:
        if (!this.#started) break
        this.#timer?.refresh()
        exchange.data(payload, endsNext)
        return
      case LaneFrame.HEAD: {
        const head = this.#started ? undefined : decodeLaneHead(payload)
        if (head === undefined) break
        this.#started = true
        this.#arm(this.#idleMs)
        exchange.head(head.status, head.headers)
        return
      }
      case LaneFrame.END:
        if (!this.#started) break
        this.#exchange = undefined
        exchange.end()
        this.#free()
        return
      case LaneFrame.FAIL: {
        const { reason, message } = decodeLaneFail(payload)
        // REFUSED claims nothing of the answer was sent, yet a HEAD was: a worker contradicting
        // itself is not trusted with the next request. The reset's close handler fails the
        // request as not retryable (its head reached the user; a retry would answer twice).
        if (this.#started && reason === LaneFailure.REFUSED) break
        this.#exchange = undefined
        exchange.fail(!this.#started && reason === LaneFailure.REFUSED, message)
        this.#free()
        return
      }
    }
    this.#reset(h2.NGHTTP2_PROTOCOL_ERROR)
  }

  /** The exchange is over and the lane intact: back to the pool. */
  #free(): void {
    if (this.#dead) return
    if (this.#stream.isPaused()) this.#stream.resume()
    this.#release(this)
  }

  #onClose(): void {
    this.#dead = true
    clearTimeout(this.#timer)
    const exchange = this.#exchange
    this.#exchange = undefined
    try {
      exchange?.fail(!this.#started, 'the link to the worker closed')
    } catch {
      // The exchange failing in turn must not escape a 'close' listener (it would end the process).
    }
    this.#release(this)
  }
}

/** One data link (an HTTP/2 session on a worker-dialled socket) and its idle lanes. */
export class LaneLink {
  readonly session: ClientHttp2Session
  readonly #idle: Lane[] = []
  readonly #release = (lane: Lane) => {
    if (lane.dead) {
      const i = this.#idle.indexOf(lane)
      if (i >= 0) this.#idle.splice(i, 1)
    } else if (this.#idle.length >= LIMITS.maxIdleLanesPerLink || this.closed) lane.close()
    else this.#idle.push(lane)
  }

  constructor(session: ClientHttp2Session) {
    this.session = session
  }

  get closed(): boolean {
    return this.session.closed || this.session.destroyed
  }

  /** Lanes waiting for a request. */
  get idleLanes(): number {
    return this.#idle.length
  }

  /** An idle lane, or a new one; `undefined` when the link cannot open streams any more. */
  acquire(): Lane | undefined {
    for (let lane = this.#idle.pop(); lane !== undefined; lane = this.#idle.pop()) {
      if (!lane.dead) return lane
    }
    if (this.closed) return undefined
    let stream: ClientHttp2Stream
    try {
      stream = this.session.request(LANE_HEADERS, { endStream: false })
    } catch {
      return undefined
    }
    return new Lane(stream, this.#release)
  }
}
