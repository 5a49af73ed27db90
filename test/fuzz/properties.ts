import assert from 'node:assert/strict'
import { performance } from 'node:perf_hooks'
import { isDeepStrictEqual } from 'node:util'
import fc from 'fast-check'
import { Packr } from 'msgpackr'
import { ErrorCodes, FabricError } from '../../src/errors/index.js'
import { decodeMessage } from '../../src/protocol/codec.js'
import {
  encodeFrame,
  FRAME_HEADER_BYTES,
  type Frame,
  FrameDecoder,
  PROTOCOL_VERSION,
} from '../../src/protocol/frame.js'
import {
  decodeLaneFail,
  decodeLaneHead,
  decodeLaneRequest,
  encodeLaneAnswer,
  encodeLaneFail,
  encodeLaneHead,
  encodeLaneRequest,
  LaneFailure,
  LaneFrame,
} from '../../src/protocol/lane.js'
import { MessageType, type MessageTypeId, schemas } from '../../src/protocol/messages.js'
import {
  decodeSegment,
  pathSegments,
  queryParams,
  splitTarget,
  wellFormedQuery,
} from '../../src/server/http.js'
import { ENGINE_TYPES } from '../../src/worker/engines/types.js'

/**
 * Property-based fuzzing of everything that decodes bytes or strings a peer controls: the
 * control framing and messages, the lane codec and the path/query helpers of the HTTP ports.
 *
 * Each property takes a run count, so one module serves the short run inside `npm test`
 * (test/unit/fuzz.test.ts) and the million-input run of `npm run fuzz` (test/fuzz/run.ts).
 * Every input is also bounded in time: a decoder that is merely slow on some input (a
 * quadratic loop, a regex that backtracks) fails like one that throws.
 */

/** Longest one generated input may take before the property fails. */
export const MAX_INPUT_MS = 1_000

/** One fuzz property. `check` runs `runs` generated inputs and throws on the first failure. */
export interface FuzzProperty {
  readonly name: string
  /** Share of a total run budget relative to the other properties (see run.ts). */
  readonly weight: number
  check(runs: number, seed?: number): void
}

/** Wraps a predicate so that an input that takes longer than {@link MAX_INPUT_MS} fails it. */
function bounded<A extends unknown[]>(name: string, predicate: (...args: A) => void): (...args: A) => void {
  return (...args: A) => {
    const t0 = performance.now()
    predicate(...args)
    const ms = performance.now() - t0
    if (ms > MAX_INPUT_MS) {
      throw new Error(`${name}: one input took ${ms.toFixed(0)} ms (limit ${MAX_INPUT_MS} ms)`)
    }
  }
}

function property<A extends [unknown, ...unknown[]]>(
  name: string,
  weight: number,
  arbitraries: { [K in keyof A]: fc.Arbitrary<A[K]> },
  predicate: (...args: A) => void,
): FuzzProperty {
  return {
    name,
    weight,
    check(runs, seed) {
      fc.assert(fc.property(...arbitraries, bounded(name, predicate)), {
        numRuns: runs,
        ...(seed === undefined ? {} : { seed }),
      })
    },
  }
}

const asBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** Random bytes, a few of them long. */
const bytesArb = (maxLength: number) =>
  fc.oneof(
    { weight: 9, arbitrary: fc.uint8Array({ maxLength: Math.min(maxLength, 64) }) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength }) },
  )

/** Splits `bytes` at the given (wrapped-around) positions. */
function split(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  if (bytes.length === 0) return [bytes]
  const at = [...new Set(cuts.map((c) => c % bytes.length))].sort((a, b) => a - b)
  const pieces: Buffer[] = []
  let from = 0
  for (const c of at) {
    pieces.push(bytes.subarray(from, c))
    from = c
  }
  pieces.push(bytes.subarray(from))
  return pieces
}

/** Cut positions: none, a few, or (rarely) enough to feed many tiny pieces. */
const cutsArb = fc.oneof(
  { weight: 6, arbitrary: fc.array(fc.nat(), { maxLength: 8 }) },
  { weight: 1, arbitrary: fc.array(fc.nat(), { minLength: 50, maxLength: 400 }) },
)

