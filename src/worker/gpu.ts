import { type ChildProcess, spawn } from 'node:child_process'
import { arch as osArch, platform as osPlatform, totalmem } from 'node:os'
import { TIMEOUTS } from '../config/defaults.js'
import type { Logger } from '../observability/logger.js'
import type { GpuMetrics } from '../protocol/index.js'

/**
 * One accelerator as a worker reports it: the heartbeat's `GpuSchema` (fields documented in
 * src/protocol/messages.ts). Unknown readings are null, never made up. Every value
 * a parser here produces fits the heartbeat's `GpuSchema` (a reading out of its range is null,
 * a name longer than 256 characters is cut): one bad value would make the server drop the
 * whole control session as a protocol error.
 */
export type GpuReading = GpuMetrics

/** The nvidia-smi query whose output {@link parseNvidiaSmi} reads. */
export const NVIDIA_SMI_ARGS = [
  '--query-gpu=index,name,uuid,utilization.gpu,utilization.memory,memory.used,memory.total,temperature.gpu,power.draw,power.limit',
  '--format=csv,noheader,nounits',
] as const

/** The rocm-smi query whose output {@link parseRocmSmi} reads. */
export const ROCM_SMI_ARGS = [
  '--showuse',
  '--showmemuse',
  '--showtemp',
  '--showpower',
  '--showproductname',
  '--showmeminfo',
  'vram',
  '--showuniqueid',
  '--json',
] as const

/** The ioreg query whose output {@link parseIoregAccelerator} reads (`-w 0`: lines never cut). */
export const IOREG_ARGS = ['-r', '-d', '1', '-w', '0', '-c', 'IOAccelerator'] as const

/** The sysctl query that names an Apple silicon chip ("Apple M2 Max"). */
export const SYSCTL_BRAND_ARGS = ['-n', 'machdep.cpu.brand_string'] as const

/** Numeric columns at the end of each nvidia-smi line, after index, name and uuid. */
const NVIDIA_NUMBERS = 7
const MIB = 1024 * 1024
/** Bounds of the heartbeat schema (`GpuSchema` in protocol/messages.ts). */
const MAX_TEXT = 256
const MAX_INDEX = 1_000_000
const MAX_READING = 1e15

/**
 * Parses nvidia-smi's CSV (the {@link NVIDIA_SMI_ARGS} query): one line per GPU. Readings the
 * driver does not have (`[N/A]`, `[Not Supported]`) are null; lines that do not have the shape
 * of the query (garbage, warnings, the driver's error text) are skipped. A name containing
 * commas is kept whole.
 */
export function parseNvidiaSmi(output: string): GpuReading[] {
  const gpus: GpuReading[] = []
  for (const line of output.split(/\r?\n/)) {
    const fields = line.split(',').map((f) => f.trim())
    if (fields.length < 3 + NVIDIA_NUMBERS) continue
    const index = Number(fields[0])
    if (fields[0] === '' || !Number.isInteger(index) || index < 0 || index > MAX_INDEX) continue
    const numbers = fields.slice(-NVIDIA_NUMBERS).map(reading)
    const uuid = fields[fields.length - NVIDIA_NUMBERS - 1]!
    const name = text(fields.slice(1, fields.length - NVIDIA_NUMBERS - 1).join(', '))
    const [util, memUtil, memUsed, memTotal, temp, draw, limit] = numbers as [
      number | null,
      number | null,
      number | null,
      number | null,
      number | null,
      number | null,
      number | null,
    ]
    gpus.push({
      index,
      vendor: 'nvidia',
      name,
      uuid: uuid.length > 0 && !uuid.startsWith('[') ? text(uuid) : null,
      utilizationPercent: percent(util),
      memoryUtilizationPercent: percent(memUtil),
      memoryUsedBytes: amount(memUsed === null ? null : Math.round(memUsed * MIB)),
      memoryTotalBytes: amount(memTotal === null ? null : Math.round(memTotal * MIB)),
      temperatureC: celsius(temp),
      powerDrawW: amount(draw),
      powerLimitW: amount(limit),
      tflops: tflopsOf(name),
    })
  }
  return gpus
}

