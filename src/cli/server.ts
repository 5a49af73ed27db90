import { readFile } from 'node:fs/promises'
import { defaultDataDir, resolveOptions } from '../config/index.js'
import { loadOrCreateSecret } from '../config/secrets.js'
import { createLogger, type Logger } from '../observability/logger.js'
import { type FabricPorts, FabricServer } from '../server/index.js'
import { loadOrCreateCertificate } from '../tls/index.js'
import { SERVER_OPTIONS } from './options.js'

/** A started server with what a user needs to reach it. */
export interface StartedServer {
  server: FabricServer
  ports: FabricPorts
  dataDir: string
  apiKey: string
  workerToken: string
  fingerprint256: string
  certPem: string
  logger: Logger
}

/** Resolves server options, creates missing secrets and certificate, and starts the server. */
export async function startServerFromFlags(
  flags: Record<string, unknown>,
  out = process.stdout,
): Promise<StartedServer> {
  const o = resolveOptions(SERVER_OPTIONS, flags)
  const dataDir = (o['dataDir'] as string | undefined) ?? defaultDataDir()
  const logger = createLogger({ level: o['logLevel'] as string, name: 'gpufabric-server' })
  for (const unused of ['databaseUrl', 'redisUrl', 'bootstrapServer'] as const) {
    if (o[unused] !== undefined) {
      logger.warn(
        { option: unused },
        'option accepted but not used yet by this version: embedded defaults are in use',
      )
    }
  }
  const cert = await loadOrCreateCertificate({
    dataDir,
    certPath: o['proxyCertChainPath'] as string | undefined,
    keyPath: o['proxyPrivateKeyPath'] as string | undefined,
  })
  const lines: string[] = []
  if (cert.created) lines.push(`created a self-signed certificate in ${dataDir} (cert.pem, key.pem)`)

  let apiKeys = o['apiKey'] as string[] | undefined
  if (apiKeys === undefined || apiKeys.length === 0) {
    const secret = await loadOrCreateSecret(dataDir, 'api-key', 'gpuf_')
    apiKeys = [secret.value]
    lines.push(
      secret.created ? `created API key (shown once): ${secret.value}` : `API key: stored in ${secret.path}`,
    )
  }
  let workerToken = o['workerToken'] as string | undefined
  if (workerToken === undefined) {
    const secret = await loadOrCreateSecret(dataDir, 'worker-token', 'gpufw_')
    workerToken = secret.value
    lines.push(
      secret.created
        ? `created worker token (shown once): ${secret.value}`
        : `worker token: stored in ${secret.path}`,
    )
  }
  const publicCert = o['publicCertPath'] as string | undefined
  const publicKey = o['publicKeyPath'] as string | undefined
  const publicTls =
    publicCert === undefined
      ? undefined
      : { cert: await readFile(publicCert, 'utf8'), key: await readFile(publicKey ?? '', 'utf8') }

  const server = new FabricServer({
    host: o['host'] as string,
    controlPort: o['controlPort'] as number,
    proxyPort: o['proxyPort'] as number,
    publicPort: o['publicPort'] as number,
    apiPort: o['apiPort'] as number,
    cert: cert.cert,
    key: cert.key,
    publicTls,
    apiKeys,
    workerToken,
    logger,
    pingIntervalMs: o['pingIntervalMs'] as number,
    pingDeadlineMs: o['pingDeadlineMs'] as number,
    maxBodyBytes: o['maxBodyBytes'] as number,
  })
  const ports = await server.start()
  const host = (o['host'] as string) === '0.0.0.0' ? 'localhost' : (o['host'] as string)
  out.write(
    [
      `gpufabric server ready`,
      `  public   ${publicTls === undefined ? 'http' : 'https'}://${host}:${ports.public}  (OpenAI /v1, Ollama /api)`,
      `  api      http://${host}:${ports.api}`,
      `  control  ${ports.control}   proxy ${ports.proxy}   (TLS 1.3)`,
      `  server certificate sha256 fingerprint: ${cert.fingerprint256}`,
      ...lines.map((l) => `  ${l}`),
      '',
    ].join('\n'),
  )
  return {
    server,
    ports,
    dataDir,
    apiKey: apiKeys[0]!,
    workerToken,
    fingerprint256: cert.fingerprint256,
    certPem: cert.cert,
    logger,
  }
}

/** Stops `stop` on SIGINT/SIGTERM, then exits. */
export function stopOnSignals(stop: () => Promise<void>): void {
  let stopping = false
  const onSignal = () => {
    if (stopping) process.exit(1)
    stopping = true
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
}
