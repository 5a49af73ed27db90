import assert from 'node:assert/strict'
import { once } from 'node:events'
import { constants as h2 } from 'node:http2'
import { connect } from 'node:net'
import { after, before, test } from 'node:test'
import { encodeFrame } from '../../src/protocol/frame.js'
import {
  encodeLaneAnswer,
  encodeLaneData,
  encodeLaneFail,
  encodeLaneHead,
  encodeLaneRequest,
  LANE_END_FRAME,
  LaneFailure,
  LaneFrame,
  type LaneRequest,
} from '../../src/protocol/lane.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import type { Engine } from '../../src/worker/engines/types.js'
import { API_KEY, startFabric, type TestFabric, WORKER_TOKEN, waitFor } from '../helpers/fabric.js'
import { type FakeLane, type FakeWorker, startFakeWorker, within } from '../helpers/fake-worker.js'

/**
 * The server's end of lanes against a worker that breaks the lane protocol, through the whole
 * fabric: a user request on the public port, a real echo worker and a hand-scripted "rogue"
 * worker (logged in on the control port, data link bound with its token) serving the same
 * model. Each request's last user message names what the rogue does with it.
 */
let fabric: TestFabric
let rogue: FakeWorker
let healthyCalls = 0
/** The lane the rogue last got a request on, and how many it got in all. */
let lastLane: FakeLane | undefined
let rogueRequests = 0

const SSE = { 'content-type': 'text/event-stream' }
const ROGUE_BODY = Buffer.from(JSON.stringify({ rogue: 'answered' }))

function scenarioOf(request: LaneRequest): string {
  const body = JSON.parse(request.body.toString()) as { messages: { content: string }[] }
  return body.messages.at(-1)!.content
}

function okAnswer(): Buffer {
  return encodeLaneAnswer(
    200,
    { 'content-type': 'application/json', 'content-length': String(ROGUE_BODY.length) },
    [ROGUE_BODY],
    ROGUE_BODY.length,
  )
}

/** Bytes that announce a frame far over the server's limit for worker frames. */
function oversizedHeader(): Buffer {
  const header = Buffer.alloc(6)
  header.writeUInt32BE(64 * 1024 * 1024, 0)
  header[4] = 1
  header[5] = LaneFrame.DATA
  return header
}

const PART = encodeLaneData(Buffer.from('data: {"part":1}\n\n'))

/** What the rogue writes on its lane for each scenario. */
const SCRIPTS: Record<string, () => Buffer> = {
  ok: okAnswer,
  'stray-after-end': () => Buffer.concat([okAnswer(), encodeLaneData(Buffer.from('stray'))]),
  'end-before-head': () => LANE_END_FRAME,
  'data-before-head': () => encodeLaneData(Buffer.from('headless')),
  oversized: oversizedHeader,
  'garbage-text': () => Buffer.from('this is not a lane frame, it is plain text\r\n'),
  'garbage-zero-length': () => Buffer.alloc(32, 0),
  'wrong-version': () => Buffer.from([0, 0, 0, 2, 99, LaneFrame.END]),
  'unknown-type': () => encodeFrame(42, Buffer.alloc(0)),
  'request-from-worker': () => encodeLaneRequest('POST', '/v1/chat/completions', Buffer.from('{}')),
  'second-head': () => Buffer.concat([encodeLaneHead(200, SSE), PART, encodeLaneHead(200, SSE)]),
  'refused-after-head': () =>
    Buffer.concat([encodeLaneHead(200, SSE), PART, encodeLaneFail(LaneFailure.REFUSED, 'not really')]),
  'malformed-head': () => Buffer.concat([encodeFrame(LaneFrame.HEAD, Buffer.from([0, 42])), LANE_END_FRAME]),
  'head-bad-header': () =>
    encodeLaneAnswer(200, { 'bad header name': 'x', 'content-length': '2' }, [Buffer.from('{}')], 2),
  'head-bad-value': () =>
    encodeLaneAnswer(200, { 'x-v': 'a\r\nb', 'content-length': '2' }, [Buffer.from('{}')], 2),
  'length-lies': () =>
    encodeLaneAnswer(
      200,
      { 'content-type': 'application/json', 'content-length': '2' },
      [ROGUE_BODY],
      ROGUE_BODY.length,
    ),
  'refused-before-head': () => encodeLaneFail(LaneFailure.REFUSED, 'engine unreachable'),
  'broken-before-head': () => encodeLaneFail(LaneFailure.BROKEN, 'engine died'),
  'end-stream-before-head': () => Buffer.alloc(0),
  'end-stream-mid-answer': () => Buffer.concat([encodeLaneHead(200, SSE), PART]),
  'refused-after-json-head': () =>
    Buffer.concat([
      encodeLaneHead(200, { 'content-type': 'application/json', 'content-length': '100' }),
      encodeLaneFail(LaneFailure.REFUSED, 'not really'),
    ]),
}

