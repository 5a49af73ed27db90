/**
 * The management API's OpenAPI 3.1 document: it validates (swagger-parser), and a walk over it
 * calls every documented operation with a valid request — the answer has a documented status
 * and matches that status's documented schema (Ajv, JSON Schema 2020-12) — and, for every
 * operation with a required query field or body field, without it: 400 naming the field.
 * An operation without an entry below fails the walk, so a new route cannot go untested.
 */
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import SwaggerParser from '@apidevtools/swagger-parser'
import { Ajv2020 } from 'ajv/dist/2020.js'
import type { WorkerAgent } from '../../src/worker/agent.js'
import { waitFor } from '../helpers/fabric.js'
import { ADMIN_KEY, admin, echoWorker, startWiredServer, type WiredServer } from '../helpers/servers.js'

const WORKER = 'openapi-w1'
const CLIENT = 'c0ffee00000000000000000000000001'

let server: WiredServer
let worker: WorkerAgent
let doc: Record<string, unknown>

before(async () => {
  server = await startWiredServer({ heartbeatIntervalMs: 200 })
  worker = echoWorker(server, WORKER)
  await worker.start()
  await waitFor(() => server.server.registry.size === 1, 5_000, 'the worker')
  const res = await fetch(`${server.apiUrl}/openapi.json`)
  assert.equal(res.status, 200)
  doc = (await res.json()) as Record<string, unknown>
})

after(async () => {
  await worker?.stop()
  await server?.close()
})

interface Call {
  path: string
  query?: Record<string, string>
  body?: Record<string, unknown>
}

const newKey = async () =>
  (await admin(server, 'POST', '/api/v1/keys', { name: 'walk' })).body['id'] as string

/** A valid request for every documented operation. */
const VALID: Record<string, () => Promise<Call>> = {
  'get /health': async () => ({ path: '/health' }),
  'get /api/v1/health': async () => ({ path: '/api/v1/health' }),
  'get /api/v1/me': async () => ({ path: '/api/v1/me' }),
  'get /api/v1/workers': async () => ({ path: '/api/v1/workers' }),
  'get /api/v1/workers/{id}': async () => ({ path: `/api/v1/workers/${WORKER}` }),
  'get /api/v1/workers/{id}/stats': async () => ({
    path: `/api/v1/workers/${WORKER}/stats`,
    query: { heartbeats: '5' },
  }),
  'get /api/v1/models': async () => ({ path: '/api/v1/models' }),
  'get /api/v1/stats': async () => ({ path: '/api/v1/stats' }),
  'get /api/v1/usage': async () => ({
    path: '/api/v1/usage',
    query: { from: '2026-01-01', to: '2099-12-31', groupBy: 'model', limit: '10' },
  }),
  'get /api/v1/keys': async () => ({ path: '/api/v1/keys' }),
  'post /api/v1/keys': async () => ({
    path: '/api/v1/keys',
    body: { name: 'walked', rpmLimit: 10, scope: 'read' },
  }),
  'get /api/v1/keys/{id}': async () => ({ path: `/api/v1/keys/${await newKey()}` }),
  'delete /api/v1/keys/{id}': async () => ({ path: `/api/v1/keys/${await newKey()}` }),
  'patch /api/v1/keys/{id}': async () => ({
    path: `/api/v1/keys/${await newKey()}`,
    body: { rpmLimit: 20, models: ['echo'], expiresAt: null },
  }),
  'post /api/v1/keys/{id}/revoke': async () => ({ path: `/api/v1/keys/${await newKey()}/revoke` }),
  'post /api/v1/keys/{id}/rotate': async () => ({ path: `/api/v1/keys/${await newKey()}/rotate` }),
  'get /api/v1/requests': async () => ({
    path: '/api/v1/requests',
    query: { limit: '5', since: '2026-01-01T00:00:00Z' },
  }),
  'get /api/v1/users': async () => ({ path: '/api/v1/users' }),
  'post /api/v1/users': async () => ({ path: '/api/v1/users', body: { name: 'walker' } }),
  'post /api/user/insert_client': async () => ({
    path: '/api/user/insert_client',
    body: {
      user_id: 'walker',
      client_id: CLIENT,
      client_status: 'offline',
      os_type: 'linux',
      name: 'walked',
    },
  }),
  'get /api/user/client_list': async () => ({ path: '/api/user/client_list', query: { user_id: 'walker' } }),
  'get /api/user/client_status_list': async () => ({
    path: '/api/user/client_status_list',
    query: { user_id: 'walker' },
  }),
  'get /api/user/client_device_detail': async () => ({
    path: '/api/user/client_device_detail',
    query: { user_id: 'walker', client_id: CLIENT },
  }),
  'post /api/user/edit_client_info': async () => ({
    path: '/api/user/edit_client_info',
    body: { user_id: 'walker', client_id: CLIENT, client_status: 'maintenance' },
  }),
  'get /api/user/client_stat': async () => ({ path: '/api/user/client_stat', query: { user_id: 'walker' } }),
  'get /api/user/client_monitor': async () => ({
    path: '/api/user/client_monitor',
    query: { user_id: 'walker' },
  }),
  'get /api/user/client_health': async () => ({
    path: '/api/user/client_health',
    query: { user_id: 'walker', start_date: '2026-01-01', end_date: '2099-12-31' },
  }),
  'post /api/models/insert': async () => ({
    path: '/api/models/insert',
    body: { name: 'walk-model', version: '1', version_code: 1, engine_type: 0, min_gpu_memory_gb: 16 },
  }),
  'get /api/models/get': async () => ({ path: '/api/models/get', query: { is_active: 'true' } }),
}

