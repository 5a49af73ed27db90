import { execFile } from 'node:child_process'

/** One accelerator as a worker reports it. Unknown readings are null, never made up. */
export interface GpuReading {
  readonly index: number
  readonly vendor: 'nvidia' | 'amd'
  readonly name: string
  readonly uuid: string | null
  /** Compute utilisation, percent. */
  readonly utilizationPercent: number | null
  /** Memory controller utilisation, percent (nvidia-smi's utilization.memory). */
  readonly memoryUtilizationPercent: number | null
  readonly memoryUsedBytes: number | null
  readonly memoryTotalBytes: number | null
  readonly temperatureC: number | null
  readonly powerDrawW: number | null
  readonly powerLimitW: number | null
  /** Dense FP16 tensor TFLOPS from a table of known parts; 0 when the part is not in it. */
  readonly tflops: number
}

/** The nvidia-smi query whose output {@link parseNvidiaSmi} reads. */
export const NVIDIA_SMI_ARGS = [
  '--query-gpu=index,name,uuid,utilization.gpu,utilization.memory,memory.used,memory.total,temperature.gpu,power.draw,power.limit',
  '--format=csv,noheader,nounits',
] as const

/** Numeric columns at the end of each nvidia-smi line, after index, name and uuid. */
const NVIDIA_NUMBERS = 7
const MIB = 1024 * 1024

/**
 * Parses nvidia-smi's CSV (the {@link NVIDIA_SMI_ARGS} query): one line per GPU. Readings the
 * driver does not have (`[N/A]`, `[Not Supported]`) are null; lines that do not have the shape
 * of the query (garbage, warnings) are skipped. A name containing commas is kept whole.
 */
export function parseNvidiaSmi(output: string): GpuReading[] {
  const gpus: GpuReading[] = []
  for (const line of output.split(/\r?\n/)) {
    const fields = line.split(',').map((f) => f.trim())
    if (fields.length < 3 + NVIDIA_NUMBERS) continue
    const index = Number(fields[0])
    if (fields[0] === '' || !Number.isInteger(index) || index < 0) continue
    const numbers = fields.slice(-NVIDIA_NUMBERS).map(reading)
    const uuid = fields[fields.length - NVIDIA_NUMBERS - 1]!
    const name = fields.slice(1, fields.length - NVIDIA_NUMBERS - 1).join(', ')
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
      uuid: uuid.length > 0 && !uuid.startsWith('[') ? uuid : null,
      utilizationPercent: percent(util),
      memoryUtilizationPercent: percent(memUtil),
      memoryUsedBytes: memUsed === null ? null : Math.round(memUsed * MIB),
      memoryTotalBytes: memTotal === null ? null : Math.round(memTotal * MIB),
      temperatureC: temp,
      powerDrawW: draw,
      powerLimitW: limit,
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
    const fields = value as Record<string, unknown>
    const find = (pattern: RegExp): string | undefined => {
      for (const [k, v] of Object.entries(fields)) if (pattern.test(k) && typeof v === 'string') return v
      return undefined
    }
    const num = (pattern: RegExp) => reading(find(pattern) ?? '')
    const name = find(/card series|product name|marketing name/i) ?? 'AMD GPU'
    const used = num(/vram total used memory/i)
    const total = num(/vram total memory/i)
    gpus.push({
      index: Number(m[1]),
      vendor: 'amd',
      name,
      uuid: find(/unique id/i) ?? null,
      utilizationPercent: percent(num(/^gpu use/i)),
      memoryUtilizationPercent: percent(num(/memory (use|activity)|memory allocated/i)),
      memoryUsedBytes: used,
      memoryTotalBytes: total,
      temperatureC: num(/temperature.*(edge|junction)/i) ?? num(/temperature/i),
      powerDrawW: num(/(average|current).*power/i),
      powerLimitW: num(/max.*power|power cap/i),
      tflops: tflopsOf(name),
    })
  }
  return gpus.sort((a, b) => a.index - b.index)
}

/** A number from a tool's field; null for `[N/A]`, `N/A`, `[Not Supported]`, empty or garbage. */
function reading(field: string): number | null {
  if (field.length === 0 || field.startsWith('[') || /^n\/a$/i.test(field)) return null
  const n = Number(field)
  return Number.isFinite(n) ? n : null
}

function percent(n: number | null): number | null {
  return n === null || n < 0 || n > 100 ? null : n
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
  [/MI250X?/i, 383],
]

/** The TFLOPS estimate for a device name; 0 when the part is not known. */
export function tflopsOf(name: string): number {
  for (const [pattern, tflops] of TFLOPS) if (pattern.test(name)) return tflops
  return 0
}

/** Options of {@link readGpus}. */
export interface ReadGpusOptions {
  /** A tool that has not answered by then is killed. @default 2000 */
  readonly timeoutMs?: number
  /** Tool names (tests point them elsewhere). */
  readonly nvidiaSmi?: string
  readonly rocmSmi?: string
}

/**
 * Reads every GPU the vendor tools on this machine report. A missing tool is no error (no
 * such GPUs); a hung one is killed after `timeoutMs` and counts as none, so a heartbeat is
 * never delayed by more than that. Never rejects.
 */
export async function readGpus(options: ReadGpusOptions = {}): Promise<GpuReading[]> {
  const timeoutMs = options.timeoutMs ?? 2_000
  const [nvidia, amd] = await Promise.all([
    run(options.nvidiaSmi ?? 'nvidia-smi', NVIDIA_SMI_ARGS, timeoutMs).then(parseNvidiaSmi),
    run(
      options.rocmSmi ?? 'rocm-smi',
      [
        '--showuse',
        '--showmemuse',
        '--showtemp',
        '--showpower',
        '--showproductname',
        '--showmeminfo',
        'vram',
        '--showuniqueid',
        '--json',
      ],
      timeoutMs,
    ).then(parseRocmSmi),
  ])
  return [...nvidia, ...amd]
}

/** A tool's standard output; empty when it is missing, fails or is killed for taking too long. */
function run(command: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    execFile(
      command,
      [...args],
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1024 * 1024, windowsHide: true },
      (err, stdout) => resolve(err === null ? stdout : ''),
    )
  })
}
