/**
 * Latency benchmark: what the fabric ADDS over a direct connection to the engine.
 *
 * Five paths to the same fake engine, measured in one run and interleaved so
 * that machine noise (CPU frequency, other load, GC in this process) falls on
 * all of them alike:
 *
 *   direct    client → engine
 *   1 hop     client → reference proxy → engine
 *   2 hops    client → reference proxy → reference proxy → engine
 *   h2 floor  client → h2 front ⇒ HTTP/2 lanes over TLS 1.3 ⇒ h2 back → engine
 *   fabric    client → fabric server (public port) ⇒ HTTP/2 lanes on the data link ⇒ worker → engine
 *
 * The fabric crosses two processes like the two-hop chain, so the target is:
 * fabric added p50 ≤ two-hop added p50.
 *
 * The `h2 floor` (bench/reference-h2.ts) is the fabric's bare mechanism, lanes
 * (reused HTTP/2 streams) over one long-lived TLS 1.3 connection dialled by the back, with none
 * of the fabric's logic. It splits the gap between the fabric and two hops:
 * `fabric − h2 floor` is what the fabric's own logic costs, `h2 floor − 2 hops`
 * what the mechanism costs over plain HTTP/1.1 hops. See docs/BENCHMARKS.md.
 *
 * Usage: `npm run bench:latency -- [--rounds N] [--warmup N] [--json]`
 * (or `node dist/bench/latency.js ...`; `BENCH_ROUNDS` sets the default rounds).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Client, request } from 'undici'
import { type BenchChild, ChildGroup, clockTicksPerSecond, cpuTicks, freePorts } from './children.js'
import { BENCH_CONTENT, BENCH_MODEL } from './engine.js'
import {
  type CpuRow,
  formatReport,
  type LatencyReport,
  PATH_NAMES,
  type PathName,
  ratio,
  summarise,
} from './report.js'

const API_KEY = 'bench-api-key-0123456789'
const WORKER_TOKEN = 'bench-worker-token-0123456789'
const CLIENT_ID = 'bench-w1'
const CHAT_PATH = '/v1/chat/completions'
/** The same small request on every path, serialised once. */
const CHAT_BODY = JSON.stringify({ model: BENCH_MODEL, messages: [{ role: 'user', content: 'hi' }] })
/** Sent to every path, so header parsing costs the same everywhere (the engine ignores the key). */
const CHAT_HEADERS = { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}` }
/** How long the fabric may take to have a routable worker. */
const FABRIC_READY_TIMEOUT_MS = 30_000

const script = (name: string): string => fileURLToPath(new URL(`./${name}`, import.meta.url))
const cliScript = fileURLToPath(new URL('../src/cli/main.js', import.meta.url))
const log = (message: string): void => {
  process.stderr.write(`[bench] ${message}\n`)
}

const USAGE = `Usage: node dist/bench/latency.js [--rounds N] [--warmup N] [--json]
  --rounds N   measured rounds, one request per path each (default $BENCH_ROUNDS or 8000)
  --warmup N   rounds sent first and not measured (default 5000)
  --json       print the results as JSON instead of a table
  env BENCH_CHILD_NODE_ARGS  extra node flags for every child, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"
