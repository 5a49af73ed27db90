/**
 * Prometheus metrics of a server (`GET /metrics` on the API port), through prom-client with a
 * registry per server (several servers share a test process). Names follow the OpenTelemetry
 * GenAI semantic conventions where they exist (`gen_ai_server_request_duration_seconds`,
 * `gen_ai_server_time_to_first_token_seconds`, `gen_ai_client_token_usage`), the rest are
 * `gpufabric_*`. Label sets are bounded: routes are the known paths, models are capped at
 * {@link MAX_MODEL_LABELS} distinct values ('other' beyond), workers are the connected ones (their
 * gauges are read at scrape time), keys and users are never labels.
 */
import type { ServerResponse } from 'node:http'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { GpuMetrics, Metrics } from '../protocol/index.js'
import type { WorkerRegistry } from '../routing/registry.js'

/** Distinct model label values kept; later models are counted as 'other'. */
export const MAX_MODEL_LABELS = 256

/** What a response is stamped with for the metrics (symbol properties: no per-request objects). */
export const RESPONSE_ROUTE = Symbol('gpufabric.route')
export const RESPONSE_ERROR = Symbol('gpufabric.error')
export type StampedResponse = ServerResponse & { [RESPONSE_ROUTE]?: string; [RESPONSE_ERROR]?: string }

/** One forwarded request's figures, as the gateway's meter reports them. */
export interface ForwardedFacts {
  readonly model: string
  readonly status: number
  readonly durationMs: number
  readonly ttfbMs: number | null
  readonly promptTokens: number | null
  readonly completionTokens: number | null
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
// The GenAI conventions' advice for token usage buckets.
const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]

export class ServerMetrics {
  readonly registry = new Registry()
  readonly #models = new Set<string>()
  readonly #responses: Counter<'route' | 'status'>
  readonly #errors: Counter<'code'>
  readonly #requests: Counter<'gen_ai_request_model' | 'status'>
  readonly #duration: Histogram<'gen_ai_request_model' | 'http_response_status_code'>
  readonly #ttft: Histogram<'gen_ai_request_model'>
  readonly #tokenUsage: Histogram<'gen_ai_request_model' | 'gen_ai_token_type'>
  readonly #tokens: Counter<'gen_ai_request_model' | 'gen_ai_token_type'>
  readonly #unmetered: Counter<'gen_ai_request_model'>