/**
 * Parses `rocm-smi --showuse --showmemuse --showtemp --showpower --showproductname --showmeminfo vram
 * --showuniqueid --json`: an object of `cardN` entries whose key names vary between ROCm versions,
 * so fields are found by pattern. Anything that is not such an object yields no GPUs.
 */
export function parseRocmSmi(output: string): GpuReading[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(output)
  } catch {
    return []
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return []
  const gpus: GpuReading[] = []
  for (const [card, value] of Object.entries(parsed as Record<string, unknown>)) {
    const m = /^card(\d+)$/.exec(card)
    if (m === null || typeof value !== 'object' || value === null) continue
    const index = Number(m[1])
    if (index > MAX_INDEX) continue
    const fields = value as Record<string, unknown>
    const find = (pattern: RegExp): string | undefined => {
      for (const [k, v] of Object.entries(fields)) if (pattern.test(k) && typeof v === 'string') return v
      return undefined
    }
    /** The first reading of a matching key that has one: MI300X has no edge sensor ("N/A"), say. */
    const num = (pattern: RegExp): number | null => {
      for (const [k, v] of Object.entries(fields)) {
        const n = pattern.test(k) && typeof v === 'string' ? reading(v) : null
        if (n !== null) return n
      }
      return null
    }
    const name = text(find(/card series|product name|marketing name/i) ?? 'AMD GPU')
    const uuid = find(/unique id/i)
    gpus.push({
      index,
      vendor: 'amd',
      name,
      uuid: uuid === undefined ? null : text(uuid),
      utilizationPercent: percent(num(/^gpu use/i)),
      memoryUtilizationPercent: percent(num(/memory (use|activity)|memory allocated/i)),
      memoryUsedBytes: amount(num(/vram total used memory/i)),
      memoryTotalBytes: amount(num(/vram total memory/i)),
      temperatureC:
        celsius(num(/temperature.*edge/i)) ??
        celsius(num(/temperature.*junction/i)) ??
        celsius(num(/temperature/i)),
      powerDrawW: amount(num(/(average|current).*power/i)),
      powerLimitW: amount(num(/max.*power|power cap/i)),
      tflops: tflopsOf(name),
    })
  }
  return gpus.sort((a, b) => a.index - b.index)
}

/** What {@link parseIoregAccelerator} needs besides ioreg's output. */
export interface AppleChip {
  /** The chip's name from `sysctl -n machdep.cpu.brand_string` ("Apple M2 Max"); ioreg's `model` otherwise. */
  readonly brand?: string | undefined
  /** Unified memory, which the GPU shares with the CPU. @default os.totalmem() */
  readonly memoryTotalBytes?: number | undefined
}

/**
 * Parses `ioreg -r -d 1 -w 0 -c IOAccelerator` on Apple silicon: one entry per accelerator
 * (`+-o AGXAccelerator…`). The name is the chip's brand string with the GPU's core count
 * (`"gpu-core-count"`) when known ("Apple M2 Max (38-core GPU)": the core count sets the
 * chip's speed); utilisation is PerformanceStatistics' `"Device Utilization %"`, memory used
 * its `"In use system memory"` (what the GPU driver holds), memory total the unified memory.
 * Temperature and power need root (powermetrics) and stay null. Other text yields no GPUs.
 */
