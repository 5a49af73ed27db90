import { Packr } from 'msgpackr'
import { encodeFrame, FRAME_HEADER_BYTES, PROTOCOL_VERSION } from '../../src/protocol/frame.js'
import { MessageType } from '../../src/protocol/messages.js'
import type { Rng } from './rng.js'

/**
 * Malformed traffic for the TLS ports: control frames and messages over TLS, HTTP/2 from a
 * fake worker on the proxy port, raw "TLS records" and plain garbage before any handshake.
 */

export type PortName = 'control' | 'proxy' | 'public' | 'api'

/** How the fake worker on a proxy connection answers the server's bind request. */
export type BindAnswer =
  | {
      readonly kind: 'respond'
      readonly status: number
      readonly token: string | undefined
      readonly body: Buffer
    }
  | { readonly kind: 'reset'; readonly code: number }
  | { readonly kind: 'goaway'; readonly code: number }
  | { readonly kind: 'silent' }
  | { readonly kind: 'settings'; readonly settings: Record<string, number>; readonly pings: number }

/** One connection's worth of malformed traffic. */
export interface WireCase {
  readonly port: PortName
  readonly kind: string
  /**
   * `tcp`: bytes on a plain connection. `tls`: bytes after a TLS 1.3 handshake. `h2-peer`: TLS
   * with ALPN h2 and an HTTP/2 server session on our side that answers the bind with `bind`.
   */
  readonly transport: 'tcp' | 'tls' | 'h2-peer'
  readonly alpn?: readonly string[]
  readonly chunks: readonly Buffer[]
  /** Wait for the server's first frame before writing the chunks after the first. */
  readonly awaitReply?: boolean
  readonly bind?: BindAnswer
  /** The server must close this connection (it is garbage or refused by design). */
  readonly mustClose: boolean
  /** How long to keep the connection otherwise. */
  readonly lingerMs: number
  /** Presents a wrong credential (sent from an address of its own, which gets throttled). */
  readonly badCredential: boolean
}

// What a worker's msgpack library might produce; the same settings as the codec.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' })

function pack(value: unknown): Buffer {
  try {
    return packr.pack(value)
  } catch {
    return Buffer.from([0xc1]) // never used by msgpack
  }
}

const STRINGS = [
  '',
  'x',
  'echo',
  'fuzz-model',
  '\u0000',
  'ü',
  '\ud800',
  'a b',
  'x'.repeat(300),
  'y'.repeat(5000),
]
const NUMBERS = [0, -1, 1, 1.5, 2 ** 31, 2 ** 53, 1e308, Number.NaN, Number.POSITIVE_INFINITY, -0]

function randomValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 2 ? 4 : 7)) {
    case 0:
      return rng.pick(STRINGS)
    case 1:
      return rng.pick(NUMBERS)
    case 2:
      return rng.pick([null, undefined, true, false])
    case 3:
      return rng.bytes(rng.size(64))
    case 4:
      return Array.from({ length: rng.size(8) }, () => randomValue(rng, depth + 1))
    case 5:
      return Array.from({ length: rng.pick([1024, 1025, 5000]) }, (_, i) => `m${i}`)
    default: {
      const out: Record<string, unknown> = {}
      for (let i = rng.size(6); i > 0; i--) {
        const key = rng.pick(['t', 'models', 'clientId', 'token', '__proto__', 'constructor', 'x', `k${i}`])
        Object.defineProperty(out, key, {
          value: randomValue(rng, depth + 1),
          enumerable: true,
          writable: true,
        })
      }
      return out
    }
  }
}

