import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { MemoryBus, TOPICS } from '../../src/bus/index.js'
import { formatWorkers } from '../../src/cli/monitor.js'
import { ErrorCodes, FabricError } from '../../src/errors/index.js'
import { silentLogger } from '../../src/observability/logger.js'
import {
  MAX_HELD_EVENT_BYTES,
  UsageStripper,
  withStreamUsage,
} from '../../src/server/gateway/usage-stream.js'
import type { TelemetryBatch, TelemetryWrite } from '../../src/store/index.js'
import {
  decodeEvent,
  encodeEvent,
  type HeartbeatEvent,
  TelemetryConsumer,
  type UsageEvent,
} from '../../src/telemetry/index.js'

function usage(id: string, fields: Partial<UsageEvent> = {}): UsageEvent {
  return {
    v: 1,
    type: 'usage',
    id,
    at: 1_900_000_000_000,
    keyId: 'key_1',
    userId: null,
    model: 'm',
    workerId: 'w',
    path: '/v1/chat/completions',
    status: 200,
    stream: false,
    promptTokens: 1,
    completionTokens: 2,
    totalTokens: 3,
    ttfbMs: 1,
    durationMs: 2,
    bytesIn: 3,
    bytesOut: 4,
    ...fields,
  }
}

function heartbeat(id: string): HeartbeatEvent {
  return {
    v: 1,
    type: 'heartbeat',
    id,
    clientId: 'w',
    userId: null,
    at: 1_900_000_000_000,
    inflight: 0,
    models: 0,
    linkBytesIn: 0,
    linkBytesOut: 0,
    netInBytes: 0,
    netOutBytes: 0,
    metrics: { cpuPercent: 5 },
  }
}

test('events: encode/decode round trip; other versions, types and garbage are not decoded', () => {
  const e = usage('a')
  assert.deepEqual(decodeEvent(encodeEvent(e)), e)
  assert.deepEqual(decodeEvent(encodeEvent(heartbeat('h'))), heartbeat('h'))
  assert.equal(decodeEvent(Buffer.from(JSON.stringify({ ...e, v: 2 }))), undefined)
  assert.equal(decodeEvent(Buffer.from(JSON.stringify({ ...e, type: 'other' }))), undefined)
  assert.equal(decodeEvent(Buffer.from(JSON.stringify({ ...e, status: 'x' }))), undefined)
  assert.equal(decodeEvent(Buffer.from('{')), undefined)
  assert.equal(decodeEvent(Buffer.from([0xff, 0x00])), undefined)
  assert.equal(decodeEvent(Buffer.from('null')), undefined)
})

test('withStreamUsage: only streamed OpenAI requests that did not ask for usage', () => {
  const req = { model: 'm', stream: true, messages: [] }
  const out = withStreamUsage('/v1/chat/completions', req)
  assert.deepEqual(JSON.parse(out!.toString()), { ...req, stream_options: { include_usage: true } })
  assert.deepEqual(
    JSON.parse(withStreamUsage('/v1/completions', { ...req, stream_options: { other: 1 } })!.toString())
      .stream_options,
    { other: 1, include_usage: true },
  )
  assert.equal(withStreamUsage('/v1/chat/completions', { ...req, stream: false }), undefined)
  assert.equal(
    withStreamUsage('/v1/chat/completions', { ...req, stream_options: { include_usage: true } }),
    undefined,
  )
  assert.equal(withStreamUsage('/v1/embeddings', req), undefined)
  assert.equal(withStreamUsage('/api/chat', req), undefined)
  assert.equal(withStreamUsage('/v1/chat/completions', { ...req, stream_options: 'x' }), undefined)
})

/** An OpenAI-style stream of `n` chunks, with the usage extras when `withUsage`. */
function openaiStream(n: number, withUsage: boolean, spaced: boolean, crlf: boolean): string {
  const sep = crlf ? '\r\n\r\n' : '\n\n'
  const json = (v: object) => (spaced ? JSON.stringify(v).replaceAll('":', '": ') : JSON.stringify(v))
  const chunk = (i: number) => ({
    id: 'c',
    object: 'chat.completion.chunk',
    choices: [{ index: 0, delta: { content: `"usage":null, part ${i} ünï 🚀` }, finish_reason: null }],
  })
  let out = ''
  for (let i = 0; i < n; i++)
    out += `data: ${json(withUsage ? { ...chunk(i), usage: null } : chunk(i))}${sep}`
  if (withUsage) {
    out += `data: ${json({ id: 'c', object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 1, completion_tokens: n, total_tokens: n + 1 } })}${sep}`
  }
  return `${out}data: [DONE]${sep}`
}