export function parseIoregAccelerator(output: string, chip: AppleChip = {}): GpuReading[] {
  const gpus: GpuReading[] = []
  // Each object ioreg prints starts with "+-o Name  <class …>"; its properties follow it.
  for (const entry of output.split(/^[ |]*\+-o /m).slice(1)) {
    if (!/<class [^>]*>/.test(entry)) continue
    const model = /"model" = "([^"\n]*)"/.exec(entry)?.[1]
    const cores = /"gpu-core-count" = (\d+)/.exec(entry)?.[1]
    const utilization = /"Device Utilization %"=(\d+(?:\.\d+)?)/.exec(entry)?.[1]
    const inUse = /"In use system memory"=(\d+)/.exec(entry)?.[1]
    const brand = chip.brand?.trim() || model?.trim() || 'Apple GPU'
    const name = text(cores === undefined ? brand : `${brand} (${Number(cores)}-core GPU)`)
    gpus.push({
      index: gpus.length,
      vendor: 'apple',
      name,
      uuid: null,
      utilizationPercent: percent(utilization === undefined ? null : Number(utilization)),
      memoryUtilizationPercent: null,
      memoryUsedBytes: amount(inUse === undefined ? null : Number(inUse)),
      memoryTotalBytes: amount(chip.memoryTotalBytes ?? totalmem()),
      temperatureC: null,
      powerDrawW: null,
      powerLimitW: null,
      tflops: tflopsOf(name),
    })
  }
  return gpus
}

/** A number from a tool's field; null for `[N/A]`, `N/A`, `[Not Supported]`, empty or garbage. */
function reading(field: string): number | null {
  if (field.length === 0 || field.startsWith('[') || /^n\/a$/i.test(field)) return null
  const n = Number(field)
  return Number.isFinite(n) ? n : null
}

function percent(n: number | null): number | null {
  return n === null || !(n >= 0 && n <= 100) ? null : n
}

/** A byte count or wattage: null when negative, not finite or beyond the schema's bound. */
function amount(n: number | null): number | null {
  return n === null || !(n >= 0 && n <= MAX_READING) ? null : n
}

function celsius(n: number | null): number | null {
  return n === null || !(n >= -273 && n <= 1000) ? null : n
}

function text(s: string): string {
  return s.length > MAX_TEXT ? s.slice(0, MAX_TEXT) : s
}

/**
 * Dense FP16/BF16 tensor TFLOPS of well-known parts (vendor data sheets, without sparsity),
 * matched on the name the tool reports; the first pattern that matches wins.
 */
const TFLOPS: readonly (readonly [RegExp, number])[] = [
  [/\bB200\b/i, 2250],
  [/\bH200\b/i, 989],
  [/\bH100\b.*\b(PCIe)\b/i, 756],
  [/\bH100\b/i, 989],
  [/\bA100\b/i, 312],
  [/\bL40S\b/i, 362],
  [/\bL40\b/i, 181],
  [/\bL4\b/i, 121],
  [/\bA10G?\b/i, 125],
  [/\bV100\b/i, 125],
  [/\bT4\b/i, 65],
  [/RTX\s*5090/i, 419],
  [/RTX\s*4090/i, 330],
  [/RTX\s*4080/i, 195],
  [/RTX\s*3090/i, 142],
  [/RTX\s*A6000/i, 155],
  [/MI300X/i, 1307],
  // rocm-smi lists each of an MI250(X)'s two dies as its own card: half the package's figure
  // each (383 and 362), or a node's total would count every package twice.
  [/MI250X/i, 191.5],
  [/MI250/i, 181],
  // Apple silicon: rough FP16 estimates for the largest GPU of each chip (Apple publishes no
  // tensor figures; these are about twice its FP32 numbers). A chip not listed (M2 Pro, M3 Pro…)
  // is 0 rather than a guess from its neighbour. The bare chips must not match their variants.
  [/\bApple M1 Ultra\b/i, 42],
  [/\bApple M1 Max\b/i, 21],
  [/\bApple M1 Pro\b/i, 10],
  [/\bApple M1\b(?!\s+(Pro|Max|Ultra)\b)/i, 5],
  [/\bApple M2 Ultra\b/i, 54],
  [/\bApple M2 Max\b/i, 27],
  [/\bApple M2\b(?!\s+(Pro|Max|Ultra)\b)/i, 7],
  [/\bApple M3 Max\b/i, 28],
  [/\bApple M4 Max\b/i, 34],
]