before(async () => {
  // Long enough that a request waiting for them cannot pass for one handled at once.
  fabric = await startFabric({ firstByteTimeoutMs: 60_000, idleTimeoutMs: 60_000 })
  const echo = createEchoEngine({ models: ['shared'] })
  const counting: Engine = {
    ...echo,
    call(call) {
      healthyCalls++
      return echo.call(call)
    },
  }
  await fabric.addWorker(counting, 'healthy')
  rogue = await startFakeWorker({
    controlPort: fabric.server.ports.control,
    proxyPort: fabric.server.ports.proxy,
    ca: fabric.cert.cert,
    clientId: 'rogue',
    token: WORKER_TOKEN,
    models: ['shared', 'rogue-only'],
    script(request, lane) {
      rogueRequests++
      lastLane = lane
      const make = SCRIPTS[scenarioOf(request)]
      assert.ok(make, `unknown scenario ${scenarioOf(request)}`)
      // These end the worker's side of the lane (END_STREAM), which a worker never does.
      if (scenarioOf(request).startsWith('end-stream')) lane.stream.end(make())
      else lane.stream.write(make())
    },
  })
  await waitFor(() => rogueSession()?.routable === true, 10_000, 'the rogue worker to be routable')
})

after(async () => {
  rogue?.close()
  await fabric?.close()
})

const rogueSession = () => fabric.server.registry.byClientId('rogue')

/** What a user saw: the status (0: no response at all), the body, and whether it broke off. */
interface Outcome {
  status: number
  contentType: string
  body: string
  broken: boolean
}

async function chat(model: string, scenario: string): Promise<Outcome> {
  let res: Response
  try {
    res = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: scenario }] }),
      signal: AbortSignal.timeout(30_000),
    })
  } catch {
    return { status: 0, contentType: '', body: '', broken: true }
  }
  const contentType = res.headers.get('content-type') ?? ''
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  let body = ''
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      body += decoder.decode(value, { stream: true })
    }
  } catch {
    return { status: res.status, contentType, body, broken: true }
  }
  return { status: res.status, contentType, body, broken: false }
}

/**
 * Sends a request for the shared model until the rogue is the worker picked for it (the pick
 * between two idle workers is a coin toss; 40 tosses never all land on the healthy one in
 * practice). Requests the healthy worker took first must have been answered by it.
 */
async function viaRogue(
  scenario: string,
): Promise<{ out: Outcome; lane: FakeLane; healthyCallsDuring: number }> {
  for (let i = 0; i < 40; i++) {
    const seen = rogueRequests
    const calls = healthyCalls
    const out = await chat('shared', scenario)
    if (rogueRequests === seen) {
      assert.equal(out.status, 200, 'the healthy worker, picked first, answered')
      assert.match(out.body, new RegExp(`echo: ${scenario}`))
      continue
    }
    assert.equal(rogueRequests, seen + 1, 'the rogue got the request once')
    assert.equal(scenarioOf(lastLane!.requests.at(-1)!), scenario)
    return { out, lane: lastLane!, healthyCallsDuring: healthyCalls - calls }
  }
  throw new Error('the rogue worker was never picked')
}

/**
 * The lane was reset by the server (the worker sees RST_STREAM PROTOCOL_ERROR) and carries no
 * request after the one it broke the rules on.
 */