/** A valid body of each message type a worker may send. */
function validBody(
  rng: Rng,
  type: number,
  login: { clientId: string; token: string },
): Record<string, unknown> {
  switch (type) {
    case MessageType.Login:
      return {
        clientId: login.clientId,
        token: login.token,
        agentVersion: '0.0.0-fuzz',
        engineType: rng.pick(['echo', 'ollama', 'vllm', 'openai', 'llamacpp']),
        models: Array.from({ length: rng.size(4) }, (_, i) => `fuzz-model-${i}`),
        ...(rng.chance(0.5) ? { hostname: 'fuzz', os: 'linux', arch: 'x64', capacity: rng.int(10) } : {}),
      }
    case MessageType.Heartbeat:
      return {
        inflight: rng.int(100),
        ...(rng.chance(0.5)
          ? { models: Array.from({ length: rng.size(4) }, (_, i) => `fuzz-model-${i}`) }
          : {}),
        ...(rng.chance(0.5)
          ? { metrics: { cpuPercent: rng.int(400), load1: rng.next() * 4, memUsedBytes: 1 } }
          : {}),
      }
    case MessageType.ModelsUpdate:
      return { models: Array.from({ length: rng.size(8) }, (_, i) => `fuzz-model-${i}`) }
    case MessageType.Ping:
    case MessageType.Pong:
      return { t: rng.next() * 1e12 }
    case MessageType.Close:
    case MessageType.LoginError:
      return { code: 'GPUF_FUZZ', message: 'fuzz' }
    default:
      return {
        sessionId: 's',
        dataToken: 'x'.repeat(20),
        pingIntervalMs: 1,
        pingDeadlineMs: 1,
        heartbeatIntervalMs: 1,
        dataConnections: 1,
      }
  }
}

/** A valid body with one field dropped, replaced, added, or the whole of it replaced. */
function nearValid(rng: Rng, body: Record<string, unknown>): unknown {
  const keys = Object.keys(body)
  const copy: Record<string, unknown> = { ...body }
  switch (rng.int(5)) {
    case 0:
      if (keys.length > 0) delete copy[rng.pick(keys)]
      return copy
    case 1:
      if (keys.length > 0) copy[rng.pick(keys)] = randomValue(rng)
      return copy
    case 2:
      Object.defineProperty(copy, rng.pick(['extra', '__proto__', 'constructor']), {
        value: randomValue(rng),
        enumerable: true,
        writable: true,
      })
      return copy
    case 3:
      return randomValue(rng)
    default:
      return body
  }
}

const ALL_TYPES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255]

/** A frame header with any length, version and type, and some payload. */
function rawFrame(rng: Rng): { bytes: Buffer; invalid: boolean } {
  const payload = rng.bytes(rng.size(512))
  const length = rng.weighted<number>([
    [4, payload.length + 2],
    [1, rng.pick([0, 1, 2, 3])],
    [1, rng.pick([0x7fff_ffff, 0xffff_ffff, 2 * 1024 * 1024])],
    [1, rng.int(2 ** 32)],
  ])
  const version = rng.chance(0.8) ? PROTOCOL_VERSION : rng.int(256)
  const head = Buffer.alloc(FRAME_HEADER_BYTES)
  head.writeUInt32BE(length, 0)
  head[4] = version
  head[5] = rng.pick(ALL_TYPES)
  // Certainly refused whatever the limits: a short frame, a wrong version, or one over 1 MiB.
  const invalid = length < 2 || version !== PROTOCOL_VERSION || length + 4 > 1024 * 1024
  return { bytes: Buffer.concat([head, payload]), invalid }
}

