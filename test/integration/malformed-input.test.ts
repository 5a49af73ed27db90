import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { after, before, test } from 'node:test'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import type { Engine } from '../../src/worker/engines/types.js'
import { API_KEY, startFabric, type TestFabric } from '../helpers/fabric.js'

let fabric: TestFabric

/** Paths the engine was asked for, exactly as the worker handed them over. */
const enginePaths: string[] = []

/** The echo engine, recording the path of every call. */
function recordingEcho(): Engine {
  const echo = createEchoEngine({ models: ['echo'] })
  const relay = echo.relay?.bind(echo)
  return {
    type: echo.type,
    apis: echo.apis,
    listModels: (signal) => echo.listModels(signal),
    call: (call) => {
      enginePaths.push(call.path)
      return echo.call(call)
    },
    ...(relay === undefined
      ? {}
      : {
          relay: (call: Parameters<typeof relay>[0], sink: Parameters<typeof relay>[1]) => {
            enginePaths.push(call.path)
            relay(call, sink)
          },
        }),
    close: () => echo.close(),
  }
}

before(async () => {
  fabric = await startFabric()
  await fabric.addWorker(recordingEcho(), 'w1')
})
after(() => fabric.close())

/** Sends one raw HTTP/1.1 request and resolves with the status line's code (0 if the connection closed first). */
function rawRequest(port: number, head: string, body = ''): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let text = ''
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => {
      text += chunk
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text)
      resolve(m === null ? 0 : Number(m[1]))
    })
    socket.setTimeout(5_000, () => {
      socket.destroy()
      reject(new Error(`no answer to ${head.split('\r\n')[0]}`))
    })
    socket.write(`${head}\r\nhost: x\r\nconnection: close\r\n\r\n${body}`)
  })
}

const MALFORMED_PATHS = [
  '/v1/models/%',
  '/v1/models/%E0%A4%A',
  '/v1/models/%ZZ',
  '/v1/models/%C0%AF',
  '/v1/models/%ED%A0%80',
  '/v1/models/abc%',
  '/v1/models/%%',
  '/v1/models/%F4%90%80%80',
  '/%',
  '/v1/%E0%A4%A/models',
  '/api/%',
  '/v1/models?%',
  '/v1/models?a=%E0%A4%A&b=%',
  '/v1/chat/completions?x=%',
  '/v1/models?q=%E0%A4%A',
  '//',
  '///%',
]

async function assertServing(): Promise<void> {
  const res = await fetch(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'hi' }] }),
  })
  assert.equal(res.status, 200)
}

test('malformed escapes in paths and queries answer 4xx on the public port and the server keeps serving', async () => {
  const port = fabric.server.ports.public
  for (const path of MALFORMED_PATHS) {
    for (const method of ['GET', 'POST']) {
      const body = method === 'POST' ? '{"model":"echo","messages":[]}' : ''
      const status = await rawRequest(
        port,
        `${method} ${path} HTTP/1.1\r\nauthorization: Bearer ${API_KEY}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}`,
        body,
      )
      assert.ok(status >= 400 && status < 500, `${method} ${path} answered ${status}`)
    }
  }
  assert.equal(
    await rawRequest(port, `GET /v1/models/%E0%A4%A HTTP/1.1\r\nauthorization: Bearer ${API_KEY}`),
    400,
  )
  await assertServing()
})

test('malformed escapes answer 400/404 on the management API, never 500', async () => {
  const port = fabric.server.ports.api
  for (const path of [
    ...MALFORMED_PATHS,
    '/api/v1/workers/%',
    '/api/v1/keys/%E0%A4%A',
    '/api/v1/requests?limit=%',
  ]) {
    const status = await rawRequest(port, `GET ${path} HTTP/1.1\r\nauthorization: Bearer ${API_KEY}`)
    assert.ok(status === 400 || status === 404, `GET ${path} answered ${status}`)
  }
  assert.equal(
    await rawRequest(port, `GET /api/v1/workers/%E0%A4%A HTTP/1.1\r\nauthorization: Bearer ${API_KEY}`),
    400,
  )
  await assertServing()
})

test('inference routes forward the path only, not the query', async () => {
  const res = await fetch(`${fabric.baseUrl}/v1/chat/completions?secret=1&x=%41`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'q' }] }),
  })
  assert.equal(res.status, 200)
  assert.equal(enginePaths.at(-1), '/v1/chat/completions')
  assert.ok(
    enginePaths.every((p) => !p.includes('?')),
    JSON.stringify(enginePaths),
  )
})
