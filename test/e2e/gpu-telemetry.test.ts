/**
 * A fake `nvidia-smi` on PATH (printing a recorded 8-GPU answer) beside a real worker: its
 * readings travel in heartbeats through the in-process bus and the consumer into the store's
 * device info, and the workers API shows every GPU.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { silentLogger } from '../../src/observability/logger.js'
import { SqliteStore } from '../../src/store/index.js'
import { openTelemetry, type Telemetry } from '../../src/telemetry/index.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { parseNvidiaSmi } from '../../src/worker/gpu.js'
import { API_KEY, startFabric, type TestFabric } from '../helpers/fabric.js'

const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/gpu/nvidia-smi-8gpu.csv', import.meta.url))

let dir: string
let store: SqliteStore
let telemetry: Telemetry
let fabric: TestFabric
const path = process.env['PATH']

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'gpuf-gpu-'))
  const bin = join(dir, 'bin')
  const tool = join(bin, 'nvidia-smi')
  writeFileSync(join(dir, 'answer.csv'), readFileSync(FIXTURE))
  mkdirSync(bin, { recursive: true })
  writeFileSync(tool, `#!/bin/sh\ncat '${join(dir, 'answer.csv')}'\n`)
  chmodSync(tool, 0o755)
  process.env['PATH'] = `${bin}${delimiter}${path ?? ''}`
  store = new SqliteStore({ path: join(dir, 'db.sqlite') })
  await store.migrate()
  telemetry = await openTelemetry({ consume: 'on', store, logger: silentLogger(), batchTimeoutMs: 20 })
  fabric = await startFabric({ telemetry: telemetry.publisher, heartbeatIntervalMs: 200 })
  await fabric.addWorker(createEchoEngine({ models: ['echo'] }), 'gpu-host', { dataDir: dir })
})

after(async () => {
  process.env['PATH'] = path
  await fabric?.close()
  await telemetry?.close()
  await store?.close()
  rmSync(dir, { recursive: true, force: true })
})

test('the fake nvidia-smi readings reach the stored device info and the workers API', async () => {
  const expected = parseNvidiaSmi(readFileSync(FIXTURE, 'utf8'))
  assert.equal(expected.length, 8)
  let devices = await store.listDeviceInfo('gpu-host')
  const deadline = Date.now() + 15_000
  while (devices.length < 8 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100))
    devices = await store.listDeviceInfo('gpu-host')
  }
  assert.equal(devices.length, 8)
  for (const [i, d] of devices.entries()) {
    const e = expected[i]!
    assert.equal(d.deviceIndex, e.index)
    assert.equal(d.name, e.name)
    assert.equal(d.uuid, e.uuid)
    assert.equal(d.utilizationPercent, e.utilizationPercent)
    assert.equal(d.memoryUtilizationPercent, e.memoryUtilizationPercent)
    assert.equal(d.memoryUsedBytes, e.memoryUsedBytes)
    assert.equal(d.memoryTotalBytes, e.memoryTotalBytes)
    assert.equal(d.temperatureC, e.temperatureC)
    assert.equal(d.powerDrawW, e.powerDrawW)
    assert.equal(d.tflops, e.tflops)
  }
  const system = await store.getSystemInfo('gpu-host')
  assert.equal(system!.deviceCount, 8)
  assert.equal(
    system!.deviceMemoryTotalBytes,
    expected.reduce((s, g) => s + (g.memoryTotalBytes ?? 0), 0),
  )
  assert.ok(system!.totalTflops > 0)
  assert.ok(system!.memPercent !== null && system!.memPercent > 0)
  assert.ok(system!.diskPercent !== null)
  const daily = await store.listDeviceDailyStats('gpu-host')
  assert.equal(new Set(daily.map((d) => d.deviceIndex)).size, 8)

  const res = await fetch(`${fabric.apiUrl}/api/v1/workers/gpu-host`, {
    headers: { authorization: `Bearer ${API_KEY}` },
  })
  const worker = (await res.json()) as { metrics: { gpus: { uuid: string }[]; deviceCount: number } }
  assert.equal(worker.metrics.gpus.length, 8)
  assert.equal(worker.metrics.deviceCount, 8)
  assert.deepEqual(
    worker.metrics.gpus.map((g) => g.uuid),
    expected.map((g) => g.uuid),
  )
})