function controlCase(rng: Rng, workerToken: string): WireCase {
  const clientId = `fuzz-${rng.int(1_000_000)}`
  const linger = rng.range(10, 80)
  const base = { port: 'control' as const, transport: 'tls' as const, lingerMs: linger, badCredential: false }
  switch (rng.int(8)) {
    case 0:
      return { ...base, kind: 'control/bytes', chunks: [rng.bytes(rng.range(1, 2048))], mustClose: false }
    case 1: {
      const frames = Array.from({ length: rng.range(1, 4) }, () => rawFrame(rng))
      return {
        ...base,
        kind: 'control/frames',
        chunks: frames.map((f) => f.bytes),
        mustClose: frames[0]!.invalid,
      }
    }
    case 2: {
      // Near-valid messages of any type before login: only a valid Login may come first.
      const type = rng.pick([1, 1, 1, 2, 3, 4, 5, 8, 9])
      const body = nearValid(rng, validBody(rng, type, { clientId, token: 'fuzz-wrong-token' }))
      return {
        ...base,
        kind: 'control/near-valid',
        chunks: [encodeFrame(type, pack(body))],
        // A Login with the wrong token is refused, anything else closes the connection.
        mustClose: true,
        badCredential: type === MessageType.Login,
      }
    }
    case 3:
      return {
        ...base,
        kind: 'control/wrong-token',
        chunks: [
          encodeFrame(
            MessageType.Login,
            pack(validBody(rng, MessageType.Login, { clientId, token: 'wrong' })),
          ),
        ],
        mustClose: true,
        badCredential: true,
      }
    case 4:
    case 5: {
      // A real login, then a random mix of valid, near-valid and broken messages.
      const login = encodeFrame(
        MessageType.Login,
        pack(validBody(rng, MessageType.Login, { clientId, token: workerToken })),
      )
      const after: Buffer[] = []
      for (let n = rng.range(1, 6); n > 0; n--) {
        const type = rng.pick([4, 4, 5, 6, 7, 8, 1, 2, 0, 9])
        const body = validBody(rng, type, { clientId, token: workerToken })
        after.push(
          rng.chance(0.6)
            ? encodeFrame(type, pack(rng.chance(0.5) ? body : nearValid(rng, body)))
            : rawFrame(rng).bytes,
        )
      }
      return {
        ...base,
        kind: 'control/logged-in',
        chunks: [login, Buffer.concat(after)],
        awaitReply: true,
        mustClose: false,
        lingerMs: rng.range(20, 200),
      }
    }
    case 6: {
      // A valid frame cut at a random point, or two logins back to back.
      const login = encodeFrame(
        MessageType.Login,
        pack(validBody(rng, MessageType.Login, { clientId, token: workerToken })),
      )
      return rng.chance(0.5)
        ? {
            ...base,
            kind: 'control/truncated',
            chunks: [login.subarray(0, rng.int(login.length))],
            mustClose: false,
          }
        : { ...base, kind: 'control/double-login', chunks: [Buffer.concat([login, login])], mustClose: false }
    }
    default: {
      // Pings are answered before login; a flood of them must not be a way to stay forever.
      const pings = Array.from({ length: rng.range(1, 50) }, () =>
        encodeFrame(MessageType.Ping, pack({ t: rng.next() })),
      )
      return { ...base, kind: 'control/pings', chunks: [Buffer.concat(pings)], mustClose: false }
    }
  }
}

/** An HTTP/2 frame: 24-bit length, type, flags, stream id, payload. */
function h2Frame(rng: Rng): Buffer {
  const payload = rng.bytes(rng.size(256))
  const head = Buffer.alloc(9)
  head.writeUIntBE(rng.chance(0.8) ? payload.length : rng.int(2 ** 24), 0, 3)
  head[3] = rng.chance(0.9) ? rng.int(10) : rng.int(256)
  head[4] = rng.int(256)
  head.writeUInt32BE(rng.chance(0.7) ? rng.pick([0, 1, 3, 5]) : rng.int(2 ** 32), 5)
  return Buffer.concat([head, payload])
}

/** An empty SETTINGS frame: the preface of an HTTP/2 server. */
const H2_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])