  constructor(workers: WorkerRegistry, telemetry?: () => Record<string, unknown>) {
    const registers = [this.registry]
    this.#responses = new Counter({
      name: 'gpufabric_http_responses_total',
      help: 'Responses of the public port by route (known paths, else other) and HTTP status',
      labelNames: ['route', 'status'],
      registers,
    })
    this.#errors = new Counter({
      name: 'gpufabric_errors_total',
      help: 'Error responses of the public port by error code (docs/ERRORS.md)',
      labelNames: ['code'],
      registers,
    })
    this.#requests = new Counter({
      name: 'gpufabric_requests_total',
      help: 'Requests forwarded to workers, by model and HTTP status of the answer',
      labelNames: ['gen_ai_request_model', 'status'],
      registers,
    })
    this.#duration = new Histogram({
      name: 'gen_ai_server_request_duration_seconds',
      help: 'Time from a forwarded request’s arrival to the end of its answer',
      labelNames: ['gen_ai_request_model', 'http_response_status_code'],
      buckets: LATENCY_BUCKETS,
      registers,
    })
    this.#ttft = new Histogram({
      name: 'gen_ai_server_time_to_first_token_seconds',
      help: 'Time from a forwarded request’s arrival to the first byte of its answer',
      labelNames: ['gen_ai_request_model'],
      buckets: LATENCY_BUCKETS,
      registers,
    })
    this.#tokenUsage = new Histogram({
      name: 'gen_ai_client_token_usage',
      help: 'Tokens per request as the engine reported them, by type (input, output)',
      labelNames: ['gen_ai_request_model', 'gen_ai_token_type'],
      buckets: TOKEN_BUCKETS,
      registers,
    })
    this.#tokens = new Counter({
      name: 'gpufabric_tokens_total',
      help: 'Tokens the engines reported, by model and type (input, output)',
      labelNames: ['gen_ai_request_model', 'gen_ai_token_type'],
      registers,
    })
    this.#unmetered = new Counter({
      name: 'gpufabric_unmetered_requests_total',
      help: 'Forwarded requests whose engine reported no token usage',
      labelNames: ['gen_ai_request_model'],
      registers,
    })
    new Gauge({
      name: 'gpufabric_requests_in_flight',
      help: 'Requests this server has in flight on workers',
      registers,
      collect() {
        let n = 0
        for (const w of workers.workers()) n += w.inflight
        this.set(n)
      },
    })
    new Gauge({
      name: 'gpufabric_workers_connected',
      help: 'Workers logged in to this server',
      registers,
      collect() {
        this.set(workers.size)
      },
    })
    const perWorker = (name: string, help: string, read: (m: Metrics) => number | undefined) =>
      new Gauge({
        name,
        help,
        labelNames: ['worker'],
        registers,
        collect() {
          this.reset()
          for (const w of workers.workers()) {
            const value = w.metrics === undefined ? undefined : read(w.metrics)
            if (value !== undefined) this.set({ worker: w.clientId }, value)
          }
        },
      })
    perWorker('gpufabric_worker_cpu_percent', 'Worker host CPU use, percent', (m) => m.cpuPercent)
    perWorker(
      'gpufabric_worker_memory_percent',
      'Worker host memory use, percent',
      (m) =>
        m.memPercent ??
        (m.memUsedBytes !== undefined && m.memTotalBytes
          ? (m.memUsedBytes / m.memTotalBytes) * 100
          : undefined),
    )
    perWorker(
      'gpufabric_worker_disk_percent',
      'Worker data-dir filesystem use, percent',
      (m) => m.diskPercent,
    )
    const perGpu = (name: string, help: string, read: (g: GpuMetrics) => number | null) =>
      new Gauge({
        name,
        help,
        labelNames: ['worker', 'gpu'],
        registers,
        collect() {
          this.reset()
          for (const w of workers.workers()) {
            for (const g of w.metrics?.gpus ?? []) {
              const value = read(g)
              if (value !== null) this.set({ worker: w.clientId, gpu: String(g.index) }, value)
            }
          }
        },
      })
    perGpu(
      'gpufabric_gpu_utilization_percent',
      'GPU compute utilisation, percent',
      (g) => g.utilizationPercent,
    )
    perGpu('gpufabric_gpu_memory_used_bytes', 'GPU memory used', (g) => g.memoryUsedBytes)
    perGpu('gpufabric_gpu_memory_total_bytes', 'GPU memory', (g) => g.memoryTotalBytes)
    perGpu('gpufabric_gpu_temperature_celsius', 'GPU temperature', (g) => g.temperatureC)
    perGpu('gpufabric_gpu_power_watts', 'GPU power draw', (g) => g.powerDrawW)
    if (telemetry !== undefined) {
      const figure = (path: readonly string[]) => {
        let value: unknown = telemetry()
        for (const key of path) value = (value as Record<string, unknown> | null | undefined)?.[key]
        return typeof value === 'number' ? value : undefined
      }
      const gauge = (name: string, help: string, path: readonly string[]) =>
        new Gauge({
          name,
          help,
          registers,
          collect() {
            const value = figure(path)
            if (value !== undefined) this.set(value)
          },
        })
      gauge('gpufabric_bus_buffered_messages', 'Telemetry messages waiting for the bus or the consumer', [
        'bus',
        'buffered',
      ])
      gauge('gpufabric_bus_published_messages', 'Telemetry messages handed to the bus', ['bus', 'published'])
      gauge('gpufabric_bus_dropped_messages', 'Telemetry messages dropped for lack of room', [
        'bus',
        'dropped',
      ])
      gauge('gpufabric_consumer_heartbeats_written', 'Heartbeats the in-server consumer wrote', [
        'consumer',
        'heartbeats',
      ])
      gauge('gpufabric_consumer_usage_written', 'Usage events the in-server consumer wrote', [
        'consumer',
        'usage',
      ])
      gauge('gpufabric_consumer_undecodable_messages', 'Messages the in-server consumer could not decode', [
        'consumer',
        'undecodable',
      ])
    }
  }

  /** A public-port response is over (called from its 'close'). */
  response(res: StampedResponse): void {
    this.#responses.inc({ route: res[RESPONSE_ROUTE] ?? 'other', status: String(res.statusCode) })
    const code = res[RESPONSE_ERROR]
    if (code !== undefined) this.#errors.inc({ code })
  }

  /** A forwarded request's answer is over. */
  forwarded(f: ForwardedFacts): void {
    const model = this.#model(f.model)
    const status = String(f.status)
    this.#requests.inc({ gen_ai_request_model: model, status })
    this.#duration.observe(
      { gen_ai_request_model: model, http_response_status_code: status },
      f.durationMs / 1000,
    )
    if (f.ttfbMs !== null) this.#ttft.observe({ gen_ai_request_model: model }, f.ttfbMs / 1000)
    if (f.promptTokens === null && f.completionTokens === null) {
      this.#unmetered.inc({ gen_ai_request_model: model })
      return
    }
    if (f.promptTokens !== null) {
      this.#tokenUsage.observe({ gen_ai_request_model: model, gen_ai_token_type: 'input' }, f.promptTokens)
      this.#tokens.inc({ gen_ai_request_model: model, gen_ai_token_type: 'input' }, f.promptTokens)
    }
    if (f.completionTokens !== null) {
      this.#tokenUsage.observe(
        { gen_ai_request_model: model, gen_ai_token_type: 'output' },
        f.completionTokens,
      )
      this.#tokens.inc({ gen_ai_request_model: model, gen_ai_token_type: 'output' }, f.completionTokens)
    }
  }

  #model(model: string): string {
    if (this.#models.has(model)) return model
    if (this.#models.size >= MAX_MODEL_LABELS) return 'other'
    this.#models.add(model)
    return model
  }

  /** The exposition text and its content type. */
  async expose(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType }
  }
}
