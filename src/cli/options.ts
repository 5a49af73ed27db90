import { DEFAULT_PORTS, LIMITS, TIMEOUTS } from '../config/defaults.js'
import type { OptionSpec } from '../config/index.js'
import { ENGINE_TYPES } from '../worker/engines/types.js'

const common: OptionSpec[] = [
  {
    name: 'data-dir',
    type: 'string',
    description: 'directory for certificates, keys and state (default ~/.gpufabric)',
  },
  {
    name: 'log-level',
    env: ['LOG_LEVEL', 'RUST_LOG'],
    type: 'string',
    default: 'info',
    description: 'fatal|error|warn|info|debug|trace|silent',
  },
]

function bootstrapServer(description: string): OptionSpec {
  return { name: 'bootstrap-server', env: ['BOOTSTRAP_SERVER'], type: 'string', description }
}

/** The heartbeat consumer's options, shared by `gpufabric consumer` and a server consuming itself. */
function telemetryOptions(): OptionSpec[] {
  return [
    {
      name: 'batch-size',
      type: 'int',
      default: LIMITS.consumerBatchSize,
      description: 'telemetry messages written per database transaction',
    },
    {
      name: 'batch-timeout',
      type: 'int',
      default: TIMEOUTS.consumerBatchTimeoutMs / 1000,
      description: 'seconds to wait for a batch to fill before writing what has arrived',
    },
    {
      name: 'group-id',
      type: 'string',
      default: 'gpufabric-heartbeat-consumer',
      description: 'Kafka consumer group of the heartbeat consumer',
    },
    {
      name: 'retention-days',
      type: 'int',
      default: TIMEOUTS.telemetryRetentionMs / 86_400_000,
      description:
        'days raw heartbeats and request-log rows are kept (daily statistics are kept); 0 = forever',
    },
  ]
}

/** Options of `gpufabric server` (and the server half of `up`). */
export const SERVER_OPTIONS: readonly OptionSpec[] = [
  { name: 'host', type: 'string', default: '0.0.0.0', description: 'address every port binds to' },
  {
    name: 'control-port',
    type: 'int',
    default: DEFAULT_PORTS.control,
    description: "workers' control connections",
  },
  { name: 'proxy-port', type: 'int', default: DEFAULT_PORTS.proxy, description: "workers' data connections" },
  {
    name: 'public-port',
    type: 'int',
    default: DEFAULT_PORTS.public,
    description: 'users: OpenAI/Ollama-compatible API',
  },
  {
    name: 'api-port',
    type: 'int',
    default: DEFAULT_PORTS.api,
    description: 'management and monitoring REST API',
  },
  {
    name: 'api-key',
    env: ['API_KEY'],
    type: 'list',
    secret: true,
    description:
      'static API key(s) accepted on the public port (comma-separated); created in the data dir when not given',
  },
  {
    name: 'worker-token',
    env: ['WORKER_TOKEN'],
    type: 'string',
    secret: true,
    description: 'credential workers log in with; created in the data dir when not given',
  },
  {
    name: 'proxy-cert-chain-path',
    env: ['PROXY_CERT_CHAIN_PATH'],
    type: 'string',
    description:
      'PEM certificate chain of the control and proxy ports (self-signed one created when not given)',
  },
  {
    name: 'proxy-private-key-path',
    env: ['PROXY_PRIVATE_KEY_PATH'],
    type: 'string',
    description: 'PEM private key for --proxy-cert-chain-path',
  },
  {
    name: 'public-cert-path',
    type: 'string',
    description: 'serve the public port over HTTPS (TLS 1.3) with this PEM certificate chain',
  },
  { name: 'public-key-path', type: 'string', description: 'PEM private key for --public-cert-path' },
  {
    name: 'ping-interval-ms',
    type: 'int',
    default: TIMEOUTS.pingIntervalMs,
    description: 'how often the server pings each worker',
  },
  {
    name: 'ping-deadline-ms',
    type: 'int',
    default: TIMEOUTS.pingDeadlineMs,
    description: 'a worker silent this long is dropped',
  },
  {
    name: 'max-body-bytes',
    type: 'int',
    default: LIMITS.maxRequestBodyBytes,
    description: 'largest request body on the public port',
  },
  {
    name: 'limit',
    type: 'list',
    description:
      'override edge limits by name, comma-separated: maxPendingPerAddress=32,maxConnectionsPerAddress.public=1024 (see docs/LIMITS.md)',
  },
  {
    name: 'database-url',
    env: ['DATABASE_URL'],
    type: 'string',
    secret: true,
    description:
      'PostgreSQL URL for keys, workers and statistics (default: SQLite file gpufabric.db in the data dir)',
  },
  {
    name: 'redis-url',
    env: ['REDIS_URL'],
    type: 'string',
    secret: true,
    description:
      'Redis URL: shared key cache (5-minute TTL), revocations and rate limits across servers (default: in-process)',
  },
  bootstrapServer(
    'Kafka bootstrap servers (host:port, comma-separated): heartbeats and usage events go to Kafka topics client-heartbeats and request-message (default: in-process bus)',
  ),
  {
    name: 'consume',
    type: 'string',
    default: 'auto',
    description:
      'run the heartbeat consumer inside the server: auto (only without --bootstrap-server), on, off (run `gpufabric consumer` instead)',
  },
  {
    name: 'heartbeat-interval-ms',
    type: 'int',
    default: TIMEOUTS.heartbeatIntervalMs,
    description: 'how often workers send a heartbeat (told to them at login)',
  },
  ...telemetryOptions(),
  {
    name: 'routing',
    type: 'string',
    default: 'p2c',
    description:
      'how a worker is chosen among those with room: p2c (the less loaded of two random ones), least-outstanding (the least loaded of all), weighted-round-robin (turns weighted by capacity)',
  },
  {
    name: 'affinity',
    type: 'string',
    default: 'off',
    description:
      "keep requests together on one worker (engine prefix caches): off, session (x-gpufabric-session header or the OpenAI user field), prefix (the prompt's first ~512 tokens), auto (session, else prefix)",
  },
  {
    name: 'cors-origin',
    type: 'list',
    description:
      'management API: allow these browser origins (comma-separated, e.g. https://ops.example.com; * for any); default: CORS off',
  },
  {
    name: 'metrics-open',
    type: 'bool',
    default: false,
    description:
      'serve /metrics on the API port without a key (for a Prometheus scraper on a private network)',
  },
  {
    name: 'admin-key',
    env: ['ADMIN_KEY'],
    type: 'string',
    secret: true,
    description: 'key for the management API; created (and printed once) on first start when not given',
  },
  {
    name: 'key-cache-ms',
    type: 'int',
    default: 300_000,
    description:
      'how long a server trusts a key it has checked before asking the cache/database again (0 = no caching)',
  },
  ...common,
]

