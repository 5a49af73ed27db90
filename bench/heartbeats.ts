/**
 * Heartbeat ingestion benchmark: heartbeats per second from publish to committed database rows.
 *
 * Three paths, each fed the same heartbeats (100 simulated workers, two GPUs each, as the
 * server publishes them):
 *
 *   direct     batches written straight into PostgreSQL with the store's own batch write
 *              (`applyTelemetry`): the database's ceiling, the "direct connection" of this
 *              benchmark
 *   kafka      published on a KafkaBus to a real Kafka broker, read by `gpufabric consumer` (its
 *              own process, as in production) and written to PostgreSQL; timed from the first
 *              publish until the last row is committed
 *   embedded   the default with nothing installed: the in-process bus and the consumer inside
 *              the same process, writing to SQLite
 *
 * It prints heartbeats per second for each and the ratio of the Kafka path to the direct write.
 * Target (issue 8): at least 20,000 heartbeats per second through Kafka into PostgreSQL.
 *
 * Usage: `npm run bench:heartbeats -- [--count N] [--batch-size N] [--json]`
 * (PostgreSQL and Kafka as the test suite installs them: `bash scripts/ensure-services.sh`
 * and `bash scripts/ensure-kafka.sh`).
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Client } from 'pg'
import { TOPICS } from '../src/bus/index.js'
import { KafkaBus } from '../src/bus/kafka.js'
import { MemoryBus } from '../src/bus/memory.js'
import { silentLogger } from '../src/observability/logger.js'
import { PostgresStore, SqliteStore } from '../src/store/index.js'
import { encodeEvent, type HeartbeatEvent, TelemetryConsumer } from '../src/telemetry/index.js'
import { startKafka, startPostgres } from '../test/helpers/services.js'

const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '200000' },
    'batch-size': { type: 'string', default: '1000' },
    json: { type: 'boolean', default: false },
  },
})
const COUNT = Number(args.count)
const BATCH = Number(args['batch-size'])
const WORKERS = 100
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url))

let seq = 0
/** The n-th heartbeat of a run (`run` keeps ids unique across paths sharing a database). */
function heartbeat(run: string, n: number): HeartbeatEvent {
  const w = n % WORKERS
  const b = Math.floor(n / WORKERS)
  return {
    v: 1,
    type: 'heartbeat',
    id: `${run}.${(seq++).toString(36)}`,
    clientId: `${run}-w${w}`,
    userId: 'usr_bench',
    at: Date.now(),
    inflight: b % 4,
    models: 2,
    linkBytesIn: 1000 * b,
    linkBytesOut: 5000 * b,
    netInBytes: 1200,
    netOutBytes: 800,
    metrics: {
      cpuPercent: (w + b) % 100,
      load1: 1.5,
      memUsedBytes: 8e9,
      memTotalBytes: 64e9,
      memPercent: 12.5,
      diskPercent: 40,
      netRxBytes: 1e9 + b * 1200,
      netTxBytes: 5e8 + b * 800,
      netRxRate: 240,
      netTxRate: 160,
      uptimeSeconds: 86_400 + b * 5,
      deviceCount: 2,
      deviceMemoryTotalBytes: 2 * 85_520_809_984,
      totalTflops: 1978,
      gpus: [0, 1].map((index) => ({
        index,
        vendor: 'nvidia' as const,
        name: 'NVIDIA H100 80GB HBM3',
        uuid: `GPU-${w}-${index}`,
        utilizationPercent: (b + index) % 100,
        memoryUtilizationPercent: 30,
        memoryUsedBytes: 40e9,
        memoryTotalBytes: 85_520_809_984,
        temperatureC: 55,
        powerDrawW: 450.5,
        powerLimitW: 700,
        tflops: 989,
      })),
    },
  }
}

interface Row {
  path: string
  heartbeats: number
  seconds: number
  perSecond: number
}

const row = (path: string, heartbeats: number, ms: number): Row => ({
  path,
  heartbeats,
  seconds: ms / 1000,
  perSecond: Math.round(heartbeats / (ms / 1000)),
})

async function countRows(db: Client, run: string): Promise<number> {
  const { rows } = await db.query('SELECT count(*)::int AS n FROM heartbeats WHERE client_id LIKE $1', [
    `${run}-%`,
  ])
  return (rows[0] as { n: number }).n
}

async function direct(store: PostgresStore): Promise<Row> {
  const events = Array.from({ length: COUNT }, (_, n) => heartbeat('direct', n))
  const started = performance.now()
  for (let i = 0; i < events.length; i += BATCH) {
    await store.applyTelemetry({ heartbeats: events.slice(i, i + BATCH), usage: [] })
  }
  return row('direct (PostgreSQL batch write)', COUNT, performance.now() - started)
}

/** When the last heartbeat was acknowledged by the broker (ms after the first publish). */
let kafkaPublishMs = 0

