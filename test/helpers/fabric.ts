import { connect as netConnect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent } from 'undici'
import { FabricServer, type FabricServerOptions } from '../../src/server/index.js'
import { type CertificatePair, createSelfSignedCertificate } from '../../src/tls/index.js'
import { WorkerAgent, type WorkerAgentOptions } from '../../src/worker/agent.js'
import type { Engine } from '../../src/worker/engines/types.js'

export const API_KEY = 'test-api-key-0123456789'
export const WORKER_TOKEN = 'test-worker-token-0123456789'

let certPromise: Promise<CertificatePair> | undefined
/** One self-signed certificate per test process. */
export function testCertificate(): Promise<CertificatePair> {
  certPromise ??= createSelfSignedCertificate()
  return certPromise
}

/** Polls `check` until it holds, or throws after `timeoutMs`. */
export async function waitFor(check: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

/** A running server plus helpers to attach workers to it. */
export interface TestFabric {
  server: FabricServer
  cert: CertificatePair
  baseUrl: string
  apiUrl: string
  workers: WorkerAgent[]
  addWorker(engine: Engine, clientId: string, extra?: Partial<WorkerAgentOptions>): Promise<WorkerAgent>
  close(): Promise<void>
}

/** Starts a server on loopback, ports 0, with short ping timings. */
export async function startFabric(overrides: Partial<FabricServerOptions> = {}): Promise<TestFabric> {
  const cert = await testCertificate()
  const server = new FabricServer({
    host: '127.0.0.1',
    controlPort: 0,
    proxyPort: 0,
    publicPort: 0,
    apiPort: 0,
    cert: cert.cert,
    key: cert.key,
    apiKeys: [API_KEY],
    workerToken: WORKER_TOKEN,
    pingIntervalMs: 500,
    pingDeadlineMs: 2_000,
    ...overrides,
  })
  const ports = await server.start()
  const workers: WorkerAgent[] = []
  const fabric: TestFabric = {
    server,
    cert,
    baseUrl: `http://127.0.0.1:${ports.public}`,
    apiUrl: `http://127.0.0.1:${ports.api}`,
    workers,
    async addWorker(engine, clientId, extra = {}) {
      const agent = new WorkerAgent({
        serverHost: '127.0.0.1',
        controlPort: server.ports.control,
        proxyPort: server.ports.proxy,
        clientId,
        token: WORKER_TOKEN,
        trust: { ca: cert.cert },
        engine,
        reconnectBaseMs: 50,
        reconnectMaxMs: 500,
        // Short dial timeouts, so that a retried dial fits well inside the waits below.
        connectTimeoutMs: 2_000,
        loginTimeoutMs: 2_000,
        ...extra,
      })
      workers.push(agent)
      agent.start()
      await agent.ready(AbortSignal.timeout(15_000))
      await waitFor(
        () => server.registry.byClientId(clientId)?.routable === true,
        15_000,
        `${clientId} routable`,
      )
      return agent
    },
    async close() {
      await Promise.allSettled(workers.map((w) => w.stop()))
      await server.stop()
    },
  }
  return fabric
}

/**
 * An undici Agent whose connections start from `localAddress` (another loopback address plays
 * another host). undici's own `connect` options do not pass `localAddress` through.
 */
export function agentFrom(localAddress: string, options: Omit<Agent.Options, 'connect'> = {}): Agent {
  return new Agent({
    ...options,
    connect: (opts, callback) => {
      const socket = netConnect({ host: opts.hostname, port: Number(opts.port), localAddress })
      socket.setNoDelay(true)
      const onError = (err: Error) => callback(err, null)
      socket.once('error', onError)
      socket.once('connect', () => {
        socket.off('error', onError)
        callback(null, socket)
      })
    },
  })
}
