import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { after, before, test } from 'node:test'
import type { TLSSocket } from 'node:tls'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { API_KEY, startFabric, type TestFabric, testCertificate } from '../helpers/fabric.js'

let fabric: TestFabric
let empty: TestFabric

before(async () => {
  const cert = await testCertificate()
  fabric = await startFabric({ maxBodyBytes: 4096, publicTls: undefined })
  await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'w1')
  empty = await startFabric({ publicTls: { cert: cert.cert, key: cert.key } })
})
after(async () => {
  await fabric.close()
  await empty.close()
})

async function call(
  path: string,
  init: { method?: string; body?: string; headers?: Record<string, string> } = {},
) {
  const res = await fetch(`${fabric.baseUrl}${path}`, {
    method: init.method ?? 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json', ...init.headers },
    ...(init.body === undefined ? {} : { body: init.body }),
  })
  return {
    status: res.status,
    body: (await res.json()) as { error: { message: string; type: string; code: string } },
  }
}

test('401 for a missing or wrong key, in OpenAI shape', async () => {
  const missing = await fetch(`${fabric.baseUrl}/v1/models`)
  assert.equal(missing.status, 401)
  assert.equal(((await missing.json()) as { error: { code: string } }).error.code, 'invalid_api_key')
  const wrong = await call('/v1/chat/completions', { body: '{}', headers: { authorization: 'Bearer nope' } })
  assert.equal(wrong.status, 401)
  assert.equal(wrong.body.error.type, 'authentication_error')
})

test('x-api-key is accepted as well as Authorization: Bearer', async () => {
  const res = await fetch(`${fabric.baseUrl}/v1/models`, { headers: { 'x-api-key': API_KEY } })
  assert.equal(res.status, 200)
})

test('400 for malformed JSON and for a missing model', async () => {
  const bad = await call('/v1/chat/completions', { body: '{"model": "echo",' })
  assert.equal(bad.status, 400)
  assert.match(bad.body.error.message, /JSON/)
  const noModel = await call('/v1/chat/completions', { body: '{"messages": []}' })
  assert.equal(noModel.status, 400)
  assert.match(noModel.body.error.message, /model/)
})

test('404 for an unknown model', async () => {
  const res = await call('/v1/chat/completions', { body: '{"model":"gpt-unknown","messages":[]}' })
  assert.equal(res.status, 404)
  assert.equal(res.body.error.code, 'model_not_found')
})

test('413 for a body over the limit, declared or streamed', async () => {
  const big = JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'x'.repeat(10_000) }] })
  const res = await call('/v1/chat/completions', { body: big })
  assert.equal(res.status, 413)
  // The connection is closed after a 413, and the next request still works.
  const ok = await call('/v1/chat/completions', { body: '{"model":"echo","messages":[]}' })
  assert.equal(ok.status, 200)
  // Chunked, with no content-length: the limit holds while reading.
  const status = await new Promise<number>((resolve, reject) => {
    const req = httpRequest(
      `${fabric.baseUrl}/v1/chat/completions`,
      { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'transfer-encoding': 'chunked' } },
      (r) => {
        r.resume()
        resolve(r.statusCode ?? 0)
      },
    )
    req.on('error', reject)
    for (let i = 0; i < 10; i++) req.write('x'.repeat(1000))
    req.end()
  })
  assert.equal(status, 413)
})

test('503 when no worker is connected', async () => {
  const res = await new Promise<{ status: number; body: string; protocol: string }>((resolve, reject) => {
    const req = httpsRequest(
      `https://127.0.0.1:${empty.server.ports.public}/v1/chat/completions`,
      {
        method: 'POST',
        ca: empty.cert.cert,
        minVersion: 'TLSv1.3',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      },
      (r) => {
        const protocol = (r.socket as TLSSocket).getProtocol() ?? ''
        let body = ''
        r.on('data', (c: Buffer) => {
          body += c
        })
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body, protocol }))
      },
    )
    req.on('error', reject)
    req.end('{"model":"echo","messages":[]}')
  })
  assert.equal(res.status, 503)
  assert.equal(res.protocol, 'TLSv1.3', 'the public port serves HTTPS over TLS 1.3 when given a certificate')
  assert.match(res.body, /no worker/)
})

test('405 for the wrong method, 404 for an unknown route', async () => {
  const get = await call('/v1/chat/completions', { method: 'GET' })
  assert.equal(get.status, 405)
  const unknown = await call('/v1/nothing-here', { method: 'GET' })
  assert.equal(unknown.status, 404)
})

test('GET / reports status; /v1/models/{id} retrieves one model', async () => {
  const status = await fetch(`${fabric.baseUrl}/`, { headers: { authorization: `Bearer ${API_KEY}` } })
  assert.equal(((await status.json()) as { status: string }).status, 'ok')
  const one = await fetch(`${fabric.baseUrl}/v1/models/echo`, {
    headers: { authorization: `Bearer ${API_KEY}` },
  })
  assert.equal(((await one.json()) as { id: string }).id, 'echo')
})
