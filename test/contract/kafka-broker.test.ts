import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { after, before, test } from 'node:test'
import { type ManagedService, startKafka, unavailable } from '../helpers/services.js'

// The real broker the message bus's Kafka adapter is to be tested against (the telemetry
// issue): installed by scripts/ensure-kafka.sh, started here in KRaft mode from its jars.
const skip = unavailable('kafka')
let kafka: ManagedService | undefined

before(async () => {
  if (skip === undefined) kafka = await startKafka()
})
after(() => kafka?.close())

/** Sends Kafka's ApiVersions request (v0) and returns the API keys the broker lists. */
function apiVersions(port: number, correlationId: number): Promise<{ error: number; apis: number[] }> {
  return new Promise((resolve, reject) => {
    const clientId = Buffer.from('gpufabric-test')
    const body = Buffer.alloc(2 + 2 + 4 + 2 + clientId.length)
    body.writeInt16BE(18, 0) // ApiVersions
    body.writeInt16BE(0, 2) // version 0
    body.writeInt32BE(correlationId, 4)
    body.writeInt16BE(clientId.length, 8)
    clientId.copy(body, 10)
    const size = Buffer.alloc(4)
    size.writeInt32BE(body.length)
    const socket = connect(port, '127.0.0.1')
    let received = Buffer.alloc(0)
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer from the broker')))
    socket.on('error', reject)
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk])
      if (received.length < 4 || received.length < 4 + received.readInt32BE(0)) return
      socket.destroy()
      assert.equal(received.readInt32BE(4), correlationId)
      const error = received.readInt16BE(8)
      const count = received.readInt32BE(10)
      const apis: number[] = []
      for (let i = 0, at = 14; i < count; i++, at += 6) apis.push(received.readInt16BE(at))
      resolve({ error, apis })
    })
    socket.write(Buffer.concat([size, body]))
  })
}

test('a real Kafka broker starts from the installed jars and answers the Kafka protocol', {
  skip,
}, async () => {
  const answer = await apiVersions(kafka!.port, 4242)
  assert.equal(answer.error, 0)
  // Produce (0), Fetch (1), Metadata (3), OffsetCommit (8), CreateTopics (19): what the bus needs.
  for (const api of [0, 1, 3, 8, 19]) assert.ok(answer.apis.includes(api), `API ${api} listed`)
})
