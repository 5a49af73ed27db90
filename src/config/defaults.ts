/**
 * Every default, timeout and limit of the fabric in one place.
 * docs/LIMITS.md lists them with their reasons; keep the two in step.
 */
export const DEFAULT_PORTS = {
  control: 17000,
  proxy: 17001,
  public: 18080,
  api: 18081,
} as const

export const LIMITS = {
  /** Largest control frame (header included). A peer that announces more is disconnected. */
  maxControlFrameBytes: 1024 * 1024,
  /** Largest request body on the public port. */
  maxRequestBodyBytes: 16 * 1024 * 1024,
  /** Largest number of models one worker may announce. */
  maxModelsPerWorker: 1024,
  /** Largest model name. */
  maxModelNameLength: 256,
  /** Concurrent HTTP/2 streams a worker accepts on one data connection. */
  maxConcurrentStreams: 1024,
  /** HTTP/2 flow-control window per stream and per connection (frp's small yamux window halved its throughput). */
  h2StreamWindowBytes: 8 * 1024 * 1024,
  h2ConnectionWindowBytes: 32 * 1024 * 1024,
  /** Largest HTTP/2 frame payload. */
  h2MaxFrameBytes: 64 * 1024,
  /** Idle lanes (reusable request streams) the server keeps open per data link; more are closed. */
  maxIdleLanesPerLink: 64,
  /** Data connections a worker keeps open to the proxy port. */
  dataConnectionsPerWorker: 1,
  /**
   * Connections on one port that have not authenticated yet (TLS handshake, control login,
   * data-link bind); more are refused at once. Together with `maxLoginFrameBytes` this bounds
   * the memory strangers can make the server hold.
   */
  maxPendingConnections: 1024,
  /**
   * Unauthenticated connections one address (an IPv4 address, an IPv6 /64) may hold on one
   * port, so that no single address can fill `maxPendingConnections` and lock workers out.
   */
  maxPendingPerAddress: 16,
  /** Open connections per port (file descriptors are finite); more are refused at accept. */
  maxConnections: { control: 8_192, proxy: 8_192, public: 16_384, api: 1_024 },
  /**
   * Open connections one address may hold on one port: a NAT gateway in front of many users or
   * a rack of workers stays well under it; one host with thousands of idle sockets does not.
   */
  maxConnectionsPerAddress: { control: 256, proxy: 512, public: 256, api: 32 },
  /**
   * Largest control frame before login: a Login with room to spare. The full
   * `maxControlFrameBytes` applies only after a successful login (a worker whose model list
   * does not fit sends it in a ModelsUpdate right after).
   */
  maxLoginFrameBytes: 16 * 1024,
  /** Failed credentials (API keys, admin key, worker tokens) from one address within `failureWindowMs` before it is throttled. */
  maxAuthFailures: 20,
  /** Addresses (and key prefixes / client ids) whose failures are tracked at once; the oldest are forgotten beyond it. */
  maxAuthFailureEntries: 100_000,
  /** Largest management API request body. */
  maxApiBodyBytes: 64 * 1024,
  /** Deepest nesting of arrays and objects in a management API body (deeper: 400, never parsed further). */
  maxApiJsonDepth: 32,
  /** Workers attempted for one request before giving up (retries happen only before the first response byte). */
  maxAttemptsPerRequest: 3,
  /**
   * Requests that wait per model when every eligible worker is at its stated capacity; one
   * more is answered 503 with `retry-after` at once.
   */
  maxQueuedPerModel: 1_000,
  /** Characters of a prompt's start that make its affinity key (about 512 tokens). */
  affinityPrefixChars: 2_048,
  /**
   * Affinity's load bound: a worker whose requests in flight exceed this many times the average
   * of the model's eligible workers (plus one) is passed over for the next in the key's order.
   */
  affinityLoadFactor: 1.25,
  /** Consecutive failed tries (before an answer starts) that put a worker out of rotation for a cooldown. */
  ejectAfterFailures: 3,
  /**
   * Telemetry messages (heartbeats, usage events) a server holds for the bus while the broker
   * is unreachable or the consumer is behind; beyond it the oldest are dropped and counted.
   * 100,000 is several minutes of a thousand workers' heartbeats plus their requests, a few
   * tens of MB.
   */
  busBufferMessages: 100_000,
  /** Messages the consumer writes in one database transaction (the seed's `--batch-size`). */
  consumerBatchSize: 100,
} as const

