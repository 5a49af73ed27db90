import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { parseNvidiaSmi, parseRocmSmi, readGpus, tflopsOf } from '../../src/worker/gpu.js'

const MIB = 1024 * 1024

test('nvidia-smi: several GPUs, [N/A] and [Not Supported] readings, garbage lines skipped', () => {
  const out = [
    '0, NVIDIA H200, GPU-8a1c2f3e-0000-1111-2222-333344445555, 37, 12, 81234, 143771, 41, 312.55, 700.00',
    '1, NVIDIA GeForce RTX 4090, GPU-aaaa, 0, 0, 1, 24564, 30, [N/A], [Not Supported]',
    'Failed to initialize NVML: Driver/library version mismatch',
    '',
    '2, Quadro, with a comma, GPU-bbbb, 5, 1, 100, 200, 55, 20.1, 50',
  ].join('\n')
  const gpus = parseNvidiaSmi(out)
  assert.equal(gpus.length, 3)
  assert.deepEqual(gpus[0], {
    index: 0,
    vendor: 'nvidia',
    name: 'NVIDIA H200',
    uuid: 'GPU-8a1c2f3e-0000-1111-2222-333344445555',
    utilizationPercent: 37,
    memoryUtilizationPercent: 12,
    memoryUsedBytes: 81234 * MIB,
    memoryTotalBytes: 143771 * MIB,
    temperatureC: 41,
    powerDrawW: 312.55,
    powerLimitW: 700,
    tflops: 989,
  })
  assert.equal(gpus[1]!.powerDrawW, null)
  assert.equal(gpus[1]!.powerLimitW, null)
  assert.equal(gpus[1]!.tflops, 330)
  assert.equal(gpus[2]!.name, 'Quadro, with a comma')
  assert.equal(gpus[2]!.uuid, 'GPU-bbbb')
})

test('nvidia-smi: nothing usable in empty or garbage output; out-of-range percentages dropped', () => {
  assert.deepEqual(parseNvidiaSmi(''), [])
  assert.deepEqual(parseNvidiaSmi('\u0000\u00ff garbage, , ,\n-1, x, y, 1, 2, 3, 4, 5, 6, 7'), [])
  const [gpu] = parseNvidiaSmi('0, X, GPU-1, 250, -3, 1, 2, 3, 4, 5')
  assert.equal(gpu!.utilizationPercent, null)
  assert.equal(gpu!.memoryUtilizationPercent, null)
  assert.equal(gpu!.tflops, 0)
})

test('rocm-smi --json: cards found by key patterns, readings missing stay null, garbage yields none', () => {
  const out = JSON.stringify({
    card1: {
      'GPU use (%)': '3',
      'GPU Memory Allocated (VRAM%)': '10',
      'Temperature (Sensor edge) (C)': '44.0',
      'Current Socket Graphics Package Power (W)': '152.0',
      'Card Series': 'AMD Instinct MI300X',
      'VRAM Total Memory (B)': '205822885888',
      'VRAM Total Used Memory (B)': '294846464',
      'Unique ID': '0x1234',
    },
    card0: { 'GPU use (%)': 'N/A', 'Card series': 'Radeon' },
    system: { 'Driver version': '6.7' },
  })
  const gpus = parseRocmSmi(out)
  assert.equal(gpus.length, 2)
  assert.equal(gpus[0]!.index, 0)
  assert.equal(gpus[0]!.utilizationPercent, null)
  assert.equal(gpus[1]!.name, 'AMD Instinct MI300X')
  assert.equal(gpus[1]!.memoryTotalBytes, 205822885888)
  assert.equal(gpus[1]!.memoryUsedBytes, 294846464)
  assert.equal(gpus[1]!.temperatureC, 44)
  assert.equal(gpus[1]!.powerDrawW, 152)
  assert.equal(gpus[1]!.uuid, '0x1234')
  assert.equal(gpus[1]!.tflops, 1307)
  assert.deepEqual(parseRocmSmi('not json'), [])
  assert.deepEqual(parseRocmSmi('[1,2]'), [])
})

test('TFLOPS come from a table of known parts; unknown parts are 0', () => {
  assert.equal(tflopsOf('NVIDIA A100-SXM4-80GB'), 312)
  assert.equal(tflopsOf('NVIDIA H100 PCIe'), 756)
  assert.equal(tflopsOf('NVIDIA H100 80GB HBM3'), 989)
  assert.equal(tflopsOf('Some Future GPU'), 0)
})

test('missing tools are no error; a hung tool is killed after the timeout', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpuf-gpu-'))
  const hung = join(dir, 'hung-smi')
  writeFileSync(hung, '#!/bin/sh\nsleep 30\n')
  chmodSync(hung, 0o755)
  const fake = join(dir, 'fake-smi')
  writeFileSync(fake, '#!/bin/sh\necho "0, NVIDIA L4, GPU-1, 5, 1, 100, 23034, 40, 20.5, 72.0"\n')
  chmodSync(fake, 0o755)
  assert.deepEqual(await readGpus({ nvidiaSmi: join(dir, 'absent'), rocmSmi: join(dir, 'absent-too') }), [])
  const t0 = Date.now()
  assert.deepEqual(await readGpus({ nvidiaSmi: hung, rocmSmi: hung, timeoutMs: 300 }), [])
  assert.ok(Date.now() - t0 < 5_000, `took ${Date.now() - t0} ms`)
  const gpus = await readGpus({ nvidiaSmi: fake, rocmSmi: join(dir, 'absent') })
  assert.equal(gpus.length, 1)
  assert.equal(gpus[0]!.name, 'NVIDIA L4')
  assert.equal(gpus[0]!.tflops, 121)
})
