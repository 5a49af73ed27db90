import { once } from 'node:events'
import { createServer as createH2Server } from 'node:http2'
import {
  type AddressInfo,
  createServer as createNetServer,
  connect as netConnect,
  type Socket,
} from 'node:net'
import { setTimeout as sleep, setImmediate as tick } from 'node:timers/promises'
import { type TLSSocket, connect as tlsConnect } from 'node:tls'
import { request } from 'undici'
import { API_KEY, agentFrom, WORKER_TOKEN } from '../helpers/fabric.js'
import { type HttpCase, type HttpPort, httpCase } from './http-cases.js'
import { Rng } from './rng.js'
import type { FuzzTarget } from './target.js'
import { type PortName, type WireCase, wireCase } from './wire-cases.js'

/**
 * A network fuzzer against a live fabric: malformed HTTP/1.1 on the public and management
 * ports, malformed control frames over TLS, a misbehaving HTTP/2 peer on the proxy port, raw
 * TLS records and plain garbage, about 50 connections at a time; meanwhile a valid client, from
 * an address of its own, must be served every time. Used by test/integration/network-fuzz.test.ts
 * and by `npm run fuzz`.
 *
 * Traffic sources: the valid client connects from 127.0.0.2; fuzz cases that present a wrong
 * credential come from one "attacker" address (it gets throttled, as it should); the rest
 * spreads over a few other loopback addresses, so that per-address connection caps and
 * throttling leave most of it reaching the handlers. The echo worker connects from 127.0.0.1.
 */

/** Options of {@link runNetworkFuzz}. */
export interface NetworkFuzzOptions {
  readonly target: FuzzTarget
  /** Malformed requests (connections) to send. */
  readonly requests: number
  /** Connections in flight at once. @default 50 */
  readonly concurrency?: number
  /** Seed of the generator; case `i` of a seed is always the same. @default random */
  readonly seed?: number
  /** Address of the valid client. @default '127.0.0.2' */
  readonly validAddress?: string
  /** Address of cases that present wrong credentials. @default '127.0.66.1' */
  readonly attackerAddress?: string
  /** Addresses of the other cases. @default 127.0.77.1 – 127.0.77.8 */
  readonly fuzzAddresses?: readonly string[]
  /** A complete request neither answered nor closed within this is a finding (a hang). @default 15 000 */
  readonly answerLimitMs?: number
  /** Pause between two valid requests. @default 25 */
  readonly validPauseMs?: number
  /** Index of the first case (with `requests: 1`, replays one case of a seed). @default 0 */
  readonly firstCase?: number
  /** Only these categories of cases. @default all of them */
  readonly only?: readonly FuzzCategory[]
  /** Progress lines. */
  readonly log?: (line: string) => void
}

/** What a run saw. */
export interface NetworkFuzzReport {
  readonly seed: number
  readonly requests: number
  readonly durationMs: number
  /** Cases per category (`http/public`, `control`, ...). */
  readonly categories: Record<string, number>
  /** Average milliseconds per case, by case kind (what the server makes a fuzzer wait for). */
  readonly averageMs: Record<string, number>
  /** HTTP answers per port and status, e.g. `public 400`. */
  readonly statuses: Record<string, number>
  /** The first request answered with each 5xx status, for triage. */
  readonly serverErrorExamples: Record<string, string>
  /** Connections refused or reset before the case's bytes were written (caps, throttling). */
  readonly refused: number
  /** Connections the server closed before we did. */
  readonly closedByServer: number
  /** Client-side errors by code (for the operator: EADDRNOTAVAIL means the fuzzer, not the server). */
  readonly clientErrors: Record<string, number>
  readonly valid: {
    readonly ok: number
    readonly failed: number
    readonly p50Ms: number
    readonly maxMs: number
  }
  /** Problems found: a 500, a hang, a connection kept open, a failed valid request, a logged error. */
  readonly findings: readonly string[]
}

/** The kinds of malformed traffic. */
export type FuzzCategory = 'http/public' | 'http/api' | 'control' | 'proxy' | 'records' | 'plain'
const MIX: readonly (readonly [number, FuzzCategory])[] = [
  [45, 'http/public'],
  [20, 'http/api'],
  [15, 'control'],
  [8, 'proxy'],
  [8, 'records'],
  [4, 'plain'],
]