export const TIMEOUTS = {
  /** TCP + TLS connect of a worker to the server. */
  connectMs: 10_000,
  /** From TLS established to a valid Login frame on the control port. */
  loginMs: 10_000,
  /** Server ping interval on the control connection. */
  pingIntervalMs: 2_000,
  /** A peer silent for this long (no frame at all) is considered dead. */
  pingDeadlineMs: 6_000,
  /** Worker heartbeat interval (load, models, metrics). */
  heartbeatIntervalMs: 5_000,
  /** Data connection bind handshake. */
  bindMs: 10_000,
  /** A TLS handshake on any port must complete within this (Node's default is 120 s). */
  tlsHandshakeMs: 5_000,
  /** HTTP ports: a request's headers must arrive within this (slowloris). */
  httpHeadersMs: 10_000,
  /** Public port: a whole request, body included, must arrive within this. */
  httpRequestMs: 120_000,
  /** Management API: a whole request must arrive within this. */
  apiRequestMs: 30_000,
  /** Failed credentials are counted over this window. */
  failureWindowMs: 60_000,
  /** First cool-down of a throttled address; doubles with each repeat offence. */
  authCooldownMs: 30_000,
  /** Longest cool-down. */
  authCooldownMaxMs: 15 * 60_000,
  /** Repeat offences are remembered this long after the last one. */
  authOffenceMemoryMs: 60 * 60_000,
  /** A refused worker login from a throttled address or client id is answered after this delay. */
  loginRefusalDelayMs: 1_000,
  /** Time from forwarding a request to the worker's response headers. Engines may load a model first. */
  firstByteMs: 300_000,
  /** Longest pause between two chunks of a response. */
  idleMs: 300_000,
  /** Engine model discovery interval: a frozen engine's models are withdrawn within this plus `engineProbeMs`. */
  modelRefreshMs: 5_000,
  /**
   * Longest wait for the engine to answer a model discovery (which doubles as its health check).
   * An engine that has not answered by then counts as unavailable: the worker joins, or stays,
   * with no models, and announces them once the engine answers.
   */
  engineProbeMs: 3_000,
  /** Grace period for in-flight requests on stop. */
  drainMs: 10_000,
  /** Longest wait of a queued request for a worker with room; then 503 with `retry-after`. */
  queueWaitMs: 30_000,
  /** While requests wait, the oldest of each model retries this often (room freed without a request ending: a worker joined, a link came up). */
  queueRetryMs: 50,
  /**
   * A failing worker's first cooldown; each further one in a row doubles, up to the cap. After
   * it, one request at a time probes the worker: a success puts it back, a failure starts the
   * next, longer cooldown.
   */
  cooldownBaseMs: 1_000,
  cooldownMaxMs: 60_000,
  /** Reconnect backoff of the worker: base, cap. */
  reconnectBaseMs: 250,
  reconnectMaxMs: 30_000,
  /** Longest wait for a consumer batch to fill (the seed's `--batch-timeout`, 5 s). */
  consumerBatchTimeoutMs: 5_000,
  /** GPU tools (nvidia-smi, rocm-smi) are killed after this; the heartbeat goes out without them. */
  gpuQueryMs: 3_000,
  /** Raw telemetry rows (heartbeats, the request log) are kept this long; daily statistics are kept. */
  telemetryRetentionMs: 7 * 24 * 60 * 60_000,
  /** How often the consumer prunes raw rows past their retention. */
  telemetryPruneIntervalMs: 60 * 60_000,
} as const

/** The four ports of a server. */
export type PortName = 'control' | 'proxy' | 'public' | 'api'

/**
 * The limits of a server's edge (what strangers can make it hold), overridable one by one
 * (`--limit name=value`, e.g. `--limit maxPendingPerAddress=32 --limit maxConnectionsPerAddress.public=1024`).
 */
export interface EdgeLimits {
  maxConnections: Record<PortName, number>
  maxConnectionsPerAddress: Record<PortName, number>
  maxPendingConnections: number
  maxPendingPerAddress: number
  maxLoginFrameBytes: number
  maxAuthFailures: number
  tlsHandshakeMs: number
  httpHeadersMs: number
  httpRequestMs: number
  apiRequestMs: number
  failureWindowMs: number
  authCooldownMs: number
  authCooldownMaxMs: number
  loginRefusalDelayMs: number
}

/** The edge limits' defaults, from LIMITS and TIMEOUTS. */
export function defaultEdgeLimits(): EdgeLimits {
  return {
    maxConnections: { ...LIMITS.maxConnections },
    maxConnectionsPerAddress: { ...LIMITS.maxConnectionsPerAddress },
    maxPendingConnections: LIMITS.maxPendingConnections,
    maxPendingPerAddress: LIMITS.maxPendingPerAddress,
    maxLoginFrameBytes: LIMITS.maxLoginFrameBytes,
    maxAuthFailures: LIMITS.maxAuthFailures,
    tlsHandshakeMs: TIMEOUTS.tlsHandshakeMs,
    httpHeadersMs: TIMEOUTS.httpHeadersMs,
    httpRequestMs: TIMEOUTS.httpRequestMs,
    apiRequestMs: TIMEOUTS.apiRequestMs,
    failureWindowMs: TIMEOUTS.failureWindowMs,
    authCooldownMs: TIMEOUTS.authCooldownMs,
    authCooldownMaxMs: TIMEOUTS.authCooldownMaxMs,
    loginRefusalDelayMs: TIMEOUTS.loginRefusalDelayMs,
  }
}

/**
 * Applies `name=value` overrides to the edge limits; an unknown name or a value that is not a
 * positive integer is refused with the list of valid names.
 */
export function applyEdgeOverrides(base: EdgeLimits, overrides: readonly string[]): EdgeLimits {
  const out: EdgeLimits = {
    ...base,
    maxConnections: { ...base.maxConnections },
    maxConnectionsPerAddress: { ...base.maxConnectionsPerAddress },
  }
  const record = out as unknown as Record<string, number | Record<string, number>>
  const names = Object.entries(record).flatMap(([k, v]) =>
    typeof v === 'number' ? [k] : Object.keys(v).map((p) => `${k}.${p}`),
  )
  for (const item of overrides) {
    const eq = item.indexOf('=')
    const name = eq < 0 ? item : item.slice(0, eq)
    const value = Number(eq < 0 ? Number.NaN : item.slice(eq + 1))
    if (!names.includes(name)) {
      throw new RangeError(`unknown limit '${name}'; known limits: ${names.join(', ')}`)
    }
    if (!Number.isInteger(value) || value <= 0) {
      throw new RangeError(`limit '${name}' needs a positive integer value (${name}=N)`)
    }
    const [head, port] = name.split('.') as [string, string | undefined]
    if (port === undefined) record[head] = value
    else (record[head] as Record<string, number>)[port] = value
  }
  return out
}
