import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { KeyAuthenticator } from '../../src/auth/authenticator.js'
import { hashKey, keyMatches, mintKey, parseKey } from '../../src/auth/keys.js'
import { countTokens } from '../../src/auth/rate-limit.js'
import { ErrorCodes, FabricError } from '../../src/errors/index.js'
import { silentLogger } from '../../src/observability/logger.js'
import type { KeyRecord, Store } from '../../src/store/index.js'

test('minted keys parse back to their kind and prefix; anything else does not parse', () => {
  const api = mintKey('api')
  const worker = mintKey('worker')
  assert.deepEqual(parseKey(api.key), { kind: 'api', prefix: api.prefix })
  assert.deepEqual(parseKey(worker.key), { kind: 'worker', prefix: worker.prefix })
  assert.equal(api.hash, hashKey(api.key))
  assert.ok(keyMatches(api.key, api.hash))
  assert.ok(!keyMatches(`${api.key}x`, api.hash))
  assert.ok(!keyMatches(api.key, 'abcd'))
  for (const bad of [
    '',
    'gpuf_',
    'gpuf_short_x',
    "gpuf_'or'1'='1'x_y",
    'gpuf_static_ABCDEFGHIJKL',
    'sk-abc',
    `x${api.key}`,
  ]) {
    assert.equal(parseKey(bad), undefined, bad)
  }
})

test('token usage is read from OpenAI and Ollama answers, or estimated', () => {
  assert.deepEqual(countTokens('{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}', 100), {
    total: 7,
    prompt: 3,
    completion: 4,
    reported: true,
  })
  const sse =
    'data: {"usage":null}\n\ndata: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\ndata: [DONE]\n\n'
  assert.equal(countTokens(sse, 10).total, 3)
  const ndjson = '{"done":false}\n{"done":true,"prompt_eval_count":5,"eval_count":9}\n'
  assert.deepEqual(countTokens(ndjson, 10), { total: 14, prompt: 5, completion: 9, reported: true })
  assert.deepEqual(countTokens('plain text', 41), {
    total: 11,
    prompt: null,
    completion: null,
    reported: false,
  })
})

function record(key: ReturnType<typeof mintKey>, extra: Partial<KeyRecord> = {}): KeyRecord {
  return {
    id: 'key_1',
    prefix: key.prefix,
    hash: key.hash,
    kind: 'api',
    userId: 'usr_1',
    name: null,
    accessLevel: 'shared',
    scope: 'inference',
    workerIds: [],
    models: null,
    rpmLimit: null,
    tpmLimit: null,
    expiresAt: null,
    revokedAt: null,
    createdAt: new Date(),
    ...extra,
  }
}

/** A store that serves one key and can be switched off. */
function fakeStore(rec: KeyRecord | undefined) {
  const state = { down: false, lookups: 0 }
  const store = {
    async findKeyByPrefix(prefix: string) {
      state.lookups++
      await new Promise((r) => setTimeout(r, 5))
      if (state.down) throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, 'down', { retryable: true })
      return rec !== undefined && rec.prefix === prefix ? rec : undefined
    },
    async keysRevokedSince() {
      return []
    },
  } as unknown as Store
  return { store, state }
}

test('concurrent lookups of one key share one query; unknown keys are remembered as unknown', async () => {
  const key = mintKey('api')
  const { store, state } = fakeStore(record(key))
  const auth = new KeyAuthenticator({ staticKeys: ['static-1'], store, logger: silentLogger() })
  const verdicts = await Promise.all(Array.from({ length: 20 }, () => auth.authenticate(key.key)))
  assert.ok(verdicts.every((v) => v.ok))
  assert.equal(state.lookups, 1)
  assert.ok(auth.checkCached(key.key) !== undefined, 'now answered without I/O')
  assert.equal(auth.checkCached('static-1')?.keyId, 'static')
  const stranger = mintKey('api').key
  assert.deepEqual(await auth.authenticate(stranger), { ok: false, reason: 'invalid' })
  assert.deepEqual(await auth.authenticate(stranger), { ok: false, reason: 'invalid' })
  assert.equal(state.lookups, 2, 'the second try of an unknown key is answered from the negative cache')
})

test('with the database down a known key keeps working, an unknown one is "unavailable", a wrong secret is refused', async () => {
  const key = mintKey('api')
  const { store, state } = fakeStore(record(key))
  const auth = new KeyAuthenticator({ staticKeys: [], store, logger: silentLogger(), localTtlMs: 1 })
  assert.ok((await auth.authenticate(key.key)).ok)
  await new Promise((r) => setTimeout(r, 5)) // the local entry is now stale
  state.down = true
  assert.ok((await auth.authenticate(key.key)).ok, 'stale entry used while the database is down')
  assert.deepEqual(await auth.authenticate(mintKey('api').key), { ok: false, reason: 'unavailable' })
  state.down = false
  const wrong = `${key.key.slice(0, -1)}${key.key.endsWith('A') ? 'B' : 'A'}`
  assert.deepEqual(await auth.authenticate(wrong), { ok: false, reason: 'invalid' })
})

test('expired and revoked keys are refused; invalidation drops a trusted key', async () => {
  const key = mintKey('api')
  const expired = new KeyAuthenticator({
    staticKeys: [],
    store: fakeStore(record(key, { expiresAt: new Date(Date.now() - 1) })).store,
    logger: silentLogger(),
  })
  assert.deepEqual(await expired.authenticate(key.key), { ok: false, reason: 'expired' })
  const revoked = new KeyAuthenticator({
    staticKeys: [],
    store: fakeStore(record(key, { revokedAt: new Date() })).store,
    logger: silentLogger(),
  })
  assert.deepEqual(await revoked.authenticate(key.key), { ok: false, reason: 'invalid' })
  const live = new KeyAuthenticator({
    staticKeys: [],
    store: fakeStore(record(key)).store,
    logger: silentLogger(),
  })
  assert.ok((await live.authenticate(key.key)).ok)
  await live.invalidate(key.prefix)
  assert.equal(live.checkCached(key.key), undefined)
})

test('countTokens finds the last usage figure exactly as the regex /"key"\\s*:\\s*(\\d+)/ would', () => {
  const reference = (tail: string, key: string): number | null => {
    let value: string | undefined
    for (const match of tail.matchAll(new RegExp(`"${key}"[ \\t\\n\\r]*:[ \\t\\n\\r]*(\\d+)`, 'g')))
      value = match[1]
    return value === undefined ? null : Number(value)
  }
  const piece = fc.constantFrom(
    '"total_tokens"',
    '"prompt_tokens"',
    '"completion_tokens"',
    '"eval_count"',
    '"prompt_eval_count"',
    ':',
    ' ',
    '\n',
    '12',
    '7',
    ',',
    '{',
    '}',
    'x',
    '"',
    'null',
  )
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 40 }), (parts) => {
      const tail = parts.join('')
      const counted = countTokens(tail, 40)
      const total = reference(tail, 'total_tokens')
      if (total !== null) {
        assert.equal(counted.total, total)
        assert.equal(counted.prompt, reference(tail, 'prompt_tokens'))
        assert.equal(counted.completion, reference(tail, 'completion_tokens'))
        return
      }
      const completion = reference(tail, 'eval_count')
      assert.equal(counted.completion, completion)
      if (completion !== null) assert.equal(counted.prompt, reference(tail, 'prompt_eval_count'))
      else assert.equal(counted.reported, false)
    }),
    { numRuns: 3000 },
  )
})
