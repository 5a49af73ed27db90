/**
 * One contract for every `Store` adapter: SQLite (a file in a temp dir) and PostgreSQL (a
 * real server from `startPostgres()`, a fresh schema per test). Plus what only one
 * adapter can show: PostgreSQL going down and coming back under a live store.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, describe, test } from 'node:test'
import Database from 'better-sqlite3'
import { Client } from 'pg'
import { ErrorCodes, isFabricError } from '../../src/errors/index.js'
import type { HeartbeatEvent, UsageEvent } from '../../src/protocol/events.js'
import type { GpuMetrics } from '../../src/protocol/index.js'
import {
  createStore,
  LATEST_VERSION,
  MIGRATIONS,
  type NewKey,
  type NewModel,
  PostgresStore,
  type RequestLogRecord,
  SqliteStore,
  type Store,
  type StoreTelemetry,
  WORKER_CLIENT_STATUSES,
  type WorkerRecord,
} from '../../src/store/index.js'
import { type ManagedService, startPostgres, unavailable } from '../helpers/services.js'

/** Both adapters also take `migrate(upTo)`, to build an older schema. */
type TestStore = Store & StoreTelemetry & { migrate(upTo?: number): Promise<number[]> }
type NewRequest = Omit<RequestLogRecord, 'id'>
type OpenStore = (options?: { onQuery?: (sql: string) => void }) => TestStore
/**
 * Makes a fresh, empty database: how to open stores on it (several may share it, like servers),
 * and how to run raw SQL on it (to write the rows of an older schema, which today's code no
 * longer can, or to prove a constraint holds).
 */
type NewDatabase = () => Promise<{ open: OpenStore; exec: (sql: string) => Promise<void> }>

const HOSTILE = [
  "'; DROP TABLE api_keys; --",
  '" OR 1=1 --',
  '\\',
  "Robert'); DROP TABLE users;--",
  '{"a": [1, 2]}',
  '{NULL,"x"}',
  'NULL',
  'a,b',
  '%_*?',
  'ünïcødé ✓ 🚀',
]
const INJECTION = "' OR '1'='1"

function rejectsWith(code: string, retryable?: boolean) {
  return (err: unknown) => {
    assert.ok(isFabricError(err), `expected a FabricError, got ${String(err)}`)
    assert.equal(err.code, code)
    if (retryable !== undefined) assert.equal(err.retryable, retryable)
    return true
  }
}

function keyFor(userId: string, overrides: Partial<NewKey> = {}): NewKey {
  const prefix = overrides.prefix ?? `p${Math.random().toString(36).slice(2, 13)}`
  return {
    prefix,
    hash: `hash-of-${prefix}`,
    kind: 'api',
    userId,
    name: null,
    accessLevel: 'shared',
    workerIds: [],
    models: null,
    rpmLimit: null,
    tpmLimit: null,
    expiresAt: null,
    ...overrides,
  }
}

let nextMessage = 0

function heartbeat(
  clientId: string,
  at: string,
  metrics: HeartbeatEvent['metrics'] = {},
  fields: Partial<HeartbeatEvent> = {},
): HeartbeatEvent {
  return {
    v: 1,
    type: 'heartbeat',
    id: `hb-${nextMessage++}`,
    clientId,
    userId: null,
    at: Date.parse(at),
    inflight: 0,
    models: 1,
    linkBytesIn: 0,
    linkBytesOut: 0,
    netInBytes: 0,
    netOutBytes: 0,
    metrics,
    ...fields,
  }
}

function usageEvent(keyId: string, at: string, fields: Partial<UsageEvent> = {}): UsageEvent {
  return {
    v: 1,
    type: 'usage',
    id: `u-${nextMessage++}`,
    at: Date.parse(at),
    keyId,
    userId: 'usr_1',
    model: 'llama3:8b',
    workerId: 'w1',
    path: '/v1/chat/completions',
    status: 200,
    stream: false,
    promptTokens: 10,
    completionTokens: 5,
    totalTokens: 15,
    ttfbMs: 20,
    durationMs: 100,
    bytesIn: 200,
    bytesOut: 800,
    ...fields,
  }
}

function gpu(index: number, fields: Partial<GpuMetrics> = {}): GpuMetrics {
  return {
    index,
    vendor: 'nvidia',
    name: 'NVIDIA H100 80GB HBM3',
    uuid: `GPU-${index}`,
    utilizationPercent: 50,
    memoryUtilizationPercent: 20,
    memoryUsedBytes: 1024,
    memoryTotalBytes: 4096,
    temperatureC: 40,
    powerDrawW: 300,
    powerLimitW: 700,
    tflops: 989,
    ...fields,
  }
}

function model(name: string, version: string, fields: Partial<NewModel> = {}): NewModel {
  return {
    name,
    version,
    versionCode: 0,
    engineType: 0,
    minMemoryMb: null,
    minGpuMemoryGb: null,
    downloadUrl: null,
    checksum: null,
    expectedSize: null,
    ...fields,
  }
}

