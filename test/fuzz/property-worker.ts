import { performance } from 'node:perf_hooks'
import { parentPort } from 'node:worker_threads'
import { properties } from './properties.js'

/** One slice of a property's runs, as run.ts hands it to a worker thread. */
export interface PropertyJob {
  readonly id: number
  readonly property: number
  readonly runs: number
  readonly seed: number
}

/** What a worker thread answers for a job. */
export interface PropertyJobResult {
  readonly id: number
  readonly ms: number
  readonly error?: string
}

// A worker thread per core: run.ts hands out slices and watches for one that never returns.
parentPort?.on('message', (job: PropertyJob) => {
  const t0 = performance.now()
  let error: string | undefined
  try {
    properties[job.property]!.check(job.runs, job.seed)
  } catch (err) {
    error = err instanceof Error ? err.message : String(err)
  }
  const result: PropertyJobResult = {
    id: job.id,
    ms: performance.now() - t0,
    ...(error === undefined ? {} : { error }),
  }
  parentPort!.postMessage(result)
})
