import { availableParallelism } from 'node:os'
import { performance } from 'node:perf_hooks'
import { Worker } from 'node:worker_threads'
import { casesInFlight, formatReport, runNetworkFuzz } from './network.js'
import { properties } from './properties.js'
import type { PropertyJob, PropertyJobResult } from './property-worker.js'
import { startFuzzTarget } from './target.js'

/**
 * `npm run fuzz`: a million generated inputs across the decoders (on every core, in worker
 * threads), then the network fuzzer against a live fabric. Exits non-zero on any failure.
 *
 *   node dist/test/fuzz/run.js [all|decoders|network]
 *
 * GPUF_FUZZ_RUNS (1,000,000) decoder inputs in total, shared by the properties' weights;
 * GPUF_NETFUZZ_REQUESTS (100,000) malformed network requests; GPUF_FUZZ_SEED replays a run;
 * GPUF_FUZZ_THREADS (one per core) worker threads for the decoders. One network case replays
 * with GPUF_FUZZ_SEED=<seed> GPUF_NETFUZZ_FIRST=<case> GPUF_NETFUZZ_REQUESTS=1 … network.
 */

/** Runs per job: small enough that a hung input is noticed, big enough to amortise a message. */
const SLICE_RUNS = 20_000
/** A slice that takes this long has an input that hangs (each input is bounded to 1 s). */
const SLICE_LIMIT_MS = 120_000

function envInt(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw.replaceAll('_', ''))
  if (!Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`${name} must be a whole number, not '${raw}'`)
  return value
}

const fmt = (n: number) => n.toLocaleString('en-US')

async function fuzzDecoders(total: number, seed: number, threads: number): Promise<boolean> {
  const weights = properties.reduce((n, p) => n + p.weight, 0)
  const jobs: (PropertyJob & { name: string })[] = []
  const planned = properties.map((p, property) => {
    const runs = Math.ceil((total * p.weight) / weights)
    for (let done = 0; done < runs; done += SLICE_RUNS) {
      const id = jobs.length
      jobs.push({
        id,
        property,
        name: p.name,
        runs: Math.min(SLICE_RUNS, runs - done),
        seed: (seed + id) | 0,
      })
    }
    return runs
  })
  const ran = properties.map(() => 0)
  const ms = properties.map(() => 0)
  const failures: string[] = []
  const t0 = performance.now()
  const url = new URL('./property-worker.js', import.meta.url)

  let next = 0
  async function thread(): Promise<void> {
    let worker = new Worker(url)
    try {
      while (next < jobs.length) {
        const job = jobs[next++]!
        const result = await new Promise<PropertyJobResult | undefined>((resolve, reject) => {
          const timer = setTimeout(() => resolve(undefined), SLICE_LIMIT_MS)
          worker.once('message', (r: PropertyJobResult) => {
            clearTimeout(timer)
            resolve(r)
          })
          worker.once('error', reject)
          worker.postMessage({ id: job.id, property: job.property, runs: job.runs, seed: job.seed })
        })
        worker.removeAllListeners('message')
        worker.removeAllListeners('error')
        if (result === undefined) {
          failures.push(
            `${job.name}: ${fmt(job.runs)} inputs (fast-check seed ${job.seed}) did not finish in ${SLICE_LIMIT_MS / 1000} s: an input hangs`,
          )
          await worker.terminate()
          worker = new Worker(url)
          continue
        }
        ran[job.property]! += job.runs
        ms[job.property]! += result.ms
        if (result.error !== undefined)
          failures.push(`${job.name} (fast-check seed ${job.seed}):\n${result.error}`)
      }
    } finally {
      await worker.terminate()
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, threads) }, () => thread()))
  const seconds = (performance.now() - t0) / 1000

  const width = Math.max(...properties.map((p) => p.name.length))
  console.log(`decoder fuzz: seed ${seed}, ${threads} thread(s)`)
  properties.forEach((p, i) => {
    console.log(
      `  ${p.name.padEnd(width)}  ${fmt(ran[i]!).padStart(9)} inputs  ${(ms[i]! / 1000).toFixed(1).padStart(6)} s`,
    )
  })
  const totalRan = ran.reduce((a, b) => a + b, 0)
  console.log(
    `  ${'total'.padEnd(width)}  ${fmt(totalRan).padStart(9)} inputs  in ${seconds.toFixed(1)} s (wall clock)`,
  )
  if (totalRan < planned.reduce((a, b) => a + b, 0)) failures.push('some inputs were not run')
  for (const f of failures) console.error(`FAILED ${f}\n`)
  return failures.length === 0
}

async function fuzzNetwork(requests: number, seed: number): Promise<boolean> {
  const target = await startFuzzTarget()
  try {
    const report = await runNetworkFuzz({
      target,
      requests,
      seed,
      firstCase: envInt('GPUF_NETFUZZ_FIRST', 0),
      log: (line) => console.log(line),
    })
    console.log(formatReport(report))
    return report.findings.length === 0
  } finally {
    await target.close()
  }
}

process.on('uncaughtException', (err) => {
  console.error('CRASH: uncaught exception', err)
  const active = casesInFlight()
  if (active.length > 0) console.error(`network cases in flight:\n  ${active.join('\n  ')}`)
  process.exit(2)
})

const mode = process.argv[2] ?? 'all'
if (!['all', 'decoders', 'network'].includes(mode)) {
  console.error(`usage: run.js [all|decoders|network] (not '${mode}')`)
  process.exit(64)
}
const seed = envInt('GPUF_FUZZ_SEED', Math.floor(Math.random() * 2 ** 31))
let ok = true
if (mode !== 'network') {
  ok =
    (await fuzzDecoders(
      envInt('GPUF_FUZZ_RUNS', 1_000_000),
      seed,
      envInt('GPUF_FUZZ_THREADS', availableParallelism()),
    )) && ok
}
if (mode !== 'decoders') ok = (await fuzzNetwork(envInt('GPUF_NETFUZZ_REQUESTS', 100_000), seed)) && ok
console.log(ok ? 'fuzz: no failures' : 'fuzz: FAILED')
process.exit(ok ? 0 : 1)
