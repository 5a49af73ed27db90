/**
 * Routing benchmark: the time one pick takes, and the server memory one registered worker costs.
 *
 * 10,000 workers (the registry's real sessions, with a stand-in data link each) over 50 models,
 * each worker serving 5 of them (about 1,000 workers per model), with random requests in flight
 * and capacities; then picks for random models, each timed on its own. Also timed: picks with
 * a dedicated key's allow-list of 8 workers (the slow path that collects the eligible workers
 * when random draws keep missing), and with a tenth of the workers in cooldown.
 *
 * Targets (issue 10): pick p99 under 50 µs. The affinity row hashes the key, finds it on the
 * model's ring (64 points per worker) and walks to the first worker under the load bound.
 *
 * Usage: `npm run bench:routing -- [--workers N] [--models N] [--picks N] [--json]`
 * (memory per worker needs `--expose-gc`, which the npm script passes).
 */
import type { ClientHttp2Session } from 'node:http2'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import type { ControlChannel } from '../src/protocol/index.js'
import { hash32 } from '../src/routing/affinity.js'
import { WorkerRegistry } from '../src/routing/registry.js'
import { WorkerSession } from '../src/routing/worker-session.js'

const { values: args } = parseArgs({
  options: {
    workers: { type: 'string', default: '10000' },
    models: { type: 'string', default: '50' },
    'models-per-worker': { type: 'string', default: '5' },
    picks: { type: 'string', default: '200000' },
    json: { type: 'boolean', default: false },
  },
})
const WORKERS = Number(args.workers)
const MODELS = Number(args.models)
const PER_WORKER = Number(args['models-per-worker'])
const PICKS = Number(args.picks)

const gc = (globalThis as { gc?: () => void }).gc
const heap = () => {
  gc?.()
  gc?.()
  return process.memoryUsage().heapUsed
}

const fakeChannel = { closed: false, close() {} } as unknown as ControlChannel
const fakeLink = () =>
  ({ closed: false, destroyed: false, once() {}, destroy() {} }) as unknown as ClientHttp2Session

const models = Array.from({ length: MODELS }, (_, i) => `model-${i}`)
const registry = new WorkerRegistry()
const before = heap()
const sessions: WorkerSession[] = []
for (let i = 0; i < WORKERS; i++) {
  const served = Array.from({ length: PER_WORKER }, (_, k) => models[(i + k * 7) % MODELS]!)
  const session = new WorkerSession({
    sessionId: `s${i}`,
    clientId: `worker-${i}`,
    engineType: 'vllm',
    channel: fakeChannel,
    dataToken: `token-${i}`,
    models: [...new Set(served)],
    remoteAddress: '10.0.0.1',
    capacity: i % 3 === 0 ? 0 : 8,
  })
  session.addLink(fakeLink())
  session.inflight = (i * 7919) % 8
  registry.add(session)
  sessions.push(session)
}
const after = heap()
const bytesPerWorker = gc === undefined ? null : Math.round((after - before) / WORKERS)

function timePicks(label: string, pick: (model: string) => WorkerSession | undefined) {
  const times = new Float64Array(PICKS)
  let found = 0
  // Warm-up: the JIT settles before anything is measured.
  for (let i = 0; i < 20_000; i++) pick(models[i % MODELS]!)
  for (let i = 0; i < PICKS; i++) {
    const model = models[(Math.random() * MODELS) | 0]!
    const t = performance.now()
    const w = pick(model)
    times[i] = performance.now() - t
    if (w !== undefined) found++
  }
  times.sort()
  const us = (q: number) => Math.round(times[Math.min(PICKS - 1, Math.floor(q * PICKS))]! * 1000 * 100) / 100
  return { label, p50: us(0.5), p99: us(0.99), p999: us(0.999), found }
}

const rows = [timePicks('p2c, no affinity', (m) => registry.pick(m))]
let n = 0
const beforeRings = heap()
rows.push(
  timePicks('affinity (hash ring, load-bounded)', (m) => registry.pickAffine(m, hash32(`key-${n++ % 5000}`))),
)
const ringBytesPerWorker = gc === undefined ? null : Math.round((heap() - beforeRings) / WORKERS)
const allow = new Set(sessions.slice(0, 8).map((s) => s.clientId))
rows.push(timePicks('dedicated key (8 allowed workers)', (m) => registry.pick(m, undefined, allow)))
for (const s of sessions)
  if (Number(s.sessionId.slice(1)) % 10 === 0) s.cooldownUntil = Date.now() + 3_600_000
rows.push(timePicks('a tenth of the workers in cooldown', (m) => registry.pick(m)))

const report = {
  workers: WORKERS,
  models: MODELS,
  modelsPerWorker: PER_WORKER,
  picks: PICKS,
  bytesPerWorker,
  ringBytesPerWorker,
  rows,
  node: process.version,
}
if (args.json) {
  console.log(JSON.stringify(report, null, 2))
} else {
  console.log(
    `routing: ${WORKERS} workers over ${MODELS} models (${PER_WORKER} each), ${PICKS} picks per row, each timed on its own (performance.now(), whose own cost is included)\n`,
  )
  console.log(
    `${'case'.padEnd(38)}${'p50 µs'.padStart(8)}${'p99 µs'.padStart(8)}${'p99.9 µs'.padStart(10)}  found`,
  )
  for (const r of rows)
    console.log(
      `${r.label.padEnd(38)}${String(r.p50).padStart(8)}${String(r.p99).padStart(8)}${String(r.p999).padStart(10)}  ${r.found}`,
    )
  console.log(
    `\nserver memory per registered worker: ${bytesPerWorker === null ? 'run with --expose-gc' : `${bytesPerWorker} bytes (heap, session + indexes)`}, plus ${ringBytesPerWorker ?? '?'} bytes of affinity rings (built by the first affinity pick of each model)`,
  )
  for (const r of rows.slice(0, 2))
    console.log(`target: ${r.label}: pick p99 < 50 µs: ${r.p99 < 50 ? 'met' : 'NOT met'} (${r.p99} µs)`)
}
