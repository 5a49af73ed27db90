/** The kinds of inference engine a worker can sit beside. */
export const ENGINE_TYPES = ['ollama', 'vllm', 'openai', 'llamacpp', 'echo'] as const
export type EngineType = (typeof ENGINE_TYPES)[number]

/** API families a request can arrive in: OpenAI's `/v1/*` and Ollama's `/api/*`. */
export type EngineApi = 'openai' | 'ollama'

/** One request handed to an engine. */
export interface EngineCall {
  /** HTTP method, upper case. */
  readonly method: string
  /** Path as the user sent it, e.g. `/v1/chat/completions` or `/api/chat` (query string included). */
  readonly path: string
  /** Raw request body (JSON for every inference route); empty for GET. */
  readonly body: Buffer
  /** Aborted when the user goes away or the fabric gives up: the engine must stop generating. */
  readonly signal: AbortSignal
}

/** What an engine answers. `body` is forwarded chunk by chunk, never coalesced. */
export interface EngineReply {
  readonly status: number
  /** Response headers to pass on (content-type at least). Hop-by-hop headers are dropped by the caller. */
  readonly headers: Record<string, string>
  readonly body: AsyncIterable<Uint8Array> | Uint8Array
}

/**
 * Where a relayed answer goes. Implemented by the worker over one HTTP/2 stream; engines
 * that can stream an answer straight into it (no intermediate body stream) use it.
 */
export interface ReplySink {
  /** Status and headers. Small answers with a `content-length` are held and sent with their body in one write. */
  respond(status: number, headers: Record<string, string>): void
  /** Writes a chunk; false means wait for {@link onDrain} before writing more. */
  write(chunk: Uint8Array): boolean
  /** Ends the answer. */
  end(): void
  /**
   * Calls `fn` once when the sink can take more after `write` returned false, or when the
   * requester went away (so a writer waiting here always wakes up).
   */
  onDrain(fn: () => void): void
  /** Fails the answer: before `respond` the fabric may retry elsewhere; after it, the stream is reset. */
  fail(err: Error): void
  /** Calls `fn` once if the requester goes away before the answer ends. */
  onAbort(fn: () => void): void
}

/** A local inference engine as seen by the worker. */
export interface Engine {
  readonly type: EngineType
  /** API families the engine serves natively; the worker translates the others. */
  readonly apis: ReadonlySet<EngineApi>
  /** Model names the engine serves now. */
  listModels(signal?: AbortSignal): Promise<string[]>
  /** Serves one request. Rejects only when the engine cannot be reached at all. */
  call(call: EngineCall): Promise<EngineReply>
  /**
   * Optional fast path for requests in an API the engine serves natively: streams the
   * engine's answer straight into `sink`, with backpressure, and stops when the sink aborts.
   */
  relay?(call: Omit<EngineCall, 'signal'>, sink: ReplySink): void
  /** Releases the engine's resources (sockets, model memory). */
  close(): Promise<void>
}
