import { join } from 'node:path'
import { defaultDataDir, resolveOptions } from '../config/index.js'
import { ErrorCodes, FabricError, isFabricError } from '../errors/index.js'
import { createLogger, type Logger } from '../observability/logger.js'
import { createStore, type Store } from '../store/index.js'
import { openTelemetry, type Telemetry } from '../telemetry/index.js'
import { CONSUMER_OPTIONS } from './options.js'
import { telemetryFlags } from './server.js'

/** A running `gpufabric consumer`. */
export interface StartedConsumer {
  readonly telemetry: Telemetry
  readonly store: Store
  readonly logger: Logger
  stop(): Promise<void>
}

/**
 * `gpufabric consumer`: the seed's heartbeat consumer. Reads `client-heartbeats` and
 * `request-message` from Kafka and writes them to the database in batches. Without
 * `--bootstrap-server` there is nothing to read from (the in-process bus lives inside a
 * server): refused with a clear message.
 */
export async function startConsumerFromFlags(flags: Record<string, unknown>): Promise<StartedConsumer> {
  const o = resolveOptions(CONSUMER_OPTIONS, flags)
  if (o['bootstrapServer'] === undefined || o['bootstrapServer'] === '') {
    throw new FabricError(
      ErrorCodes.CONFIG,
      'gpufabric consumer reads from Kafka: give --bootstrap-server (a server without Kafka consumes its own telemetry)',
    )
  }
  const logger = createLogger({ level: o['logLevel'] as string, name: 'gpufabric-consumer' })
  const dataDir = (o['dataDir'] as string | undefined) ?? defaultDataDir()
  const store = await createStore({
    databaseUrl: o['databaseUrl'] as string | undefined,
    sqlitePath: join(dataDir, 'gpufabric.db'),
  })
  await migrateWithRetry(store, logger)
  const telemetry = await openTelemetry({ ...telemetryFlags(o), consume: 'on', store, logger }).catch(
    async (err: unknown) => {
      await store.close()
      throw err
    },
  )
  // The bus's timers do not hold the process open (a library must not), and while Kafka is away
  // there may be no socket either: this does, until stop().
  const alive = setInterval(() => undefined, 60_000)
  logger.info(
    { store: store.kind, groupId: o['groupId'], batchSize: o['batchSize'], batchTimeout: o['batchTimeout'] },
    'heartbeat consumer running',
  )
  return {
    telemetry,
    store,
    logger,
    async stop() {
      clearInterval(alive)
      await telemetry.close()
      await store.close()
    },
  }
}

/** The database may start after the consumer (a fresh deployment): wait for it, saying so once. */
async function migrateWithRetry(store: Store, logger: Logger): Promise<void> {
  let warned = false
  for (;;) {
    try {
      await store.migrate()
      return
    } catch (err) {
      if (!isFabricError(err, ErrorCodes.STORE_UNAVAILABLE)) throw err
      if (!warned) logger.warn({ err: err.message }, 'database unavailable; retrying every 2 s')
      warned = true
      await new Promise((resolve) => setTimeout(resolve, 2_000))
    }
  }
}