test('UsageStripper: the stream with usage, cut anywhere, comes out as the stream without', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 6 }),
      fc.boolean(),
      fc.boolean(),
      fc.array(fc.integer({ min: 1, max: 400 }), { maxLength: 20 }),
      (n, spaced, crlf, cuts) => {
        const input = Buffer.from(openaiStream(n, true, spaced, crlf))
        const expected = openaiStream(n, false, spaced, crlf)
        const strip = new UsageStripper()
        const parts: Buffer[] = []
        let at = 0
        for (const cut of cuts) {
          if (at >= input.length) break
          parts.push(strip.push(input.subarray(at, at + cut)))
          at += cut
        }
        if (at < input.length) parts.push(strip.push(input.subarray(at)))
        parts.push(strip.flush())
        assert.equal(Buffer.concat(parts).toString(), expected)
      },
    ),
  )
})

test('UsageStripper: events without usage pass unchanged, an unterminated tail is flushed as it came', () => {
  const strip = new UsageStripper()
  assert.equal(
    strip.push(Buffer.from(': comment\n\nevent: x\ndata: {"a":1}\n\n')).toString(),
    ': comment\n\nevent: x\ndata: {"a":1}\n\n',
  )
  assert.equal(
    strip.push(Buffer.from('data: {"usage":{"total_tokens":1},"choices":[{"i":0}]}\n\n')).toString(),
    'data: {"usage":{"total_tokens":1},"choices":[{"i":0}]}\n\n',
    'a usage object next to choices is not the extra chunk',
  )
  assert.equal(strip.push(Buffer.from('data: {"x":')).length, 0)
  assert.equal(strip.flush().toString(), 'data: {"x":')
})

/** A store double that fails as told. */
class FakeStore {
  batches: TelemetryBatch[] = []
  ids = new Set<string>()
  down = 0
  poison = new Set<string>()

  async applyTelemetry(batch: TelemetryBatch): Promise<TelemetryWrite> {
    if (this.down > 0) {
      this.down--
      throw new FabricError(ErrorCodes.STORE_UNAVAILABLE, 'down', { retryable: true })
    }
    const all = [...batch.heartbeats, ...batch.usage]
    if (all.some((e) => this.poison.has(e.id))) throw new FabricError(ErrorCodes.BAD_REQUEST, 'refused')
    this.batches.push(batch)
    let written = 0
    for (const e of all) {
      if (this.ids.has(e.id)) continue
      this.ids.add(e.id)
      written++
    }
    return {
      heartbeats: batch.heartbeats.length,
      usage: written - batch.heartbeats.length,
      duplicates: all.length - written,
    }
  }

  async pruneTelemetry(): Promise<{ heartbeats: number; requests: number }> {
    return { heartbeats: 0, requests: 0 }
  }
}

async function until(check: () => boolean): Promise<void> {
  const end = Date.now() + 5_000
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 5))
  }
}

test('consumer: undecodable messages skipped and counted, a refused message isolated, a down database retried', async () => {
  const bus = new MemoryBus({ maxBuffered: 1000 })
  const store = new FakeStore()
  store.down = 2
  store.poison.add('u-bad')
  const consumer = new TelemetryConsumer({
    bus,
    store,
    logger: silentLogger(),
    groupId: 'g',
    batchSize: 50,
    batchTimeoutMs: 5,
    retentionMs: 0,
  })
  bus.publish(TOPICS.requests, 'k', Buffer.from('not json'))
  for (let i = 0; i < 10; i++) bus.publish(TOPICS.requests, 'k', encodeEvent(usage(`u-${i}`)))
  bus.publish(TOPICS.requests, 'k', encodeEvent(usage('u-bad')))
  bus.publish(TOPICS.heartbeats, 'w', encodeEvent(heartbeat('h-1')))
  bus.publish(TOPICS.requests, 'k', encodeEvent(usage('u-1'))) // redelivered by a producer retry
  consumer.start()
  await until(() => consumer.stats().batches >= 1)
  const stats = consumer.stats()
  assert.equal(stats.undecodable, 1)
  assert.equal(stats.refused, 1)
  assert.equal(stats.usage, 10)
  assert.equal(stats.heartbeats, 1)
  assert.equal(stats.duplicates, 1)
  assert.ok(stats.retries >= 2, 'the down database was retried')
  assert.equal(bus.stats().buffered, 0, 'committed')
  await consumer.stop()
  await bus.close()
})

