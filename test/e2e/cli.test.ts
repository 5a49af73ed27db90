import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { CLI, type CliProcess, freePorts, startCli } from '../helpers/processes.js'

let dir: string
const started: CliProcess[] = []

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gpuf-cli-'))
})
after(async () => {
  for (const p of started) await p.kill('SIGKILL')
  await rm(dir, { recursive: true, force: true })
})

function portFlags(ports: number[]): string[] {
  return [
    '--host',
    '127.0.0.1',
    '--control-port',
    String(ports[0]),
    '--proxy-port',
    String(ports[1]),
    '--public-port',
    String(ports[2]),
    '--api-port',
    String(ports[3]),
  ]
}

test('`up --echo` serves a chat completion with the key it prints', async () => {
  const ports = await freePorts(4)
  const up = startCli([
    'up',
    '--echo',
    '--data-dir',
    join(dir, 'up'),
    '--log-level',
    'warn',
    ...portFlags(ports),
  ])
  started.push(up)
  await up.waitForOutput('try:')
  const key = /api key:\s+(\S+)/.exec(up.output())?.[1]
  assert.ok(key?.startsWith('gpuf_'), up.output())
  assert.match(up.output(), /created API key \(shown once\)/)
  assert.match(up.output(), /fingerprint: [0-9A-F:]{95}/)
  assert.doesNotMatch(readFileSync(join(dir, 'up', 'api-key'), 'utf8'), /^$/)
  const res = await fetch(`http://127.0.0.1:${ports[2]}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'from the CLI' }] }),
  })
  assert.equal(res.status, 200)
  assert.equal(
    ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]?.message.content,
    'echo: from the CLI',
  )
  const adminKey = /created admin key \(shown once\): (\S+)/.exec(up.output())?.[1]
  assert.ok(adminKey)
  const apiUrl = `http://127.0.0.1:${ports[3]}`
  const monitor = spawnSync(
    process.execPath,
    [CLI, 'monitor', '--once', '--api-url', apiUrl, '--admin-key', adminKey],
    {
      encoding: 'utf8',
    },
  )
  assert.equal(monitor.status, 0, monitor.stderr)
  assert.match(monitor.stdout, /CLIENT ID[\s\S]*echo[\s\S]*1 worker\n/)
  const json = spawnSync(
    process.execPath,
    [CLI, 'monitor', '--json', '--api-url', apiUrl, '--admin-key', adminKey],
    {
      encoding: 'utf8',
    },
  )
  assert.deepEqual(
    (JSON.parse(json.stdout) as { models: string[] }[]).map((w) => w.models),
    [['echo']],
  )
  const refused = spawnSync(
    process.execPath,
    [CLI, 'monitor', '--once', '--api-url', apiUrl, '--admin-key', 'wrong'],
    {
      encoding: 'utf8',
    },
  )
  assert.equal(refused.status, 2)
  await up.kill('SIGTERM')
  assert.equal(up.child.exitCode, 0, 'SIGTERM stops it cleanly')
})

test('`up --model-path` serves a GGUF file with the embedded llama.cpp engine', async (t) => {
  if (
    !(await import('node-llama-cpp').then(
      () => true,
      () => false,
    ))
  ) {
    t.skip('node-llama-cpp is not installed')
    return
  }
  const { writeTinyLlamaGguf } = await import('../fixtures/tiny-gguf.js')
  const model = join(dir, 'tiny-up.gguf')
  await writeTinyLlamaGguf(model)
  const ports = await freePorts(4)
  const up = startCli([
    'up',
    '--model-path',
    model,
    '--data-dir',
    join(dir, 'up-gguf'),
    '--log-level',
    'warn',
    ...portFlags(ports),
  ])
  started.push(up)
  await up.waitForOutput('try:', 30_000)
  assert.match(up.output(), /local worker serving embedded llama\.cpp .*: tiny-up/)
  const key = /api key:\s+(\S+)/.exec(up.output())?.[1]
  const res = await fetch(`http://127.0.0.1:${ports[2]}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny-up', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 }),
  })
  assert.equal(res.status, 200)
  const body = (await res.json()) as {
    choices: { message: { content: string } }[]
    usage: { completion_tokens: number }
  }
  assert.ok(body.usage.completion_tokens > 0)
  await up.kill('SIGTERM')
})

test('gpuf-s and gpuf-c aliases; the worker trusts the local data dir and keeps a stable client id', async () => {
  const ports = await freePorts(4)
  const data = join(dir, 'alias')
  const bin = (name: string) => fileURLToPath(new URL(`../../src/cli/${name}.js`, import.meta.url))
  const s = spawn(
    process.execPath,
    [bin('gpuf-s'), '--data-dir', data, '--log-level', 'warn', ...portFlags(ports)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let out = ''
  s.stdout.on('data', (c: Buffer) => {
    out += c
  })
  // The worker reads the token and certificate the server writes on its first start.
  const deadline0 = Date.now() + 15_000
  while (!out.includes('gpufabric server ready') && Date.now() < deadline0)
    await new Promise((r) => setTimeout(r, 50))
  const c = spawn(
    process.execPath,
    [
      bin('gpuf-c'),
      '--engine-type',
      'echo',
      '--data-dir',
      data,
      '--control-port',
      String(ports[0]),
      '--proxy-port',
      String(ports[1]),
      '--log-level',
      'warn',
    ],
    { stdio: 'ignore' },
  )
  try {
    const deadline = Date.now() + 15_000
    let workers: { clientId: string }[] = []
    while (Date.now() < deadline) {
      const key = existsSync(join(data, 'admin-key'))
        ? readFileSync(join(data, 'admin-key'), 'utf8').trim()
        : ''
      workers = await fetch(`http://127.0.0.1:${ports[3]}/api/v1/workers`, {
        headers: { authorization: `Bearer ${key}` },
      })
        .then((r) => r.json() as Promise<{ workers: { clientId: string }[] }>)
        .then((b) => b.workers ?? [])
        .catch(() => [])
      if (workers.length > 0) break
      await new Promise((r) => setTimeout(r, 100))
    }
    assert.equal(workers.length, 1, out)
    assert.equal(workers[0]?.clientId, readFileSync(join(data, 'client-id'), 'utf8').trim())
  } finally {
    c.kill('SIGKILL')
    s.kill('SIGKILL')
  }
})