/** The TFLOPS estimate for a device name; 0 when the part is not known. */
export function tflopsOf(name: string): number {
  for (const [pattern, tflops] of TFLOPS) if (pattern.test(name)) return tflops
  return 0
}

/** Names (or paths) of the vendor tools; tests and odd installs point them elsewhere. */
export interface GpuTools {
  /** @default 'nvidia-smi' (looked up on PATH) */
  readonly nvidiaSmi?: string | undefined
  /** @default 'rocm-smi' */
  readonly rocmSmi?: string | undefined
  /** Apple silicon only. @default 'ioreg' */
  readonly ioreg?: string | undefined
  /** Apple silicon only. @default 'sysctl' */
  readonly sysctl?: string | undefined
}

/** Options of {@link readGpus}. */
export interface ReadGpusOptions extends GpuTools {
  /** A tool that has not answered by then is killed. @default TIMEOUTS.gpuQueryMs */
  readonly timeoutMs?: number
  /** Kills a running tool (the reading then has no GPUs from it). */
  readonly signal?: AbortSignal | undefined
  /** The platform and architecture whose tools are asked (tests). @default os.platform(), os.arch() */
  readonly platform?: NodeJS.Platform
  readonly arch?: string
}

/**
 * Reads every GPU the vendor tools on this machine report: nvidia-smi and rocm-smi, or ioreg on
 * Apple silicon (the only place it runs). A missing tool is no error (no such GPUs); a hung one
 * is killed after `timeoutMs` and counts as none. Never rejects.
 */
export async function readGpus(options: ReadGpusOptions = {}): Promise<GpuReading[]> {
  const runs = await queryTools(options, {})
  return runs.flatMap((r) => r.gpus)
}

/** How one run of a tool ended. */
type Outcome = 'ok' | 'absent' | 'failed' | 'timeout' | 'aborted'

interface ToolRun {
  readonly tool: string
  readonly outcome: Outcome
  readonly gpus: GpuReading[]
}

/** Asks the tools of this platform one after the other: never two of them running at once. */
async function queryTools(options: ReadGpusOptions, cache: { brand?: string }): Promise<ToolRun[]> {
  const timeoutMs = options.timeoutMs ?? TIMEOUTS.gpuQueryMs
  const signal = options.signal
  if ((options.platform ?? osPlatform()) === 'darwin' && (options.arch ?? osArch()) === 'arm64') {
    if (cache.brand === undefined) {
      // The brand string never changes while the machine runs: asked once per sampler.
      const brand = await run(options.sysctl ?? 'sysctl', SYSCTL_BRAND_ARGS, timeoutMs, signal)
      if (brand.outcome === 'ok') cache.brand = brand.stdout.trim()
    }
    const ioreg = options.ioreg ?? 'ioreg'
    const out = await run(ioreg, IOREG_ARGS, timeoutMs, signal)
    return [{ tool: ioreg, outcome: out.outcome, gpus: parseIoregAccelerator(out.stdout, cache) }]
  }
  const nvidiaSmi = options.nvidiaSmi ?? 'nvidia-smi'
  const nvidia = await run(nvidiaSmi, NVIDIA_SMI_ARGS, timeoutMs, signal)
  const rocmSmi = options.rocmSmi ?? 'rocm-smi'
  const amd = await run(rocmSmi, ROCM_SMI_ARGS, timeoutMs, signal)
  return [
    { tool: nvidiaSmi, outcome: nvidia.outcome, gpus: parseNvidiaSmi(nvidia.stdout) },
    { tool: rocmSmi, outcome: amd.outcome, gpus: parseRocmSmi(amd.stdout) },
  ]
}

/** Most output a tool may print (64 GPUs of rocm-smi JSON are a few tens of KB); beyond it, it is killed. */
const MAX_TOOL_OUTPUT = 1024 * 1024
/** On POSIX a tool runs in its own process group, so a timeout kills what it started too. */
const OWN_GROUP = process.platform !== 'win32'

