/**
 * The telemetry pipeline end to end, with the real systems and with the embedded defaults:
 * 100 simulated workers log in on the control port and send 10,000 heartbeats; every one must
 * be in the raw table exactly once and the daily statistics must equal a recomputation from
 * the raw rows. With Kafka and PostgreSQL the `gpufabric consumer` process is killed with
 * SIGKILL mid-stream and restarted (nothing lost, nothing counted twice), and Kafka is stopped
 * for 10 s under request load (no request fails; the heartbeats and usage events of those
 * 10 s arrive once it is back).
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Client } from 'pg'
import { MessageType } from '../../src/protocol/index.js'
import {
  type DailyStatsRecord,
  type DeviceDailyStatsRecord,
  type HeartbeatRecord,
  PostgresStore,
  SqliteStore,
  type Store,
  type StoreTelemetry,
} from '../../src/store/index.js'
import { ControlPeer } from '../helpers/fake-worker.js'
import { type CliProcess, startCli } from '../helpers/processes.js'
import {
  admin,
  echoWorker,
  SHARED_WORKER_TOKEN,
  STATIC_KEY,
  startWiredServer,
  type WiredServer,
} from '../helpers/servers.js'
import { type ManagedService, startKafka, startPostgres, unavailable } from '../helpers/services.js'

const WORKERS = 100
const BEATS = 100
type TelemetryStore = Store & StoreTelemetry

/** Logs in `WORKERS` simulated workers (a few at a time: the per-address budget of pending logins is 16). */
async function connectWorkers(server: WiredServer, prefix: string): Promise<ControlPeer[]> {
  const peers: ControlPeer[] = []
  for (let i = 0; i < WORKERS; i += 10) {
    const group = await Promise.all(
      Array.from({ length: Math.min(10, WORKERS - i) }, async (_, j) => {
        const peer = await ControlPeer.connect({ port: server.ports.control, ca: server.certPem })
        await peer.login(`${prefix}-${i + j}`, SHARED_WORKER_TOKEN, ['sim'])
        return peer
      }),
    )
    peers.push(...group)
  }
  return peers
}

/** Sends beats [from, to) from every peer: beat b carries uptime b (a marker) and counters that grow. */
async function sendBeats(peers: ControlPeer[], from: number, to: number): Promise<void> {
  for (let b = from; b < to; b++) {
    for (const [w, peer] of peers.entries()) {
      peer.send(MessageType.Heartbeat, {
        inflight: (w + b) % 4,
        metrics: {
          cpuPercent: (w * 7 + b * 13) % 100,
          memUsedBytes: 1_000_000 + b,
          memTotalBytes: 8_000_000,
          diskPercent: (w + b) % 90,
          netRxBytes: 1_000 * b + w,
          netTxBytes: 500 * b,
          uptimeSeconds: b,
          gpus: [0, 1].map((index) => ({
            index,
            vendor: 'nvidia' as const,
            name: 'NVIDIA H100 80GB HBM3',
            uuid: `GPU-${w}-${index}`,
            utilizationPercent: (b + index * 10) % 100,
            memoryUtilizationPercent: 20,
            memoryUsedBytes: 1_000,
            memoryTotalBytes: 80_000,
            temperatureC: 40 + ((b + w) % 30),
            powerDrawW: b % 3 === 0 ? null : 300 + index,
            powerLimitW: 700,
            tflops: 989,
          })),
        },
      })
    }
    // Let the sockets drain now and then rather than queueing every frame at once.
    if (b % 10 === 9) await sleep(5)
  }
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(100)
  }
}

const close = (a: number | null, b: number | null, what: string) => {
  if (a === null || b === null) assert.equal(a, b, what)
  else assert.ok(Math.abs(a - b) < 1e-6, `${what}: ${a} vs ${b}`)
}

/** Every heartbeat exactly once; daily statistics equal to a recomputation from the raw rows. */
async function verify(store: TelemetryStore, prefix: string): Promise<void> {
  let total = 0
  for (let w = 0; w < WORKERS; w++) {
    const clientId = `${prefix}-${w}`
    const rows = await store.listHeartbeats(clientId, 10_000)
    const markers = rows.map((r) => Number(r.extra['uptimeSeconds'])).sort((a, b) => a - b)
    assert.deepEqual(
      markers,
      Array.from({ length: BEATS }, (_, b) => b),
      `${clientId}: each heartbeat once`,
    )
    assert.equal(new Set(rows.map((r) => r.msgId)).size, rows.length)
    total += rows.length
    compareDaily(await store.listDailyStats(clientId), rows, clientId)
    compareDevices(await store.listDeviceDailyStats(clientId), rows, clientId)
  }
  assert.equal(total, WORKERS * BEATS)
}

