import {
  createServer as createH2Server,
  type Http2Server,
  constants as h2,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2'
import type { TLSSocket } from 'node:tls'
import {
  type ControlMessage,
  decodeMessage,
  encodeMessage,
  FrameDecoder,
  type Login,
  type LoginOk,
  type MessageOf,
  MessageType,
  type MessageTypeId,
} from '../../src/protocol/index.js'
import { decodeLaneRequest, LANE_PATH, type LaneRequest } from '../../src/protocol/lane.js'
import { BIND_PATH, DATA_TOKEN_HEADER } from '../../src/server/dataplane/index.js'
import { connectTls } from '../../src/tls/index.js'

/**
 * Hand-driven peers of a fabric server, for tests that need a worker to break the rules: a
 * control client that speaks raw frames, and a data link whose HTTP/2 server end (the worker's
 * side) is scripted lane by lane.
 */

/** Resolves with the ms it took `socket` to close, or rejects once `timeoutMs` has passed. */
export function closedWithin(
  socket: { once(event: 'close', fn: () => void): unknown; readonly closed?: boolean },
  timeoutMs: number,
  what = 'the connection to close',
): Promise<number> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    if (socket.closed === true) {
      resolve(0)
      return
    }
    const timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)),
      timeoutMs,
    )
    socket.once('close', () => {
      clearTimeout(timer)
      resolve(Date.now() - started)
    })
  })
}

/** Options of {@link ControlPeer.connect}. */
export interface ControlPeerOptions {
  readonly port: number
  /** The server's certificate (PEM), trusted as its CA. */
  readonly ca: string
}

/** A control-port client that speaks frames by hand. */
export class ControlPeer {
  readonly socket: TLSSocket
  /** Every message received, pings included, in order. */
  readonly received: ControlMessage[] = []
  /** Set when a frame from the server could not be decoded. */
  decodeError: unknown
  readonly #decoder = new FrameDecoder(16 * 1024 * 1024)
  #waiters: (() => void)[] = []

