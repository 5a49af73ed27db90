import assert from 'node:assert/strict'
import { once } from 'node:events'
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  createServer,
  type Http2Server,
  constants as h2,
} from 'node:http2'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import { silentLogger } from '../../src/observability/logger.js'
import { encodeFrame, type Frame, FrameDecoder } from '../../src/protocol/frame.js'
import {
  decodeLaneHead,
  encodeLaneData,
  encodeLaneFail,
  encodeLaneHead,
  encodeLaneRequest,
  LANE_END_FRAME,
  LANE_PATH,
  LANE_REQUEST_OVERHEAD_BYTES,
  LaneFailure,
  LaneFrame,
} from '../../src/protocol/lane.js'
import { BIND_PATH, DATA_TOKEN_HEADER } from '../../src/server/dataplane/index.js'
import type { Engine, EngineCall, EngineReply } from '../../src/worker/engines/types.js'
import { createStreamHandler, type StreamHandlerContext } from '../../src/worker/handler.js'
import { waitFor } from '../helpers/fabric.js'
import { within } from '../helpers/fake-worker.js'

/**
 * The worker's end of lanes (createStreamHandler) against a test acting as the server: a real
 * HTTP/2 session on loopback, lanes opened by hand, and frames that break the lane protocol.
 * The engine records each call and whether it was aborted.
 */
const MAX_BODY = 1024

interface Call {
  readonly path: string
  readonly signal: AbortSignal
}
const calls: Call[] = []

/** Never answers until its call is aborted (then rejects, as an HTTP engine would). */
function hold(call: EngineCall): Promise<never> {
  return new Promise((_, reject) =>
    call.signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }),
  )
}

async function answer(call: EngineCall): Promise<EngineReply> {
  if (call.path === '/hold') return hold(call)
  if (call.path === '/stream') {
    // Head and a first chunk at once, then nothing until the call is aborted.
    async function* body(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('data: 1\n\n')
      await new Promise((resolve) => call.signal.addEventListener('abort', resolve, { once: true }))
    }
    return { status: 200, headers: { 'content-type': 'text/event-stream' }, body: body() }
  }
  const body = Buffer.from(JSON.stringify({ path: call.path, bytes: call.body.length }))
  return {
    status: 200,
    headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
    body,
  }
}

const engine: Engine = {
  type: 'echo',
  apis: new Set(['openai']),
  async listModels() {
    return ['m']
  },
  call(call) {
    calls.push({ path: call.path, signal: call.signal })
    // An engine with a bug: it throws where it should return a rejected promise.
    if (call.path === '/throws') throw new Error('engine bug')
    return answer(call)
  },
  async close() {},
}

let token: string | undefined = 'data-token-0123456789abcdef'
const ctx: StreamHandlerContext = {
  engine,
  logger: silentLogger(),
  dataToken: () => token,
  maxBodyBytes: MAX_BODY,
  inflight: 0,
}
let server: Http2Server
let session: ClientHttp2Session

before(async () => {
  server = createServer()
  server.on('stream', createStreamHandler(ctx))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  session.on('error', () => undefined)
  await once(session, 'connect')
})

after(async () => {
  session.destroy()
  await new Promise((resolve) => server.close(resolve))
})

/** The server's end of one lane, by hand: write frames, read the answer's frames. */
class TestLane {
  readonly stream: ClientHttp2Stream
  readonly frames: Frame[] = []
  /** Resolves with the RST_STREAM code the lane closed with. */
  readonly closed: Promise<number>
  readonly #decoder = new FrameDecoder(16 * 1024 * 1024)
  #wake: (() => void) | undefined

