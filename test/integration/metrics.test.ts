/**
 * `GET /metrics` on the API port: Prometheus text format, admin key only, and after known
 * requests its counters equal them by status, model, route and error code.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { after, before, test } from 'node:test'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { API_KEY, startFabric, type TestFabric, waitFor } from '../helpers/fabric.js'
import { unavailable } from '../helpers/services.js'

let fabric: TestFabric

before(async () => {
  fabric = await startFabric({ heartbeatIntervalMs: 200 })
  await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'metrics-w1')
})

after(async () => {
  await fabric?.close()
})

async function scrape(): Promise<string> {
  const res = await fetch(`${fabric.apiUrl}/metrics`, { headers: { authorization: `Bearer ${API_KEY}` } })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  return res.text()
}

/** The value of one sample (`name{labels}`), labels given in any order. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null || match[1] !== name) continue
    const got = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    )
    if (
      Object.entries(labels).every(([k, v]) => got[k] === v) &&
      Object.keys(got).length === Object.keys(labels).length
    )
      return Number(match[3])
  }
  return undefined
}

const chat = (key: string, model: string, stream = false) =>
  fetch(`${fabric.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'count me in' }] }),
  }).then(async (res) => {
    await res.arrayBuffer()
    return res.status
  })

test('every sample line is well formed, with HELP and TYPE for each metric', async () => {
  const text = await scrape()
  const typed = new Set<string>()
  for (const line of text.split('\n')) {
    if (line === '') continue
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line)
    if (meta !== null) {
      if (meta[1] === 'TYPE') {
        assert.match(meta[3]!, /^(counter|gauge|histogram|summary|untyped)$/)
        typed.add(meta[2]!)
      }
      continue
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$/.exec(line)
    assert.ok(m !== null, `malformed sample line: ${line}`)
    const family = m[1]!.replace(/_(bucket|sum|count)$/, '')
    assert.ok(typed.has(m[1]!) || typed.has(family), `no TYPE for ${m[1]}`)
  }
  for (const name of [
    'gen_ai_server_request_duration_seconds',
    'gen_ai_server_time_to_first_token_seconds',
    'gen_ai_client_token_usage',
    'gpufabric_requests_total',
    'gpufabric_errors_total',
    'gpufabric_requests_in_flight',
    'gpufabric_workers_connected',
  ])
    assert.ok(typed.has(name), name)
})

test('after known requests the counters equal them by status, model, route and error code', async () => {
  const statuses: number[] = []
  for (let i = 0; i < 5; i++) statuses.push(await chat(API_KEY, 'echo'))
  for (let i = 0; i < 2; i++) statuses.push(await chat(API_KEY, 'echo', true))
  for (let i = 0; i < 3; i++) statuses.push(await chat(API_KEY, 'no-such-model'))
  for (let i = 0; i < 2; i++) statuses.push(await chat('wrong-key', 'echo'))
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 200, 404, 404, 404, 401, 401])
  await waitFor(
    () => (fabric.server.registry.byClientId('metrics-w1')?.metrics?.cpuPercent ?? -1) >= 0,
    5_000,
  )
  // Responses are counted when they close: give the last ones a moment.
  let text = await scrape()
  for (
    let i = 0;
    i < 50 &&
    sample(text, 'gpufabric_http_responses_total', { route: '/v1/chat/completions', status: '401' }) !== 2;
    i++
  ) {
    await new Promise((r) => setTimeout(r, 20))
    text = await scrape()
  }
  const model = { gen_ai_request_model: 'echo' }
  assert.equal(sample(text, 'gpufabric_requests_total', { ...model, status: '200' }), 7)
  assert.equal(
    sample(text, 'gpufabric_http_responses_total', { route: '/v1/chat/completions', status: '200' }),
    7,
  )
  assert.equal(
    sample(text, 'gpufabric_http_responses_total', { route: '/v1/chat/completions', status: '404' }),
    3,
  )
  assert.equal(
    sample(text, 'gpufabric_http_responses_total', { route: '/v1/chat/completions', status: '401' }),
    2,
  )
  assert.equal(sample(text, 'gpufabric_errors_total', { code: 'GPUF_MODEL_NOT_FOUND' }), 3)
  assert.equal(sample(text, 'gpufabric_errors_total', { code: 'GPUF_UNAUTHORIZED' }), 2)
  assert.equal(
    sample(text, 'gen_ai_server_request_duration_seconds_count', {
      ...model,
      http_response_status_code: '200',
    }),
    7,
  )
  assert.equal(sample(text, 'gen_ai_server_time_to_first_token_seconds_count', model), 7)
  // Streamed requests are metered too (the engine is asked for its usage).
  assert.equal(sample(text, 'gen_ai_client_token_usage_count', { ...model, gen_ai_token_type: 'input' }), 7)
  assert.equal(sample(text, 'gen_ai_client_token_usage_count', { ...model, gen_ai_token_type: 'output' }), 7)
  assert.ok((sample(text, 'gpufabric_tokens_total', { ...model, gen_ai_token_type: 'output' }) ?? 0) >= 7)
  assert.equal(sample(text, 'gpufabric_unmetered_requests_total', model), undefined)
  assert.equal(sample(text, 'gpufabric_workers_connected'), 1)
  assert.equal(sample(text, 'gpufabric_requests_in_flight'), 0)
  assert.ok(sample(text, 'gpufabric_worker_cpu_percent', { worker: 'metrics-w1' }) !== undefined)
})

test('promtool check metrics accepts the exposition', { skip: unavailable('promtool') }, async () => {
  await chat(API_KEY, 'echo')
  const text = await scrape()
  const checked = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
  assert.equal(checked.status, 0, `promtool: ${checked.stdout}${checked.stderr}`)
  assert.equal(`${checked.stdout}${checked.stderr}`.trim(), '', 'no lint findings')
})

test('/metrics needs the admin key', async () => {
  const none = await fetch(`${fabric.apiUrl}/metrics`)
  assert.equal(none.status, 401)
  await none.arrayBuffer()
  const wrong = await fetch(`${fabric.apiUrl}/metrics`, { headers: { authorization: 'Bearer nope' } })
  assert.equal(wrong.status, 401)
  await wrong.arrayBuffer()
})