/** A timestamp literal of each dialect's schema (epoch ms in SQLite, timestamptz in PostgreSQL). */
function timestampSql(kind: Store['kind'], iso: string): string {
  return kind === 'sqlite' ? String(Date.parse(iso)) : `'${iso}'`
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function request(keyId: string, at: string | number, fields: Partial<NewRequest> = {}): NewRequest {
  return {
    at: new Date(at),
    keyId,
    userId: null,
    model: 'llama3:8b',
    workerId: null,
    path: '/v1/chat/completions',
    status: 200,
    durationMs: 12.5,
    promptTokens: null,
    completionTokens: null,
    totalTokens: null,
    ...fields,
  }
}

/** A read-back row without its store-assigned id. */
function withoutId(row: RequestLogRecord): NewRequest {
  const { id: _id, ...rest } = row
  return rest
}

/** Asserts `rows` are newest first, ties broken by the later-recorded (higher id) row. */
function assertNewestFirst(rows: readonly RequestLogRecord[]): void {
  for (let i = 1; i < rows.length; i++) {
    const [a, b] = [rows[i - 1]!, rows[i]!]
    const ordered = a.at > b.at || (a.at.getTime() === b.at.getTime() && a.id > b.id)
    assert.ok(
      ordered,
      `row ${i - 1} (${a.at.toISOString()}, ${a.id}) before row ${i} (${b.at.toISOString()}, ${b.id})`,
    )
  }
}

/** The suite every adapter passes. */
function storeContract(name: string, newDatabase: NewDatabase): void {
  describe(`Store contract: ${name}`, () => {
    const opened: TestStore[] = []
    let openCurrent: OpenStore
    /** Raw SQL on the database of the last `blank`/`fresh`. */
    let execCurrent: (sql: string) => Promise<void>

    /** A store on a fresh database, not migrated. */
    async function blank(options?: { onQuery?: (sql: string) => void }): Promise<TestStore> {
      ;({ open: openCurrent, exec: execCurrent } = await newDatabase())
      return another(options)
    }
    /** A store on a fresh, migrated database. */
    async function fresh(options?: { onQuery?: (sql: string) => void }): Promise<TestStore> {
      const store = await blank(options)
      await store.migrate()
      return store
    }
    /** Another store on the database of the last `blank`/`fresh` (a second server). */
    function another(options?: { onQuery?: (sql: string) => void }): TestStore {
      const store = openCurrent(options)
      opened.push(store)
      return store
    }

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((store) => store.close()))
    })

    test('migrations apply once, in order, and record the schema version', async () => {
      const store = await blank()
      assert.equal(await store.schemaVersion(), 0)
      assert.deepEqual(
        await store.migrate(),
        MIGRATIONS.map((m) => m.version),
      )
      assert.equal(await store.schemaVersion(), LATEST_VERSION)
      assert.deepEqual(await store.migrate(), [])
      assert.deepEqual(await another().migrate(), [])
      assert.equal(await store.schemaVersion(), LATEST_VERSION)
    })

    test('two stores migrating one database at once apply each version exactly once', async () => {
      const a = await blank()
      const b = another()
      const [fromA, fromB] = await Promise.all([a.migrate(), b.migrate()])
      assert.deepEqual(
        [...fromA, ...fromB].sort((x, y) => x - y),
        MIGRATIONS.map((m) => m.version),
      )
      assert.equal(await b.schemaVersion(), LATEST_VERSION)
    })

    test('schema v2 to v4: a v1 database migrates forward and keeps its data', async () => {
      assert.equal(LATEST_VERSION, 4)
      const store = await blank()
      assert.deepEqual(await store.migrate(1), [1])
      assert.equal(await store.schemaVersion(), 1)
      assert.deepEqual(await store.migrate(1), [])
      const user = await store.createUser('alice')
      // Today's key queries name v4's columns: a v1 key is written as v1 code wrote it.
      const createdAt = '2029-01-02T03:04:05.678Z'
      await execCurrent(`INSERT INTO api_keys (id, prefix, hash, kind, user_id, created_at)
        VALUES ('key_v1', 'v1prefix', 'hash-v1', 'api', '${user.id}', ${timestampSql(store.kind, createdAt)})`)
      await store.claimWorker('w1', user.id)
      await store.setSetting('k', 'v')
      // No request_log before v2: the call fails with a typed error, and the store stays usable.
      await assert.rejects(
        store.recordRequests([request('key_v1', '2030-01-01T00:00:00Z')]),
        rejectsWith(ErrorCodes.INTERNAL, false),
      )
      await assert.rejects(store.listRequests(), rejectsWith(ErrorCodes.INTERNAL, false))

      // Another server (newer code) migrates the live database; the first store carries on.
      assert.deepEqual(await another().migrate(), [2, 3, 4])
      assert.equal(await store.schemaVersion(), 4)
      assert.deepEqual(await store.migrate(), [])
      assert.deepEqual(await store.getKey('key_v1'), {
        id: 'key_v1',
        prefix: 'v1prefix',
        hash: 'hash-v1',
        kind: 'api',
        userId: user.id,
        name: null,
        accessLevel: 'shared',
        scope: 'inference',
        workerIds: [],
        models: null,
        rpmLimit: null,
        tpmLimit: null,
        expiresAt: null,
        revokedAt: null,
        createdAt: new Date(createdAt),
      })
      assert.deepEqual(await store.findKeyByPrefix('v1prefix'), await store.getKey('key_v1'))
      assert.deepEqual(await store.getUser(user.id), user)
      assert.equal((await store.getWorker('w1'))?.userId, user.id)
      assert.equal((await store.getWorker('w1'))?.clientStatus, null)
      assert.equal(await store.getSetting('k'), 'v')
      const row = request('key_v1', '2030-01-01T00:00:00Z', { userId: user.id, workerId: 'w1' })
      await store.recordRequests([row])
      assert.deepEqual((await store.listRequests()).map(withoutId), [row])
      assert.deepEqual(await store.migrate(), [])
      assert.equal(await store.schemaVersion(), 4)
    })

    test('schema v4: a v3 database migrates forward; its keys are inference keys, its workers have no client status', async () => {
      const store = await blank()
      assert.deepEqual(await store.migrate(3), [1, 2, 3])
      const user = await store.createUser('alice')
      const ts = (iso: string) => timestampSql(store.kind, iso)
      await execCurrent(`INSERT INTO api_keys (id, prefix, hash, kind, user_id, access_level, rpm_limit, revoked_at, created_at)
        VALUES ('key_live', 'liveprefix', 'hash-live', 'api', '${user.id}', 'dedicated', 60, NULL, ${ts('2029-01-01T00:00:00.000Z')}),
          ('key_gone', 'goneprefix', 'hash-gone', 'worker', '${user.id}', 'shared', NULL,
            ${ts('2029-06-01T00:00:00.000Z')}, ${ts('2029-01-01T00:00:01.000Z')})`)
      assert.equal(await store.claimWorker('w1', user.id), 'created')
      assert.equal(await store.claimWorker('w2', user.id), 'created')
      await execCurrent(
        "UPDATE workers SET status = 'online', hostname = 'box', os = 'linux' WHERE client_id = 'w1'",
      )
      await store.applyTelemetry({ heartbeats: [heartbeat('w1', '2030-05-01T10:00:00.000Z')], usage: [] })
      // Today's reads of keys, workers and models need v4: a typed error, and the store stays usable.
      await assert.rejects(store.getKey('key_live'), rejectsWith(ErrorCodes.INTERNAL, false))
      await assert.rejects(store.getWorker('w1'), rejectsWith(ErrorCodes.INTERNAL, false))
      await assert.rejects(store.listModels(), rejectsWith(ErrorCodes.INTERNAL, false))
      await assert.rejects(store.upsertModel(model('m', '1')), rejectsWith(ErrorCodes.INTERNAL, false))

      assert.deepEqual(await another().migrate(), [4])
      assert.equal(await store.schemaVersion(), 4)
      const live = (await store.getKey('key_live'))!
      assert.equal(live.scope, 'inference')
      assert.equal(live.accessLevel, 'dedicated')
      assert.equal(live.rpmLimit, 60)
      assert.equal(live.revokedAt, null)
      const gone = (await store.findKeyByPrefix('goneprefix'))!
      assert.equal(gone.scope, 'inference')
      assert.equal(gone.kind, 'worker')
      assert.equal(gone.revokedAt?.toISOString(), '2029-06-01T00:00:00.000Z')
      assert.deepEqual(
        (await store.listKeys({ userId: user.id })).map((k) => [k.id, k.scope]),
        [
          ['key_live', 'inference'],
          ['key_gone', 'inference'],
        ],
      )
      const workers = await store.listWorkers()
      assert.deepEqual(
        workers.map((w) => [w.clientId, w.clientStatus, w.status, w.valid]),
        [
          ['w1', null, 'online', true],
          ['w2', null, 'offline', true],
        ],
      )
      assert.equal(workers[0]!.hostname, 'box')
      assert.equal((await store.listHeartbeats('w1')).length, 1)
      assert.deepEqual(await store.listModels(), [])

      // The new columns' CHECKs hold for rows that predate them (SQLite added them by ALTER TABLE).
      await assert.rejects(execCurrent("UPDATE api_keys SET scope = 'admin' WHERE id = 'key_live'"))
      await assert.rejects(execCurrent("UPDATE api_keys SET scope = NULL WHERE id = 'key_live'"))
      await assert.rejects(execCurrent("UPDATE workers SET client_status = 'busy' WHERE client_id = 'w1'"))
      await execCurrent("UPDATE workers SET client_status = 'maintenance' WHERE client_id = 'w1'")
      assert.equal((await store.getWorker('w1'))!.clientStatus, 'maintenance')
      assert.equal((await store.getKey('key_live'))!.scope, 'inference')
    })

    test('users: create, get, list, ensure, unique names', async () => {
      const store = await fresh()
      const t0 = Date.now()
      const alice = await store.createUser('alice')
      assert.match(alice.id, /^usr_[0-9a-f]{16}$/)
      assert.equal(alice.name, 'alice')
      assert.ok(alice.createdAt instanceof Date)
      assert.ok(alice.createdAt.getTime() >= t0 && alice.createdAt.getTime() <= Date.now())
      assert.deepEqual(await store.getUser(alice.id), alice)
      assert.equal(await store.getUser('usr_missing'), undefined)

      await assert.rejects(store.createUser('alice'), rejectsWith(ErrorCodes.BAD_REQUEST, false))
      assert.deepEqual(await store.ensureUser('alice'), alice)
      const bob = await store.ensureUser('bob')
      assert.notEqual(bob.id, alice.id)
      assert.deepEqual(await store.ensureUser('bob'), bob)
      const aaron = await store.createUser('aaron')
      assert.deepEqual(
        (await store.listUsers()).map((u) => u.name),
        ['aaron', 'alice', 'bob'],
      )
      assert.deepEqual(await store.getUser(aaron.id), aaron)
    })

    test('ensureUser from two stores at once yields one user', async () => {
      const a = await fresh()
      const b = another()
      const [x, y] = await Promise.all([a.ensureUser('carol'), b.ensureUser('carol')])
      assert.deepEqual(x, y)
      assert.equal((await a.listUsers()).length, 1)
    })

    test('keys: create, get, find by prefix, list with filters', async () => {
      const store = await fresh()
      const alice = await store.createUser('alice')
      const bob = await store.createUser('bob')
      const t0 = Date.now()
      const a1 = await store.createKey(keyFor(alice.id, { prefix: 'aaaa1111', name: 'laptop' }))
      assert.match(a1.id, /^key_[0-9a-f]{16}$/)
      assert.equal(a1.prefix, 'aaaa1111')
      assert.equal(a1.hash, 'hash-of-aaaa1111')
      assert.equal(a1.name, 'laptop')
      assert.equal(a1.revokedAt, null)
      assert.ok(a1.createdAt.getTime() >= t0 && a1.createdAt.getTime() <= Date.now())
      const a2 = await store.createKey(keyFor(alice.id, { id: 'key_given', kind: 'worker' }))
      assert.equal(a2.id, 'key_given')
      const b1 = await store.createKey(keyFor(bob.id))

      assert.deepEqual(await store.getKey(a1.id), a1)
      assert.deepEqual(await store.findKeyByPrefix('aaaa1111'), a1)
      assert.equal(await store.getKey('key_missing'), undefined)
      assert.equal(await store.findKeyByPrefix('missing'), undefined)

      const ids = (keys: { id: string }[]) => keys.map((k) => k.id).sort()
      assert.deepEqual(ids(await store.listKeys()), ids([a1, a2, b1]))
      assert.deepEqual(ids(await store.listKeys({})), ids([a1, a2, b1]))
      assert.deepEqual(ids(await store.listKeys({ userId: alice.id })), ids([a1, a2]))
      assert.deepEqual(ids(await store.listKeys({ kind: 'worker' })), ['key_given'])
      assert.deepEqual(ids(await store.listKeys({ userId: alice.id, kind: 'api' })), [a1.id])
      assert.deepEqual(await store.listKeys({ userId: bob.id, kind: 'worker' }), [])
    })

    test('keys: JSON columns, limits and dates round-trip', async () => {
      const store = await fresh()
      const user = await store.createUser('u')
      const expiresAt = new Date('2031-02-03T04:05:06.789Z')
      const full = await store.createKey(
        keyFor(user.id, {
          accessLevel: 'dedicated',
          workerIds: ['w-1', 'w "2"', 'w,3'],
          models: ['llama3:8b', 'qwen/2.5', 'NULL', '{x}'],
          rpmLimit: 60,
          tpmLimit: 5_000_000_000,
          expiresAt,
        }),
      )
      const empty = await store.createKey(keyFor(user.id, { models: [] }))
      const open = await store.createKey(keyFor(user.id))
      for (const key of [full, empty, open]) assert.deepEqual(await store.getKey(key.id), key)

      const got = (await store.getKey(full.id))!
      assert.equal(got.accessLevel, 'dedicated')
      assert.deepEqual(got.workerIds, ['w-1', 'w "2"', 'w,3'])
      assert.deepEqual(got.models, ['llama3:8b', 'qwen/2.5', 'NULL', '{x}'])
      assert.equal(got.rpmLimit, 60)
      assert.equal(got.tpmLimit, 5_000_000_000)
      assert.ok(got.expiresAt instanceof Date)
      assert.equal(got.expiresAt.toISOString(), expiresAt.toISOString())
      assert.deepEqual((await store.getKey(empty.id))!.models, [])
      const plain = (await store.getKey(open.id))!
      assert.equal(plain.models, null)
      assert.deepEqual(plain.workerIds, [])
      assert.equal(plain.rpmLimit, null)
      assert.equal(plain.tpmLimit, null)
      assert.equal(plain.expiresAt, null)
    })

    test('keys: duplicate prefix and unknown user are refused', async () => {
      const store = await fresh()
      const user = await store.createUser('u')
      await store.createKey(keyFor(user.id, { prefix: 'same' }))
      await assert.rejects(
        store.createKey(keyFor(user.id, { prefix: 'same' })),
        rejectsWith(ErrorCodes.BAD_REQUEST),
      )
      await assert.rejects(store.createKey(keyFor('usr_nobody')), rejectsWith(ErrorCodes.BAD_REQUEST))
      assert.equal((await store.listKeys()).length, 1)
    })

    test('keys: revoke once, then list revocations since a time', async () => {
      const store = await fresh()
      const user = await store.createUser('u')
      const key = await store.createKey(keyFor(user.id))
      const other = await store.createKey(keyFor(user.id))
      const at = new Date('2030-01-01T00:00:00.123Z')
      assert.equal(await store.revokeKey(key.id, at), true)
      assert.equal(await store.revokeKey(key.id), false)
      assert.equal(await store.revokeKey('key_missing'), false)
      assert.equal((await store.getKey(key.id))!.revokedAt?.toISOString(), at.toISOString())
      assert.equal((await store.getKey(other.id))!.revokedAt, null)

      const since = await store.keysRevokedSince(new Date('2029-12-31T23:59:59Z'))
      assert.deepEqual(
        since.map((k) => k.id),
        [key.id],
      )
      assert.equal(since[0]!.revokedAt?.getTime(), at.getTime())
      assert.equal((await store.keysRevokedSince(at)).length, 1, 'inclusive of the exact instant')
      assert.deepEqual(await store.keysRevokedSince(new Date(at.getTime() + 1)), [])

      assert.equal(await store.revokeKey(other.id), true)
      assert.deepEqual(
        (await store.keysRevokedSince(new Date(0))).map((k) => k.id).sort(),
        [key.id, other.id].sort(),
      )
    })

    test('keys: update changes only the given fields, null clears, revoked keys are not changed', async () => {
      const store = await fresh()
      const user = await store.createUser('u')
      const expires = new Date('2031-05-06T07:08:09.123Z')
      const key = await store.createKey(
        keyFor(user.id, { name: 'old', rpmLimit: 5, tpmLimit: 100, models: ['a'] }),
      )
      const renamed = await store.updateKey(key.id, { name: 'new', rpmLimit: 50 })
      assert.equal(renamed?.name, 'new')
      assert.equal(renamed?.rpmLimit, 50)
      assert.equal(renamed?.tpmLimit, 100)
      assert.deepEqual(renamed?.models, ['a'])
      const cleared = await store.updateKey(key.id, { tpmLimit: null, models: null, expiresAt: expires })
      assert.equal(cleared?.tpmLimit, null)
      assert.equal(cleared?.models, null)
      assert.equal(cleared?.rpmLimit, 50)
      assert.equal(cleared?.expiresAt?.toISOString(), expires.toISOString())
      assert.deepEqual(await store.getKey(key.id), cleared)
      const listed = await store.updateKey(key.id, { models: ['x', "y'; --"] })
      assert.deepEqual(listed?.models, ['x', "y'; --"])
      assert.equal(await store.updateKey('key_missing', { name: 'x' }), undefined)
      await store.revokeKey(key.id)
      assert.equal(await store.updateKey(key.id, { name: 'after' }), undefined)
      assert.equal((await store.getKey(key.id))?.name, 'new')
    })

    test('keys: scope defaults to inference; read and manage round-trip; others are refused', async () => {
      const store = await fresh()
      const user = await store.createUser('u')
      const plain = await store.createKey(keyFor(user.id))
      assert.equal(plain.scope, 'inference')
      const given = await store.createKey(keyFor(user.id, { scope: 'inference' }))
      const read = await store.createKey(keyFor(user.id, { scope: 'read' }))
      const manage = await store.createKey(keyFor(user.id, { scope: 'manage', accessLevel: 'dedicated' }))
      assert.deepEqual(
        [given, read, manage].map((k) => k.scope),
        ['inference', 'read', 'manage'],
      )
      for (const key of [plain, given, read, manage]) {
        assert.deepEqual(await store.getKey(key.id), key)
        assert.deepEqual(await store.findKeyByPrefix(key.prefix), key)
      }
      assert.deepEqual(
        (await store.listKeys({ userId: user.id })).map((k) => [k.id, k.scope]).sort(),
        [plain, given, read, manage].map((k) => [k.id, k.scope]).sort(),
      )
      await store.revokeKey(manage.id)
      assert.deepEqual(
        (await store.keysRevokedSince(new Date(0))).map((k) => k.scope),
        ['manage'],
      )

      for (const scope of ['admin', 'MANAGE', '', INJECTION]) {
        await assert.rejects(
          store.createKey(keyFor(user.id, { scope: scope as NewKey['scope'] })),
          rejectsWith(ErrorCodes.BAD_REQUEST, false),
          scope,
        )
      }
      assert.equal((await store.listKeys()).length, 4)
    })

    test('SQL injection: hostile text is stored and matched literally', async () => {
      const store = await fresh()
      for (const text of HOSTILE) {
        const user = await store.createUser(text)
        assert.equal(user.name, text)
        assert.deepEqual(await store.ensureUser(text), user)
        const key = await store.createKey(
          keyFor(user.id, {
            id: `key_${text}`,
            prefix: text,
            name: text,
            workerIds: [text],
            models: [text, 'x'],
          }),
        )
        assert.deepEqual(await store.findKeyByPrefix(text), key)
        assert.deepEqual(await store.getKey(`key_${text}`), key)
        assert.equal(key.name, text)
        assert.deepEqual(key.workerIds, [text])
        assert.deepEqual(key.models, [text, 'x'])
        assert.equal(await store.claimWorker(text, user.id), 'created')
        await store.updateWorker(text, { name: text, hostname: text, models: [text] })
        const worker = (await store.getWorker(text))!
        assert.equal(worker.name, text)
        assert.deepEqual(worker.models, [text])
        await store.setSetting(text, text)
        assert.equal(await store.getSetting(text), text)
      }
      // Lookups with a tautology find nothing, and every table is intact.
      assert.equal(await store.findKeyByPrefix(INJECTION), undefined)
      assert.equal(await store.getKey(INJECTION), undefined)
      assert.equal(await store.getUser(INJECTION), undefined)
      assert.equal(await store.getWorker(INJECTION), undefined)
      assert.equal(await store.getSetting(INJECTION), undefined)
      assert.deepEqual(await store.listKeys({ userId: INJECTION }), [])
      assert.deepEqual(await store.listWorkers({ userId: INJECTION }), [])
      assert.equal(await store.revokeKey(INJECTION), false)
      assert.equal((await store.listKeys()).length, HOSTILE.length)
      assert.equal((await store.listUsers()).length, HOSTILE.length)
      assert.equal((await store.listWorkers()).length, HOSTILE.length)
      assert.equal(await store.schemaVersion(), LATEST_VERSION)
    })

    test('claimWorker: created, then owned, then taken by another user', async () => {
      const store = await fresh()
      const alice = await store.createUser('alice')
      const bob = await store.createUser('bob')
      const t0 = Date.now()
      assert.equal(await store.claimWorker('w1', alice.id), 'created')
      assert.equal(await store.claimWorker('w1', alice.id), 'owned')
      assert.equal(await store.claimWorker('w1', bob.id), 'taken')
      const worker = (await store.getWorker('w1'))!
      assert.equal(worker.clientId, 'w1')
      assert.equal(worker.userId, alice.id)
      assert.equal(worker.status, 'offline')
      assert.equal(worker.valid, true)
      assert.deepEqual(worker.models, [])
      assert.equal(worker.name, null)
      assert.ok(worker.firstSeenAt.getTime() >= t0)
      await assert.rejects(store.claimWorker('w2', 'usr_nobody'), rejectsWith(ErrorCodes.BAD_REQUEST))
    })

    test('claimWorker: concurrent claims by two users, from two stores, have one winner', async () => {
      const a = await fresh()
      const b = another()
      const alice = await a.createUser('alice')
      const bob = await a.createUser('bob')
      for (let i = 0; i < 10; i++) {
        const clientId = `race-${i}`
        const claims = [
          [a, alice],
          [b, bob],
          [a, bob],
          [b, alice],
        ] as const
        const results = await Promise.all(claims.map(([store, user]) => store.claimWorker(clientId, user.id)))
        assert.equal(
          results.filter((r) => r === 'created').length,
          1,
          `one winner for ${clientId}: ${results}`,
        )
        const owner = (await b.getWorker(clientId))!.userId
        for (const [j, [, user]] of claims.entries()) {
          assert.equal(results[j] === 'taken', user.id !== owner, `claim ${j}: ${results[j]}`)
        }
      }
    })

    test('updateWorker, getWorker, listWorkers', async () => {
      const store = await fresh()
      const alice = await store.createUser('alice')
      const bob = await store.createUser('bob')
      await store.claimWorker('w-b', alice.id)
      await store.claimWorker('w-a', alice.id)
      await store.claimWorker('w-c', bob.id)
      const before = (await store.getWorker('w-a'))!
      await new Promise((resolve) => setTimeout(resolve, 5))

      await store.updateWorker('w-a', {
        status: 'online',
        os: 'linux',
        hostname: 'gpu-box',
        engineType: 'ollama',
        name: 'box',
        models: ['llama3:8b', 'qwen2.5:0.5b'],
      })
      let worker = (await store.getWorker('w-a'))!
      assert.equal(worker.status, 'online')
      assert.equal(worker.os, 'linux')
      assert.equal(worker.hostname, 'gpu-box')
      assert.equal(worker.engineType, 'ollama')
      assert.equal(worker.name, 'box')
      assert.equal(worker.valid, true)
      assert.deepEqual(worker.models, ['llama3:8b', 'qwen2.5:0.5b'])
      assert.equal(worker.firstSeenAt.getTime(), before.firstSeenAt.getTime())
      assert.ok(worker.lastSeenAt.getTime() > before.lastSeenAt.getTime())

      // A partial update leaves other fields alone; null clears a nullable one.
      await store.updateWorker('w-a', { valid: false, name: null, models: [] })
      worker = (await store.getWorker('w-a'))!
      assert.equal(worker.valid, false)
      assert.equal(worker.name, null)
      assert.deepEqual(worker.models, [])
      assert.equal(worker.status, 'online')
      assert.equal(worker.hostname, 'gpu-box')
      await store.updateWorker('w-a', { valid: true, status: 'offline' })
      worker = (await store.getWorker('w-a'))!
      assert.equal(worker.valid, true)
      assert.equal(worker.status, 'offline')
      assert.equal(worker.os, 'linux')

      await assert.rejects(
        store.updateWorker('w-missing', { status: 'online' }),
        rejectsWith(ErrorCodes.NOT_FOUND),
      )
      assert.equal(await store.getWorker('w-missing'), undefined)
      assert.deepEqual(
        (await store.listWorkers()).map((w) => w.clientId),
        ['w-a', 'w-b', 'w-c'],
      )
      assert.deepEqual(
        (await store.listWorkers({ userId: alice.id })).map((w) => w.clientId),
        ['w-a', 'w-b'],
      )
      assert.deepEqual(await store.listWorkers({ userId: bob.id }), [await store.getWorker('w-c')])
    })

    test('updateWorker: clientStatus is set, kept by other updates, and cleared by null', async () => {
      const store = await fresh()
      const user = await store.createUser('u')
      await store.claimWorker('w1', user.id)
      await store.claimWorker('w2', user.id)
      assert.equal((await store.getWorker('w1'))!.clientStatus, null)

      for (const clientStatus of WORKER_CLIENT_STATUSES) {
        await store.updateWorker('w1', { clientStatus })
        assert.equal((await store.getWorker('w1'))!.clientStatus, clientStatus)
      }
      await store.updateWorker('w1', { clientStatus: 'maintenance', name: 'box' })
      // Live status and operator status are separate columns.
      await store.updateWorker('w1', { status: 'online', valid: false })
      let worker = (await store.getWorker('w1'))!
      assert.equal(worker.clientStatus, 'maintenance')
      assert.equal(worker.status, 'online')
      assert.equal(worker.valid, false)
      assert.equal(worker.name, 'box')
      assert.deepEqual(
        (await store.listWorkers({ userId: user.id })).map((w) => [w.clientId, w.clientStatus]),
        [
          ['w1', 'maintenance'],
          ['w2', null],
        ],
      )

      for (const clientStatus of ['busy', 'Online', '', INJECTION]) {
        await assert.rejects(
          store.updateWorker('w1', { clientStatus: clientStatus as WorkerRecord['clientStatus'] }),
          rejectsWith(ErrorCodes.BAD_REQUEST, false),
          clientStatus,
        )
      }
      assert.equal(
        (await store.getWorker('w1'))!.clientStatus,
        'maintenance',
        'a refused update changes nothing',
      )

      await store.updateWorker('w1', { clientStatus: null })
      worker = (await store.getWorker('w1'))!
      assert.equal(worker.clientStatus, null)
      assert.equal(worker.status, 'online')
      await assert.rejects(
        store.updateWorker('w-missing', { clientStatus: 'active' }),
        rejectsWith(ErrorCodes.NOT_FOUND),
      )
    })

    test('applyTelemetry stores heartbeats and folds them into daily statistics', async () => {
      const store = await fresh()
      const GiB = 1024 ** 3
      const written = await store.applyTelemetry({
        heartbeats: [
          heartbeat(
            'w1',
            '2030-05-01T10:00:00.000Z',
            { cpuPercent: 10, memUsedBytes: 2 * GiB, memTotalBytes: 64 * GiB, diskPercent: 50 },
            { inflight: 1, netInBytes: 100, netOutBytes: 10 },
          ),
          heartbeat(
            'w1',
            '2030-05-01T23:59:59.999Z',
            { cpuPercent: 30, memUsedBytes: 48 * GiB, memPercent: 75, diskPercent: 70 },
            { inflight: 4, netInBytes: 300, netOutBytes: 30 },
          ),
          heartbeat('w1', '2030-05-01T12:00:00.000Z', {}, { inflight: 2 }),
          heartbeat('w1', '2030-05-02T00:00:00.000Z', { cpuPercent: 50, memUsedBytes: GiB }),
          heartbeat('w2', '2030-05-01T10:00:00.000Z', { cpuPercent: 99.5 }),
        ],
        usage: [],
      })
      assert.deepEqual(written, { heartbeats: 5, usage: 0, duplicates: 0 })
      assert.deepEqual(await store.listDailyStats('w1'), [
        {
          clientId: 'w1',
          day: '2030-05-01',
          heartbeats: 3,
          avgCpuPercent: 20,
          avgMemPercent: (3.125 + 75) / 2,
          avgDiskPercent: 60,
          maxCpuPercent: 30,
          maxMemUsedBytes: 48 * GiB,
          maxInflight: 4,
          netInBytes: 400,
          netOutBytes: 40,
          lastHeartbeatAt: new Date('2030-05-01T23:59:59.999Z'),
        },
        {
          clientId: 'w1',
          day: '2030-05-02',
          heartbeats: 1,
          avgCpuPercent: 50,
          avgMemPercent: null,
          avgDiskPercent: null,
          maxCpuPercent: 50,
          maxMemUsedBytes: GiB,
          maxInflight: 0,
          netInBytes: 0,
          netOutBytes: 0,
          lastHeartbeatAt: new Date('2030-05-02T00:00:00.000Z'),
        },
      ])

      // A later batch folds into the existing day.
      await store.applyTelemetry({
        heartbeats: [
          heartbeat('w1', '2030-05-01T13:00:00.000Z', { cpuPercent: 80 }, { inflight: 9 }),
          heartbeat('w2', '2030-05-01T11:00:00.000Z'),
        ],
        usage: [],
      })
      const [day1] = await store.listDailyStats('w1')
      assert.equal(day1!.heartbeats, 4)
      assert.equal(day1!.avgCpuPercent, 40)
      assert.equal(day1!.maxCpuPercent, 80)
      assert.equal(day1!.maxMemUsedBytes, 48 * GiB)
      assert.equal(day1!.maxInflight, 9)
      const [w2] = await store.listDailyStats('w2')
      assert.equal(w2!.heartbeats, 2)
      assert.equal(w2!.avgCpuPercent, 99.5)
      assert.equal(w2!.maxMemUsedBytes, null)

      const recent = await store.listHeartbeats('w1', 2)
      assert.deepEqual(
        recent.map((h) => h.at.toISOString()),
        ['2030-05-02T00:00:00.000Z', '2030-05-01T23:59:59.999Z'],
      )
      const first = (await store.listHeartbeats('w1')).find(
        (h) => h.at.toISOString() === '2030-05-01T10:00:00.000Z',
      )!
      assert.equal(first.cpuPercent, 10)
      assert.equal(first.memPercent, 3.125)
      assert.equal(first.diskPercent, 50)
      assert.equal(first.netInBytes, 100)
      assert.equal(first.memTotalBytes, 64 * GiB)
      assert.equal(first.inflight, 1)
      assert.equal(first.extra['cpuPercent'], 10)
      assert.equal((await store.listHeartbeats('w1')).length, 5)
      assert.deepEqual(await store.listDailyStats('nobody'), [])
    })

    test('applyTelemetry: a redelivered message changes nothing, within a batch or across batches', async () => {
      const store = await fresh()
      const hb = heartbeat('w1', '2030-05-01T10:00:00.000Z', { cpuPercent: 10, gpus: [gpu(0)] })
      const use = usageEvent('key_a', '2030-05-01T10:00:00.000Z')
      assert.deepEqual(await store.applyTelemetry({ heartbeats: [hb, hb], usage: [use, use] }), {
        heartbeats: 1,
        usage: 1,
        duplicates: 2,
      })
      assert.deepEqual(await store.applyTelemetry({ heartbeats: [hb], usage: [use] }), {
        heartbeats: 0,
        usage: 0,
        duplicates: 2,
      })
      const [day] = await store.listDailyStats('w1')
      assert.equal(day!.heartbeats, 1)
      const [device] = await store.listDeviceDailyStats('w1')
      assert.equal(device!.samples, 1)
      const [usage] = await store.listUsage()
      assert.equal(usage!.requests, 1)
      assert.equal(usage!.totalTokens, 15)
      assert.equal((await store.listRequests()).length, 1)
    })

    test('applyTelemetry: latest system and device info, never replaced by an older heartbeat', async () => {
      const store = await fresh()
      await store.applyTelemetry({
        heartbeats: [
          heartbeat('w1', '2030-05-01T10:00:00.000Z', {
            cpuPercent: 10,
            gpus: [gpu(0, { temperatureC: 41 }), gpu(1, { name: 'Quadro, "odd" \\ name' })],
            netRxBytes: 1000,
            totalTflops: 1978,
            deviceCount: 2,
          }),
          heartbeat('w1', '2030-05-01T10:00:05.000Z', {
            cpuPercent: 20,
            gpus: [gpu(0, { temperatureC: 60, powerDrawW: null })],
            netRxBytes: 2000,
            totalTflops: 989,
            deviceCount: 1,
          }),
        ],
        usage: [],
      })
      // Late: older than what is stored.
      await store.applyTelemetry({
        heartbeats: [
          heartbeat('w1', '2030-05-01T09:00:00.000Z', {
            cpuPercent: 99,
            gpus: [gpu(0), gpu(1, { name: 'Quadro, "odd" \\ name' })],
          }),
        ],
        usage: [],
      })
      const info = await store.getSystemInfo('w1')
      assert.equal(info!.cpuPercent, 20)
      assert.equal(info!.netRxBytes, 2000)
      assert.equal(info!.deviceCount, 1)
      assert.equal(info!.totalTflops, 989)
      assert.deepEqual(info!.at, new Date('2030-05-01T10:00:05.000Z'))
      const devices = await store.listDeviceInfo('w1')
      assert.equal(devices.length, 1, 'device 1 is gone from the newest report')
      assert.equal(devices[0]!.temperatureC, 60)
      assert.equal(devices[0]!.powerDrawW, null)
      assert.equal(devices[0]!.uuid, 'GPU-0')
      const daily = await store.listDeviceDailyStats('w1')
      assert.deepEqual(
        daily.map((d) => [d.deviceIndex, d.samples, d.avgTemperatureC, d.maxTemperatureC, d.avgPowerW]),
        [
          [0, 3, (41 + 60 + 40) / 3, 60, 300],
          [1, 2, 40, 40, 300],
        ],
      )
      assert.equal(daily[1]!.name, 'Quadro, "odd" \\ name')
      assert.equal(await store.getSystemInfo('nobody'), undefined)
      assert.deepEqual(await store.listDeviceInfo('nobody'), [])
    })

    test('applyTelemetry: usage per key, model and worker per day; unmetered requests count no tokens', async () => {
      const store = await fresh()
      await store.applyTelemetry({
        heartbeats: [],
        usage: [
          usageEvent('key_a', '2030-05-01T10:00:00.000Z'),
          usageEvent('key_a', '2030-05-01T11:00:00.000Z', {
            promptTokens: null,
            completionTokens: null,
            totalTokens: null,
            ttfbMs: null,
            stream: true,
          }),
          usageEvent('key_a', '2030-05-01T12:00:00.000Z', { status: 503, workerId: null, totalTokens: null }),
          usageEvent('key_a', '2030-05-02T00:00:00.000Z', { model: "it's" }),
          usageEvent('key_b', '2030-05-01T10:00:00.000Z', { totalTokens: 2 ** 40, durationMs: 300 }),
        ],
      })
      const rows = await store.listUsage({ keyId: 'key_a' })
      assert.deepEqual(
        rows.map((r) => [r.day, r.model, r.workerId, r.requests, r.errors, r.metered, r.totalTokens]),
        [
          ['2030-05-01', 'llama3:8b', '', 1, 1, 0, 0],
          ['2030-05-01', 'llama3:8b', 'w1', 2, 0, 1, 15],
          ['2030-05-02', "it's", 'w1', 1, 0, 1, 15],
        ],
      )
      assert.equal(rows[1]!.avgTtfbMs, 20)
      assert.equal(rows[1]!.avgDurationMs, 100)
      assert.equal(rows[1]!.bytesOut, 1600)
      assert.equal(rows[1]!.userId, 'usr_1')
      const [b] = await store.listUsage({ keyId: 'key_b' })
      assert.equal(b!.totalTokens, 2 ** 31 - 1, 'clamped like the request log')
      assert.equal((await store.listUsage({ from: '2030-05-02' })).length, 1)
      assert.equal((await store.listUsage({ to: '2030-05-01' })).length, 3)
      assert.equal((await store.listUsage({ workerId: '' })).length, 1)
      assert.equal((await store.listUsage({ limit: 1 })).length, 1)
      const logged = await store.listRequests({ keyId: 'key_a' })
      assert.equal(logged.length, 4)
      assert.equal(logged.find((r) => r.status === 503)!.workerId, null)
    })

    test('applyTelemetry: NUL in reported text is stored as U+FFFD, never refused', async () => {
      const store = await fresh()
      await store.applyTelemetry({
        heartbeats: [
          heartbeat('w\u0000', '2030-05-01T10:00:00.000Z', {
            gpus: [gpu(0, { name: 'a\u0000b', uuid: '\\u0000' })],
          }),
        ],
        usage: [usageEvent('key_\u0000', '2030-05-01T10:00:00.000Z', { model: 'm\u0000' })],
      })
      const [device] = await store.listDeviceInfo('w\uFFFD')
      assert.equal(device?.name, 'a\uFFFDb')
      assert.equal(device?.uuid, '\\u0000', 'a literal backslash-u is text, not a NUL')
      const [usage] = await store.listUsage({ keyId: 'key_\uFFFD' })
      assert.equal(usage?.model, 'm\uFFFD')
    })

    test('applyTelemetry: heartbeats given with their bus encoding are stored as the events themselves', async () => {
      const store = await fresh()
      const metrics = {
        cpuPercent: 12.5,
        memUsedBytes: 3 * 1024 ** 3,
        memTotalBytes: 7 * 1024 ** 3,
        diskPercent: 33.3,
        netRxBytes: 123_456_789,
        netRxRate: 1.5,
        uptimeSeconds: 99.25,
        gpus: [gpu(0, { memoryTotalBytes: 1000, tflops: 1.25 }), gpu(3, { powerDrawW: null })],
      }
      const plain = heartbeat('w-plain', '2030-05-01T10:00:00.123Z', metrics, { inflight: 2, netInBytes: 7 })
      const viaBus = heartbeat('w-bus', '2030-05-01T10:00:00.123Z', metrics, { inflight: 2, netInBytes: 7 })
      // A newer producer's extra top-level field is ignored.
      const bytes = Buffer.from(JSON.stringify({ ...viaBus, addedLater: true }))
      await store.applyTelemetry({ heartbeats: [plain], usage: [] })
      await store.applyTelemetry({ heartbeats: [viaBus], usage: [], encoded: new Map([[viaBus, bytes]]) })
      const same = <T extends { clientId: string }>(a: T | undefined, b: T | undefined) =>
        assert.deepEqual({ ...a, clientId: '' }, { ...b, clientId: '' })
      same(await store.getSystemInfo('w-plain'), await store.getSystemInfo('w-bus'))
      const [hp] = await store.listHeartbeats('w-plain')
      const [hb] = await store.listHeartbeats('w-bus')
      same({ ...hp!, msgId: '' }, { ...hb!, msgId: '' })
      same((await store.listDailyStats('w-plain'))[0], (await store.listDailyStats('w-bus'))[0])
      const devices = await store.listDeviceInfo('w-bus')
      assert.deepEqual(
        devices.map((d) => ({ ...d, clientId: '' })),
        (await store.listDeviceInfo('w-plain')).map((d) => ({ ...d, clientId: '' })),
      )
      assert.equal(devices.length, 2)
    })

    test('pruneTelemetry removes raw rows past retention and keeps daily statistics', async () => {
      const store = await fresh()
      await store.applyTelemetry({
        heartbeats: [
          heartbeat('w1', '2030-05-01T10:00:00.000Z', { cpuPercent: 10 }),
          heartbeat('w1', '2030-05-09T10:00:00.000Z', { cpuPercent: 10 }),
        ],
        usage: [usageEvent('k', '2030-05-01T10:00:00.000Z'), usageEvent('k', '2030-05-09T10:00:00.000Z')],
      })
      assert.deepEqual(await store.pruneTelemetry(new Date('2030-05-05T00:00:00.000Z')), {
        heartbeats: 1,
        requests: 1,
      })
      assert.equal((await store.listHeartbeats('w1')).length, 1)
      assert.equal((await store.listRequests()).length, 1)
      assert.equal((await store.listDailyStats('w1')).length, 2)
      assert.equal((await store.listUsage()).length, 2)
    })

    test('listDailyStats: an inclusive day range, either end optional', async () => {
      const store = await fresh()
      const days = ['2030-04-30', '2030-05-01', '2030-05-02', '2030-05-03', '2030-05-05']
      await store.applyTelemetry({
        heartbeats: [
          ...days.map((day) => heartbeat('w1', `${day}T23:59:59.999Z`, { cpuPercent: 10 })),
          heartbeat('w1', '2030-05-02T00:00:00.000Z'),
          heartbeat('w2', '2030-05-02T12:00:00.000Z'),
        ],
        usage: [],
      })
      const listed = async (range?: { from?: string; to?: string }) =>
        (await store.listDailyStats('w1', range)).map((d) => d.day)
      assert.deepEqual(await listed(), days)
      assert.deepEqual(await listed({}), days)
      assert.deepEqual(await listed({ from: '2030-05-01', to: '2030-05-03' }), days.slice(1, 4))
      assert.deepEqual(await listed({ from: '2030-05-02' }), days.slice(2))
      assert.deepEqual(await listed({ to: '2030-05-02' }), days.slice(0, 3))
      assert.deepEqual(await listed({ from: '2030-05-02', to: '2030-05-02' }), ['2030-05-02'])
      assert.deepEqual(await listed({ from: '2030-05-04', to: '2030-05-04' }), [])
      assert.deepEqual(await listed({ from: '2030-05-03', to: '2030-05-01' }), [])
      assert.deepEqual(await listed({ from: undefined, to: '2030-04-30' }), ['2030-04-30'])
      const [day] = await store.listDailyStats('w1', { from: '2030-05-02', to: '2030-05-02' })
      assert.equal(day!.heartbeats, 2)
      assert.deepEqual(await store.listDailyStats('w1'), [
        ...(await store.listDailyStats('w1', { to: '2030-05-02' })),
        ...(await store.listDailyStats('w1', { from: '2030-05-03' })),
      ])
      assert.deepEqual(
        (await store.listDailyStats('w2', { from: '2030-05-01', to: '2030-05-03' })).map((d) => d.day),
        ['2030-05-02'],
      )
      for (const bad of [
        '2030-5-2',
        '2030-02-30',
        '2030-13-01',
        'today',
        INJECTION,
        '2030-05-02T00:00:00Z',
      ]) {
        await assert.rejects(
          store.listDailyStats('w1', { from: bad }),
          rejectsWith(ErrorCodes.BAD_REQUEST, false),
          bad,
        )
        await assert.rejects(
          store.listDailyStats('w1', { to: bad }),
          rejectsWith(ErrorCodes.BAD_REQUEST, false),
        )
      }
    })

    test('listHeartbeats: an inclusive time range, newest first, the limit still applies', async () => {
      const store = await fresh()
      const base = Date.parse('2030-05-01T10:00:00.000Z')
      const at = (i: number) => new Date(base + i * 1000)
      await store.applyTelemetry({
        heartbeats: [
          ...Array.from({ length: 6 }, (_, i) => heartbeat('w1', at(i).toISOString(), { cpuPercent: i })),
          heartbeat('w2', at(2).toISOString()),
        ],
        usage: [],
      })
      const listed = async (limit?: number, range?: { from?: Date; to?: Date }) =>
        (await store.listHeartbeats('w1', limit, range)).map((h) => (h.at.getTime() - base) / 1000)
      assert.deepEqual(await listed(), [5, 4, 3, 2, 1, 0])
      assert.deepEqual(await listed(undefined, {}), [5, 4, 3, 2, 1, 0])
      assert.deepEqual(
        await listed(undefined, { from: at(1), to: at(3) }),
        [3, 2, 1],
        'both bounds inclusive',
      )
      assert.deepEqual(await listed(undefined, { from: new Date(at(1).getTime() + 1), to: at(3) }), [3, 2])
      assert.deepEqual(await listed(undefined, { from: at(1), to: new Date(at(3).getTime() - 1) }), [2, 1])
      assert.deepEqual(await listed(undefined, { from: at(4) }), [5, 4])
      assert.deepEqual(await listed(undefined, { to: at(1) }), [1, 0])
      assert.deepEqual(await listed(undefined, { from: at(2), to: at(2) }), [2])
      assert.deepEqual(await listed(undefined, { from: at(3), to: at(1) }), [])
      assert.deepEqual(await listed(2, { from: at(1), to: at(4) }), [4, 3], 'the newest rows of the range')
      assert.deepEqual(await listed(0, { from: at(1) }), [])
      const [row] = await store.listHeartbeats('w1', 1, { to: at(2) })
      assert.equal(row!.cpuPercent, 2)
      assert.deepEqual(
        (await store.listHeartbeats('w2', undefined, { from: at(0), to: at(5) })).map((h) => h.clientId),
        ['w2'],
      )
      await assert.rejects(
        store.listHeartbeats('w1', 10, { from: new Date(Number.NaN) }),
        rejectsWith(ErrorCodes.BAD_REQUEST, false),
      )
      await assert.rejects(
        store.listHeartbeats('w1', 10, { to: new Date(Number.NaN) }),
        rejectsWith(ErrorCodes.BAD_REQUEST, false),
      )
    })

    test('request log: a batch of 1200 rows, listed newest first with filters and limits', async () => {
      const seen: string[] = []
      const store = await fresh({ onQuery: (sql) => seen.push(sql) })
      const base = Date.parse('2030-06-01T00:00:00.000Z')
      const rows = Array.from({ length: 1200 }, (_, i) =>
        request(`key_${i % 3}`, base + i * 1000, {
          userId: i % 2 === 0 ? `usr_${i % 3}` : null,
          model: i % 4 === 0 ? 'qwen2.5:0.5b' : 'llama3:8b',
          workerId: i % 5 === 0 ? null : `worker-${i % 7}`,
          path: i % 2 === 0 ? '/v1/chat/completions' : '/v1/embeddings',
          status: i % 10 === 0 ? 503 : 200,
          durationMs: i * 1.25 + 0.1,
          promptTokens: i % 6 === 0 ? null : i,
          completionTokens: i % 6 === 0 ? null : 2 * i,
          totalTokens: i % 6 === 0 ? null : 3 * i,
        }),
      )
      seen.length = 0
      await store.recordRequests(rows)
      assert.ok(seen.length >= 1 && seen.length <= 12, `a batch of 1200 cost ${seen.length} queries`)

      const all = await store.listRequests({ limit: 10_000 })
      assert.equal(all.length, 1200)
      assert.deepEqual(all.map(withoutId), [...rows].reverse(), 'every value round-trips')
      assertNewestFirst(all)
      assert.equal(new Set(all.map((r) => r.id)).size, 1200)
      assert.ok(all.every((r) => Number.isSafeInteger(r.id) && r.at instanceof Date))

      const recent = await store.listRequests()
      assert.equal(recent.length, 100, 'default limit')
      assert.deepEqual(recent, all.slice(0, 100))
      assert.deepEqual(await store.listRequests({ limit: 7 }), all.slice(0, 7))
      assert.deepEqual(await store.listRequests({ limit: 0 }), [])

      const key1 = await store.listRequests({ keyId: 'key_1', limit: 10_000 })
      assert.equal(key1.length, 400)
      assert.deepEqual(
        key1,
        all.filter((r) => r.keyId === 'key_1'),
      )
      assert.deepEqual(await store.listRequests({ keyId: 'key_1', limit: 3 }), key1.slice(0, 3))
      assert.deepEqual(await store.listRequests({ keyId: 'key_none' }), [])

      const since = new Date(base + 1000 * 1000)
      const late = await store.listRequests({ since, limit: 10_000 })
      assert.equal(late.length, 200, 'since is inclusive')
      assert.deepEqual(late, all.slice(0, 200))
      assert.equal(late.at(-1)!.at.getTime(), since.getTime())
      assert.equal(
        (await store.listRequests({ since: new Date(since.getTime() + 1), limit: 10_000 })).length,
        199,
      )
      assert.deepEqual(
        await store.listRequests({ keyId: 'key_1', since, limit: 10_000 }),
        late.filter((r) => r.keyId === 'key_1'),
      )
      assert.deepEqual(await store.listRequests({ since: new Date(base + 1200 * 1000) }), [])
      assert.equal((await store.listRequests({ since: new Date(0), limit: 10_000 })).length, 1200)

      // userId keeps that user's rows (rows without a user are nobody's), alone or with the other filters.
      const user1 = await store.listRequests({ userId: 'usr_1', limit: 10_000 })
      assert.equal(user1.length, 200)
      assert.deepEqual(
        user1,
        all.filter((r) => r.userId === 'usr_1'),
      )
      assert.deepEqual(await store.listRequests({ userId: 'usr_1', limit: 5 }), user1.slice(0, 5))
      assert.deepEqual(
        await store.listRequests({ userId: 'usr_1', keyId: 'key_1', limit: 10_000 }),
        user1.filter((r) => r.keyId === 'key_1'),
      )
      assert.deepEqual(await store.listRequests({ userId: 'usr_1', keyId: 'key_0', limit: 10_000 }), [])
      assert.deepEqual(
        await store.listRequests({ userId: 'usr_1', since, limit: 10_000 }),
        late.filter((r) => r.userId === 'usr_1'),
      )
      assert.deepEqual(await store.listRequests({ userId: 'usr_none' }), [])
      assert.deepEqual(await store.listRequests({ userId: INJECTION }), [])
    })

    test('request log: same-instant rows list last recorded first; limit is capped at 10 000', async () => {
      const store = await fresh()
      const at = '2030-01-01T00:00:00.000Z'
      await store.recordRequests([
        request('k', at, { path: '/a' }),
        request('k', at, { path: '/b' }),
        request('k', at, { path: '/c' }),
      ])
      await store.recordRequests([request('k', at, { path: '/d' })])
      assert.deepEqual(
        (await store.listRequests()).map((r) => r.path),
        ['/d', '/c', '/b', '/a'],
      )

      const base = Date.parse('2031-01-01T00:00:00.000Z')
      const many = Array.from({ length: 10_050 }, (_, i) => request(`k${i % 2}`, base + i))
      await store.recordRequests(many)
      const capped = await store.listRequests({ limit: 50_000 })
      assert.equal(capped.length, 10_000)
      assertNewestFirst(capped)
      assert.equal(capped[0]!.at.getTime(), base + 10_049)
      assert.equal((await store.listRequests({ limit: Number.POSITIVE_INFINITY })).length, 100)
      assert.equal((await store.listRequests({ limit: -5 })).length, 0)
      assert.equal((await store.listRequests({ limit: 2.9 })).length, 2)
    })

    test('request log: nulls, dates and numbers round-trip; hostile text is stored literally', async () => {
      const store = await fresh()
      const rows: NewRequest[] = [
        request('key_nulls', '2030-02-03T04:05:06.789Z'),
        request('key_full', '1969-12-31T23:59:59.999Z', {
          userId: 'usr_1',
          workerId: 'w-1',
          model: 'qwen/2.5:0.5b-instruct-q4_K_M',
          path: '/v1/completions?x=1',
          status: 499,
          durationMs: 0.1 + 0.2,
          promptTokens: 0,
          completionTokens: 2 ** 31 - 1,
          totalTokens: 7,
        }),
        request('key_whole', '2030-02-03T04:05:06.000Z', { durationMs: 0, status: 0 }),
      ]
      for (const text of HOSTILE) {
        rows.push(
          request(text, '2030-03-01T00:00:00.000Z', {
            userId: text,
            model: text,
            workerId: text,
            path: text,
          }),
        )
      }
      await store.recordRequests(rows)
      for (const row of rows) {
        const got = await store.listRequests({ keyId: row.keyId })
        assert.equal(got.length, 1, `one row for ${row.keyId}`)
        assert.deepEqual(withoutId(got[0]!), row)
      }
      const full = (await store.listRequests({ keyId: 'key_full' }))[0]!
      assert.equal(full.durationMs, 0.1 + 0.2)
      assert.equal(full.at.toISOString(), '1969-12-31T23:59:59.999Z')
      assert.equal(full.completionTokens, 2 ** 31 - 1)
      const nulls = (await store.listRequests({ keyId: 'key_nulls' }))[0]!
      for (const field of [
        'userId',
        'workerId',
        'promptTokens',
        'completionTokens',
        'totalTokens',
      ] as const) {
        assert.equal(nulls[field], null, field)
      }

      // Fractional token counts are rounded; the rest is stored as given.
      await store.recordRequests([
        request('key_round', '2030-04-01T00:00:00Z', {
          promptTokens: 12.4,
          completionTokens: 12.6,
          totalTokens: 25,
        }),
      ])
      const rounded = (await store.listRequests({ keyId: 'key_round' }))[0]!
      assert.deepEqual([rounded.promptTokens, rounded.completionTokens, rounded.totalTokens], [12, 13, 25])

      // Filters with a tautology match nothing, and every table is intact.
      assert.deepEqual(await store.listRequests({ keyId: INJECTION }), [])
      assert.deepEqual(await store.listRequests({ keyId: "key_nulls' OR '1'='1" }), [])
      assert.equal((await store.listRequests({ limit: 10_000 })).length, rows.length + 1)
      assert.equal(await store.schemaVersion(), LATEST_VERSION)
      assert.deepEqual(await store.listUsers(), [])
    })

    test('request log: an empty batch is a no-op; a bad row fails the whole batch', async () => {
      const seen: string[] = []
      const store = await fresh({ onQuery: (sql) => seen.push(sql) })
      seen.length = 0
      await store.recordRequests([])
      assert.deepEqual(seen, [], 'no query for an empty batch')
      assert.deepEqual(await store.listRequests(), [])

      const base = Date.parse('2030-01-01T00:00:00Z')
      const good = Array.from({ length: 1100 }, (_, i) => request('k', base + i))
      const bad: [string, NewRequest][] = [
        ['invalid date', request('k', Number.NaN)],
        ['fractional status', request('k', base, { status: 200.5 })],
        ['non-finite duration', request('k', base, { durationMs: Number.POSITIVE_INFINITY })],
        ['tokens beyond 32 bits', request('k', base, { totalTokens: 2 ** 31 })],
        ['NaN tokens', request('k', base, { promptTokens: Number.NaN })],
        // Rejected by the database itself (a NOT NULL column), after the first 1100 rows were sent.
        ['null key id', request(null as unknown as string, base)],
      ]
      for (const [what, row] of bad) {
        await assert.rejects(
          store.recordRequests([...good, row]),
          rejectsWith(ErrorCodes.BAD_REQUEST, false),
          what,
        )
        assert.deepEqual(await store.listRequests(), [], `nothing written after ${what}`)
      }
      await assert.rejects(
        store.listRequests({ since: new Date(Number.NaN) }),
        rejectsWith(ErrorCodes.BAD_REQUEST),
      )
      await store.recordRequests(good)
      assert.equal((await store.listRequests({ limit: 10_000 })).length, 1100)
    })

    test('settings: missing, set, overwrite', async () => {
      const store = await fresh()
      assert.equal(await store.getSetting('admin_key_hash'), undefined)
      await store.setSetting('admin_key_hash', 'abc')
      assert.equal(await store.getSetting('admin_key_hash'), 'abc')
      await store.setSetting('admin_key_hash', 'multi\nline ✓')
      assert.equal(await store.getSetting('admin_key_hash'), 'multi\nline ✓')
      await store.setSetting('empty', '')
      assert.equal(await store.getSetting('empty'), '')
    })

    test('models: upsert creates, then updates by name and version, keeping id and created_at', async () => {
      const store = await fresh()
      const t0 = Date.now()
      const first = await store.upsertModel(
        model('llama3', '8b', {
          versionCode: 3,
          engineType: 2,
          isActive: false,
          minMemoryMb: 16_384,
          minGpuMemoryGb: 7.5,
          downloadUrl: 'https://example.com/llama3-8b.gguf?x=1&y=2',
          checksum: `sha256:${'ab'.repeat(32)}`,
          expectedSize: 5 * 1024 ** 3,
        }),
      )
      assert.ok(Number.isSafeInteger(first.id) && first.id > 0)
      assert.deepEqual(
        { ...first, id: 0, createdAt: null, updatedAt: null },
        {
          id: 0,
          name: 'llama3',
          version: '8b',
          versionCode: 3,
          engineType: 2,
          isActive: false,
          minMemoryMb: 16_384,
          minGpuMemoryGb: 7.5,
          downloadUrl: 'https://example.com/llama3-8b.gguf?x=1&y=2',
          checksum: `sha256:${'ab'.repeat(32)}`,
          expectedSize: 5 * 1024 ** 3,
          createdAt: null,
          updatedAt: null,
        },
      )
      assert.ok(first.createdAt.getTime() >= t0 && first.createdAt.getTime() <= Date.now())
      assert.equal(first.updatedAt.getTime(), first.createdAt.getTime())
      assert.deepEqual(await store.listModels(), [first])

      // An update replaces every field (isActive left out is true again), by name and version.
      await sleep(5)
      const updated = await store.upsertModel(model('llama3', '8b', { versionCode: 4, minGpuMemoryGb: 8 }))
      assert.equal(updated.id, first.id)
      assert.equal(updated.createdAt.getTime(), first.createdAt.getTime())
      assert.ok(updated.updatedAt.getTime() > first.updatedAt.getTime(), 'updated_at moves')
      assert.deepEqual(
        [
          updated.versionCode,
          updated.engineType,
          updated.isActive,
          updated.minMemoryMb,
          updated.minGpuMemoryGb,
        ],
        [4, 0, true, null, 8],
      )
      assert.deepEqual([updated.downloadUrl, updated.checksum, updated.expectedSize], [null, null, null])
      assert.deepEqual(await store.listModels(), [updated])

      // Another version of the same name is another entry; the first one is untouched.
      const other = await store.upsertModel(model('llama3', '70b', { versionCode: 1 }))
      assert.notEqual(other.id, first.id)
      assert.deepEqual(await store.listModels(), [other, updated])
      assert.deepEqual(
        await store.upsertModel(model('llama3', '8b', { versionCode: 4, minGpuMemoryGb: 8 })),
        {
          ...updated,
          updatedAt: (await store.listModels())[1]!.updatedAt,
        },
      )

      // Values a column cannot hold are refused by both adapters, and change nothing.
      await assert.rejects(
        store.upsertModel(model('llama3', '8b', { versionCode: 1.5 })),
        rejectsWith(ErrorCodes.BAD_REQUEST, false),
      )
      await assert.rejects(
        store.upsertModel(model(null as unknown as string, '1')),
        rejectsWith(ErrorCodes.BAD_REQUEST, false),
      )
      assert.equal((await store.listModels()).length, 2)
      assert.equal((await store.listModels())[1]!.versionCode, 4)
    })

    test('models: listed by name then version; filters on active and GPU memory', async () => {
      const store = await fresh()
      assert.deepEqual(await store.listModels(), [])
      const add = (name: string, version: string, fields: Partial<NewModel> = {}) =>
        store.upsertModel(model(name, version, fields))
      const qwen = await add('qwen2.5', '7b', { minGpuMemoryGb: 8 })
      const big = await add('llama3', '70b', { minGpuMemoryGb: 40.5 })
      const small = await add('llama3', '8b', { minGpuMemoryGb: 8, isActive: false })
      const any = await add('llama3', '1b')
      const upper = await add('Mistral', '7b', { minGpuMemoryGb: 0 })
      const hostile = await add(INJECTION, "1'; --", { minGpuMemoryGb: 1 })
      const names = (models: { name: string; version: string }[]) =>
        models.map((m) => `${m.name}:${m.version}`)

      // Byte order (as SQLite sorts text; PostgreSQL is told to sort alike).
      const all = await store.listModels()
      assert.deepEqual(names(all), names([hostile, upper, any, big, small, qwen]))
      assert.deepEqual(await store.listModels({}), all)
      assert.deepEqual(
        names(await store.listModels({ isActive: true })),
        names([hostile, upper, any, big, qwen]),
      )
      assert.deepEqual(names(await store.listModels({ isActive: false })), names([small]))
      // At most that much GPU memory, the bound included; a model without a figure always fits.
      assert.deepEqual(
        names(await store.listModels({ minGpuMemoryGb: 8 })),
        names([hostile, upper, any, small, qwen]),
      )
      assert.deepEqual(names(await store.listModels({ minGpuMemoryGb: 7.99 })), names([hostile, upper, any]))
      assert.deepEqual(names(await store.listModels({ minGpuMemoryGb: 0 })), names([upper, any]))
      assert.deepEqual(names(await store.listModels({ minGpuMemoryGb: 40.5 })), names(all))
      assert.deepEqual(
        names(await store.listModels({ minGpuMemoryGb: 8, isActive: true })),
        names([hostile, upper, any, qwen]),
      )
      assert.deepEqual(names(await store.listModels({ minGpuMemoryGb: 1, isActive: false })), [])
      await assert.rejects(
        store.listModels({ minGpuMemoryGb: Number.NaN }),
        rejectsWith(ErrorCodes.BAD_REQUEST, false),
      )
    })

    test('onQuery sees every query: one per simple call', async () => {
      const seen: string[] = []
      const store = await fresh({ onQuery: (sql) => seen.push(sql) })
      const user = await store.createUser('u')
      const key = await store.createKey(keyFor(user.id))
      const count = async (fn: () => Promise<unknown>) => {
        seen.length = 0
        await fn()
        assert.ok(
          seen.every((sql) => typeof sql === 'string' && sql.length > 0),
          'each query is its SQL text',
        )
        return seen.length
      }
      assert.equal(await count(() => store.getKey(key.id)), 1)
      assert.equal(await count(() => store.findKeyByPrefix(key.prefix)), 1)
      assert.equal(await count(() => store.listKeys({ userId: user.id })), 1)
      assert.equal(await count(() => store.getUser(user.id)), 1)
      assert.equal(await count(() => store.ensureUser('u')), 1)
      assert.equal(await count(() => store.setSetting('k', 'v')), 1)
      assert.equal(await count(() => store.getSetting('k')), 1)
      assert.equal(await count(() => store.claimWorker('w', user.id)), 1)
      assert.equal(await count(() => store.claimWorker('w', user.id)), 2)
      assert.equal(await count(() => store.updateWorker('w', { status: 'online' })), 1)
      assert.equal(await count(() => store.updateWorker('w', { clientStatus: 'maintenance' })), 1)
      assert.equal(await count(() => store.revokeKey(key.id)), 1)
      assert.equal(await count(() => store.upsertModel(model('m', '1'))), 1)
      assert.equal(await count(() => store.upsertModel(model('m', '1'))), 1)
      assert.equal(await count(() => store.listModels({ isActive: true, minGpuMemoryGb: 8 })), 1)
      assert.equal(await count(() => store.applyTelemetry({ heartbeats: [], usage: [] })), 0)
      const batch = await count(() =>
        store.applyTelemetry({
          heartbeats: [heartbeat('w', '2030-01-01T00:00:00Z'), heartbeat('w', '2030-01-01T00:00:01Z')],
          usage: [usageEvent('k', '2030-01-01T00:00:00Z')],
        }),
      )
      assert.ok(batch >= 1 && batch <= 12, `a batch of 3 costs ${batch} queries`)
      assert.equal(await count(() => store.listDailyStats('w', { from: '2030-01-01', to: '2030-01-02' })), 1)
      assert.equal(await count(() => store.listHeartbeats('w', 5, { from: new Date(0), to: new Date() })), 1)
      assert.equal(await count(() => store.recordRequests([])), 0)
      assert.equal(
        await count(() =>
          store.recordRequests([
            request(key.id, '2030-01-01T00:00:00Z'),
            request(key.id, '2030-01-01T00:00:01Z'),
          ]),
        ),
        1,
      )
      assert.equal(await count(() => store.listRequests()), 1)
      assert.equal(await count(() => store.listRequests({ keyId: key.id, since: new Date(0), limit: 5 })), 1)
      assert.equal(await count(() => store.listRequests({ userId: user.id, keyId: key.id, limit: 5 })), 1)
    })

    test('a closed store refuses calls with a typed error', async () => {
      const store = await fresh()
      await store.close()
      await store.close()
      await assert.rejects(store.getSetting('k'), rejectsWith(ErrorCodes.STORE_UNAVAILABLE, false))
      await assert.rejects(
        store.recordRequests([request('k', '2030-01-01T00:00:00Z')]),
        rejectsWith(ErrorCodes.STORE_UNAVAILABLE, false),
      )
      await assert.rejects(store.listRequests(), rejectsWith(ErrorCodes.STORE_UNAVAILABLE, false))
    })
  })
}