const dayOf = (at: Date) => at.toISOString().slice(0, 10)
const mean = (xs: (number | null)[]): number | null => {
  const known = xs.filter((x): x is number => x !== null)
  return known.length === 0 ? null : known.reduce((s, x) => s + x, 0) / known.length
}

function compareDaily(daily: DailyStatsRecord[], rows: HeartbeatRecord[], clientId: string): void {
  const days = new Map<string, HeartbeatRecord[]>()
  for (const r of rows) days.set(dayOf(r.at), [...(days.get(dayOf(r.at)) ?? []), r])
  assert.deepEqual(
    daily.map((d) => d.day),
    [...days.keys()].sort(),
  )
  for (const d of daily) {
    const of = days.get(d.day)!
    assert.equal(d.heartbeats, of.length, `${clientId} ${d.day} heartbeats`)
    close(d.avgCpuPercent, mean(of.map((r) => r.cpuPercent)), 'avg cpu')
    close(d.avgMemPercent, mean(of.map((r) => r.memPercent)), 'avg mem')
    close(d.avgDiskPercent, mean(of.map((r) => r.diskPercent)), 'avg disk')
    assert.equal(
      d.netInBytes,
      of.reduce((s, r) => s + (r.netInBytes ?? 0), 0),
    )
    assert.equal(
      d.netOutBytes,
      of.reduce((s, r) => s + (r.netOutBytes ?? 0), 0),
    )
    assert.equal(d.maxInflight, Math.max(...of.map((r) => r.inflight)))
    assert.deepEqual(d.lastHeartbeatAt, new Date(Math.max(...of.map((r) => r.at.getTime()))))
  }
}

function compareDevices(daily: DeviceDailyStatsRecord[], rows: HeartbeatRecord[], clientId: string): void {
  for (const d of daily) {
    const readings = rows
      .filter((r) => dayOf(r.at) === d.day)
      .flatMap(
        (r) =>
          (r.extra['gpus'] as { index: number; temperatureC: number; powerDrawW: number | null }[]) ?? [],
      )
      .filter((g) => g.index === d.deviceIndex)
    assert.equal(d.samples, readings.length, `${clientId} gpu ${d.deviceIndex} samples`)
    close(d.avgTemperatureC, mean(readings.map((g) => g.temperatureC)), 'avg temp')
    close(d.maxTemperatureC, Math.max(...readings.map((g) => g.temperatureC)), 'max temp')
    close(d.avgPowerW, mean(readings.map((g) => g.powerDrawW)), 'avg power')
  }
}

describe('embedded defaults: in-process bus, SQLite, one server process', () => {
  let dir: string
  let server: WiredServer
  let store: SqliteStore

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpuf-pipeline-'))
    server = await startWiredServer({ dataDir: dir, logLevel: 'warn', batchTimeout: 1 })
    store = new SqliteStore({ path: join(dir, 'gpufabric.db') })
  })
  after(async () => {
    await server?.close()
    await store?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  test('100 workers, 10,000 heartbeats: each stored once, daily statistics equal the raw rows', async () => {
    const peers = await connectWorkers(server, 'emb')
    await sendBeats(peers, 0, BEATS)
    await waitUntil(
      async () => (await store.listHeartbeats(`emb-${WORKERS - 1}`, 10_000)).length >= BEATS,
      60_000,
      'the last worker’s heartbeats',
    )
    await sleep(1_500)
    await verify(store, 'emb')
    for (const peer of peers) peer.destroy()
  })
})

const missing = unavailable('kafka') ?? unavailable('postgres')