test('`cert` writes a certificate and key and prints the fingerprint; bad options exit 2 with a message', () => {
  const out = spawnSync(process.execPath, [
    CLI,
    'cert',
    '--data-dir',
    join(dir, 'cert'),
    '--name',
    'fabric.example',
  ]).stdout.toString()
  assert.match(out, /sha256 fingerprint: [0-9A-F:]{95}/)
  assert.ok(existsSync(join(dir, 'cert', 'cert.pem')) && existsSync(join(dir, 'cert', 'key.pem')))
  const bad = spawnSync(process.execPath, [
    CLI,
    'worker',
    '--engine-type',
    'nope',
    '--token',
    'x',
    '--data-dir',
    join(dir, 'w'),
  ])
  assert.equal(bad.status, 2)
  assert.match(bad.stderr.toString(), /--engine-type must be one of/)
  const noToken = spawnSync(process.execPath, [
    CLI,
    'worker',
    '--server-addr',
    'fabric.example',
    '--data-dir',
    join(dir, 'w'),
  ])
  assert.equal(noToken.status, 2)
  assert.match(noToken.stderr.toString(), /worker token is required/)
})

test('`consumer` needs Kafka, and `server` refuses a bad --consume or --batch-size, with a message and exit 2', () => {
  const noKafka = spawnSync(process.execPath, [CLI, 'consumer', '--data-dir', join(dir, 'c')])
  assert.equal(noKafka.status, 2)
  assert.match(noKafka.stderr.toString(), /gpufabric consumer reads from Kafka: give --bootstrap-server/)
  const badBootstrap = spawnSync(process.execPath, [
    CLI,
    'consumer',
    '--bootstrap-server',
    'not a host',
    '--data-dir',
    join(dir, 'c'),
  ])
  assert.equal(badBootstrap.status, 2)
  assert.match(badBootstrap.stderr.toString(), /--bootstrap-server/)
  for (const [flag, value, says] of [
    ['--consume', 'sometimes', /--consume must be auto, on or off/],
    ['--batch-size', '0', /--batch-size must be at least 1/],
    ['--routing', 'random', /--routing is one of p2c, least-outstanding, weighted-round-robin/],
    ['--affinity', 'sticky', /--affinity is one of off, session, prefix, auto/],
  ] as const) {
    const bad = spawnSync(process.execPath, [CLI, 'server', flag, value, '--data-dir', join(dir, 's')])
    assert.equal(bad.status, 2, `${flag} ${value}`)
    assert.match(bad.stderr.toString(), says)
  }
})