async function assertResetForGood(lane: FakeLane, what: string): Promise<void> {
  const carried = lane.requests.length
  const code = await within(lane.closed, 10_000, `${what}: the server to reset the lane`)
  assert.equal(code, h2.NGHTTP2_PROTOCOL_ERROR, `${what}: reset as a protocol error`)
  // The rogue itself is still bound and serves the next request, on another lane.
  const next = await chat('rogue-only', 'ok')
  assert.equal(next.status, 200, `${what}: the rogue's link still serves`)
  assert.equal(next.body, ROGUE_BODY.toString())
  assert.notEqual(lastLane, lane, `${what}: the broken lane was not reused`)
  assert.equal(lane.requests.length, carried, `${what}: nothing more came on the broken lane`)
  assert.equal(rogueSession()?.routable, true)
}

test('the rogue serves a well-formed request normally (baseline)', async () => {
  const out = await chat('rogue-only', 'ok')
  assert.deepEqual(out, {
    status: 200,
    contentType: 'application/json',
    body: ROGUE_BODY.toString(),
    broken: false,
  })
  const lane = lastLane!
  const again = await chat('rogue-only', 'ok')
  assert.equal(again.status, 200)
  assert.equal(lastLane, lane, 'a lane that behaves is reused')
})

for (const scenario of [
  'end-before-head',
  'malformed-head',
  'data-before-head',
  'oversized',
  'garbage-text',
  'garbage-zero-length',
  'wrong-version',
  'unknown-type',
  'request-from-worker',
]) {
  test(`${scenario}: the lane is reset and the request is retried on the healthy worker`, async () => {
    const { out, lane, healthyCallsDuring } = await viaRogue(scenario)
    // Nothing of the rogue's answer reached the user, so the retry is allowed and transparent.
    assert.equal(out.status, 200)
    assert.equal(out.broken, false)
    assert.match(out.body, new RegExp(`echo: ${scenario}`))
    assert.equal(healthyCallsDuring, 1, 'the healthy worker served the retry, once')
    await assertResetForGood(lane, scenario)
  })
}

for (const scenario of ['second-head', 'refused-after-head']) {
  test(`${scenario}: the streamed answer ends with an explicit error and is not retried`, async () => {
    const { out, lane, healthyCallsDuring } = await viaRogue(scenario)
    assert.equal(healthyCallsDuring, 0, 'no duplicate answer from another worker')
    assert.equal(out.status, 200, 'the rogue had started the answer')
    assert.match(out.contentType, /^text\/event-stream/)
    assert.ok(out.body.startsWith('data: {"part":1}\n\n'), out.body)
    assert.match(out.body, /"code":"GPUF_WORKER_FAILED"/, 'the stream ends with an error event')
    assert.doesNotMatch(out.body, /echo:/)
    await assertResetForGood(lane, scenario)
  })
}

test('a refusal before any head (a legitimate FAIL) is retried on the healthy worker; the lane is kept', async () => {
  const { out, lane, healthyCallsDuring } = await viaRogue('refused-before-head')
  assert.equal(out.status, 200)
  assert.match(out.body, /echo: refused-before-head/)
  assert.equal(healthyCallsDuring, 1)
  // A round trip on the rogue's link: had the server reset the lane, the worker would know by now.
  assert.equal((await chat('rogue-only', 'ok')).status, 200)
  assert.equal(lane.rstCode, undefined, 'a refusal by the rules does not cost the lane')
})

test('a FAIL(BROKEN) before any head: a 502 JSON error, not retried', async () => {
  const { out, healthyCallsDuring } = await viaRogue('broken-before-head')
  assert.equal(healthyCallsDuring, 0, 'the worker said the answer broke: no second try')
  assert.equal(out.status, 502)
  assert.equal(out.contentType, 'application/json')
  assert.equal(JSON.parse(out.body).error.code, 'GPUF_WORKER_FAILED')
})