/** What became of one connection. */
interface Outcome {
  /** First final HTTP status seen. */
  status?: number
  /** The server closed (or reset) the connection before we did. */
  closed: boolean
  /** Refused, or reset before our bytes were written. */
  refused: boolean
  /** Waited the whole limit for a required answer or close. */
  timedOut: boolean
  error?: string
}

const STATUS = /HTTP\/1\.[01] (\d{3})/g

function finalStatus(text: string): number | undefined {
  for (const m of text.matchAll(STATUS)) {
    const status = Number(m[1])
    if (status >= 200) return status
  }
  return undefined
}

/** Cases in flight, so that a crash can say what it was doing. */
const inFlight = new Map<number, string>()

/** Descriptions of the cases in flight (printed by the fuzz runner if the process crashes). */
export function casesInFlight(): string[] {
  return [...inFlight.values()]
}

/** A case as a finding shows it: its number, kind and bytes (the middle of long ones left out). */
function describe(index: number, kind: string, chunks: readonly Buffer[]): string {
  const bytes = Buffer.concat(chunks).toString('latin1')
  const shown =
    bytes.length <= 320 ? bytes : `${bytes.slice(0, 240)}[… ${bytes.length - 320} bytes …]${bytes.slice(-80)}`
  return `case ${index} (${kind}): ${JSON.stringify(shown)}`
}

interface ConnectionPlan {
  readonly host: string
  readonly port: number
  readonly localAddress: string
  readonly chunks: readonly Buffer[]
  /** Resolve as soon as an HTTP status line arrives. */
  readonly http: boolean
  /** Wait up to this for an answer or close after writing; else linger `lingerMs`. */
  readonly waitMs: number | undefined
  readonly lingerMs: number
  readonly awaitReply?: boolean
  /** An HTTP/2 session reads the socket: we must not (it consumes the stream natively). */
  readonly readBySession?: boolean
}

/**
 * Drives one connection through a plan: `socket` is the TCP connection itself (`ready` =
 * connect) or a TLS socket over `raw` (`ready` = secureConnect).
 */
function drive(
  socket: Socket | TLSSocket,
  plan: ConnectionPlan,
  ready: 'connect' | 'secureConnect',
  raw: Socket = socket,
): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false
    let started = false
    let text = ''
    let status: number | undefined
    let replied: (() => void) | undefined
    let timer: NodeJS.Timeout | undefined
    const finish = (outcome: Outcome) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      // A reset, not a FIN: no TIME_WAIT on our side, and the server sees an abrupt client.
      if (!raw.destroyed && raw.readyState === 'open') raw.resetAndDestroy()
      raw.destroy()
      socket.destroy()
      resolve(outcome)
    }
    // Until the bytes are out, a failure to connect counts as refused.
    timer = setTimeout(
      () => finish({ closed: false, refused: true, timedOut: false, error: 'connect timeout' }),
      10_000,
    )
    const failed = (err: NodeJS.ErrnoException) =>
      finish({ status, closed: true, refused: !started, timedOut: false, error: err.code ?? 'TLS' })
    socket.on('error', failed)
    if (raw !== socket) raw.on('error', failed)
    socket.on('close', () => finish({ status, closed: true, refused: !started, timedOut: false }))
    socket.on('end', () => finish({ status, closed: true, refused: !started, timedOut: false }))
    // Read whatever comes (a paused socket would never see the server's FIN).
    if (plan.readBySession !== true) {
      socket.on('data', (chunk: Buffer) => onData(chunk))
    }
    const onData = (chunk: Buffer) => {
      replied?.()
      if (!plan.http || status !== undefined || text.length > 4096) return
      text += chunk.toString('latin1')
      status = finalStatus(text)
      if (status !== undefined) finish({ status, closed: false, refused: false, timedOut: false })
    }
    socket.once(ready, async () => {
      started = true
      clearTimeout(timer)
      for (let i = 0; i < plan.chunks.length; i++) {
        if (settled || socket.destroyed) return
        if (i === 1 && plan.awaitReply === true) {
          await new Promise<void>((r) => {
            replied = r
            setTimeout(r, 1_000).unref()
          })
          if (settled || socket.destroyed) return
        }
        socket.write(plan.chunks[i]!)
        if (plan.chunks.length > 1) await tick()
      }
      if (settled) return
      timer =
        plan.waitMs === undefined
          ? setTimeout(
              () => finish({ status, closed: false, refused: false, timedOut: false }),
              plan.lingerMs,
            )
          : setTimeout(() => finish({ status, closed: false, refused: false, timedOut: true }), plan.waitMs)
    })
  })
}

