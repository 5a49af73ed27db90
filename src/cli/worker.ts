import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { defaultDataDir, resolveOptions } from '../config/index.js'
import { ErrorCodes, FabricError } from '../errors/index.js'
import { createLogger, type Logger } from '../observability/logger.js'
import type { ServerTrust } from '../tls/index.js'
import { WorkerAgent } from '../worker/agent.js'
import { createEngine } from '../worker/engines/index.js'
import { ENGINE_TYPES, type EngineType } from '../worker/engines/types.js'
import { WORKER_OPTIONS } from './options.js'

/** Reads the client id from the data dir, or creates a stable one there. */
export async function stableClientId(dataDir: string): Promise<string> {
  const path = join(dataDir, 'client-id')
  if (existsSync(path)) {
    const id = readFileSync(path, 'utf8').trim()
    if (id.length > 0) return id
  }
  const base =
    hostname()
      .replace(/[^A-Za-z0-9._-]/g, '-')
      .slice(0, 48) || 'worker'
  const id = `${base}-${randomBytes(3).toString('hex')}`
  await mkdir(dataDir, { recursive: true })
  await writeFile(path, `${id}\n`)
  return id
}

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|::1)$/

/** Builds a worker agent from flags, environment and config file. */
export async function createWorkerFromFlags(
  flags: Record<string, unknown>,
): Promise<{ agent: WorkerAgent; logger: Logger }> {
  const o = resolveOptions(WORKER_OPTIONS, flags)
  const dataDir = (o['dataDir'] as string | undefined) ?? defaultDataDir()
  const logger = createLogger({ level: o['logLevel'] as string, name: 'gpufabric-worker' })
  const engineType = o['engineType'] as string
  if (!(ENGINE_TYPES as readonly string[]).includes(engineType)) {
    throw new FabricError(
      ErrorCodes.CONFIG,
      `--engine-type must be one of ${ENGINE_TYPES.join(', ')}, not '${engineType}'`,
    )
  }
  const serverAddr = o['serverAddr'] as string
  const sameMachine = LOOPBACK.test(serverAddr)

  let token = o['token'] as string | undefined
  const tokenFile = join(dataDir, 'worker-token')
  if (token === undefined && sameMachine && existsSync(tokenFile))
    token = readFileSync(tokenFile, 'utf8').trim()
  if (token === undefined) {
    throw new FabricError(
      ErrorCodes.CONFIG,
      'a worker token is required: --token <token> (the server prints it on first start)',
    )
  }

  const trust: { ca?: string; fingerprints?: string[] } = {}
  const certPath = o['certChainPath'] as string | undefined
  if (certPath !== undefined) trust.ca = readFileSync(certPath, 'utf8')
  const pins = o['serverFingerprint'] as string[] | undefined
  if (pins !== undefined && pins.length > 0) trust.fingerprints = pins
  const localCert = join(dataDir, 'cert.pem')
  if (trust.ca === undefined && trust.fingerprints === undefined && sameMachine && existsSync(localCert)) {
    // The server on this machine wrote this certificate: trusting it is explicit, not blind.
    trust.ca = readFileSync(localCert, 'utf8')
    logger.info({ path: localCert }, 'trusting the server certificate from the local data dir')
  }

  const engine = await createEngine({
    type: engineType as EngineType,
    localAddr: o['localAddr'] as string,
    localPort: o['localPort'] as number | undefined,
    engineApiKey: o['engineApiKey'] as string | undefined,
    modelPath: o['modelPath'] as string | undefined,
    modelName: o['modelName'] as string | undefined,
  })
  const agent = new WorkerAgent({
    serverHost: serverAddr,
    controlPort: o['controlPort'] as number,
    proxyPort: o['proxyPort'] as number,
    clientId: (o['clientId'] as string | undefined) ?? (await stableClientId(dataDir)),
    token,
    trust: trust as ServerTrust,
    engine,
    logger,
    capacity: o['capacity'] as number,
    dataDir,
  })
  return { agent, logger }
}