// ---------------------------------------------------------------------------------------------
// Control framing

/** Frame lengths around every boundary the decoder checks. */
const frameLengthArb = fc.oneof(
  fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 0x7fff_ffff, 0xffff_ffff, 1024 * 1024 - 4, 1024 * 1024 - 3),
  fc.integer({ min: 0, max: 300 }),
  fc.integer({ min: 0, max: 0xffff_ffff }),
)
const versionArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant(PROTOCOL_VERSION) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
)
const maxFrameBytesArb = fc.oneof(
  fc.constantFrom(0, 1, 4, 5, 6, 7, 8, 64, 1024, 1024 * 1024),
  fc.integer({ min: 0, max: 4096 }),
)

/** A frame-like piece: a header with any length, version and type, then any bytes. */
const headerPieceArb = fc
  .tuple(frameLengthArb, versionArb, fc.integer({ min: 0, max: 255 }), bytesArb(512))
  .map(([length, version, type, rest]) => {
    const out = Buffer.alloc(FRAME_HEADER_BYTES + rest.length)
    out.writeUInt32BE(length, 0)
    out[4] = version
    out[5] = type
    out.set(rest, FRAME_HEADER_BYTES)
    return out
  })
/** A well-formed frame. */
const framePieceArb = fc
  .tuple(fc.integer({ min: 0, max: 255 }), bytesArb(300))
  .map(([type, payload]) => encodeFrame(type, payload))
const streamArb = fc
  .array(
    fc.oneof(
      { weight: 3, arbitrary: framePieceArb },
      { weight: 3, arbitrary: headerPieceArb },
      { weight: 2, arbitrary: bytesArb(256).map(asBuffer) },
    ),
    { maxLength: 12 },
  )
  .map((pieces) => Buffer.concat(pieces))

/**
 * A deliberately simple reference decoder: the whole buffer concatenated on every push, the
 * rules of frame.ts checked in order. What it may not know is when exactly the decoder sees a
 * wrong version with exactly 5 bytes buffered (see `versionMaybe`).
 */
class ReferenceDecoder {
  #buffer = Buffer.alloc(0)

  constructor(public maxFrameBytes: number) {}

