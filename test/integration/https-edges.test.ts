import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { connect as netConnect } from 'node:net'
import { after, before, test } from 'node:test'
import { Agent, fetch as undiciFetch } from 'undici'
import { createSelfSignedCertificate, SELF_SIGNED_VALIDITY_DAYS } from '../../src/tls/index.js'
import { API_KEY, startFabric, type TestFabric, testCertificate } from '../helpers/fabric.js'

let fabric: TestFabric
let agent: Agent

before(async () => {
  const cert = await testCertificate()
  fabric = await startFabric({ publicTls: { cert: cert.cert, key: cert.key }, edge: { tlsHandshakeMs: 300 } })
  agent = new Agent({ connect: { ca: cert.cert } })
})
after(async () => {
  await agent.close()
  await fabric.close()
})

test('HTTPS answers carry HSTS, errors included', async () => {
  const url = `https://localhost:${fabric.server.ports.public}`
  const ok = await undiciFetch(`${url}/v1/models`, {
    headers: { authorization: `Bearer ${API_KEY}` },
    dispatcher: agent,
  })
  assert.equal(ok.status, 200)
  assert.match(ok.headers.get('strict-transport-security') ?? '', /max-age=\d{7,}/)
  const refused = await undiciFetch(`${url}/v1/models`, { dispatcher: agent })
  assert.equal(refused.status, 401)
  assert.ok(refused.headers.get('strict-transport-security'))
})

test('a silent connection to the HTTPS port is cut at the handshake deadline', async () => {
  const s = netConnect(fabric.server.ports.public, '127.0.0.1')
  s.on('error', () => {})
  s.resume()
  await once(s, 'connect')
  const t0 = Date.now()
  await new Promise((resolve) => s.once('close', resolve))
  const ms = Date.now() - t0
  assert.ok(ms >= 250 && ms < 5_000, `closed after ${ms} ms`)
})

test('self-signed certificates are valid for at most 397 days', async () => {
  const pair = await createSelfSignedCertificate()
  const x = new X509Certificate(pair.cert)
  const days = (Date.parse(x.validTo) - Date.parse(x.validFrom)) / 86_400_000
  assert.ok(days <= 397, `valid for ${days} days`)
  assert.equal(SELF_SIGNED_VALIDITY_DAYS, 397)
})