  constructor() {
    this.stream = session.request({ [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: LANE_PATH })
    this.stream.on('error', () => undefined)
    this.stream.on('data', (chunk: Buffer) => {
      this.frames.push(...this.#decoder.push(chunk))
      this.#wake?.()
    })
    this.closed = new Promise((resolve) =>
      this.stream.once('close', () => {
        this.#wake?.()
        resolve(this.stream.rstCode ?? 0)
      }),
    )
  }

  write(bytes: Buffer): void {
    this.stream.write(bytes)
  }

  request(path: string, body: Buffer = Buffer.from('{}')): void {
    this.write(encodeLaneRequest('POST', path, body))
  }

  /** Frames up to and including the next END or FAIL; rejects if the lane closes first. */
  async answer(timeoutMs = 10_000): Promise<Frame[]> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const end = this.frames.findIndex((f) => f.type === LaneFrame.END || f.type === LaneFrame.FAIL)
      if (end >= 0) return this.frames.splice(0, end + 1)
      if (this.stream.closed || this.stream.destroyed)
        throw new Error('the lane closed before the answer ended')
      const left = deadline - Date.now()
      if (left <= 0) throw new Error('timed out waiting for an answer')
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.#wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
  }

  /** The RST_STREAM code the worker reset this lane with; rejects if it stays open. */
  resetCode(timeoutMs = 10_000): Promise<number> {
    return within(this.closed, timeoutMs, 'the worker to reset the lane')
  }
}

/** Waits for the engine call on `path` (the n-th such call, counted from 1). */
async function engineCall(path: string, nth = 1): Promise<Call> {
  await waitFor(() => calls.filter((c) => c.path === path).length >= nth, 10_000, `engine call ${path}`)
  return calls.filter((c) => c.path === path)[nth - 1]!
}

async function aborted(call: Call): Promise<void> {
  if (call.signal.aborted) return
  await within(once(call.signal, 'abort'), 10_000, `the engine call ${call.path} to be aborted`)
}

/** A complete, well-formed answer to `/path`. */
async function served(lane: TestLane, path: string): Promise<void> {
  lane.request(path)
  const frames = await lane.answer()
  assert.deepEqual(
    frames.map((f) => f.type),
    [LaneFrame.HEAD, LaneFrame.DATA, LaneFrame.END],
  )
  assert.equal(decodeLaneHead(frames[0]!.payload)?.status, 200)
  assert.deepEqual(JSON.parse(frames[1]!.payload.toString()), { path, bytes: 2 })
}

/** Another lane, open before the violation, keeps serving; so does a new one. */
async function othersStillServed(bystander: TestLane, tag: string): Promise<void> {
  await served(bystander, `/after-${tag}`)
  await served(new TestLane(), `/fresh-after-${tag}`)
  assert.equal(session.closed || session.destroyed, false, 'the data link is intact')
}

const countOf = (path: string) => calls.filter((c) => c.path === path).length

test('a lane serves one request after the other (baseline)', async () => {
  const lane = new TestLane()
  await served(lane, '/one')
  await served(lane, '/two')
  assert.equal(ctx.inflight, 0)
  assert.equal(lane.stream.closed, false)
})

test('the bind answers the data token, or 503 while there is no session', async () => {
  const bind = async () => {
    const stream = session.request({ [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: BIND_PATH })
    stream.end()
    const [headers] = (await once(stream, 'response')) as [Record<string, string | number>]
    stream.resume()
    return { status: headers[h2.HTTP2_HEADER_STATUS], token: headers[DATA_TOKEN_HEADER] }
  }
  assert.deepEqual(await bind(), { status: 200, token: 'data-token-0123456789abcdef' })
  token = undefined
  try {
    const refused = await bind()
    assert.equal(refused.status, 503)
    assert.ok(!refused.token, 'no token without a session')
  } finally {
    token = 'data-token-0123456789abcdef'
  }
  await served(new TestLane(), '/after-bind')
})

/** Violations sent while a request runs on the lane (`/hold`: the engine is still working). */
const DURING_A_CALL: Record<string, () => Buffer> = {
  'a second REQUEST': () => encodeLaneRequest('POST', '/second', Buffer.from('{}')),
  'a DATA frame': () => encodeLaneData(Buffer.from('more body?')),
  'a HEAD frame': () => encodeLaneHead(200, {}),
  'an END frame': () => LANE_END_FRAME,
  'a FAIL frame': () => encodeLaneFail(LaneFailure.REFUSED, 'from the server?'),
  'an unknown frame type': () => encodeFrame(42, Buffer.alloc(0)),
  'an oversized frame header': () => {
    const header = Buffer.alloc(6)
    header.writeUInt32BE(MAX_BODY + LANE_REQUEST_OVERHEAD_BYTES + 1024, 0)
    header[4] = 1
    header[5] = LaneFrame.REQUEST
    return header
  },
  'a wrong protocol version': () => Buffer.from([0, 0, 0, 2, 99, LaneFrame.REQUEST]),
}

for (const [what, violation] of Object.entries(DURING_A_CALL)) {
  test(`${what} while an answer runs: that lane is reset, its engine call aborted, others served`, async () => {
    const bystander = new TestLane()
    await served(bystander, `/warm-${what}`)
    const lane = new TestLane()
    const holds = countOf('/hold')
    lane.request('/hold')
    const call = await engineCall('/hold', holds + 1)
    assert.equal(ctx.inflight, 1)
    lane.write(violation())
    assert.equal(await lane.resetCode(), h2.NGHTTP2_PROTOCOL_ERROR)
    await aborted(call)
    await waitFor(() => ctx.inflight === 0, 5_000, 'the aborted request to leave the count')
    assert.equal(countOf('/second'), 0, 'the second request never reached the engine')
    await othersStillServed(bystander, what)
  })
}

test('a violation during a streamed answer aborts the engine mid-stream', async () => {
  const bystander = new TestLane()
  await served(bystander, '/warm-stream')
  const lane = new TestLane()
  lane.request('/stream')
  const call = await engineCall('/stream')
  await waitFor(() => lane.frames.length >= 2, 10_000, 'the head and first chunk')
  assert.deepEqual(
    lane.frames.map((f) => f.type),
    [LaneFrame.HEAD, LaneFrame.DATA],
  )
  lane.write(encodeLaneData(Buffer.from('not a request')))
  assert.equal(await lane.resetCode(), h2.NGHTTP2_PROTOCOL_ERROR)
  await aborted(call)
  await waitFor(() => ctx.inflight === 0, 5_000, 'the aborted request to leave the count')
  await othersStillServed(bystander, 'stream')
})

/** Violations on an idle lane (after a served request): nothing may reach the engine. */
const ON_AN_IDLE_LANE: Record<string, () => Buffer> = {
  'a DATA frame': () => encodeLaneData(Buffer.from('x')),
  'a HEAD frame': () => encodeLaneHead(200, {}),
  'an END frame': () => LANE_END_FRAME,
  'a REQUEST with an empty method': () => encodeFrame(LaneFrame.REQUEST, Buffer.from([0, 0, 1, 47])),
  'a REQUEST cut inside its method': () => encodeFrame(LaneFrame.REQUEST, Buffer.from([4, 80, 79])),
  'a REQUEST cut inside its path': () => {
    const whole = encodeLaneRequest('POST', '/cut-path', Buffer.alloc(0))
    const payload = whole.subarray(6, whole.length - 3)
    return encodeFrame(LaneFrame.REQUEST, payload)
  },
  'an empty REQUEST': () => encodeFrame(LaneFrame.REQUEST, Buffer.alloc(0)),
  'an oversized REQUEST': () =>
    encodeLaneRequest('POST', '/too-big', Buffer.alloc(MAX_BODY + LANE_REQUEST_OVERHEAD_BYTES, 0x61)),
}

for (const [what, violation] of Object.entries(ON_AN_IDLE_LANE)) {
  test(`${what} on an idle lane: that lane is reset, the engine never called`, async () => {
    const bystander = new TestLane()
    await served(bystander, `/warm-idle-${what}`)
    const lane = new TestLane()
    await served(lane, `/before-${what}`)
    const before = calls.length
    lane.write(violation())
    assert.equal(await lane.resetCode(), h2.NGHTTP2_PROTOCOL_ERROR)
    assert.equal(calls.length, before, 'nothing reached the engine')
    assert.equal(countOf('/too-big') + countOf('/cut-path'), 0)
    assert.equal(ctx.inflight, 0)
    await othersStillServed(bystander, `idle ${what}`)
  })
}

test('a REQUEST of exactly the body limit is served (the limit is not too tight)', async () => {
  const lane = new TestLane()
  lane.request('/at-limit', Buffer.alloc(MAX_BODY, 0x61))
  const frames = await lane.answer()
  assert.equal(frames[0]!.type, LaneFrame.HEAD)
  assert.deepEqual(JSON.parse(frames[1]!.payload.toString()), { path: '/at-limit', bytes: MAX_BODY })
})

test('a REQUEST arriving after the lane broke is not served', async () => {
  const lane = new TestLane()
  await served(lane, '/before-late')
  // Two writes: two HTTP/2 DATA frames that the worker reads one after the other, the second
  // after it has already decided to reset the lane.
  lane.write(encodeLaneData(Buffer.from('breaks the lane')))
  lane.write(encodeLaneRequest('POST', '/late', Buffer.from('{}')))
  assert.equal(await lane.resetCode(), h2.NGHTTP2_PROTOCOL_ERROR)
  await served(new TestLane(), '/after-late')
  assert.equal(countOf('/late'), 0, 'a broken lane serves nothing more')
  assert.equal(ctx.inflight, 0)
})

test('an engine that throws instead of rejecting fails that request only; the lane serves on', async () => {
  const lane = new TestLane()
  lane.request('/throws')
  const frames = await lane.answer()
  assert.deepEqual(
    frames.map((f) => f.type),
    [LaneFrame.FAIL],
  )
  assert.equal(frames[0]!.payload[0], LaneFailure.REFUSED, 'nothing was answered: another worker may take it')
  assert.equal(ctx.inflight, 0)
  await served(lane, '/after-throw')
})