  /**
   * The frames a push completes, or the error it must throw; `versionMaybe` when the frame
   * after those has a wrong version and only 5 bytes are in: the decoder reads the version
   * once its first buffered piece holds it or a whole header is in, so it may throw now or later.
   */
  push(piece: Buffer): { frames: Frame[]; error?: string; versionMaybe?: boolean } {
    this.#buffer = Buffer.concat([this.#buffer, piece])
    const frames: Frame[] = []
    while (this.#buffer.length >= 4) {
      const length = this.#buffer.readUInt32BE(0)
      if (length + 4 > this.maxFrameBytes) return { frames, error: ErrorCodes.FRAME_TOO_LARGE }
      if (length < 2) return { frames, error: ErrorCodes.PROTOCOL }
      if (this.#buffer.length >= 5 && this.#buffer[4] !== PROTOCOL_VERSION) {
        if (this.#buffer.length >= FRAME_HEADER_BYTES)
          return { frames, error: ErrorCodes.UNSUPPORTED_VERSION }
        return { frames, versionMaybe: true }
      }
      if (this.#buffer.length < length + 4) break
      frames.push({ type: this.#buffer[5]!, payload: this.#buffer.subarray(FRAME_HEADER_BYTES, length + 4) })
      this.#buffer = this.#buffer.subarray(length + 4)
    }
    return { frames }
  }
}

function sameFrames(a: readonly Frame[], b: readonly Frame[]): boolean {
  return a.length === b.length && a.every((f, i) => f.type === b[i]!.type && f.payload.equals(b[i]!.payload))
}

/** The limit change a control connection makes after login (absent where the decoder has none). */
type WithLimit = { setMaxFrameBytes?: (bytes: number) => void }

const frameDecoderAnyBytes = property(
  'frame-decoder: any bytes, any split',
  4,
  [streamArb, cutsArb, maxFrameBytesArb, fc.option(fc.tuple(fc.nat(), maxFrameBytesArb), { nil: undefined })],
  (stream, cuts, maxFrameBytes, raise) => {
    const decoder = new FrameDecoder(maxFrameBytes)
    const reference = new ReferenceDecoder(maxFrameBytes)
    let limit = maxFrameBytes
    let pushed = 0
    let consumed = 0
    const pieces = split(stream, cuts)
    for (const [i, piece] of pieces.entries()) {
      // Some runs change the limit between two pieces, as a control connection does after login.
      const setLimit = (decoder as WithLimit).setMaxFrameBytes
      if (raise !== undefined && raise[0] % pieces.length === i && setLimit !== undefined) {
        setLimit.call(decoder, raise[1])
        reference.maxFrameBytes = limit = raise[1]
      }
      pushed += piece.length
      const expected = reference.push(piece)
      let frames: Frame[]
      try {
        frames = decoder.push(piece)
      } catch (err) {
        assert.ok(err instanceof FabricError, `threw ${String(err)}`)
        if (expected.versionMaybe === true) assert.equal(err.code, ErrorCodes.UNSUPPORTED_VERSION)
        else assert.equal(err.code, expected.error, `threw ${err.code} where the reference did not`)
        return // the caller closes the connection: nothing more is fed
      }
      assert.equal(expected.error, undefined, `missed ${expected.error}`)
      assert.ok(
        Array.isArray(frames) && sameFrames(frames, expected.frames),
        'frames differ from the reference',
      )
      for (const frame of frames) {
        assert.ok(frame.payload.length + FRAME_HEADER_BYTES <= limit, 'frame over the limit')
        consumed += frame.payload.length + FRAME_HEADER_BYTES
      }
      // Every byte is either in a returned frame or still buffered, and what is buffered is
      // always less than one frame of the maximum size.
      assert.equal(consumed + decoder.bufferedBytes, pushed)
      assert.ok(decoder.bufferedBytes < Math.max(4, limit), `buffered ${decoder.bufferedBytes}`)
    }
  },
)

const frameDecoderRoundTrip = property(
  'frame-decoder: frames round trip through any split',
  2,
  [
    fc.array(
      fc.tuple(
        fc.integer({ min: 0, max: 255 }),
        fc.oneof(
          { weight: 20, arbitrary: fc.uint8Array({ maxLength: 64 }) },
          { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8192 }) },
        ),
      ),
      { maxLength: 16 },
    ),
    cutsArb,
    fc.nat({ max: 64 }),
  ],
  (frames, cuts, slack) => {
    const largest = frames.reduce(
      (n, [, p]) => Math.max(n, p.length + FRAME_HEADER_BYTES),
      FRAME_HEADER_BYTES,
    )
    const decoder = new FrameDecoder(largest + slack)
    const got: Frame[] = []
    for (const piece of split(Buffer.concat(frames.map(([t, p]) => encodeFrame(t, p))), cuts)) {
      got.push(...decoder.push(piece))
    }
    assert.equal(got.length, frames.length)
    for (let i = 0; i < got.length; i++) {
      assert.equal(got[i]!.type, frames[i]![0])
      assert.ok(got[i]!.payload.equals(frames[i]![1]))
    }
    assert.equal(decoder.bufferedBytes, 0)
  },
)

// ---------------------------------------------------------------------------------------------
// Control messages

// The codec's own settings: what a peer's msgpack library could produce.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' })

const MESSAGE_TYPES = Object.values(MessageType) as MessageTypeId[]
const messageTypeArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...MESSAGE_TYPES) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
)

/** Checks one decode: a validated message of the frame's type, or a PROTOCOL FabricError. */
function checkDecode(type: number, payload: Buffer): { accepted: boolean; body?: unknown } {
  let message: ReturnType<typeof decodeMessage>
  try {
    message = decodeMessage({ type, payload })
  } catch (err) {
    assert.ok(err instanceof FabricError, `decodeMessage threw ${String(err)}`)
    assert.equal(err.code, ErrorCodes.PROTOCOL)
    return { accepted: false }
  }
  assert.equal(message.type, type)
  const schema = schemas[type as MessageTypeId]
  assert.ok(schema !== undefined, `accepted unknown type ${type}`)
  assert.ok(schema.safeParse(message.body).success, 'accepted a body its schema refuses')
  return { accepted: true, body: message.body }
}

