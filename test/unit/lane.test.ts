import assert from 'node:assert/strict'
import { test } from 'node:test'
import { encodeFrame, FrameDecoder } from '../../src/protocol/frame.js'
import {
  decodeLaneFail,
  decodeLaneHead,
  decodeLaneRequest,
  encodeLaneAnswer,
  encodeLaneData,
  encodeLaneFail,
  encodeLaneHead,
  encodeLaneRequest,
  LANE_END_FRAME,
  LaneFailure,
  LaneFrame,
} from '../../src/protocol/lane.js'

/** Splits encoded lane bytes back into frames, as a lane's reader does. */
function frames(bytes: Buffer): { type: number; payload: Buffer }[] {
  return new FrameDecoder(1024 * 1024).push(bytes)
}

test('a REQUEST frame carries method, path and body unchanged', () => {
  const body = Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'héllo ✓' }] }))
  const [frame, ...rest] = frames(encodeLaneRequest('POST', '/v1/chat/completions?x=é', body))
  assert.equal(rest.length, 0)
  assert.equal(frame!.type, LaneFrame.REQUEST)
  const request = decodeLaneRequest(frame!.payload)
  assert.deepEqual(
    { ...request, body: request?.body.toString() },
    { method: 'POST', path: '/v1/chat/completions?x=é', body: body.toString() },
  )
  const empty = decodeLaneRequest(frames(encodeLaneRequest('GET', '/', Buffer.alloc(0)))[0]!.payload)
  assert.equal(empty?.body.length, 0)
})

test('malformed REQUEST payloads are refused, not misread', () => {
  assert.equal(decodeLaneRequest(Buffer.alloc(0)), undefined)
  assert.equal(decodeLaneRequest(Buffer.from([0, 0, 0])), undefined, 'empty method')
  assert.equal(decodeLaneRequest(Buffer.from([4, 80, 79])), undefined, 'method cut short')
  const truncated = frames(encodeLaneRequest('POST', '/v1/embeddings', Buffer.alloc(0)))[0]!.payload
  assert.equal(decodeLaneRequest(truncated.subarray(0, truncated.length - 3)), undefined, 'path cut short')
  assert.throws(() => encodeLaneRequest('POST', `/${'a'.repeat(70_000)}`, Buffer.alloc(0)), RangeError)
})

test('a HEAD frame carries the status and the headers in order', () => {
  const [frame] = frames(
    encodeLaneHead(201, { 'content-type': 'text/event-stream', 'x-engine': 'v1 ümlaut', empty: '' }),
  )
  assert.equal(frame!.type, LaneFrame.HEAD)
  assert.deepEqual(decodeLaneHead(frame!.payload), {
    status: 201,
    headers: ['content-type', 'text/event-stream', 'x-engine', 'v1 ümlaut', 'empty', ''],
  })
  // A header too long for the format is left out rather than corrupting the rest.
  const [long] = frames(encodeLaneHead(200, { [`x-${'n'.repeat(300)}`]: 'v', ok: 'yes' }))
  assert.deepEqual(decodeLaneHead(long!.payload)?.headers, ['ok', 'yes'])
})

test('malformed HEAD payloads are refused', () => {
  assert.equal(decodeLaneHead(Buffer.from([0])), undefined, 'too short')
  assert.equal(decodeLaneHead(Buffer.from([0, 42])), undefined, 'status out of range')
  const good = frames(encodeLaneHead(200, { 'content-type': 'application/json' }))[0]!.payload
  assert.equal(decodeLaneHead(good.subarray(0, good.length - 1)), undefined, 'value cut short')
  assert.equal(decodeLaneHead(Buffer.concat([good, Buffer.from([5, 97])])), undefined, 'name cut short')
})

test('a small whole answer is HEAD, DATA and END in one buffer', () => {
  const chunks = [Buffer.from('{"a":'), Buffer.from('1}')]
  const parts = frames(encodeLaneAnswer(200, { 'content-length': '7' }, chunks, 7))
  assert.deepEqual(
    parts.map((f) => f.type),
    [LaneFrame.HEAD, LaneFrame.DATA, LaneFrame.END],
  )
  assert.deepEqual(decodeLaneHead(parts[0]!.payload), { status: 200, headers: ['content-length', '7'] })
  assert.equal(parts[1]!.payload.toString(), '{"a":1}')
  const bodiless = frames(encodeLaneAnswer(204, {}, [], 0))
  assert.deepEqual(
    bodiless.map((f) => f.type),
    [LaneFrame.HEAD, LaneFrame.END],
  )
  assert.deepEqual(
    frames(Buffer.concat([encodeLaneHead(200, {}), encodeLaneData(Buffer.from('x')), LANE_END_FRAME])).map(
      (f) => f.type,
    ),
    [LaneFrame.HEAD, LaneFrame.DATA, LaneFrame.END],
  )
})

test('a FAIL frame says whether the answer had started', () => {
  const [refused] = frames(encodeLaneFail(LaneFailure.REFUSED, 'engine unreachable'))
  assert.equal(refused!.type, LaneFrame.FAIL)
  assert.deepEqual(decodeLaneFail(refused!.payload), {
    reason: LaneFailure.REFUSED,
    message: 'engine unreachable',
  })
  // Anything but an explicit refusal counts as a broken answer: never retried by mistake.
  assert.equal(
    decodeLaneFail(encodeFrame(LaneFrame.FAIL, Buffer.from([9])).subarray(6)).reason,
    LaneFailure.BROKEN,
  )
  assert.equal(decodeLaneFail(Buffer.alloc(0)).reason, LaneFailure.BROKEN)
})
