import assert from 'node:assert/strict'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { SERVER_OPTIONS } from '../../src/cli/options.js'
import { resolveOptions } from '../../src/config/index.js'

test('defaults are the seed ports', () => {
  const o = resolveOptions(SERVER_OPTIONS, {}, {})
  assert.deepEqual(
    [o['controlPort'], o['proxyPort'], o['publicPort'], o['apiPort']],
    [17000, 17001, 18080, 18081],
  )
})

test('flag beats environment beats config file beats default', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gpuf-config-'))
  const file = join(dir, 'config.json')
  await writeFile(file, JSON.stringify({ 'public-port': 1111, apiPort: 2222, 'control-port': 3333 }))
  const env = { GPUF_CONFIG: file, GPUF_PUBLIC_PORT: '4444', API_KEY: 'k1,k2' }
  const o = resolveOptions(SERVER_OPTIONS, { publicPort: '5555' }, env)
  assert.equal(o['publicPort'], 5555)
  assert.equal(resolveOptions(SERVER_OPTIONS, {}, env)['publicPort'], 4444)
  assert.equal(o['apiPort'], 2222)
  assert.equal(o['controlPort'], 3333)
  assert.equal(o['proxyPort'], 17001)
  assert.deepEqual(o['apiKey'], ['k1', 'k2'])
})

test('unknown config keys and bad values are refused with guidance', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gpuf-config-'))
  const file = join(dir, 'config.json')
  await writeFile(file, JSON.stringify({ 'contrl-port': 1 }))
  assert.throws(
    () => resolveOptions(SERVER_OPTIONS, { config: file }, {}),
    /unknown option 'contrl-port'.*did you mean 'control-port'/,
  )
  assert.throws(
    () => resolveOptions(SERVER_OPTIONS, { publicPort: 'eighty' }, {}),
    /--public-port: expected a non-negative integer/,
  )
  await writeFile(file, '{ not json')
  assert.throws(() => resolveOptions(SERVER_OPTIONS, { config: file }, {}), /cannot read config file/)
})
