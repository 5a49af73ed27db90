/**
 * The management API against a wired server fed by real workers (a fake `nvidia-smi` on each
 * reports GPUs) and, for workers not connected, heartbeats written to the same database:
 * - the original's routes answer the fixture `test/fixtures/seed-api/cases.json` (envelope,
 *   snake_case field names and types), with the simulated GPU values, and `client_stat` counts
 *   online workers by the 2-minute rule;
 * - user-scoped keys see only their own user's workers, keys and usage; the admin sees all;
 * - CORS is off by default.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { SqliteStore } from '../../src/store/index.js'
import type { HeartbeatEvent } from '../../src/telemetry/index.js'
import type { WorkerAgent } from '../../src/worker/agent.js'
import { parseNvidiaSmi } from '../../src/worker/gpu.js'
import { waitFor } from '../helpers/fabric.js'
import { ADMIN_KEY, admin, echoWorker, startWiredServer, type WiredServer } from '../helpers/servers.js'

const fixture = (name: string) => fileURLToPath(new URL(`../../../test/fixtures/${name}`, import.meta.url))
const CASES = JSON.parse(readFileSync(fixture('seed-api/cases.json'), 'utf8')) as {
  cases: {
    name: string
    method: string
    path: string
    query?: Record<string, string>
    body?: Record<string, unknown>
    status: number
    data: unknown
  }[]
}

const ALICE_WORKER = 'a11ce000000000000000000000000001'
const BOB_WORKER = 'b0b00000000000000000000000000001'
/** Alice's workers known only from heartbeats in the database: 60 s and 3 min old. */
const RECENT = 'a11ce000000000000000000000000002'
const STALE = 'a11ce000000000000000000000000003'

let dir: string
let server: WiredServer
let store: SqliteStore
const workers: WorkerAgent[] = []
let aliceId: string
const gpu1 = parseNvidiaSmi(readFileSync(fixture('gpu/nvidia-smi-1gpu.csv'), 'utf8'))

function fakeTool(name: string, answer: string): string {
  const tool = join(dir, name)
  writeFileSync(join(dir, `${name}.out`), readFileSync(fixture(answer)))
  writeFileSync(tool, `#!/bin/sh\ncat '${join(dir, `${name}.out`)}'\n`)
  chmodSync(tool, 0o755)
  return tool
}

async function call(key: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${server.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> }
}

function heartbeat(clientId: string, ageMs: number, n: number): HeartbeatEvent {
  return {
    v: 1,
    type: 'heartbeat',
    id: `test.${clientId}.${n}`,
    clientId,
    userId: aliceId,
    at: Date.now() - ageMs,
    inflight: 0,
    models: 1,
    linkBytesIn: 0,
    linkBytesOut: 0,
    netInBytes: 100,
    netOutBytes: 200,
    metrics: { cpuPercent: 10, memPercent: 20, diskPercent: 30, totalTflops: 50 },
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'gpuf-mgmt-'))
  server = await startWiredServer({ heartbeatIntervalMs: 200 })
  const tokens: Record<string, string> = {}
  for (const user of ['alice', 'bob']) {
    const created = await admin(server, 'POST', '/api/v1/keys', { kind: 'worker', user })
    assert.equal(created.status, 201)
    tokens[user] = created.body['key'] as string
    if (user === 'alice') aliceId = created.body['userId'] as string
  }
  const one = fakeTool('nvidia-smi-1', 'gpu/nvidia-smi-1gpu.csv')
  const eight = fakeTool('nvidia-smi-8', 'gpu/nvidia-smi-8gpu.csv')
  workers.push(
    echoWorker(server, ALICE_WORKER, {
      token: tokens['alice']!,
      gpuTools: { nvidiaSmi: one, rocmSmi: '/nonexistent' },
      dataDir: dir,
    }),
    echoWorker(server, BOB_WORKER, {
      token: tokens['bob']!,
      gpuTools: { nvidiaSmi: eight, rocmSmi: '/nonexistent' },
      dataDir: dir,
    }),
  )
  await Promise.all(workers.map((w) => w.start()))
  // Two more of Alice's workers, registered and known only from their heartbeats.
  for (const clientId of [RECENT, STALE]) {
    const r = await admin(server, 'POST', '/api/user/insert_client', {
      user_id: 'alice',
      client_id: clientId,
      client_status: 'offline',
      name: clientId === RECENT ? 'rig-recent' : 'rig-stale',
    })
    assert.equal(r.status, 200, JSON.stringify(r.body))
  }
  store = new SqliteStore({ path: join(server.dataDir, 'gpufabric.db') })
  await store.applyTelemetry({
    heartbeats: [heartbeat(RECENT, 60_000, 1), heartbeat(STALE, 180_000, 1)],
    usage: [],
  })
  // Both connected workers' GPUs have reached the telemetry tables.
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline) {
    const a = await store.listDeviceInfo(ALICE_WORKER)
    const b = await store.listDeviceInfo(BOB_WORKER)
    if (a.length === 1 && b.length === 8) break
    await new Promise((r) => setTimeout(r, 100))
  }
})