// ---- SQLite: a file per test in one temp dir ----

const sqliteRoot = mkdtempSync(join(tmpdir(), 'gpuf-store-'))
after(() => rmSync(sqliteRoot, { recursive: true, force: true }))
let sqliteCount = 0

storeContract('sqlite', async () => {
  // A nested, missing directory: the adapter creates it.
  const path = join(sqliteRoot, `db-${++sqliteCount}`, 'data', 'store.sqlite')
  return {
    open: (options) => new SqliteStore({ path, onQuery: options?.onQuery }),
    exec: async (sql) => {
      const db = new Database(path)
      try {
        db.exec(sql)
      } finally {
        db.close()
      }
    },
  }
})

// ---- PostgreSQL: one server for the file, a fresh schema per test ----

const pgMissing = unavailable('postgres')
let pgService: ManagedService | undefined
let pgCount = 0

/** Runs one statement as the server's superuser, on a short-lived connection (it survives outages). */
async function pgAdmin(sql: string): Promise<void> {
  const admin = new Client({ connectionString: pgService!.url })
  admin.on('error', () => undefined)
  await admin.connect()
  try {
    await admin.query(sql)
  } finally {
    await admin.end()
  }
}

/**
 * A URL of a new, empty database on the test server: a fresh schema, first on the
 * connection's search_path (instant, where CREATE DATABASE takes a quarter of a second).
 */