  private constructor(socket: TLSSocket) {
    this.socket = socket
    socket.on('error', () => undefined)
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.on('close', () => this.#wake())
  }

  /** Dials the control port over verified TLS 1.3; sends nothing yet. */
  static async connect(options: ControlPeerOptions): Promise<ControlPeer> {
    const socket = await connectTls({
      host: '127.0.0.1',
      port: options.port,
      trust: { ca: options.ca },
      timeoutMs: 10_000,
    })
    return new ControlPeer(socket)
  }

  get closed(): boolean {
    return this.socket.destroyed
  }

  /** Sends one message. */
  send<T extends MessageTypeId>(type: T, body: MessageOf<T>): void {
    this.socket.write(encodeMessage(type, body))
  }

  /** A Login body with sensible values; `extra` overrides. */
  static loginBody(clientId: string, token: string, models: string[], extra: Partial<Login> = {}): Login {
    return { clientId, token, agentVersion: 'fake-1', engineType: 'echo', models, ...extra }
  }

  /** Sends a Login and waits for LoginOk (rejects on LoginError, close or timeout). */
  async login(clientId: string, token: string, models: string[], timeoutMs = 10_000): Promise<LoginOk> {
    this.send(MessageType.Login, ControlPeer.loginBody(clientId, token, models))
    const answer = await this.next(
      (m) => m.type === MessageType.LoginOk || m.type === MessageType.LoginError,
      timeoutMs,
      'the login answer',
    )
    if (answer.type !== MessageType.LoginOk) throw new Error(`login refused: ${JSON.stringify(answer.body)}`)
    return answer.body
  }

  /** The first message (already received or still to come) that matches; rejects on close or timeout. */
  async next(
    match: (m: ControlMessage) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<ControlMessage> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.received.find(match)
      if (found !== undefined) return found
      if (this.closed) throw new Error(`connection closed before ${what}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${what}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.#waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  destroy(): void {
    this.socket.destroy()
  }

  #onData(chunk: Buffer): void {
    let messages: ControlMessage[]
    try {
      messages = this.#decoder.push(chunk).map(decodeMessage)
    } catch (err) {
      this.decodeError = err
      this.socket.destroy()
      return
    }
    for (const message of messages) {
      this.received.push(message)
      // Pings are answered, as a worker does, so a session outlives the ping deadline.
      if (message.type === MessageType.Ping && !this.socket.destroyed) {
        this.send(MessageType.Pong, { t: message.body.t })
      }
    }
    this.#wake()
  }

  #wake(): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const fn of waiters) fn()
  }
}

/** One lane as the fake worker sees it: the HTTP/2 stream and the requests that came on it. */
export interface FakeLane {
  readonly stream: ServerHttp2Stream
  readonly requests: LaneRequest[]
  /** Resolves with the RST_STREAM code the lane closed with (0 for a clean close). */
  readonly closed: Promise<number>
  /** The code once closed, `undefined` while open. */
  rstCode: number | undefined
}

/** What the fake worker does with each request on a lane. */
export type LaneScript = (request: LaneRequest, lane: FakeLane) => void

/** Options of {@link FakeDataLink.open}. */
export interface FakeDataLinkOptions {
  readonly port: number
  readonly ca: string
  /**
   * How to answer the bind request: with this data token, or not at all (`null`: the bind
   * stream is left hanging).
   */
  readonly dataToken: string | null
  /** Status of the bind answer. @default 200 */
  readonly bindStatus?: number
  readonly script?: LaneScript
}

/**
 * The worker's end of a data link, by hand: dials the proxy port over TLS, serves HTTP/2 on the
 * socket (the server is the HTTP/2 client), answers the bind and hands each lane request to a
 * script.
 */
export class FakeDataLink {
  readonly socket: TLSSocket
  readonly lanes: FakeLane[] = []
  /** Bind requests the server sent. */
  binds = 0
  readonly #h2: Http2Server
  #session: ServerHttp2Session | undefined

  private constructor(socket: TLSSocket, options: FakeDataLinkOptions) {
    this.socket = socket
    socket.on('error', () => undefined)
    this.#h2 = createH2Server()
    this.#h2.on('session', (session) => {
      this.#session = session
      session.on('error', () => undefined)
    })
    this.#h2.on('stream', (stream, headers) => {
      stream.on('error', () => undefined)
      const path = headers[h2.HTTP2_HEADER_PATH]
      if (path === BIND_PATH) {
        this.binds++
        if (options.dataToken !== null) {
          stream.respond(
            { [h2.HTTP2_HEADER_STATUS]: options.bindStatus ?? 200, [DATA_TOKEN_HEADER]: options.dataToken },
            { endStream: true },
          )
        }
        return
      }
      if (path !== LANE_PATH) {
        stream.respond({ [h2.HTTP2_HEADER_STATUS]: 404 }, { endStream: true })
        return
      }
      this.#serveLane(stream, options.script ?? (() => undefined))
    })
    this.#h2.emit('connection', socket)
  }

  static async open(options: FakeDataLinkOptions): Promise<FakeDataLink> {
    const socket = await connectTls({
      host: '127.0.0.1',
      port: options.port,
      trust: { ca: options.ca },
      alpn: ['h2'],
      timeoutMs: 10_000,
    })
    return new FakeDataLink(socket, options)
  }

  destroy(): void {
    this.#session?.destroy()
    this.socket.destroy()
    this.#h2.close()
  }

  #serveLane(stream: ServerHttp2Stream, script: LaneScript): void {
    let settle: (code: number) => void = () => undefined
    const lane: FakeLane = {
      stream,
      requests: [],
      closed: new Promise<number>((resolve) => {
        settle = resolve
      }),
      rstCode: undefined,
    }
    this.lanes.push(lane)
    stream.once('close', () => {
      lane.rstCode = stream.rstCode ?? 0
      settle(lane.rstCode)
    })
    stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200 })
    const decoder = new FrameDecoder(64 * 1024 * 1024)
    stream.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        const request = decodeLaneRequest(frame.payload)
        if (request === undefined) continue
        lane.requests.push(request)
        script(request, lane)
      }
    })
  }
}

/** A fake worker: a logged-in control peer plus one scripted data link bound to its session. */
export interface FakeWorker {
  readonly control: ControlPeer
  readonly login: LoginOk
  readonly link: FakeDataLink
  close(): void
}

/** Logs a fake worker in and binds one scripted data link; resolves once the bind was answered. */
export async function startFakeWorker(options: {
  controlPort: number
  proxyPort: number
  ca: string
  clientId: string
  token: string
  models: string[]
  script: LaneScript
}): Promise<FakeWorker> {
  const control = await ControlPeer.connect({ port: options.controlPort, ca: options.ca })
  const login = await control.login(options.clientId, options.token, options.models)
  const link = await FakeDataLink.open({
    port: options.proxyPort,
    ca: options.ca,
    dataToken: login.dataToken,
    script: options.script,
  })
  return {
    control,
    login,
    link,
    close() {
      link.destroy()
      control.destroy()
    },
  }
}

/** `promise`, or a rejection naming `what` once `timeoutMs` has passed (the timer is cleared either way). */
export async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)),
          timeoutMs,
        )
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}
