import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import { ErrorCodes, FabricError } from '../errors/index.js'
import { decodeMessage, encodeMessage } from './codec.js'
import { FrameDecoder } from './frame.js'
import { type ControlMessage, type MessageOf, MessageType, type MessageTypeId } from './messages.js'

/** Options of a {@link ControlChannel}. */
export interface ControlChannelOptions {
  readonly maxFrameBytes: number
  /** Bytes we let queue towards a peer that does not read before dropping it. */
  readonly maxWriteBufferBytes?: number
  /**
   * Answer pings at once (default). A server reads a stranger's channel with `false`: a Ping
   * then reaches its message handler like any other message, so that only a Login can come
   * first; {@link answerPings} turns answering on after login.
   */
  readonly answerPings?: boolean
}

interface ControlChannelEvents {
  message: [ControlMessage]
  close: [FabricError | undefined]
}

/**
 * A framed, validated control connection (either side). Answers pings itself, detects a
 * silent peer with {@link startKeepalive}, and closes on the first malformed frame: a
 * control stream cannot be resynchronised, and a peer that sends garbage is not one of ours.
 */
export class ControlChannel extends EventEmitter<ControlChannelEvents> {
  readonly socket: Socket
  readonly #decoder: FrameDecoder
  readonly #maxWriteBufferBytes: number
  #lastSeen = Date.now()
  #keepalive: NodeJS.Timeout | undefined
  #closed = false
  #answerPings: boolean

  constructor(socket: Socket, options: ControlChannelOptions) {
    super()
    this.socket = socket
    this.#decoder = new FrameDecoder(options.maxFrameBytes)
    this.#maxWriteBufferBytes = options.maxWriteBufferBytes ?? 4 * options.maxFrameBytes
    this.#answerPings = options.answerPings ?? true
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.on('error', (err) =>
      this.#finish(new FabricError(ErrorCodes.PROTOCOL, err.message, { cause: err, retryable: true })),
    )
    socket.on('close', () => this.#finish(undefined))
  }

  /** True once the connection is gone. */
  get closed(): boolean {
    return this.#closed
  }

  /**
   * Changes the largest frame accepted from the peer: a server reads a stranger's frames with
   * a small limit and raises it once the peer has logged in.
   */
  setMaxFrameBytes(bytes: number): void {
    this.#decoder.setMaxFrameBytes(bytes)
  }

  /** Starts answering pings (after the peer logged in). */
  answerPings(): void {
    this.#answerPings = true
  }

  /** Sends one message. Returns false when the channel is closed. */
  send<T extends MessageTypeId>(type: T, body: MessageOf<T>): boolean {
    if (this.#closed) return false
    if (this.socket.writableLength > this.#maxWriteBufferBytes) {
      this.destroy(new FabricError(ErrorCodes.PROTOCOL, 'peer is not reading its control connection'))
      return false
    }
    this.socket.write(encodeMessage(type, body))
    return true
  }

  /** Pings every `intervalMs`; a peer that sends nothing for `deadlineMs` is declared dead. */
  startKeepalive(intervalMs: number, deadlineMs: number): void {
    clearInterval(this.#keepalive)
    this.#lastSeen = Date.now()
    this.#keepalive = setInterval(() => {
      if (Date.now() - this.#lastSeen > deadlineMs) {
        this.destroy(
          new FabricError(ErrorCodes.TIMEOUT_PING, `peer silent for more than ${deadlineMs} ms`, {
            retryable: true,
          }),
        )
        return
      }
      this.send(MessageType.Ping, { t: Date.now() })
    }, intervalMs)
    this.#keepalive.unref()
  }

  /** Sends a Close message with a reason, then ends the connection. */
  close(code: string, message: string): void {
    if (this.#closed) return
    this.send(MessageType.Close, { code, message })
    this.socket.end()
    // A peer that never acknowledges the end must not hold the socket open.
    setTimeout(() => this.socket.destroy(), 2_000).unref()
  }

  /** Drops the connection at once. */
  destroy(err?: FabricError): void {
    this.#finish(err)
    this.socket.destroy()
  }

  #onData(chunk: Buffer): void {
    this.#lastSeen = Date.now()
    let messages: ControlMessage[]
    try {
      messages = this.#decoder.push(chunk).map(decodeMessage)
    } catch (err) {
      this.destroy(
        err instanceof FabricError ? err : new FabricError(ErrorCodes.PROTOCOL, String(err), { cause: err }),
      )
      return
    }
    for (const message of messages) {
      if (this.#closed) return
      if (message.type === MessageType.Ping && this.#answerPings) {
        this.send(MessageType.Pong, { t: message.body.t })
        continue
      }
      if (message.type === MessageType.Pong && this.#answerPings) continue
      try {
        this.emit('message', message)
      } catch (err) {
        // A handler's bug ends this connection (with a code the owner logs), not the process.
        this.destroy(
          new FabricError(ErrorCodes.INTERNAL, `message handler failed: ${String(err)}`, { cause: err }),
        )
        return
      }
    }
  }

  #finish(err: FabricError | undefined): void {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#keepalive)
    this.emit('close', err)
  }
}