/** Bytes that msgpack gives meaning to, so random payloads get past the first byte. */
const msgpackByteArb = fc.oneof(
  fc.integer({ min: 0, max: 255 }),
  fc.constantFrom(0x80, 0x81, 0x82, 0x90, 0x91, 0xa1, 0xa4, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc7, 0xc9, 0xca),
  fc.constantFrom(0xcb, 0xcf, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xdc, 0xdd, 0xde, 0xdf, 0xff, 0x74),
)
const msgpackishArb = fc.array(msgpackByteArb, { maxLength: 48 }).map((b) => Buffer.from(b))

const messageRandomBytes = property(
  'decodeMessage: random bytes of every type',
  3,
  [messageTypeArb, fc.oneof(msgpackishArb, bytesArb(512).map(asBuffer))],
  (type, payload) => {
    checkDecode(type, payload)
  },
)

const nameChars = [...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-']
const clientIdArb = fc.string({ unit: fc.constantFrom(...nameChars), minLength: 1, maxLength: 40 })
const textArb = (maxLength: number) => fc.string({ unit: 'binary', maxLength })
const modelsArb = fc.array(
  textArb(40).filter((s) => s.length > 0),
  { maxLength: 5 },
)
const finiteArb = fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => (Object.is(n, -0) ? 0 : n))
const countArb = fc.integer({ min: 0, max: 2 ** 40 })
const rec = { noNullPrototype: true } as const

/** A valid body for each message type. */
const validBodyArb: Record<MessageTypeId, fc.Arbitrary<Record<string, unknown>>> = {
  [MessageType.Login]: fc.record(
    {
      clientId: clientIdArb,
      token: textArb(64).filter((s) => s.length > 0),
      agentVersion: textArb(20),
      engineType: fc.constantFrom(...ENGINE_TYPES),
      models: modelsArb,
      hostname: textArb(30),
      os: textArb(10),
      arch: textArb(10),
      capacity: fc.integer({ min: 0, max: 1_000_000 }),
    },
    { requiredKeys: ['clientId', 'token', 'agentVersion', 'engineType', 'models'], ...rec },
  ),
  [MessageType.LoginOk]: fc.record(
    {
      sessionId: textArb(40).filter((s) => s.length > 0),
      dataToken: fc.string({ minLength: 16, maxLength: 40 }),
      pingIntervalMs: fc.integer({ min: 1, max: 1e9 }),
      pingDeadlineMs: fc.integer({ min: 1, max: 1e9 }),
      heartbeatIntervalMs: fc.integer({ min: 1, max: 1e9 }),
      dataConnections: fc.integer({ min: 1, max: 64 }),
    },
    rec,
  ),
  [MessageType.LoginError]: fc.record({ code: textArb(20), message: textArb(100) }, rec),
  [MessageType.Heartbeat]: fc.record(
    {
      inflight: countArb,
      models: modelsArb,
      metrics: fc.record(
        {
          cpuPercent: fc.double({ min: 0, max: 100_000, noNaN: true }).map((n) => (n === 0 ? 0 : n)),
          load1: fc.double({ min: 0, max: 1e6, noNaN: true }).map((n) => (n === 0 ? 0 : n)),
          memUsedBytes: countArb,
          memTotalBytes: countArb,
          uptimeSeconds: fc.double({ min: 0, max: 1e9, noNaN: true }).map((n) => (n === 0 ? 0 : n)),
        },
        { requiredKeys: [], ...rec },
      ),
    },
    { requiredKeys: ['inflight'], ...rec },
  ),
  [MessageType.ModelsUpdate]: fc.record({ models: modelsArb }, rec),
  [MessageType.Ping]: fc.record({ t: finiteArb }, rec),
  [MessageType.Pong]: fc.record({ t: finiteArb }, rec),
  [MessageType.Close]: fc.record({ code: textArb(20), message: textArb(100) }, rec),
}
const validMessageArb = fc
  .constantFrom(...MESSAGE_TYPES)
  .chain((type) => validBodyArb[type].map((body) => ({ type, body })))

