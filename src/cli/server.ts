import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type AdminAuth, resolveAdminKey } from '../auth/admin.js'
import { KeyAuthenticator } from '../auth/authenticator.js'
import { KeyManager } from '../auth/manage.js'
import { RateLimiter } from '../auth/rate-limit.js'
import { storeWorkerAuthenticator } from '../auth/workers.js'
import { type Cache, createCache } from '../cache/index.js'
import { applyEdgeOverrides, defaultEdgeLimits, type EdgeLimits } from '../config/defaults.js'
import { defaultDataDir, resolveOptions } from '../config/index.js'
import { loadOrCreateSecret } from '../config/secrets.js'
import { ErrorCodes, FabricError, isFabricError } from '../errors/index.js'
import { createLogger, type Logger } from '../observability/logger.js'
import { AFFINITY_MODES, type AffinityMode } from '../routing/affinity.js'
import { ROUTING_STRATEGIES, type RoutingStrategy } from '../routing/registry.js'
import { type FabricPorts, FabricServer, type WorkerEvents } from '../server/index.js'
import { createStore, type KeyRecord, type Store } from '../store/index.js'
import { openTelemetry, type Telemetry } from '../telemetry/index.js'
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
  out: NodeJS.WritableStream = process.stdout,
  logDestination?: NodeJS.WritableStream,
): Promise<StartedServer> {
  const o = resolveOptions(SERVER_OPTIONS, flags)
  const dataDir = (o['dataDir'] as string | undefined) ?? defaultDataDir()
  const logger = createLogger({
    level: o['logLevel'] as string,
    name: 'gpufabric-server',
    ...(logDestination === undefined ? {} : { destination: logDestination }),
  })
  const cert = await loadOrCreateCertificate({
    dataDir,
    certPath: o['proxyCertChainPath'] as string | undefined,
    keyPath: o['proxyPrivateKeyPath'] as string | undefined,
  })
  const lines: string[] = []
  if (cert.created) lines.push(`created a self-signed certificate in ${dataDir} (cert.pem, key.pem)`)

  let apiKeys = o['apiKey'] as string[] | undefined
  if (apiKeys === undefined || apiKeys.length === 0) {
    const secret = await loadOrCreateSecret(dataDir, 'api-key', 'gpuf_static_')
    apiKeys = [secret.value]
    lines.push(
      secret.created ? `created API key (shown once): ${secret.value}` : `API key: stored in ${secret.path}`,
    )
  }
  let workerToken = o['workerToken'] as string | undefined
  if (workerToken === undefined) {
    const secret = await loadOrCreateSecret(dataDir, 'worker-token', 'gpufw_shared_')
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

  let edge: EdgeLimits
  try {
    edge = applyEdgeOverrides(defaultEdgeLimits(), (o['limit'] as string[] | undefined) ?? [])
  } catch (err) {
    throw new FabricError(ErrorCodes.CONFIG, `--limit: ${(err as Error).message}`)
  }
  const infra = await openInfrastructure(o, dataDir, logger)
  if (infra.adminKeyCreated !== undefined)
    lines.push(`created admin key (shown once): ${infra.adminKeyCreated}`)
  else
    lines.push(
      `admin key: ${o['adminKey'] !== undefined ? 'given' : `stored hash in the database${existsSync(join(dataDir, 'admin-key')) ? `; key in ${join(dataDir, 'admin-key')}` : ''}`}`,
    )
  let telemetry: Telemetry
  try {
    telemetry = await openTelemetry({ ...telemetryFlags(o), store: infra.store, logger })
  } catch (err) {
    await infra.close()
    throw err
  }
  lines.push(
    `store: ${infra.store.kind}   cache: ${infra.cache.kind}   bus: ${telemetry.bus.kind}${telemetry.consumer === undefined ? '' : ' (consumer in this server)'}`,
  )
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
    authenticateWorker: storeWorkerAuthenticator({ store: infra.store, sharedToken: workerToken, logger }),
    keyAuthenticator: new KeyAuthenticator({
      staticKeys: apiKeys,
      store: infra.store,
      // Without Redis there is nothing shared to cache keys in: the authenticator's own
      // in-process entries are the only layer.
      cache: infra.cache === infra.localCache ? undefined : infra.cache,
      logger: logger.child({ component: 'keys' }),
      localTtlMs: o['keyCacheMs'] as number,
    }),
    rateLimiter: new RateLimiter({ shared: infra.cache, local: infra.localCache, logger }),
    admin: infra.admin,
    store: infra.store,
    keyManager: new KeyManager(infra.store, async (record: KeyRecord) => {
      await server.invalidateKey(record.prefix)
    }),
    workerEvents: workerEventsFor(infra.store, logger),
    telemetry: telemetry.publisher,
    telemetryStats: () => telemetry.stats(),
    heartbeatIntervalMs: o['heartbeatIntervalMs'] as number,
    corsOrigins: (o['corsOrigin'] as string[] | undefined) ?? [],
    affinity: affinityMode(o['affinity']),
    routing: routingStrategy(o['routing']),
    metricsOpen: o['metricsOpen'] === true,
    logger,
    pingIntervalMs: o['pingIntervalMs'] as number,
    pingDeadlineMs: o['pingDeadlineMs'] as number,
    maxBodyBytes: o['maxBodyBytes'] as number,
    edge,
  })
  const closeAll = async () => {
    // The consumer writes to the store: it stops (and the bus flushes) first.
    await telemetry.close()
    await infra.close()
  }
  const ports = await server.start().catch(async (err: unknown) => {
    await closeAll()
    throw err
  })
  server.onStopped(closeAll)
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