`

interface BenchOptions {
  readonly rounds: number
  readonly warmupRounds: number
  readonly json: boolean
}

function parseOptions(): BenchOptions {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string' },
      warmup: { type: 'string', default: '5000' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) {
    process.stdout.write(USAGE)
    process.exit(0)
  }
  const count = (raw: string, what: string): number => {
    const n = Number(raw)
    if (!Number.isInteger(n) || n < 1) throw new Error(`${what} must be a positive integer, got ${raw}`)
    return n
  }
  return {
    rounds: count(values.rounds ?? process.env['BENCH_ROUNDS'] ?? '8000', '--rounds'),
    warmupRounds: count(values.warmup, '--warmup'),
    json: values.json,
  }
}

/** The processes behind the five paths, and where the client reaches each path. */
interface Topology {
  readonly origins: Record<PathName, string>
  readonly engine: BenchChild
  readonly oneHop: BenchChild
  readonly twoHopFront: BenchChild
  readonly twoHopBack: BenchChild
  readonly h2Front: BenchChild
  readonly h2Back: BenchChild
  readonly server: BenchChild
  readonly worker: BenchChild
}

const LISTENING = /^listening (\d+)$/

async function startHelper(children: ChildGroup, name: string, file: string, args: string[]) {
  const { child, match } = await children.start(name, script(file), args, { ready: LISTENING })
  return { child, port: Number(match![1]) }
}

/** Starts the engine, the reference proxies and the fabric; resolves once every path answers. */
async function startTopology(children: ChildGroup, tempDirs: string[]): Promise<Topology> {
  const engine = await startHelper(children, 'engine', 'engine.js', [])
  const engineAddr = `127.0.0.1:${engine.port}`
  const oneHop = await startHelper(children, '1-hop proxy', 'reference-proxy.js', ['--target', engineAddr])
  const back = await startHelper(children, '2-hop proxy B', 'reference-proxy.js', ['--target', engineAddr])
  const front = await startHelper(children, '2-hop proxy A', 'reference-proxy.js', [
    '--target',
    `127.0.0.1:${back.port}`,
  ])
  log(`engine :${engine.port}, 1 hop :${oneHop.port}, 2 hops :${front.port} -> :${back.port}`)

  // The h2 floor: the front listens first; the back then dials the front's TLS
  // port (as the worker dials the fabric server) and reports ready once the
  // front's HTTP/2 session is up on that connection.
  const h2Front = await children.start('h2 floor front', script('reference-h2.js'), ['front'], {
    ready: /^listening (\d+) tls (\d+)$/,
  })
  const h2Port = Number(h2Front.match![1])
  const h2TlsPort = Number(h2Front.match![2])
  const { child: h2Back } = await children.start(
    'h2 floor back',
    script('reference-h2.js'),
    ['back', '--front', `127.0.0.1:${h2TlsPort}`, '--target', engineAddr],
    { ready: /^ready$/ },
  )
  log(`h2 floor :${h2Port} (tls :${h2TlsPort})`)

  const serverDir = mkdtempSync(join(tmpdir(), 'gpuf-bench-server-'))
  const workerDir = mkdtempSync(join(tmpdir(), 'gpuf-bench-worker-'))
  tempDirs.push(serverDir, workerDir)
  // The fabric server takes explicit ports on its command line, so pick free ones first.
  const [control, proxy, pub, api] = (await freePorts(4)).map(String) as [string, string, string, string]
  const { child: server } = await children.start(
    'fabric server',
    cliScript,
    [
      'server',
      ...['--host', '127.0.0.1', '--control-port', control, '--proxy-port', proxy],
      ...['--public-port', pub, '--api-port', api, '--data-dir', serverDir],
      ...[
        '--api-key',
        API_KEY,
        '--admin-key',
        API_KEY,
        '--worker-token',
        WORKER_TOKEN,
        '--log-level',
        'warn',
      ],
    ],
    { ready: /gpufabric server ready/ },
  )
  const certPath = join(serverDir, 'cert.pem')
  if (!existsSync(certPath)) throw new Error(`fabric server is ready but ${certPath} does not exist`)
  const { child: worker } = await children.start('fabric worker', cliScript, [
    'worker',
    ...['--server-addr', '127.0.0.1', '--control-port', control, '--proxy-port', proxy],
    ...['--token', WORKER_TOKEN, '--client-id', CLIENT_ID, '--engine-type', 'openai'],
    ...['--local-addr', '127.0.0.1', '--local-port', String(engine.port)],
    ...['--cert-chain-path', certPath, '--data-dir', workerDir, '--log-level', 'warn'],
  ])
  await waitForWorker(`http://127.0.0.1:${api}`, worker, server)
  log(`fabric public :${pub} (control :${control}, proxy :${proxy}, api :${api}); worker ${CLIENT_ID} ready`)

  return {
    origins: {
      direct: `http://${engineAddr}`,
      '1 hop': `http://127.0.0.1:${oneHop.port}`,
      '2 hops': `http://127.0.0.1:${front.port}`,
      'h2 floor': `http://127.0.0.1:${h2Port}`,
      fabric: `http://127.0.0.1:${pub}`,
    },
    engine: engine.child,
    oneHop: oneHop.child,
    twoHopFront: front.child,
    twoHopBack: back.child,
    h2Front: h2Front.child,
    h2Back,
    server,
    worker,
  }
}