/** Values just inside and outside the schemas' limits, and values msgpack treats specially. */
const edgeValueArb = fc.oneof(
  fc.constantFrom(
    0,
    -1,
    1.5,
    -0,
    2 ** 31,
    2 ** 32,
    2 ** 53,
    2 ** 64,
    1e308,
    -1e308,
    NaN,
    Infinity,
    -Infinity,
  ),
  fc.constantFrom(null, undefined, true, false, '', '\u0000', 'ok', [], {}, new Date(0), new Uint8Array(3)),
  fc
    .constantFrom(0, 1, 15, 16, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025, 4096, 4097)
    .map((n) => 'x'.repeat(n)),
  fc.constantFrom(1023, 1024, 1025).map((n) => Array.from({ length: n }, (_, i) => `m${i}`)),
  fc.constantFrom('a b', 'ü', '😀', '\ud800', 'x/y', '__proto__', 'constructor'),
)
const anyValueArb = fc.oneof(
  edgeValueArb,
  fc.anything({
    maxDepth: 3,
    maxKeys: 6,
    withMap: true,
    withSet: true,
    withDate: true,
    withTypedArray: true,
  }),
)

type Mutation =
  | { kind: 'keep' }
  | { kind: 'drop' | 'replace'; pick: number; value?: unknown }
  | { kind: 'add'; key: string; value: unknown }
  | { kind: 'retype'; type: number }
  | { kind: 'wrap' }
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 2, arbitrary: fc.constant({ kind: 'keep' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('drop' as const), pick: fc.nat() }) },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('replace' as const), pick: fc.nat(), value: anyValueArb }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('add' as const),
      key: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('__proto__', 'constructor', 'models', 't')),
      value: anyValueArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('retype' as const), type: messageTypeArb }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'wrap' as const }) },
)

function mutate(
  type: number,
  body: Record<string, unknown>,
  mutation: Mutation,
): { type: number; value: unknown; valid: boolean } {
  const keys = Object.keys(body)
  const copy: Record<string, unknown> = { ...body }
  switch (mutation.kind) {
    case 'keep':
      return { type, value: body, valid: true }
    case 'drop':
      if (keys.length > 0) delete copy[keys[mutation.pick % keys.length]!]
      return { type, value: copy, valid: false }
    case 'replace':
      if (keys.length > 0) copy[keys[mutation.pick % keys.length]!] = mutation.value
      return { type, value: copy, valid: false }
    case 'add':
      Object.defineProperty(copy, mutation.key, { value: mutation.value, enumerable: true, writable: true })
      return { type, value: copy, valid: false }
    case 'retype':
      return { type: mutation.type, value: body, valid: mutation.type === type }
    case 'wrap':
      return { type, value: [body], valid: false }
  }
}

function tryPack(value: unknown): Buffer | undefined {
  try {
    return packr.pack(value)
  } catch {
    return undefined // a value msgpack cannot carry (a huge bigint): nothing a peer can send
  }
}

const messageNearValid = property(
  'decodeMessage: valid and near-valid messages',
  3,
  [validMessageArb, mutationArb],
  ({ type, body }, mutation) => {
    const m = mutate(type, body, mutation)
    const payload = tryPack(m.value)
    if (payload === undefined) return
    const result = checkDecode(m.type, payload)
    if (m.valid) {
      assert.ok(result.accepted, 'a valid message was refused')
      assert.ok(isDeepStrictEqual(result.body, body), 'a valid message changed on the way')
    }
  },
)

type ByteEdit =
  | { kind: 'flip' | 'set'; at: number; byte: number }
  | { kind: 'cut'; at: number }
  | { kind: 'dup' }
