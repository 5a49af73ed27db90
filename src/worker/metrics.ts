import { readFileSync } from 'node:fs'
import { statfs } from 'node:fs/promises'
import { cpus, freemem, loadavg, platform, totalmem, uptime } from 'node:os'
import { dirname } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { Logger } from '../observability/logger.js'
import { MAX_GPUS_PER_WORKER, type Metrics } from '../protocol/index.js'
import { GpuSampler, type GpuSamplerOptions } from './gpu.js'
import type { LinkTraffic } from './handler.js'

/** Options of {@link HostMetrics}. */
export interface HostMetricsOptions {
  /** Disk figures are of the filesystem holding this directory (or its nearest existing parent); none when unset. */
  readonly dataDir?: string | undefined
  /**
   * The kernel's network counters, read on every sample; null leaves network figures out.
   * @default '/proc/net/dev' on Linux, null elsewhere
   */
  readonly procNetDev?: string | null | undefined
  /** The GPU sampler's options: tool names, timeout, interval. */
  readonly gpu?: GpuSamplerOptions | undefined
  /** Bytes the data links carried (the stream handler counts them); link figures left out when unset. */
  readonly linkTraffic?: Readonly<LinkTraffic> | undefined
  /** Milliseconds of a monotonic clock, for rates (tests). @default performance.now */
  readonly now?: (() => number) | undefined
  readonly logger?: Logger | undefined
}

/** Network counters of the host, every interface but loopback, in bytes since boot. */
export interface NetCounters {
  readonly rxBytes: number
  readonly txBytes: number
}

/**
 * Parses Linux's /proc/net/dev: per interface, received bytes are the first number after the
 * colon and sent bytes the ninth. Loopback (`lo`) is left out: it is traffic the host has
 * with itself. Undefined when the text holds no interface line.
 */
export function parseProcNetDev(text: string): NetCounters | undefined {
  let rx = 0
  let tx = 0
  let found = false
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':')
    if (colon < 0) continue
    const name = line.slice(0, colon).trim()
    // The two header lines hold '|' and no colon; an interface name never has spaces.
    if (name.length === 0 || name.includes(' ') || name.includes('|')) continue
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
    const r = Number(fields[0])
    const t = Number(fields[8])
    if (fields.length < 16 || !Number.isSafeInteger(r) || !Number.isSafeInteger(t) || r < 0 || t < 0) continue
    found = true
    if (name === 'lo') continue
    rx += r
    tx += t
  }
  return found && Number.isSafeInteger(rx) && Number.isSafeInteger(tx)
    ? { rxBytes: rx, txBytes: tx }
    : undefined
}

interface DiskFigures {
  readonly usedBytes: number
  readonly totalBytes: number
  readonly percent: number | undefined
}

/**
 * Samples what a worker reports in each heartbeat (`Metrics`): CPU, memory, load, the disk of
 * its data dir, network counters and rates, its GPUs and the bytes its data links carried.
 *
 * `sample()` is synchronous and never waits on a slow source: GPUs come from a background
 * {@link GpuSampler}, and the disk from a statfs started by the previous sample (a data dir on
 * a hung network mount must not stall the event loop, which `statfsSync` would). Everything it
 * returns fits `MetricsSchema`: a value that would not is left out, since one bad field would
 * make the server drop the whole session as a protocol error.
 */
export class HostMetrics {
  /** The GPU readings' source; `start()` and `stop()` start and stop it. */
  readonly gpuSampler: GpuSampler
  readonly #dataDir: string | undefined
  readonly #procNetDev: string | null
  readonly #linkTraffic: Readonly<LinkTraffic> | undefined
  readonly #now: () => number
  readonly #logger: Logger | undefined
  #cpu = cpuTimes()
  #net: (NetCounters & { at: number }) | undefined
  #disk: DiskFigures | undefined
  #diskRead: Promise<void> | undefined
  #diskFailed = false

  constructor(options: HostMetricsOptions = {}) {
    this.#dataDir = options.dataDir
    this.#procNetDev =
      options.procNetDev === undefined
        ? platform() === 'linux'
          ? '/proc/net/dev'
          : null
        : options.procNetDev
    this.#linkTraffic = options.linkTraffic
    this.#now = options.now ?? (() => performance.now())
    this.#logger = options.logger
    this.gpuSampler = new GpuSampler({ logger: options.logger, ...options.gpu })
  }

  /** Starts the background readings (GPUs, disk). A second call does nothing. */
  start(): void {
    this.gpuSampler.start()
    void this.#readDisk()
  }

  /** Stops the background readings and kills a GPU tool that is running. */
  stop(): void {
    this.gpuSampler.stop()
  }