after(async () => {
  await Promise.all(workers.map((w) => w.stop()))
  await store?.close()
  await server?.close()
  rmSync(dir, { recursive: true, force: true })
})

/** Checks `value` against a fixture shape; returns the first mismatch, or undefined. */
function mismatch(shape: unknown, value: unknown, at = 'data'): string | undefined {
  if (typeof shape === 'string') {
    const types = shape.split('|')
    const actual = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value
    return types.includes(actual) ? undefined : `${at}: ${actual}, expected ${shape}`
  }
  if (Array.isArray(shape)) {
    if (!Array.isArray(value)) return `${at}: expected an array`
    if (shape.length === 0) return value.length === 0 ? undefined : `${at}: expected an empty array`
    for (const [i, v] of value.entries()) {
      const m = mismatch(shape[0], v, `${at}[${i}]`)
      if (m !== undefined) return m
    }
    return undefined
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return `${at}: expected an object`
  const want = Object.keys(shape as object).sort()
  const got = Object.keys(value).sort()
  if (JSON.stringify(want) !== JSON.stringify(got))
    return `${at}: fields ${got.join(',')}, expected ${want.join(',')}`
  for (const k of want) {
    const m = mismatch(
      (shape as Record<string, unknown>)[k],
      (value as Record<string, unknown>)[k],
      `${at}.${k}`,
    )
    if (m !== undefined) return m
  }
  return undefined
}

const fill = (s: string) =>
  s
    .replace('$ALICE_WORKER', ALICE_WORKER)
    .replace('$ALICE_ID', aliceId)
    .replace('$TODAY', new Date().toISOString().slice(0, 10))

test("the original's routes answer the fixture: envelope, field names and types", async () => {
  for (const c of CASES.cases) {
    const query = new URLSearchParams(
      Object.entries(c.query ?? {}).map(([k, v]) => [k, fill(v)] as [string, string]),
    ).toString()
    const body = c.body === undefined ? undefined : JSON.parse(fill(JSON.stringify(c.body)))
    const res = await call(ADMIN_KEY, c.method, `${c.path}${query === '' ? '' : `?${query}`}`, body)
    assert.equal(res.status, c.status, `${c.name}: ${JSON.stringify(res.body)}`)
    assert.deepEqual(Object.keys(res.body).sort(), ['data', 'message', 'success', 'timestamp'], c.name)
    assert.equal(res.body['success'], c.status === 200, c.name)
    assert.equal(typeof res.body['message'], 'string')
    assert.ok(!Number.isNaN(Date.parse(res.body['timestamp'] as string)), c.name)
    const m = mismatch(c.data, res.body['data'])
    assert.equal(m, undefined, `${c.name}: ${m}`)
    if (c.status === 200 && Array.isArray(c.data) && c.data.length > 0)
      assert.ok((res.body['data'] as unknown[]).length > 0, `${c.name}: empty`)
  }
})

test('client_device_detail shows the GPU the worker reported', async () => {
  const res = await call(
    ADMIN_KEY,
    'GET',
    `/api/user/client_device_detail?user_id=alice&client_id=${ALICE_WORKER}`,
  )
  const data = res.body['data'] as {
    system_info: Record<string, number>
    device_info: Record<string, unknown>[]
  }
  const g = gpu1[0]!
  assert.equal(data.device_info.length, 1)
  assert.deepEqual(data.device_info[0], {
    device_index: 0,
    name: g.name,
    temp: g.temperatureC,
    usage: g.utilizationPercent,
    mem_usage: Math.round((g.memoryUsedBytes! / g.memoryTotalBytes!) * 10_000) / 100,
    power_usage: g.powerDrawW,
  })
  assert.equal(data.system_info['device_memsize'], Math.round(g.memoryTotalBytes! / 1_048_576))
  const bob = await call(
    ADMIN_KEY,
    'GET',
    `/api/user/client_device_detail?user_id=bob&client_id=${BOB_WORKER}`,
  )
  assert.equal((bob.body['data'] as { device_info: unknown[] }).device_info.length, 8)
  // A worker of another user is not found under this one.
  const wrong = await call(
    ADMIN_KEY,
    'GET',
    `/api/user/client_device_detail?user_id=alice&client_id=${BOB_WORKER}`,
  )
  assert.equal(wrong.status, 404)
})

test('client_stat counts online workers by the 2-minute rule, maintenance and TFLOPS', async () => {
  const edit = await call(ADMIN_KEY, 'POST', '/api/user/edit_client_info', {
    user_id: 'alice',
    client_id: STALE,
    client_status: 'maintenance',
  })
  assert.equal(edit.status, 200)
  const res = await call(ADMIN_KEY, 'GET', '/api/user/client_stat?user_id=alice')
  const data = res.body['data'] as Record<string, number>
  const list = await call(ADMIN_KEY, 'GET', '/api/user/client_list?user_id=alice')
  const devices = (list.body['data'] as { devices: { client_id: string }[] }).devices
  // The connected worker and the one heard from 60 s ago; not the one 3 minutes silent, nor
  // the client insert_client registered in the fixture (never heard from).
  assert.equal(data['systems_online_number'], 2)
  assert.equal(data['systems_total_number'], devices.length)
  assert.ok(devices.length >= 3)
  assert.equal(data['systems_maintenance_number'], 1)
  assert.ok(data['total_tflops']! >= 50 + gpu1[0]!.tflops - 0.01)
  assert.ok(data['uptime_rate']! >= 0 && data['uptime_rate']! <= 100)
  const stale = devices.find((d) => d.client_id === STALE) as Record<string, unknown> | undefined
  assert.equal(stale?.['client_status'], 'maintenance')
  assert.equal(stale?.['health'], 'maintenance')
})

test('a user key with scope read sees only its own workers, keys and usage', async () => {
  const aliceRead = await admin(server, 'POST', '/api/v1/keys', { user: 'alice', scope: 'read' })
  assert.equal(aliceRead.status, 201)
  assert.equal(aliceRead.body['scope'], 'read')
  const key = aliceRead.body['key'] as string
  // One metered request each for Alice and Bob, so that usage has rows of both users.
  for (const user of ['alice', 'bob']) {
    const inference = await admin(server, 'POST', '/api/v1/keys', { user, name: `${user} key` })
    const res = await fetch(`${server.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${inference.body['key']}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'metered' }] }),
    })
    assert.equal(res.status, 200)
    await res.arrayBuffer()
  }

  const me = await call(key, 'GET', '/api/v1/me')
  assert.deepEqual(me.body, {
    role: 'user',
    scope: 'read',
    user: { id: aliceId, name: 'alice' },
    keyId: aliceRead.body['id'],
  })

  await waitFor(() => server.server.registry.size === 2, 5_000, 'both workers')
  const listed = (await call(key, 'GET', '/api/v1/workers')).body['workers'] as { clientId: string }[]
  assert.deepEqual(
    listed.map((w) => w.clientId),
    [ALICE_WORKER],
  )
  const all = (await call(ADMIN_KEY, 'GET', '/api/v1/workers')).body['workers'] as unknown[]
  assert.equal(all.length, 2)
  assert.equal((await call(key, 'GET', `/api/v1/workers/${BOB_WORKER}`)).status, 404)
  assert.equal((await call(key, 'GET', `/api/v1/workers/${BOB_WORKER}/stats`)).status, 404)
  assert.equal((await call(key, 'GET', `/api/v1/workers/${ALICE_WORKER}/stats`)).status, 200)

  const keys = (await call(key, 'GET', '/api/v1/keys')).body['keys'] as { userId: string }[]
  assert.ok(keys.length >= 2)
  assert.ok(keys.every((k) => k.userId === aliceId))
  // The admin sees both users' usage; Alice's key only hers, whatever user it asks for.
  let allUsage: { userId: string }[] = []
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    allUsage = (await call(ADMIN_KEY, 'GET', '/api/v1/usage')).body['usage'] as { userId: string }[]
    if (allUsage.some((u) => u.userId === aliceId) && allUsage.some((u) => u.userId !== aliceId)) break
    await new Promise((r) => setTimeout(r, 100))
  }
  const bobId = allUsage.find((u) => u.userId !== aliceId)?.userId
  assert.ok(bobId !== undefined, JSON.stringify(allUsage))
  const usage = (await call(key, 'GET', `/api/v1/usage?userId=${bobId}`)).body['usage'] as {
    userId: string
  }[]
  assert.ok(usage.length > 0)
  assert.ok(usage.every((u) => u.userId === aliceId))
  const users = (await call(key, 'GET', '/api/v1/users')).body['users'] as { id: string }[]
  assert.deepEqual(
    users.map((u) => u.id),
    [aliceId],
  )

  // Reads only: no keys, no users, no statistics of the server, no /metrics, no other user.
  assert.equal((await call(key, 'POST', '/api/v1/keys', { name: 'x' })).status, 403)
  assert.equal((await call(key, 'POST', '/api/v1/users', { name: 'mallory' })).status, 403)
  assert.equal((await call(key, 'GET', '/api/v1/stats')).status, 403)
  const metrics = await fetch(`${server.apiUrl}/metrics`, { headers: { authorization: `Bearer ${key}` } })
  assert.equal(metrics.status, 403)
  await metrics.arrayBuffer()
  const other = await call(key, 'GET', '/api/user/client_list?user_id=bob')
  assert.equal(other.status, 403)
  assert.equal(other.body['success'], false)
  assert.equal((await call(key, 'GET', '/api/user/client_list?user_id=alice')).status, 200)
  assert.equal(
    (
      await call(key, 'POST', '/api/models/insert', {
        name: 'm',
        version: '1',
        version_code: 1,
        engine_type: 1,
      })
    ).status,
    403,
  )
})

test('a user key with scope manage manages its own keys only; an inference key is refused', async () => {
  const manager = await admin(server, 'POST', '/api/v1/keys', { user: 'alice', scope: 'manage' })
  const key = manager.body['key'] as string
  const own = await call(key, 'POST', '/api/v1/keys', { name: 'made by alice' })
  assert.equal(own.status, 201, JSON.stringify(own.body))
  assert.equal(own.body['userId'], aliceId)
  assert.equal((await call(key, 'POST', '/api/v1/keys', { user: 'bob' })).status, 403)
  const bobKey = await admin(server, 'POST', '/api/v1/keys', { user: 'bob' })
  assert.equal((await call(key, 'DELETE', `/api/v1/keys/${bobKey.body['id']}`)).status, 404)
  assert.equal((await call(key, 'POST', `/api/v1/keys/${bobKey.body['id']}/rotate`)).status, 404)
  const patched = await call(key, 'PATCH', `/api/v1/keys/${own.body['id']}`, { rpmLimit: 9, name: 'limited' })
  assert.equal(patched.status, 200)
  assert.equal(patched.body['rpmLimit'], 9)
  assert.equal((await call(key, 'PATCH', `/api/v1/keys/${bobKey.body['id']}`, { rpmLimit: 9 })).status, 404)
  const rotated = await call(key, 'POST', `/api/v1/keys/${own.body['id']}/rotate`)
  assert.equal(rotated.status, 201)
  assert.equal((await call(key, 'DELETE', `/api/v1/keys/${rotated.body['id']}`)).status, 200)

  const inference = await admin(server, 'POST', '/api/v1/keys', { user: 'alice' })
  const refused = await call(inference.body['key'] as string, 'GET', '/api/v1/workers')
  assert.equal(refused.status, 403)
  assert.match(JSON.stringify(refused.body), /scope/)
  assert.equal((await call('gpuf_not-a-key', 'GET', '/api/v1/workers')).status, 401)
})

test('CORS is off by default: no allow-origin header', async () => {
  const res = await fetch(`${server.apiUrl}/api/v1/workers`, {
    headers: { authorization: `Bearer ${ADMIN_KEY}`, origin: 'https://evil.example' },
  })
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('access-control-allow-origin'), null)
  await res.arrayBuffer()
})

test('CORS on: only the allow-list gets the header, preflight included', async () => {
  const cors = await startWiredServer({ corsOrigin: ['https://ops.example.com'] })
  try {
    const pre = await fetch(`${cors.apiUrl}/api/v1/workers`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://ops.example.com',
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'authorization',
      },
    })
    assert.ok(pre.status === 204 || pre.status === 200, String(pre.status))
    assert.equal(pre.headers.get('access-control-allow-origin'), 'https://ops.example.com')
    await pre.arrayBuffer()
    const denied = await fetch(`${cors.apiUrl}/api/v1/workers`, {
      headers: { authorization: `Bearer ${ADMIN_KEY}`, origin: 'https://evil.example' },
    })
    assert.equal(denied.headers.get('access-control-allow-origin'), null)
    await denied.arrayBuffer()
  } finally {
    await cors.close()
  }
})