const byteEditArb: fc.Arbitrary<ByteEdit> = fc.oneof(
  fc.record({
    kind: fc.constantFrom('flip' as const, 'set' as const),
    at: fc.nat(),
    byte: fc.nat({ max: 255 }),
  }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.constant({ kind: 'dup' as const }),
)

function editBytes(bytes: Buffer, edits: readonly ByteEdit[]): Buffer {
  let out = Buffer.from(bytes)
  for (const edit of edits) {
    if (edit.kind === 'dup') {
      out = Buffer.concat([out, out])
      continue
    }
    if (out.length === 0) continue
    const at = edit.at % out.length
    if (edit.kind === 'cut') out = out.subarray(0, at)
    else if (edit.kind === 'flip') out[at] = out[at]! ^ (1 << (edit.byte % 8))
    else out[at] = edit.byte
  }
  return out
}

const REFERENCE_PING = { t: 1234.5 }
const REFERENCE_PING_PAYLOAD = packr.pack(REFERENCE_PING)

const messageMutatedBytes = property(
  'decodeMessage: mutated msgpack, then the codec still decodes a good frame',
  3,
  [validMessageArb, fc.array(byteEditArb, { minLength: 1, maxLength: 4 })],
  ({ type, body }, edits) => {
    const payload = tryPack(body)
    if (payload === undefined) return
    checkDecode(type, editBytes(payload, edits))
    // msgpackr keeps decoder state between calls; a failed decode must not leak into the next.
    const after = checkDecode(MessageType.Ping, REFERENCE_PING_PAYLOAD)
    assert.ok(after.accepted && isDeepStrictEqual(after.body, REFERENCE_PING), 'decoder state leaked')
  },
)

// ---------------------------------------------------------------------------------------------
// Lanes

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff])
/** A length that is usually right, sometimes a little or a lot off. */
const lengthOf = (n: number, off: number) =>
  Math.max(0, Math.min(0xffff, off % 4 === 0 ? n + (off % 7) - 3 : n))
/** Payloads shaped like REQUEST and HEAD payloads, with their length fields sometimes wrong. */
const laneBytesArb = fc.oneof(
  bytesArb(600).map(asBuffer),
  fc
    .tuple(
      fc.uint8Array({ maxLength: 12 }),
      fc.uint8Array({ maxLength: 60 }),
      fc.uint8Array({ maxLength: 40 }),
      fc.nat(),
    )
    .map(([method, path, body, off]) =>
      Buffer.concat([
        Buffer.from([lengthOf(method.length, off >> 3) & 0xff]),
        method,
        u16(lengthOf(path.length, off)),
        path,
        body,
      ]),
    ),
  fc
    .tuple(
      fc.nat({ max: 0xffff }),
      fc.array(fc.tuple(fc.uint8Array({ maxLength: 12 }), fc.uint8Array({ maxLength: 30 }), fc.nat()), {
        maxLength: 5,
      }),
    )
    .map(([status, headers]) =>
      Buffer.concat([
        u16(status % 4 === 0 ? status : 100 + (status % 500)),
        ...headers.flatMap(([name, value, off]) => [
          Buffer.from([lengthOf(name.length, off >> 3) & 0xff]),
          name,
          u16(lengthOf(value.length, off)),
          value,
        ]),
      ]),
    ),
)

const laneDecodeRandom = property('lane codec: decoders on random bytes', 3, [laneBytesArb], (payload) => {
  const request = decodeLaneRequest(payload)
  if (request !== undefined) {
    assert.ok(request.method.length >= 1 && request.method.length <= 255)
    const pathBytes = payload.readUInt16BE(1 + request.method.length)
    assert.equal(request.body.length, payload.length - 3 - request.method.length - pathBytes)
    assert.ok(request.body.equals(payload.subarray(payload.length - request.body.length)))
  }
  const head = decodeLaneHead(payload)
  if (head !== undefined) {
    assert.ok(head.status >= 100 && head.status <= 599)
    assert.equal(head.headers.length % 2, 0)
    // latin1: one byte per character, so every byte of the payload is accounted for.
    let bytes = 2
    for (let i = 0; i < head.headers.length; i += 2)
      bytes += 3 + head.headers[i]!.length + head.headers[i + 1]!.length
    assert.equal(bytes, payload.length)
  }
  const fail = decodeLaneFail(payload)
  assert.ok(fail.reason === LaneFailure.REFUSED || fail.reason === LaneFailure.BROKEN)
  assert.equal(typeof fail.message, 'string')
})