test('refused after a JSON head: the user gets an error, not a retried answer', async () => {
  const { out, lane, healthyCallsDuring } = await viaRogue('refused-after-json-head')
  assert.equal(healthyCallsDuring, 0, 'no duplicate answer from another worker')
  assert.ok(
    out.broken || (out.status >= 500 && /GPUF_WORKER_FAILED/.test(out.body)),
    `an explicit error: ${JSON.stringify(out)}`,
  )
  assert.doesNotMatch(out.body, /echo:/)
  await assertResetForGood(lane, 'refused-after-json-head')
})

test('a stray frame right after END resets the lane; the answer itself is delivered', async () => {
  const out = await chat('rogue-only', 'stray-after-end')
  assert.equal(out.status, 200)
  assert.equal(out.body, ROGUE_BODY.toString())
  await assertResetForGood(lastLane!, 'stray-after-end')
})

for (const [kind, stray] of [
  ['DATA', () => encodeLaneData(Buffer.from('unasked'))],
  ['HEAD', () => encodeLaneHead(200, {})],
  ['END', () => LANE_END_FRAME],
  ['FAIL', () => encodeLaneFail(LaneFailure.REFUSED, 'unasked')],
] as const) {
  test(`a ${kind} frame on an idle lane resets it and drops it from the pool`, async () => {
    const out = await chat('rogue-only', 'ok')
    assert.equal(out.status, 200)
    const lane = lastLane!
    const session = rogueSession()!
    await waitFor(() => session.idleLanes >= 1, 5_000, 'the lane back in the pool')
    const idle = session.idleLanes
    lane.stream.write(stray())
    await waitFor(() => lane.rstCode !== undefined, 10_000, 'the server to reset the idle lane')
    await waitFor(() => session.idleLanes === idle - 1, 5_000, 'the reset lane to leave the pool')
    await assertResetForGood(lane, `${kind} on an idle lane`)
  })
}

test('after every violation the server still serves both workers', async () => {
  for (let i = 0; i < 6; i++) {
    const out = await chat('shared', 'ok')
    assert.equal(out.status, 200)
  }
  assert.equal((await chat('rogue-only', 'ok')).status, 200)
  assert.equal(fabric.server.registry.byClientId('healthy')?.routable, true)
  assert.equal(rogueSession()?.inflight, 0)
  assert.equal(fabric.server.registry.byClientId('healthy')?.inflight, 0)
})

test('a worker that ends its side of a lane before answering: the request is retried at once', async () => {
  const started = Date.now()
  const { out, lane, healthyCallsDuring } = await viaRogue('end-stream-before-head')
  assert.equal(out.status, 200)
  assert.match(out.body, /echo: end-stream-before-head/)
  assert.equal(healthyCallsDuring, 1)
  // Not after the 60 s first-byte timeout: the half-closed lane was given up on at once.
  assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`)
  await within(lane.closed, 10_000, 'the lane to close')
  const next = await chat('rogue-only', 'ok')
  assert.equal(next.status, 200)
  assert.notEqual(lastLane, lane, 'the half-closed lane was not reused')
})

test('a worker that ends its side of a lane mid-answer: the stream ends with an error at once', async () => {
  const started = Date.now()
  const { out, lane, healthyCallsDuring } = await viaRogue('end-stream-mid-answer')
  assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms, not the idle timeout`)
  assert.equal(healthyCallsDuring, 0, 'not retried after the answer started')
  assert.equal(out.status, 200)
  assert.ok(out.body.startsWith('data: {"part":1}\n\n'), out.body)
  assert.match(out.body, /"code":"GPUF_WORKER_FAILED"/)
  await within(lane.closed, 10_000, 'the lane to close')
  const next = await chat('rogue-only', 'ok')
  assert.equal(next.status, 200)
  assert.notEqual(lastLane, lane)
})

test('a worker that ends its side of an idle lane: the next request opens a new lane', async () => {
  assert.equal((await chat('rogue-only', 'ok')).status, 200)
  const lane = lastLane!
  const session = rogueSession()!
  await waitFor(() => session.idleLanes >= 1, 5_000, 'the lane back in the pool')
  const idle = session.idleLanes
  lane.stream.end()
  await waitFor(() => session.idleLanes === idle - 1, 10_000, 'the half-closed lane to leave the pool')
  const next = await chat('rogue-only', 'ok')
  assert.equal(next.status, 200)
  assert.notEqual(lastLane, lane)
})