/**
 * Runs a tool and collects its standard output. A tool past `timeoutMs`
 * or aborted is killed (SIGKILL, its whole process group) and answered at once, without waiting
 * for its pipes to close.
 */
function run(
  command: string,
  args: readonly string[],
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<{ stdout: string; outcome: Outcome }> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve({ stdout: '', outcome: 'aborted' })
      return
    }
    let child: ChildProcess
    try {
      child = spawn(command, args, {
        stdio: ['ignore', 'pipe', 'ignore'],
        detached: OWN_GROUP,
        windowsHide: true,
      })
    } catch {
      // spawn throws at once for arguments it refuses (a NUL in the name, say).
      resolve({ stdout: '', outcome: 'failed' })
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    let settled = false
    const finish = (stdout: string, outcome: Outcome) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      resolve({ stdout, outcome })
    }
    const kill = (outcome: Outcome) => {
      try {
        if (OWN_GROUP && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
        else child.kill('SIGKILL')
      } catch {
        // Already gone.
      }
      child.stdout?.destroy()
      finish('', outcome)
    }
    const onAbort = () => kill('aborted')
    const timer = setTimeout(() => kill('timeout'), timeoutMs)
    timer.unref()
    signal?.addEventListener('abort', onAbort, { once: true })
    child.stdout?.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_TOOL_OUTPUT) kill('failed')
      else chunks.push(chunk)
    })
    child.on('error', (err: NodeJS.ErrnoException) => finish('', err.code === 'ENOENT' ? 'absent' : 'failed'))
    // A failing tool's output is still parsed: nvidia-smi may exit non-zero when one GPU has
    // fallen off the bus yet print the others; its error text alone parses to no GPUs.
    child.on('close', (code) => finish(Buffer.concat(chunks).toString('utf8'), code === 0 ? 'ok' : 'failed'))
  })
}

/** Options of a {@link GpuSampler}. */
export interface GpuSamplerOptions extends GpuTools {
  /** Time between two readings. @default TIMEOUTS.heartbeatIntervalMs */
  readonly intervalMs?: number
  /** A tool that has not answered by then is killed. @default TIMEOUTS.gpuQueryMs */
  readonly timeoutMs?: number
  /**
   * Time between two readings while no GPU tool exists at all (every one missing): such a
   * machine has no GPUs to watch, and spawning for nothing every few seconds is waste; a driver
   * installed later is still found. @default 60000
   */
  readonly absentRecheckMs?: number
  /** Says when the GPUs found change or a tool starts failing. */
  readonly logger?: Logger | undefined
  /** The platform and architecture whose tools are asked (tests). @default os.platform(), os.arch() */
  readonly platform?: NodeJS.Platform
  readonly arch?: string
}

/**
 * Reads the GPUs in the background so that no heartbeat ever waits on a vendor tool: `start()`
 * reads at once and then every `intervalMs`, one reading at a time; `latest()` answers at once
 * with the last completed reading.
 *
 * A tool that times out keeps the GPUs it reported last, with their live readings
 * (utilisation, memory used, temperature, power) null: nvidia-smi may take seconds on a busy
 * machine without persistence mode, and GPUs that vanish for one heartbeat would make the
 * fleet's capacity flap.
 */
export class GpuSampler {
  readonly #options: GpuSamplerOptions
  readonly #cache: { brand?: string } = {}
  /** What each tool reported last, for a tool that then times out. */
  readonly #byTool = new Map<string, GpuReading[]>()
  #latest: readonly GpuReading[] = []
  #running: Promise<readonly GpuReading[]> | undefined
  #timer: NodeJS.Timeout | undefined
  #stopper: AbortController | undefined
  /** How each tool's last run ended. */
  #lastOutcomes: readonly Outcome[] = []
  #summary = ''
  #intervalMs: number