const latin1Arb = (maxLength: number, minLength = 0) =>
  fc.string({
    unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)),
    minLength,
    maxLength,
  })
/** Strings with everything a JavaScript string may hold, lone surrogates included. */
const anyStringArb = (maxLength: number) =>
  fc.string({
    unit: fc.oneof(
      { weight: 6, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
      { weight: 1, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)) },
    ),
    maxLength,
  })

const LONG_PATHS = ['a'.repeat(65_535), 'a'.repeat(65_536), '€'.repeat(21_845), '€'.repeat(21_846)]

function laneFrames(bytes: Buffer): Frame[] {
  const decoder = new FrameDecoder(bytes.length + FRAME_HEADER_BYTES)
  const frames = decoder.push(bytes)
  assert.equal(decoder.bufferedBytes, 0)
  return frames
}

const laneRequestRoundTrip = property(
  'lane codec: REQUEST round trip',
  2,
  [
    fc.oneof(
      { weight: 20, arbitrary: latin1Arb(12, 1) },
      { weight: 1, arbitrary: fc.constantFrom('', 'X'.repeat(255), 'X'.repeat(256)) },
    ),
    fc.oneof(
      { weight: 40, arbitrary: anyStringArb(120) },
      // Just inside and just over the 65,535-byte limit, in one-byte and three-byte characters.
      { weight: 1, arbitrary: fc.constantFrom(...LONG_PATHS) },
    ),
    bytesArb(2048),
  ],
  (method, path, body) => {
    if (method.length > 255 || Buffer.byteLength(path) > 65_535) {
      assert.throws(() => encodeLaneRequest(method, path, body), RangeError)
      return
    }
    const [frame, ...rest] = laneFrames(encodeLaneRequest(method, path, body))
    assert.equal(rest.length, 0)
    assert.equal(frame!.type, LaneFrame.REQUEST)
    const decoded = decodeLaneRequest(frame!.payload)
    if (method.length === 0) {
      // An empty method encodes but is refused: never sent (the gateway always says POST).
      assert.equal(decoded, undefined)
      return
    }
    assert.ok(decoded !== undefined)
    assert.equal(decoded.method, method)
    // The path travels as UTF-8: a lone surrogate arrives as U+FFFD, everything else as sent.
    assert.equal(decoded.path, Buffer.from(path).toString('utf8'))
    assert.ok(decoded.body.equals(body))
  },
)

const headersArb = fc.dictionary(
  fc.oneof({ weight: 30, arbitrary: latin1Arb(16) }, { weight: 1, arbitrary: latin1Arb(300, 250) }),
  fc.oneof(
    { weight: 60, arbitrary: latin1Arb(40) },
    { weight: 1, arbitrary: fc.constantFrom(65_535, 65_536).map((n) => 'v'.repeat(n)) },
  ),
  { maxKeys: 8, noNullPrototype: true },
)

function expectedHeaders(headers: Record<string, string>): string[] {
  return Object.entries(headers)
    .filter(([name, value]) => name.length <= 255 && value.length <= 65_535)
    .flat()
}

const laneHeadRoundTrip = property(
  'lane codec: HEAD and whole-answer round trip',
  2,
  [
    fc.oneof({ weight: 10, arbitrary: fc.integer({ min: 100, max: 599 }) }, fc.nat({ max: 65_535 })),
    headersArb,
    fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 4 }),
  ],
  (status, headers, chunks) => {
    const [head, ...rest] = laneFrames(encodeLaneHead(status, headers))
    assert.equal(rest.length, 0)
    assert.equal(head!.type, LaneFrame.HEAD)
    const decoded = decodeLaneHead(head!.payload)
    if (status < 100 || status > 599) {
      assert.equal(decoded, undefined)
      return
    }
    assert.deepEqual(decoded, { status, headers: expectedHeaders(headers) })

    const size = chunks.reduce((n, c) => n + c.length, 0)
    const frames = laneFrames(encodeLaneAnswer(status, headers, chunks, size))
    assert.deepEqual(
      frames.map((f) => f.type),
      size > 0 ? [LaneFrame.HEAD, LaneFrame.DATA, LaneFrame.END] : [LaneFrame.HEAD, LaneFrame.END],
    )
    assert.deepEqual(decodeLaneHead(frames[0]!.payload), decoded)
    if (size > 0) assert.ok(frames[1]!.payload.equals(Buffer.concat(chunks)))
    assert.equal(frames.at(-1)!.payload.length, 0)
  },
)

