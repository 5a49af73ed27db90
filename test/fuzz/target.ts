import { pino } from 'pino'
import { createEchoEngine } from '../../src/worker/engines/echo.js'
import { startFabric, type TestFabric } from '../helpers/fabric.js'

/** Bound ports of the fabric under fuzz. */
export interface FuzzPorts {
  readonly control: number
  readonly proxy: number
  readonly public: number
  readonly api: number
}

/** How the fabric under fuzz is doing. */
export interface TargetHealth {
  /** The echo worker is logged in and has a data link. */
  readonly routable: boolean
  /** Lines the server logged at level error or above (a handler that failed unexpectedly). */
  readonly errors: readonly string[]
}

/** A fabric with an echo worker serving model `echo`, for fuzzing. */
export interface FuzzTarget {
  readonly ports: FuzzPorts
  health(): Promise<TargetHealth>
  close(): Promise<void>
}

/** Client id of the echo worker. */
export const ECHO_WORKER_ID = 'echo-worker'

/**
 * Starts a fabric on loopback, in this process: a crash of the server is a crash of the fuzzer
 * (reported with the cases in flight by run.ts, as a failed test by node:test). A worker
 * thread would isolate it and use the second core, but sockets there do not always tear
 * down as in a main thread (a data link's socket sometimes outlived `stop()`), and the fuzzer
 * should see the server as it runs.
 */
export async function startFuzzTarget(): Promise<FuzzTarget & { fabric: TestFabric }> {
  const errors: string[] = []
  const logger = pino(
    { level: 'error' },
    {
      write(line: string) {
        if (errors.length < 10_000) errors.push(line.trim())
      },
    },
  )
  // Generous ping deadlines: under a 2-core fuzz load the event loop lags, and a worker that
  // drops for that would make the valid client fail for reasons that are not findings.
  const fabric = await startFabric({ logger, pingIntervalMs: 1_000, pingDeadlineMs: 30_000 })
  try {
    await fabric.addWorker(createEchoEngine({ models: ['echo'] }), ECHO_WORKER_ID)
  } catch (err) {
    await fabric.close()
    throw err
  }
  const { control, proxy, public: publicPort, api } = fabric.server.ports
  return {
    fabric,
    ports: { control, proxy, public: publicPort, api },
    async health() {
      return { routable: fabric.server.registry.byClientId(ECHO_WORKER_ID)?.routable === true, errors }
    },
    close: () => fabric.close(),
  }
}
