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
  /** Connections on the control or proxy port that have not logged in / bound yet; more are refused. */
  maxPendingConnections: 1024,
  /** Workers attempted for one request before giving up (retries happen only before the first response byte). */
  maxAttemptsPerRequest: 3,
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
  /** Time from forwarding a request to the worker's response headers. Engines may load a model first. */
  firstByteMs: 300_000,
  /** Longest pause between two chunks of a response. */
  idleMs: 300_000,
  /** Engine model discovery interval. */
  modelRefreshMs: 10_000,
  /** Grace period for in-flight requests on stop. */
  drainMs: 10_000,
  /** Reconnect backoff of the worker: base, cap. */
  reconnectBaseMs: 250,
  reconnectMaxMs: 30_000,
} as const
