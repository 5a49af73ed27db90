import assert from 'node:assert/strict'
import { once } from 'node:events'
import {
  type ClientHttp2Session,
  connect,
  createServer,
  constants as h2,
  type ServerHttp2Stream,
} from 'node:http2'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import { encodeFrame, FrameDecoder } from '../../src/protocol/frame.js'
import {
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
import { type Lane, type LaneExchange, LaneLink } from '../../src/routing/lanes.js'
import { waitFor } from '../helpers/fabric.js'

/**
 * The server's end of lanes against a scripted worker: each request's path picks what the
 * worker does, so every rule of the lane protocol is exercised on a real HTTP/2 session.
 */
const peer = createServer()
let session: ClientHttp2Session
let link: LaneLink
/** Lane streams the worker side saw opened, and how each one closed (RST code). */
const opened: ServerHttp2Stream[] = []
const closedWith: number[] = []

function script(stream: ServerHttp2Stream, path: string): void {
  switch (path) {
    case '/ok':
      stream.write(encodeLaneAnswer(200, { 'content-type': 'application/json' }, [Buffer.from('{}')], 2))
      return
    case '/chunks':
      stream.write(encodeLaneHead(200, { 'content-type': 'text/event-stream' }))
      stream.write(encodeLaneData(Buffer.from('data: 1\n\n')))
      setTimeout(
        () => stream.write(Buffer.concat([encodeLaneData(Buffer.from('data: 2\n\n')), LANE_END_FRAME])),
        20,
      )
      return
    case '/refuse':
      stream.write(encodeLaneFail(LaneFailure.REFUSED, 'engine unreachable'))
      return
    case '/data-first':
      stream.write(encodeLaneData(Buffer.from('x')))
      return
    case '/broken':
      stream.write(Buffer.concat([encodeLaneHead(200, {}), encodeLaneData(Buffer.from('part'))]))
      setTimeout(() => stream.close(h2.NGHTTP2_INTERNAL_ERROR), 10)
      return
    case '/oversized': {
      const header = Buffer.alloc(6)
      header.writeUInt32BE(64 * 1024 * 1024, 0)
      header[4] = 1
      header[5] = LaneFrame.DATA
      stream.write(header)
      return
    }
    case '/wrong-version':
      stream.write(Buffer.from([0, 0, 0, 2, 99, LaneFrame.END]))
      return
    case '/unknown-type':
      stream.write(encodeFrame(42, Buffer.alloc(0)))
      return
    case '/silent':
      return
  }
}

before(async () => {
  peer.on('stream', (stream) => {
    opened.push(stream)
    stream.on('error', () => undefined)
    stream.on('close', () => closedWith.push(stream.rstCode ?? -1))
    stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200 })
    const decoder = new FrameDecoder(1024 * 1024)
    stream.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        const request = decodeLaneRequest(frame.payload)
        if (request !== undefined) script(stream, request.path)
      }
    })
  })
  peer.listen(0, '127.0.0.1')
  await once(peer, 'listening')
  session = connect(`http://127.0.0.1:${(peer.address() as AddressInfo).port}`)
  await once(session, 'connect')
  link = new LaneLink(session)
})

after(async () => {
  session.destroy()
  peer.close()
})

interface Outcome {
  events: string[]
  body: string
  lane: Lane
}

/** Sends one request on a lane from the link and collects what the exchange saw. */
function exchange(path: string, firstByteMs = 5_000): Promise<Outcome> {
  const lane = link.acquire()
  assert.ok(lane, 'the link gives a lane')
  return new Promise((resolve) => {
    const events: string[] = []
    let body = ''
    const done = () => resolve({ events, body, lane })
    const handler: LaneExchange = {
      head(status, headers) {
        events.push(`head ${status} ${headers.join(',')}`)
      },
      data(chunk, last) {
        body += chunk.toString()
        events.push(last ? 'data+end' : 'data')
      },
      end() {
        events.push('end')
        done()
      },
      fail(retryable, message) {
        events.push(`fail ${retryable ? 'retryable' : 'final'}: ${message}`)
        done()
      },
    }
    lane.send(encodeLaneRequest('POST', path, Buffer.from('{}')), handler, firstByteMs, 5_000)
  })
}