async function newPgDatabase(): Promise<string> {
  const schema = `store_${++pgCount}`
  await pgAdmin(`CREATE SCHEMA ${schema}`)
  return `${pgService!.url}?options=${encodeURIComponent(`-c search_path=${schema}`)}`
}

describe('PostgreSQL', { skip: pgMissing ?? false }, () => {
  before(async () => {
    pgService = await startPostgres()
  })
  after(async () => {
    await pgService?.close()
  })

  storeContract('postgres', async () => {
    const url = await newPgDatabase()
    return {
      open: (options) => new PostgresStore({ url, onQuery: options?.onQuery }),
      exec: async (sql) => {
        const client = new Client({ connectionString: url })
        client.on('error', () => undefined)
        await client.connect()
        try {
          await client.query(sql)
        } finally {
          await client.end()
        }
      },
    }
  })

  test('a stopped database fails calls fast and retryably; the same store recovers when it is back', async () => {
    const store = new PostgresStore({ url: await newPgDatabase() })
    try {
      await store.migrate()
      await store.setSetting('k', 'v')
      // Several pooled connections open, so the restart has idle clients to break.
      await Promise.all(Array.from({ length: 4 }, () => store.getSetting('k')))

      // The test server runs with synchronous_commit=off and stops with `-m immediate` (a
      // crash): without a checkpoint, the last commits would be lost and the test would see
      // missing tables rather than recovery.
      await pgAdmin('CHECKPOINT')
      await pgService!.stop()
      for (const call of [
        () => store.getSetting('k'),
        () => store.setSetting('k', 'w'),
        () => store.migrate(),
      ]) {
        const started = Date.now()
        await assert.rejects(call(), rejectsWith(ErrorCodes.STORE_UNAVAILABLE, true))
        assert.ok(Date.now() - started < 5_000, `failed after ${Date.now() - started} ms`)
      }

      await pgService!.start()
      assert.equal(await store.getSetting('k'), 'v')
      await store.setSetting('k', 'after')
      assert.deepEqual(
        await Promise.all(Array.from({ length: 4 }, () => store.getSetting('k'))),
        Array(4).fill('after'),
      )
    } finally {
      await store.close()
    }
  })

  test('createStore picks PostgreSQL for postgres:// and postgresql:// URLs', async () => {
    const url = await newPgDatabase()
    for (const databaseUrl of [url, url.replace(/^postgres:/, 'postgresql:')]) {
      const store = await createStore({ databaseUrl, sqlitePath: join(sqliteRoot, 'unused.sqlite') })
      try {
        assert.equal(store.kind, 'postgres')
        await store.migrate()
        assert.equal(await store.schemaVersion(), LATEST_VERSION)
      } finally {
        await store.close()
      }
    }
  })
})

describe('createStore', () => {
  test('SQLite at sqlitePath without a databaseUrl', async () => {
    const store = await createStore({
      sqlitePath: join(sqliteRoot, 'factory', 'store.sqlite'),
      databaseUrl: '',
    })
    try {
      assert.equal(store.kind, 'sqlite')
      assert.deepEqual(
        await store.migrate(),
        MIGRATIONS.map((m) => m.version),
      )
      assert.equal(await store.schemaVersion(), LATEST_VERSION)
    } finally {
      await store.close()
    }
  })

  test('refuses other URLs and missing locations with a configuration error', async () => {
    await assert.rejects(createStore({ databaseUrl: 'mysql://localhost/db' }), rejectsWith(ErrorCodes.CONFIG))
    await assert.rejects(createStore({}), rejectsWith(ErrorCodes.CONFIG))
  })
})