/** The telemetry options of a server or consumer, from resolved flags. */
export function telemetryFlags(o: Record<string, unknown>) {
  const consume = String(o['consume'] ?? 'auto')
  if (consume !== 'auto' && consume !== 'on' && consume !== 'off')
    throw new FabricError(ErrorCodes.CONFIG, `--consume must be auto, on or off, not '${consume}'`)
  const positive = (name: string, flag: string): number => {
    const value = o[name] as number
    if (!Number.isFinite(value) || value < 0)
      throw new FabricError(ErrorCodes.CONFIG, `${flag} must be 0 or more`)
    return value
  }
  const batchSize = positive('batchSize', '--batch-size')
  if (batchSize < 1) throw new FabricError(ErrorCodes.CONFIG, '--batch-size must be at least 1')
  return {
    bootstrapServer: o['bootstrapServer'] as string | undefined,
    consume: consume as 'auto' | 'on' | 'off',
    batchSize,
    batchTimeoutMs: positive('batchTimeout', '--batch-timeout') * 1000,
    groupId: o['groupId'] as string,
    retentionMs: positive('retentionDays', '--retention-days') * 86_400_000,
  }
}

/** Store, caches and admin key of a server. */
interface Infrastructure {
  store: Store
  cache: Cache
  localCache: Cache
  admin: AdminAuth
  adminKeyCreated: string | undefined
  close(): Promise<void>
}

async function openInfrastructure(
  o: Record<string, unknown>,
  dataDir: string,
  logger: Logger,
): Promise<Infrastructure> {
  const store = await createStore({
    databaseUrl: o['databaseUrl'] as string | undefined,
    sqlitePath: join(dataDir, 'gpufabric.db'),
  })
  const stopMigrating = await migrateWhenReachable(store, logger)
  const localCache = await createCache({})
  const redisUrl = o['redisUrl'] as string | undefined
  const cache =
    redisUrl === undefined
      ? localCache
      : await createCache({ redisUrl }, { logger: logger.child({ component: 'cache' }) })
  const admin = await resolveAdminKey({ given: o['adminKey'] as string | undefined, store, dataDir })
  return {
    store,
    cache,
    localCache,
    admin: admin.auth,
    adminKeyCreated: admin.created,
    async close() {
      stopMigrating()
      await Promise.allSettled([
        store.close(),
        cache.close(),
        cache === localCache ? undefined : localCache.close(),
      ])
    },
  }
}

/**
 * Applies migrations; a database that is down at start-up does not stop the server (static
 * keys work meanwhile): it keeps trying in the background.
 */
async function migrateWhenReachable(store: Store, logger: Logger): Promise<() => void> {
  try {
    await store.migrate()
    return () => {}
  } catch (err) {
    if (!isFabricError(err, ErrorCodes.STORE_UNAVAILABLE)) throw err
    logger.error('database unavailable at start-up; serving static keys and retrying migrations')
    const retry = setInterval(() => {
      store.migrate().then(
        () => {
          clearInterval(retry)
          logger.info('database reachable; migrations applied')
        },
        () => undefined,
      )
    }, 2_000)
    retry.unref()
    return () => clearInterval(retry)
  }
}

/** Records workers coming and going in the store; a database outage only costs a log line. */
function workerEventsFor(store: Store, logger: Logger): WorkerEvents {
  const fail = (err: unknown) => logger.warn({ err: String(err) }, 'could not record worker status')
  return {
    online(s) {
      store
        .updateWorker(s.clientId, {
          status: 'online',
          os: s.os ?? null,
          hostname: s.hostname ?? null,
          engineType: s.engineType,
          models: [...s.models],
        })
        .catch(fail)
    },
    offline(s) {
      store.updateWorker(s.clientId, { status: 'offline' }).catch(fail)
    },
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

/** `--affinity`, checked. */
function affinityMode(value: unknown): AffinityMode {
  const mode = String(value ?? 'off')
  if (!(AFFINITY_MODES as readonly string[]).includes(mode))
    throw new FabricError(
      ErrorCodes.CONFIG,
      `--affinity is one of ${AFFINITY_MODES.join(', ')}, not '${mode}'`,
    )
  return mode as AffinityMode
}

/** `--routing`, checked. */
function routingStrategy(value: unknown): RoutingStrategy {
  const strategy = String(value ?? 'p2c')
  if (!(ROUTING_STRATEGIES as readonly string[]).includes(strategy))
    throw new FabricError(
      ErrorCodes.CONFIG,
      `--routing is one of ${ROUTING_STRATEGIES.join(', ')}, not '${strategy}'`,
    )
  return strategy as RoutingStrategy
}
