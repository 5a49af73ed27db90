import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isFabricError } from '../../src/errors/index.js'
import {
  decodeMessage,
  encodeFrame,
  encodeMessage,
  FrameDecoder,
  MessageType,
} from '../../src/protocol/index.js'

const login = {
  clientId: 'worker-1',
  token: 'secret',
  agentVersion: '0.1.0',
  engineType: 'ollama' as const,
  models: ['llama3:latest'],
}

test('a message survives encode, arbitrary splitting and decode', () => {
  const bytes = Buffer.concat([
    encodeMessage(MessageType.Login, login),
    encodeMessage(MessageType.Ping, { t: 42 }),
  ])
  for (let split = 1; split < bytes.length; split += 7) {
    const decoder = new FrameDecoder(1024)
    const frames = [...decoder.push(bytes.subarray(0, split)), ...decoder.push(bytes.subarray(split))]
    assert.equal(frames.length, 2)
    assert.deepEqual(decodeMessage(frames[0]!), { type: MessageType.Login, body: login })
    assert.deepEqual(decodeMessage(frames[1]!), { type: MessageType.Ping, body: { t: 42 } })
    assert.equal(decoder.bufferedBytes, 0)
  }
})

test('an announced length over the limit is refused before its payload arrives', () => {
  const decoder = new FrameDecoder(1024)
  const head = Buffer.alloc(4)
  head.writeUInt32BE(5000, 0)
  assert.throws(
    () => decoder.push(head),
    (err: unknown) => isFabricError(err, 'GPUF_FRAME_TOO_LARGE'),
  )
})

test('a wrong protocol version and a too-short frame are refused', () => {
  const frame = encodeFrame(MessageType.Ping, Buffer.from([0x80]))
  frame[4] = 7
  assert.throws(
    () => new FrameDecoder(1024).push(frame),
    (err: unknown) => isFabricError(err, 'GPUF_UNSUPPORTED_VERSION'),
  )
  assert.throws(
    () => new FrameDecoder(1024).push(Buffer.from([0, 0, 0, 1, 1])),
    (err: unknown) => isFabricError(err, 'GPUF_PROTOCOL'),
  )
})

test('messages are validated at the edge', () => {
  const bad = (type: number, payload: Buffer) => () => decodeMessage({ type, payload })
  assert.throws(bad(99, Buffer.from([0xc0])), /unknown message type 99/)
  assert.throws(bad(MessageType.Login, Buffer.from([0x85, 0xa1])), /not valid msgpack/)
  const wrong = encodeMessage(MessageType.Ping, { t: 1 }).subarray(6)
  assert.throws(bad(MessageType.Login, wrong), /invalid message type 1/)
  const badId = encodeMessage(MessageType.Login, { ...login, clientId: "x'; DROP TABLE" }).subarray(6)
  assert.throws(bad(MessageType.Login, badId), /clientId/)
  const extra = encodeMessage(MessageType.Ping, { t: 1, evil: true } as never).subarray(6)
  assert.throws(bad(MessageType.Ping, extra), /invalid/)
})