async function send(method: string, call: Call) {
  const query = new URLSearchParams(call.query ?? {}).toString()
  const res = await fetch(`${server.apiUrl}${call.path}${query === '' ? '' : `?${query}`}`, {
    method: method.toUpperCase(),
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    ...(call.body === undefined ? {} : { body: JSON.stringify(call.body) }),
  })
  return { status: res.status, body: (await res.json()) as unknown }
}

type Operation = {
  parameters?: { name: string; in: string; required?: boolean }[]
  requestBody?: { content: Record<string, { schema: Record<string, unknown> }> }
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>
}

/** The operations of the document, in its order, insert_client before the routes that read the client. */
function operations(): [string, string, Operation][] {
  const out: [string, string, Operation][] = []
  for (const [path, item] of Object.entries(doc['paths'] as Record<string, Record<string, Operation>>))
    for (const [method, op] of Object.entries(item)) out.push([method, path, op])
  const first = (p: string) => (p === '/api/v1/users' || p === '/api/user/insert_client' ? 0 : 1)
  return out.sort(
    (a, b) => first(a[1]) - first(b[1]) || (a[0] === 'post' ? -1 : 0) - (b[0] === 'post' ? -1 : 0),
  )
}

/** The schema a body in the document refers to (one `$ref` followed). */
function resolve(schema: Record<string, unknown>): Record<string, unknown> {
  const ref = schema['$ref']
  if (typeof ref !== 'string') return schema
  const name = ref.split('/').pop()!
  return (
    (doc['components'] as Record<string, Record<string, unknown>>)['schemas'] as Record<string, unknown>
  )[name] as Record<string, unknown>
}

test('the OpenAPI 3.1 document validates', async () => {
  assert.equal(doc['openapi'], '3.1.0')
  await SwaggerParser.validate(structuredClone(doc) as never)
  const page = await fetch(`${server.apiUrl}/docs`)
  assert.equal(page.status, 200)
  const html = await page.text()
  assert.match(html, /<title>GPUFabric management API<\/title>/)
  for (const path of ['/api/v1/workers', '/api/user/client_stat', '/api/models/insert'])
    assert.ok(html.includes(path), path)
})