function connectPlain(plan: ConnectionPlan): Promise<Outcome> {
  const socket = netConnect({ host: plan.host, port: plan.port, localAddress: plan.localAddress })
  socket.setNoDelay(true)
  return drive(socket, plan, 'connect')
}

/** A TLS 1.3 client over a TCP connection from the plan's local address. */
function tlsClient(
  plan: ConnectionPlan,
  alpn: readonly string[] | undefined,
): { raw: Socket; socket: TLSSocket } {
  const raw = netConnect({ host: plan.host, port: plan.port, localAddress: plan.localAddress })
  raw.setNoDelay(true)
  const socket = tlsConnect({
    socket: raw,
    servername: 'localhost',
    rejectUnauthorized: false,
    minVersion: 'TLSv1.3',
    ...(alpn === undefined ? {} : { ALPNProtocols: [...alpn] }),
  })
  return { raw, socket }
}

function connectTls(plan: ConnectionPlan, alpn: readonly string[] | undefined): Promise<Outcome> {
  const { raw, socket } = tlsClient(plan, alpn)
  return drive(socket, plan, 'secureConnect', raw)
}

/** A fake worker on the proxy port: an HTTP/2 server session that answers the bind as told. */
function connectH2Peer(plan: ConnectionPlan, c: WireCase): Promise<Outcome> {
  const { raw, socket } = tlsClient(plan, ['h2'])
  const bind = c.bind!
  const peer = createH2Server()
  peer.on('sessionError', () => {})
  peer.on('session', (session) => {
    session.on('error', () => {})
    session.on('stream', (stream) => {
      stream.on('error', () => {})
      try {
        switch (bind.kind) {
          case 'respond':
            stream.respond({
              ':status': bind.status,
              ...(bind.token === undefined ? {} : { 'x-gpuf-data-token': bind.token }),
            })
            stream.end(bind.status === 204 ? undefined : bind.body)
            break
          case 'reset':
            stream.close(bind.code)
            break
          case 'goaway':
            session.goaway(bind.code)
            break
          case 'settings':
            session.settings(bind.settings)
            for (let i = 0; i < bind.pings; i++) session.ping(() => {})
            stream.respond({ ':status': 200, 'x-gpuf-data-token': 'not-a-token' })
            stream.end()
            break
          case 'silent':
            break
        }
      } catch {
        socket.destroy() // the peer library refused what we asked of it: nothing was sent
      }
    })
  })
  socket.once('secureConnect', () => peer.emit('connection', socket))
  return drive(socket, { ...plan, readBySession: true }, 'secureConnect', raw)
}

/** The first flight of a real TLS client (a ClientHello), for damaging it. */
async function captureClientHello(): Promise<Buffer> {
  const server = createNetServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const hello = new Promise<Buffer>((resolve) =>
    server.once('connection', (s: Socket) =>
      s.once('data', (d: Buffer) => {
        resolve(d)
        s.destroy()
      }),
    ),
  )
  const client = tlsConnect({
    host: '127.0.0.1',
    port: (server.address() as AddressInfo).port,
    rejectUnauthorized: false,
    ALPNProtocols: ['h2'],
  })
  client.on('error', () => {})
  try {
    return await hello
  } finally {
    client.destroy()
    server.close()
  }
}