  constructor(options: GpuSamplerOptions = {}) {
    this.#options = options
    this.#intervalMs = options.intervalMs ?? TIMEOUTS.heartbeatIntervalMs
  }

  /** Reads every `ms` from the next reading on (a worker follows the heartbeat interval the server sets). */
  setIntervalMs(ms: number): void {
    if (Number.isFinite(ms) && ms > 0) this.#intervalMs = ms
  }

  /** The last completed reading; empty before the first. Never waits. */
  latest(): readonly GpuReading[] {
    return this.#latest
  }

  /** True between `start()` and `stop()`. */
  get running(): boolean {
    return this.#stopper !== undefined
  }

  /** Reads at once, then every `intervalMs` until stopped. A second call does nothing. */
  start(): void {
    if (this.#stopper !== undefined) return
    this.#stopper = new AbortController()
    this.#tick()
  }

  /** Stops reading and kills a tool that is running; `latest()` keeps the last reading. */
  stop(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#stopper?.abort()
    this.#stopper = undefined
  }

  /**
   * Reads the GPUs now, or joins the reading already under way (never two at once). Resolves
   * with the new latest reading; never rejects.
   */
  refresh(): Promise<readonly GpuReading[]> {
    this.#running ??= this.#read().finally(() => {
      this.#running = undefined
    })
    return this.#running
  }

  #tick(): void {
    const stopper = this.#stopper
    void this.refresh().then(() => {
      if (this.#stopper !== stopper || stopper === undefined) return
      const o = this.#options
      const delay = this.#allAbsent() ? (o.absentRecheckMs ?? 60_000) : this.#intervalMs
      this.#timer = setTimeout(() => this.#tick(), delay)
      this.#timer.unref()
    })
  }

  #allAbsent(): boolean {
    return this.#lastOutcomes.length > 0 && this.#lastOutcomes.every((o) => o === 'absent')
  }

  async #read(): Promise<readonly GpuReading[]> {
    const o = this.#options
    const runs = await queryTools(
      {
        ...o,
        timeoutMs: o.timeoutMs ?? TIMEOUTS.gpuQueryMs,
        signal: this.#stopper?.signal,
      },
      this.#cache,
    )
    // Stopped mid-reading: what came back is not a reading of the GPUs.
    if (runs.some((r) => r.outcome === 'aborted')) return this.#latest
    this.#lastOutcomes = runs.map((r) => r.outcome)
    const gpus: GpuReading[] = []
    for (const r of runs) {
      if (r.outcome === 'timeout') {
        gpus.push(...(this.#byTool.get(r.tool) ?? []).map(withoutLiveReadings))
        continue
      }
      this.#byTool.set(r.tool, r.gpus)
      gpus.push(...r.gpus)
    }
    this.#latest = gpus
    this.#report(runs, gpus)
    return gpus
  }

  /** Logs once per change, not once per reading: the same failure every 5 s is noise. */
  #report(runs: readonly ToolRun[], gpus: readonly GpuReading[]): void {
    const logger = this.#options.logger
    if (logger === undefined) return
    const problems = runs.filter((r) => r.outcome === 'failed' || r.outcome === 'timeout')
    const summary = `${gpus.map((g) => `${g.vendor}:${g.name}`).join('|')};${problems.map((r) => `${r.tool}:${r.outcome}`).join('|')}`
    if (summary === this.#summary) return
    this.#summary = summary
    for (const r of problems) {
      logger.warn({ tool: r.tool, outcome: r.outcome }, 'GPU tool gave no reading')
    }
    logger.info({ gpus: gpus.map((g) => g.name) }, `GPUs found: ${gpus.length}`)
  }
}

/** A GPU as last seen, its live readings unknown now. */
function withoutLiveReadings(gpu: GpuReading): GpuReading {
  return {
    ...gpu,
    utilizationPercent: null,
    memoryUtilizationPercent: null,
    memoryUsedBytes: null,
    temperatureC: null,
    powerDrawW: null,
  }
}