test('decodeEvent and UsageStripper on arbitrary input: no throw, nothing invented, bytes without usage untouched', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
      const input = Buffer.from(bytes)
      const decoded = decodeEvent(input)
      assert.ok(decoded === undefined || decoded.v === 1)
      const strip = new UsageStripper()
      const out = Buffer.concat([strip.push(input), strip.flush()])
      // Only events holding a usage field may change, and only by losing bytes.
      if (input.indexOf('"usage"') < 0) assert.ok(out.equals(input))
      else assert.ok(out.length <= input.length)
    }),
    { numRuns: 2000 },
  )
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      const decoded = decodeEvent(Buffer.from(JSON.stringify(value) ?? 'null'))
      assert.ok(decoded === undefined || decoded.v === 1)
    }),
    { numRuns: 2000 },
  )
  // Text without a usage field passes through the stripper unchanged, however it is cut.
  fc.assert(
    fc.property(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.integer({ min: 1, max: 50 }),
      (text, cut) => {
        fc.pre(!text.includes('"usage"'))
        const strip = new UsageStripper()
        const input = Buffer.from(text)
        const out = [strip.push(input.subarray(0, cut)), strip.push(input.subarray(cut)), strip.flush()]
        assert.equal(Buffer.concat(out).toString(), Buffer.from(text).toString())
      },
    ),
    { numRuns: 2000 },
  )
})

test('monitor: the workers table shows CPU, memory, disk and every GPU', () => {
  const now = Date.parse('2030-01-01T00:00:10Z')
  const text = formatWorkers(
    [
      {
        clientId: 'gpu-box',
        engineType: 'vllm',
        models: ['llama3'],
        hostname: null,
        remoteAddress: '10.0.0.5',
        dataLinks: 1,
        inflight: 2,
        lastHeartbeatAt: '2030-01-01T00:00:05Z',
        metrics: {
          cpuPercent: 12.4,
          memPercent: 50.2,
          diskPercent: 71.6,
          gpus: [0, 1].map((index) => ({
            index,
            vendor: 'nvidia' as const,
            name: 'H100',
            uuid: null,
            utilizationPercent: 98,
            memoryUtilizationPercent: 60,
            memoryUsedBytes: 76 * 1024 ** 3,
            memoryTotalBytes: 80 * 1024 ** 3,
            temperatureC: 67,
            powerDrawW: index === 0 ? 690.4 : null,
            powerLimitW: 700,
            tflops: 989,
          })),
        },
      },
      {
        clientId: 'cpu-box',
        engineType: 'ollama',
        models: [],
        hostname: null,
        remoteAddress: '10.0.0.6',
        dataLinks: 1,
        inflight: 0,
        lastHeartbeatAt: '2030-01-01T00:00:09Z',
        metrics: null,
      },
    ],
    now,
  )
  const [header, gpuRow, cpuRow, total] = text.split('\n')
  assert.match(header!, /CPU %\s+MEM\s+DISK\s+SEEN\s+ADDRESS\s+GPUS\s+MODELS/)
  assert.match(
    gpuRow!,
    /gpu-box\s+vllm\s+1\s+2\s+12\s+50%\s+72%\s+5s ago\s+10\.0\.0\.5\s+0:98% 76\/80G 67C 690W \| 1:98% 76\/80G 67C\s+llama3/,
  )
  assert.match(cpuRow!, /cpu-box\s+ollama\s+1\s+0\s+-\s+-\s+-\s+1s ago\s+10\.0\.0\.6\s+-/)
  assert.equal(total, '2 workers')
})

test('UsageStripper holds at most MAX_HELD_EVENT_BYTES of an unfinished event: a stream without boundaries flows', () => {
  const strip = new UsageStripper()
  const chunk = Buffer.alloc(4096, 'x')
  let out = 0
  for (let i = 0; i < 100; i++) out += strip.push(chunk).length
  out += strip.flush().length
  assert.equal(out, 100 * 4096, 'every byte relayed')
  const held = new UsageStripper()
  let sent = 0
  for (let i = 0; i < 100; i++) sent += held.push(chunk).length
  assert.ok(100 * 4096 - sent <= MAX_HELD_EVENT_BYTES, `held ${100 * 4096 - sent} bytes`)
})
