import assert from 'node:assert/strict'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import { GpuSchema } from '../../src/protocol/index.js'
import {
  type GpuReading,
  parseIoregAccelerator,
  parseNvidiaSmi,
  parseRocmSmi,
  readGpus,
  tflopsOf,
} from '../../src/worker/gpu.js'

const MIB = 1024 * 1024
const GIB = 1024 * MIB

/**
 * Recorded tool outputs. Tests run compiled (dist/test/unit or another outDir at the same depth)
 * and tsc copies no fixtures, so they are read from the source tree at the repository root.
 */
const GPU_FIXTURES = fileURLToPath(new URL('../../../test/fixtures/gpu/', import.meta.url))

function fixture(name: string): string {
  return readFileSync(join(GPU_FIXTURES, name), 'utf8')
}

/** Every reading must pass the heartbeat's schema: one that does not costs the worker its session. */
function assertSchemaValid(gpus: readonly GpuReading[]): void {
  for (const gpu of gpus) GpuSchema.parse(gpu)
}

const dirs: string[] = []
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gpuf-gpu-'))
  dirs.push(dir)
  return dir
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

/** An executable shell script in a temp dir. */
function script(dir: string, name: string, body: string): string {
  const path = join(dir, name)
  writeFileSync(path, `#!/bin/sh\n${body}\n`)
  chmodSync(path, 0o755)
  return path
}

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
  const dir = tempDir()
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

test('fixtures resolve from the repository root', () => {
  assert.ok(existsSync(join(GPU_FIXTURES, 'nvidia-smi-8gpu.csv')), GPU_FIXTURES)
})

test('nvidia-smi fixture, one H200: every column read, in bytes and watts', () => {
  assert.deepEqual(parseNvidiaSmi(fixture('nvidia-smi-1gpu.csv')), [
    {
      index: 0,
      vendor: 'nvidia',
      name: 'NVIDIA H200',
      uuid: 'GPU-3f5d2b8e-91c4-6a07-d2e1-7b4c0a9f1e62',
      utilizationPercent: 87,
      memoryUtilizationPercent: 41,
      memoryUsedBytes: 121634 * MIB,
      memoryTotalBytes: 143771 * MIB,
      temperatureC: 58,
      powerDrawW: 612.37,
      powerLimitW: 700,
      tflops: 989,
    },
  ])
})

test('nvidia-smi fixture, eight H100 SXM: eight distinct GPUs in index order', () => {
  const gpus = parseNvidiaSmi(fixture('nvidia-smi-8gpu.csv'))
  assert.equal(gpus.length, 8)
  assert.deepEqual(
    gpus.map((g) => g.index),
    [0, 1, 2, 3, 4, 5, 6, 7],
  )
  assert.equal(new Set(gpus.map((g) => g.uuid)).size, 8)
  for (const gpu of gpus) {
    assert.equal(gpu.name, 'NVIDIA H100 80GB HBM3')
    assert.equal(gpu.memoryTotalBytes, 81559 * MIB)
    assert.equal(gpu.powerLimitW, 700)
    assert.equal(gpu.tflops, 989)
  }
  assert.equal(gpus[4]!.utilizationPercent, 0)
  assert.equal(gpus[4]!.memoryUsedBytes, MIB)
  assert.equal(gpus[6]!.powerDrawW, 341.55)
  assertSchemaValid(gpus)
})

test('nvidia-smi fixture with [N/A] and [Not Supported]: those readings are null, the rest kept', () => {
  const [rtx, gtx, a100] = parseNvidiaSmi(fixture('nvidia-smi-na.csv'))
  assert.equal(rtx!.name, 'NVIDIA GeForce RTX 4090')
  assert.equal(rtx!.powerDrawW, null)
  assert.equal(rtx!.powerLimitW, null)
  assert.equal(rtx!.utilizationPercent, 3)
  assert.equal(rtx!.tflops, 330)
  assert.equal(gtx!.utilizationPercent, null)
  assert.equal(gtx!.memoryUtilizationPercent, null)
  assert.equal(gtx!.powerDrawW, null)
  assert.equal(gtx!.powerLimitW, 250)
  assert.equal(gtx!.memoryTotalBytes, 11264 * MIB)
  assert.equal(gtx!.tflops, 0)
  assert.equal(a100!.uuid, null)
  assert.equal(a100!.temperatureC, null)
  assert.equal(a100!.memoryUsedBytes, 0)
  assert.equal(a100!.tflops, 312)
  assertSchemaValid([rtx!, gtx!, a100!])
})

