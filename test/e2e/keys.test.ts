import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import Database from 'better-sqlite3'
import { hashKey } from '../../src/auth/keys.js'
import { CLI } from '../helpers/processes.js'
import {
  ADMIN_KEY,
  admin,
  echoWorker,
  modelsWith,
  SHARED_WORKER_TOKEN,
  STATIC_KEY,
  startWiredServer,
  type WiredServer,
} from '../helpers/servers.js'

describe('keys on the embedded store (SQLite, in-process cache)', () => {
  let server: WiredServer
  let dataDir: string
  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'gpuf-keys-'))
    server = await startWiredServer({ dataDir })
  })
  after(() => server.close())

  test('a created key works at once; only its hash and prefix are stored', async () => {
    const created = await admin(server, 'POST', '/api/v1/keys', { name: 'alice laptop' })
    assert.equal(created.status, 201)
    const key = created.body['key'] as string
    assert.match(key, /^gpuf_[a-z0-9]{12}_/)
    assert.equal((await modelsWith(server, key)).status, 200)
    assert.equal((await modelsWith(server, `${key}x`)).status, 401)
    const db = new Database(join(dataDir, 'gpufabric.db'), { readonly: true })
    try {
      const rows = db.prepare('SELECT * FROM api_keys').all() as Record<string, unknown>[]
      const dump = JSON.stringify(rows)
      assert.ok(!dump.includes(key), 'the full key is not in the database')
      const row = rows.find((r) => r['id'] === created.body['id'])!
      assert.equal(row['hash'], hashKey(key))
    } finally {
      db.close()
    }
  })

  test('the management API needs the admin key; API keys without a management scope are not enough', async () => {
    const res = await fetch(`${server.apiUrl}/api/v1/keys`, {
      headers: { authorization: `Bearer ${STATIC_KEY}` },
    })
    // A valid key without the right: 403, saying which scope is missing (a wrong key is 401).
    assert.equal(res.status, 403)
    assert.match(await res.text(), /scope/)
    const wrong = await fetch(`${server.apiUrl}/api/v1/keys`, {
      headers: { authorization: 'Bearer gpuf_wrong' },
    })
    assert.equal(wrong.status, 401)
    await wrong.arrayBuffer()
    assert.equal((await admin(server, 'GET', '/api/v1/keys')).status, 200)
  })

  test('revoking through the API refuses the key at once; rotation swaps keys', async () => {
    const created = await admin(server, 'POST', '/api/v1/keys', { name: 'to revoke' })
    const key = created.body['key'] as string
    assert.equal((await modelsWith(server, key)).status, 200)
    const revoked = await admin(server, 'DELETE', `/api/v1/keys/${created.body['id']}`)
    assert.equal(revoked.status, 200)
    assert.equal((await modelsWith(server, key)).status, 401)
    assert.equal((await admin(server, 'DELETE', `/api/v1/keys/${created.body['id']}`)).status, 404)

    const other = await admin(server, 'POST', '/api/v1/keys', { name: 'to rotate', rpmLimit: 1000 })
    const rotated = await admin(server, 'POST', `/api/v1/keys/${other.body['id']}/rotate`)
    assert.equal(rotated.status, 201)
    assert.equal(rotated.body['rpmLimit'], 1000)
    assert.equal((await modelsWith(server, other.body['key'] as string)).status, 401)
    assert.equal((await modelsWith(server, rotated.body['key'] as string)).status, 200)
  })

  test('expired keys, model allow-lists and bad input are refused clearly', async () => {
    const expired = await admin(server, 'POST', '/api/v1/keys', {
      expiresAt: new Date(Date.now() - 1000).toISOString(),
    })
    const res = await modelsWith(server, expired.body['key'] as string)
    assert.equal(res.status, 401)
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /expired/)
    const limited = await admin(server, 'POST', '/api/v1/keys', { models: ['only-this'] })
    const chat = await fetch(`${server.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${limited.body['key']}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'something-else', messages: [] }),
    })
    assert.equal(chat.status, 403)
    assert.equal((await admin(server, 'POST', '/api/v1/keys', { rpmLimit: -1 })).status, 400)
    const snake = await admin(server, 'POST', '/api/v1/keys', { rpm_limit: 7, tpm: 900, expires_in_days: 3 })
    assert.equal(snake.status, 201)
    assert.equal(snake.body['rpmLimit'], 7)
    assert.equal(snake.body['tpmLimit'], 900)
    assert.ok(snake.body['expiresAt'])
    assert.equal((await admin(server, 'POST', '/api/v1/keys', { nmae: 'typo' })).status, 400)
  })

  test('SQL fragments in names and ids are stored and matched literally', async () => {
    const evil = "x'; DROP TABLE api_keys; --"
    const created = await admin(server, 'POST', '/api/v1/keys', { name: evil, user: "bob' OR '1'='1" })
    assert.equal(created.status, 201)
    assert.equal(created.body['name'], evil)
    assert.equal(
      (await admin(server, 'DELETE', `/api/v1/keys/${encodeURIComponent("' OR '1'='1")}`)).status,
      404,
    )
    const listed = await admin(server, 'GET', '/api/v1/keys')
    const keys = listed.body['keys'] as { id: string; revokedAt: string | null; name: string | null }[]
    assert.ok(
      keys.some((k) => k.name === evil && k.revokedAt === null),
      'nothing was revoked or dropped',
    )
    const forged = `gpuf_${"'or'1'='1".padEnd(12, 'x')}_secret`
    assert.equal((await modelsWith(server, forged)).status, 401)
  })

  test('rate limits answer 429 with x-ratelimit headers and retry-after', async () => {
    const created = await admin(server, 'POST', '/api/v1/keys', { rpmLimit: 3 })
    const key = created.body['key'] as string
    const statuses: number[] = []
    let refused: Response | undefined
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${server.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'echo', messages: [] }),
      })
      statuses.push(res.status)
      if (res.status === 429) refused = res
      await res.arrayBuffer()
    }
    // No worker serves 'echo' here: admitted requests end in 503, refused ones in 429.
    assert.deepEqual(statuses, [503, 503, 503, 429, 429])
    assert.equal(refused!.headers.get('x-ratelimit-limit-requests'), '3')
    assert.equal(refused!.headers.get('x-ratelimit-remaining-requests'), '0')
    assert.match(refused!.headers.get('x-ratelimit-reset-requests') ?? '', /^\d+(\.\d+)?s$/)
    assert.ok(Number(refused!.headers.get('retry-after')) >= 1)
  })

  test('changed limits hold at once, even for a key this server has cached', async () => {
    const created = await admin(server, 'POST', '/api/v1/keys', { name: 'to limit' })
    const key = created.body['key'] as string
    const chat = (model: string) =>
      fetch(`${server.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [] }),
      }).then(async (res) => {
        await res.arrayBuffer()
        return res
      })
    assert.equal((await modelsWith(server, key)).status, 200)
    const patched = await admin(server, 'PATCH', `/api/v1/keys/${created.body['id']}`, {
      models: ['only-this'],
      rpmLimit: 2,
    })
    assert.equal(patched.status, 200)
    assert.deepEqual(patched.body['models'], ['only-this'])
    assert.equal((await chat('something-else')).status, 403)
    // Two admitted (503: no worker serves it here), the third refused by the new limit.
    const statuses = [(await chat('only-this')).status, (await chat('only-this')).status]
    const limited = await chat('only-this')
    assert.deepEqual([...statuses, limited.status], [503, 503, 429])
    assert.equal(limited.headers.get('x-ratelimit-limit-requests'), '2')
    const cleared = await admin(server, 'PATCH', `/api/v1/keys/${created.body['id']}`, {
      models: null,
      rpmLimit: null,
    })
    assert.equal(cleared.body['models'], null)
    assert.notEqual((await chat('something-else')).status, 403)
    assert.equal(
      (await admin(server, 'PATCH', `/api/v1/keys/${created.body['id']}`, { rpmLimit: 0 })).status,
      400,
    )
    assert.equal(
      (await admin(server, 'PATCH', `/api/v1/keys/${created.body['id']}`, { scope: 'manage' })).status,
      400,
    )
  })

  test('worker tokens: a client id registered by one user cannot be taken by another', async () => {
    const alice = await admin(server, 'POST', '/api/v1/keys', { kind: 'worker', user: 'alice' })
    const bob = await admin(server, 'POST', '/api/v1/keys', { kind: 'worker', user: 'bob' })
    const agent = (token: string, clientId: string) => echoWorker(server, clientId, { token })
    const a = agent(alice.body['key'] as string, 'gpu-box-1')
    a.start()
    await a.ready(AbortSignal.timeout(5_000))
    for (const token of [bob.body['key'] as string, SHARED_WORKER_TOKEN]) {
      const thief = agent(token, 'gpu-box-1')
      const refused = once(thief, 'refused')
      thief.start()
      const [reason] = (await refused) as [string]
      assert.match(reason, /registered to another user/)
      await thief.stop()
    }
    assert.equal(a.connected, true)
    const stored = await admin(server, 'GET', '/api/v1/workers/gpu-box-1')
    assert.equal(stored.status, 200)
    await a.stop()
  })

  test('every forwarded request is metered with its tokens, shared and dedicated keys alike', async () => {
    const worker = echoWorker(server, 'tracker-box', { models: ['echo-tracked'] })
    worker.start()
    await worker.ready(AbortSignal.timeout(5_000))
    try {
      const shared = await admin(server, 'POST', '/api/v1/keys', { name: 'tracked' })
      const dedicated = await admin(server, 'POST', '/api/v1/keys', {
        accessLevel: 'dedicated',
        workerIds: ['tracker-box'],
      })
      for (const key of [shared.body['key'], dedicated.body['key']] as string[]) {
        for (const stream of [false, true]) {
          const res = await fetch(`${server.baseUrl}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify({
              model: 'echo-tracked',
              messages: [{ role: 'user', content: 'count me' }],
              stream,
            }),
          })
          assert.equal(res.status, 200)
          await res.arrayBuffer()
        }
      }
      for (const key of [shared, dedicated]) {
        const deadline = Date.now() + 10_000
        let rows: Record<string, unknown>[] = []
        while (rows.length < 2 && Date.now() < deadline) {
          const listed = await admin(server, 'GET', `/api/v1/requests?keyId=${key.body['id']}`)
          rows = listed.body['requests'] as Record<string, unknown>[]
          await new Promise((r) => setTimeout(r, 100))
        }
        assert.equal(rows.length, 2)
        for (const row of rows) {
          assert.equal(row['model'], 'echo-tracked')
          assert.equal(row['workerId'], 'tracker-box')
          assert.equal(row['status'], 200)
          // Streamed or not, the engine's own counts (a stream is asked for its usage).
          assert.ok((row['totalTokens'] as number) > 0)
        }
      }
    } finally {
      await worker.stop()
    }
  })

  test('keys never reach the logs', async () => {
    const created = await admin(server, 'POST', '/api/v1/keys', { name: 'secret-check' })
    const key = created.body['key'] as string
    await modelsWith(server, key)
    await modelsWith(server, `${key}wrong`)
    await admin(server, 'DELETE', `/api/v1/keys/${created.body['id']}`)
    await modelsWith(server, key)
    const logs = server.logs()
    assert.ok(logs.length > 0, 'the server logged something')
    for (const secret of [key, ADMIN_KEY, STATIC_KEY, SHARED_WORKER_TOKEN]) {
      assert.ok(!logs.includes(secret), 'a secret reached the logs')
    }
  })
})

describe('gpufabric keys (CLI) on the data dir the server uses', () => {
  let server: WiredServer
  let dataDir: string
  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'gpuf-cli-keys-'))
    server = await startWiredServer({ dataDir })
  })
  after(() => server.close())
  const cli = (...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args, '--data-dir', dataDir], { encoding: 'utf8' })
    return { status: r.status, out: r.stdout, err: r.stderr }
  }

  test('create --json, list, revoke (seen by the running server within 2 s), rotate, db migrate', async () => {
    const created = cli('keys', 'create', '--name', 'ci', '--rpm', '100', '--json')
    assert.equal(created.status, 0, created.err)
    const key = JSON.parse(created.out) as { id: string; key: string; rpmLimit: number }
    assert.ok(key.id && key.key.startsWith('gpuf_'))
    assert.equal(key.rpmLimit, 100)
    assert.equal((await modelsWith(server, key.key)).status, 200)
    const listed = JSON.parse(cli('keys', 'list', '--json').out) as { id: string }[]
    assert.ok(listed.some((k) => k.id === key.id))
    assert.ok(!cli('keys', 'list', '--json').out.includes(key.key))
    assert.equal(cli('keys', 'revoke', key.id, '--json').status, 0)
    // The server polls for revocations every 500 ms (LIMITS: "within a second"); 2 s leaves
    // room for a loaded machine, and the 5-minute key cache it must beat is 150 times that.
    const t0 = Date.now()
    while ((await modelsWith(server, key.key)).status !== 401) {
      assert.ok(Date.now() - t0 < 2_000, 'revocation by the CLI not seen within 2 s')
      await new Promise((r) => setTimeout(r, 25))
    }
    assert.equal(cli('keys', 'revoke', key.id).status, 2)
    const worker = JSON.parse(cli('keys', 'create', '--worker', '--user', 'carol', '--json').out) as {
      key: string
      kind: string
    }
    assert.equal(worker.kind, 'worker')
    assert.ok(worker.key.startsWith('gpufw_'))
    const rotated = JSON.parse(
      cli('keys', 'rotate', JSON.parse(cli('keys', 'create', '--json').out).id, '--json').out,
    )
    assert.ok(rotated.key.startsWith('gpuf_'))
    assert.match(cli('db', 'migrate').out, /schema up to date/)
  })

  test("finds the server's database through the server's config file and environment, as the server does", async () => {
    const config = join(dataDir, 'server.json')
    writeFileSync(config, JSON.stringify({ 'data-dir': dataDir, 'api-port': 0 }))
    const bare = (args: string[], env: NodeJS.ProcessEnv = {}) => {
      const r = spawnSync(process.execPath, [CLI, ...args], {
        encoding: 'utf8',
        env: { ...process.env, ...env },
      })
      return { status: r.status, out: r.stdout, err: r.stderr }
    }
    const viaConfig = bare(['keys', 'create', '--name', 'from-config', '--json', '--config', config])
    assert.equal(viaConfig.status, 0, viaConfig.err)
    assert.equal((await modelsWith(server, JSON.parse(viaConfig.out).key)).status, 200)
    const viaEnv = bare(['keys', 'create', '--name', 'from-env', '--json'], { GPUF_DATA_DIR: dataDir })
    assert.equal(viaEnv.status, 0, viaEnv.err)
    assert.equal((await modelsWith(server, JSON.parse(viaEnv.out).key)).status, 200)
  })
})