function proxyCase(rng: Rng): WireCase {
  const base = { port: 'proxy' as const, lingerMs: rng.range(10, 80), badCredential: false }
  switch (rng.int(5)) {
    case 0:
      return {
        ...base,
        kind: 'proxy/bytes',
        transport: 'tls',
        alpn: ['h2'],
        chunks: [rng.bytes(rng.range(1, 2048))],
        mustClose: false,
      }
    case 1:
      return {
        ...base,
        kind: 'proxy/h2-frames',
        transport: 'tls',
        alpn: ['h2'],
        chunks: [H2_SETTINGS, ...Array.from({ length: rng.range(1, 8) }, () => h2Frame(rng))],
        mustClose: false,
      }
    case 2:
      // Without ALPN h2 the link is not one of ours.
      return {
        ...base,
        kind: 'proxy/no-alpn',
        transport: 'tls',
        ...(rng.chance(0.5) ? { alpn: ['http/1.1'] } : {}),
        chunks: [Buffer.from('GET / HTTP/1.1\r\nhost: x\r\n\r\n')],
        mustClose: true,
      }
    default: {
      const bind = rng.weighted<BindAnswer>([
        [
          5,
          {
            kind: 'respond',
            status: rng.pick([200, 200, 204, 401, 500]),
            token: rng.pick([undefined, '', 'x'.repeat(32), 'y'.repeat(10_000), '\u00ff\u00fe']),
            body: rng.bytes(rng.size(512)),
          },
        ],
        [1, { kind: 'reset', code: rng.int(14) }],
        [1, { kind: 'goaway', code: rng.int(14) }],
        [1, { kind: 'silent' }],
        // Odd but legal settings and a burst of pings (raw garbage is proxy/h2-frames' part:
        // nothing may write to a socket an HTTP/2 session owns).
        [
          2,
          {
            kind: 'settings',
            settings: {
              headerTableSize: rng.pick([0, 1, 65_536]),
              initialWindowSize: rng.pick([0, 1, 2 ** 31 - 1]),
              maxFrameSize: rng.pick([16_384, 2 ** 24 - 1]),
              maxConcurrentStreams: rng.pick([0, 1, 2 ** 32 - 1]),
              maxHeaderListSize: rng.pick([0, 64, 2 ** 32 - 1]),
            },
            pings: rng.int(20),
          },
        ],
      ])
      return {
        ...base,
        kind: `proxy/bind-${bind.kind}`,
        transport: 'h2-peer',
        alpn: ['h2'],
        chunks: [],
        bind,
        // A bind answered with a token nobody was given, or reset, is refused: the link closes.
        // (A reset with NO_ERROR or CANCEL is no stream error to the server's HTTP/2 client: that
        // link stays until the bind times out.)
        mustClose:
          bind.kind === 'respond' ||
          bind.kind === 'settings' ||
          (bind.kind === 'reset' && bind.code !== 0 && bind.code !== 8),
        lingerMs: rng.range(30, 150),
      }
    }
  }
}

/**
 * Raw bytes that look like TLS records (or a real ClientHello, damaged), written on a plain
 * connection to any port.
 */
function recordCase(rng: Rng, clientHello: Buffer): WireCase {
  const port = rng.weighted<PortName>([
    [4, 'control'],
    [4, 'proxy'],
    [1, 'public'],
    [1, 'api'],
  ])
  let bytes: Buffer
  if (rng.chance(0.5)) {
    bytes = Buffer.from(clientHello)
    for (let n = rng.range(1, 6); n > 0; n--) {
      const at = rng.int(bytes.length)
      if (rng.chance(0.7)) bytes[at] = rng.int(256)
      else bytes = bytes.subarray(0, Math.max(1, at))
    }
  } else {
    const body = rng.bytes(rng.size(1024))
    const length = rng.chance(0.7) ? body.length : rng.int(65_536)
    bytes = Buffer.concat([
      Buffer.from([
        rng.pick([0x16, 0x16, 0x16, 0x14, 0x15, 0x17, 0x80]),
        0x03,
        rng.int(5),
        length >> 8,
        length & 0xff,
      ]),
      body,
    ])
  }
  return {
    port,
    kind: 'tls-records',
    transport: 'tcp',
    chunks: [bytes],
    mustClose: false,
    lingerMs: rng.range(10, 60),
    badCredential: false,
  }
}

/** Bytes that are not TLS at all on the TLS ports: the handshake fails at once. */
function plainCase(rng: Rng): WireCase {
  const text = rng.pick([
    'GET / HTTP/1.1\r\nhost: x\r\n\r\n',
    'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
    'SSH-2.0-OpenSSH_9.0\r\n',
    'hello',
  ])
  return {
    port: rng.chance(0.5) ? 'control' : 'proxy',
    kind: 'plain-on-tls',
    transport: 'tcp',
    chunks: [Buffer.from(text)],
    mustClose: true,
    lingerMs: 20,
    badCredential: false,
  }
}

/** Generates wire case `rng` for one of the TLS-side categories. */
export function wireCase(
  rng: Rng,
  category: 'control' | 'proxy' | 'records' | 'plain',
  context: { workerToken: string; clientHello: Buffer },
): WireCase {
  switch (category) {
    case 'control':
      return controlCase(rng, context.workerToken)
    case 'proxy':
      return proxyCase(rng)
    case 'records':
      return recordCase(rng, context.clientHello)
    default:
      return plainCase(rng)
  }
}
