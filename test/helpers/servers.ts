import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { type StartedServer, startServerFromFlags } from '../../src/cli/server.js'
import { WorkerAgent, type WorkerAgentOptions } from '../../src/worker/agent.js'
import { createEchoEngine } from '../../src/worker/engines/echo.js'

export const ADMIN_KEY = 'test-admin-key-0123456789'
export const STATIC_KEY = 'test-static-key-0123456789'
export const SHARED_WORKER_TOKEN = 'test-shared-worker-token-01234'

/** A server started through the CLI's own wiring (store, caches, keys), on loopback ports 0. */
export interface WiredServer extends StartedServer {
  baseUrl: string
  apiUrl: string
  /** Everything the server logged, as text. */
  logs(): string
  close(): Promise<void>
}

/** Starts a fully wired server: SQLite in a temp data dir unless `databaseUrl` is given. */
export async function startWiredServer(flags: Record<string, unknown> = {}): Promise<WiredServer> {
  const dataDir = (flags['dataDir'] as string | undefined) ?? mkdtempSync(join(tmpdir(), 'gpuf-srv-'))
  let logText = ''
  const logStream = new PassThrough()
  logStream.on('data', (c: Buffer) => {
    logText += c.toString()
  })
  const started = await startServerFromFlags(
    {
      host: '127.0.0.1',
      controlPort: 0,
      proxyPort: 0,
      publicPort: 0,
      apiPort: 0,
      dataDir,
      apiKey: [STATIC_KEY],
      adminKey: ADMIN_KEY,
      workerToken: SHARED_WORKER_TOKEN,
      // Debug: the secret checks then read every line a server can write.
      logLevel: 'debug',
      pingIntervalMs: 500,
      pingDeadlineMs: 2000,
      // Telemetry written within a second (the seed's default waits 5 s for a batch to fill).
      batchTimeout: 1,
      ...flags,
    },
    new PassThrough(),
    logStream,
  )
  return {
    ...started,
    baseUrl: `http://127.0.0.1:${started.ports.public}`,
    apiUrl: `http://127.0.0.1:${started.ports.api}`,
    logs: () => logText,
    close: () => started.server.stop(),
  }
}

/** Calls the management API with the admin key. */
export async function admin(server: { apiUrl: string }, method: string, path: string, body?: unknown) {
  const res = await fetch(`${server.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

/** GET /v1/models with a key: 200 when the key is accepted. */
export async function modelsWith(server: { baseUrl: string }, key: string): Promise<Response> {
  return fetch(`${server.baseUrl}/v1/models`, { headers: { authorization: `Bearer ${key}` } })
}

/**
 * A worker with the echo engine serving `models` (default `echo`) for a wired server, with
 * short reconnect timings; not started. The shared worker token unless `token` is given.
 */
export function echoWorker(
  server: Pick<WiredServer, 'ports' | 'certPem'>,
  clientId: string,
  options: { models?: string[]; token?: string } & Partial<WorkerAgentOptions> = {},
): WorkerAgent {
  const { models = ['echo'], token = SHARED_WORKER_TOKEN, ...rest } = options
  return new WorkerAgent({
    serverHost: '127.0.0.1',
    controlPort: server.ports.control,
    proxyPort: server.ports.proxy,
    clientId,
    token,
    trust: { ca: server.certPem },
    engine: createEchoEngine({ models }),
    reconnectBaseMs: 50,
    connectTimeoutMs: 2_000,
    ...rest,
  })
}