test("nvidia-smi fixture, the driver's error text: no GPUs", () => {
  assert.match(fixture('nvidia-smi-driver-error.txt'), /couldn't communicate with the NVIDIA driver/)
  assert.deepEqual(parseNvidiaSmi(fixture('nvidia-smi-driver-error.txt')), [])
})

test('rocm-smi fixture, two MI300X (ROCm 6 keys): junction temperature when the edge sensor is N/A', () => {
  const gpus = parseRocmSmi(fixture('rocm-smi.json'))
  assert.equal(gpus.length, 2)
  assert.deepEqual(gpus[0], {
    index: 0,
    vendor: 'amd',
    name: 'AMD Instinct MI300X',
    uuid: '0x6b3e1f0a9c2d4e57',
    utilizationPercent: 94,
    memoryUtilizationPercent: 87,
    memoryUsedBytes: 179418066944,
    memoryTotalBytes: 205822885888,
    temperatureC: 52,
    powerDrawW: 538,
    powerLimitW: null,
    tflops: 1307,
  })
  assert.equal(gpus[1]!.uuid, '0x2a7c5d8e0f1b3c94')
  assert.equal(gpus[1]!.temperatureC, 38)
  assertSchemaValid(gpus)
})

test('rocm-smi fixture, one MI250X (ROCm 5 keys): two dies, each half the package TFLOPS', () => {
  const gpus = parseRocmSmi(fixture('rocm-smi-mi250x.json'))
  assert.equal(gpus.length, 2)
  assert.equal(gpus[0]!.name, 'AMD INSTINCT MI250X')
  assert.equal(gpus[0]!.temperatureC, 46)
  assert.equal(gpus[0]!.powerDrawW, 305)
  assert.equal(gpus[0]!.memoryUtilizationPercent, 31)
  assert.equal(gpus[1]!.powerDrawW, null)
  assert.equal(gpus[0]!.tflops + gpus[1]!.tflops, 383)
  assertSchemaValid(gpus)
})

test('ioreg fixture, Apple M2 Max: brand, GPU cores, utilisation, memory the GPU holds, unified memory', () => {
  const out = fixture('ioreg-m2max.txt')
  assert.deepEqual(parseIoregAccelerator(out, { brand: 'Apple M2 Max\n', memoryTotalBytes: 96 * GIB }), [
    {
      index: 0,
      vendor: 'apple',
      name: 'Apple M2 Max (38-core GPU)',
      uuid: null,
      utilizationPercent: 12,
      memoryUtilizationPercent: null,
      memoryUsedBytes: 1561804800,
      memoryTotalBytes: 96 * GIB,
      temperatureC: null,
      powerDrawW: null,
      powerLimitW: null,
      tflops: 27,
    },
  ])
  // Without sysctl's brand string, ioreg's own model names the chip.
  const [gpu] = parseIoregAccelerator(out)
  assert.equal(gpu!.name, 'Apple M2 Max (38-core GPU)')
  assert.ok(gpu!.memoryTotalBytes! > 0)
  assertSchemaValid([gpu!])
  assert.deepEqual(parseIoregAccelerator(''), [])
  assert.deepEqual(parseIoregAccelerator('garbage\n+-o nothing here\n'), [])
})

test('TFLOPS of Apple silicon: rough estimates per chip; a bare chip does not take its variants', () => {
  const expected: Record<string, number> = {
    'Apple M1': 5,
    'Apple M1 Pro': 10,
    'Apple M1 Max': 21,
    'Apple M1 Ultra': 42,
    'Apple M2': 7,
    'Apple M2 Max (38-core GPU)': 27,
    'Apple M2 Ultra': 54,
    'Apple M3 Max': 28,
    'Apple M4 Max': 34,
    'Apple M2 Pro': 0,
    'Apple M3': 0,
  }
  for (const [name, tflops] of Object.entries(expected)) assert.equal(tflopsOf(name), tflops, name)
})

test('property: whatever the tools print, every GPU parsed fits the heartbeat schema', () => {
  const field = fc.oneof(
    fc.constantFrom('[N/A]', '[Not Supported]', 'N/A', '', '-1', '1e400', '1e20', '-300', '101', '5000'),
    fc.double().map(String),
    fc.integer().map(String),
    fc.string({ maxLength: 300 }),
  )
  const nvidiaLine = fc
    .array(field, { minLength: 9, maxLength: 12 })
    .chain((rest) => fc.nat({ max: 2_000_000 }).map((index) => [String(index), ...rest].join(', ')))
  fc.assert(
    fc.property(fc.array(nvidiaLine, { maxLength: 4 }), (lines) => {
      assertSchemaValid(parseNvidiaSmi(lines.join('\n')))
    }),
    { numRuns: 500 },
  )
  const card = fc.dictionary(
    fc.constantFrom(
      'GPU use (%)',
      'GPU Memory Allocated (VRAM%)',
      'Temperature (Sensor edge) (C)',
      'Temperature (Sensor junction) (C)',
      'Current Socket Graphics Package Power (W)',
      'Max Graphics Package Power (W)',
      'Card Series',
      'Unique ID',
      'VRAM Total Memory (B)',
      'VRAM Total Used Memory (B)',
    ),
    field,
  )
  fc.assert(
    fc.property(
      fc.dictionary(
        fc.nat({ max: 3_000_000 }).map((n) => `card${n}`),
        card,
      ),
      (cards) => {
        assertSchemaValid(parseRocmSmi(JSON.stringify(cards)))
      },
    ),
    { numRuns: 500 },
  )
  fc.assert(
    fc.property(field, field, field, (model, util, inUse) => {
      const out = `+-o AGX  <class AGX>\n  "model" = "${model}"\n  "gpu-core-count" = 10\n  "PerformanceStatistics" = {"Device Utilization %"=${util},"In use system memory"=${inUse}}\n`
      assertSchemaValid(parseIoregAccelerator(out, { brand: model }))
    }),
    { numRuns: 500 },
  )
})

test('Apple silicon: sysctl and ioreg are asked on darwin/arm64 only, and then nvidia-smi is not', async () => {
  const dir = tempDir()
  const asked = join(dir, 'asked')
  const ioreg = script(dir, 'ioreg', `echo ioreg >> ${asked}\ncat '${join(GPU_FIXTURES, 'ioreg-m2max.txt')}'`)
  const sysctl = script(dir, 'sysctl', `echo sysctl >> ${asked}\necho 'Apple M2 Max'`)
  const nvidiaSmi = script(
    dir,
    'nvidia-smi',
    `echo nvidia-smi >> ${asked}\ncat '${join(GPU_FIXTURES, 'nvidia-smi-1gpu.csv')}'`,
  )
  const rocmSmi = join(dir, 'absent')
  const tools = { ioreg, sysctl, nvidiaSmi, rocmSmi }

  const apple = await readGpus({ ...tools, platform: 'darwin', arch: 'arm64' })
  assert.equal(apple.length, 1)
  assert.equal(apple[0]!.vendor, 'apple')
  assert.equal(apple[0]!.name, 'Apple M2 Max (38-core GPU)')
  assert.equal(apple[0]!.tflops, 27)
  assert.deepEqual(readFileSync(asked, 'utf8').split('\n').filter(Boolean).sort(), ['ioreg', 'sysctl'])

  rmSync(asked)
  for (const [platform, arch] of [
    ['linux', 'x64'],
    ['darwin', 'x64'],
    ['linux', 'arm64'],
  ] as const) {
    const gpus = await readGpus({ ...tools, platform, arch })
    assert.deepEqual(
      gpus.map((g) => g.vendor),
      ['nvidia'],
      `${platform}/${arch}`,
    )
  }
  assert.deepEqual(readFileSync(asked, 'utf8').split('\n').filter(Boolean), [
    'nvidia-smi',
    'nvidia-smi',
    'nvidia-smi',
  ])
})