/** Polls the management API until our worker is listed with a data link and serves the bench model. */
async function waitForWorker(apiOrigin: string, worker: BenchChild, server: BenchChild): Promise<void> {
  const deadline = Date.now() + FABRIC_READY_TIMEOUT_MS
  let last = 'no answer yet'
  while (Date.now() < deadline) {
    for (const c of [worker, server]) {
      if (c.process.exitCode !== null || c.process.signalCode !== null) {
        throw new Error(`${c.name} exited while waiting for the worker\n${c.tail()}`)
      }
    }
    try {
      const res = await request(`${apiOrigin}/api/v1/workers`, {
        headers: { authorization: `Bearer ${API_KEY}` },
        signal: AbortSignal.timeout(2_000),
      })
      const body = (await res.body.json()) as {
        workers?: { clientId: string; dataLinks: number; models: string[] }[]
      }
      const w = body.workers?.find((x) => x.clientId === CLIENT_ID)
      last = w === undefined ? 'worker not listed' : `dataLinks=${w.dataLinks} models=${w.models.join(',')}`
      if (w !== undefined && w.dataLinks >= 1 && w.models.includes(BENCH_MODEL)) return
    } catch (err) {
      last = (err as Error).message
    }
    await sleep(50)
  }
  throw new Error(
    `worker not ready after ${FABRIC_READY_TIMEOUT_MS} ms (${last})\n${worker.tail()}\n${server.tail()}`,
  )
}

/** One chat request on a kept-alive connection; returns its latency in ms, or throws on a wrong answer. */
async function timeOne(client: Client, path: PathName, signal: AbortSignal): Promise<number> {
  const start = performance.now()
  const res = await client.request({
    method: 'POST',
    path: CHAT_PATH,
    headers: CHAT_HEADERS,
    body: CHAT_BODY,
    signal,
  })
  const text = await res.body.text()
  // The clock stops once the whole body is in, as a user waits for all of it.
  const elapsed = performance.now() - start
  if (res.statusCode !== 200 || !text.includes(BENCH_CONTENT)) {
    throw new Error(`${path}: unexpected answer ${res.statusCode}: ${text.slice(0, 300)}`)
  }
  return elapsed
}

/**
 * Runs `rounds` rounds; each sends one request to every path, sequentially, in
 * a fresh random order. A path's processes keep working a little after their
 * answer went out (stream and socket clean-up, GC) and that work competes with
 * the next path's request for the two cores; with a fixed cyclic order every
 * path would always pay for the same predecessor (the fabric always ran right
 * after the h2 floor and so paid for its clean-up, while 2 hops followed 1 hop).
 * Returns samples in ms when `record`, otherwise discards them (warm-up).
 */
async function runRounds(
  clients: Record<PathName, Client>,
  rounds: number,
  signal: AbortSignal,
  record: boolean,
): Promise<Record<PathName, Float64Array>> {
  const samples = {} as Record<PathName, Float64Array>
  for (const name of PATH_NAMES) samples[name] = new Float64Array(record ? rounds : 0)
  const order = [...PATH_NAMES]
  for (let round = 0; round < rounds; round++) {
    signal.throwIfAborted()
    shuffle(order)
    for (const name of order) {
      const ms = await timeOne(clients[name], name, signal)
      if (record) samples[name][round] = ms
    }
  }
  return samples
}

/** Fisher-Yates shuffle in place. */
function shuffle<T>(items: T[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const t = items[i]!
    items[i] = items[j]!
    items[j] = t
  }
}