test('every documented operation answers a valid request as documented', async () => {
  const ajv = new Ajv2020({ strict: false, allErrors: false })
  ajv.addFormat('uri', true)
  const components = doc['components']
  const seen: string[] = []
  for (const [method, path, op] of operations()) {
    const name = `${method} ${path}`
    const valid = VALID[name]
    assert.ok(valid !== undefined, `no request for documented operation ${name}`)
    seen.push(name)
    const res = await send(method, await valid())
    const documented = op.responses[String(res.status)]
    assert.ok(res.status < 300, `${name}: ${res.status} ${JSON.stringify(res.body)}`)
    assert.ok(documented !== undefined, `${name}: status ${res.status} is not documented`)
    const schema = documented.content?.['application/json']?.schema
    assert.ok(schema !== undefined, `${name}: no schema for ${res.status}`)
    const check = ajv.compile({ ...(schema as object), components })
    assert.ok(
      check(res.body),
      `${name}: ${ajv.errorsText(check.errors)} in ${JSON.stringify(res.body).slice(0, 400)}`,
    )
  }
  assert.deepEqual(seen.sort(), Object.keys(VALID).sort(), 'an entry above has no documented operation')
})

test('every operation answers 400 naming the field when a required field is missing', async () => {
  let checked = 0
  for (const [method, path, op] of operations()) {
    const name = `${method} ${path}`
    const call = await VALID[name]!()
    const requiredQuery = (op.parameters ?? [])
      .filter((p) => p.in === 'query' && p.required === true)
      .map((p) => p.name)
    const bodySchema = op.requestBody?.content['application/json']?.schema
    const requiredBody =
      bodySchema === undefined ? [] : ((resolve(bodySchema)['required'] as string[] | undefined) ?? [])
    for (const field of requiredQuery) {
      const { [field]: _, ...query } = call.query ?? {}
      const res = await send(method, { ...call, query })
      assert.equal(res.status, 400, `${name} without ${field}: ${JSON.stringify(res.body)}`)
      assert.ok(
        JSON.stringify(res.body).includes(field),
        `${name}: the message names ${field}: ${JSON.stringify(res.body)}`,
      )
      checked++
    }
    for (const field of requiredBody) {
      const { [field]: _, ...body } = call.body ?? {}
      const res = await send(method, { ...call, body })
      assert.equal(res.status, 400, `${name} without ${field}: ${JSON.stringify(res.body)}`)
      assert.ok(
        JSON.stringify(res.body).includes(field),
        `${name}: the message names ${field}: ${JSON.stringify(res.body)}`,
      )
      checked++
    }
    if (op.requestBody !== undefined) {
      const res = await send(method, { ...call, body: undefined })
      assert.equal(res.status, 400, `${name} without a body`)
    }
  }
  assert.ok(checked >= 15, `only ${checked} required fields checked`)
})

test("a malformed body and a wrong type answer 400 in the route family's shape", async () => {
  const raw = await fetch(`${server.apiUrl}/api/v1/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: '{"name":',
  })
  assert.equal(raw.status, 400)
  assert.ok(((await raw.json()) as { error?: unknown }).error !== undefined)
  const seed = await send('post', {
    path: '/api/models/insert',
    body: { name: 'x', version: '1', version_code: 'one', engine_type: 0 },
  })
  assert.equal(seed.status, 400)
  assert.equal((seed.body as { success: boolean }).success, false)
  assert.match((seed.body as { message: string }).message, /version_code/)
})

test('a deeply nested body answers 400 on every route that takes a body, never 500', async () => {
  const deep = (n: number) => `{"name":${'['.repeat(n)}${']'.repeat(n)}}`
  for (const [method, path, op] of operations()) {
    if (op.requestBody === undefined) continue
    const call = await VALID[`${method} ${path}`]!()
    for (const n of [40, 5_000, 20_000]) {
      const res = await fetch(`${server.apiUrl}${call.path}`, {
        method: method.toUpperCase(),
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: deep(n),
      })
      const text = await res.text()
      assert.ok(
        res.status === 400 || res.status === 413,
        `${method} ${path} nested ${n}: ${res.status} ${text.slice(0, 200)}`,
      )
    }
  }
  // Brackets inside strings are not nesting.
  const res = await send('post', {
    path: '/api/v1/users',
    body: { name: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[' },
  })
  assert.equal(res.status, 201)
})