describe('Kafka and PostgreSQL: gpufabric consumer killed and Kafka stopped', { skip: missing }, () => {
  let kafka: ManagedService
  let postgres: ManagedService
  let server: WiredServer
  let store: PostgresStore
  let consumer: CliProcess | undefined

  const startConsumer = async () => {
    consumer = startCli([
      'consumer',
      '--bootstrap-server',
      kafka.url,
      '--database-url',
      postgres.url,
      '--batch-size',
      '100',
      '--batch-timeout',
      '1',
      '--group-id',
      'pipeline-test',
    ])
    await consumer.waitForOutput('heartbeat consumer running', 30_000)
  }

  before(async () => {
    ;[kafka, postgres] = await Promise.all([startKafka(), startPostgres()])
    server = await startWiredServer({
      databaseUrl: postgres.url,
      bootstrapServer: kafka.url,
      heartbeatIntervalMs: 250,
      logLevel: 'warn',
    })
    store = new PostgresStore({ url: postgres.url })
    await startConsumer()
  })
  after(async () => {
    await consumer?.kill('SIGKILL')
    await server?.close()
    await store?.close()
    await Promise.allSettled([kafka?.close(), postgres?.close()])
  })

  test('10,000 heartbeats through Kafka; the consumer killed with SIGKILL mid-stream and restarted', async () => {
    const peers = await connectWorkers(server, 'kfk')
    await sendBeats(peers, 0, BEATS / 2)
    const db = new Client({ connectionString: postgres.url })
    await db.connect()
    try {
      const count = async () =>
        Number(
          (await db.query("SELECT count(*) AS n FROM heartbeats WHERE client_id LIKE 'kfk-%'")).rows[0].n,
        )
      // Killed while it is writing: some batches are in, others not yet committed.
      await waitUntil(async () => (await count()) >= 1_000, 60_000, 'the first rows')
      await consumer!.kill('SIGKILL')
      const atKill = await count()
      assert.ok(atKill < WORKERS * BEATS)
      await sendBeats(peers, BEATS / 2, BEATS)
      await startConsumer()
      await waitUntil(async () => (await count()) >= WORKERS * BEATS, 120_000, 'every heartbeat')
      await sleep(2_000)
      assert.equal(await count(), WORKERS * BEATS, 'nothing counted twice')
    } finally {
      await db.end()
    }
    await verify(store, 'kfk')
    for (const peer of peers) peer.destroy()
  })

  test('Kafka stopped for 10 s under request load: no request fails, its events arrive after', async () => {
    const agent = echoWorker(server, 'kfk-live')
    agent.start()
    try {
      await agent.ready(AbortSignal.timeout(15_000))
      let sent = 0
      let failed = 0
      let running = true
      const load = (async () => {
        while (running) {
          const res = await fetch(`${server.baseUrl}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${STATIC_KEY}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'load' }] }),
          }).catch(() => undefined)
          sent++
          if (res?.status !== 200) failed++
          await res?.arrayBuffer()
          await sleep(20)
        }
      })()
      await sleep(1_000)
      await kafka.stop()
      const downAt = Date.now()
      await sleep(10_000)
      const upAt = Date.now()
      await kafka.start()
      await sleep(1_000)
      running = false
      await load
      assert.equal(failed, 0, `${failed} of ${sent} requests failed while Kafka was down`)
      assert.ok(sent > 100)
      // Every request made is metered, once.
      await waitUntil(async () => (await usageRows()) >= sent, 60_000, `${sent} usage events`).catch(
        async (err: Error) => {
          throw new Error(
            `${err.message}; ${await usageRows()} arrived\nstats: ${JSON.stringify((await admin(server, 'GET', '/api/v1/stats')).body['telemetry'])}\nserver: ${server.logs().slice(-3000)}\nconsumer (exit ${consumer?.child.exitCode} ${consumer?.child.signalCode}): ${consumer?.output().slice(-3000)}`,
          )
        },
      )
      assert.equal((await store.listRequests({ keyId: 'static', limit: 10_000 })).length, sent)
      assert.equal(consumer!.child.exitCode, null, 'the consumer process kept running through the outage')
      const during = (await store.listHeartbeats('kfk-live', 10_000)).filter(
        (h) => h.at.getTime() > downAt && h.at.getTime() < upAt,
      )
      assert.ok(during.length >= 20, `${during.length} heartbeats of the outage arrived`)
    } finally {
      await agent.stop()
    }

    async function usageRows(): Promise<number> {
      return (await store.listRequests({ keyId: 'static', limit: 10_000 })).length
    }
  })
})