async function main(): Promise<number> {
  const options = parseOptions()
  const children = new ChildGroup()
  const tempDirs: string[] = []
  const removeTempDirs = (): void => {
    for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true })
  }
  // Last resort if the process dies some other way: no child may outlive us.
  process.on('exit', () => {
    children.killNow()
    removeTempDirs()
  })
  const interrupted = new AbortController()
  const onSignal = (): void => interrupted.abort(new Error('interrupted'))
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  const clients = [] as Client[]
  try {
    const topology = await startTopology(children, tempDirs)
    const clientFor = (origin: string): Client => {
      // One connection per path, kept alive for the whole run: we measure the
      // steady state, not connection set-up.
      const c = new Client(origin, { keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000 })
      clients.push(c)
      return c
    }
    const pathClients = {} as Record<PathName, Client>
    for (const name of PATH_NAMES) pathClients[name] = clientFor(topology.origins[name])

    log(`warm-up: ${options.warmupRounds} rounds`)
    await runRounds(pathClients, options.warmupRounds, interrupted.signal, false)

    // CPU is read just around the measured phase, so start-up and warm-up
    // (JIT compilation, TLS handshakes) are not charged to the requests.
    const watched = [
      topology.server,
      topology.worker,
      topology.h2Front,
      topology.h2Back,
      topology.oneHop,
      topology.twoHopFront,
      topology.twoHopBack,
      topology.engine,
    ]
    const before = watched.map((child) => cpuTicks(child.pid))
    log(`measuring: ${options.rounds} rounds`)
    const samples = await runRounds(pathClients, options.rounds, interrupted.signal, true)
    const after = watched.map((child) => cpuTicks(child.pid))

    const ticksPerSecond = clockTicksPerSecond()
    const microsPerTick = 1e6 / ticksPerSecond
    /** µs of CPU per request for the listed processes, over `requests` requests. */
    const micros = (procs: BenchChild[], requests: number): number => {
      let ticks = 0
      for (const child of procs) {
        const i = watched.indexOf(child)
        ticks += after[i]! - before[i]!
      }
      return (ticks * microsPerTick) / requests
    }
    const t = topology
    const n = options.rounds
    const cpu: CpuRow[] = [
      { process: 'fabric server', microsPerRequest: micros([t.server], n) },
      { process: 'fabric worker', microsPerRequest: micros([t.worker], n) },
      // Totals per path make the comparison the target is about: fabric vs two hops.
      { process: 'fabric total', microsPerRequest: micros([t.server, t.worker], n) },
      { process: 'h2 floor front', microsPerRequest: micros([t.h2Front], n) },
      { process: 'h2 floor back', microsPerRequest: micros([t.h2Back], n) },
      { process: 'h2 floor total', microsPerRequest: micros([t.h2Front, t.h2Back], n) },
      { process: '1-hop proxy', microsPerRequest: micros([t.oneHop], n) },
      { process: '2-hop proxy A (front)', microsPerRequest: micros([t.twoHopFront], n) },
      { process: '2-hop proxy B (back)', microsPerRequest: micros([t.twoHopBack], n) },
      { process: '2-hop total', microsPerRequest: micros([t.twoHopFront, t.twoHopBack], n) },
      // The engine serves every path, so its share is per request of any path.
      { process: 'engine (every path)', microsPerRequest: micros([t.engine], n * PATH_NAMES.length) },
    ]

    const paths = summarise(samples)
    const report: LatencyReport = {
      rounds: options.rounds,
      warmupRounds: options.warmupRounds,
      paths,
      fabricToTwoHopAddedP50: ratio(paths.fabric.addedP50Ms, paths['2 hops'].addedP50Ms),
      fabricToOneHopAddedP50: ratio(paths.fabric.addedP50Ms, paths['1 hop'].addedP50Ms),
      fabricToH2FloorAddedP50: ratio(paths.fabric.addedP50Ms, paths['h2 floor'].addedP50Ms),
      fabricLogicP50Ms: paths.fabric.p50Ms - paths['h2 floor'].p50Ms,
      h2TlsOverTwoHopsP50Ms: paths['h2 floor'].p50Ms - paths['2 hops'].p50Ms,
      cpu,
      cpuResolutionMicros: microsPerTick / options.rounds,
      clockTicksPerSecond: ticksPerSecond,
      pass: paths.fabric.addedP50Ms <= paths['2 hops'].addedP50Ms,
    }
    process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`)
    return 0
  } catch (err) {
    if (interrupted.signal.aborted) {
      log('interrupted; stopping every child process')
      return 130
    }
    log(`failed: ${(err as Error).stack ?? String(err)}`)
    return 1
  } finally {
    await Promise.allSettled(clients.map((c) => c.destroy()))
    await children.stop()
    removeTempDirs()
  }
}

process.exitCode = await main()