/** Runs the fuzzer; resolves with what it saw (findings included, never thrown). */
export async function runNetworkFuzz(options: NetworkFuzzOptions): Promise<NetworkFuzzReport> {
  const { ports } = options.target
  const host = '127.0.0.1'
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31)
  const concurrency = options.concurrency ?? 50
  const answerLimitMs = options.answerLimitMs ?? 15_000
  const validAddress = options.validAddress ?? '127.0.0.2'
  const attacker = options.attackerAddress ?? '127.0.66.1'
  const sources = options.fuzzAddresses ?? Array.from({ length: 8 }, (_, i) => `127.0.77.${i + 1}`)
  const log = options.log ?? (() => {})
  const clientHello = await captureClientHello()
  const errorsBefore = (await options.target.health()).errors.length
  const mix = options.only === undefined ? MIX : MIX.filter(([, c]) => options.only!.includes(c))
  if (mix.length === 0) throw new RangeError(`no known category in ${options.only?.join(', ')}`)

  const categories: Record<string, number> = {}
  const timing = new Map<string, { n: number; ms: number }>()
  const statuses: Record<string, number> = {}
  const serverErrorExamples: Record<string, string> = {}
  const clientErrors: Record<string, number> = {}
  const findings: string[] = []
  let findingCount = 0
  const found = (what: string) => {
    findingCount++
    if (findings.length < 50) findings.push(what)
  }
  let refused = 0
  let closedByServer = 0
  const first = options.firstCase ?? 0
  const end = first + options.requests
  let next = first
  let done = 0
  const t0 = Date.now()

  async function runCase(index: number): Promise<void> {
    const rng = Rng.forCase(seed, index)
    const started = Date.now()
    const category = rng.weighted(mix)
    categories[category] = (categories[category] ?? 0) + 1
    const localAddress = (c: { badCredential: boolean }) =>
      c.badCredential ? attacker : sources[index % sources.length]!
    let outcome: Outcome
    let what: string
    let label: string
    let mustFinish: boolean
    let httpPort: HttpPort | undefined
    if (category === 'http/public' || category === 'http/api') {
      httpPort = category === 'http/public' ? 'public' : 'api'
      const c: HttpCase = httpCase(rng, httpPort, API_KEY)
      label = category
      what = describe(index, `${category} ${c.kind}`, c.chunks)
      mustFinish = c.mustAnswer
      inFlight.set(index, what)
      outcome = await connectPlain({
        host,
        port: ports[httpPort],
        localAddress: localAddress(c),
        chunks: c.chunks,
        http: true,
        waitMs: c.mustAnswer ? answerLimitMs : undefined,
        lingerMs: rng.range(10, 60),
      })
    } else {
      const c = wireCase(rng, category, { workerToken: WORKER_TOKEN, clientHello })
      label = c.kind
      what = describe(index, c.kind, c.chunks)
      mustFinish = c.mustClose
      inFlight.set(index, what)
      const plan: ConnectionPlan = {
        host,
        port: ports[c.port as PortName],
        localAddress: localAddress(c),
        chunks: c.chunks,
        http: c.port === 'public' || c.port === 'api',
        waitMs: c.mustClose ? answerLimitMs : undefined,
        lingerMs: c.lingerMs,
        ...(c.awaitReply === undefined ? {} : { awaitReply: c.awaitReply }),
      }
      outcome =
        c.transport === 'tcp'
          ? await connectPlain(plan)
          : c.transport === 'tls'
            ? await connectTls(plan, c.alpn)
            : await connectH2Peer(plan, c)
    }
    inFlight.delete(index)
    const kind = label.split('+')[0]!
    const t = timing.get(kind) ?? { n: 0, ms: 0 }
    t.n++
    t.ms += Date.now() - started
    timing.set(kind, t)
    if (outcome.error !== undefined) clientErrors[outcome.error] = (clientErrors[outcome.error] ?? 0) + 1
    if (outcome.refused) refused++
    else if (outcome.closed) closedByServer++
    if (outcome.status !== undefined) {
      const key = `${httpPort ?? category} ${outcome.status}`
      statuses[key] = (statuses[key] ?? 0) + 1
      if (outcome.status >= 500) serverErrorExamples[key] ??= what
      if (outcome.status === 500) found(`answered 500 (an unexpected failure in a handler): ${what}`)
    }
    if (outcome.timedOut && mustFinish && !outcome.refused) {
      found(`neither answered nor closed within ${answerLimitMs} ms: ${what}`)
    }
  }

  // The valid client: one request after another, from its own address, for the whole run.
  const agent = agentFrom(validAddress, {
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  })
  const latencies: number[] = []
  let validFailed = 0
  const validUrl = `http://${host}:${ports.public}/v1/chat/completions`
  async function validRequest(n: number): Promise<void> {
    const nonce = `still serving ${seed}/${n}`
    const started = Date.now()
    try {
      const res = await request(validUrl, {
        method: 'POST',
        dispatcher: agent,
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: nonce }] }),
      })
      const text = await res.body.text()
      latencies.push(Date.now() - started)
      const content =
        res.statusCode === 200
          ? (JSON.parse(text) as { choices?: { message?: { content?: string } }[] }).choices?.[0]?.message
              ?.content
          : undefined
      if (res.statusCode !== 200 || content !== `echo: ${nonce}`) {
        validFailed++
        found(`valid request ${n} answered ${res.statusCode}: ${text.slice(0, 300)}`)
      }
    } catch (err) {
      validFailed++
      found(`valid request ${n} failed: ${String(err)}`)
    }
  }
  let fuzzing = true
  const validLoop = (async () => {
    let n = 0
    while (fuzzing) {
      await validRequest(n++)
      await sleep(options.validPauseMs ?? 25)
    }
  })()

  const step = Math.max(1, Math.floor(options.requests / 10))
  const workers = Array.from({ length: Math.min(concurrency, options.requests) }, async () => {
    while (next < end) {
      const index = next++
      await runCase(index)
      done++
      if (done % step === 0) {
        const s = (Date.now() - t0) / 1000
        log(`network fuzz: ${done}/${options.requests} in ${s.toFixed(1)} s, valid ${latencies.length} ok`)
      }
    }
  })
  try {
    await Promise.all(workers)
  } finally {
    fuzzing = false
    await validLoop
  }
  const durationMs = Date.now() - t0

  // After the storm: every port still accepts, the worker is still there, and one more
  // valid request is served.
  for (const name of ['control', 'proxy', 'public', 'api'] as const) {
    const socket = netConnect({ host, port: ports[name], localAddress: validAddress })
    try {
      await once(socket, 'connect')
    } catch (err) {
      found(`port ${name} no longer accepts connections: ${String(err)}`)
    } finally {
      socket.destroy()
    }
  }
  await validRequest(-1)
  await agent.close()
  const health = await options.target.health()
  if (!health.routable) found('the echo worker is no longer routable')
  for (const [what, count] of errorKinds(health.errors.slice(errorsBefore))) {
    found(`the server logged ${count} error(s) like: ${what}`)
  }
  if (findingCount > findings.length) findings.push(`... and ${findingCount - findings.length} more`)

  const sorted = [...latencies].sort((a, b) => a - b)
  return {
    seed,
    requests: options.requests,
    durationMs,
    categories,
    averageMs: Object.fromEntries([...timing].map(([k, t]) => [k, Math.round(t.ms / t.n)])),
    statuses,
    serverErrorExamples,
    refused,
    closedByServer,
    clientErrors,
    valid: {
      ok: latencies.length - validFailed,
      failed: validFailed,
      p50Ms: sorted[Math.floor(sorted.length / 2)] ?? 0,
      maxMs: sorted.at(-1) ?? 0,
    },
    findings,
  }
}