function startConsumer(bootstrap: string, databaseUrl: string) {
  const child = spawn(
    process.execPath,
    [
      // As in bench/children.ts: e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile the consumer.
      ...(process.env['BENCH_CHILD_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== ''),
      CLI,
      'consumer',
      '--bootstrap-server',
      bootstrap,
      '--database-url',
      databaseUrl,
      '--batch-size',
      String(BATCH),
      '--batch-timeout',
      '1',
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  )
  return {
    async stop() {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    },
  }
}

/**
 * Live: heartbeats published while the consumer runs, timed from the first publish to the last
 * committed row. Backlog: heartbeats published (and acknowledged) while no consumer runs, then
 * a consumer started and timed until the last row (its start and group join included): the
 * consumer's own pace, without the publisher on the same two cores.
 */
async function throughKafka(bootstrap: string, databaseUrl: string, db: Client): Promise<Row[]> {
  const bus = new KafkaBus({ bootstrapServers: [bootstrap], clientId: 'bench', maxBuffered: COUNT + 1 })
  let consumer = startConsumer(bootstrap, databaseUrl)
  try {
    // Warm up: topics created, the consumer has joined its group and written a first batch.
    bus.publish(TOPICS.heartbeats, 'warm', encodeEvent(heartbeat('warm', 0)))
    while ((await countRows(db, 'warm')) < 1) await sleep(200)
    const events = Array.from({ length: COUNT }, (_, n) => encodeEvent(heartbeat('kafka', n)))
    const started = performance.now()
    for (const [n, value] of events.entries()) bus.publish(TOPICS.heartbeats, `kafka-w${n % WORKERS}`, value)
    const flushed = bus.flush(600_000).then(() => performance.now() - started)
    while ((await countRows(db, 'kafka')) < COUNT) await sleep(100)
    const live = performance.now() - started
    kafkaPublishMs = await flushed
    await consumer.stop()

    const backlog = Array.from({ length: COUNT }, (_, n) => encodeEvent(heartbeat('backlog', n)))
    for (const [n, value] of backlog.entries())
      bus.publish(TOPICS.heartbeats, `backlog-w${n % WORKERS}`, value)
    await bus.flush(600_000)
    const drainStarted = performance.now()
    consumer = startConsumer(bootstrap, databaseUrl)
    while ((await countRows(db, 'backlog')) < COUNT) await sleep(100)
    const drain = performance.now() - drainStarted
    return [
      row(`kafka live: publish → consumer → PostgreSQL (batch ${BATCH})`, COUNT, live),
      row(`kafka backlog: consumer → PostgreSQL (batch ${BATCH})`, COUNT, drain),
    ]
  } finally {
    await consumer.stop()
    await bus.close()
  }
}

async function embedded(): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'gpuf-bench-hb-'))
  const store = new SqliteStore({ path: join(dir, 'bench.db') })
  await store.migrate()
  const bus = new MemoryBus({ maxBuffered: COUNT + 1 })
  const consumer = new TelemetryConsumer({
    bus,
    store,
    logger: silentLogger(),
    groupId: 'bench',
    batchSize: BATCH,
    batchTimeoutMs: 50,
    retentionMs: 0,
  })
  consumer.start()
  try {
    const started = performance.now()
    for (let n = 0; n < COUNT; n++) {
      bus.publish(TOPICS.heartbeats, `emb-w${n % WORKERS}`, encodeEvent(heartbeat('emb', n)))
      // The server publishes as heartbeats arrive: let the consumer run between bursts.
      if (n % 5_000 === 4_999) await sleep(0)
    }
    while (consumer.stats().heartbeats < COUNT) await sleep(20)
    return row(`embedded: in-process bus → SQLite (batch ${BATCH})`, COUNT, performance.now() - started)
  } finally {
    await consumer.stop()
    await bus.close()
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

async function main(): Promise<void> {
  const [kafka, postgres] = await Promise.all([startKafka(), startPostgres()])
  const store = new PostgresStore({ url: postgres.url, statementTimeoutMs: 60_000 })
  const db = new Client({ connectionString: postgres.url })
  try {
    await store.migrate()
    await db.connect()
    const rows = [await direct(store), ...(await throughKafka(kafka.url, postgres.url, db)), await embedded()]
    const kafkaRatio = rows[1]!.perSecond / rows[0]!.perSecond
    if (args.json) {
      process.stdout.write(
        `${JSON.stringify({ count: COUNT, batchSize: BATCH, rows, kafkaToDirect: kafkaRatio })}\n`,
      )
      return
    }
    const lines = [
      `heartbeat ingestion: ${COUNT} heartbeats from ${WORKERS} workers (2 GPUs each), batch size ${BATCH}`,
      '',
      ...rows.map(
        (r) => `  ${r.path.padEnd(55)} ${String(r.perSecond).padStart(8)} /s   (${r.seconds.toFixed(2)} s)`,
      ),
      '',
      `  kafka live path / direct write: ${kafkaRatio.toFixed(2)}`,
      `  (of the kafka path: every heartbeat acknowledged by the broker after ${(kafkaPublishMs / 1000).toFixed(2)} s, ${Math.round(COUNT / (kafkaPublishMs / 1000))} /s)`,
      `  target: ≥ 20,000 /s through Kafka into PostgreSQL: live ${rows[1]!.perSecond >= 20_000 ? 'met' : 'NOT met'}, backlog ${rows[2]!.perSecond >= 20_000 ? 'met' : 'NOT met'}`,
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
  } finally {
    await db.end().catch(() => undefined)
    await store.close()
    await Promise.allSettled([kafka.close(), postgres.close()])
  }
}

await main()