test('a head the user cannot be sent (invalid header) ends in a 502 or a retry, not a dropped connection', {}, async () => {
  for (const scenario of ['head-bad-header', 'head-bad-value']) {
    const { out, healthyCallsDuring } = await viaRogue(scenario)
    const retried = out.status === 200 && out.body.includes(`echo: ${scenario}`) && healthyCallsDuring === 1
    const refused = out.status === 502 && out.body.includes('GPUF_WORKER_FAILED') && healthyCallsDuring === 0
    assert.ok(retried || refused, `${scenario}: ${JSON.stringify(out)}`)
  }
})

test('a content-length the body does not match never desyncs the user connection', {}, async () => {
  // One keep-alive connection, two requests: every byte must belong to a response as its own
  // framing announces it, and no truncated body may pass for a complete answer.
  const socket = connect(Number(new URL(fabric.baseUrl).port), '127.0.0.1')
  socket.on('error', () => undefined)
  try {
    await once(socket, 'connect')
    let received = ''
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1')
    })
    const send = (content: string) => {
      const body = JSON.stringify({ model: 'rogue-only', messages: [{ role: 'user', content }] })
      socket.write(
        `POST /v1/chat/completions HTTP/1.1\r\nhost: fabric\r\nauthorization: Bearer ${API_KEY}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      )
    }
    send('length-lies')
    await waitFor(() => received.includes('\r\n\r\n') || socket.destroyed, 10_000, 'the first answer')
    if (!socket.destroyed) send('ok')
    const done = () => {
      const parsed = parseResponses(received)
      return socket.destroyed || parsed === 'desync' || parsed.filter((r) => r.complete).length >= 2
    }
    await waitFor(done, 10_000, 'the second answer or a closed connection')
    const parsed = parseResponses(received)
    assert.notEqual(parsed, 'desync', `bytes on the connection: ${JSON.stringify(received)}`)
    if (parsed === 'desync') return
    const [first, second] = parsed
    if (first?.complete === true && first.status === 200) {
      assert.equal(first.body, ROGUE_BODY.toString(), 'no truncated body passed off as an answer')
    }
    if (second !== undefined)
      assert.deepEqual(second, { status: 200, body: ROGUE_BODY.toString(), complete: true })
  } finally {
    socket.destroy()
  }
})

interface RawResponse {
  status: number
  body: string
  complete: boolean
}

/** Splits raw HTTP/1.1 response bytes by their own framing; 'desync' when bytes fit no response. */
function parseResponses(raw: string): RawResponse[] | 'desync' {
  const out: RawResponse[] = []
  let at = 0
  while (at < raw.length) {
    if (!raw.startsWith('HTTP/1.1 ', at)) return 'desync'
    const status = Number(raw.slice(at + 9, at + 12))
    const headEnd = raw.indexOf('\r\n\r\n', at)
    if (headEnd < 0) {
      out.push({ status, body: '', complete: false })
      break
    }
    const head = raw.slice(at, headEnd)
    let p = headEnd + 4
    const length = /\r\ncontent-length: *(\d+)/i.exec(head)
    if (length !== null) {
      const body = raw.slice(p, p + Number(length[1]))
      const complete = body.length === Number(length[1])
      out.push({ status, body, complete })
      if (!complete) break
      at = p + body.length
      continue
    }
    if (!/\r\ntransfer-encoding: *chunked/i.test(head)) {
      out.push({ status, body: raw.slice(p), complete: false })
      break
    }
    let body = ''
    let complete = false
    for (;;) {
      const lineEnd = raw.indexOf('\r\n', p)
      if (lineEnd < 0) break
      const size = Number.parseInt(raw.slice(p, lineEnd), 16)
      if (Number.isNaN(size)) return 'desync'
      if (raw.length < lineEnd + 4 + size) break
      body += raw.slice(lineEnd + 2, lineEnd + 2 + size)
      p = lineEnd + 4 + size
      if (size === 0) {
        complete = true
        break
      }
    }
    out.push({ status, body, complete })
    if (!complete) break
    at = p
  }
  return out
}