/** Logged errors grouped by what they say (component, message, code, first line of the error). */
function errorKinds(lines: readonly string[]): Map<string, number> {
  const kinds = new Map<string, number>()
  for (const line of lines) {
    let key = line.slice(0, 300)
    try {
      const entry = JSON.parse(line) as { component?: string; msg?: string; code?: string; err?: unknown }
      key = `[${entry.component ?? '?'}] ${entry.msg ?? ''} ${entry.code ?? ''}: ${String(entry.err ?? '').split('\n')[0]}`
    } catch {
      // not JSON: keep the line as it is
    }
    kinds.set(key, (kinds.get(key) ?? 0) + 1)
  }
  return kinds
}

/** A few lines that summarise a report. */
export function formatReport(report: NetworkFuzzReport): string {
  const sortObj = (o: Record<string, number>) =>
    Object.entries(o)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ')
  return [
    `network fuzz: ${report.requests} malformed requests in ${(report.durationMs / 1000).toFixed(1)} s ` +
      `(${Math.round(report.requests / (report.durationMs / 1000))}/s), seed ${report.seed}`,
    `  categories: ${sortObj(report.categories)}`,
    `  average ms per case: ${sortObj(report.averageMs)}`,
    `  HTTP answers: ${sortObj(report.statuses)}`,
    ...Object.entries(report.serverErrorExamples).map(([k, v]) => `  first ${k}: ${v}`),
    `  closed by the server first: ${report.closedByServer}, refused/reset before sending: ${report.refused}`,
    `  client-side errors: ${sortObj(report.clientErrors) || 'none'}`,
    `  valid client: ${report.valid.ok} ok, ${report.valid.failed} failed, p50 ${report.valid.p50Ms} ms, max ${report.valid.maxMs} ms`,
    `  findings: ${report.findings.length === 0 ? 'none' : `\n    ${report.findings.join('\n    ')}`}`,
  ].join('\n')
}