/** Options of `gpufabric consumer` (the seed's heartbeat consumer). */
export const CONSUMER_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'database-url',
    env: ['DATABASE_URL'],
    type: 'string',
    secret: true,
    description: 'PostgreSQL URL to write to (default: the SQLite file gpufabric.db in the data dir)',
  },
  bootstrapServer('Kafka bootstrap servers (host:port, comma-separated) to read from'),
  ...telemetryOptions(),
  ...common,
]

/** Options of `gpufabric worker`. */
export const WORKER_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'client-id',
    env: ['CLIENT_ID'],
    type: 'string',
    description: 'stable worker id (created and kept in the data dir when not given)',
  },
  {
    name: 'server-addr',
    env: ['SERVER_ADDR'],
    type: 'string',
    default: '127.0.0.1',
    description: 'fabric server host name or address',
  },
  { name: 'control-port', type: 'int', default: DEFAULT_PORTS.control, description: "server's control port" },
  { name: 'proxy-port', type: 'int', default: DEFAULT_PORTS.proxy, description: "server's proxy port" },
  {
    name: 'token',
    env: ['WORKER_TOKEN'],
    type: 'string',
    secret: true,
    description: 'worker credential (read from the data dir when the server runs on this machine)',
  },
  {
    name: 'engine-type',
    type: 'string',
    default: 'ollama',
    description: `one of ${ENGINE_TYPES.join(', ')} (echo is a test engine that echoes prompts)`,
  },
  { name: 'local-addr', type: 'string', default: '127.0.0.1', description: "engine's address" },
  { name: 'local-port', type: 'int', description: "engine's port (ollama 11434, vllm/openai 8000)" },
  {
    name: 'engine-api-key',
    type: 'string',
    secret: true,
    description: 'API key the local engine itself requires (vLLM --api-key, LM Studio)',
  },
  { name: 'model-path', type: 'string', description: 'GGUF model file for --engine-type llamacpp' },
  { name: 'model-name', type: 'string', description: 'model name announced for llamacpp/echo engines' },
  {
    name: 'cert-chain-path',
    env: ['CERT_CHAIN_PATH'],
    type: 'string',
    description: "PEM CA bundle, or the server's own certificate, to verify the server with",
  },
  {
    name: 'server-fingerprint',
    type: 'list',
    description: 'SHA-256 fingerprint(s) of the server certificate, as the server prints them',
  },
  {
    name: 'capacity',
    type: 'int',
    default: 0,
    description: 'requests this worker runs at once (0 = not stated)',
  },
  ...common,
]
