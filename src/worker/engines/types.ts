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

/** A local inference engine as seen by the worker. */
export interface Engine {
  readonly type: EngineType
  /** API families the engine serves natively; the worker translates the others. */
  readonly apis: ReadonlySet<EngineApi>
  /** Model names the engine serves now. */
  listModels(signal?: AbortSignal): Promise<string[]>
  /** Serves one request. Rejects only when the engine cannot be reached at all. */
  call(call: EngineCall): Promise<EngineReply>
  /** Releases the engine's resources (sockets, model memory). */
  close(): Promise<void>
}