  /** Reads the disk and the GPUs now; the next `sample()` has them (tests, a first heartbeat). */
  async refresh(): Promise<void> {
    await Promise.all([this.#readDisk(), this.gpuSampler.refresh()])
  }

  /** The figures of this moment. CPU use and network rates are measured since the previous call. */
  sample(): Metrics {
    const metrics: Metrics = {}
    const cpu = cpuTimes()
    const busy = cpu.busy - this.#cpu.busy
    const total = cpu.total - this.#cpu.total
    this.#cpu = cpu
    if (total > 0) metrics.cpuPercent = clamp(Math.round((busy / total) * 1000) / 10, 0, 100)
    const load1 = loadavg()[0]
    if (load1 !== undefined && load1 >= 0) metrics.load1 = load1
    const memTotal = totalmem()
    const memUsed = clamp(memTotal - freemem(), 0, memTotal)
    if (Number.isSafeInteger(memTotal) && memTotal > 0) {
      metrics.memUsedBytes = memUsed
      metrics.memTotalBytes = memTotal
      metrics.memPercent = clamp(Math.round((memUsed / memTotal) * 1000) / 10, 0, 100)
    }
    metrics.uptimeSeconds = Math.max(0, uptime())

    const disk = this.#disk
    if (disk !== undefined) {
      metrics.diskUsedBytes = disk.usedBytes
      metrics.diskTotalBytes = disk.totalBytes
      if (disk.percent !== undefined) metrics.diskPercent = disk.percent
    }
    // For the next sample: the heartbeat interval is plenty for one statfs.
    void this.#readDisk()

    this.#sampleNet(metrics)

    const gpus = this.gpuSampler.latest()
    // The totals count every GPU; the list stops at what one heartbeat may carry.
    metrics.gpus = gpus.slice(0, MAX_GPUS_PER_WORKER)
    metrics.deviceCount = gpus.length
    const deviceMemory = Math.round(gpus.reduce((sum, g) => sum + (g.memoryTotalBytes ?? 0), 0))
    if (Number.isSafeInteger(deviceMemory)) metrics.deviceMemoryTotalBytes = deviceMemory
    metrics.totalTflops = gpus.reduce((sum, g) => sum + g.tflops, 0)

    const link = this.#linkTraffic
    if (link !== undefined && Number.isSafeInteger(link.bytesIn) && Number.isSafeInteger(link.bytesOut)) {
      metrics.linkBytesIn = Math.max(0, link.bytesIn)
      metrics.linkBytesOut = Math.max(0, link.bytesOut)
    }
    return metrics
  }

  #sampleNet(metrics: Metrics): void {
    if (this.#procNetDev === null) return
    let counters: NetCounters | undefined
    try {
      // procfs is generated in memory: a synchronous read of it never waits on a device.
      counters = parseProcNetDev(readFileSync(this.#procNetDev, 'utf8'))
    } catch {
      counters = undefined
    }
    if (counters === undefined) {
      this.#net = undefined
      return
    }
    const at = this.#now()
    metrics.netRxBytes = counters.rxBytes
    metrics.netTxBytes = counters.txBytes
    const last = this.#net
    this.#net = { ...counters, at }
    if (last === undefined || at <= last.at) return
    const seconds = (at - last.at) / 1000
    // Counters that went backwards (an interface removed, a wrap) give no rate this time.
    if (counters.rxBytes >= last.rxBytes)
      metrics.netRxRate = Math.round((counters.rxBytes - last.rxBytes) / seconds)
    if (counters.txBytes >= last.txBytes)
      metrics.netTxRate = Math.round((counters.txBytes - last.txBytes) / seconds)
  }

  /** One statfs at a time; a failure leaves the disk figures out (said once in the log). */
  #readDisk(): Promise<void> {
    const dir = this.#dataDir
    if (dir === undefined) return Promise.resolve()
    this.#diskRead ??= statfsNearest(dir)
      .then(
        (figures) => {
          this.#disk = figures
          this.#diskFailed = false
        },
        (err: unknown) => {
          this.#disk = undefined
          if (!this.#diskFailed)
            this.#logger?.warn({ dir, err: String(err) }, 'cannot read the data dir disk use')
          this.#diskFailed = true
        },
      )
      .finally(() => {
        this.#diskRead = undefined
      })
    return this.#diskRead
  }
}

/** Disk use of the filesystem holding `dir`, or its nearest existing parent (a data dir not made yet). */
async function statfsNearest(dir: string): Promise<DiskFigures> {
  for (let at = dir; ; at = dirname(at)) {
    try {
      const s = await statfs(at)
      const totalBytes = s.blocks * s.bsize
      const freeBytes = s.bfree * s.bsize
      const availBytes = s.bavail * s.bsize
      if (
        !Number.isSafeInteger(totalBytes) ||
        !Number.isSafeInteger(freeBytes) ||
        !Number.isSafeInteger(availBytes)
      ) {
        throw new RangeError(`filesystem of ${at} is too large to count in bytes`)
      }
      const usedBytes = clamp(totalBytes - freeBytes, 0, totalBytes)
      // As df counts it: blocks reserved for root are neither used nor available to us.
      const room = usedBytes + availBytes
      return {
        usedBytes,
        totalBytes,
        percent: room > 0 ? clamp(Math.round((usedBytes / room) * 1000) / 10, 0, 100) : undefined,
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(at) === at) throw err
    }
  }
}

function clamp(n: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, n))
}

function cpuTimes(): { busy: number; total: number } {
  let busy = 0
  let total = 0
  for (const cpu of cpus()) {
    const t = cpu.times
    const all = t.user + t.nice + t.sys + t.idle + t.irq
    total += all
    busy += all - t.idle
  }
  return { busy, total }
}