test('an answer ends the exchange and the lane is reused for the next request', async () => {
  const before = opened.length
  const first = await exchange('/ok')
  assert.deepEqual(first.events, ['head 200 content-type,application/json', 'data+end', 'end'])
  assert.equal(first.body, '{}')
  const second = await exchange('/ok')
  assert.equal(second.lane, first.lane, 'the same lane carried both requests')
  assert.equal(opened.length - before, 1, 'one HTTP/2 stream for two requests')
  assert.equal(link.idleLanes, 1)
})

test('a streamed answer arrives piece by piece', async () => {
  const out = await exchange('/chunks')
  assert.deepEqual(out.events, ['head 200 content-type,text/event-stream', 'data', 'data+end', 'end'])
  assert.equal(out.body, 'data: 1\n\ndata: 2\n\n')
})

test('concurrent requests get lanes of their own, all reusable afterwards', async () => {
  const outs = await Promise.all(Array.from({ length: 5 }, () => exchange('/ok')))
  assert.equal(new Set(outs.map((o) => o.lane)).size, 5)
  assert.equal(link.idleLanes, 5)
})

test('a refusal before answering may be retried and keeps the lane', async () => {
  const out = await exchange('/refuse')
  assert.deepEqual(out.events, ['fail retryable: engine unreachable'])
  assert.equal(out.lane.dead, false)
  assert.equal(link.acquire(), out.lane, 'back in the pool')
  const served = await new Promise<boolean>((resolve) => {
    out.lane.send(
      encodeLaneRequest('POST', '/ok', Buffer.alloc(0)),
      { head() {}, data() {}, end: () => resolve(true), fail: () => resolve(false) },
      5_000,
      5_000,
    )
  })
  assert.equal(served, true, 'the refused lane served the next request')
})

test('protocol violations reset the lane, fail the request and never reuse the lane', async () => {
  for (const path of ['/data-first', '/oversized', '/wrong-version', '/unknown-type']) {
    const out = await exchange(path)
    assert.equal(out.events.length, 1, path)
    assert.match(out.events[0]!, /^fail retryable/, `${path}: nothing reached the user, so it may be retried`)
    assert.equal(out.lane.dead, true, path)
    const next = await exchange('/ok')
    assert.notEqual(next.lane, out.lane, `${path}: another lane serves the next request`)
    assert.equal(next.events.at(-1), 'end', path)
    assert.equal(closedWith.at(-1), h2.NGHTTP2_PROTOCOL_ERROR, `${path}: the worker saw the reset`)
  }
})

test('a lane that breaks mid-answer fails the request for good', async () => {
  const out = await exchange('/broken')
  assert.deepEqual(out.events.slice(0, 2), ['head 200 ', 'data'])
  assert.match(out.events[2]!, /^fail final/)
  assert.equal(out.lane.dead, true)
})

test('a silent worker runs into the first-byte limit; the worker sees the cancel', async () => {
  const started = Date.now()
  const out = await exchange('/silent', 200)
  const took = Date.now() - started
  assert.match(out.events[0]!, /^fail retryable/)
  assert.ok(took >= 150 && took < 2_000, `gave up after ${took} ms`)
  await waitFor(() => closedWith.at(-1) === h2.NGHTTP2_CANCEL, 2_000, 'the worker to see the cancel')
})

test('cancel() resets a lane in use; idle lanes close with the link', async () => {
  const lane = link.acquire()!
  const failed = new Promise<boolean>((resolve) => {
    lane.send(
      encodeLaneRequest('POST', '/silent', Buffer.alloc(0)),
      { head() {}, data() {}, end: () => resolve(false), fail: (retryable) => resolve(retryable) },
      5_000,
      5_000,
    )
  })
  lane.cancel()
  assert.equal(await failed, true)
  assert.equal(lane.dead, true)
  await waitFor(() => closedWith.at(-1) === h2.NGHTTP2_CANCEL, 2_000, 'the worker to see the cancel')
  session.close()
  await once(session, 'close')
  assert.equal(link.acquire(), undefined, 'a closed link gives no lane')
})