const laneFailRoundTrip = property(
  'lane codec: FAIL round trip',
  1,
  [fc.constantFrom(LaneFailure.REFUSED, LaneFailure.BROKEN), anyStringArb(1100)],
  (reason, message) => {
    const [frame, ...rest] = laneFrames(encodeLaneFail(reason, message))
    assert.equal(rest.length, 0)
    assert.equal(frame!.type, LaneFrame.FAIL)
    assert.deepEqual(decodeLaneFail(frame!.payload), {
      reason,
      message: Buffer.from(message.slice(0, 1024)).toString('utf8'),
    })
  },
)

// ---------------------------------------------------------------------------------------------
// Paths and queries

const hex = [...'0123456789abcdefABCDEF']
/** Pieces of request targets: escapes good, truncated and invalid, separators, raw characters. */
const targetPieceArb = fc.oneof(
  fc.constantFrom('/', '/', '?', '&', '=', '%', '%%', '+', '#', ' ', 'a', 'v1', 'models', '..', '.'),
  fc.constantFrom(
    '%E0%A4%A',
    '%E0%A4',
    '%C0%AF',
    '%ED%A0%80',
    '%F4%90%80%80',
    '%FF',
    '%80',
    '%00',
    '%2F',
    '%3F',
  ),
  fc.constantFrom(...hex).map((h) => `%${h}`),
  fc.tuple(fc.constantFrom(...hex), fc.constantFrom(...hex)).map(([a, b]) => `%${a}${b}`),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }).map((c) => encodeURIComponent(c)),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
  fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)),
)
const targetArb = fc.oneof(
  { weight: 4, arbitrary: fc.array(targetPieceArb, { maxLength: 24 }).map((p) => p.join('')) },
  { weight: 1, arbitrary: anyStringArb(64) },
)

function decodes(text: string): string | undefined {
  try {
    return decodeURIComponent(text)
  } catch {
    return undefined
  }
}

const httpHelpers = property(
  'http helpers: paths and queries',
  3,
  [targetArb, fc.option(targetArb, { nil: undefined })],
  (target, query) => {
    const url = query === undefined ? target : `${target}?${query}`
    const split = splitTarget(url)
    assert.ok(!split.path.includes('?'))
    if (url.includes('?')) assert.equal(`${split.path}?${split.query}`, url)
    else assert.deepEqual(split, { path: url, query: '' })
    assert.deepEqual(splitTarget(undefined), { path: '/', query: '' })

    // decodeSegment agrees with decodeURIComponent wherever that succeeds, and is undefined
    // exactly where it throws.
    assert.equal(decodeSegment(target), decodes(target))
    assert.equal(decodeSegment(split.path), decodes(split.path))

    const segments = pathSegments(split.path)
    const raw = split.path.split('/').filter((s) => s.length > 0)
    const expected = raw.map(decodes)
    if (expected.includes(undefined)) assert.equal(segments, undefined)
    else assert.deepEqual(segments, expected)

    assert.equal(wellFormedQuery(split.query), decodes(split.query) !== undefined)
    const params = queryParams(split.query)
    for (const [key, value] of params) assert.ok(typeof key === 'string' && typeof value === 'string')
  },
)

/** Every property, in the order the runners report them. */
export const properties: readonly FuzzProperty[] = [
  frameDecoderAnyBytes,
  frameDecoderRoundTrip,
  messageRandomBytes,
  messageNearValid,
  messageMutatedBytes,
  laneDecodeRandom,
  laneRequestRoundTrip,
  laneHeadRoundTrip,
  laneFailRoundTrip,
  httpHelpers,
]
