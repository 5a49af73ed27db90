import assert from 'node:assert/strict'
import { once } from 'node:events'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer, constants as h2 } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { silentLogger } from '../../src/observability/logger.js'
import { FrameDecoder } from '../../src/protocol/frame.js'
import { type GpuMetrics, MetricsSchema } from '../../src/protocol/index.js'
import { encodeLaneRequest, LANE_PATH, LaneFrame } from '../../src/protocol/lane.js'
import type { Engine } from '../../src/worker/engines/types.js'
import { GpuSampler } from '../../src/worker/gpu.js'
import { createStreamHandler, type LinkTraffic } from '../../src/worker/handler.js'
import { HostMetrics, parseProcNetDev } from '../../src/worker/metrics.js'

const MIB = 1024 * 1024
/** Fixtures are read from the source tree: tsc copies none into the outDir (see gpu.test.ts). */
const GPU_FIXTURES = fileURLToPath(new URL('../../../test/fixtures/gpu/', import.meta.url))
const EIGHT_GPUS = join(GPU_FIXTURES, 'nvidia-smi-8gpu.csv')

const dirs: string[] = []
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gpuf-metrics-'))
  dirs.push(dir)
  return dir
}
const cleanups: (() => void)[] = []
after(() => {
  for (const fn of cleanups) fn()
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

/** An executable shell script in a temp dir. */
function script(dir: string, name: string, body: string): string {
  const path = join(dir, name)
  writeFileSync(path, `#!/bin/sh\n${body}\n`)
  chmodSync(path, 0o755)
  return path
}

/** /proc/net/dev as Linux prints it, with loopback, two NICs and the given eth0/lo counters. */
function procNetDev(
  eth0: [number, number],
  lo: [number, number],
  wlan0: [number, number] = [1000, 2000],
): string {
  const line = (name: string, [rx, tx]: [number, number]) =>
    `${name.padStart(6)}: ${rx} 1200 0 0 0 0 0 0 ${tx} 900 0 0 0 0 0 0`
  return [
    'Inter-|   Receive                                                |  Transmit',
    ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
    line('lo', lo),
    line('eth0', eth0),
    line('wlan0', wlan0),
    '',
  ].join('\n')
}

/** A stopped clock the test moves by hand, so rates are exact. */
function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000
  return {
    now: () => t,
    advance: (ms) => {
      t += ms
    },
  }
}

test('/proc/net/dev: every interface but loopback summed; headers and garbage skipped', () => {
  assert.deepEqual(parseProcNetDev(procNetDev([5_000, 7_000], [999_999, 999_999])), {
    rxBytes: 6_000,
    txBytes: 9_000,
  })
  assert.equal(parseProcNetDev(''), undefined)
  assert.equal(parseProcNetDev('garbage: x y z\nInter-| nothing'), undefined)
  // Loopback alone is a host with no network: counters of zero, not "unknown".
  assert.deepEqual(parseProcNetDev(procNetDev([0, 0], [5, 5], [0, 0])), { rxBytes: 0, txBytes: 0 })
})

test('network: counters each sample, rates from the second on, none for a counter that went backwards', () => {
  const dir = tempDir()
  const file = join(dir, 'net-dev')
  const t = clock()
  const metrics = new HostMetrics({
    procNetDev: file,
    now: t.now,
    gpu: { nvidiaSmi: join(dir, 'x'), rocmSmi: join(dir, 'y') },
  })

  writeFileSync(file, procNetDev([10_000, 20_000], [1, 1]))
  const first = metrics.sample()
  assert.equal(first.netRxBytes, 11_000)
  assert.equal(first.netTxBytes, 22_000)
  assert.equal(first.netRxRate, undefined)
  assert.equal(first.netTxRate, undefined)

  // Five seconds later: eth0 got 50,000 and sent 25,000 bytes; loopback's traffic is not counted.
  t.advance(5_000)
  writeFileSync(file, procNetDev([60_000, 45_000], [1e9, 1e9]))
  const second = metrics.sample()
  assert.equal(second.netRxRate, 10_000)
  assert.equal(second.netTxRate, 5_000)

  // An interface went away (its counters with it): received went backwards, sent did not.
  t.advance(1_000)
  writeFileSync(file, procNetDev([0, 45_000], [1, 1], [1_000, 3_000]))
  const third = metrics.sample()
  assert.equal(third.netRxBytes, 1_000)
  assert.equal(third.netRxRate, undefined)
  assert.equal(third.netTxRate, 1_000)

  // The next sample measures from the lowered counters again.
  t.advance(2_000)
  writeFileSync(file, procNetDev([4_000, 45_000], [1, 1], [1_000, 3_000]))
  assert.equal(metrics.sample().netRxRate, 2_000)

  // A file that cannot be read leaves the figures out rather than failing the heartbeat.
  rmSync(file)
  const none = metrics.sample()
  assert.equal(none.netRxBytes, undefined)
  assert.equal(none.netRxRate, undefined)
  assert.equal(new HostMetrics({ procNetDev: null }).sample().netRxBytes, undefined)
})

test('disk: the filesystem of the data dir, or of its nearest parent when it does not exist yet', async () => {
  const dir = tempDir()
  for (const dataDir of [dir, join(dir, 'not', 'made', 'yet')]) {
    const metrics = new HostMetrics({ dataDir, procNetDev: null })
    await metrics.refresh()
    const m = metrics.sample()
    assert.ok(
      m.diskPercent !== undefined && m.diskPercent >= 0 && m.diskPercent <= 100,
      String(m.diskPercent),
    )
    assert.ok(m.diskTotalBytes !== undefined && m.diskTotalBytes > 0)
    assert.ok(m.diskUsedBytes !== undefined && m.diskUsedBytes <= m.diskTotalBytes)
    assert.ok(Number.isInteger(m.diskUsedBytes) && Number.isInteger(m.diskTotalBytes))
  }
  // No data dir, no disk figures.
  const m = new HostMetrics({ procNetDev: null }).sample()
  assert.equal(m.diskPercent, undefined)
  assert.equal(m.diskTotalBytes, undefined)
})

test('a full sample fits MetricsSchema: host, disk, network, eight GPUs and their totals, link bytes', async () => {
  const dir = tempDir()
  const netDev = join(dir, 'net-dev')
  writeFileSync(netDev, procNetDev([10_000, 20_000], [1, 1]))
  const traffic: LinkTraffic = { bytesIn: 1234, bytesOut: 56789 }
  const metrics = new HostMetrics({
    dataDir: dir,
    procNetDev: netDev,
    linkTraffic: traffic,
    gpu: { nvidiaSmi: script(dir, 'nvidia-smi', `cat '${EIGHT_GPUS}'`), rocmSmi: join(dir, 'absent') },
  })
  cleanups.push(() => metrics.stop())
  const before = metrics.sample()
  assert.deepEqual(before.gpus, [], 'no GPUs before the first reading, and no waiting for one')
  assert.equal(before.deviceCount, 0)
  await metrics.refresh()
  await new Promise((resolve) => setTimeout(resolve, 20))
  const m = MetricsSchema.parse(metrics.sample())
  assert.ok(m.cpuPercent !== undefined && m.cpuPercent >= 0 && m.cpuPercent <= 100)
  assert.ok(m.memPercent !== undefined && m.memPercent >= 0 && m.memPercent <= 100)
  assert.ok(m.memUsedBytes! <= m.memTotalBytes!)
  assert.ok(m.load1 !== undefined && m.uptimeSeconds! > 0)
  assert.ok(m.diskPercent !== undefined)
  assert.equal(m.netRxBytes, 11_000)
  assert.equal(m.gpus!.length, 8)
  assert.equal(m.deviceCount, 8)
  assert.equal(m.deviceMemoryTotalBytes, 8 * 81559 * MIB)
  assert.equal(m.totalTflops, 8 * 989)
  assert.equal(m.linkBytesIn, 1234)
  assert.equal(m.linkBytesOut, 56789)
  // The sampler's readings are the heartbeat's GPU entries as they are.
  const gpus: readonly GpuMetrics[] = metrics.gpuSampler.latest()
  assert.deepEqual(m.gpus, gpus)
})

test('GPU sampler: reads in the background after start(), then again every interval', async () => {
  const dir = tempDir()
  const count = join(dir, 'count')
  const nvidiaSmi = script(dir, 'nvidia-smi', `echo x >> '${count}'\ncat '${EIGHT_GPUS}'`)
  const sampler = new GpuSampler({ nvidiaSmi, rocmSmi: join(dir, 'absent'), intervalMs: 50 })
  cleanups.push(() => sampler.stop())
  assert.deepEqual(sampler.latest(), [])
  sampler.start()
  sampler.start()
  assert.deepEqual(sampler.latest(), [], 'start() returns before the tool has run')
  await waitUntil(() => sampler.latest().length === 8)
  await waitUntil(() => runs(count) >= 3)
  sampler.stop()
  assert.equal(sampler.running, false)
  const stoppedAt = runs(count)
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.ok(runs(count) <= stoppedAt + 1, 'no readings after stop()')
  assert.equal(sampler.latest().length, 8, 'stop() keeps the last reading')
})

test('GPU sampler: a hung tool is killed after the timeout while latest() keeps answering at once', async () => {
  const dir = tempDir()
  const pids = join(dir, 'pids')
  // The tool and a child of it both hang: the kill must reach the whole process group.
  const hung = script(dir, 'hung-smi', `echo $$ >> '${pids}'\nsleep 30 &\necho $! >> '${pids}'\nwait`)
  const sampler = new GpuSampler({ nvidiaSmi: hung, rocmSmi: join(dir, 'absent'), timeoutMs: 300 })
  cleanups.push(() => sampler.stop())
  const t0 = performance.now()
  const reading = sampler.refresh()
  for (let i = 0; i < 20; i++) {
    const t = performance.now()
    assert.deepEqual(sampler.latest(), [])
    assert.ok(performance.now() - t < 5, 'latest() never waits on the tool')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  assert.deepEqual(await reading, [])
  const took = performance.now() - t0
  assert.ok(took >= 250 && took < 3_000, `the reading took ${Math.round(took)} ms`)
  if (process.platform === 'linux') {
    const [shell, sleep] = readFileSync(pids, 'utf8').trim().split('\n').map(Number)
    await waitUntil(() => !alive(shell!) && !alive(sleep!))
  }
})

test('GPU sampler: a tool that times out keeps the GPUs it last reported, their live readings unknown', async () => {
  const dir = tempDir()
  const seen = join(dir, 'seen')
  // Answers once, then hangs: nvidia-smi on a busy machine without persistence mode.
  const nvidiaSmi = script(
    dir,
    'nvidia-smi',
    `if [ -e '${seen}' ]; then exec sleep 30; fi\ntouch '${seen}'\ncat '${EIGHT_GPUS}'`,
  )
  const sampler = new GpuSampler({ nvidiaSmi, rocmSmi: join(dir, 'absent'), timeoutMs: 300 })
  const first = await sampler.refresh()
  assert.equal(first[0]!.utilizationPercent, 98)
  const second = await sampler.refresh()
  assert.equal(second.length, 8)
  assert.equal(second[0]!.uuid, first[0]!.uuid)
  assert.equal(second[0]!.memoryTotalBytes, 81559 * MIB)
  assert.equal(second[0]!.tflops, 989)
  assert.equal(second[0]!.utilizationPercent, null)
  assert.equal(second[0]!.memoryUsedBytes, null)
  assert.equal(second[0]!.powerDrawW, null)
  assert.equal(second[0]!.powerLimitW, 700)
})

test('GPU sampler: one reading at a time; stop() kills the tool that is running', async () => {
  const dir = tempDir()
  const count = join(dir, 'count')
  const slow = script(dir, 'slow-smi', `echo x >> '${count}'\nexec sleep 30`)
  const sampler = new GpuSampler({ nvidiaSmi: slow, rocmSmi: join(dir, 'absent'), timeoutMs: 20_000 })
  sampler.start()
  const a = sampler.refresh()
  const b = sampler.refresh()
  assert.equal(a, b, 'a second refresh joins the reading under way')
  await waitUntil(() => runs(count) === 1)
  const t0 = performance.now()
  sampler.stop()
  assert.deepEqual(await a, [])
  assert.ok(performance.now() - t0 < 1_000)
  assert.equal(runs(count), 1)
})

test('GPU sampler: no GPU tool at all gives no GPUs, and is looked for again only after absentRecheckMs', async () => {
  const dir = tempDir()
  const nvidiaSmi = join(dir, 'nvidia-smi')
  const rocmSmi = join(dir, 'rocm-smi')
  const slow = new GpuSampler({ nvidiaSmi, rocmSmi, intervalMs: 10, absentRecheckMs: 60_000 })
  const quick = new GpuSampler({ nvidiaSmi, rocmSmi, intervalMs: 10, absentRecheckMs: 100 })
  cleanups.push(
    () => slow.stop(),
    () => quick.stop(),
  )
  assert.deepEqual(await slow.refresh(), [])
  slow.start()
  quick.start()
  await new Promise((resolve) => setTimeout(resolve, 50))
  // A driver installed now: the sampler that re-checks soon finds it, the other waits its minute.
  script(dir, 'nvidia-smi', `cat '${EIGHT_GPUS}'`)
  await waitUntil(() => quick.latest().length === 8)
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.deepEqual(slow.latest(), [])
})

test('link bytes: the stream handler counts lane bytes in (requests) and out (answers)', async () => {
  const answer = Buffer.from('{"ok":true}')
  const engine: Engine = {
    type: 'echo',
    apis: new Set(['openai']),
    async listModels() {
      return ['m']
    },
    async call() {
      return { status: 200, headers: { 'content-length': String(answer.length) }, body: answer }
    },
    async close() {},
  }
  const traffic: LinkTraffic = { bytesIn: 0, bytesOut: 0 }
  const server = createServer()
  server.on(
    'stream',
    createStreamHandler({ engine, logger: silentLogger(), dataToken: () => undefined, inflight: 0, traffic }),
  )
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  cleanups.push(() => {
    session.destroy()
    server.close()
  })
  const lane = session.request({ [h2.HTTP2_HEADER_METHOD]: 'POST', [h2.HTTP2_HEADER_PATH]: LANE_PATH })
  const decoder = new FrameDecoder(1024 * 1024)
  let received = 0
  const done = new Promise<void>((resolve) =>
    lane.on('data', (chunk: Buffer) => {
      received += chunk.length
      if (decoder.push(chunk).some((f) => f.type === LaneFrame.END)) resolve()
    }),
  )
  const request = encodeLaneRequest('POST', '/v1/chat/completions', Buffer.from('{"model":"m"}'))
  lane.write(request)
  await done
  assert.equal(traffic.bytesIn, request.length)
  assert.equal(traffic.bytesOut, received)
  assert.ok(received > answer.length)
  lane.close()
})

function runs(file: string): number {
  try {
    return readFileSync(file, 'utf8').split('\n').filter(Boolean).length
  } catch {
    return 0
  }
}

/** A process that exited (a zombie not yet reaped counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

async function waitUntil(predicate: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for a condition')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

test('GPU sampler: the interval can follow the heartbeat interval the server sets', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpuf-interval-'))
  const count = join(dir, 'count')
  const tool = join(dir, 'nvidia-smi')
  writeFileSync(tool, `#!/bin/sh\necho x >> '${count}'\necho '0, X, GPU-1, 1, 2, 3, 4, 5, 6, 7'\n`)
  chmodSync(tool, 0o755)
  const sampler = new GpuSampler({
    nvidiaSmi: tool,
    rocmSmi: join(dir, 'none'),
    intervalMs: 60_000,
    platform: 'linux',
  })
  sampler.setIntervalMs(50)
  sampler.start()
  try {
    const deadline = Date.now() + 5_000
    const runs = () => (existsSync(count) ? readFileSync(count, 'utf8').split('\n').length - 1 : 0)
    while (runs() < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    assert.ok(runs() >= 3, `read ${runs()} times in 5 s at a 50 ms interval`)
  } finally {
    sampler.stop()
    rmSync(dir, { recursive: true, force: true })
  }
})
