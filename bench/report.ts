/**
 * Statistics and printing for the latency benchmark: percentiles per path,
 * latency added over the direct path, CPU per request, and the verdict.
 */

/**
 * The five paths, in the order the table prints them: each one below
 * `direct` adds something to the one above it (`h2 floor` is the fabric's
 * mechanism without its logic, see bench/reference-h2.ts).
 */
export const PATH_NAMES = ['direct', '1 hop', '2 hops', 'h2 floor', 'fabric'] as const
/** One of {@link PATH_NAMES}. */
export type PathName = (typeof PATH_NAMES)[number]

/** Latency of one path, in milliseconds. */
export interface PathStats {
  readonly requests: number
  readonly p50Ms: number
  readonly p99Ms: number
  /** p50 of this path minus p50 of the direct path. */
  readonly addedP50Ms: number
  /** p99 of this path minus p99 of the direct path. */
  readonly addedP99Ms: number
}

/** CPU time (user + system) one process spent per request of its path, in µs. */
export interface CpuRow {
  readonly process: string
  readonly microsPerRequest: number
}

/** Everything the benchmark prints, table or `--json`. */
export interface LatencyReport {
  readonly rounds: number
  readonly warmupRounds: number
  readonly paths: Record<PathName, PathStats>
  /** Fabric added p50 / two-hop added p50; `null` when two hops add nothing measurable. */
  readonly fabricToTwoHopAddedP50: number | null
  /** Fabric added p50 / one-hop added p50; `null` when one hop adds nothing measurable. */
  readonly fabricToOneHopAddedP50: number | null
  /** Fabric added p50 / h2-floor added p50; `null` when the floor adds nothing measurable. */
  readonly fabricToH2FloorAddedP50: number | null
  /** p50 of fabric minus p50 of the h2 floor, in ms: what the fabric's own logic costs. */
  readonly fabricLogicP50Ms: number
  /** p50 of the h2 floor minus p50 of two hops, in ms: Node's HTTP/2 + TLS over plain HTTP/1.1 hops. */
  readonly h2TlsOverTwoHopsP50Ms: number
  readonly cpu: readonly CpuRow[]
  /** The smallest CPU difference per request the tick counters can show, in µs. */
  readonly cpuResolutionMicros: number
  readonly clockTicksPerSecond: number
  /** The target: the fabric adds no more at p50 than two plain Node hops. */
  readonly pass: boolean
}

/** Nearest-rank percentile of an ascending-sorted array (`p` in 0..100). */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!
}

/** Percentiles of each path and what each adds over `direct`. */
export function summarise(samples: Record<PathName, Float64Array>): Record<PathName, PathStats> {
  const sorted = (name: PathName) => Float64Array.from(samples[name]).sort()
  const direct = sorted('direct')
  const directP50 = percentile(direct, 50)
  const directP99 = percentile(direct, 99)
  const out = {} as Record<PathName, PathStats>
  for (const name of PATH_NAMES) {
    const s = name === 'direct' ? direct : sorted(name)
    const p50 = percentile(s, 50)
    const p99 = percentile(s, 99)
    out[name] = {
      requests: s.length,
      p50Ms: p50,
      p99Ms: p99,
      addedP50Ms: p50 - directP50,
      addedP99Ms: p99 - directP99,
    }
  }
  return out
}

/** `a / b`, or `null` when `b` is too small for the ratio to mean anything. */
export function ratio(a: number, b: number): number | null {
  return b > 1e-6 ? a / b : null
}

const ms = (v: number): string => v.toFixed(3)

/** The report as the human-readable table. */
export function formatReport(r: LatencyReport): string {
  const header = ['path', 'p50 ms', 'p99 ms', 'added p50 ms', 'added p99 ms']
  const rows = PATH_NAMES.map((name) => {
    const s = r.paths[name]
    const added = name === 'direct' ? ['-', '-'] : [ms(s.addedP50Ms), ms(s.addedP99Ms)]
    return [name, ms(s.p50Ms), ms(s.p99Ms), ...added]
  })
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)))
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')
  const cpuWidth = Math.max(...r.cpu.map((c) => c.process.length))
  const fmtRatio = (v: number | null): string => (v === null ? 'n/a' : v.toFixed(2))
  const fabric = r.paths.fabric
  const twoHops = r.paths['2 hops']
  const signed = (v: number): string => (v < 0 ? ms(v) : `+${ms(v)}`)
  // The gap the target is about, and its two parts (they add up to it).
  const split: [string, number][] = [
    ['fabric - 2 hops:', r.fabricLogicP50Ms + r.h2TlsOverTwoHopsP50Ms],
    ['  h2 floor - 2 hops (HTTP/2 lanes + TLS 1.3 over HTTP/1.1):', r.h2TlsOverTwoHopsP50Ms],
    ["  fabric - h2 floor (the fabric's own logic):", r.fabricLogicP50Ms],
  ]
  const splitWidth = Math.max(...split.map(([label]) => label.length))
  return [
    `GPUFabric added latency: ${r.rounds} rounds after ${r.warmupRounds} warm-up rounds;`,
    `one request at a time, keep-alive, all ${PATH_NAMES.length} paths in a fresh random order in every round`,
    '',
    line(header),
    ...rows.map(line),
    '',
    `fabric added p50 / 2-hop added p50: ${fmtRatio(r.fabricToTwoHopAddedP50)}`,
    `fabric added p50 / 1-hop added p50: ${fmtRatio(r.fabricToOneHopAddedP50)}`,
    `fabric added p50 / h2-floor added p50: ${fmtRatio(r.fabricToH2FloorAddedP50)}`,
    '',
    'p50 gap to two hops, split by the h2 floor (the same mechanism, no fabric logic):',
    ...split.map(([label, v]) => `  ${label.padEnd(splitWidth)} ${signed(v).padStart(7)} ms`),
    '',
    `CPU per request of its path (user+system, µs; /proc at ${r.clockTicksPerSecond} ticks/s,` +
      ` resolution ${r.cpuResolutionMicros.toFixed(1)} µs):`,
    ...r.cpu.map((c) => `  ${c.process.padEnd(cpuWidth)}  ${c.microsPerRequest.toFixed(1).padStart(8)}`),
    '',
    `verdict: ${r.pass ? 'PASS' : 'FAIL'}: fabric adds ${ms(fabric.addedP50Ms)} ms at p50,` +
      ` two Node hops add ${ms(twoHops.addedP50Ms)} ms (target: fabric <= two hops)`,
  ].join('\n')
}
